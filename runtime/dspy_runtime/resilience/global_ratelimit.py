"""``RATE_LIMIT_SCOPE=global``: the rate limit's token buckets kept in Redis, one per key for the fleet.

Per pod, a limit multiplies with the replica count, and the HPA changes that count. In
this scope the buckets (the key's and the overall one behind it, as in ``ratelimit.py``)
live in Redis and one Lua script refills them by Redis' own clock, checks them and takes a
token from each, atomically: every replica draws from the same buckets, so the limit is
the fleet's, whatever the number of pods. The cost is one Redis round trip per request.

A bucket's key expires once it would have refilled completely (``burst / rate`` seconds
after its last token was taken): a full bucket and no bucket are the same, so idle keys
leave nothing behind, and an evicted bucket only forgets a debt. A client key is hashed
(xxh3) into the Redis key, so header values of any length and content make fixed-size keys.

With Redis down (a failed call, then ``FailureWindow``'s back-off), the pod falls back to
its own buckets with the limits divided by ``RUNTIME_REPLICAS``, the most pods the operator
expects to serve at once, so the fleet stays within the limit while the pods are at most
that many. ``mode`` says ``fallback`` meanwhile, and ``/health`` reports it.
"""

from __future__ import annotations

import time

import xxhash
from redis.asyncio import Redis

from ..cache.redis import REDIS_FAILURES, FailureWindow
from ..clock import Clock
from .ratelimit import OFF, RateLimiter

GLOBAL, FALLBACK = "global", "fallback"
"""``mode`` of a global limiter: buckets in Redis, or this pod's share while Redis is down."""

# KEYS: the buckets a request takes a token from (its key's, then the overall one).
# ARGV: rate and burst of each bucket, in the same order.
# Returns the seconds to wait as a string ('0': admitted); a Lua number reply would be truncated.
_TAKE_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local tokens, wait = {}, 0
for i, key in ipairs(KEYS) do
  local rate, burst = tonumber(ARGV[2 * i - 1]), tonumber(ARGV[2 * i])
  local state = redis.call('HMGET', key, 'tokens', 'at')
  local have = burst
  if state[1] then have = math.min(burst, tonumber(state[1]) + math.max(0, now - tonumber(state[2])) * rate) end
  tokens[i] = have
  if have < 1 then wait = math.max(wait, (1 - have) / rate) end
end
if wait > 0 then return tostring(wait) end
for i, key in ipairs(KEYS) do
  local rate, burst = tonumber(ARGV[2 * i - 1]), tonumber(ARGV[2 * i])
  redis.call('HSET', key, 'tokens', string.format('%.6f', tokens[i] - 1), 'at', string.format('%.6f', now))
  redis.call('PEXPIRE', key, math.ceil(burst / rate * 1000) + 1000)
end
return '0'
"""


class GlobalRateLimiter:
    """The fleet's buckets in Redis under ``key_prefix``; ``fallback`` (this pod's share) while Redis is down."""

    def __init__(
        self,
        redis: Redis,
        *,
        rate: float,
        burst: int,
        total_rate: float = 0.0,
        total_burst: int = 1,
        replicas: int = 1,
        key_prefix: str = "dspy:ratelimit:",
        backoff_seconds: float = 1.0,
        clock: Clock = time.monotonic,
    ) -> None:
        self.enabled = rate > 0
        self._script = redis.register_script(_TAKE_SCRIPT)
        self._prefix = key_prefix
        self._own = (repr(rate), str(max(1, burst)))
        self._total = (repr(total_rate), str(max(1, total_burst))) if total_rate > 0 else None
        self._window = FailureWindow(backoff_seconds, clock)
        share = max(1, replicas)
        self.fallback = RateLimiter(
            rate / share, max(1, burst // share), clock,
            total_rate=total_rate / share, total_burst=max(1, total_burst // share),
        )  # fmt: skip

    @property
    def mode(self) -> str:
        if not self.enabled:
            return OFF
        return GLOBAL if self._window.healthy else FALLBACK

    async def check(self, key: str = "") -> float:
        if not self.enabled:
            return 0.0
        if self._window.may_try():
            keys = [f"{self._prefix}key:{xxhash.xxh3_64_hexdigest(key.encode())}"]
            args = list(self._own)
            if self._total is not None:
                keys.append(f"{self._prefix}total")
                args.extend(self._total)
            try:
                wait = await self._script(keys=keys, args=args)
            except REDIS_FAILURES:
                self._window.failed()
            else:
                self._window.succeeded()
                return float(wait)
        return self.fallback.acquire(key)
