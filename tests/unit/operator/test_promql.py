"""The Prometheus analysis source's pure part: which queries are asked, and what an answer means.

The queries themselves are run against a real Prometheus server scraping a real runtime in
tests/integration/test_prometheus.py, and through the operator in tests/e2e/test_prometheus.py.
"""

from __future__ import annotations

import math

import pytest

from dspy_operator.rollout.analysis import FAIL, INCONCLUSIVE, PASS, Thresholds, judge
from dspy_operator.rollout.promql import (DEFAULT_QUERIES, FIGURES, SERVER_ERROR_TYPES, Measured, QueryError, Source,
                                          render, scalar)
from dspy_runtime.errors import server_error_types

ANALYSIS = {"intervalSeconds": 30, "prometheus": {"address": "http://prom.monitoring:9090/"}}


def vector(*values: str) -> dict:
    return {"resultType": "vector", "result": [{"metric": {}, "value": [1700000000.0, value]} for value in values]}


def test_no_prometheus_block_means_the_redis_windows():
    assert Source.from_spec(None) is None
    assert Source.from_spec({"intervalSeconds": 30}) is None


def test_the_defaults_cover_every_figure_with_the_podmonitor_labels_and_the_interval():
    source = Source.from_spec(ANALYSIS)
    assert source is not None
    assert source.address == "http://prom.monitoring:9090"  # no double slash before /api
    assert source.timeout_seconds == 10
    queries = source.queries_for("team-a", "qa", "0123456789ab", 30)
    assert set(queries) == set(FIGURES)
    for figure, query in queries.items():
        assert 'namespace="team-a"' in query and 'dspy_deployment="qa"' in query, figure
        assert 'revision="0123456789ab"' in query and "[30s]" in query, figure
        assert "{{" not in query and "}}" not in query, figure


def test_the_error_rate_counts_only_server_errors_as_the_redis_windows_do():
    query = DEFAULT_QUERIES["errorRate"]
    assert 'status=~"' + "|".join(SERVER_ERROR_TYPES) + '"' in query
    assert "rate_limited" not in query and "invalid_input" not in query


def test_the_operator_knows_the_runtime_s_server_error_types():
    """Copied, not imported (the operator image carries no runtime): kept equal here."""
    assert SERVER_ERROR_TYPES == server_error_types()


def test_a_written_query_replaces_only_its_figure():
    analysis = {"prometheus": {"address": "https://p:9090", "timeoutSeconds": 3,
                               "queries": {"requests": 'sum(my_requests{app="{{ name }}", rev="{{revision}}"})'}}}
    source = Source.from_spec(analysis)
    assert source is not None and source.timeout_seconds == 3
    queries = source.queries_for("ns", "qa", "abc", 60)
    assert queries["requests"] == 'sum(my_requests{app="qa", rev="abc"})'
    assert queries["errorRate"] == render("errorRate", DEFAULT_QUERIES["errorRate"],
                                          {"namespace": "ns", "name": "qa", "revision": "abc", "interval": "60s"})


def test_an_unknown_variable_is_an_error_naming_the_figure_and_the_variable():
    with pytest.raises(QueryError, match=r"prometheus.queries.errorRate: unknown variable \{\{ pod \}\}"):
        render("errorRate", 'rate(x{pod="{{ pod }}"}[1m])', {"name": "qa"})


@pytest.mark.parametrize(("data", "expected"), [
    (vector("42"), 42.0),
    (vector(), None),  # nothing matched: no data, not zero
    (vector("NaN"), None),  # 0/0, a quantile of nothing
    (vector("+Inf"), None),
    ({"resultType": "scalar", "result": [1700000000.0, "0.25"]}, 0.25),
])
def test_an_answer_is_one_number_or_none(data, expected):
    assert scalar("requests", data) == expected


def test_more_than_one_series_is_an_error_not_the_first_one():
    with pytest.raises(QueryError, match="returned 2 series; it must return one"):
        scalar("p95LatencySeconds", vector("0.1", "9.0"))


def test_a_range_vector_is_an_error():
    with pytest.raises(QueryError, match="returned a matrix"):
        scalar("requests", {"resultType": "matrix", "result": []})


def test_a_sample_that_is_not_a_number_is_an_error():
    with pytest.raises(QueryError, match="not a number"):
        scalar("requests", {"resultType": "vector", "result": [{"metric": {}, "value": [1.0, "many"]}]})


def test_measured_rounds_extrapolated_counts_and_derives_the_errors():
    measured = Measured.from_values({"requests": 99.6, "errorRate": 0.1, "p95LatencySeconds": 0.2,
                                     "costPerRequestUsd": None})
    assert measured.requests == 100 and measured.errors == 10
    assert measured.figures() == {"requests": 100, "errors": 10, "errorRate": 0.1, "p95LatencySeconds": 0.2}


def test_no_request_means_no_error_rate_whatever_the_query_said():
    measured = Measured.from_values({"requests": None, "errorRate": 1.0})
    assert measured.requests == 0 and measured.error_rate == 0.0
    assert measured.figures() == {"requests": 0, "errors": 0}


def test_judge_reads_prometheus_figures_like_windows():
    thresholds = Thresholds.from_spec({"minRequests": 20, "maxErrorRate": 0.05, "maxP95LatencySeconds": 1.0,
                                       "relative": {"maxCostPerRequestRatio": 1.5}})
    stable = Measured(requests=200, error_rate=0.0, p95_latency_seconds=0.1, cost_per_computed_request=0.001)
    good = Measured(requests=50, error_rate=0.02, p95_latency_seconds=0.2, cost_per_computed_request=0.0012)
    assert judge(thresholds, good, stable).result == PASS
    failing = Measured(requests=50, error_rate=0.5, p95_latency_seconds=2.0, cost_per_computed_request=0.01)
    verdict = judge(thresholds, failing, stable)
    assert verdict.result == FAIL
    assert {m.name for m in verdict.failed} == {"errorRate", "p95LatencySeconds", "costPerRequestRatio"}
    assert "errorRate 0.5 > 0.05" in verdict.message
    assert judge(thresholds, Measured(requests=19, error_rate=1.0), stable).result == INCONCLUSIVE


def test_the_error_rate_ratio_floor_uses_the_derived_error_count():
    thresholds = Thresholds.from_spec({"minRequests": 10, "maxErrorRate": 1.0, "relative": {"maxErrorRateRatio": 2}})
    stable = Measured(requests=1000, error_rate=0.0)
    one_error = Measured(requests=100, error_rate=0.01)
    assert judge(thresholds, one_error, stable).result == PASS  # one error never fails a ratio >= 1
    five = judge(thresholds, Measured(requests=100, error_rate=0.05), stable)
    assert five.result == FAIL and math.isclose(five.measurements[-1].value, 5.0)
