"""Budget periods at their boundaries (UTC day, month and year ends), without a clock of their own:
the instants are given, or the module's clock is replaced."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from asgiref.sync import async_to_sync

from gateway import limits


def at(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0, micro: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, second, micro, tzinfo=UTC)


@pytest.mark.parametrize(
    ("now", "day", "month"),
    [
        (at(2026, 11, 30, 23, 59, 59, 999_999), "2026-11-30", "2026-11"),
        (at(2026, 12, 1, 0, 5), "2026-12-01", "2026-12"),
        (at(2026, 12, 1, 1, 30), "2026-12-01", "2026-12"),
        (at(2026, 12, 31, 23, 59), "2026-12-31", "2026-12"),
        (at(2027, 1, 1, 0, 10), "2027-01-01", "2027-01"),
        (at(2028, 2, 29, 12), "2028-02-29", "2028-02"),
    ],
)
def test_periods_at_day_month_and_year_ends(now: datetime, day: str, month: str) -> None:
    key, start, end = limits.period("day", now)
    assert key == day and start == at(now.year, now.month, now.day) and (end - start).days == 1
    key, start, end = limits.period("month", now)
    next_month = at(now.year + 1, 1, 1) if now.month == 12 else at(now.year, now.month + 1, 1)
    assert (key, start, end) == (month, at(now.year, now.month, 1), next_month)
    assert start <= now < end


def test_spent_reads_the_clock_once(monkeypatch: pytest.MonkeyPatch, settings: Any) -> None:
    """The period and the seconds left in it come from one instant: were the clock read twice, a
    month's end between the two reads would give the month just ended a negative time left."""
    settings.REDIS_URL = ""
    instants = iter([at(2026, 11, 30, 23, 59, 59, 999_999), at(2026, 12, 1, 0, 0, 0, 1)])

    class Clock(datetime):
        @classmethod
        def now(cls, tz: Any = None) -> datetime:  # type: ignore[override]
            return next(instants)

    monkeypatch.setattr(limits, "datetime", Clock)
    limits.reset()
    try:
        used, left = async_to_sync(limits.spent)(987_321, "month")  # a project with no traces
    finally:
        limits.reset()
    assert used == 0.0
    assert left == pytest.approx(1e-6)  # November's last microsecond, not a negative time
