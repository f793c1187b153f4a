"""The DSPyDeployment CRD, checked without a cluster.

What a file can prove: the YAML is a structural schema the API server will accept
(types and descriptions everywhere, bounded lists and strings for CEL's cost
estimate, list-map keys that are required), the defaults are the documented ones
and each is valid against its own field, the enums are what the runtime accepts,
and every example validates against the OpenAPI schema. ``jsonschema`` ignores the
``x-kubernetes-*`` extensions, so CEL rules are *not* evaluated here: the e2e test
``tests/e2e/test_crd_validation.py`` proves them on a real API server.
"""

from __future__ import annotations

import ast
import copy
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

REPO = Path(__file__).resolve().parents[3]
CRD_PATH = REPO / "crds" / "dspy.dev_dspydeployments.yaml"
EXAMPLES = sorted((REPO / "examples").glob("*.yaml"))
RUNTIME_SETTINGS = REPO / "runtime" / "dspy_runtime" / "settings.py"

Schema = dict[str, Any]


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------


def load_crd() -> dict[str, Any]:
    return yaml.safe_load(CRD_PATH.read_text())


def root_schema() -> Schema:
    return load_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def walk(node: Schema, path: str = "") -> Iterator[tuple[str, Schema]]:
    """Every schema node with its path: `.spec.lm.model`, `[]` for items, `.*` for map values."""
    yield path, node
    for name, child in node.get("properties", {}).items():
        yield from walk(child, f"{path}.{name}")
    if isinstance(node.get("additionalProperties"), dict):
        yield from walk(node["additionalProperties"], f"{path}.*")
    if "items" in node:
        yield from walk(node["items"], f"{path}[]")


def node_at(path: str) -> Schema:
    """The schema node at a dotted path like `spec.lm.model` (`[]` steps into items)."""
    node = root_schema()
    for part in re.findall(r"[^.\[\]]+|\[\]", path):
        node = node["items"] if part == "[]" else node["properties"][part]
    return node


def apply_defaults(schema: Schema, value: Any) -> Any:
    """Defaulting as the API server does it: a missing property with a `default` gets it
    (then is defaulted itself); properties of objects that are absent get nothing."""
    if isinstance(value, dict):
        out = dict(value)
        for name, child in schema.get("properties", {}).items():
            if name not in out and "default" in child:
                out[name] = copy.deepcopy(child["default"])
            if name in out:
                out[name] = apply_defaults(child, out[name])
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            for name in set(out) - set(schema.get("properties", {})):
                out[name] = apply_defaults(extra, out[name])
        return out
    if isinstance(value, list) and "items" in schema:
        return [apply_defaults(schema["items"], item) for item in value]
    return value


def validator(schema: Schema | None = None) -> jsonschema.Draft4Validator:
    # Draft 4 is the JSON Schema dialect of OpenAPI v3.0 (boolean exclusiveMinimum).
    return jsonschema.Draft4Validator(schema or root_schema())


def errors_for(obj: dict[str, Any]) -> list[str]:
    return [
        f"{'.'.join(str(p) for p in err.absolute_path)}: {err.message}"
        for err in validator().iter_errors(obj)
    ]


def example_docs() -> Iterator[tuple[str, dict[str, Any]]]:
    for path in EXAMPLES:
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                yield path.name, doc


def dspy_examples() -> list[tuple[str, dict[str, Any]]]:
    return [(name, doc) for name, doc in example_docs() if doc["kind"] == "DSPyDeployment"]


def minimal(**spec: Any) -> dict[str, Any]:
    """A valid DSPyDeployment, with `spec` keys replaced by the arguments."""
    base = {
        "program": {"signature": "question -> answer"},
        "lm": {"model": "openai/fake-model"},
    }
    base.update(spec)
    return {
        "apiVersion": "dspy.dev/v1alpha1",
        "kind": "DSPyDeployment",
        "metadata": {"name": "qa"},
        "spec": base,
    }


# ---------------------------------------------------------------------------
# the CustomResourceDefinition itself
# ---------------------------------------------------------------------------


def test_crd_identity_matches_the_design() -> None:
    crd = load_crd()
    assert crd["apiVersion"] == "apiextensions.k8s.io/v1"
    assert crd["kind"] == "CustomResourceDefinition"
    assert crd["metadata"]["name"] == "dspydeployments.dspy.dev"
    spec = crd["spec"]
    assert spec["group"] == "dspy.dev"
    assert spec["scope"] == "Namespaced"
    assert spec["names"] == {
        "kind": "DSPyDeployment",
        "listKind": "DSPyDeploymentList",
        "plural": "dspydeployments",
        "singular": "dspydeployment",
        "shortNames": ["dspy"],
        "categories": ["dspy"],
    }
    (version,) = spec["versions"]
    assert (version["name"], version["served"], version["storage"]) == ("v1alpha1", True, True)


def test_crd_fits_client_side_apply() -> None:
    """`kubectl apply` (client-side) stores the whole object in an annotation limited to
    256 KiB; stay well under it so neither kubectl nor Helm needs server-side apply."""
    assert len(json.dumps(load_crd())) < 128 * 1024


def test_status_and_scale_subresources() -> None:
    sub = load_crd()["spec"]["versions"][0]["subresources"]
    assert sub["status"] == {}
    assert sub["scale"] == {
        "specReplicasPath": ".spec.replicas",
        "statusReplicasPath": ".status.replicas",
        "labelSelectorPath": ".status.selector",
    }
    # The scale paths must point at fields of the right type.
    assert node_at("spec.replicas")["type"] == "integer"
    assert node_at("status.replicas")["type"] == "integer"
    assert node_at("status.selector")["type"] == "string"


def test_printer_columns_point_at_existing_fields() -> None:
    columns = load_crd()["spec"]["versions"][0]["additionalPrinterColumns"]
    names = [c["name"] for c in columns]
    assert names[:5] == ["Phase", "Ready", "Strategy", "Canary", "Active"]
    assert names[-1] == "Age"
    types = {"string": "string", "integer": "integer", "number": "number", "boolean": "boolean"}
    for column in columns:
        path = column["jsonPath"]
        if path == ".metadata.creationTimestamp":
            assert column["type"] == "date"
            continue
        node = node_at(path.lstrip("."))
        assert types[node["type"]] == column["type"], column


# ---------------------------------------------------------------------------
# structural schema
# ---------------------------------------------------------------------------


def test_every_node_has_a_type() -> None:
    missing = [
        path or "<root>"
        for path, node in walk(root_schema())
        if "type" not in node and not node.get("x-kubernetes-int-or-string")
    ]
    assert not missing, f"schema nodes without a type: {missing}"


def test_every_node_has_a_useful_description() -> None:
    # The API server forbids anything but `type` and `properties.name` on metadata.
    missing = [
        path or "<root>"
        for path, node in walk(root_schema())
        if not node.get("description") and path != ".metadata"
    ]
    assert not missing, f"schema nodes without a description (kubectl explain shows nothing): {missing}"
    short = [
        path
        for path, node in walk(root_schema())
        if len(node.get("description", "")) < 8 and path != ".metadata"
    ]
    assert not short, f"descriptions too short to help anyone: {short}"


def test_structural_rules() -> None:
    """The parts of Kubernetes' structural-schema rules a file can check."""
    problems = []
    for path, node in walk(root_schema()):
        if "properties" in node and isinstance(node.get("additionalProperties"), dict):
            problems.append(f"{path}: properties and additionalProperties together")
        if node.get("x-kubernetes-int-or-string"):
            if node.get("anyOf") != [{"type": "integer"}, {"type": "string"}]:
                problems.append(f"{path}: int-or-string needs anyOf [integer, string]")
        elif "anyOf" in node or "oneOf" in node or "allOf" in node:
            problems.append(f"{path}: logical junctors are not used in this schema")
        if node.get("type") == "array" and "items" not in node:
            problems.append(f"{path}: array without items")
        if "default" in node and "nullable" in node:
            problems.append(f"{path}: nullable with a default")
    assert not problems, problems


def test_metadata_declares_only_the_name() -> None:
    """Kubernetes refuses a CRD whose metadata schema says more than name/generateName."""
    meta = node_at("metadata")
    assert set(meta) == {"type", "properties"}
    assert set(meta["properties"]) == {"name"}


def test_unknown_fields_are_preserved_only_for_kubernetes_passthrough_types() -> None:
    preserved = [p for p, n in walk(root_schema()) if n.get("x-kubernetes-preserve-unknown-fields")]
    assert preserved == [".spec.runtime.tolerations[]"]


def test_spec_lists_strings_and_maps_are_bounded_for_the_cel_cost_estimate() -> None:
    """Unbounded lists and strings make the API server estimate CEL costs for the
    largest possible request, and refuse the CRD. Every spec field is bounded."""
    unbounded = []
    for path, node in walk(node_at("spec"), ".spec"):
        kind = node.get("type")
        if kind == "array" and "maxItems" not in node:
            unbounded.append(path)
        if kind == "string" and "maxLength" not in node and "enum" not in node:
            unbounded.append(path)
        if kind == "object" and isinstance(node.get("additionalProperties"), dict):
            if "maxProperties" not in node:
                unbounded.append(path)
    assert not unbounded, f"unbounded spec fields: {unbounded}"


def test_list_map_keys_are_required() -> None:
    for path, node in walk(root_schema()):
        if node.get("x-kubernetes-list-type") == "map":
            keys = node["x-kubernetes-list-map-keys"]
            required = set(node["items"].get("required", []))
            assert set(keys) <= required, f"{path}: list-map keys {keys} must be required"


def test_unique_names_are_list_map_keys() -> None:
    assert node_at("spec.variants")["x-kubernetes-list-map-keys"] == ["name"]
    assert node_at("spec.lm.fallbacks")["x-kubernetes-list-map-keys"] == ["model"]
    assert node_at("spec.runtime.env")["x-kubernetes-list-map-keys"] == ["name"]
    assert node_at("status.conditions")["x-kubernetes-list-map-keys"] == ["type"]


REASONS = {"FieldValueInvalid", "FieldValueForbidden", "FieldValueRequired", "FieldValueDuplicate"}


def all_rules() -> list[tuple[str, Schema, dict[str, Any]]]:
    return [
        (path, node, rule)
        for path, node in walk(root_schema())
        for rule in node.get("x-kubernetes-validations", [])
    ]


def test_cel_rules_have_messages_reasons_and_real_field_paths() -> None:
    rules = all_rules()
    assert len(rules) >= 12
    for path, node, rule in rules:
        assert rule.get("message"), f"{path}: rule {rule['rule']!r} has no message"
        assert "\n" not in rule["message"]
        assert rule.get("reason", "FieldValueInvalid") in REASONS
        if "fieldPath" in rule:
            target = node
            for part in rule["fieldPath"].strip(".").split("."):
                assert part in target.get("properties", {}), f"{path}: fieldPath {rule['fieldPath']}"
                target = target["properties"][part]


def test_every_rule_the_api_promises_is_there() -> None:
    where = {path for path, _, _ in all_rules()}
    assert where >= {
        ".metadata.name",  # length and shape, for the names of the children
        ".spec",  # autoscaling needs a CPU request
        ".spec.lm",
        ".spec.autoscaling",
        ".spec.variants",
        ".spec.rollout",
        ".spec.rollout.canary.steps[]",
        ".spec.redis",
        ".spec.runtime.env[]",
        ".spec.runtime.env[].valueFrom",
    }


# ---------------------------------------------------------------------------
# defaults
# ---------------------------------------------------------------------------

DOCUMENTED_DEFAULTS = {
    "spec.program.module": "Predict",
    "spec.program.configMapRef.key": "program.json",
    "spec.lm.apiKeySecretRef.key": "api-key",
    "spec.lm.temperature": 0.0,
    "spec.lm.maxTokens": 512,
    "spec.lm.timeoutSeconds": 30,
    "spec.replicas": 1,
    "spec.autoscaling.minReplicas": 1,
    "spec.autoscaling.targetCPUUtilizationPercentage": 70,
    "spec.rateLimit.scope": "pod",
    "spec.rollout": {"strategy": "RollingUpdate"},
    "spec.rollout.strategy": "RollingUpdate",
    "spec.rollout.canary.analysis.intervalSeconds": 60,
    "spec.rollout.canary.analysis.minRequests": 50,
    "spec.rollout.canary.analysis.maxErrorRate": 0.05,
    "spec.rollout.canary.analysis.failureLimit": 2,
    "spec.rollout.canary.analysis.inconclusiveLimit": 3,
    "spec.rollout.canary.analysis.prometheus.timeoutSeconds": 10,
    "spec.rollout.canary.analysis.evaluation.configMapRef.key": "devset.jsonl",
    "spec.rollout.canary.analysis.evaluation.timeoutSeconds": 600,
    "spec.rollout.canary.shadow": False,
    "spec.variants[].shadow": False,
    "spec.shadow": {},
    "spec.shadow.samplePercent": 10,
    "spec.shadow.maxConcurrent": 4,
    "spec.rollout.blueGreen.autoPromotionEnabled": True,
    "spec.rollout.blueGreen.autoPromotionSeconds": 0,
    "spec.rollout.blueGreen.scaleDownDelaySeconds": 300,
    "spec.rollout.blueGreen.analysis.intervalSeconds": 60,
    "spec.rollout.blueGreen.analysis.minRequests": 50,
    "spec.rollout.blueGreen.analysis.maxErrorRate": 0.05,
    "spec.rollout.blueGreen.analysis.failureLimit": 2,
    "spec.rollout.blueGreen.analysis.inconclusiveLimit": 3,
    "spec.rollout.blueGreen.analysis.prometheus.timeoutSeconds": 10,
    "spec.rollout.blueGreen.analysis.evaluation.configMapRef.key": "devset.jsonl",
    "spec.rollout.blueGreen.analysis.evaluation.timeoutSeconds": 600,
    "spec.revisionHistoryLimit": 10,
    "spec.cache": {},
    "spec.cache.enabled": True,
    "spec.cache.allowBypass": False,
    "spec.routing.allowPinning": False,
    "spec.cache.memory": {},
    "spec.cache.redis": {},
    "spec.cache.memory.maxEntries": 10000,
    "spec.cache.memory.ttlSeconds": 300,
    "spec.cache.redis.ttlSeconds": 3600,
    "spec.cache.redis.jitterSeconds": 300,
    "spec.cache.warmup.configMapRef.key": "warmup.jsonl",
    "spec.cache.warmup.timeoutSeconds": 120,
    "spec.cache.adminTokenSecretRef.key": "token",
    "spec.redis": {"mode": "Disabled"},
    "spec.redis.mode": "Disabled",
    "spec.redis.urlSecretRef.key": "url",
    "spec.redis.managed.maxMemoryMegabytes": 256,
    "spec.circuitBreaker": {},
    "spec.circuitBreaker.failureThreshold": 5,
    "spec.circuitBreaker.successThreshold": 2,
    "spec.circuitBreaker.openSeconds": 60,
    "spec.runtime": {},
    "spec.runtime.imagePullPolicy": "IfNotPresent",
    "spec.runtime.port": 8080,
    "spec.runtime.logLevel": "INFO",
    "spec.runtime.logFormat": "json",
    "spec.runtime.resources": {"requests": {"cpu": "250m", "memory": "512Mi"}},
    "spec.paused": False,
}


@pytest.mark.parametrize("path", sorted(DOCUMENTED_DEFAULTS))
def test_documented_default(path: str) -> None:
    assert node_at(path).get("default") == DOCUMENTED_DEFAULTS[path]


def test_no_undocumented_defaults() -> None:
    found = {p.lstrip(".") for p, n in walk(root_schema()) if "default" in n}
    # Defaults of the shared Secret/ConfigMap key shapes inside lists are covered by
    # their top-level twins.
    extra = {
        p for p in found - set(DOCUMENTED_DEFAULTS)
        if not p.endswith((".apiKeySecretRef.key", ".configMapRef.key"))
    }
    assert not extra, f"defaults missing from DOCUMENTED_DEFAULTS (and maybe the docs): {extra}"


def test_every_default_is_valid_and_stated_in_its_description() -> None:
    for path, node in walk(root_schema()):
        if "default" not in node:
            continue
        default = node["default"]
        errors = list(validator(node).iter_errors(default))
        assert not errors, f"{path}: default {default!r} is invalid: {errors[0].message}"
        if isinstance(default, dict) and not path.endswith(".resources"):
            continue  # a section defaulted so that its fields' defaults apply
        text = " ".join(node["description"].split())
        shown = str(default).lower() if isinstance(default, bool) else default
        if isinstance(default, dict):
            shown = "requests {cpu: 250m, memory: 512Mi}"
        assert f"Defaults to {shown}" in text or f"Defaults to mode {shown}" in text, (
            f"{path}: description does not say 'Defaults to {shown}'"
        )


def test_sections_with_nested_defaults_exist_by_default() -> None:
    """The API server defaults only inside objects that exist: after defaulting, the
    minimal example has every always-on section filled in (what the operator reads)."""
    defaulted = apply_defaults(root_schema(), minimal())["spec"]
    assert defaulted == {
        "program": {"signature": "question -> answer", "module": "Predict"},
        "lm": {"model": "openai/fake-model", "temperature": 0.0, "maxTokens": 512, "timeoutSeconds": 30},
        "replicas": 1,
        "revisionHistoryLimit": 10,
        "rollout": {"strategy": "RollingUpdate"},
        "shadow": {"samplePercent": 10, "maxConcurrent": 4},
        "cache": {
            "enabled": True,
            "allowBypass": False,
            "memory": {"maxEntries": 10000, "ttlSeconds": 300},
            "redis": {"ttlSeconds": 3600, "jitterSeconds": 300},
        },
        "redis": {"mode": "Disabled"},
        "circuitBreaker": {"failureThreshold": 5, "successThreshold": 2, "openSeconds": 60},
        "runtime": {
            "imagePullPolicy": "IfNotPresent",
            "port": 8080,
            "logLevel": "INFO",
            "logFormat": "json",
            "resources": {"requests": {"cpu": "250m", "memory": "512Mi"}},
        },
        "paused": False,
    }
    assert not errors_for({**minimal(), "spec": defaulted})


# ---------------------------------------------------------------------------
# enums: what the runtime and the design accept
# ---------------------------------------------------------------------------


def runtime_known_modules() -> tuple[str, ...]:
    """`KNOWN_MODULES` from the runtime's settings, read without importing dspy."""
    tree = ast.parse(RUNTIME_SETTINGS.read_text())
    for stmt in tree.body:
        target = getattr(stmt, "target", None) or (getattr(stmt, "targets", None) or [None])[0]
        if isinstance(target, ast.Name) and target.id == "KNOWN_MODULES":
            return tuple(ast.literal_eval(stmt.value))
    raise AssertionError("runtime settings define no KNOWN_MODULES")


def test_module_enum_is_what_the_runtime_builds() -> None:
    known = set(runtime_known_modules())
    assert set(node_at("spec.program.module")["enum"]) == known
    assert set(node_at("spec.variants[].program.module")["enum"]) == known


@pytest.mark.parametrize(
    ("path", "values"),
    [
        ("spec.rollout.strategy", ["RollingUpdate", "Canary", "BlueGreen"]),
        ("spec.redis.mode", ["Disabled", "Managed", "External"]),
        ("spec.runtime.imagePullPolicy", ["Always", "IfNotPresent", "Never"]),
        ("spec.runtime.logFormat", ["json", "text"]),
        ("spec.rateLimit.scope", ["pod", "global"]),
        ("status.phase", ["Pending", "Progressing", "Healthy", "Degraded", "Paused"]),
        ("status.lastAnalysis.verdict", ["Pass", "Fail", "Inconclusive"]),
        ("status.conditions[].status", ["True", "False", "Unknown"]),
    ],
)
def test_enum(path: str, values: list[str]) -> None:
    assert sorted(node_at(path)["enum"]) == sorted(values)


def test_status_has_every_field_the_design_names() -> None:
    status = node_at("status")["properties"]
    for name in (
        "phase observedGeneration replicas readyReplicas selector conditions stableRevision "
        "canaryRevision canaryWeight currentStep activeColor previewColor lastAnalysis revision "
        "readySummary"
    ).split():
        assert name in status, name
    assert set(status["lastAnalysis"]["properties"]) >= {
        "time", "variant", "requests", "errorRate", "p95LatencySeconds", "verdict",
    }
    assert set(status["conditions"]["items"]["properties"]) == {
        "type", "status", "reason", "message", "lastTransitionTime", "observedGeneration",
    }


def test_no_literal_secret_fields() -> None:
    """Credentials are only ever Secret references."""
    for path, _ in walk(node_at("spec"), ".spec"):
        leaf = path.rsplit(".", 1)[-1].lower()
        assert leaf not in {"apikey", "api_key", "password", "token", "url"}, path


# ---------------------------------------------------------------------------
# the OpenAPI part of validation (CEL is proven in tests/e2e)
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "where"),
    [
        ({"program": {"module": "Predict"}}, "'signature' is a required property"),
        ({"program": {"signature": "question answer"}}, "does not match"),
        ({"program": {"signature": "q -> a", "module": "ReAct"}}, "is not one of"),
        ({"lm": {"model": "has space"}}, "does not match"),
        ({"lm": {"model": "m", "apiBase": "ftp://x"}}, "does not match"),
        ({"lm": {"model": "m", "temperature": 3}}, "is greater than the maximum"),
        ({"lm": {"model": "m", "apiKeySecretRef": {"key": "k"}}}, "'name' is a required property"),
        ({"lm": {"model": "m", "apiKeySecretRef": {"name": "Not_A_Name"}}}, "does not match"),
        ({"lm": {"model": "m", "fallbacks": [{"model": f"m{i}"} for i in range(6)]}}, "is too long"),
        ({"replicas": -1}, "is less than the minimum"),
        ({"autoscaling": {"minReplicas": 2}}, "'maxReplicas' is a required property"),
        ({"variants": [{"name": "Bad_Name", "weight": 100}]}, "does not match"),
        ({"variants": [{"name": "a", "weight": 101}]}, "is greater than the maximum"),
        ({"variants": [{"name": "a"}]}, "'weight' is a required property"),
        ({"variants": [{"name": "a", "weight": 100, "shadow": "yes"}]}, "is not of type 'boolean'"),
        ({"shadow": {"samplePercent": 0}}, "is less than the minimum"),
        ({"shadow": {"maxConcurrent": 1001}}, "is greater than the maximum"),
        ({"shadow": {"maxDailyUsd": -1}}, "is less than the minimum"),
        ({"rollout": {"strategy": "Recreate"}}, "is not one of"),
        ({"rollout": {"strategy": "Canary", "canary": {"steps": []}}}, "is too short|non-empty"),  # wording differs across jsonschema versions
        ({"rollout": {"strategy": "Canary", "canary": {"steps": [{"setWeight": 120}]}}}, "greater"),
        (
            {"rollout": {"strategy": "Canary", "canary": {"steps": [{"setWeight": 10}],
                         "analysis": {"maxErrorRate": 1.5}}}},
            "is greater than the maximum",
        ),
        ({"redis": {"mode": "Cluster"}}, "is not one of"),
        ({"rateLimit": {"requestsPerSecond": 0}}, "less than or equal to the minimum"),
        ({"rateLimit": {"requestsPerSecond": 1, "scope": "cluster"}}, "is not one of"),
        ({"rateLimit": {"requestsPerSecond": 1, "totalRequestsPerSecond": -1}}, "is less than the minimum"),
        ({"rateLimit": {"requestsPerSecond": 1, "totalBurst": 0}}, "is less than the minimum"),
        ({"budget": {"dailyUsd": 0}}, "less than or equal to the minimum"),
        ({"routing": {"stickyHeader": "X User"}}, "does not match"),
        ({"runtime": {"port": 80}}, "is less than the minimum"),
        ({"runtime": {"resources": {"requests": {"cpu": "lots"}}}}, "does not match"),
        ({"runtime": {"env": [{"name": "1BAD", "value": "x"}]}}, "does not match"),
    ],
)
def test_schema_rejects(change: dict[str, Any], where: str) -> None:
    errors = errors_for(minimal(**change))
    assert errors, f"accepted {change}"
    assert any(re.search(where, e) for e in errors), errors


def test_schema_accepts_the_design_example() -> None:
    """The resource as DESIGN.md writes it (with its `...` placeholders filled)."""
    design = minimal(
        program={"signature": "question -> answer", "module": "ChainOfThought",
                 "configMapRef": {"name": "qa-program", "key": "program.json"}},
        lm={"model": "openai/gpt-4o-mini", "apiKeySecretRef": {"name": "openai", "key": "api-key"},
            "temperature": 0.0, "maxTokens": 512, "timeoutSeconds": 30,
            "fallbacks": [{"model": "openai/gpt-4o", "apiKeySecretRef": {"name": "openai", "key": "api-key"}}],
            "pricing": {"promptPerMillion": 0.15, "completionPerMillion": 0.60}},
        replicas=2,
        autoscaling={"minReplicas": 2, "maxReplicas": 10, "targetCPUUtilizationPercentage": 70},
        variants=[{"name": "baseline", "weight": 80},
                  {"name": "optimized", "weight": 20,
                   "program": {"configMapRef": {"name": "qa-opt", "key": "program.json"}}}],
        routing={"stickyHeader": "X-User-ID"},
        rollout={"strategy": "Canary", "canary": {
            "steps": [{"setWeight": 10}, {"pause": {"seconds": 300}}, {"setWeight": 50}, {"pause": {}}],
            "analysis": {"intervalSeconds": 60, "minRequests": 50, "maxErrorRate": 0.05,
                         "maxP95LatencySeconds": 5, "failureLimit": 2}}},
        cache={"enabled": True, "memory": {"maxEntries": 10000, "ttlSeconds": 300},
               "redis": {"ttlSeconds": 3600, "jitterSeconds": 300}},
        redis={"mode": "Managed"},
        circuitBreaker={"failureThreshold": 5, "successThreshold": 2, "openSeconds": 60},
        rateLimit={"requestsPerSecond": 50, "burst": 100},
        budget={"dailyUsd": 50},
        runtime={"image": "ghcr.io/dspy-operator/runtime:0.1.0", "resources": {}, "port": 8080},
        paused=False,
    )
    assert not errors_for(design)
    # and the blueGreen block of the design, under its own strategy
    assert not errors_for(minimal(rollout={"strategy": "BlueGreen", "blueGreen": {
        "autoPromotionSeconds": 0, "scaleDownDelaySeconds": 300, "previewReplicas": 1}}))


# ---------------------------------------------------------------------------
# examples
# ---------------------------------------------------------------------------


def test_there_is_an_example_of_every_feature() -> None:
    names = [p.name for p in EXAMPLES]
    assert names[0] == "01-minimal.yaml"
    specs = [doc["spec"] for _, doc in dspy_examples()]
    used = set()
    for spec in specs:
        used |= set(spec)
        used |= {f"lm.{k}" for k in spec["lm"]}
        used |= {f"runtime.{k}" for k in spec.get("runtime", {})}
        used |= {f"program.{k}" for k in spec["program"]}
        used |= {f"redis.mode={spec['redis']['mode']}"} if "redis" in spec else set()
        used |= {f"rollout.strategy={spec['rollout']['strategy']}"} if "rollout" in spec else set()
    every_field = set(node_at("spec")["properties"])
    every_field |= {f"lm.{k}" for k in node_at("spec.lm")["properties"]}
    every_field |= {f"runtime.{k}" for k in node_at("spec.runtime")["properties"]}
    every_field |= {f"program.{k}" for k in node_at("spec.program")["properties"]}
    every_field |= {"redis.mode=Managed", "redis.mode=External"}
    every_field |= {"rollout.strategy=Canary", "rollout.strategy=BlueGreen"}
    assert every_field <= used, f"no example shows {sorted(every_field - used)}"


@pytest.mark.parametrize(("name", "doc"), dspy_examples(), ids=lambda v: v if isinstance(v, str) else "")
def test_example_validates_against_the_schema(name: str, doc: dict[str, Any]) -> None:
    errors = errors_for(doc)
    assert not errors, f"{name}: {errors}"
    # and after the API server's defaulting too (what the operator will read)
    assert not errors_for(apply_defaults(root_schema(), doc)), name


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_brings_every_secret_and_configmap_it_references(path: Path) -> None:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    have = {(d["kind"], d["metadata"]["name"]) for d in docs}
    wanted: set[tuple[str, str]] = set()

    def refs(value: Any) -> None:
        if isinstance(value, dict):
            for key, child in value.items():
                if key in {"apiKeySecretRef", "urlSecretRef", "secretKeyRef"}:
                    wanted.add(("Secret", child["name"]))
                elif key in {"configMapRef", "configMapKeyRef"}:
                    wanted.add(("ConfigMap", child["name"]))
                refs(child)
        elif isinstance(value, list):
            for child in value:
                refs(child)

    for doc in docs:
        if doc["kind"] == "DSPyDeployment":
            refs(doc["spec"])
    assert wanted <= have, f"{path.name} references {sorted(wanted - have)} but does not define them"
    for doc in docs:
        if doc["kind"] == "Secret":
            text = path.read_text()
            assert "DUMMY" in text, f"{path.name}: Secrets must be marked as dummy values"
            for value in doc.get("stringData", {}).values():
                assert "dummy" in value.lower(), f"{path.name}: {value!r} does not look like a dummy"


def test_minimal_example_is_fit_for_the_demo() -> None:
    (doc,) = [d for n, d in dspy_examples() if n == "01-minimal.yaml"]
    lm = doc["spec"]["lm"]
    assert lm["model"] == "openai/fake-model"
    assert lm["apiBase"].startswith("http://127.0.0.1:")
    assert doc["spec"].get("redis", {}).get("mode", "Disabled") in {"Disabled", "Managed"}


def test_example_names_fit_the_metadata_name_rule() -> None:
    for name, doc in dspy_examples():
        meta = doc["metadata"]["name"]
        assert len(meta) <= 45 and re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", meta), name


def saved_programs() -> list[tuple[str, str, str, str]]:
    """(example, module, signature, program JSON) for every configMapRef an example uses."""
    out = []
    for path in EXAMPLES:
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
        maps = {d["metadata"]["name"]: d["data"] for d in docs if d["kind"] == "ConfigMap"}
        for doc in docs:
            if doc["kind"] != "DSPyDeployment":
                continue
            program = doc["spec"]["program"]
            module = program.get("module", "Predict")
            candidates = [program] + [v["program"] for v in doc["spec"].get("variants", []) if "program" in v]
            for candidate in candidates:
                ref = candidate.get("configMapRef")
                if ref:
                    data = maps[ref["name"]][ref.get("key", "program.json")]
                    out.append((path.name, candidate.get("module", module), program["signature"], data))
    return out


@pytest.mark.parametrize(("name", "module", "signature", "data"), saved_programs(),
                         ids=lambda v: v if isinstance(v, str) and v.endswith(".yaml") else "")
def test_saved_program_examples_load_in_the_runtime(
    name: str, module: str, signature: str, data: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The ConfigMaps in the examples hold programs the runtime really loads."""
    monkeypatch.setenv("LITELLM_LOCAL_MODEL_COST_MAP", "true")
    program = pytest.importorskip("dspy_runtime.program")
    path = tmp_path / "program.json"
    path.write_text(data)
    loaded = program.load_program(program.ProgramSpec(signature=signature, module=module, path=path))
    assert loaded is not None, name
