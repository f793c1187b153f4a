"""Which cache entries are hot: hit counts per scope in Redis, so a new pod fills L1 with them.

Counting must cost nothing a request notices: a hit only adds one to a dict entry in
this process (``hit``). ``run`` moves the counts to Redis every ``interval`` seconds
in one pipeline: ``ZINCRBY <base>cache-hot:<scope> n <key>`` per key, then per scope
touched a trim to the ``keep`` best members and an ``EXPIRE`` of the entries' TTL, so
the sets stay bounded and vanish with a scope nobody asks for any more. Counts from
every replica add up, and L1 hits count (they are most of the hits of a hot entry).

Counts never decay inside a TTL: "hottest" means most hit since the set was created.
That is the right bias for a pod's first minutes (the entries many users asked for),
and the trim keeps one-off entries from growing the set. Losing counts (Redis down
during a flush) only makes the next pod's L1 a little colder, so they are dropped.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
from collections.abc import Collection, Iterable

from redis.asyncio import Redis

from ..logs import ProblemLog
from .keys import CacheNames, glob_escape, scope_of
from .redis import REDIS_FAILURES

log = logging.getLogger(__name__)

FLUSH_INTERVAL_SECS = 5.0
KEEP_FACTOR = 4
"""Members kept per scope: this many times the entries a pod loads (at least ``MIN_KEEP``), so a
key that is rising has room to climb before the trim would drop it."""
MIN_KEEP = 256


class HotKeys:
    """Counts hits here, adds them up in Redis, and names the hottest keys of some scopes."""

    def __init__(
        self, client: Redis, names: CacheNames, *, load: int, ttl_seconds: int, interval: float = FLUSH_INTERVAL_SECS
    ) -> None:
        self._client = client
        self._names = names
        self.load = load
        """How many keys ``hottest`` returns at most (MEMORY_CACHE_WARM_ENTRIES)."""
        self._keep = max(MIN_KEEP, load * KEEP_FACTOR)
        self._ttl = ttl_seconds
        self._interval = interval
        self._pending: dict[str, int] = {}
        self._problems = ProblemLog(log)

    def hit(self, key: str) -> None:
        pending = self._pending
        pending[key] = pending.get(key, 0) + 1

    async def flush(self) -> bool:
        """Add the counts gathered since the last flush; False (counts dropped) when Redis refused."""
        if not self._pending:
            return True
        pending, self._pending = self._pending, {}
        scopes: set[str] = set()
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                for key, count in pending.items():
                    scope = scope_of(key)
                    scopes.add(scope)
                    pipe.zincrby(self._names.hot(scope), count, key)
                for scope in scopes:
                    pipe.zremrangebyrank(self._names.hot(scope), 0, -self._keep - 1)
                    pipe.expire(self._names.hot(scope), self._ttl)
                await pipe.execute()
        except REDIS_FAILURES as exc:
            self._problems.report(f"cache hit counts: Redis is unavailable ({type(exc).__name__}: {exc})")
            return False
        self._problems.clear("cache hit counts: Redis is reachable again")
        return True

    async def run(self) -> None:
        """Flush every ``interval`` until cancelled; never raises."""
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self.flush()
            except Exception:  # a bug must not end the loop for good
                log.exception("cache hit counts: unexpected error")

    async def forget(self, scopes: Collection[str] | None, keys: Collection[str] = ()) -> None:
        """Drop the counts of invalidated entries (``scopes`` None: every scope). Raises Redis errors."""
        if scopes is None:
            self._pending.clear()
            names = [name async for name in self._client.scan_iter(match=glob_escape(self._names.hot_prefix) + "*")]
        else:
            self._pending = {k: n for k, n in self._pending.items() if scope_of(k) not in scopes and k not in keys}
            names = [self._names.hot(scope) for scope in scopes]
        async with self._client.pipeline(transaction=False) as pipe:
            if names:
                pipe.unlink(*names)
            for key in keys:
                pipe.zrem(self._names.hot(scope_of(key)), key)
            await pipe.execute()

    async def hottest(self, scopes: Iterable[str]) -> list[str]:
        """Up to ``load`` keys of ``scopes``, most hit first. Raises Redis errors."""
        scopes = sorted(set(scopes))
        if self.load < 1 or not scopes:
            return []
        async with self._client.pipeline(transaction=False) as pipe:
            for scope in scopes:
                pipe.zrevrange(self._names.hot(scope), 0, self.load - 1, withscores=True)
            ranked = await pipe.execute()
        best = heapq.nlargest(self.load, (pair for pairs in ranked for pair in pairs), key=lambda pair: pair[1])
        return [member.decode() if isinstance(member, bytes) else member for member, _ in best]
