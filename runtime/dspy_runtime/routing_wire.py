"""The fast wire of the routing table (Redis -> pod) and this pod's served-table report (pod -> Redis).

The operator stores the table in the string key ``ROUTING_REDIS_KEY`` (``P routing``)
and PUBLISHes its serial on the channel of the same name. ``RoutingWire`` listens on
that channel and, on every message, GETs the key and offers the bytes to the
``Router`` (the same parse, build, serial rule and swap as the file's). A message only
says "look now": the key is the truth. Pub/sub drops what is published while a
connection is down, so the key is also read at startup (before the pod is ready),
after every (re)connection (each ``subscribe`` confirmation, redis-py's own
reconnections included) and every ``ROUTING_RELOAD_SECS * 5`` as a safety net.

Redis being down never breaks serving: the served table stays, the problem is logged
once, and the wire reconnects with jittered exponential back-off. The file poll
(``ROUTING_PATH``) keeps running beside it.

``ServedTableReport`` keeps ``HSET P pods <pod> "<serial> <unix time>[ <level> <cause>]"``
fresh every 5 s (the hash expires 60 s after the last report of any pod): the operator reads it
to know that every pod serves a table before it prunes a revision, and, with graceful
degradation on, at which level each pod answers (the name, then why it is there) so the
resource's status shows it. One field carries both so that the report stays one HSET and one
fact per pod: a level read without the serial would be a second key to keep fresh.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable

from redis.asyncio import Redis

from .cache.redis import REDIS_FAILURES
from .logs import ProblemLog
from .resilience.degradation import Level
from .resilience.retry import backoff_delay
from .routing import REDIS, Router

log = logging.getLogger(__name__)

RESYNC_FACTOR = 5
"""The safety-net GET runs every ``ROUTING_RELOAD_SECS * RESYNC_FACTOR`` seconds."""
REPORT_INTERVAL_SECS = 5.0
REPORT_TTL_SECS = 60


class RoutingWire:
    """Follows the table in Redis; see the module docstring."""

    def __init__(
        self,
        router: Router,
        client: Redis,
        key: str,
        *,
        resync_secs: float,
        backoff: tuple[float, float] = (0.2, 5.0),
        rng: Callable[[], float] = random.random,
    ) -> None:
        self._router = router
        self._client = client
        self._key = key
        self._resync = resync_secs
        self._backoff = backoff
        self._rng = rng
        self._failures = 0
        self._problems = ProblemLog(log)

    async def sync(self) -> bool:
        """GET the table and offer it to the router; True when it was adopted. Raises Redis errors."""
        raw = await self._client.get(self._key)
        if raw is None:  # nothing pushed yet (a new resource, or a Redis that lost its data)
            return False
        return self._router.offer(raw, REDIS)

    async def startup_sync(self) -> None:
        """``sync`` before the pod is ready; with Redis down the pod starts on the file's table."""
        try:
            await self.sync()
        except REDIS_FAILURES as exc:
            self._unavailable(exc)

    async def run(self) -> None:
        """Listen until cancelled; never raises, so serving never depends on it."""
        while True:
            try:
                await self._listen()
            except REDIS_FAILURES as exc:
                self._unavailable(exc)
            except Exception:  # a bug must not end the wire for good
                log.exception("routing wire: unexpected error; reconnecting")
            await asyncio.sleep(backoff_delay(self._failures, *self._backoff, self._rng))
            self._failures += 1

    async def _listen(self) -> None:
        loop = asyncio.get_running_loop()
        pubsub = self._client.pubsub()
        try:
            await pubsub.subscribe(self._key)
            resync_at = loop.time() + self._resync
            while True:
                message = await pubsub.get_message(timeout=max(0.0, resync_at - loop.time()))
                kind = None if message is None else message["type"]
                if kind == "subscribe":  # (re)connected: what was published meanwhile is lost
                    self._failures = 0
                    self._problems.clear("routing wire: Redis is reachable again")
                elif kind != "message" and loop.time() < resync_at:
                    continue
                await self.sync()
                resync_at = loop.time() + self._resync
        finally:
            with contextlib.suppress(*REDIS_FAILURES):
                await pubsub.aclose()

    def _unavailable(self, exc: BaseException) -> None:
        self._problems.report(
            f"routing wire: Redis is unavailable ({type(exc).__name__}: {exc}); "
            "serving the current table, the file's updates still apply"
        )


class ServedTableReport:
    """Reports the serial this pod serves; see the module docstring."""

    def __init__(
        self,
        router: Router,
        client: Redis,
        key_prefix: str,
        pod: str,
        *,
        interval: float = REPORT_INTERVAL_SECS,
        clock: Callable[[], float] = time.time,
        level: Callable[[], Level] | None = None,
    ) -> None:
        """``level``: this pod's degradation level now (None: degradation is off, nothing reported)."""
        self._router = router
        self._client = client
        self._key = f"{key_prefix}pods"
        self._pod = pod
        self._interval = interval
        self._clock = clock
        self._level = level
        self._problems = ProblemLog(log)

    def value(self) -> str:
        """The report's text: serial and time, then the degradation level's name and cause."""
        value = f"{self._router.state.serial} {int(self._clock())}"
        if self._level is None:
            return value
        level = self._level()
        return f"{value} {level.name} {level.cause}"

    async def report(self) -> bool:
        """One report; False when Redis refused it."""
        value = self.value()
        try:
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.hset(self._key, self._pod, value)
                pipe.expire(self._key, REPORT_TTL_SECS)
                await pipe.execute()
        except REDIS_FAILURES as exc:
            self._problems.report(f"served-table report: Redis is unavailable ({type(exc).__name__}: {exc})")
            return False
        self._problems.clear("served-table report: Redis is reachable again")
        return True

    async def run(self) -> None:
        """Report now and every ``interval`` until cancelled."""
        while True:
            await self.report()
            await asyncio.sleep(self._interval)
