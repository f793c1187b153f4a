"""The canary analysis's Prometheus source against a real Prometheus server scraping a real runtime.

One runtime process serves two revisions of a routing table (a healthy stable one, and a canary
whose model fails half its calls at the fake LM); Prometheus scrapes it every second with the
labels the chart's PodMonitor gives a pod. The operator's own code (`observe.prometheus_figures`:
the default queries, `prometheus.instant_query`, `promql.scalar`) then asks for each revision's figures, and
they must match what the runtime itself counted: the queries are valid PromQL for the pinned
server and select, rate and divide what the Redis windows would.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from dspy_operator.observe import prometheus_figures
from dspy_operator.prometheus import PrometheusUnavailable, instant_query
from dspy_operator.rollout.analysis import FAIL, PASS, Thresholds, judge
from dspy_operator.rollout.promql import Measured, Source

STABLE, CANARY = "5ab1e0000000", "ca0a7e000000"
LABELS = {"namespace": "team-a", "dspy_deployment": "qa"}
TABLE = {
    "revisions": [
        {"name": STABLE, "weight": 100, "variants": [{"name": "baseline", "weight": 100}]},
        {"name": CANARY, "weight": 0,
         "variants": [{"name": "baseline", "weight": 100, "lm": {"model": "openai/fake-fallback"}}]},
    ],
}
REQUESTS = 40


def measured(source: Source, revision: str, interval: int) -> Measured:
    return prometheus_figures(source, LABELS["namespace"], LABELS["dspy_deployment"], revision, interval, time.time())


def own_counts(base: str) -> dict[tuple[str, str], float]:
    """(revision, status) -> dspy_predictions_total, from the runtime's own /metrics."""
    counts: dict[tuple[str, str], float] = {}
    for family in text_string_to_metric_families(httpx.get(f"{base}/metrics", timeout=10).text):
        for sample in family.samples:
            if sample.name == "dspy_predictions_total":
                key = (sample.labels["revision"], sample.labels["status"])
                counts[key] = counts.get(key, 0.0) + sample.value
    return counts


def served(counts: dict[tuple[str, str], float], revision: str) -> float:
    return sum(value for (rev, _), value in counts.items() if rev == revision)


@pytest.fixture
def scraped_runtime(spawn_runtime, fake_lm, prometheus, tmp_path: Path, poll) -> Any:
    """The runtime, its series declared at 0 and scraped, before any request."""
    table = tmp_path / "routing.json"
    table.write_text(json.dumps(TABLE))
    fake_lm.configure(failing_models=["fake-fallback"], failure_rate=0.5)
    runtime = spawn_runtime(ROUTING_PATH=str(table), LM_MAX_RETRIES="0", CIRCUIT_BREAKER_FAILURE_THRESHOLD="1000")
    runtime.wait_ready()
    prometheus.scrape({"dspy-runtime": [(f"127.0.0.1:{runtime.port}", LABELS)]})
    poll(lambda: prometheus.query(f'dspy_predictions_total{{revision="{CANARY}", status="ok"}}'),
         what="the canary's series, declared at 0, to be scraped")
    return runtime


def test_the_default_queries_measure_what_a_live_runtime_served(scraped_runtime, prometheus, poll):
    started = time.time()
    with httpx.Client(base_url=scraped_runtime.url, timeout=60) as client:
        for i in range(REQUESTS):
            # A quarter of the stable requests repeat a question: cache hits, which cost nothing.
            client.post("/v1/predict", json={"inputs": {"question": f"stable {i % 30}"}, "revision": STABLE})
            client.post("/v1/predict", json={"inputs": {"question": f"canary {i}"}, "revision": CANARY})
    counts = own_counts(scraped_runtime.url)
    assert served(counts, STABLE) == served(counts, CANARY) == REQUESTS
    poll(lambda: all(float(prometheus.query(f'sum(dspy_predictions_total{{revision="{revision}"}})')[0]["value"][1])
                     == REQUESTS for revision in (STABLE, CANARY)),
         what="prometheus to scrape the last request")

    source = Source.from_spec({"prometheus": {"address": prometheus.base}})
    assert source is not None
    interval = int(time.time() - started) + 10  # the whole traffic, and declared zeros before it
    canary, stable = measured(source, CANARY, interval), measured(source, STABLE, interval)

    # increase() extrapolates towards the window's ends, never below what was counted.
    assert REQUESTS <= canary.requests <= REQUESTS * 1.25 and REQUESTS <= stable.requests <= REQUESTS * 1.25
    failed = REQUESTS - counts[(CANARY, "ok")]
    assert 0 < failed < REQUESTS  # the fake LM fails about half
    assert canary.error_rate == pytest.approx(failed / REQUESTS, abs=0.02)
    assert counts[(CANARY, "upstream_error")] == failed  # the 5xx the query selects
    assert stable.error_rate == 0.0
    assert stable.p95_latency_seconds is not None and canary.p95_latency_seconds is not None
    # The stable revision computed 30 of its 40 (10 were cache hits); its cost is per computed one.
    costs = httpx.get(f"{scraped_runtime.url}/costs", timeout=10).json()
    assert stable.cost_per_computed_request is not None
    stable_model_cost = costs["models"]["openai/fake-model"]["cost_usd"]
    assert stable.cost_per_computed_request == pytest.approx(stable_model_cost / 30, rel=0.05)

    thresholds = Thresholds.from_spec({"minRequests": 20, "maxErrorRate": 0.05, "relative": {"maxErrorRateRatio": 2}})
    verdict = judge(thresholds, canary, stable)
    assert verdict.result == FAIL and {m.name for m in verdict.failed} == {"errorRate", "errorRateRatio"}
    assert judge(thresholds, stable, stable).result == PASS


def test_a_query_the_server_rejects_names_the_server_and_its_reason(prometheus):
    with pytest.raises(PrometheusUnavailable, match=rf"{prometheus.base} answered 400: .*parse error"):
        instant_query(prometheus.base, "sum(rate(dspy_predictions_total[1m]", time.time(), 10)


def test_an_unreachable_server_is_named(prometheus):
    address = prometheus.base
    prometheus.stop()
    with pytest.raises(PrometheusUnavailable, match=rf"{address} unreachable"):
        instant_query(address, "up", time.time(), 2)
