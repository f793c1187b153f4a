"""Request rate limiting: a token bucket per key (client, header value, or one global key).

A bucket holds up to ``burst`` tokens and refills at ``rate`` per second; a request
takes one token or is refused with the exact wait until the next token, which the
API returns as ``Retry-After``.

Per-key buckets alone limit nothing against a client that sends a new key on every
request (measured: 200 of 200 admitted): each new key starts with a full bucket. So when
requests are keyed, one overall bucket (``total_rate``, ``total_burst``) stands behind
the keys, and a request takes a token from both or from neither. A key refused by the
overall bucket is not remembered, so a flood of invented keys cannot churn the map of
real ones either.

Hand-written rather than the ``limits`` library: ``limits`` offers fixed and
moving windows, not a token bucket; its in-memory storage reads wall time and
expires keys from a background timer thread, so a fake clock cannot drive it; and
"when will the next request pass" costs extra storage calls there, while here it is
one division. The state per key is two floats. The fleet-wide variant of the same
buckets is ``GlobalRateLimiter`` (``global_ratelimit.py``).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Protocol

from ..clock import Clock

OFF, POD = "off", "pod"
"""``mode`` of a limiter (``/health``'s ``rate_limit``): no limit, or buckets in this pod."""


class Limiter(Protocol):
    """What the prediction path asks of a rate limiter, per pod or for the fleet."""

    @property
    def mode(self) -> str:
        """``off``, ``pod``, ``global``, or ``fallback`` (global, enforced per pod while Redis is down)."""
        ...

    async def check(self, key: str = "") -> float:
        """0.0 when the request may pass (its tokens are taken); otherwise seconds until it would."""
        ...


def _refilled(state: tuple[float, float] | None, rate: float, burst: float, now: float) -> float:
    """The tokens of a bucket last at ``state`` (tokens, time); a bucket never seen is full."""
    return burst if state is None else min(burst, state[0] + (now - state[1]) * rate)


class RateLimiter:
    """Token buckets keyed by string, at most ``max_keys`` of them (least recently used go first),
    behind an overall bucket when ``total_rate`` is set.

    Evicting a key forgets its debt, which at worst lets that key burst again (within the
    overall bucket); the bound keeps a flood of distinct client ids from growing memory.
    """

    def __init__(
        self,
        rate: float,
        burst: int,
        clock: Clock = time.monotonic,
        max_keys: int = 10_000,
        *,
        total_rate: float = 0.0,
        total_burst: int = 1,
    ) -> None:
        self.enabled = rate > 0
        self._rate = rate
        # A bucket smaller than one token would refuse everything.
        self._burst = float(max(1, burst))
        self._total_rate = total_rate
        self._total_burst = float(max(1, total_burst))
        self._clock = clock
        self._max_keys = max(1, max_keys)
        # key -> (tokens, time of the last refill)
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._total: tuple[float, float] | None = None

    @property
    def mode(self) -> str:
        return POD if self.enabled else OFF

    async def check(self, key: str = "") -> float:
        return self.acquire(key)

    def acquire(self, key: str = "") -> float:
        """0.0 when the request may pass (a token is taken); otherwise seconds until one would."""
        if not self.enabled:
            return 0.0
        now = self._clock()
        bucket = self._buckets.get(key)
        tokens = _refilled(bucket, self._rate, self._burst, now)
        wait = 0.0 if tokens >= 1.0 else (1.0 - tokens) / self._rate
        total = 0.0
        if self._total_rate > 0:
            total = _refilled(self._total, self._total_rate, self._total_burst, now)
            if total < 1.0:
                wait = max(wait, (1.0 - total) / self._total_rate)
        if bucket is not None:
            self._buckets.move_to_end(key)
        if wait > 0:
            return wait  # nothing taken; a new key is not remembered
        if bucket is None and len(self._buckets) >= self._max_keys:
            self._buckets.popitem(last=False)
        self._buckets[key] = (tokens - 1.0, now)
        if self._total_rate > 0:
            self._total = (total - 1.0, now)
        return 0.0
