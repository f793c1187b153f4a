"""Canary analysis: the runtime pods' windowed figures summed into windows, and a verdict (pure).

Every runtime pod adds what it served to one Redis hash per 5 s bucket (`P win:<start>`, fields
`<revision>|<variant>|<figure>`, see the contract); `runtimebus.RuntimeBus.read_buckets` fetches
them. Everything here is arithmetic on what it returns, with no I/O and no clock, so every
rule is tested with numbers written by hand:

    buckets  --windows_from_buckets-->  {(revision, variant): Window}  --by_revision-->  {revision: Window}
    Thresholds.from_spec(spec.rollout.canary.analysis) + canary Window + stable Window  --judge-->  Verdict

A verdict is Inconclusive rather than Pass or Fail whenever the canary served too few requests:
a quiet hour must neither promote nor abort a revision.
"""

from __future__ import annotations

import bisect
import functools
import itertools
import math
import operator
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal, Protocol

LATENCY_BUCKETS: Final[tuple[float, ...]] = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)  # fmt: skip
"""Upper bounds (seconds) of the runtime's latency buckets; `lat:<i>` counts requests in bucket i,
`lat:<len(LATENCY_BUCKETS)>` those above the last bound. Copied, not imported: the operator never
imports the runtime (a unit test keeps the two equal)."""

BUCKET_SECONDS: Final = 5
"""Width of one window bucket (`WINDOW_BUCKET_SECS` in the runtime)."""
FLUSH_LAG_SECONDS: Final = 2.0
"""A pod flushes every `WINDOW_FLUSH_SECS` (1 s): a bucket may still grow that long after it ends.
Twice that is taken as settled."""

DEFAULT_MIN_REQUESTS: Final = 50
DEFAULT_MAX_ERROR_RATE: Final = 0.05
"""The CRD's defaults, repeated for analysis blocks stored before the schema defaulted them."""

SIGNIFICANT_DIGITS: Final = 6

PASS: Final = "Pass"
FAIL: Final = "Fail"
INCONCLUSIVE: Final = "Inconclusive"
Result = Literal["Pass", "Fail", "Inconclusive"]

WindowKey = tuple[str, str]
"""(revision, variant)."""
Raw = str | bytes
"""A hash field or value as redis-py returns it (bytes unless the client decodes)."""

_NO_LATENCY: Final = (0,) * (len(LATENCY_BUCKETS) + 1)


def round_figure(value: float) -> float:
    """Six significant digits: status shows figures, not float noise, so an idle recomputation
    (sums taken in another order) yields the same status and no patch."""
    return float(f"{value:.{SIGNIFICANT_DIGITS}g}")


def bucket_starts(start: float, end: float) -> range:
    """The starts of the buckets whose whole 5 s span lies in [start, end).

    A bucket only partly inside would be counted from a partial span, so it is left out: the
    window is shorter than asked by less than two buckets, never padded with unrelated traffic.
    Worked example: [3, 99) -> buckets 5, 10, ..., 90 (bucket 95 ends at 100)."""
    first = math.ceil(start / BUCKET_SECONDS) * BUCKET_SECONDS
    stop = math.floor(end / BUCKET_SECONDS) * BUCKET_SECONDS
    return range(first, stop, BUCKET_SECONDS)


def settled_end(now: float) -> int:
    """The latest window end whose buckets every pod has flushed: where an analysis stops reading."""
    return math.floor((now - FLUSH_LAG_SECONDS) / BUCKET_SECONDS) * BUCKET_SECONDS


@dataclass(frozen=True, slots=True)
class Window:
    """What one revision (or one of its variants) served in a span of time, summed over pods.

    `errors` counts only failures with an HTTP status >= 500 (the ones a bad revision causes);
    `errors_by_class` counts every failure by error type, 4xx included, sorted by type so that
    equal windows compare equal. `latency` holds the non-cumulative bucket counts, one per
    bound of LATENCY_BUCKETS plus one above the last bound. Windows add up with `+`."""

    requests: int = 0
    errors: int = 0
    errors_by_class: tuple[tuple[str, int], ...] = ()
    latency: tuple[int, ...] = _NO_LATENCY
    latency_sum: float = 0.0
    cache_hits: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    cost_usd: float = 0.0

    def __add__(self, other: Window) -> Window:
        classes = Counter(dict(self.errors_by_class))
        classes.update(dict(other.errors_by_class))
        return Window(
            requests=self.requests + other.requests,
            errors=self.errors + other.errors,
            errors_by_class=tuple(sorted(classes.items())),
            latency=tuple(map(operator.add, self.latency, other.latency)),
            latency_sum=self.latency_sum + other.latency_sum,
            cache_hits=self.cache_hits + other.cache_hits,
            tokens_in=self.tokens_in + other.tokens_in,
            tokens_out=self.tokens_out + other.tokens_out,
            cost_usd=self.cost_usd + other.cost_usd,
        )

    @property
    def error_rate(self) -> float:
        """Fraction of requests that failed with a 5xx; 0 with no request (`judge` never asks then)."""
        return self.errors / self.requests if self.requests else 0.0

    def quantile(self, q: float) -> float | None:
        """The q-quantile (0 < q <= 1) of latency, as Prometheus' histogram_quantile computes it.

        The rank q * total falls in the first bucket whose cumulative count reaches it; the value
        is interpolated linearly between that bucket's bounds (the first bucket starts at 0). In
        the bucket above the last bound there is nothing to interpolate towards, so the answer is
        the last finite bound: "at least 60 s". None when no latency was recorded.
        Worked example: 90 requests <= 0.1 s and 10 in (0.1, 0.25]: rank 95 is the 5th of 10 in the
        second bucket, so p95 = 0.1 + 0.15 * 5/10 = 0.175 s."""
        cumulative = list(itertools.accumulate(self.latency))
        if not cumulative[-1]:
            return None
        rank = q * cumulative[-1]
        index = bisect.bisect_left(cumulative, rank)
        if index == len(LATENCY_BUCKETS):
            return LATENCY_BUCKETS[-1]
        lower = LATENCY_BUCKETS[index - 1] if index else 0.0
        before = cumulative[index - 1] if index else 0
        return lower + (LATENCY_BUCKETS[index] - lower) * (rank - before) / self.latency[index]

    @property
    def p95_latency_seconds(self) -> float | None:
        return self.quantile(0.95)

    @property
    def computed_requests(self) -> int:
        """Requests the LM actually answered: neither from the cache nor failed (a 4xx rejection
        never reaches the LM, a 5xx did not get an answer)."""
        return self.requests - self.cache_hits - max(self.errors, sum(count for _, count in self.errors_by_class))

    @property
    def cost_per_computed_request(self) -> float | None:
        """Cost divided by the LM-computed requests, not by all requests.

        A new revision starts with a cold cache (cache keys include the program), so per request it
        would look expensive for as long as the stable revision answers from a warm cache, and a
        canary would be judged on its cache's age rather than on its model and prompt. None when
        nothing was computed."""
        computed = self.computed_requests
        return self.cost_usd / computed if computed > 0 else None

    @property
    def cache_hit_ratio(self) -> float | None:
        return self.cache_hits / self.requests if self.requests else None

    def figures(self) -> dict[str, Any]:
        """The window for status (`lastAnalysis.canary` / `.stable`), rounded. A figure with no data
        (no request, nothing computed) is left out rather than null: null deletes in a merge patch."""
        derived = {
            "errorRate": self.error_rate if self.requests else None,
            "p95LatencySeconds": self.p95_latency_seconds,
            "costPerRequestUsd": self.cost_per_computed_request,
            "cacheHitRatio": self.cache_hit_ratio,
        }
        rounded = {name: round_figure(value) for name, value in derived.items() if value is not None}
        return {"requests": self.requests, "errors": self.errors, **rounded}


EMPTY: Final = Window()


def merge(windows: Iterable[Window]) -> Window:
    """The sum of any number of windows (EMPTY for none); order does not matter."""
    return functools.reduce(operator.add, windows, EMPTY)


def windows_from_buckets(buckets: Mapping[int, Mapping[Raw, Raw]], start: float, end: float) -> dict[WindowKey, Window]:
    """Sum the bucket hashes (by bucket start) whose whole span lies in [start, end), per
    (revision, variant), sorted by key.

    Fields that do not parse (a figure a newer runtime added, a value that is not a number) are
    skipped rather than fatal: the operator must keep judging while pods of two runtime versions
    write side by side."""
    wanted = bucket_starts(start, end)
    totals: dict[WindowKey, Window] = {}
    for bucket_start, fields in buckets.items():
        if bucket_start not in wanted:
            continue
        for key, window in _parse_bucket(fields).items():
            totals[key] = totals.get(key, EMPTY) + window
    return dict(sorted(totals.items()))


def by_revision(windows: Mapping[WindowKey, Window]) -> dict[str, Window]:
    """Every revision's variants summed: a canary is judged as a whole revision."""
    totals: dict[str, Window] = {}
    for (revision, _variant), window in windows.items():
        totals[revision] = totals.get(revision, EMPTY) + window
    return dict(sorted(totals.items()))


def _text(raw: Raw) -> str:
    return raw.decode() if isinstance(raw, bytes) else raw


def _parse_bucket(fields: Mapping[Raw, Raw]) -> dict[WindowKey, Window]:
    figures: dict[WindowKey, dict[str, str]] = {}
    for raw_field, raw_value in fields.items():
        parts = _text(raw_field).split("|", 2)
        if len(parts) == 3:
            revision, variant, figure = parts
            figures.setdefault((revision, variant), {})[figure] = _text(raw_value)
    return {key: _window(values) for key, values in figures.items()}


_COUNTS: Final = ("requests", "errors", "cache_hits", "tokens_in", "tokens_out")
_AMOUNTS: Final = ("latency_sum", "cost_usd")


def _window(values: Mapping[str, str]) -> Window:
    """One revision-variant's figures of one bucket, from their text values."""
    scalars: dict[str, Any] = {}
    classes: dict[str, int] = {}
    latency = list(_NO_LATENCY)
    for figure, text in values.items():
        try:
            if figure in _COUNTS:
                scalars[figure] = int(text)
            elif figure in _AMOUNTS:
                scalars[figure] = float(text)
            elif figure.startswith("class:"):
                classes[figure.removeprefix("class:")] = int(text)
            elif figure.startswith("lat:") and 0 <= (index := int(figure.removeprefix("lat:"))) < len(latency):
                latency[index] = int(text)
        except ValueError:
            continue
    return Window(errors_by_class=tuple(sorted(classes.items())), latency=tuple(latency), **scalars)


class Figures(Protocol):
    """What `judge` reads of one revision: a `Window` of the pods' buckets, or the figures a
    Prometheus server answered (`promql.Measured`)."""

    @property
    def requests(self) -> int: ...
    @property
    def errors(self) -> int: ...
    @property
    def error_rate(self) -> float: ...
    @property
    def p95_latency_seconds(self) -> float | None: ...
    @property
    def cost_per_computed_request(self) -> float | None: ...


@dataclass(frozen=True, slots=True)
class Thresholds:
    """The analysis block of spec.rollout.canary, with the CRD's defaults.

    Absolute limits judge the canary alone. Relative limits (`relative`) judge it against the
    stable revision over the same window, which absorbs what both suffer alike (a slow upstream,
    a burst of hard questions): the ratios are canary / stable, None means not judged."""

    min_requests: int = DEFAULT_MIN_REQUESTS
    max_error_rate: float = DEFAULT_MAX_ERROR_RATE
    max_p95_latency_seconds: float | None = None
    max_error_rate_ratio: float | None = None
    max_p95_latency_ratio: float | None = None
    max_cost_per_request_ratio: float | None = None

    @classmethod
    def from_spec(cls, analysis: Mapping[str, Any] | None) -> Thresholds:
        """From spec.rollout.canary.analysis (None or {} when absent)."""
        analysis = analysis or {}
        relative = analysis.get("relative") or {}
        return cls(
            min_requests=int(analysis.get("minRequests", DEFAULT_MIN_REQUESTS)),
            max_error_rate=float(analysis.get("maxErrorRate", DEFAULT_MAX_ERROR_RATE)),
            max_p95_latency_seconds=_optional_float(analysis.get("maxP95LatencySeconds")),
            max_error_rate_ratio=_optional_float(relative.get("maxErrorRateRatio")),
            max_p95_latency_ratio=_optional_float(relative.get("maxP95LatencyRatio")),
            max_cost_per_request_ratio=_optional_float(relative.get("maxCostPerRequestRatio")),
        )

    @property
    def needed_requests(self) -> int:
        """Requests a window needs for a verdict: minRequests, but at least one (minRequests 0 must
        not turn an empty window into a Pass)."""
        return max(self.min_requests, 1)


def _optional_float(value: Any) -> float | None:
    return None if value is None else float(value)


@dataclass(frozen=True, slots=True)
class Measurement:
    """One figure against its limit. `passed` None: skipped (see `detail`), it does not count.
    For a counted relative measurement `detail` shows both sides."""

    name: str
    value: float | None
    threshold: float
    passed: bool | None
    detail: str = ""

    def as_status(self) -> dict[str, Any]:
        """For status.lastAnalysis.measurements; a skipped one carries `skipped: <reason>`, no `passed`."""
        status: dict[str, Any] = {"name": self.name, "threshold": self.threshold}
        if self.value is not None:
            status["value"] = round_figure(self.value)
        if self.passed is None:
            status["skipped"] = self.detail
        else:
            status["passed"] = self.passed
            if self.detail:
                status["detail"] = self.detail
        return status

    def describe(self) -> str:
        """`errorRate 0.12 > 0.05`, with the detail in parentheses when there is one."""
        comparison = "<=" if self.passed else ">"
        text = f"{self.name} {self.value:.4g} {comparison} {self.threshold:.4g}"
        return f"{text} ({self.detail})" if self.detail else text


@dataclass(frozen=True, slots=True)
class Verdict:
    """The outcome of one analysis: Fail exactly when a counted measurement failed; `message` is
    one line for a condition, naming each failing figure with its value and threshold."""

    result: Result
    measurements: tuple[Measurement, ...]
    message: str

    @property
    def failed(self) -> tuple[Measurement, ...]:
        return tuple(measurement for measurement in self.measurements if measurement.passed is False)


def judge(thresholds: Thresholds, canary: Figures, stable: Figures | None) -> Verdict:
    """Judge the canary's figures, against the stable revision's over the same span when given.

    Below `needed_requests` canary requests the verdict is Inconclusive with no measurement.
    Relative measurements also need the stable window to have that many requests; otherwise
    they are skipped with the reason."""
    needed = thresholds.needed_requests
    if canary.requests < needed:
        message = f"the canary served {canary.requests} requests, fewer than the {needed} a verdict needs (minRequests)"
        return Verdict(INCONCLUSIVE, (), message)
    measurements = (*_absolute(thresholds, canary), *_relative(thresholds, canary, stable))
    failed = [measurement for measurement in measurements if measurement.passed is False]
    if failed:
        return Verdict(FAIL, measurements, "; ".join(measurement.describe() for measurement in failed))
    passed = ", ".join(measurement.name for measurement in measurements if measurement.passed)
    skipped = ", ".join(f"{m.name} ({m.detail})" for m in measurements if m.passed is None)
    return Verdict(PASS, measurements, f"passed {passed}" + (f"; skipped {skipped}" if skipped else ""))


def _at_most(name: str, value: float, threshold: float, detail: str = "") -> Measurement:
    return Measurement(name, value, threshold, value <= threshold, detail)


def _absolute(thresholds: Thresholds, canary: Figures) -> list[Measurement]:
    measurements = [_at_most("errorRate", canary.error_rate, thresholds.max_error_rate)]
    if thresholds.max_p95_latency_seconds is not None:
        p95 = canary.p95_latency_seconds
        measurements.append(
            Measurement("p95LatencySeconds", None, thresholds.max_p95_latency_seconds, None, "no latency recorded")
            if p95 is None else _at_most("p95LatencySeconds", p95, thresholds.max_p95_latency_seconds)
        )
    return measurements


def _relative(thresholds: Thresholds, canary: Figures, stable: Figures | None) -> list[Measurement]:
    limits = {
        "errorRateRatio": thresholds.max_error_rate_ratio,
        "p95LatencyRatio": thresholds.max_p95_latency_ratio,
        "costPerRequestRatio": thresholds.max_cost_per_request_ratio,
    }
    wanted = {name: limit for name, limit in limits.items() if limit is not None}
    if stable is None or stable.requests < thresholds.needed_requests:
        served = 0 if stable is None else stable.requests
        reason = f"the stable revision served {served} requests, fewer than {thresholds.needed_requests}"
        return [Measurement(name, None, limit, None, reason) for name, limit in wanted.items()]
    compare = {
        "errorRateRatio": _error_rate_ratio,
        "p95LatencyRatio": _p95_latency_ratio,
        "costPerRequestRatio": _cost_ratio,
    }
    return [compare[name](canary, stable, limit) for name, limit in wanted.items()]


def _error_rate_ratio(canary: Figures, stable: Figures, limit: float) -> Measurement:
    """canary error rate / max(stable error rate, 1 / min(stable requests, canary requests)).

    The floor is the resolution of the coarser of the two windows: an error rate below one error
    in the smaller window cannot be told apart from zero there. Without it a stable revision with
    no 5xx would make the ratio infinite on the canary's first error. The floor uses the smaller
    window, not the stable's alone, because the canary usually gets the smaller share of traffic:
    with 1/stable requests, one error in 100 canary requests against 0 in 900 would be a ratio of
    9. With this rule a single canary error never exceeds a ratio limit >= 1 (its rate 1/canary
    requests is at most the floor), while a real regression still shows: 5 errors in 100 against
    0 in 900 is a ratio of 5. A significance test was not chosen: the step machine already
    tolerates `failureLimit` noisy intervals, and a plain ratio reads in a status message as what
    the user configured."""
    floor = 1 / min(stable.requests, canary.requests)
    ratio = canary.error_rate / max(stable.error_rate, floor)
    detail = f"canary {canary.errors}/{canary.requests} vs stable {stable.errors}/{stable.requests} 5xx"
    return _at_most("errorRateRatio", ratio, limit, detail)


def _p95_latency_ratio(canary: Figures, stable: Figures, limit: float) -> Measurement:
    canary_p95, stable_p95 = canary.p95_latency_seconds, stable.p95_latency_seconds
    if canary_p95 is None or stable_p95 is None:
        return Measurement("p95LatencyRatio", None, limit, None, "no latency recorded")
    # Interpolation inside the first bucket keeps any recorded p95 above 0: the ratio is defined.
    detail = f"canary {canary_p95:.4g}s vs stable {stable_p95:.4g}s"
    return _at_most("p95LatencyRatio", canary_p95 / stable_p95, limit, detail)


def _cost_ratio(canary: Figures, stable: Figures, limit: float) -> Measurement:
    canary_cost, stable_cost = canary.cost_per_computed_request, stable.cost_per_computed_request
    if canary_cost is None or stable_cost is None:
        side = "canary" if canary_cost is None else "stable revision"
        return Measurement("costPerRequestRatio", None, limit, None, f"the {side} computed no request (all cached or failed)")
    if stable_cost == 0:
        return Measurement("costPerRequestRatio", None, limit, None, "the stable revision's requests cost nothing")
    detail = f"canary ${canary_cost:.4g} vs stable ${stable_cost:.4g} per computed request"
    return _at_most("costPerRequestRatio", canary_cost / stable_cost, limit, detail)
