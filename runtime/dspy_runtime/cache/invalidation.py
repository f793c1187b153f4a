"""Invalidation: remove entries from Redis and from the L1 of every replica.

``Invalidator.invalidate`` (``DELETE /v1/cache`` on any one pod) deletes from Redis
first, then tells every runtime of the resource: ``INCR <base>cache-generation`` and
``PUBLISH <base>cache-invalidate {"generation", "origin", "kind", "items"}``. In that
order a replica cannot refill its L1 from Redis with what is being removed: once the
message arrives, Redis no longer has it. Every runtime runs ``run``, which removes the
same entries from its own L1 (the sender's was cleared before it published).

Pub/sub drops what is published while a subscriber is disconnected (the routing
wire's problem too, solved the same way): on every (re)subscription the listener
reads the generation, and when it moved while it was away it clears its whole L1
(it cannot know what it missed; L1 refills from Redis, which was cleared properly).
Without Redis there is one L1 to clear, this pod's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import orjson
from redis.asyncio import Redis

from ..logs import ProblemLog
from ..metrics import Metrics
from ..resilience.retry import backoff_delay
from .keys import CacheNames
from .redis import REDIS_FAILURES
from .tiered import TieredCache

log = logging.getLogger(__name__)

Kind = Literal["all", "scopes", "keys"]
HEARTBEAT_SECS = 15.0
"""A listener that heard nothing for this long pings, so a dead connection is noticed."""


@dataclass(frozen=True)
class Invalidation:
    """What to remove: every entry, the entries of some scopes (variants), or some keys."""

    kind: Kind
    items: frozenset[str] = frozenset()

    def message(self, generation: int, origin: str) -> bytes:
        return orjson.dumps(
            {"generation": generation, "origin": origin, "kind": self.kind, "items": sorted(self.items)}
        )

    @classmethod
    def from_message(cls, raw: bytes | str) -> tuple[int, str, Invalidation]:
        """(generation, origin, invalidation) of a published message; ValueError for anything else."""
        try:
            data = orjson.loads(raw)
            generation, origin, kind, items = data["generation"], data["origin"], data["kind"], data["items"]
        except (orjson.JSONDecodeError, TypeError, KeyError):
            raise ValueError("not an invalidation message") from None
        if kind not in ("all", "scopes", "keys") or not isinstance(generation, int) or not isinstance(items, list):
            raise ValueError("not an invalidation message")
        return generation, str(origin), cls(kind, frozenset(str(item) for item in items))


@dataclass(frozen=True)
class Cleared:
    """What one invalidation removed: from Redis, from this pod's L1, and how many runtimes heard."""

    redis: int
    memory: int
    notified: int

    def public(self) -> dict[str, Any]:
        return {"removed": {"redis": self.redis, "memory": self.memory}, "replicas_notified": self.notified}


class Invalidator:
    """Removes entries (``invalidate``) and follows the other pods' invalidations (``run``)."""

    def __init__(
        self,
        cache: TieredCache,
        names: CacheNames,
        metrics: Metrics,
        *,
        backoff: tuple[float, float] = (0.2, 5.0),
        rng: Callable[[], float] = random.random,
    ) -> None:
        self._cache = cache
        self._names = names
        self._metrics = metrics
        self._backoff = backoff
        self._rng = rng
        self._failures = 0
        self._generation: int | None = None
        self._origin = f"{random.getrandbits(64):016x}"
        """Names this process in its messages, so its listener skips what it already applied."""
        self._problems = ProblemLog(log)

    @property
    def _client(self) -> Redis | None:
        return self._cache.redis.client if self._cache.redis is not None else None

    async def invalidate(self, what: Invalidation) -> Cleared:
        """Redis, then every replica's L1 (this one's at once). Raises Redis errors before any
        L1 is touched, so a failure leaves the cache as it was (retry it)."""
        removed = notified = 0
        redis = self._cache.redis
        if redis is not None:
            if what.kind == "all":
                removed = await redis.delete_matching("*")
            elif what.kind == "scopes":
                for scope in sorted(what.items):
                    removed += await redis.delete_matching(f"{scope}:*")
            else:
                removed = await redis.delete(what.items)
            if self._cache.hot is not None:
                await self._cache.hot.forget(None if what.kind == "all" else self._scopes(what), self._keys(what))
        memory = self.apply(what, "local")
        self._metrics.bound(self._metrics.cache_invalidated_entries_total, "redis").inc(removed)
        if redis is not None:
            generation = int(await redis.client.incr(self._names.generation))
            notified = int(await redis.client.publish(self._names.channel, what.message(generation, self._origin)))
        return Cleared(removed, memory, notified)

    @staticmethod
    def _scopes(what: Invalidation) -> frozenset[str]:
        return what.items if what.kind == "scopes" else frozenset()

    @staticmethod
    def _keys(what: Invalidation) -> frozenset[str]:
        return what.items if what.kind == "keys" else frozenset()

    def apply(self, what: Invalidation, source: str) -> int:
        """Remove ``what`` from this pod's L1; how many entries went."""
        memory = self._cache.memory
        removed = 0
        for store in (memory, self._cache.stale):  # an invalidated answer must not come back stale
            if store is None:
                continue
            if what.kind == "all":
                count = store.clear()
            elif what.kind == "scopes":
                count = store.discard_scopes(what.items)
            else:
                count = store.discard(what.items)
            if store is memory:
                removed = count
        m = self._metrics
        m.bound(m.cache_invalidations_total, source).inc()
        m.bound(m.cache_invalidated_entries_total, "memory").inc(removed)
        return removed

    async def run(self) -> None:
        """Follow the channel until cancelled; never raises, so serving never depends on it."""
        if self._client is None or self._cache.memory is None:
            return  # no other replica's invalidation can reach this pod's L1, or there is none
        while True:
            try:
                await self._listen(self._client)
            except REDIS_FAILURES as exc:
                self._problems.report(
                    f"cache invalidation: Redis is unavailable ({type(exc).__name__}: {exc}); "
                    "this pod's memory cache is cleared when the channel is back if it missed any"
                )
            except Exception:  # a bug must not end the listener for good
                log.exception("cache invalidation: unexpected error; reconnecting")
            await asyncio.sleep(backoff_delay(self._failures, *self._backoff, self._rng))
            self._failures += 1

    async def _listen(self, client: Redis) -> None:
        pubsub = client.pubsub()
        try:
            await pubsub.subscribe(self._names.channel)
            while True:
                message = await pubsub.get_message(timeout=HEARTBEAT_SECS)
                kind = None if message is None else message["type"]
                if kind == "subscribe":  # (re)connected: what was published meanwhile is lost
                    await self._resync(client)
                elif kind == "message":
                    self._receive(message["data"])
                elif message is None:
                    await pubsub.ping()  # a silent connection may be dead: find out, and reconnect
        finally:
            with contextlib.suppress(*REDIS_FAILURES):
                await pubsub.aclose()

    async def _resync(self, client: Redis) -> None:
        raw = await client.get(self._names.generation)
        generation = int(raw) if raw is not None else 0
        self._failures = 0
        self._problems.clear("cache invalidation: Redis is reachable again")
        if self._generation is not None and generation != self._generation:
            removed = self.apply(Invalidation("all"), "resync")
            log.warning(
                "cache invalidation: invalidations were published while this pod was disconnected; "
                "memory cache cleared",
                extra={"fields": {"removed": removed, "generation": generation}},
            )
        self._generation = generation

    def _receive(self, raw: bytes) -> None:
        try:
            generation, origin, what = Invalidation.from_message(raw)
        except ValueError:
            log.warning("cache invalidation: ignoring a malformed message")
            return
        self._generation = generation
        if origin != self._origin:  # this pod's own L1 was cleared when it sent the message
            self.apply(what, "remote")
