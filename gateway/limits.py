"""The engine's own limits per API key and per project: requests per minute and tokens per minute
(token buckets) and a USD budget per day or month. Exceeding one gives 429 with `retry-after`.

Buckets live in memory in the embedded mode and in Redis (one Lua script, atomic) when REDIS_URL
is set, so every server process shares them. A request with no limits configured skips all of it.

Tokens are known only after the answer: a request is admitted while the bucket is not empty and
its tokens are debited afterwards (the bucket may go negative and then refuses until it refills).
Spend is added by the trace writer as it prices traces; the first check of a period seeds the
counter from ClickHouse, so the budget holds across restarts (to within one flush interval).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings

from opentracy_site import clickhouse

from .cache import KeyInfo
from .errors import rate_limited

log = logging.getLogger(__name__)

# Token bucket: KEYS[1]; ARGV capacity, refill per second, now, amount, mode.
# mode "take": take `amount` if available; "check": admit while the level is above 0; "debit": take
# `amount` unconditionally. Returns the seconds to wait (0 = admitted), as a string.
BUCKET_LUA = """
local cap, rate, now, amount, mode = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5]
local state = redis.call('HMGET', KEYS[1], 'level', 'ts')
local level = tonumber(state[1]) or cap
local ts = tonumber(state[2]) or now
level = math.min(cap, level + math.max(0, now - ts) * rate)
local wait = 0
if mode == 'take' then
  if level >= amount then level = level - amount else wait = (amount - level) / rate end
elseif mode == 'check' then
  if level <= 0 then wait = -level / rate + 0.001 end
else
  level = level - amount
end
redis.call('HSET', KEYS[1], 'level', level, 'ts', now)
redis.call('EXPIRE', KEYS[1], math.ceil(cap / rate) + 60)
return tostring(wait)
"""
# Add spend to a period's counter only once it has been seeded from ClickHouse.
SPEND_LUA = (
    "if redis.call('EXISTS', KEYS[1]) == 1 then return redis.call('INCRBYFLOAT', KEYS[1], ARGV[1]) end return nil"
)


class MemoryBuckets:
    def __init__(self) -> None:
        self._state: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def hit(self, key: str, cap: float, rate: float, amount: float, mode: str) -> float:
        with self._lock:
            now = time.monotonic()
            level, ts = self._state.get(key, (cap, now))
            level = min(cap, level + (now - ts) * rate)
            wait = 0.0
            if mode == "take":
                if level >= amount:
                    level -= amount
                else:
                    wait = (amount - level) / rate
            elif mode == "check":
                if level <= 0:
                    wait = -level / rate + 0.001
            else:
                level -= amount
            self._state[key] = (level, now)
            return wait


_memory = MemoryBuckets()
_spend: dict[str, float] = {}  # embedded mode: period key → USD
_spend_lock = threading.Lock()
_redis: dict[asyncio.AbstractEventLoop, Any] = {}


def _redis_client() -> Any:
    import redis.asyncio as aioredis

    loop = asyncio.get_running_loop()
    client = _redis.get(loop)
    if client is None:
        client = _redis[loop] = aioredis.Redis.from_url(settings.REDIS_URL)
    return client


async def _bucket(key: str, limit: int, amount: float, mode: str) -> float:
    rate = limit / 60.0
    if not settings.REDIS_URL:
        return _memory.hit(key, float(limit), rate, amount, mode)
    wait = await _redis_client().eval(BUCKET_LUA, 1, f"ot:rl:{key}", limit, rate, time.time(), amount, mode)
    return float(wait)


def period(kind: str, now: datetime) -> tuple[str, datetime, datetime]:
    """(key, start, end) of the budget period containing `now` (UTC)."""
    if kind == "day":
        start = now.replace(hour=0, minute=0, second=0, microsecond=0)
        return start.strftime("%Y-%m-%d"), start, start + timedelta(days=1)
    start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    end = (start + timedelta(days=32)).replace(day=1)
    return start.strftime("%Y-%m"), start, end


def _spent_in_clickhouse(project_id: int, start: datetime) -> float:
    _cols, rows = clickhouse.query(
        "SELECT sum(ifNull(cost_total_usd, 0)) FROM traces"
        " WHERE project_id = {p:UInt64} AND timestamp >= {s:DateTime64(3)} AND endpoint != 'ingest'",
        parameters={"p": project_id, "s": start},
    )
    return float(rows[0][0] or 0.0)


async def spent(project_id: int, kind: str) -> tuple[float, float]:
    """USD spent by the project this period, and seconds until the period ends."""
    now = datetime.now(UTC)  # read once: a second read could fall after the period's end
    key, start, end = period(kind, now)
    name = f"{project_id}:{key}"
    left = (end - now).total_seconds()
    if settings.REDIS_URL:
        client = _redis_client()
        value = await client.get(f"ot:spend:{name}")
        if value is None:
            seeded = await sync_to_async(_spent_in_clickhouse)(project_id, start)
            await client.set(f"ot:spend:{name}", seeded, nx=True, ex=int(left) + 86400)
            value = await client.get(f"ot:spend:{name}")
        return float(value), left
    with _spend_lock:
        value = _spend.get(name)
    if value is None:
        seeded = await sync_to_async(_spent_in_clickhouse)(project_id, start)
        with _spend_lock:
            value = _spend.setdefault(name, seeded)
    return value, left


def add_spend(totals: dict[tuple[int, float], float]) -> None:
    """Called by the trace writer's thread: {(project_id, unix time): usd} of one batch. Any time in
    the trace's UTC day will do (the writer sums a batch per day and sends the day's start): only
    the day and the month are read from it."""
    by_period: dict[str, float] = {}
    for (project_id, ts), usd in totals.items():
        when = datetime.fromtimestamp(ts, UTC)
        for kind in ("day", "month"):
            name = f"{project_id}:{period(kind, when)[0]}"
            by_period[name] = by_period.get(name, 0.0) + usd
    if settings.REDIS_URL:
        import redis

        client = redis.Redis.from_url(settings.REDIS_URL)
        try:
            for name, usd in by_period.items():
                client.eval(SPEND_LUA, 1, f"ot:spend:{name}", usd)
        finally:
            client.close()
        return
    with _spend_lock:
        for name, usd in by_period.items():
            if name in _spend:
                _spend[name] += usd


async def admit(key: KeyInfo, body: dict[str, Any]) -> None:
    """Raise 429 if the key or its project is over a limit; take one request from the buckets."""
    lim = key.limits
    if not lim.any:
        return
    checks = (
        ("key", key.key_id, lim.key_rpm, lim.key_tpm),
        ("project", key.project_id, lim.project_rpm, lim.project_tpm),
    )
    for scope, ident, rpm, tpm in checks:
        if rpm is not None:
            wait = await _bucket(f"{scope}:{ident}:rpm", rpm, 1, "take")
            if wait:
                raise rate_limited(f"Rate limit reached: this {scope} allows {rpm} requests per minute.", wait)
        if tpm is not None:
            wait = await _bucket(f"{scope}:{ident}:tpm", tpm, 0, "check")
            if wait:
                raise rate_limited(f"Rate limit reached: this {scope} allows {tpm} tokens per minute.", wait)
    if lim.budget_usd is not None:
        used, left = await spent(key.project_id, lim.budget_period)
        if used >= lim.budget_usd:
            raise rate_limited(
                f"This project's budget of ${lim.budget_usd:.2f} per {lim.budget_period} is spent "
                f"(${used:.2f}); it resets in {left / 3600:.1f} h.",
                left,
                code="budget_exceeded",
            )


def settle(key: KeyInfo, rec: dict[str, Any]) -> None:
    """Debit the request's tokens from the token buckets (after the answer)."""
    lim = key.limits
    tokens = int(rec.get("prompt_tokens", 0)) + int(rec.get("completion_tokens", 0))
    if not tokens or (lim.key_tpm is None and lim.project_tpm is None):
        return
    debits = [(f"key:{key.key_id}:tpm", lim.key_tpm), (f"project:{key.project_id}:tpm", lim.project_tpm)]

    async def debit() -> None:
        for name, limit in debits:
            if limit is not None:
                await _bucket(name, limit, tokens, "debit")

    task = asyncio.ensure_future(debit())
    task.add_done_callback(_log_failure)


def _log_failure(task: asyncio.Future[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.warning("token debit failed: %r", task.exception())


def reset() -> None:
    """Tests: forget buckets and spend (in memory, and the engine's keys in Redis)."""
    _memory._state.clear()
    with _spend_lock:
        _spend.clear()
    if settings.REDIS_URL:
        import redis

        client = redis.Redis.from_url(settings.REDIS_URL)
        try:
            for pattern in ("ot:rl:*", "ot:spend:*"):
                for name in client.scan_iter(pattern):
                    client.delete(name)
        finally:
            client.close()
