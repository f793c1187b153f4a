"""Canary analysis: windows from the runtime's buckets, p95 from bucket counts, and verdicts.

Properties (hypothesis) pin the rules that must hold for any traffic; worked examples pin the
numbers a user reads in status.
"""

from __future__ import annotations

import math

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from dspy_operator.rollout.analysis import (
    EMPTY,
    FAIL,
    INCONCLUSIVE,
    LATENCY_BUCKETS,
    PASS,
    Thresholds,
    Window,
    bucket_starts,
    by_revision,
    judge,
    merge,
    settled_end,
    windows_from_buckets,
)

SLOTS = len(LATENCY_BUCKETS) + 1
# No per-example deadline: the machine's cores are shared, and a slow example is not a wrong one.
shared_cores = settings(deadline=None)
# Dyadic amounts (multiples of 1/1024 below 2**20) add exactly in binary floating point, so
# "merge is associative" can be asserted with ==; with arbitrary floats it holds up to rounding.
dyadic = st.integers(min_value=0, max_value=2**30).map(lambda n: n / 1024)


@st.composite
def windows(draw: st.DrawFn, max_requests: int = 400) -> Window:
    """A consistent window: every request has a latency, errors and cache hits within requests."""
    cuts = sorted(draw(st.lists(st.integers(0, max_requests), min_size=SLOTS - 1, max_size=SLOTS - 1)))
    total = draw(st.integers(max(cuts, default=0), max_requests))
    edges = [0, *cuts, total]
    latency = tuple(edges[i + 1] - edges[i] for i in range(SLOTS))
    errors = draw(st.integers(0, total))
    cache_hits = draw(st.integers(0, total - errors))
    classes = draw(st.dictionaries(st.sampled_from(["upstream_error", "rate_limited", "invalid_input"]),
                                   st.integers(0, 50), max_size=3))
    return Window(
        requests=total, errors=errors, errors_by_class=tuple(sorted(classes.items())), latency=latency,
        latency_sum=draw(dyadic), cache_hits=cache_hits, tokens_in=draw(st.integers(0, 10**6)),
        tokens_out=draw(st.integers(0, 10**6)), cost_usd=draw(dyadic),
    )


thresholds = st.builds(
    Thresholds,
    min_requests=st.integers(0, 300),
    max_error_rate=st.floats(0, 1),
    max_p95_latency_seconds=st.none() | st.sampled_from(LATENCY_BUCKETS) | st.floats(0.001, 100),
    max_error_rate_ratio=st.none() | st.floats(1, 10),
    max_p95_latency_ratio=st.none() | st.floats(1, 10),
    max_cost_per_request_ratio=st.none() | st.floats(1, 10),
)


def latency_window(*pairs: tuple[int, int]) -> Window:
    """A window with `count` requests in latency bucket `index`, for each (index, count)."""
    latency = [0] * SLOTS
    for index, count in pairs:
        latency[index] += count
    return Window(requests=sum(latency), latency=tuple(latency))


def test_latency_buckets_match_the_runtime():
    from dspy_runtime.metrics import LATENCY_BUCKETS as RUNTIME_BUCKETS

    assert LATENCY_BUCKETS == RUNTIME_BUCKETS


# ---- properties ----------------------------------------------------------------------------------

@shared_cores
@given(thresholds, windows(), st.none() | windows())
def test_never_a_pass_or_fail_below_min_requests(limits, canary, stable):
    verdict = judge(limits, canary, stable)
    if canary.requests < max(limits.min_requests, 1):
        assert verdict.result == INCONCLUSIVE and verdict.measurements == ()
    else:
        assert verdict.result in (PASS, FAIL)


@shared_cores
@given(thresholds, windows(), st.none() | windows())
def test_fail_exactly_when_a_counted_measurement_failed(limits, canary, stable):
    verdict = judge(limits, canary, stable)
    if verdict.result == INCONCLUSIVE:
        return
    failed = [m for m in verdict.measurements if m.passed is False]
    assert (verdict.result == FAIL) == bool(failed)
    assert verdict.failed == tuple(failed)
    for measurement in verdict.measurements:
        if measurement.passed is not None:
            assert measurement.passed == (measurement.value <= measurement.threshold)
    if failed:
        assert all(m.name in verdict.message for m in failed)


@shared_cores
@given(thresholds, windows(), windows())
def test_relative_measurements_count_only_when_the_stable_window_has_enough_requests(limits, canary, stable):
    verdict = judge(limits, canary, stable)
    relative = [m for m in verdict.measurements if m.name.endswith("Ratio")]
    if stable.requests < max(limits.min_requests, 1):
        assert all(m.passed is None and "stable revision served" in m.detail for m in relative)


@shared_cores
@given(windows(), windows(max_requests=5000), st.floats(1, 10))
def test_one_canary_error_never_fails_the_relative_error_rate(canary, stable, ratio):
    canary = Window(requests=max(canary.requests, 1), errors=min(canary.errors, 1), latency=canary.latency)
    verdict = judge(Thresholds(min_requests=1, max_error_rate=1.0, max_error_rate_ratio=ratio), canary, stable)
    assert verdict.result == PASS


@shared_cores
@given(windows())
def test_p95_lies_within_the_bucket_that_holds_its_rank(window):
    p95 = window.p95_latency_seconds
    if window.requests == 0:
        assert p95 is None
        return
    rank = 0.95 * window.requests
    index = next(i for i in range(SLOTS) if sum(window.latency[: i + 1]) >= rank)
    lower = LATENCY_BUCKETS[index - 1] if index else 0.0
    upper = LATENCY_BUCKETS[min(index, len(LATENCY_BUCKETS) - 1)]
    assert lower <= p95 <= upper


@shared_cores
@given(windows(), windows(), windows())
def test_merge_is_associative_and_commutative_with_empty_as_identity(a, b, c):
    assert (a + b) + c == a + (b + c)
    assert a + b == b + a
    assert a + EMPTY == a == merge([a])
    assert merge([a, b, c]) == merge([c, a, b])
    assert merge([]) == EMPTY


@st.composite
def buckets(draw: st.DrawFn) -> dict[int, dict[str, str]]:
    """Bucket hashes as a pod writes them, for a few revision/variant pairs over 6 buckets."""
    result: dict[int, dict[str, str]] = {}
    for start in range(1000, 1030, 5):
        fields: dict[str, str] = {}
        for revision, variant in draw(st.sets(st.sampled_from([("r1", "a"), ("r1", "b"), ("r2", "a")]))):
            fields.update(hash_fields(revision, variant, draw(windows(max_requests=40))))
        result[start] = fields
    return result


def hash_fields(revision: str, variant: str, window: Window) -> dict[str, str]:
    """The fields the runtime writes for one window (the contract's format)."""
    base = f"{revision}|{variant}|"
    fields = {
        f"{base}requests": str(window.requests), f"{base}errors": str(window.errors),
        f"{base}latency_sum": repr(window.latency_sum), f"{base}cache_hits": str(window.cache_hits),
        f"{base}tokens_in": str(window.tokens_in), f"{base}tokens_out": str(window.tokens_out),
        f"{base}cost_usd": repr(window.cost_usd),
    }
    fields.update({f"{base}lat:{i}": str(count) for i, count in enumerate(window.latency) if count})
    fields.update({f"{base}class:{name}": str(count) for name, count in window.errors_by_class})
    return fields


@settings(deadline=None, max_examples=50)  # each example draws up to 18 windows
@given(buckets(), st.integers(995, 1035), st.integers(995, 1035), st.integers(995, 1035))
def test_a_window_is_the_merge_of_its_parts(data, start, middle, end):
    start, end = min(start, end), max(start, end)
    middle = math.ceil(middle / 5) * 5  # a split inside a bucket would drop that bucket from both parts
    assume(start <= middle <= end)
    whole = windows_from_buckets(data, start, end)
    left, right = windows_from_buckets(data, start, middle), windows_from_buckets(data, middle, end)
    for key in whole.keys() | left.keys() | right.keys():
        assert whole.get(key, EMPTY) == left.get(key, EMPTY) + right.get(key, EMPTY)


# ---- worked examples -----------------------------------------------------------------------------

def test_bucket_starts_keep_only_whole_buckets():
    assert list(bucket_starts(3, 99)) == list(range(5, 95, 5))
    assert list(bucket_starts(100, 110)) == [100, 105]
    assert list(bucket_starts(100, 104.9)) == []
    assert settled_end(1012.5) == 1010 and settled_end(1011.9) == 1005


def test_p95_interpolates_inside_its_bucket_like_histogram_quantile():
    # 90 requests <= 0.1 s (bucket 9), 10 in (0.1, 0.25] (bucket 10): rank 95 is halfway into bucket 10.
    assert latency_window((9, 90), (10, 10)).p95_latency_seconds == pytest.approx(0.175)
    # All in the first bucket: interpolated from 0.
    assert latency_window((0, 100)).p95_latency_seconds == pytest.approx(0.000095)
    # Above the last bound: the last finite bound, as Prometheus answers.
    assert latency_window((9, 90), (SLOTS - 1, 10)).p95_latency_seconds == 60.0
    assert EMPTY.p95_latency_seconds is None


def test_cost_is_per_computed_request_so_a_cold_cache_is_not_punished():
    warm = Window(requests=100, cache_hits=80, errors=0, cost_usd=0.2)
    cold = Window(requests=100, cache_hits=0, errors=0, cost_usd=1.0)
    assert warm.cost_per_computed_request == pytest.approx(0.01) == cold.cost_per_computed_request
    assert Window(requests=10, cache_hits=6, errors=4, cost_usd=0.0).cost_per_computed_request is None


def test_figures_are_rounded_and_leave_out_what_has_no_data():
    window = Window(requests=3, errors=1, cache_hits=1, cost_usd=0.001, latency=latency_window((9, 3)).latency)
    assert window.figures() == {
        "requests": 3, "errors": 1, "errorRate": 0.333333, "p95LatencySeconds": 0.0975,
        "costPerRequestUsd": 0.001, "cacheHitRatio": 0.333333,
    }
    assert EMPTY.figures() == {"requests": 0, "errors": 0}


def test_windows_from_buckets_read_the_contract_format_from_bytes_and_skip_the_unknown():
    data = {
        1000: {b"r1|a|requests": b"10", b"r1|a|errors": b"2", b"r1|a|lat:3": b"10", b"r1|a|cost_usd": b"0.5",
               b"r1|a|class:upstream_error": b"2", b"r1|a|class:rate_limited": b"1",
               b"r1|a|future_figure": b"7", b"r1|a|lat:99": b"1", b"r1|a|tokens_in": b"not a number",
               b"malformed": b"1"},
        1005: {"r1|b|requests": "5", "r1|b|cache_hits": "5", "r2|a|requests": "1"},
        1010: {"r1|a|requests": "1000"},  # ends at 1015: outside [1000, 1012)
    }
    result = windows_from_buckets(data, 1000, 1012)
    assert list(result) == [("r1", "a"), ("r1", "b"), ("r2", "a")]
    first = result["r1", "a"]
    assert (first.requests, first.errors, first.cost_usd, first.tokens_in) == (10, 2, 0.5, 0)
    assert first.errors_by_class == (("rate_limited", 1), ("upstream_error", 2))
    assert first.latency[3] == 10 and sum(first.latency) == 10
    revisions = by_revision(result)
    assert revisions["r1"].requests == 15 and revisions["r1"].cache_hits == 5 and revisions["r2"].requests == 1


def test_thresholds_from_spec_take_the_crd_defaults_and_the_relative_block():
    assert Thresholds.from_spec(None) == Thresholds(min_requests=50, max_error_rate=0.05)
    limits = Thresholds.from_spec({
        "minRequests": 20, "maxErrorRate": 0.1, "maxP95LatencySeconds": 2, "intervalSeconds": 60,
        "relative": {"maxErrorRateRatio": 2, "maxCostPerRequestRatio": 1.5},
    })
    assert limits == Thresholds(20, 0.1, 2.0, 2.0, None, 1.5)


def test_a_canary_with_too_few_requests_is_inconclusive_even_with_min_requests_zero():
    verdict = judge(Thresholds(min_requests=0), EMPTY, None)
    assert verdict.result == INCONCLUSIVE
    assert verdict.message == "the canary served 0 requests, fewer than the 1 a verdict needs (minRequests)"
    assert judge(Thresholds(min_requests=50), Window(requests=49, errors=49), None).result == INCONCLUSIVE


def test_a_failing_canary_names_each_failing_figure_with_value_and_threshold():
    limits = Thresholds(min_requests=50, max_error_rate=0.05, max_p95_latency_seconds=0.2,
                        max_error_rate_ratio=2.0, max_p95_latency_ratio=3.0)
    canary = Window(requests=100, errors=10, latency=latency_window((9, 90), (10, 10)).latency)
    stable = Window(requests=900, errors=9, latency=latency_window((9, 900)).latency)
    verdict = judge(limits, canary, stable)
    assert verdict.result == FAIL
    assert verdict.message == ("errorRate 0.1 > 0.05; "
                               "errorRateRatio 10 > 2 (canary 10/100 vs stable 9/900 5xx)")
    assert [(m.name, m.passed) for m in verdict.measurements] == [
        ("errorRate", False), ("p95LatencySeconds", True), ("errorRateRatio", False), ("p95LatencyRatio", True),
    ]
    assert verdict.measurements[0].as_status() == {"name": "errorRate", "threshold": 0.05, "value": 0.1, "passed": False}


def test_relative_error_rate_floor_against_a_stable_without_errors():
    limits = Thresholds(min_requests=50, max_error_rate=1.0, max_error_rate_ratio=2.0)
    clean_stable = Window(requests=900)
    # One error in 100: rate 0.01 against the floor 1/100 -> ratio 1.
    one = judge(limits, Window(requests=100, errors=1), clean_stable)
    assert one.result == PASS and one.measurements[1].value == pytest.approx(1.0)
    # Five errors in 100: ratio 5, a real regression.
    five = judge(limits, Window(requests=100, errors=5), clean_stable)
    assert five.result == FAIL and five.measurements[1].value == pytest.approx(5.0)


def test_relative_measurements_are_skipped_with_a_reason_and_do_not_count():
    limits = Thresholds(min_requests=50, max_error_rate=0.5, max_error_rate_ratio=1.0, max_cost_per_request_ratio=1.0)
    canary = Window(requests=100, errors=40, cost_usd=1.0)
    verdict = judge(limits, canary, Window(requests=10))
    assert verdict.result == PASS and verdict.message == (
        "passed errorRate; skipped errorRateRatio (the stable revision served 10 requests, fewer than 50), "
        "costPerRequestRatio (the stable revision served 10 requests, fewer than 50)")
    assert verdict.measurements[1].as_status() == {
        "name": "errorRateRatio", "threshold": 1.0,
        "skipped": "the stable revision served 10 requests, fewer than 50",
    }
    no_stable = judge(limits, canary, None)
    assert {m.detail for m in no_stable.measurements[1:]} == {"the stable revision served 0 requests, fewer than 50"}


def test_cost_ratio_uses_computed_requests_and_skips_without_any():
    limits = Thresholds(min_requests=10, max_error_rate=1.0, max_cost_per_request_ratio=1.5)
    cold_canary = Window(requests=100, cost_usd=2.0)             # 0.02 per computed request
    warm_stable = Window(requests=100, cache_hits=90, cost_usd=0.15)  # 0.015 per computed request
    verdict = judge(limits, cold_canary, warm_stable)
    assert verdict.result == PASS and verdict.measurements[1].value == pytest.approx(0.02 / 0.015)
    all_cached = judge(limits, cold_canary, Window(requests=100, cache_hits=100))
    assert all_cached.measurements[1].passed is None
    assert all_cached.measurements[1].detail == "the stable revision computed no request (all cached or failed)"
    free_stable = judge(limits, cold_canary, Window(requests=100))
    assert free_stable.measurements[1].detail == "the stable revision's requests cost nothing"
    pricier = judge(limits, Window(requests=100, cost_usd=4.0), warm_stable)
    assert pricier.result == FAIL and pricier.message.startswith("costPerRequestRatio 2.667 > 1.5")


def test_p95_latency_without_recorded_latency_is_skipped():
    verdict = judge(Thresholds(min_requests=1, max_p95_latency_seconds=1.0), Window(requests=5), None)
    assert verdict.result == PASS
    assert verdict.measurements[1].passed is None and verdict.measurements[1].detail == "no latency recorded"
