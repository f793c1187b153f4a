"""A/B statistics of a standing experiment: the variants (spec.variants) of the stable revision (pure).

Input is one window per variant (`analysis.windows_from_buckets` over the experiment's span),
output the `status.experiment` block. The first variant is the baseline; every other one is
compared with it on success rate (1 - 5xx failures / requests) by a two-sided two-proportion
z-test. The normal approximation is what dashboards and the plugin can explain in one line, and
it is accurate at the sample sizes a verdict is worth reading at (the 95% Wilson intervals stay
honest at small ones, and a non-significant result says how many more requests per arm would
settle the observed difference). Only the standard library: `statistics.NormalDist` and `math.erfc`.

Every value is rounded to six significant digits, so recomputing an idle experiment yields an
identical block and the status diff writes nothing.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from statistics import NormalDist
from typing import Any, Final

from dspy_operator.rollout.analysis import Window, round_figure
from dspy_operator.status.conditions import now_rfc3339

ALPHA: Final = 0.05
POWER: Final = 0.8
CONFIDENCE: Final = 0.95
TEST_NAME: Final = "two-proportion z-test"

_NORMAL: Final = NormalDist()


def _z(probability: float) -> float:
    """The standard normal quantile: z(0.975) = 1.959964."""
    return _NORMAL.inv_cdf(probability)


def wilson_interval(successes: int, trials: int, confidence: float = CONFIDENCE) -> tuple[float, float] | None:
    """The Wilson score interval of a proportion; None with no trial.

    Chosen over the textbook p +- z*sqrt(p(1-p)/n) because that one collapses to a zero-width
    interval at 0 or n successes (exactly where a fresh variant with few requests sits) and can
    leave [0, 1]. Worked example: 0 of 10 -> [0, 0.2775]."""
    if trials <= 0:
        return None
    z = _z(1 - (1 - confidence) / 2)
    share = successes / trials
    scale = 1 + z * z / trials
    centre = (share + z * z / (2 * trials)) / scale
    half = z * math.sqrt(share * (1 - share) / trials + z * z / (4 * trials * trials)) / scale
    # At 0 (or all) successes a bound is exactly 0 (or 1); computed, it would carry float noise.
    lower = 0.0 if successes == 0 else centre - half
    upper = 1.0 if successes == trials else centre + half
    return lower, upper


def two_proportion_p_value(successes_a: int, trials_a: int, successes_b: int, trials_b: int) -> float | None:
    """Two-sided p-value of the pooled two-proportion z-test of H0: both arms share one rate.

    None when an arm has no trial. When the pooled rate is 0 or 1 both arms agree exactly and
    the p-value is 1. Worked example: 45/100 against 60/100 -> z = 2.124, p = 0.0337."""
    if trials_a <= 0 or trials_b <= 0:
        return None
    pooled = (successes_a + successes_b) / (trials_a + trials_b)
    spread = math.sqrt(pooled * (1 - pooled) * (1 / trials_a + 1 / trials_b))
    if spread == 0:
        return 1.0
    z = abs(successes_a / trials_a - successes_b / trials_b) / spread
    # erfc keeps precision in the tail, where 1 - cdf(z) would round to 0.
    return math.erfc(z / math.sqrt(2))


def samples_needed_per_arm(rate_a: float, rate_b: float, alpha: float = ALPHA, power: float = POWER) -> int | None:
    """Requests per arm for the two-sided test at `alpha` to detect rate_a vs rate_b with `power`.

    The standard formula for two proportions (without continuity correction):
    n = (z(1-alpha/2) * sqrt(2 p q) + z(power) * sqrt(pa qa + pb qb))^2 / (pa - pb)^2, p the mean
    rate. None when the rates are equal: no sample size detects a difference of 0.
    Worked example: 0.5 vs 0.6 -> 388 per arm."""
    difference = rate_a - rate_b
    if difference == 0:
        return None
    mean = (rate_a + rate_b) / 2
    numerator = (
        _z(1 - alpha / 2) * math.sqrt(2 * mean * (1 - mean))
        + _z(power) * math.sqrt(rate_a * (1 - rate_a) + rate_b * (1 - rate_b))
    )
    return math.ceil(numerator**2 / difference**2)


@dataclass(frozen=True, slots=True)
class Comparison:
    """A variant against the baseline on success rate."""

    p_value: float | None
    """None when either arm served nothing."""
    significant: bool
    samples_needed_per_arm: int | None
    """Only when not significant: requests each arm still needs (beyond the smaller arm's count)
    for the observed difference to be detected at 80% power; None when the difference is 0."""

    def as_status(self) -> dict[str, Any]:
        status: dict[str, Any] = {"significant": self.significant}
        if self.p_value is not None:
            status["pValue"] = round_figure(self.p_value)
        if self.samples_needed_per_arm is not None:
            status["samplesNeededPerArm"] = self.samples_needed_per_arm
        return status


def compare(baseline: Window, variant: Window, alpha: float = ALPHA, power: float = POWER) -> Comparison:
    """The variant's success rate against the baseline's: significant at `alpha` or not."""
    p_value = two_proportion_p_value(_successes(baseline), baseline.requests, _successes(variant), variant.requests)
    if p_value is None:
        return Comparison(None, False, None)
    if p_value < alpha:
        return Comparison(p_value, True, None)
    needed = samples_needed_per_arm(_success_rate(baseline), _success_rate(variant), alpha, power)
    if needed is None:
        return Comparison(p_value, False, None)
    # The formula assumes equal arms, so the smaller one is what still falls short.
    return Comparison(p_value, False, max(needed - min(baseline.requests, variant.requests), 0))


def _successes(window: Window) -> int:
    return window.requests - window.errors


def _success_rate(window: Window) -> float:
    return _successes(window) / window.requests


def experiment_status(variants: Sequence[tuple[str, Window]], start: float, end: float) -> dict[str, Any]:
    """The `status.experiment` block for the variants in spec order (the first is the baseline)
    over the window [start, end) (unix seconds). A figure with no data is left out, not null."""
    rows = [_variant_figures(name, window) for name, window in variants]
    for row, (_name, window) in zip(rows[1:], variants[1:]):
        row["vsBaseline"] = compare(variants[0][1], window).as_status()
    return {
        "window": {"start": _rfc3339(start), "end": _rfc3339(end)},
        "test": TEST_NAME,
        "variants": rows,
    }


def _variant_figures(name: str, window: Window) -> dict[str, Any]:
    served = window.requests
    figures = {
        "successRate": _success_rate(window) if served else None,
        "successRateCI": wilson_interval(_successes(window), served),
        "p95LatencySeconds": window.p95_latency_seconds,
        "costPerRequestUsd": window.cost_per_computed_request,
        "cacheHitRatio": window.cache_hit_ratio,
        "cacheHitRatioCI": wilson_interval(window.cache_hits, served),
    }
    rounded = {key: _rounded(value) for key, value in figures.items() if value is not None}
    return {"name": name, "requests": served, **rounded}


def _rounded(value: float | tuple[float, float]) -> float | list[float]:
    return [round_figure(bound) for bound in value] if isinstance(value, tuple) else round_figure(value)


def _rfc3339(unix_seconds: float) -> str:
    return now_rfc3339(datetime.fromtimestamp(unix_seconds, timezone.utc))
