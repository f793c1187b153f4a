"""A/B statistics against values computed by hand (and published ones), and the status block."""

from __future__ import annotations

import pytest

from dspy_operator.rollout.analysis import LATENCY_BUCKETS, Window
from dspy_operator.rollout.experiment import (
    TEST_NAME,
    compare,
    experiment_status,
    samples_needed_per_arm,
    two_proportion_p_value,
    wilson_interval,
)


@pytest.mark.parametrize(("successes", "trials", "lower", "upper"), [
    # Newcombe (1998), "Two-sided confidence intervals for the single proportion", method 3.
    (81, 263, 0.2553, 0.3662),
    (15, 148, 0.0624, 0.1605),
    (0, 20, 0.0, 0.1611),
    (1, 29, 0.0061, 0.1718),
    # All successes: 1 - the upper bound of none, z^2 / (n + z^2) = 3.8415 / 13.8415.
    (10, 10, 0.7225, 1.0),
])
def test_wilson_interval_matches_published_values(successes, trials, lower, upper):
    low, high = wilson_interval(successes, trials)
    assert low == pytest.approx(lower, abs=5e-5) and high == pytest.approx(upper, abs=5e-5)


def test_wilson_interval_is_exact_at_the_edges_and_none_without_trials():
    assert wilson_interval(0, 10)[0] == 0.0 and wilson_interval(10, 10)[1] == 1.0
    assert wilson_interval(0, 0) is None


def test_two_proportion_p_value_matches_a_hand_computation():
    # 45/100 vs 60/100: pooled p = 0.525, se = sqrt(0.525 * 0.475 * (1/100 + 1/100)) = 0.070622,
    # z = 0.15 / 0.070622 = 2.1240; from the normal table Phi(2.12) = 0.98300, Phi(2.13) = 0.98341,
    # so Phi(2.124) = 0.98316 and p = 2 * (1 - 0.98316) = 0.0337.
    assert two_proportion_p_value(45, 100, 60, 100) == pytest.approx(0.0337, abs=2e-4)
    # Symmetric in the arms.
    assert two_proportion_p_value(60, 100, 45, 100) == two_proportion_p_value(45, 100, 60, 100)
    # 490/500 vs 480/500: pooled 0.97, se = sqrt(0.97 * 0.03 * 0.004) = 0.010788, z = 0.02 / 0.010788 = 1.8539;
    # Phi(1.85) = 0.96784, Phi(1.86) = 0.96856 -> Phi(1.854) = 0.96813, p = 0.0637: not significant at 0.05.
    assert two_proportion_p_value(490, 500, 480, 500) == pytest.approx(0.0637, abs=2e-4)


def test_two_proportion_p_value_edges():
    assert two_proportion_p_value(100, 100, 50, 50) == 1.0  # both arms never fail: nothing differs
    assert two_proportion_p_value(0, 0, 5, 10) is None
    # z = 0.2 / sqrt(0.25 * 0.002) = 8.94: erfc keeps the tail (~3.8e-19) where 1 - cdf(z) gives 0.
    assert 0 < two_proportion_p_value(600, 1000, 400, 1000) < 1e-18


def test_samples_needed_per_arm_matches_the_standard_formula():
    # 0.5 vs 0.6: (1.95996 * sqrt(2 * 0.55 * 0.45) + 0.84162 * sqrt(0.25 + 0.24))^2 / 0.01
    # = (1.37896 + 0.58913)^2 / 0.01 = 387.34 -> 388.
    assert samples_needed_per_arm(0.5, 0.6) == 388
    assert samples_needed_per_arm(0.6, 0.5) == 388
    # 0.98 vs 0.96: (1.95996 * sqrt(2 * 0.97 * 0.03) + 0.84162 * sqrt(0.0196 + 0.0384))^2 / 0.0004
    # = (0.472835 + 0.202689)^2 / 0.0004 = 1140.83 -> 1141.
    assert samples_needed_per_arm(0.98, 0.96) == 1141
    assert samples_needed_per_arm(0.9, 0.9) is None


def test_compare_reports_samples_needed_only_when_not_significant():
    # 490/500 vs 480/500 (worked above): p = 0.0637; 1141 requests per arm would settle 0.98 vs 0.96,
    # so each arm still needs 641 more.
    unsettled = compare(Window(requests=500, errors=10), Window(requests=500, errors=20))
    assert not unsettled.significant and unsettled.samples_needed_per_arm == 641
    assert unsettled.as_status() == {"significant": False, "pValue": 0.0637735, "samplesNeededPerArm": 641}
    # Unequal arms: the smaller one is what falls short (1141 - 300).
    assert compare(Window(requests=900, errors=18), Window(requests=300, errors=12)).samples_needed_per_arm == 841
    clear = compare(Window(requests=100, errors=55), Window(requests=100, errors=40))
    assert clear.significant and clear.samples_needed_per_arm is None
    assert clear.p_value == pytest.approx(0.0337, abs=2e-4)
    same = compare(Window(requests=500, errors=10), Window(requests=1000, errors=20))
    assert not same.significant and same.samples_needed_per_arm is None and same.p_value == 1.0
    assert compare(Window(requests=500, errors=10), Window()).as_status() == {"significant": False}


def latency(bucket: int, count: int) -> tuple[int, ...]:
    counts = [0] * (len(LATENCY_BUCKETS) + 1)
    counts[bucket] = count
    return tuple(counts)


def test_experiment_status_block():
    variants = [
        ("baseline", Window(requests=500, errors=10, cache_hits=100, cost_usd=0.39, latency=latency(12, 500))),
        ("optimized", Window(requests=500, errors=20, cache_hits=0, cost_usd=0.96, latency=latency(13, 500))),
        ("fresh", Window()),
    ]
    status = experiment_status(variants, 1764624000, 1764627600)
    assert status["window"] == {"start": "2025-12-01T21:20:00Z", "end": "2025-12-01T22:20:00Z"}
    assert status["test"] == TEST_NAME == "two-proportion z-test"
    baseline, optimized, fresh = status["variants"]
    # Wilson 490/500: centre (0.98 + 3.8415/1000) / (1 + 3.8415/500) = 0.976341,
    # half 1.96 * sqrt(0.0196/500 + 3.8415/10**6) / 1.0076829 = 0.012761 -> [0.96358, 0.989102].
    assert baseline == {
        "name": "baseline", "requests": 500, "successRate": 0.98, "successRateCI": [0.96358, 0.989101],
        "p95LatencySeconds": 0.975, "costPerRequestUsd": 0.001, "cacheHitRatio": 0.2,
        "cacheHitRatioCI": [0.167285, 0.237289],
    }
    # p95 of 500 requests in (1, 2.5]: 1 + 1.5 * 0.95 = 2.425; cost 0.96 / 480 computed requests.
    assert optimized == {
        "name": "optimized", "requests": 500, "successRate": 0.96, "successRateCI": [0.939026, 0.973959],
        "p95LatencySeconds": 2.425, "costPerRequestUsd": 0.002, "cacheHitRatio": 0.0,
        "cacheHitRatioCI": [0.0, 0.00762434],
        "vsBaseline": {"significant": False, "pValue": 0.0637735, "samplesNeededPerArm": 641},
    }
    assert fresh == {"name": "fresh", "requests": 0, "vsBaseline": {"significant": False}}


def test_experiment_status_is_identical_when_recomputed_and_rounded():
    variants = [("a", Window(requests=3, errors=1, cost_usd=0.1 + 0.2)), ("b", Window(requests=7, errors=2))]
    first = experiment_status(variants, 0, 60)
    assert first == experiment_status(list(variants), 0, 60)
    row = first["variants"][0]
    assert row["successRate"] == 0.666667 and row["costPerRequestUsd"] == 0.15
    assert experiment_status([], 0, 60)["variants"] == []
