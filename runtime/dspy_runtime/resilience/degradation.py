"""Graceful degradation: step down through cheaper ways of answering while the LM path is unwell.

Levels (seed 001's), each keeping what the ones before it do:

0. ``normal``;
1. ``cheaper_model``: the next cheaper model of the fallback chain is tried first;
2. ``shorter_answers``: ``max_tokens`` times ``DEGRADATION_MAX_TOKENS_FACTOR``;
3. ``cache_only``: no LM call; a miss is served from an expired entry when one is kept
   (``CACHE_STALE_SECS``), else refused with 503.

The signals are this pod's computed predictions (those that reached the LM path) over the last
``DEGRADATION_WINDOW_SECS``: their error rate and p95 latency, and the daily budget's share left.
``decide`` is the pure rule: a level holds for ``DEGRADATION_MIN_HOLD_SECS``; after that, any
signal past its threshold steps one level down, and healthy signals step one level back up. The
window restarts at every change, so each level is judged by the outcomes it produced (otherwise
the errors that caused one step would cause the next one too). At ``cache_only`` nothing is
computed, so the window stays empty and the level recovers after its hold: one level up is the
probe that tells whether the LM has healed.

The figures are counters in a ring of one-second buckets (a few list appends per computed
prediction, nothing on a cache hit), read when the level is asked for: on a cache miss, by
``/health`` and at scrape time.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from ..clock import Clock

log = logging.getLogger(__name__)

NORMAL, CHEAPER_MODEL, SHORTER_ANSWERS, CACHE_ONLY = 0, 1, 2, 3
LEVEL_NAMES: tuple[str, ...] = ("normal", "cheaper_model", "shorter_answers", "cache_only")
MIN_SAMPLES = 5
"""Computed predictions a window needs before its error rate and p95 are judged: one failure
out of two is noise, not an outage."""
EVALUATE_EVERY_SECS = 0.25
"""The window is read at most this often: under load every miss asks for the level, and reading
it sorts up to a window's latencies."""
MAX_LATENCIES_PER_SECOND = 1000
"""Latencies kept per one-second bucket for the p95; more in one second are counted but not timed."""


@dataclass(frozen=True, slots=True)
class Thresholds:
    error_rate: float
    p95_secs: float
    budget_left_fraction: float
    """Degrade when less than this share of the daily budget is left; 0: the budget is not a signal."""
    min_hold_secs: float
    min_samples: int = MIN_SAMPLES


@dataclass(frozen=True, slots=True)
class Signals:
    samples: int
    error_rate: float
    p95_secs: float
    budget_left_fraction: float | None
    """None without a daily budget."""


@dataclass(frozen=True, slots=True)
class Cause:
    """Why a level changed: the signal, what was measured and the threshold it was held against."""

    signal: str
    value: float | None = None
    threshold: float | None = None

    def __str__(self) -> str:
        if self.value is None:
            return self.signal
        return f"{self.signal} {self.value:.4g} (threshold {self.threshold:.4g})"


STARTED = Cause("started")
HEALTHY = Cause("healthy")


@dataclass(frozen=True, slots=True)
class Level:
    level: int
    since: float
    cause: Cause

    @property
    def name(self) -> str:
        return LEVEL_NAMES[self.level]


def breach(signals: Signals, thresholds: Thresholds) -> Cause | None:
    """The first signal past its threshold, or None when all are healthy."""
    if signals.samples >= thresholds.min_samples:
        if signals.error_rate >= thresholds.error_rate:
            return Cause("error_rate", signals.error_rate, thresholds.error_rate)
        if signals.p95_secs >= thresholds.p95_secs:
            return Cause("p95_secs", signals.p95_secs, thresholds.p95_secs)
    left = signals.budget_left_fraction
    if left is not None and left < thresholds.budget_left_fraction:
        return Cause("budget_left_fraction", left, thresholds.budget_left_fraction)
    return None


def decide(signals: Signals, current: Level, now: float, thresholds: Thresholds) -> Level:
    """The level after ``current`` given ``signals`` at ``now`` (see the module docstring)."""
    if now - current.since < thresholds.min_hold_secs:
        return current
    cause = breach(signals, thresholds)
    if cause is not None:
        return Level(current.level + 1, now, cause) if current.level < CACHE_ONLY else current
    if current.level > NORMAL:
        return Level(current.level - 1, now, HEALTHY)
    return current


@dataclass(slots=True)
class _Second:
    stamp: int = -1
    count: int = 0
    errors: int = 0
    latencies: list[float] | None = None


class Degradation:
    """This pod's level, moved by ``decide`` over a sliding window of computed predictions.

    ``budget_left`` returns the daily budget's share left (None without a budget), read without I/O.
    """

    def __init__(
        self,
        thresholds: Thresholds,
        *,
        window_secs: int,
        max_tokens_factor: float,
        budget_left: Callable[[], float | None] = lambda: None,
        clock: Clock = time.monotonic,
    ) -> None:
        self.thresholds = thresholds
        self.max_tokens_factor = max_tokens_factor
        self._budget_left = budget_left
        self._clock = clock
        self._ring = [_Second() for _ in range(window_secs)]
        self.current = Level(NORMAL, clock(), STARTED)
        self._evaluated = -math.inf

    def record(self, latency_s: float, *, error: bool) -> None:
        """One computed prediction (its LM path's outcome and latency)."""
        second = int(self._clock())
        bucket = self._ring[second % len(self._ring)]
        if bucket.stamp != second:
            bucket.stamp, bucket.count, bucket.errors, bucket.latencies = second, 0, 0, []
        bucket.count += 1
        bucket.errors += error
        assert bucket.latencies is not None
        if len(bucket.latencies) < MAX_LATENCIES_PER_SECOND:
            bucket.latencies.append(latency_s)

    def signals(self) -> Signals:
        """The window's figures now (buckets older than the window are skipped)."""
        oldest = int(self._clock()) - len(self._ring) + 1
        count = errors = 0
        latencies: list[float] = []
        for bucket in self._ring:
            if bucket.stamp >= oldest and bucket.latencies is not None:
                count += bucket.count
                errors += bucket.errors
                latencies += bucket.latencies
        return Signals(count, errors / count if count else 0.0, _p95(latencies), self._budget_left())

    def level(self) -> Level:
        """The level now, after applying ``decide``; a change is logged once and restarts the window."""
        now = self._clock()
        if now - self.current.since < self.thresholds.min_hold_secs or now - self._evaluated < EVALUATE_EVERY_SECS:
            return self.current  # held, or read a moment ago: the window is not read
        self._evaluated = now
        new = decide(self.signals(), self.current, now, self.thresholds)
        if new is not self.current:
            old, self.current = self.current, new
            for bucket in self._ring:
                bucket.stamp = -1
            cause = new.cause
            log.warning(
                "degradation level %s -> %s: %s", old.name, new.name, cause,
                extra={"fields": {"degradation_from": old.level, "degradation_to": new.level,
                                  "cause": cause.signal, "value": cause.value, "threshold": cause.threshold}},
            )  # fmt: skip
        return self.current

    def max_tokens(self, max_tokens: int) -> int:
        """``max_tokens`` at ``shorter_answers``: scaled by the factor, at least 1."""
        return max(1, math.floor(max_tokens * self.max_tokens_factor))

    def public(self) -> dict[str, object]:
        """``/health``'s ``components.degradation``; ``since`` in seconds ago."""
        level = self.level()
        return {
            "level": level.level,
            "name": level.name,
            "cause": str(level.cause),
            "since_secs": round(self._clock() - level.since, 3),
        }


def _p95(latencies: list[float]) -> float:
    if not latencies:
        return 0.0
    latencies.sort()
    return latencies[min(len(latencies) - 1, math.ceil(0.95 * len(latencies)) - 1)]

