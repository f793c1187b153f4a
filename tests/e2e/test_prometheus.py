"""The operator and its runtimes watched by a real Prometheus, and canaries judged by it.

A Prometheus server (the pinned build) scrapes the real operator's /metrics and two runtime
processes started from the operator's Deployment, with the labels the chart's PodMonitor gives a
pod. The resource's canary analysis reads its figures from that server (`analysis.prometheus`,
default queries). One failing canary is aborted on Prometheus's figures, a healthy one is promoted
on them; then every series name the chart's dashboard and alert rules use has data.
"""

from __future__ import annotations

from typing import Any

import pytest

from monitoring import dashboard_exprs, metric_names, rule_exprs
from resources import (
    MODEL, TIMEOUT, Traffic, api_key_secret, apply_yaml, canary, condition, patch_spec, redis_secret, status, wait_phase,
)

pytestmark = pytest.mark.timeout(900)


def test_prometheus_judges_canaries_and_has_every_dashboard_and_alert_series(
        cluster, operator, namespace, wait_until, redis_server, fake_lm, flaky_lm, runtimes, prometheus):
    # The canary's LM fails every call and is slow, so its shadow copies also pile up (dropped: busy).
    flaky_lm.reset(failure_rate=1.0, latency_ms=150)
    analysis = {"intervalSeconds": 10, "minRequests": 5, "maxErrorRate": 0.05, "failureLimit": 0,
                "inconclusiveLimit": 0, "prometheus": {"address": prometheus.base}}
    # Weight 0 first: the canary gets shadow copies of the stable revision's requests for 8 s.
    steps = [{"setWeight": 0}, {"pause": {"seconds": 8}}, {"setWeight": 50}, {"pause": {"seconds": 10}}]
    resource = canary(fake_lm, steps, analysis, budget={"dailyUsd": 100}, shadow={"samplePercent": 100, "maxConcurrent": 1})
    resource["spec"]["rollout"]["canary"]["shadow"] = True
    apply_yaml(cluster, namespace, [api_key_secret(), redis_secret(redis_server.url), resource])
    first = wait_phase(cluster, wait_until, namespace, "qa", "Healthy")
    stable = first["status"]["stableRevision"]
    pods = runtimes(namespace, "qa", 2)
    labels = {"namespace": namespace, "dspy_deployment": "qa"}
    prometheus.scrape({
        "dspy-operator": [(f"127.0.0.1:{operator.metrics_port}", {})],
        "dspy-runtime": [(f"127.0.0.1:{pod.port}", labels) for pod in pods],
    })

    with Traffic(pods).running():
        # Another model name: the runtime's breakers are per model, so a failing canary of the same
        # model would also open the stable revision's breaker (a known limit, see the README).
        patch_spec(cluster, namespace, "qa", {"lm": {"apiBase": flaky_lm.api_base, "model": "openai/fake-flaky"}})
        aborted = wait_until(lambda: (s := status(cluster, namespace)).get("abortedRevision") and s,
                             "the failing canary to be aborted", timeout=TIMEOUT)
        judged = aborted["lastAnalysis"]
        assert judged["source"] == "Prometheus" and judged["verdict"] == "Fail", judged
        assert judged["revision"] == aborted["abortedRevision"] and aborted["stableRevision"] == stable
        assert "errorRate 1 > 0.05" in judged["message"], judged
        assert judged["canary"]["requests"] >= 5 and judged["stable"]["errorRate"] == 0, judged
        degraded = condition(wait_phase(cluster, wait_until, namespace, "qa", "Degraded"), "Degraded")
        assert degraded["reason"] == "RolloutAborted" and "errorRate" in degraded["message"]

        patch_spec(cluster, namespace, "qa", {"lm": {"apiBase": fake_lm.api_base, "model": MODEL, "temperature": 0.5}})
        promoted = wait_until(lambda: (s := status(cluster, namespace)).get("stableRevision") not in (stable, None)
                              and not s.get("canaryRevision") and s, "the healthy canary to be promoted", timeout=TIMEOUT)
    judged = promoted["lastAnalysis"]
    assert judged["source"] == "Prometheus" and judged["verdict"] == "Pass", judged
    assert judged["revision"] == promoted["stableRevision"], judged
    assert {m["name"] for m in judged["measurements"]} == {"errorRate"} and judged["canary"]["errorRate"] == 0

    used = {name for _, expr in dashboard_exprs() + rule_exprs() for name in metric_names(expr)}
    assert len(used) >= 15

    def missing() -> set[str]:
        return {name for name in used if not prometheus.query(f'count({{__name__="{name}"}})')}

    try:
        wait_until(lambda: not missing(), "every dashboard and alert series to have data", timeout=60)
    except AssertionError:
        raise AssertionError(f"no data for {sorted(missing())}") from None
    # The runtime's series carry the labels the dashboard selects on, and its shadow figures saw both outcomes.
    assert prometheus.query(f'sum(dspy_predictions_total{{namespace="{namespace}", dspy_deployment="qa"}}) > 0')
    assert prometheus.query('sum(dspy_shadow_dropped_total{reason="busy"}) > 0')
    assert prometheus.query('sum(dspy_operator_rollout_events_total{reason="RolloutAborted"}) > 0')
