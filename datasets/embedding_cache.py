"""Prompt embeddings cached in ClickHouse (`prompt_embeddings`), keyed by the model's name and a hash
of the exact text embedded: a prompt is embedded once, whatever the project, run or re-run.

Lookups are batched (one query per LOOKUP_CHUNK distinct hashes, hashes bound as hex strings), only
the missing texts go to the clustering model (datasets/embedder.py), and their vectors are inserted
before the caller moves on, so a cancelled or failed run still leaves what it embedded for the next one.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from opentracy_site import clickhouse

from . import embedder
from .ch_sql import EMBEDDING_COLUMNS, EMBEDDINGS_TABLE

LOOKUP_CHUNK = 20_000  # hashes per IN list: ~0.7 MB of parameters, one round trip per 20k prompts
EMBED_BATCH = 256  # texts per model call; progress and cancel are checked between batches


def content_hash(text: str) -> bytes:
    """First 16 bytes of blake2b of the exact embedded text (UTF-8)."""
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).digest()


@dataclass(frozen=True)
class CachedEmbeddings:
    vectors: np.ndarray  # (n, dimensions) float32, unit length, in the order of the texts given
    new: int  # distinct texts embedded now (0 when every one was cached)
    cached: int  # distinct texts found in the cache


def lookup(hashes: Sequence[bytes], model: str) -> dict[bytes, np.ndarray]:
    """The cached vectors of `model` among `hashes` (distinct), in one query per LOOKUP_CHUNK."""
    found: dict[bytes, np.ndarray] = {}
    for start in range(0, len(hashes), LOOKUP_CHUNK):
        chunk = [h.hex() for h in hashes[start : start + LOOKUP_CHUNK]]
        _cols, rows = clickhouse.query(
            f"SELECT hex(content_hash), any(vector) AS vector FROM {EMBEDDINGS_TABLE}"  # noqa: S608
            " WHERE model = {model:String}"
            # toFixedString: compared as a String, a hash ending in a zero byte never matched (1 in 256)
            " AND content_hash IN (SELECT toFixedString(unhex(arrayJoin({hashes:Array(String)})), 16))"
            " GROUP BY content_hash",
            {"model": model, "hashes": chunk},
            column_formats={"vector": "bytes"},
        )
        for hex_hash, vector in rows:
            found[bytes.fromhex(hex_hash)] = np.frombuffer(vector, dtype="<f4")
    return found


def store(hashes: Sequence[bytes], vectors: np.ndarray, model: str) -> None:
    if len(hashes):
        little = np.asarray(vectors, dtype="<f4")
        rows = [(model, h, v.tobytes()) for h, v in zip(hashes, little, strict=True)]
        clickhouse.insert(EMBEDDINGS_TABLE, rows, EMBEDDING_COLUMNS)


def truncated_by_model(texts: Sequence[str]) -> set[str]:
    """The texts over MiniLM's word-piece limit, for the run's message (asked once per run, not per
    embedding lookup). A word piece covers at least one character, so only texts longer than the
    limit in characters are tokenised (whether cached or not: the count does not depend on what an
    earlier run embedded)."""
    limit = embedder.max_tokens()
    long = list({t for t in texts if len(t) > limit})
    if not long:
        return set()
    ids = embedder.load().tokenizer(long, truncation=False, verbose=False)["input_ids"]
    return {t for t, i in zip(long, ids, strict=True) if len(i) - 2 > limit}  # less the 2 special tokens


def embeddings_for(
    texts: Sequence[str],
    *,
    model: str = embedder.DEFAULT_MODEL,
    on_progress: Callable[[float], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> CachedEmbeddings:
    """`model`'s vectors for `texts` from the cache, embedding (and caching) only the missing ones.
    on_progress(fraction) is called after each batch; should_stop() is checked before each and,
    when true, raises Stopped (what was embedded so far stays cached)."""
    from . import clustering

    hashes = [content_hash(t) for t in texts]
    distinct = list(dict.fromkeys(hashes))
    found = lookup(distinct, model)
    text_of = dict(zip(hashes, texts, strict=True))
    # Shortest first: a batch pads to its longest text, so batches of like lengths waste least.
    missing = sorted((h for h in distinct if h not in found), key=lambda h: len(text_of[h]))
    for start in range(0, len(missing), EMBED_BATCH):
        if should_stop and should_stop():
            raise Stopped()
        batch = missing[start : start + EMBED_BATCH]
        vectors = clustering.embed([text_of[h] for h in batch], model)
        store(batch, vectors, model)
        found.update(zip(batch, vectors, strict=True))
        if on_progress:
            on_progress(min(1.0, (start + len(batch)) / len(missing)))
    dims = len(next(iter(found.values()))) if found else embedder.dimensions(model)  # no model load when all cached
    out = np.zeros((len(texts), dims), dtype=np.float32)
    for i, h in enumerate(hashes):
        out[i] = found[h]
    return CachedEmbeddings(out, new=len(missing), cached=len(distinct) - len(missing))


class Stopped(Exception):
    """should_stop() said so between two batches."""
