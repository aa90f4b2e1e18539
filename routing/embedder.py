"""One prompt → its MiniLM vector, fast enough for the request path.

The router embeds every routed prompt, so the decision budget (p50 ≤ 5 ms on this 2-core box) is
mostly this call. The packaged all-MiniLM-L6-v2 (the same weights clustering uses, so centroids and
prompts share one space) is exported once to ONNX under OPENTRACY_LOCAL_MODEL_DIR and run with
onnxruntime, tokenized by `tokenizers` directly: about half the time of a torch forward pass for a
short prompt, with the same vectors (cosine > 0.9999). Mean pooling and unit length as
sentence-transformers does. Repeated prompts hit an in-process LRU.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from django.conf import settings

from gateway.providers import local_embed
from opentracy_site import onnx_export

log = logging.getLogger(__name__)

WINDOW = 256  # the model's max_seq_length (sentence_bert_config.json): longer prompts are truncated
CACHE_SIZE = 4096
DIRNAME = "all-minilm-l6-v2-onnx"

_lock = threading.Lock()
_session: Any = None
_tokenizer: Any = None
_cache: OrderedDict[str, Embedded] = OrderedDict()
_cache_lock = threading.Lock()
_executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="route-embed")


@dataclass(frozen=True)
class Embedded:
    vector: np.ndarray  # float32, unit length
    tokens: int  # tokens the model saw (≤ WINDOW)
    truncated: bool  # the prompt was longer than the window


def onnx_path() -> Path:
    return Path(settings.OPENTRACY_LOCAL_MODEL_DIR) / DIRNAME / "model.onnx"


def _export(target: Path) -> None:
    """torch → ONNX once (~2 s): the last hidden state, pooled here per prompt."""
    import torch
    from transformers import AutoModel

    class Hidden(torch.nn.Module):
        def __init__(self, model: Any) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: Any, attention_mask: Any) -> Any:
            return self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    model = AutoModel.from_pretrained(str(local_embed.model_path())).eval()
    ids = torch.tensor([[101, 7592, 2088, 102]])
    onnx_export.export(
        Hidden(model), (ids, torch.ones_like(ids)), target, output="hidden", output_axes={0: "batch", 1: "tokens"}
    )


def load() -> tuple[Any, Any]:
    """The onnxruntime session and the tokenizer, exported and loaded on first use."""
    global _session, _tokenizer
    with _lock:
        if _session is None:
            import onnxruntime as ort
            from tokenizers import Tokenizer

            t = time.monotonic()
            path = onnx_path()
            if not path.is_file():
                _export(path)
            options = ort.SessionOptions()
            options.intra_op_num_threads = settings.OPENTRACY_ROUTER_EMBED_THREADS
            options.inter_op_num_threads = 1
            options.log_severity_level = 3
            tokenizer = Tokenizer.from_file(str(local_embed.model_path() / "tokenizer.json"))
            tokenizer.no_padding()
            tokenizer.enable_truncation(WINDOW)
            _session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            _tokenizer = tokenizer
            log.info("router embedder ready in %.1f s", time.monotonic() - t)
        return _session, _tokenizer


def _compute(text: str) -> Embedded:
    session, tokenizer = load()
    enc = tokenizer.encode(text)
    ids = np.asarray([enc.ids], dtype=np.int64)
    hidden = session.run(None, {"input_ids": ids, "attention_mask": np.ones_like(ids)})[0][0]
    vector = hidden.mean(axis=0)
    vector /= max(float(np.linalg.norm(vector)), 1e-12)
    return Embedded(vector.astype(np.float32), len(enc.ids), bool(enc.overflowing))


def embed(text: str) -> Embedded:
    """The prompt's vector (cached by text)."""
    with _cache_lock:
        hit = _cache.get(text)
        if hit is not None:
            _cache.move_to_end(text)
            return hit
    found = _compute(text)
    with _cache_lock:
        _cache[text] = found
        if len(_cache) > CACHE_SIZE:
            _cache.popitem(last=False)
    return found


def embed_many(texts: list[str]) -> np.ndarray:
    """(n, 384) float32 unit vectors, for the shipped clusters and offline work."""
    return np.stack([embed(t).vector for t in texts]) if texts else np.zeros((0, local_embed.DIMENSIONS), np.float32)


async def aembed(text: str) -> Embedded:
    with _cache_lock:
        hit = _cache.get(text)
    if hit is not None:
        return hit
    return await asyncio.get_running_loop().run_in_executor(_executor, embed, text)


def clear_cache() -> None:
    with _cache_lock:
        _cache.clear()
