"""Windowed figures: what this pod served, per revision and variant, in 5 s buckets in Redis.

The operator judges a canary on these (``operator/dspy_operator/rollout/analysis.py``):
every pod adds its counts to one hash per bucket, ``P win:<start>`` (``P`` is the
resource's key prefix, ``start = floor(unix_time / 5) * 5`` of the moment the request
ended), fields ``<revision>|<variant>|<figure>``:

    requests              predictions (successes and failures)
    errors                failures with an HTTP status >= 500: the error rate the analysis judges
    class:<error_type>    every failure by its error type, 4xx included
    lat:<i>               requests (failures too) with LATENCY_BUCKETS[i-1] < latency <= LATENCY_BUCKETS[i];
                          lat:<len(LATENCY_BUCKETS)> above the last bound (counts, not cumulative)
    latency_sum           seconds (float)
    cache_hits            answered from the cache or by joining an in-flight computation
    tokens_in, tokens_out, cost_usd

Shadow copies (``shadow.py``) are counted under the shadow target's ``<revision>|<variant>|``
with figures of their own, all prefixed ``shadow_``, so they never pass for live traffic
(a canary receiving shadow copies is not judged on them). The figures of the shadow calls
mirror the live ones, so the operator reads them with the same parser once the prefix is
taken off:

    shadow_requests, shadow_errors, shadow_class:<error_type>, shadow_lat:<i>,
    shadow_latency_sum, shadow_cache_hits, shadow_tokens_in, shadow_tokens_out, shadow_cost_usd
                          the shadow calls, as the live figures above, except that
                          shadow_errors counts every failure (a failed shadow call is an error)
    shadow_live_lat:<i>, shadow_live_latency_sum
                          the latency of the live requests those calls were copies of (the
                          same buckets): what the shadow's latency is compared with
    shadow_compared       shadow calls that answered, compared with the live answer
    shadow_agree          of those, the ones whose every output field equals the live one
    shadow_dropped:<reason>
                          copies not made: busy (no free slot), cap (shadow cap reached),
                          budget (the live budget has too little left)

A cell with only shadow figures carries only those (no zero ``requests``): a shadow target
that serves no live traffic does not appear in the live figures at all.

Two halves. ``Windows.record`` runs once per prediction on the request path: no I/O,
one dict look-up and a few integer additions (about a microsecond). ``WindowFlusher``
runs every ``WINDOW_FLUSH_SECS``: it takes what was recorded and adds it to Redis in one
MULTI (HINCRBY / HINCRBYFLOAT, EXPIRE 3600 per key; all keys of a resource share a
Cluster hash tag, so one transaction is allowed). A MULTI rather than a plain pipeline:
a flush is applied whole or not at all, so a retry after a failure counts nothing
twice (except when the connection drops after EXEC was sent and before its answer).
While Redis is down the counts stay pending, at most ``MAX_PENDING_BUCKETS`` buckets
(an hour: the keys' lifetime); older ones are dropped with a log line.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from redis.asyncio import Redis

from .cache.redis import REDIS_FAILURES
from .logs import ProblemLog
from .metrics import LATENCY_BUCKETS

log = logging.getLogger(__name__)

WINDOW_BUCKET_SECS = 5
WINDOW_KEY_TTL_SECS = 3600
MAX_PENDING_BUCKETS = 720
"""An hour of 5 s buckets: older ones would have expired in Redis anyway."""

def bucket_start(unix_time: float) -> int:
    """The start of the bucket holding ``unix_time``: ``floor(t / 5) * 5``."""
    return int(unix_time // WINDOW_BUCKET_SECS) * WINDOW_BUCKET_SECS


@dataclass(slots=True)
class Cell:
    """The figures of one revision and variant in one bucket."""

    requests: int = 0
    errors: int = 0
    classes: dict[str, int] = field(default_factory=dict)
    latency: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS) + 1))
    latency_sum: float = 0.0
    cache_hits: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    cost_usd: float = 0.0
    shadow: ShadowCell | None = None
    """The shadow copies this revision and variant received (None: none)."""

    def add(self, other: Cell) -> None:
        """Add ``other``'s counts (a failed flush's, back into what is pending)."""
        if other.shadow is not None:
            if self.shadow is None:
                self.shadow = ShadowCell()
            self.shadow.add(other.shadow)
        self.requests += other.requests
        self.errors += other.errors
        for error_type, count in other.classes.items():
            self.classes[error_type] = self.classes.get(error_type, 0) + count
        self.latency = [a + b for a, b in zip(self.latency, other.latency, strict=True)]
        self.latency_sum += other.latency_sum
        self.cache_hits += other.cache_hits
        self.tokens_in += other.tokens_in
        self.tokens_out += other.tokens_out
        self.cost_usd += other.cost_usd

    def fields(self) -> tuple[dict[str, int], dict[str, float]]:
        """The hash fields (without the ``<revision>|<variant>|`` part): integer counts for
        HINCRBY, amounts for HINCRBYFLOAT. The headline figures are always there (0 included),
        so every cell reads the same, unless the cell holds shadow figures only; empty latency
        buckets and error classes are left out."""
        if self.shadow is None:
            return self._live_fields()
        shadow_counts, shadow_amounts = self.shadow.fields()
        if not self.requests:
            return shadow_counts, shadow_amounts
        counts, amounts = self._live_fields()
        return {**counts, **shadow_counts}, {**amounts, **shadow_amounts}

    def _live_fields(self) -> tuple[dict[str, int], dict[str, float]]:
        counts = {
            "requests": self.requests,
            "errors": self.errors,
            "cache_hits": self.cache_hits,
            "tokens_in": self.tokens_in,
            "tokens_out": self.tokens_out,
        }
        counts.update((f"lat:{i}", n) for i, n in enumerate(self.latency) if n)
        counts.update((f"class:{error_type}", n) for error_type, n in self.classes.items())
        return counts, {"latency_sum": self.latency_sum, "cost_usd": self.cost_usd}


@dataclass(slots=True)
class ShadowCell:
    """The shadow figures of one target in one bucket (see the module docstring)."""

    calls: Cell = field(default_factory=lambda: Cell())
    """The shadow calls, counted like live predictions (``errors``: every failure)."""
    live_latency: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS) + 1))
    live_latency_sum: float = 0.0
    compared: int = 0
    agree: int = 0
    dropped: dict[str, int] = field(default_factory=dict)

    def add(self, other: ShadowCell) -> None:
        self.calls.add(other.calls)
        self.live_latency = [a + b for a, b in zip(self.live_latency, other.live_latency, strict=True)]
        self.live_latency_sum += other.live_latency_sum
        self.compared += other.compared
        self.agree += other.agree
        for reason, count in other.dropped.items():
            self.dropped[reason] = self.dropped.get(reason, 0) + count

    def fields(self) -> tuple[dict[str, int], dict[str, float]]:
        counts: dict[str, int] = {}
        amounts: dict[str, float] = {}
        if self.calls.requests:
            calls, call_amounts = self.calls.fields()
            counts = {f"shadow_{figure}": n for figure, n in calls.items()}
            amounts = {f"shadow_{figure}": amount for figure, amount in call_amounts.items()}
            counts.update(shadow_compared=self.compared, shadow_agree=self.agree)
            counts.update((f"shadow_live_lat:{i}", n) for i, n in enumerate(self.live_latency) if n)
            amounts["shadow_live_latency_sum"] = self.live_latency_sum
        counts.update((f"shadow_dropped:{reason}", n) for reason, n in self.dropped.items())
        return counts, amounts


Cells = dict[tuple[str, str], Cell]
"""(revision, variant) -> figures, of one bucket."""


def _count(cell: Cell, latency_s: float, error_type: str | None, is_error: bool, cached: bool,
           tokens_in: int, tokens_out: int, cost_usd: float) -> None:
    """One call into ``cell``; ``is_error``: it counts in ``errors`` too (live: a 5xx)."""
    cell.requests += 1
    cell.latency[bisect.bisect_left(LATENCY_BUCKETS, latency_s)] += 1
    cell.latency_sum += latency_s
    if cached:
        cell.cache_hits += 1
    if error_type is not None:
        cell.classes[error_type] = cell.classes.get(error_type, 0) + 1
        if is_error:
            cell.errors += 1
    cell.tokens_in += tokens_in
    cell.tokens_out += tokens_out
    cell.cost_usd += cost_usd


class Windows:
    """The figures recorded since the last flush, by bucket start. Event-loop only (no lock)."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._buckets: dict[int, Cells] = {}
        # The current bucket, looked up once per 5 s rather than on every request.
        self._start = -1
        self._current: Cells = {}

    def _cell(self, revision: str, variant: str) -> Cell:
        """The cell of ``revision`` and ``variant`` in the bucket of now."""
        start = bucket_start(self._clock())
        if start != self._start:
            self._start = start
            self._current = self._buckets.setdefault(start, {})
        cell = self._current.get((revision, variant))
        if cell is None:
            cell = self._current[(revision, variant)] = Cell()
        return cell

    def _shadow_cell(self, revision: str, variant: str) -> ShadowCell:
        cell = self._cell(revision, variant)
        if cell.shadow is None:
            cell.shadow = ShadowCell()
        return cell.shadow

    def record(
        self,
        revision: str,
        variant: str,
        *,
        latency_s: float,
        error_type: str | None,
        http_status: int,
        cached: bool,
        tokens_in: int,
        tokens_out: int,
        cost_usd: float,
    ) -> None:
        """Count one prediction (success or failure) in the bucket of now."""
        cell = self._cell(revision, variant)
        _count(cell, latency_s, error_type, http_status >= 500, cached, tokens_in, tokens_out, cost_usd)

    def record_shadow(
        self,
        revision: str,
        variant: str,
        *,
        latency_s: float,
        live_latency_s: float,
        agreed: bool | None,
        error_type: str | None,
        cached: bool,
        tokens_in: int,
        tokens_out: int,
        cost_usd: float,
    ) -> None:
        """Count one shadow call of target ``revision``/``variant``: ``agreed`` is None when it
        failed (``error_type`` says how), else whether its answer equals the live one."""
        shadow = self._shadow_cell(revision, variant)
        failed = error_type is not None
        _count(shadow.calls, latency_s, error_type, failed, cached, tokens_in, tokens_out, cost_usd)
        shadow.live_latency[bisect.bisect_left(LATENCY_BUCKETS, live_latency_s)] += 1
        shadow.live_latency_sum += live_latency_s
        if agreed is not None:
            shadow.compared += 1
            shadow.agree += agreed

    def record_shadow_drop(self, revision: str, variant: str, reason: str) -> None:
        """Count one copy for target ``revision``/``variant`` that was not made, and why."""
        dropped = self._shadow_cell(revision, variant).dropped
        dropped[reason] = dropped.get(reason, 0) + 1

    def take(self) -> dict[int, Cells]:
        """Everything recorded so far, by bucket start; recording starts afresh."""
        taken, self._buckets = self._buckets, {}
        self._start, self._current = -1, {}
        return taken

    def give_back(self, taken: dict[int, Cells]) -> int:
        """Put a failed flush's figures back, keeping at most ``MAX_PENDING_BUCKETS`` buckets (the
        newest); returns how many older buckets were dropped."""
        for start, cells in taken.items():
            pending = self._buckets.setdefault(start, {})
            for key, cell in cells.items():
                if key in pending:
                    pending[key].add(cell)
                else:
                    pending[key] = cell
        excess = max(0, len(self._buckets) - MAX_PENDING_BUCKETS)
        for start in sorted(self._buckets)[:excess]:
            del self._buckets[start]
        self._start, self._current = -1, {}  # looked up afresh: the current bucket may have been dropped
        return excess


class WindowFlusher:
    """Adds the recorded figures to Redis every ``interval`` seconds (see the module docstring)."""

    def __init__(self, windows: Windows, client: Redis, key_prefix: str, interval: float) -> None:
        self.windows = windows
        self._client = client
        self._prefix = key_prefix
        self._interval = interval
        self._problems = ProblemLog(log)
        self._dropping = ProblemLog(log)

    async def flush(self) -> bool:
        """One flush; False when Redis refused it (the figures stay pending)."""
        taken = self.windows.take()
        if not taken:
            return True
        try:
            async with self._client.pipeline(transaction=True) as pipe:
                for start, cells in taken.items():
                    key = f"{self._prefix}win:{start}"
                    for (revision, variant), cell in cells.items():
                        counts, amounts = cell.fields()
                        for figure, count in counts.items():
                            pipe.hincrby(key, f"{revision}|{variant}|{figure}", count)
                        for figure, amount in amounts.items():
                            pipe.hincrbyfloat(key, f"{revision}|{variant}|{figure}", amount)
                    pipe.expire(key, WINDOW_KEY_TTL_SECS)
                await pipe.execute()
        except asyncio.CancelledError:  # shutting down: the last flush takes them
            self.windows.give_back(taken)
            raise
        except REDIS_FAILURES as exc:
            self._problems.report(
                f"window figures: Redis is unavailable ({type(exc).__name__}: {exc}); keeping them until it is back"
            )
            if self.windows.give_back(taken):
                self._dropping.report(
                    f"window figures: Redis has been unavailable for {MAX_PENDING_BUCKETS} buckets; "
                    "dropping the oldest ones as new ones arrive"
                )
            return False
        self._problems.clear("window figures: Redis is reachable again; the pending ones are flushed")
        self._dropping.clear()
        return True

    async def run(self) -> None:
        """Flush every ``interval`` until cancelled."""
        while True:
            await asyncio.sleep(self._interval)
            await self.flush()
