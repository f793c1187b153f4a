"""The DSPyDeployment CRD on a real API server.

What only a real API server can prove: the CRD is accepted (structural, CEL rules
compile and fit the cost budget) and becomes Established; every CEL rule refuses
the object it is written for, naming the field; every example is accepted with
strict field validation (an unknown field, which pruning would drop silently, is an
error); defaults are applied as the unit tests expect; and the scale and status
subresources work.

Objects are created with server-side dry-run wherever a real write is not needed.
No operator runs here: this is the API alone.
"""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import yaml
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

if TYPE_CHECKING:  # conftest is loaded by pytest, not imported
    from conftest import Cluster

REPO = Path(__file__).resolve().parents[2]
CRD_PATH = REPO / "crds" / "dspy.dev_dspydeployments.yaml"
EXAMPLES = sorted((REPO / "examples").glob("*.yaml"))
CRD_NAME = "dspydeployments.dspy.dev"
GROUP, VERSION, PLURAL = "dspy.dev", "v1alpha1", "dspydeployments"


def poll(predicate: Any, what: str, timeout: float = 120) -> Any:
    """Call `predicate` until it returns something truthy; errors count as "not yet".
    (The conftest's `wait_until` fixture is function-scoped; the CRD is module-scoped.)"""
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = predicate()
            if result:
                return result
            last: Exception | None = None
        except AssertionError:
            raise
        except Exception as exc:  # noqa: BLE001 - reported on timeout
            last = exc
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}; last error: {last!r}")
        time.sleep(0.25)


@pytest.fixture(scope="module")
def crd(cluster: Cluster) -> dict[str, Any]:
    """Apply the CRD (server-side apply: idempotent, shared with other suites) and wait
    until it is Established and its resource answers a list."""
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD_PATH))
    ext = k8s.ApiextensionsV1Api(cluster.api_client)

    def established() -> dict[str, Any] | None:
        obj = ext.read_custom_resource_definition(CRD_NAME)
        conditions = {c.type: c for c in (obj.status.conditions or [])}
        if "NamesAccepted" in conditions and conditions["NamesAccepted"].status != "True":
            raise AssertionError(f"names not accepted: {conditions['NamesAccepted'].message}")
        ok = conditions.get("Established")
        return cluster.api_client.sanitize_for_serialization(obj) if ok and ok.status == "True" else None

    obj = poll(established, f"CRD {CRD_NAME} Established")
    # Right after creation a list may answer 429 "storage is (re)initializing".
    custom = k8s.CustomObjectsApi(cluster.api_client)
    poll(lambda: custom.list_cluster_custom_object(GROUP, VERSION, PLURAL) is not None,
               "the dspydeployments resource to be served")
    return obj


@pytest.fixture
def custom(cluster: Cluster, crd: dict[str, Any]) -> k8s.CustomObjectsApi:
    return k8s.CustomObjectsApi(cluster.api_client)


def minimal(name: str = "qa", **spec: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "program": {"signature": "question -> answer"},
        "lm": {"model": "openai/fake-model", "apiBase": "http://127.0.0.1:18080/v1"},
    }
    base.update(spec)
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "DSPyDeployment",
        "metadata": {"name": name},
        "spec": base,
    }


def rejection(custom: k8s.CustomObjectsApi, namespace: str, body: dict[str, Any]) -> list[dict[str, str]]:
    """Create `body` with server-side dry-run; return the API server's causes (422)."""
    try:
        custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body, dry_run="All")
    except ApiException as exc:
        assert exc.status == 422, f"expected 422 Invalid, got {exc.status}: {exc.body}"
        status = json.loads(exc.body)
        return status.get("details", {}).get("causes", []) or [{"field": "", "message": status["message"]}]
    raise AssertionError(f"the API server accepted {json.dumps(body['spec'])}")


def test_crd_is_established_with_its_names(crd: dict[str, Any]) -> None:
    names = crd["status"]["acceptedNames"]
    assert names["kind"] == "DSPyDeployment"
    assert names["shortNames"] == ["dspy"]
    assert crd["status"]["storedVersions"] == ["v1alpha1"]


def test_the_crd_has_no_cel_cost_or_structural_warnings(cluster: Cluster, crd: dict[str, Any]) -> None:
    """A server-side dry-run of the CRD itself succeeds without warnings (an over-budget
    rule or a non-structural schema would fail it; both are checked at create and update)."""
    proc = cluster.kubectl("apply", "--server-side", "--force-conflicts", "--dry-run=server",
                           "-f", str(CRD_PATH))
    assert "Warning" not in proc.stderr, proc.stderr


# Each case: what to change in a valid spec (or metadata), the field the API server
# must name, and a fragment of the rule's message.
CEL_CASES: list[tuple[str, dict[str, Any], str, str]] = [
    (
        "variant weights must sum to 100",
        {"variants": [{"name": "a", "weight": 60}, {"name": "b", "weight": 30}]},
        "spec.variants",
        "must sum to 100",
    ),
    (
        "a fallback that repeats the primary model",
        {"lm": {"model": "openai/gpt-4o-mini", "fallbacks": [{"model": "openai/gpt-4o-mini"}]}},
        "spec.lm.fallbacks",
        "must not repeat lm.model",
    ),
    (
        "autoscaling min above max",
        {"autoscaling": {"minReplicas": 5, "maxReplicas": 3}},
        "spec.autoscaling.minReplicas",
        "minReplicas must be less than or equal to",
    ),
    (
        "autoscaling without a CPU request",
        {"autoscaling": {"maxReplicas": 3}, "runtime": {"resources": {"requests": {"memory": "1Gi"}}}},
        "spec.autoscaling",
        "needs a CPU request",
    ),
    (
        "External Redis without a URL Secret",
        {"redis": {"mode": "External"}},
        "spec.redis.urlSecretRef",
        "required when redis.mode is External",
    ),
    (
        "a URL Secret with Managed Redis",
        {"redis": {"mode": "Managed", "urlSecretRef": {"name": "redis-url"}}},
        "spec.redis.urlSecretRef",
        "only allowed when redis.mode is External",
    ),
    (
        "a URL Secret with Redis disabled (the default mode)",
        {"redis": {"urlSecretRef": {"name": "redis-url"}}},
        "spec.redis.urlSecretRef",
        "only allowed when redis.mode is External",
    ),
    (
        "managed Redis settings without mode Managed",
        {"redis": {"mode": "Disabled", "managed": {"maxMemoryMegabytes": 64}}},
        "spec.redis.managed",
        "only allowed when redis.mode is Managed",
    ),
    (
        "strategy Canary without a canary section",
        {"rollout": {"strategy": "Canary"}},
        "spec.rollout.canary",
        "required when rollout.strategy is Canary",
    ),
    (
        "a canary section under RollingUpdate",
        {"rollout": {"canary": {"steps": [{"setWeight": 10}]}}},
        "spec.rollout.canary",
        "only allowed when rollout.strategy is Canary",
    ),
    (
        "a blueGreen section under Canary",
        {"rollout": {"strategy": "Canary", "canary": {"steps": [{"setWeight": 10}]},
                     "blueGreen": {"previewReplicas": 1}}},
        "spec.rollout.blueGreen",
        "only allowed when rollout.strategy is BlueGreen",
    ),
    (
        "a canary step with both setWeight and pause",
        {"rollout": {"strategy": "Canary",
                     "canary": {"steps": [{"setWeight": 10}, {"setWeight": 20, "pause": {}}]}}},
        "spec.rollout.canary.steps[1]",
        "exactly one of setWeight and pause",
    ),
    (
        "an empty canary step",
        {"rollout": {"strategy": "Canary", "canary": {"steps": [{}]}}},
        "spec.rollout.canary.steps[0]",
        "exactly one of setWeight and pause",
    ),
    (
        "canary analysis without a Redis to read the pods' figures from",
        {"rollout": {"strategy": "Canary", "canary": {"steps": [{"setWeight": 10}], "analysis": {"minRequests": 5}}},
         "redis": {"mode": "Disabled"}},
        "spec.rollout.canary.analysis",
        "canary analysis reads the runtime pods' figures from Redis",
    ),
    (
        "a Prometheus-read canary analysis with an evaluation gate, which always runs through Redis",
        {"rollout": {"strategy": "Canary", "canary": {"steps": [{"setWeight": 10}], "analysis": {
            "prometheus": {"address": "http://prometheus:9090"},
            "evaluation": {"configMapRef": {"name": "dev"}, "metric": "F1", "minScore": 0.5}}}},
         "redis": {"mode": "Disabled"}},
        "spec.rollout.canary.analysis",
        "its evaluation gate always runs through Redis",
    ),
    (
        "a Prometheus address that is not an http(s) URL",
        {"rollout": {"strategy": "Canary", "canary": {"steps": [{"setWeight": 10}], "analysis": {
            "prometheus": {"address": "prometheus:9090"}}}}},
        "spec.rollout.canary.analysis.prometheus.address",
        "should match",
    ),
    (
        "an evaluation gate with nothing to judge by",
        {"rollout": {"strategy": "Canary", "canary": {"steps": [{"setWeight": 10}], "analysis": {
            "evaluation": {"configMapRef": {"name": "dev"}, "metric": "F1"}}}},
         "redis": {"mode": "External", "urlSecretRef": {"name": "r"}}},
        "spec.rollout.canary.analysis.evaluation",
        "evaluation needs minScore, maxRegression or both",
    ),
    (
        "a global rate limit without a Redis for its buckets",
        {"rateLimit": {"requestsPerSecond": 5, "scope": "global"}, "redis": {"mode": "Disabled"}},
        "spec.rateLimit.scope",
        "a global rate limit keeps its buckets in Redis",
    ),
    (
        "blue/green analysis without a Redis to read the pods' figures from",
        {"rollout": {"strategy": "BlueGreen", "blueGreen": {"analysis": {"minRequests": 5}}},
         "redis": {"mode": "Disabled"}},
        "spec.rollout.blueGreen.analysis",
        "blue/green analysis reads the runtime pods' figures from Redis",
    ),
    (
        "a blue/green evaluation gate with nothing to judge by (the same schema as the canary's)",
        {"rollout": {"strategy": "BlueGreen", "blueGreen": {"analysis": {
            "evaluation": {"configMapRef": {"name": "dev"}, "metric": "F1"}}}},
         "redis": {"mode": "External", "urlSecretRef": {"name": "r"}}},
        "spec.rollout.blueGreen.analysis.evaluation",
        "evaluation needs minScore, maxRegression or both",
    ),
    (
        "a shadow variant with live weight",
        {"variants": [{"name": "a", "weight": 50}, {"name": "b", "weight": 50, "shadow": True}]},
        "spec.variants[1].weight",
        "a variant with shadow true must have weight 0",
    ),
    (
        "an env entry with value and valueFrom",
        {"runtime": {"env": [{"name": "A", "value": "x",
                              "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]}},
        "spec.runtime.env[0]",
        "value or valueFrom, not both",
    ),
    (
        "valueFrom with both sources",
        {"runtime": {"env": [{"name": "A", "valueFrom": {
            "secretKeyRef": {"name": "s", "key": "k"}, "configMapKeyRef": {"name": "c", "key": "k"}}}]}},
        "spec.runtime.env[0].valueFrom",
        "exactly one of secretKeyRef and configMapKeyRef",
    ),
]


@pytest.mark.parametrize(("case", "spec", "field", "message"), CEL_CASES, ids=[c[0] for c in CEL_CASES])
def test_cel_rule_rejects(
    custom: k8s.CustomObjectsApi, namespace: str, case: str, spec: dict[str, Any], field: str, message: str
) -> None:
    causes = rejection(custom, namespace, minimal(**spec))
    matching = [c for c in causes if message in c.get("message", "")]
    assert matching, f"{case}: no cause says {message!r}: {causes}"
    assert any(c.get("field") == field for c in matching), f"{case}: expected field {field}: {causes}"


@pytest.mark.parametrize("name", ["a" * 46, "1qa", "qa.v2"])
def test_metadata_name_rule_rejects(custom: k8s.CustomObjectsApi, namespace: str, name: str) -> None:
    causes = rejection(custom, namespace, minimal(name=name))
    # "qa.v2" is a valid object name in general, so only our rule can refuse it.
    assert any(c.get("field") == "metadata.name" and "DNS-1035" in c.get("message", "") for c in causes), causes


def test_duplicate_variant_names_are_refused_by_the_list_map(
    custom: k8s.CustomObjectsApi, namespace: str
) -> None:
    causes = rejection(custom, namespace, minimal(variants=[{"name": "a", "weight": 50},
                                                             {"name": "a", "weight": 50}]))
    assert any(c.get("field") == "spec.variants[1]" and c.get("reason") == "FieldValueDuplicate"
               for c in causes), causes


def test_duplicate_fallback_models_are_refused_by_the_list_map(
    custom: k8s.CustomObjectsApi, namespace: str
) -> None:
    causes = rejection(custom, namespace, minimal(lm={"model": "m", "fallbacks": [{"model": "f"},
                                                                                   {"model": "f"}]}))
    assert any(c.get("field") == "spec.lm.fallbacks[1]" and c.get("reason") == "FieldValueDuplicate"
               for c in causes), causes


def test_variant_weights_of_100_and_every_strategy_are_accepted(
    custom: k8s.CustomObjectsApi, namespace: str
) -> None:
    good = [
        minimal(variants=[{"name": "a", "weight": 100}]),
        minimal(variants=[{"name": "a", "weight": 0}, {"name": "b", "weight": 55}, {"name": "c", "weight": 45}]),
        minimal(rollout={"strategy": "Canary", "canary": {"steps": [{"setWeight": 10}, {"pause": {}}]}}),
        minimal(rollout={"strategy": "Canary", "canary": {"steps": [{"setWeight": 10}], "analysis": {
            "relative": {"maxErrorRateRatio": 2}, "inconclusiveLimit": 0,
            "evaluation": {"configMapRef": {"name": "dev"}, "metric": "Contains", "maxRegression": 0.1}}}},
                redis={"mode": "Managed"}),
        # Figures from the user's Prometheus need no Redis.
        minimal(rollout={"strategy": "Canary", "canary": {"steps": [{"setWeight": 10}], "analysis": {
            "prometheus": {"address": "http://prometheus.monitoring:9090", "queries": {"requests": "sum(x)"}}}}},
                redis={"mode": "Disabled"}),
        minimal(rollout={"strategy": "BlueGreen", "blueGreen": {"analysis": {
            "prometheus": {"address": "https://prom.example.com/api/prom"}}}}, redis={"mode": "Disabled"}),
        minimal(rollout={"strategy": "BlueGreen"}),
        minimal(rollout={"strategy": "BlueGreen", "blueGreen": {"autoPromotionEnabled": False}}),
        minimal(redis={"mode": "External", "urlSecretRef": {"name": "redis-url"}}),
        minimal(redis={"mode": "Managed", "managed": {}}),
        minimal(autoscaling={"minReplicas": 3, "maxReplicas": 3}),  # the default CPU request
        minimal(autoscaling={"maxReplicas": 3}, runtime={"resources": {"limits": {"cpu": "1"}}}),
        minimal(name="a" * 45),
    ]
    for body in good:
        custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body, dry_run="All")


def test_schema_errors_name_the_field_too(custom: k8s.CustomObjectsApi, namespace: str) -> None:
    causes = rejection(custom, namespace, minimal(lm={"model": "m", "temperature": 5}))
    assert any(c.get("field") == "spec.lm.temperature" for c in causes), causes
    causes = rejection(custom, namespace, minimal(program={"module": "ChainOfThought"}))
    assert any(c.get("field") == "spec.program.signature" for c in causes), causes


def test_every_example_is_accepted_with_strict_field_validation(
    cluster: Cluster, crd: dict[str, Any], namespace: str
) -> None:
    proc = cluster.kubectl("apply", "--dry-run=server", "--validate=strict", "-n", namespace,
                           "-f", str(REPO / "examples"))
    created = [line for line in proc.stdout.splitlines() if "dspydeployment.dspy.dev/" in line]
    expected = sum(
        1 for path in EXAMPLES for doc in yaml.safe_load_all(path.read_text())
        if doc and doc["kind"] == "DSPyDeployment"
    )
    assert len(created) == expected, proc.stdout
    assert "Warning" not in proc.stderr, proc.stderr


def test_unknown_fields_are_refused_under_strict_validation(
    cluster: Cluster, crd: dict[str, Any], namespace: str
) -> None:
    """A literal key field (`apiKey`) does not exist: strict validation says so,
    and without it the field would be pruned, never stored."""
    body = minimal()
    body["spec"]["lm"]["apiKey"] = "sk-dummy"
    proc = cluster.kubectl("apply", "--dry-run=server", "--validate=strict", "-n", namespace, "-f", "-",
                           input=yaml.safe_dump(body), check=False)
    assert proc.returncode != 0
    assert 'unknown field "spec.lm.apiKey"' in proc.stderr, proc.stderr


EXPECTED_DEFAULTED_SPEC = {
    "program": {"signature": "question -> answer", "module": "Predict"},
    "lm": {"model": "openai/fake-model", "apiBase": "http://127.0.0.1:18080/v1",
           "temperature": 0, "maxTokens": 512, "timeoutSeconds": 30},
    "replicas": 1,
    "revisionHistoryLimit": 10,
    "rollout": {"strategy": "RollingUpdate"},
    "shadow": {"samplePercent": 10, "maxConcurrent": 4},
    "cache": {"enabled": True, "allowBypass": False, "memory": {"maxEntries": 10000, "ttlSeconds": 300},
              "redis": {"ttlSeconds": 3600, "jitterSeconds": 300}},
    "redis": {"mode": "Disabled"},
    "circuitBreaker": {"failureThreshold": 5, "successThreshold": 2, "openSeconds": 60},
    "runtime": {"imagePullPolicy": "IfNotPresent",
                "port": 8080, "logLevel": "INFO", "logFormat": "json",
                "resources": {"requests": {"cpu": "250m", "memory": "512Mi"}}},
    "paused": False,
}


def test_defaults_are_applied_by_the_api_server(custom: k8s.CustomObjectsApi, namespace: str) -> None:
    created = custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, minimal(),
                                                     dry_run="All")
    assert created["spec"] == EXPECTED_DEFAULTED_SPEC


def test_scale_and_status_subresources(
    cluster: Cluster, custom: k8s.CustomObjectsApi, namespace: str
) -> None:
    custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, minimal(replicas=2))
    # The status subresource: status is written apart from spec, and validated.
    status = {"status": {
        "phase": "Healthy", "observedGeneration": 1, "replicas": 2, "readyReplicas": 2,
        "readySummary": "2/2", "selector": "dspy.dev/deployment=qa,app.kubernetes.io/component=runtime",
        "stableRevision": "abc123", "activeColor": "blue", "canaryWeight": 0,
        "conditions": [{"type": "Ready", "status": "True", "reason": "AllReplicasReady",
                        "message": "2/2 ready", "lastTransitionTime": "2026-01-01T00:00:00Z",
                        "observedGeneration": 1}],
        "lastAnalysis": {"time": "2026-01-01T00:00:00Z", "variant": "", "requests": 60,
                         "errorRate": 0.0, "p95LatencySeconds": 0.8, "verdict": "Pass"},
    }}
    after = custom.patch_namespaced_custom_object_status(GROUP, VERSION, namespace, PLURAL, "qa", status)
    assert after["status"] == status["status"], "a status field was pruned: the schema lacks it"
    assert after["spec"]["replicas"] == 2

    # The scale subresource reads replicas and the selector from where the CRD says.
    scale = custom.get_namespaced_custom_object_scale(GROUP, VERSION, namespace, PLURAL, "qa")
    assert scale["spec"]["replicas"] == 2
    assert scale["status"]["replicas"] == 2
    assert scale["status"]["selector"] == status["status"]["selector"]
    cluster.kubectl("scale", "-n", namespace, "dspydeployment/qa", "--replicas=4")
    got = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "qa")
    assert got["spec"]["replicas"] == 4

    # A status outside the schema's enums is refused.
    bad = copy.deepcopy(status)
    bad["status"]["phase"] = "Exploded"
    with pytest.raises(ApiException) as err:
        custom.patch_namespaced_custom_object_status(GROUP, VERSION, namespace, PLURAL, "qa", bad)
    assert err.value.status == 422

    # Printer columns, by the short name.
    table = cluster.kubectl("get", "dspy", "-n", namespace, "-o", "wide").stdout.splitlines()
    assert table[0].split() == ["NAME", "PHASE", "READY", "STRATEGY", "CANARY", "ACTIVE", "MODEL",
                                "REVISION", "AGE"]
    assert table[1].split()[:8] == ["qa", "Healthy", "2/2", "RollingUpdate", "0", "blue",
                                    "openai/fake-model", "abc123"]


def test_kubectl_explain_shows_the_descriptions(cluster: Cluster, crd: dict[str, Any]) -> None:
    """The schema's descriptions are what `kubectl explain` prints (published OpenAPI v3)."""
    def explain(path: str) -> str:
        return poll(lambda: cluster.kubectl("explain", path).stdout, f"kubectl explain {path}")

    lm = explain("dspydeployment.spec.lm")
    for field in ("model", "apiBase", "apiKeySecretRef", "temperature", "maxTokens", "fallbacks", "pricing"):
        assert field in lm, field
    assert "never appears in the resource" in " ".join(lm.split())
    mode = " ".join(explain("dspy.spec.redis.mode").split())
    assert "Defaults to Disabled" in mode
