"""The two-level cache in front of the LM: L1 memory, then L2 Redis, then compute.

``get_or_compute`` also collapses concurrent identical misses in this process into
one compute (single-flight): when twenty users ask the same new question at once,
the LM is called once. The compute runs in its own task, so a caller that goes
away (client disconnect, timeout) does not cancel the work the others wait for.

Return levels of ``get_or_compute`` (refines /tmp/runtime-interfaces.md): ``"memory"``
or ``"redis"`` for a cache hit, ``None`` when this call ran the compute, and
``"inflight"`` when it joined a compute another caller started. A joiner did not
spend tokens, so the app should treat it like a hit for cost accounting.

``stale`` (``CACHE_STALE_SECS``) is a second memory store that keeps every answer this pod
stored or read from Redis for that much longer than it stays fresh; it is never read by
``get``, only by ``stale_get`` when the answer cannot be computed (stale-if-error). A fresh
hit in L1 never touches it; an L2 hit and a store write it as well.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from ..metrics import Metrics
from .hot import HotKeys
from .memory import MemoryCache
from .redis import RedisCache

Compute = Callable[[], Awaitable[tuple[bytes, bool]]]
"""Produces ``(value, cacheable)``; errors and fallback answers come back with ``cacheable=False``."""

INFLIGHT = "inflight"


@dataclass(frozen=True, slots=True)
class CacheHit:
    value: bytes
    level: Literal["memory", "redis"]


class _NoCounter:
    """Stands in for a metric child when the cache runs without metrics."""

    def inc(self, amount: float = 1) -> None:
        return None


class TieredCache:
    """L1 and L2 are each optional: ``None`` disables a level (no Redis configured, or tests)."""

    def __init__(
        self, memory: MemoryCache | None, redis: RedisCache | None, metrics: Metrics | None = None,
        hot: HotKeys | None = None, stale: MemoryCache | None = None,
    ) -> None:
        self._memory = memory
        self.stale = stale
        self._redis = redis
        self.hot = hot
        """Counts hits for the next pod's L1 (``hot.py``); None when nothing loads them."""
        self._count_hit = hot.hit if hot is not None else None
        self._inflight: dict[str, asyncio.Task[bytes]] = {}
        # Bound once: counting must cost nanoseconds on the hit path.
        counter = metrics.cache_op if metrics is not None else (lambda level, op: _NoCounter())
        self._memory_hit = counter("memory", "hit")
        self._memory_miss = counter("memory", "miss")
        self._memory_set = counter("memory", "set")
        self._redis_hit = counter("redis", "hit")
        self._redis_miss = counter("redis", "miss")
        self._redis_set = counter("redis", "set")
        self._redis_error = counter("redis", "error")

    def _memory_get(self, key: str) -> bytes | None:
        if self._memory is None:
            return None
        value = self._memory.get(key)
        if value is None:
            self._memory_miss.inc()
            return None
        self._memory_hit.inc()
        if self._count_hit is not None:
            self._count_hit(key)
        return value

    async def _redis_get(self, key: str) -> bytes | None:
        assert self._redis is not None
        value = await self._redis.get(key)
        if value is not None:
            self._redis_hit.inc()
            if self._count_hit is not None:
                self._count_hit(key)
            if self._memory is not None:
                self._memory.set(key, value)
                self._memory_set.inc()
            if self.stale is not None:
                self.stale.set(key, value)
        elif self._redis.healthy:
            self._redis_miss.inc()
        else:
            # Failed now or skipped during the back-off window: Redis was not used.
            self._redis_error.inc()
        return value

    @property
    def memory(self) -> MemoryCache | None:
        return self._memory

    @property
    def redis(self) -> RedisCache | None:
        return self._redis

    async def preload(self, keys: Sequence[str]) -> set[str]:
        """Copy the entries of ``keys`` that Redis holds into L1 (warm-up); the keys found.

        Not counted as hits or misses: no request asked, and warm-up has its own metrics.
        Without L1 the keys found are still reported (they need no compute).
        """
        if self._redis is None or not keys:
            return set()
        found = await self._redis.get_many(keys)
        if self._memory is not None:
            for key, value in found.items():
                self._memory.set(key, value)
        return set(found)

    async def get(self, key: str) -> CacheHit | None:
        """L1, then L2; an L2 hit is copied into L1 so the next read stays in-process."""
        value = self._memory_get(key)
        if value is not None:
            return CacheHit(value, "memory")
        if self._redis is not None:
            value = await self._redis_get(key)
            if value is not None:
                return CacheHit(value, "redis")
        return None

    def stale_get(self, key: str) -> bytes | None:
        """The last answer stored for ``key`` within its stale grace, fresh or not (None without one)."""
        return self.stale.get(key) if self.stale is not None else None

    async def set(self, key: str, value: bytes) -> None:
        if self._memory is not None:
            self._memory.set(key, value)
            self._memory_set.inc()
        if self.stale is not None:
            self.stale.set(key, value)
        if self._redis is not None:
            await self._redis.set(key, value)
            (self._redis_set if self._redis.healthy else self._redis_error).inc()

    async def get_or_compute(self, key: str, compute: Compute, *, read: bool = True) -> tuple[bytes, str | None]:
        """The cached value, or the computed one (stored when cacheable).

        ``read=False`` (the API's ``use_cache: false``) skips every read, including
        joining an in-flight compute, yet still stores a cacheable result so the
        fresh answer serves later readers. A failing compute raises in every caller
        that shares it and stores nothing.
        """
        if not read:
            value, cacheable = await compute()
            if cacheable:
                await self.set(key, value)
            return value, None

        hit = await self.get(key)
        if hit is not None:
            return hit.value, hit.level
        task = self._inflight.get(key)
        if task is not None:
            return await asyncio.shield(task), INFLIGHT
        if self._redis is not None and self._memory is not None:
            # While we awaited Redis another caller may have computed and stored it.
            stored = self._memory.get(key)
            if stored is not None:
                return stored, "memory"
        task = asyncio.create_task(self._compute_and_store(key, compute))
        task.add_done_callback(_consume_exception)
        self._inflight[key] = task
        return await asyncio.shield(task), None

    async def _compute_and_store(self, key: str, compute: Compute) -> bytes:
        try:
            value, cacheable = await compute()
            if cacheable:
                await self.set(key, value)
            return value
        finally:
            del self._inflight[key]

    async def health(self) -> dict[str, str]:
        """Per level: ``ok``, ``disabled``, or (Redis only) ``down``; down means degraded, not dead."""
        redis_state = "disabled"
        if self._redis is not None:
            redis_state = "ok" if await self._redis.ping() else "down"
        return {"memory": "disabled" if self._memory is None else "ok", "redis": redis_state}

    async def close(self) -> None:
        if self._redis is not None:
            await self._redis.close()


def _consume_exception(task: asyncio.Task[bytes]) -> None:
    # When every waiter was cancelled nobody reads a failed compute's exception;
    # reading it here keeps asyncio from logging "exception was never retrieved".
    if not task.cancelled():
        task.exception()
