"""The daily spend limit (``DAILY_BUDGET_USD``), shared by every replica.

Replicas add their spend atomically to one Redis key per UTC day
(``INCRBYFLOAT`` in a MULTI with an ``EXPIRE`` of two days, so old days clean
themselves up), so N replicas stop together at the limit, not at N times it.

A replica writes to Redis one spend at a time, and each write carries everything
spent here since the last one. Concurrent LM calls finishing together thus cost a
round trip or two on one connection, not one new connection each: that
connection storm, on a busy machine, made connects exceed the short Redis
timeout and left spends behind on the local count (where the other replicas
cannot see them).

Without Redis, or while it is down, each replica counts locally, starting from
the last total it saw, and keeps that unsynced amount to add to Redis on its next
successful write, so spend during an outage is not lost. The budget never raises:
a money guard that breaks serving is worse than one that is briefly approximate.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime

from redis.asyncio import Redis

from ..cache.redis import REDIS_FAILURES, FailureWindow
from ..clock import Clock

DAY_KEY_TTL_SECONDS = 2 * 24 * 3600

# A foreign non-number under our key is a ValueError; treat it like an outage, not a crash.
_FAILURES: tuple[type[BaseException], ...] = (*REDIS_FAILURES, ValueError)


def _utc_now() -> datetime:
    return datetime.now(UTC)


class Budget:
    """Daily USD budget; ``daily_usd`` None or 0 means unlimited (and no Redis traffic)."""

    def __init__(
        self,
        daily_usd: float | None,
        redis: Redis | None,
        *,
        key_prefix: str = "dspy:budget",
        now: Callable[[], datetime] = _utc_now,
        backoff_seconds: float = 1.0,
        clock: Clock = time.monotonic,
    ) -> None:
        self.daily_usd = daily_usd if daily_usd and daily_usd > 0 else None
        self._redis = redis
        self._prefix = key_prefix
        self._now = now
        self._window = FailureWindow(backoff_seconds, clock)
        self._day = ""
        self._seen = 0.0  # the day's shared total as last read from Redis
        self._pending = 0.0  # spent here but not yet added to Redis
        self._writing = asyncio.Lock()  # one write to Redis at a time (see the module docstring)

    @property
    def healthy(self) -> bool:
        """False while the shared counter is unreachable and the local count is used."""
        return self._redis is None or self._window.healthy

    @property
    def known_today(self) -> float:
        """Today's spend as last known here (the shared total last read or written, plus what is
        pending), without any I/O: what ``dspy_budget_spent_today_usd`` exports."""
        if self._now().strftime("%Y-%m-%d") != self._day:
            return 0.0
        return self._seen + self._pending

    async def exhausted(self) -> bool:
        if self.daily_usd is None:
            return False
        return await self.spent_today() >= self.daily_usd

    async def spend(self, usd: float) -> float:
        """Add ``usd`` to today's spend; returns the day's total as best known.

        When Redis is reachable, the amount is in Redis by the time this returns:
        written by this call, or by the call before it, which took everything
        pending when its turn came.
        """
        self._roll()
        if usd > 0:
            self._pending += usd
        if self._redis is None:
            return self._seen + self._pending
        async with self._writing:
            key = self._roll()
            if self._pending <= 0 or not self._window.may_try():
                return self._seen + self._pending
            amount, self._pending = self._pending, 0.0
            try:
                async with self._redis.pipeline(transaction=True) as pipe:
                    pipe.incrbyfloat(key, amount)
                    pipe.expire(key, DAY_KEY_TTL_SECONDS)
                    total, _ = await pipe.execute()
                self._seen = max(self._seen, float(total))  # a read may have stored a newer total
            except _FAILURES:
                self._window.failed()
                self._pending += amount
            else:
                self._window.succeeded()
        return self._seen + self._pending

    async def spent_today(self) -> float:
        key = self._roll()
        if self._redis is not None and self._window.may_try():
            try:
                raw = await self._redis.get(key)
                self._seen = float(raw) if raw is not None else 0.0
            except _FAILURES:
                self._window.failed()
            else:
                self._window.succeeded()
        return self._seen + self._pending

    def _roll(self) -> str:
        """Today's Redis key; a new UTC day starts from zero (yesterday's unsynced spend no longer counts)."""
        day = self._now().strftime("%Y-%m-%d")
        if day != self._day:
            self._day, self._seen, self._pending = day, 0.0, 0.0
        return f"{self._prefix}:{day}"
