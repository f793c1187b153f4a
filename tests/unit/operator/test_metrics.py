"""The operator's own metrics: they move as the pass runs (the `world` fixture), the API client
counts its requests by verb and code, and `/metrics` answers over real HTTP."""

from __future__ import annotations

import json
import logging
import socket
import urllib.request
from typing import Any

import kopf
import pytest
from prometheus_client.parser import text_string_to_metric_families

from dspy_operator import api
from dspy_operator.errors import KubeApiError
from dspy_operator.handlers import lifecycle, startup
from dspy_operator.kube import KubeClient
from dspy_operator.metrics import OperatorMetrics
from dspy_operator.settings import DEFAULT_METRICS_PORT, OperatorSettings

EXTERNAL = {"mode": "External", "urlSecretRef": {"name": "redis-url"}}
PREFIX = "dspy:{demo/qa}:"


def value(metrics: OperatorMetrics, name: str, **labels: str) -> float:
    found = metrics.registry.get_sample_value(name, labels)
    return 0.0 if found is None else found


def canary(analysis: dict[str, Any] | None = None) -> dict[str, Any]:
    steps = [{"setWeight": 20}, {"pause": {"seconds": 60}}, {"setWeight": 50}, {"pause": {}}]
    return {"redis": EXTERNAL, "rollout": {"strategy": "Canary", "canary": {"steps": steps, **(
        {"analysis": analysis} if analysis else {})}}}


# --- settings ------------------------------------------------------------------------------------


def test_the_metrics_port_defaults_to_8081_and_0_turns_it_off():
    assert OperatorSettings.from_env({}).metrics_port == DEFAULT_METRICS_PORT == 8081
    assert OperatorSettings.from_env({"DSPY_OPERATOR_METRICS_PORT": "9100"}).metrics_port == 9100
    assert OperatorSettings.from_env({"DSPY_OPERATOR_METRICS_PORT": "0"}).metrics_port == 0


@pytest.mark.parametrize("bad", ["http", "-1", "65536"])
def test_a_bad_metrics_port_is_refused_with_the_fix(bad):
    with pytest.raises(ValueError, match="DSPY_OPERATOR_METRICS_PORT.*or 0 to turn the metrics exporter off"):
        OperatorSettings.from_env({"DSPY_OPERATOR_METRICS_PORT": bad})


# --- the pass ------------------------------------------------------------------------------------


def test_passes_are_counted_and_timed_by_result_and_resources_by_phase(world):
    metrics = world.context.metrics
    created = world.create({"redis": {"mode": "Disabled"}})
    world.sync(created)
    assert value(metrics, "dspy_operator_reconciles_total", result="ok") == 1
    assert value(metrics, "dspy_operator_reconcile_duration_seconds_count") == 1
    phase = world.status()["phase"]
    assert value(metrics, "dspy_operator_resources", phase=phase) == 1
    assert sum(value(metrics, "dspy_operator_resources", phase=p) for p in
               ("Pending", "Progressing", "Healthy", "Degraded", "Paused")) == 1

    world.settle()
    world.sync(world.edit_spec(paused=True))
    assert value(metrics, "dspy_operator_reconciles_total", result="ok") == 2
    assert value(metrics, "dspy_operator_resources", phase="Paused") == 1
    assert value(metrics, "dspy_operator_resources", phase=phase) == 0, "kept per resource: it moved, not added"

    lifecycle.forget(body=world.resource(), memo=kopf.Memo(context=world.context))
    assert value(metrics, "dspy_operator_resources", phase="Paused") == 0, "dropped on delete"


def test_a_spec_problem_a_conflict_and_an_api_error_each_count_as_their_result(world):
    metrics = world.context.metrics
    world.sync(world.create({"redis": {"mode": "Disabled"}, "lm": {"apiKeySecretRef": {"name": "missing", "key": "k"}}}))
    assert value(metrics, "dspy_operator_reconciles_total", result="spec_invalid") == 1

    world.kube.conflicts = 2
    with pytest.raises(kopf.TemporaryError):
        world.sync(world.edit_spec(lm={"apiKeySecretRef": {"name": "openai", "key": "api-key"}}))
    assert value(metrics, "dspy_operator_reconciles_total", result="conflict") == 1

    def refuse(*_: Any, **__: Any) -> None:
        raise KubeApiError(500, "Internal Server Error", "etcd is down")

    world.kube.patch_status = refuse  # type: ignore[method-assign]
    with pytest.raises(kopf.TemporaryError):
        world.sync()
    assert value(metrics, "dspy_operator_reconciles_total", result="error") == 1
    assert value(metrics, "dspy_operator_reconciles_total", result="ok") == 0
    assert value(metrics, "dspy_operator_reconcile_duration_seconds_count") == 3, "every pass is timed"


def test_rollout_events_are_counted_by_reason_as_the_canary_runs(world):
    metrics = world.context.metrics
    world.sync(world.create(canary()))
    world.settle()
    world.sync(world.edit_spec(lm={"temperature": 0.7}), after=10)
    assert value(metrics, "dspy_operator_rollout_events_total", reason="CanaryStarted") == 1
    world.settle()
    world.sync(after=60)
    assert value(metrics, "dspy_operator_rollout_events_total", reason="WeightChanged") >= 1
    world.settle()
    world.sync(world.annotate(api.ANNOTATION_REQUEST, json.dumps({"id": "r1", "action": "promote"})),
               fresh=False, after=5)
    assert value(metrics, "dspy_operator_rollout_events_total", reason="Promoted") == 1
    posted = {reason for verb, reason, _ in world.events}
    assert "Promoted" in posted
    assert value(metrics, "dspy_operator_rollout_events_total", reason="Applied") == 0, \
        "only the rollout machines' Events, not the pass's own (Applied, PhaseChanged)"


def test_analysis_verdicts_are_counted_once_each_and_a_failing_canary_aborts(world):
    metrics = world.context.metrics
    world.sync(world.create(canary({"intervalSeconds": 10, "minRequests": 5, "maxErrorRate": 0.05,
                                     "failureLimit": 0})))
    world.settle()
    stable = world.status()["stableRevision"]
    world.sync(world.edit_spec(lm={"temperature": 0.7}), after=10)
    world.settle()
    revision = world.status()["canaryRevision"]
    world.sync(after=11)  # an analysis is due; the canary served nothing yet
    assert value(metrics, "dspy_operator_analysis_verdicts_total", result="Inconclusive") == 1
    world.settle()
    world.sync(after=1)
    assert value(metrics, "dspy_operator_analysis_verdicts_total", result="Inconclusive") == 1, \
        "no new analysis, no new verdict"

    start = int(world.now.timestamp()) // 5 * 5
    world.bus.buckets[PREFIX] = {start + 5: {
        f"{revision}|default|requests": "100", f"{revision}|default|errors": "50", f"{revision}|default|lat:9": "100",
        f"{stable}|default|requests": "100", f"{stable}|default|lat:9": "100",
    }}
    world.settle()
    world.sync(after=16)
    assert value(metrics, "dspy_operator_analysis_verdicts_total", result="Fail") == 1, world.status().get("lastAnalysis")
    assert value(metrics, "dspy_operator_rollout_events_total", reason="RolloutAborted") == 1
    assert world.status()["phase"] == "Degraded"
    assert value(metrics, "dspy_operator_resources", phase="Degraded") == 1


# --- the API client ------------------------------------------------------------------------------


class Response:
    def __init__(self, status: int, body: dict[str, Any]) -> None:
        self.status, self.reason, self._body = status, "reason", json.dumps(body).encode()

    def read(self) -> bytes:
        return self._body


class ApiClient:
    """The two methods of `kubernetes.client.ApiClient` the client uses; answers by method."""

    def __init__(self, answers: dict[str, int]) -> None:
        self.answers = answers

    def param_serialize(self, method: str, path: str, **_: Any) -> tuple[Any, ...]:
        return method, path, {}, None, []

    def call_api(self, method: str, url: str, *_: Any) -> Response:
        if url.endswith("/unreachable"):
            raise ConnectionError("connection refused")
        return Response(self.answers[f"{method} {url}"], {"metadata": {"name": "x"}, "resources": []})


def test_the_api_client_counts_each_request_by_verb_and_code():
    metrics = OperatorMetrics()
    deployment = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"namespace": "d", "name": "qa"}}
    kube = KubeClient(ApiClient({  # type: ignore[arg-type]
        "GET /api/v1/namespaces/d/secrets/s": 200, "GET /api/v1/namespaces/d/secrets/gone": 404,
        "GET /apis/dspy.dev/v1alpha1": 200, "PATCH /apis/apps/v1/namespaces/d/deployments/qa": 200,
        "POST /apis/apps/v1/namespaces/d/deployments": 409,
        "DELETE /apis/apps/v1/namespaces/d/deployments/qa": 404,
        "PATCH /apis/dspy.dev/v1alpha1/namespaces/d/dspydeployments/qa/status": 409,
    }), metrics)
    kube.get("Secret", "d", "s")
    assert kube.get("Secret", "d", "gone") is None
    kube.served_resources(api.API_VERSION)
    kube.apply(deployment, "m")
    with pytest.raises(KubeApiError):
        kube.create(deployment, "m")
    kube.delete("Deployment", "d", "qa")
    with pytest.raises(KubeApiError):
        kube.patch_status("d", "qa", {}, resource_version="1")
    with pytest.raises(ConnectionError):
        kube.get("Secret", "d", "unreachable")
    counted = {(s.labels["verb"], s.labels["code"]): s.value
               for family in metrics.registry.collect() if family.name == "dspy_operator_api_requests"
               for s in family.samples if s.name.endswith("_total")}
    assert counted == {("get", "200"): 1, ("get", "404"): 1, ("list", "200"): 1, ("apply", "200"): 1,
                       ("create", "409"): 1, ("delete", "404"): 1, ("patch_status", "409"): 1,
                       ("get", "none"): 1}


# --- the exporter --------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        assert response.status == 200
        return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
                for family in text_string_to_metric_families(response.read().decode()) for sample in family.samples}


def test_startup_serves_metrics_on_the_settings_port_over_http_and_cleanup_stops_it(monkeypatch):
    class Kube:
        def served_resources(self, api_version: str) -> frozenset[str]:
            return frozenset({api.PLURAL})

        def get(self, kind: str, namespace: str, name: str) -> None:
            return None

    port = free_port()
    monkeypatch.setenv("DSPY_OPERATOR_METRICS_PORT", str(port))
    monkeypatch.setattr(startup, "load_api_client", lambda: None)
    monkeypatch.setattr(startup, "KubeClient", lambda _client, _metrics: Kube())
    memo = kopf.Memo()
    startup.configure(settings=kopf.OperatorSettings(), memo=memo, logger=logging.getLogger("t"))
    try:
        memo.context.metrics.reconciles_total.labels("ok").inc()
        samples = scrape(port)
        assert samples["dspy_operator_reconciles_total", (("result", "ok"),)] == 1
        assert samples["dspy_operator_reconciles_total", (("result", "error"),)] == 0
        assert samples["dspy_operator_resources", (("phase", "Healthy"),)] == 0
        assert samples["dspy_operator_reconcile_duration_seconds_count", ()] == 0
    finally:
        startup.close_connections(memo=memo)
    with pytest.raises(OSError):
        scrape(port)


def test_port_0_starts_no_exporter(monkeypatch):
    monkeypatch.setenv("DSPY_OPERATOR_METRICS_PORT", "0")
    monkeypatch.setattr(startup, "load_api_client", lambda: None)
    monkeypatch.setattr(startup, "KubeClient", lambda _client, _metrics: type("Kube", (), {
        "served_resources": lambda self, v: frozenset({api.PLURAL}), "get": lambda self, *a: None})())
    served: list[int] = []
    monkeypatch.setattr(OperatorMetrics, "serve", lambda self, port, address="0.0.0.0": served.append(port))
    startup.configure(settings=kopf.OperatorSettings(), memo=kopf.Memo(), logger=logging.getLogger("t"))
    assert served == []


def test_every_rollout_reason_in_the_source_is_exported_from_the_start():
    """A counter child that appears at 1 has no 0 before it, and `increase()` misses the first
    abort: each reason the rollout machines can post is created at 0."""
    import re
    from pathlib import Path

    import dspy_operator
    from dspy_operator.metrics import ROLLOUT_REASONS

    source = "\n".join(path.read_text() for path in Path(dspy_operator.__file__).parent.rglob("*.py"))
    posted = set(re.findall(r'Event\("([A-Za-z]+)"', source)) | set(re.findall(r'else "([A-Za-z]+)", f"', source))
    assert "RequestRejected" in posted and "RolloutAborted" in posted
    assert posted == set(ROLLOUT_REASONS)
    metrics = OperatorMetrics()
    assert metrics.registry.get_sample_value("dspy_operator_rollout_events_total", {"reason": "RolloutAborted"}) == 0.0
    assert metrics.registry.get_sample_value("dspy_operator_analysis_verdicts_total", {"result": "Fail"}) == 0.0


def test_a_metrics_port_taken_stops_the_operator_with_the_fix(monkeypatch):
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        monkeypatch.setenv("DSPY_OPERATOR_METRICS_PORT", str(taken.getsockname()[1]))
        monkeypatch.setattr(startup, "load_api_client", lambda: None)
        monkeypatch.setattr(startup, "KubeClient", lambda _client, _metrics: type("Kube", (), {
            "served_resources": lambda self, v: frozenset({api.PLURAL}), "get": lambda self, *a: None})())
        with pytest.raises(kopf.PermanentError, match="set DSPY_OPERATOR_METRICS_PORT to a free port, or 0"):
            startup.configure(settings=kopf.OperatorSettings(), memo=kopf.Memo(), logger=logging.getLogger("t"))
