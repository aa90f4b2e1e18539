"""Fixed log-spaced histograms of latency and TTFT: how the rollup and the raw-table path of
traces/stats.py count values in buckets (SQL), and how p50/p95/p99 are read back (Python).

Why buckets instead of t-digest states: the overview merges a month of hourly rows per query, and
merging t-digest states dominated it (137 ms for latency at 10M traces). Bucket counts merge by
addition, and a sparse map of them (only the buckets an hour touched) stays small.

Buckets: bucket 0 holds values below 1 ms (0 included); bucket b (1 <= b <= 140) holds
[GAMMA^(b-1), GAMMA^b) ms with GAMMA = 1.1, so 1 ms to 1.1^140 ms = 622 s (10.4 min); bucket 141
holds everything above. A quantile is the bucket holding the order statistic quantileExact would
pick (index floor(q * n) of the sorted values), answered as the point 2·GAMMA^b / (1 + GAMMA), whose
relative distance to any value of the bucket is at most (GAMMA - 1) / (GAMMA + 1) = 4.76%
(DDSketch's bound), then clamped to the group's [min, max] (which only moves it closer: a single
value, or a quantile in the lowest or highest bucket, is often exact). Below 1 ms the answer is off
by at most 0.5 ms; above 10.4 min it is at least 622 s and at most the maximum.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Iterable, Mapping
from itertools import accumulate

GAMMA = 1.1
BUCKETS = 142  # underflow + 140 log buckets + overflow: fits the UInt8 keys of the rollup's maps
MAX_RELATIVE_ERROR = (GAMMA - 1) / (GAMMA + 1)
_LOG_GAMMA = math.log(GAMMA)


def bucket_sql(column: str) -> str:
    """The bucket (UInt8) of a non-null value in milliseconds. Shared by the rollup's view, its
    backfill and the raw-table path, so both paths count a value in the same bucket."""
    return f"toUInt8(if({column} < 1, 0, least(floor(log({column}) / log({GAMMA})) + 1, {BUCKETS - 1})))"


def hist_sql(column: str, condition: str = "") -> str:
    """Aggregate: the sparse histogram of `column` as Map(UInt8, UInt64), zero buckets left out.
    countResample counts per bucket without building a map per row (cheaper on insert)."""
    counts = (
        f"countResampleIf(0, {BUCKETS}, 1)({bucket_sql(column)}, {condition})"
        if condition
        else f"countResample(0, {BUCKETS}, 1)({bucket_sql(column)})"
    )
    return f"mapFilter((k, v) -> v > 0, mapFromArrays(range({BUCKETS}), {counts}))"


def representative(bucket: int) -> float:
    """The value a bucket answers with (before clamping to the group's min and max)."""
    if bucket <= 0:
        return 0.5
    if bucket >= BUCKETS - 1:
        return GAMMA ** (BUCKETS - 2)
    return 2 * GAMMA**bucket / (1 + GAMMA)


def merge(hists: Iterable[Mapping[int, int]]) -> dict[int, int]:
    out: dict[int, int] = {}
    for hist in hists:
        for bucket, count in hist.items():
            out[bucket] = out.get(bucket, 0) + count
    return out


def quantiles(
    hist: Mapping[int, int] | None, lo: float | None, hi: float | None, qs: Iterable[float]
) -> list[float | None]:
    """The quantiles qs of the values counted in hist (None for each when it is empty)."""
    items = sorted((b, n) for b, n in (hist or {}).items() if n > 0)
    cumulative = list(accumulate(n for _b, n in items))
    qs = list(qs)
    if not cumulative:
        return [None] * len(qs)
    total = cumulative[-1]
    out: list[float | None] = []
    for q in qs:
        rank = min(int(q * total), total - 1)  # 0-based index of the order statistic
        value = representative(items[bisect_right(cumulative, rank)][0])  # first bucket past it
        if lo is not None and hi is not None and lo <= hi:
            value = min(max(value, lo), hi)
        out.append(value)
    return out
