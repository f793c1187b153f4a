"""L2: the Redis cache shared by every replica, and the safe way to talk to Redis.

Redis is an optimization here, never a dependency: when it is down or slow the
runtime must keep answering from L1 and the LM. Hence three rules for every call:

* short socket timeouts (``timeout_seconds``, 0.3 s by default), so a dead or
  black-holed Redis costs a request at most that long;
* after a failure, skip Redis for ``backoff_seconds`` (``FailureWindow``) so
  requests during an outage don't each wait for a timeout; the first call after
  the window probes again, which is how the cache comes back by itself;
* never raise to the caller: a failure is a miss (``get``), a no-op (``set``) or
  ``False`` (``ping``), and ``healthy`` turns False.

redis-py's own retry defaults (10 retries with exponential back-off in redis-py 8)
would stall a request for seconds, so the client retries once, immediately, and
only on connection errors: that one retry replaces a pooled connection that a
Redis restart left dead, which is what makes reconnection transparent.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterable, Sequence
from typing import cast

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from ..clock import Clock
from .keys import glob_escape

REDIS_FAILURES: tuple[type[BaseException], ...] = (RedisError, OSError)
"""What a Redis call may raise when the server is gone (timeouts are OSErrors too)."""
MGET_BATCH = 500
SCAN_COUNT = 500


def redis_client(url: str, *, timeout_seconds: float = 0.3, health_check_interval: int = 30) -> Redis:
    """A client for ``url`` that fails fast and reconnects by itself (see module docstring)."""
    return Redis.from_url(
        url,
        socket_timeout=timeout_seconds,
        socket_connect_timeout=timeout_seconds,
        retry=Retry(NoBackoff(), retries=1, supported_errors=(RedisConnectionError,)),
        health_check_interval=health_check_interval,
        decode_responses=False,
    )


class FailureWindow:
    """Remembers the last Redis failure so callers skip Redis briefly instead of timing out again."""

    def __init__(self, backoff_seconds: float = 1.0, clock: Clock = time.monotonic) -> None:
        self._backoff = backoff_seconds
        self._clock = clock
        self._retry_at = 0.0
        self.healthy = True

    def may_try(self) -> bool:
        """True when a call may go to Redis: while healthy, or as the one probe after the back-off.

        The probe re-arms the window, so when it elapses under load one request
        tests Redis while the others keep skipping it (a black-holed Redis would
        otherwise cost every one of them a timeout).
        """
        if self.healthy:
            return True
        now = self._clock()
        if now < self._retry_at:
            return False
        self._retry_at = now + self._backoff
        return True

    def failed(self) -> None:
        self.healthy = False
        self._retry_at = self._clock() + self._backoff

    def succeeded(self) -> None:
        self.healthy = True


class RedisCache:
    """Cache entries in Redis under ``key_prefix`` with a TTL plus random jitter.

    The jitter (uniform in ``[0, jitter_seconds]``) spreads the expiry of entries
    written together, so they are not all recomputed in the same second.
    """

    def __init__(
        self,
        client: Redis,
        *,
        ttl_seconds: int,
        jitter_seconds: int = 0,
        key_prefix: str = "dspy:cache:",
        backoff_seconds: float = 1.0,
        clock: Clock = time.monotonic,
        randint: Callable[[int, int], int] = random.randint,
    ) -> None:
        if ttl_seconds < 1 or jitter_seconds < 0:
            raise ValueError("Redis cache needs ttl_seconds >= 1 and jitter_seconds >= 0")
        self.client = client
        self._ttl = ttl_seconds
        self._jitter = jitter_seconds
        self._prefix = key_prefix
        self._randint = randint
        self._window = FailureWindow(backoff_seconds, clock)

    @classmethod
    def from_url(
        cls,
        url: str,
        ttl_seconds: int,
        jitter_seconds: int = 0,
        *,
        timeout_seconds: float = 0.3,
        key_prefix: str = "dspy:cache:",
        backoff_seconds: float = 1.0,
    ) -> RedisCache:
        return cls(
            redis_client(url, timeout_seconds=timeout_seconds),
            ttl_seconds=ttl_seconds,
            jitter_seconds=jitter_seconds,
            key_prefix=key_prefix,
            backoff_seconds=backoff_seconds,
        )

    @property
    def healthy(self) -> bool:
        """False from a failed call until the next successful one."""
        return self._window.healthy

    async def get(self, key: str) -> bytes | None:
        """The stored value, or None on a miss and whenever Redis is unavailable."""
        if not self._window.may_try():
            return None
        try:
            # bytes, never str: the client is built with decode_responses=False.
            value = cast("bytes | None", await self.client.get(self._prefix + key))
        except REDIS_FAILURES:
            self._window.failed()
            return None
        self._window.succeeded()
        return value

    async def set(self, key: str, value: bytes) -> None:
        if not self._window.may_try():
            return
        ttl = self._ttl + (self._randint(0, self._jitter) if self._jitter else 0)
        try:
            await self.client.set(self._prefix + key, value, ex=ttl)
        except REDIS_FAILURES:
            self._window.failed()
            return
        self._window.succeeded()

    async def get_many(self, keys: Sequence[str]) -> dict[str, bytes]:
        """The stored values of ``keys`` (one MGET per ``MGET_BATCH``); missing keys are absent,
        and an unavailable Redis yields what was read before it failed."""
        found: dict[str, bytes] = {}
        for start in range(0, len(keys), MGET_BATCH):
            if not self._window.may_try():
                break
            batch = keys[start:start + MGET_BATCH]
            try:
                values = await self.client.mget([self._prefix + key for key in batch])
            except REDIS_FAILURES:
                self._window.failed()
                break
            self._window.succeeded()
            found.update((key, value) for key, value in zip(batch, values, strict=True) if value is not None)
        return found

    async def delete(self, keys: Iterable[str]) -> int:
        """Delete ``keys``; how many existed. Raises Redis errors: the caller must know."""
        names = [self._prefix + key for key in keys]
        return int(await self.client.unlink(*names)) if names else 0

    async def delete_matching(self, key_pattern: str = "*") -> int:
        """Delete the entries whose key matches the glob ``key_pattern`` (``<scope>:*``; ``*``: all);
        how many. SCAN, never KEYS (which blocks Redis for the whole keyspace), UNLINKed in
        batches (freed in the background). Raises Redis errors: the caller must know."""
        removed = 0
        batch: list[bytes] = []
        async for name in self.client.scan_iter(match=glob_escape(self._prefix) + key_pattern, count=SCAN_COUNT):
            batch.append(name)
            if len(batch) >= SCAN_COUNT:
                removed += int(await self.client.unlink(*batch))
                batch.clear()
        if batch:
            removed += int(await self.client.unlink(*batch))
        return removed

    async def ping(self) -> bool:
        """Whether Redis answers now; during the back-off window, False without a network call."""
        if not self._window.may_try():
            return False
        try:
            await self.client.ping()
        except REDIS_FAILURES:
            self._window.failed()
            return False
        self._window.succeeded()
        return True

    async def close(self) -> None:
        await self.client.aclose()
