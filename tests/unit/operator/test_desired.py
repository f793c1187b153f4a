"""The pure builders of the pod-level children: the runtime's env contract, security, the pod
template hash, scaling, Redis modes. (Revisions and the routing table: test_revisions, test_routing.)"""

from __future__ import annotations

import json
from typing import Any

import pytest

from dspy_operator import api
from served import settled

from dspy_operator.reconcile import core, desired
from dspy_operator.reconcile.common import Owner
from dspy_operator.settings import OperatorSettings

SETTINGS = OperatorSettings()
REVISION_SCOPED = ("DSPY_SIGNATURE", "DSPY_MODULE", "LM_MODEL", "LM_API_BASE", "LM_TEMPERATURE", "LM_MAX_TOKENS",
                   "LM_TIMEOUT_SECS", "PROGRAM_PATH")


def build(body: dict[str, Any], secret_uid: str | None = "secret-uid") -> dict[str, dict[str, Any]]:
    served = settled(body)
    kept = {"ConfigMap", "Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget", "NetworkPolicy"}
    children = [child for child in core.children(Owner.from_body(body), SETTINGS, served, secret_uid)
                if child["kind"] in kept and child["metadata"]["labels"][api.LABEL_COMPONENT] != api.COMPONENT_REVISION
                and not child["metadata"]["name"].endswith("-routing")]
    return {f"{child['kind']}/{child['metadata']['name']}": child for child in children}


def container(children: dict[str, dict[str, Any]], name: str = "qa") -> dict[str, Any]:
    return children[f"Deployment/{name}"]["spec"]["template"]["spec"]["containers"][0]


def env_of(children: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {entry["name"]: entry for entry in container(children)["env"]}


def template_hash(children: dict[str, dict[str, Any]], name: str = "qa") -> str:
    return children[f"Deployment/{name}"]["spec"]["template"]["metadata"]["annotations"][api.ANNOTATION_CONFIG_HASH]


def test_every_child_is_owned_and_labelled(body):
    children = build(body())
    assert list(children) == [
        "Deployment/qa-redis", "Service/qa-redis", "NetworkPolicy/qa-redis",
        "Deployment/qa", "Service/qa", "PodDisruptionBudget/qa",
    ], "Redis first: the runtime pods need it; no routing or revision ConfigMap here"
    for child in children.values():
        metadata = child["metadata"]
        assert metadata["namespace"] == "demo"
        assert metadata["ownerReferences"] == [{
            "apiVersion": "dspy.dev/v1alpha1", "kind": "DSPyDeployment", "name": "qa", "uid": "uid-1234",
            "controller": True, "blockOwnerDeletion": True,
        }]
        assert metadata["labels"] | api.common_labels("qa") == metadata["labels"]
        assert metadata["labels"]["app.kubernetes.io/managed-by"] == "dspy-operator"


def test_env_contract(body):
    env = env_of(build(body({
        "cache": {"enabled": True, "memory": {"maxEntries": 100, "ttlSeconds": 60}, "redis": {"ttlSeconds": 600, "jitterSeconds": 30}},
        "circuitBreaker": {"failureThreshold": 5, "successThreshold": 2, "openSeconds": 60},
        "rateLimit": {"requestsPerSecond": 50, "burst": 100, "keyHeader": "X-API-Key"},
        "budget": {"dailyUsd": 50},
        "lm": {**body()["spec"]["lm"], "apiBase": "http://lm:8000/v1", "pricing": {"promptPerMillion": 0.15, "completionPerMillion": 0.6}},
    })))
    values = {name: entry.get("value") for name, entry in env.items()}
    assert values["HOST"] == "0.0.0.0" and values["PORT"] == "8080"
    assert values["LOG_FORMAT"] == "json" and values["LOG_LEVEL"] == "INFO"
    assert values["DSPY_RESOURCE"] == "demo/qa"
    assert values["ROUTING_REDIS_KEY"] == "dspy:{demo/qa}:routing"
    assert values["CACHE_ENABLED"] == "true" and values["MEMORY_CACHE_SIZE"] == "100"
    assert values["MEMORY_CACHE_TTL_SECS"] == "60" and values["REDIS_CACHE_TTL_SECS"] == "600"
    assert values["REDIS_CACHE_JITTER_SECS"] == "30"
    assert values["CIRCUIT_BREAKER_FAILURE_THRESHOLD"] == "5" and values["CIRCUIT_BREAKER_SUCCESS_THRESHOLD"] == "2"
    assert values["CIRCUIT_BREAKER_TIMEOUT_SECS"] == "60"
    assert values["RATE_LIMIT_RPS"] == "50" and values["RATE_LIMIT_BURST"] == "100"
    assert values["RATE_LIMIT_KEY_HEADER"] == "X-API-Key" and values["DAILY_BUDGET_USD"] == "50"
    assert values["ROUTING_PATH"] == "/etc/dspy/routing/routing.json"
    assert values["LITELLM_LOCAL_MODEL_COST_MAP"] == "true"
    # Program, LM settings and the primary's price travel with the revision in the routing table.
    assert not set(REVISION_SCOPED) & set(env), "revision-scoped settings are not pod-level"
    assert "LM_PRICING" not in env, "the primary's price is in the table; only fallbacks' prices are pod-level"


def test_unset_optional_settings_are_left_to_the_runtime(body):
    env = env_of(build(body({"redis": {"mode": "Disabled"}})))
    assert set(env) == {"HOST", "PORT", "LOG_FORMAT", "LOG_LEVEL", "LITELLM_LOCAL_MODEL_COST_MAP", "ROUTING_PATH",
                        "DSPY_RESOURCE", "LM_API_KEY"}


def test_api_keys_come_from_secrets_never_inlined(body):
    spec = body({"lm": {
        "model": "openai/gpt-4o-mini", "apiKeySecretRef": {"name": "openai", "key": "api-key"},
        "fallbacks": [{"model": "anthropic/claude", "apiKeySecretRef": {"name": "anthropic", "key": "k"}},
                      {"model": "openai/gpt-4o", "apiBase": "http://proxy:4000/v1"}],
    }})
    env = env_of(build(spec))
    assert env["LM_API_KEY"] == {"name": "LM_API_KEY", "valueFrom": {"secretKeyRef": {"name": "openai", "key": "api-key"}}}
    assert env["LM_FALLBACK_MODELS"]["value"] == "anthropic/claude,openai/gpt-4o"
    assert env["LM_FALLBACK_API_KEY_0"]["valueFrom"]["secretKeyRef"] == {"name": "anthropic", "key": "k"}
    assert "LM_FALLBACK_API_BASE_0" not in env
    assert env["LM_FALLBACK_API_BASE_1"] == {"name": "LM_FALLBACK_API_BASE_1", "value": "http://proxy:4000/v1"}
    # A fallback of the primary's provider inherits the primary's key (the runtime's rule, made explicit).
    assert env["LM_FALLBACK_API_KEY_1"] == {"name": "LM_FALLBACK_API_KEY_1",
                                            "valueFrom": {"secretKeyRef": {"name": "openai", "key": "api-key"}}}
    secrets = [entry for name, entry in env.items() if "API_KEY" in name or "PASSWORD" in name]
    assert secrets and all(set(entry) == {"name", "valueFrom"} for entry in secrets)


def test_fallbacks_inherit_the_primary_base_and_key_only_for_the_same_provider(body):
    spec = body({"lm": {
        "model": "openai/gpt-4o-mini", "apiBase": "http://lm:8000/v1", "apiKeySecretRef": {"name": "openai"},
        "fallbacks": [{"model": "openai/gpt-4o"}, {"model": "anthropic/claude"},
                      {"model": "openai/gpt-4.1", "apiBase": "http://other:9000/v1", "apiKeySecretRef": {"name": "o2"}}],
    }})
    env = env_of(build(spec))
    assert env["LM_FALLBACK_API_BASE_0"]["value"] == "http://lm:8000/v1"
    assert env["LM_FALLBACK_API_KEY_0"]["valueFrom"]["secretKeyRef"] == {"name": "openai", "key": "api-key"}
    assert "LM_FALLBACK_API_BASE_1" not in env and "LM_FALLBACK_API_KEY_1" not in env
    assert env["LM_FALLBACK_API_BASE_2"]["value"] == "http://other:9000/v1"
    assert env["LM_FALLBACK_API_KEY_2"]["valueFrom"]["secretKeyRef"] == {"name": "o2", "key": "api-key"}


def test_a_variants_own_key_is_an_env_var_named_after_it(body):
    spec = body({"variants": [
        {"name": "baseline", "weight": 80},
        {"name": "fast-v2", "weight": 20, "lm": {"model": "openai/gpt-4o", "apiKeySecretRef": {"name": "openai-2"}}},
    ]})
    env = env_of(build(spec))
    assert env["LM_API_KEY_FAST_V2"] == {"name": "LM_API_KEY_FAST_V2",
                                         "valueFrom": {"secretKeyRef": {"name": "openai-2", "key": "api-key"}}}


def test_pod_security_probes_and_volumes(body):
    children = build(body())
    pod = children["Deployment/qa"]["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    runtime = container(children)
    assert runtime["securityContext"] == {
        "allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
    }
    assert runtime["livenessProbe"]["httpGet"]["path"] == "/health"
    assert runtime["readinessProbe"]["httpGet"]["path"] == "/ready"
    # Writable /tmp and the routing table; saved programs travel inline in the table, no program volume.
    assert pod["volumes"] == [{"name": "tmp", "emptyDir": {}},
                              {"name": "routing", "configMap": {"name": "qa-routing"}}]
    assert runtime["volumeMounts"] == [{"name": "tmp", "mountPath": "/tmp"},
                                       {"name": "routing", "mountPath": "/etc/dspy/routing", "readOnly": True}]


def test_cache_warmup_inputs_are_mounted_and_the_admin_token_comes_from_its_secret(body):
    children = build(body({"cache": {
        "memory": {"warmEntries": 50},
        "warmup": {"configMapRef": {"name": "qa-warm", "key": "inputs.jsonl"}, "timeoutSeconds": 90},
        "adminTokenSecretRef": {"name": "cache-admin", "key": "token"},
    }}))
    env = env_of(children)
    assert env["CACHE_WARMUP_PATH"]["value"] == "/etc/dspy/warmup/warmup.jsonl"
    assert env["CACHE_WARMUP_TIMEOUT_SECS"]["value"] == "90"
    assert env["MEMORY_CACHE_WARM_ENTRIES"]["value"] == "50"
    assert env["CACHE_ADMIN_TOKEN"] == {"name": "CACHE_ADMIN_TOKEN",
                                        "valueFrom": {"secretKeyRef": {"name": "cache-admin", "key": "token"}}}
    pod = children["Deployment/qa"]["spec"]["template"]["spec"]
    assert pod["volumes"][-1] == {"name": "cache-warmup", "configMap": {
        "name": "qa-warm", "items": [{"key": "inputs.jsonl", "path": "warmup.jsonl"}]}}
    assert container(children)["volumeMounts"][-1] == {"name": "cache-warmup", "mountPath": "/etc/dspy/warmup",
                                                       "readOnly": True}


def test_without_warmup_or_token_nothing_is_mounted_or_set(body):
    children = build(body({"cache": {"warmup": None}}))
    env = env_of(children)
    assert not {"CACHE_WARMUP_PATH", "CACHE_WARMUP_TIMEOUT_SECS", "CACHE_ADMIN_TOKEN"} & set(env)
    assert [v["name"] for v in children["Deployment/qa"]["spec"]["template"]["spec"]["volumes"]] == ["tmp", "routing"]


def test_a_key_left_to_the_default_is_the_crds_default(body):
    env = env_of(build(body({"cache": {"warmup": {"configMapRef": {"name": "w"}}, "adminTokenSecretRef": {"name": "t"}}})))
    assert env["CACHE_ADMIN_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": "t", "key": "token"}
    assert "CACHE_WARMUP_TIMEOUT_SECS" not in env, "unset: the runtime's default (the CRD's is the same)"


def test_service_maps_port_80_to_the_runtime_port(body):
    service = build(body({"runtime": {"port": 9000}}))["Service/qa"]
    assert service["spec"]["ports"] == [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}]
    assert container(build(body({"runtime": {"port": 9000}})))["ports"][0]["containerPort"] == 9000


def test_replicas_without_autoscaling_and_hpa_with_it(body):
    plain = build(body())
    assert plain["Deployment/qa"]["spec"]["replicas"] == 2
    assert not any(key.startswith("HorizontalPodAutoscaler/") for key in plain)
    scaled = build(body({"autoscaling": {"minReplicas": 2, "maxReplicas": 10, "targetCPUUtilizationPercentage": 70}}))
    assert "replicas" not in scaled["Deployment/qa"]["spec"]
    hpa = scaled["HorizontalPodAutoscaler/qa"]
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "qa"}
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 10)
    assert hpa["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"] == 70


def test_disruption_budget_never_blocks_a_single_replica(body):
    pdb = build(body({"replicas": 1}))["PodDisruptionBudget/qa"]
    assert pdb["spec"]["maxUnavailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"] == api.pod_selector("qa", "runtime")


def test_the_pod_template_hash_covers_what_pods_cannot_pick_up_while_running(body):
    base = template_hash(build(body()))
    assert template_hash(build(body())) == base, "deterministic"
    assert base == desired.pod_template_hash(Owner.from_body(body()), "secret-uid")
    # Pod-level: the environment and the Redis password Secret roll the pods.
    assert template_hash(build(body({"cache": {"enabled": False}}))) != base
    assert template_hash(build(body({"runtime": {"env": [{"name": "EXTRA", "value": "1"}]}}))) != base
    assert template_hash(build(body({"lm": {**body()["spec"]["lm"], "fallbacks": [{"model": "openai/gpt-4o"}]}}))) != base
    assert template_hash(build(body(), secret_uid="another-secret")) != base


@pytest.mark.parametrize("change", [
    lambda lm: {"lm": {**lm, "temperature": 0.7}},
    lambda lm: {"lm": {**lm, "model": "openai/gpt-4o", "apiBase": "http://lm:8000/v1"}},
    lambda lm: {"lm": {**lm, "pricing": {"promptPerMillion": 1, "completionPerMillion": 2}}},
    lambda lm: {"program": {"signature": "question -> answer", "module": "Predict"}},
    lambda lm: {"program": {"signature": "question -> answer", "configMapRef": {"name": "saved"}}},
    lambda lm: {"variants": [{"name": "a", "weight": 50}, {"name": "b", "weight": 50, "lm": {"model": "openai/gpt-4o"}}]},
    lambda lm: {"routing": {"stickyHeader": "X-User"}},
    lambda lm: {"rollout": {"strategy": "Canary", "canary": {"steps": [{"setWeight": 10}]}}},
], ids=["temperature", "model-and-base", "pricing", "module", "saved-program", "variants", "sticky-header", "strategy"])
def test_revision_and_routing_changes_never_touch_the_pod_template(body, change):
    """They reach running pods through the routing table: no restart, no cold L1 cache."""
    before, after = build(body()), build(body(change(body()["spec"]["lm"])))
    assert template_hash(after) == template_hash(before)
    assert after["Deployment/qa"] == before["Deployment/qa"]


def test_managed_redis(body):
    children = build(body())
    env = env_of(children)
    names = [entry["name"] for entry in container(children)["env"]]
    assert names.index("REDIS_PASSWORD") < names.index("REDIS_URL"), "$(REDIS_PASSWORD) must be defined first"
    assert env["REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": "qa-redis", "key": "password"}
    assert env["REDIS_URL"]["value"] == "redis://:$(REDIS_PASSWORD)@qa-redis.demo.svc:6379/0"
    assert env["ROUTING_REDIS_KEY"]["value"] == "dspy:{demo/qa}:routing"
    redis = children["Deployment/qa-redis"]["spec"]["template"]["spec"]["containers"][0]
    assert redis["args"][:2] == ["--requirepass", "$(REDIS_PASSWORD)"]
    policy = children["NetworkPolicy/qa-redis"]["spec"]
    assert policy["podSelector"]["matchLabels"] == api.pod_selector("qa", "redis")
    assert policy["policyTypes"] == ["Ingress"]
    # The runtime pods of this resource, and the operator (routing pushes, analysis windows) from any namespace.
    assert policy["ingress"] == [{
        "from": [{"podSelector": {"matchLabels": api.pod_selector("qa", "runtime")}},
                 {"namespaceSelector": {}, "podSelector": {"matchLabels": {"app.kubernetes.io/name": "dspy-operator"}}}],
        "ports": [{"protocol": "TCP", "port": 6379}],
    }]


def test_managed_redis_persists_and_evicts_only_keys_that_expire(body):
    redis = container(build(body({"redis": {"mode": "Managed", "managed": {"maxMemoryMegabytes": 64}}})), "qa-redis")
    args = redis["args"]
    flags = dict(zip(args[2::2], args[3::2], strict=True))
    # Cache entries carry TTLs, the budget's keys none: volatile-lru evicts the former only.
    assert flags["--maxmemory-policy"] == "volatile-lru" and flags["--maxmemory"] == "64mb"
    assert flags["--appendonly"] == "yes" and flags["--appendfsync"] == "everysec"
    assert {"name": "data", "mountPath": "/data"} in redis["volumeMounts"], "the AOF lives in the pod's volume"


def test_rate_limit_scope_totals_and_replicas_env(body):
    env = env_of(build(body({
        "replicas": 3,
        "rateLimit": {"requestsPerSecond": 5, "keyHeader": "X-API-Key", "totalRequestsPerSecond": 40,
                      "totalBurst": 80, "scope": "global"},
    })))
    values = {name: entry.get("value") for name, entry in env.items()}
    assert values["RATE_LIMIT_SCOPE"] == "global"
    assert values["RATE_LIMIT_TOTAL_RPS"] == "40" and values["RATE_LIMIT_TOTAL_BURST"] == "80"
    assert values["RUNTIME_REPLICAS"] == "3", "without autoscaling: replicas"
    scaled = env_of(build(body({
        "replicas": 3, "budget": {"dailyUsd": 5},
        "autoscaling": {"minReplicas": 2, "maxReplicas": 12},
        "runtime": {"resources": {"requests": {"cpu": "250m"}}},
    })))
    assert scaled["RUNTIME_REPLICAS"]["value"] == "12", "with autoscaling: the most the HPA may run"
    assert env_of(build(body({"replicas": 0, "budget": {"dailyUsd": 5}})))["RUNTIME_REPLICAS"]["value"] == "1"


def test_pod_scope_and_no_fleet_limit_leave_the_env_and_the_pods_alone(body):
    """`pod` is the runtime's default, and without a global limit or a budget no replica count is
    rendered: a `kubectl scale` must not roll the pods."""
    plain = build(body({"rateLimit": {"requestsPerSecond": 5}}))
    env = env_of(build(body({"rateLimit": {"requestsPerSecond": 5, "scope": "pod"}})))
    assert "RATE_LIMIT_SCOPE" not in env and "RUNTIME_REPLICAS" not in env
    assert template_hash(build(body({"replicas": 7, "rateLimit": {"requestsPerSecond": 5}}))) == template_hash(plain)


def test_a_new_redis_password_secret_restarts_redis_and_the_runtime(body):
    first, second = build(body(), secret_uid="uid-a"), build(body(), secret_uid="uid-b")
    assert template_hash(first, "qa-redis") != template_hash(second, "qa-redis")
    assert template_hash(first) != template_hash(second)
    assert template_hash(build(body(), secret_uid="uid-a"), "qa-redis") == template_hash(first, "qa-redis")


def test_redis_secret_is_created_with_the_generated_password(body):
    owner = Owner.from_body(body())
    secret = desired.redis_secret(owner, "s3cret")
    assert secret["data"] == {"password": "czNjcmV0"}
    assert secret["metadata"]["ownerReferences"][0]["uid"] == "uid-1234"
    assert secret["metadata"]["labels"][api.LABEL_COMPONENT] == api.COMPONENT_REDIS


def test_external_redis_url_from_secret(body):
    children = build(body({"redis": {"mode": "External", "urlSecretRef": {"name": "my-redis"}}}), secret_uid=None)
    assert not any("redis" in key for key in children)
    env = env_of(children)
    assert env["REDIS_URL"] == {"name": "REDIS_URL", "valueFrom": {"secretKeyRef": {"name": "my-redis", "key": "url"}}}
    assert env["ROUTING_REDIS_KEY"]["value"] == "dspy:{demo/qa}:routing"


@pytest.mark.parametrize("redis", [{"mode": "Disabled"}, None])
def test_disabled_redis_means_no_redis_at_all(body, redis):
    spec = body({"redis": redis} if redis else {})
    if redis is None:
        del spec["spec"]["redis"]  # the CRD's default is Disabled
    children = build(spec, secret_uid=None)
    assert not any("redis" in key for key in children)
    env = env_of(children)
    assert "REDIS_URL" not in env
    assert "ROUTING_REDIS_KEY" not in env, "without Redis the table reaches pods through the mounted file only"


def test_user_env_wins_over_the_operators_by_name(body):
    env = container(build(body({"runtime": {"env": [{"name": "LOG_FORMAT", "value": "text"}, {"name": "EXTRA", "value": "1"}]}})))["env"]
    names = [entry["name"] for entry in env]
    assert len(names) == len(set(names))
    assert {"name": "LOG_FORMAT", "value": "text"} in env and {"name": "EXTRA", "value": "1"} in env


def test_lm_pricing_holds_only_the_fallbacks_prices(body):
    spec = body({
        "lm": {"model": "a", "pricing": {"promptPerMillion": 1, "completionPerMillion": 2},
               "fallbacks": [{"model": "b", "pricing": {"promptPerMillion": 3, "completionPerMillion": 4}},
                             {"model": "d"}]},
        "variants": [{"name": "x", "weight": 100, "lm": {"model": "c", "pricing": {"promptPerMillion": 5, "completionPerMillion": 6}}}],
    })
    assert json.loads(env_of(build(spec))["LM_PRICING"]["value"]) == {"b": {"promptPerMillion": 3, "completionPerMillion": 4}}


def test_images_come_from_the_operator_unless_the_resource_pins_them(body):
    children = build(body())
    assert container(children)["image"] == SETTINGS.runtime_image
    assert children["Deployment/qa-redis"]["spec"]["template"]["spec"]["containers"][0]["image"] == SETTINGS.redis_image
    pinned = build(body({"runtime": {"image": "registry.example/runtime:9"},
                         "redis": {"mode": "Managed", "managed": {"image": "registry.example/redis:8"}}}))
    assert container(pinned)["image"] == "registry.example/runtime:9"
    assert pinned["Deployment/qa-redis"]["spec"]["template"]["spec"]["containers"][0]["image"] == "registry.example/redis:8"


def test_a_color_runs_its_stored_pod_template_and_reads_its_own_routing_table(body):
    owner = Owner.from_body(body({"redis": {"mode": "External", "urlSecretRef": {"name": "redis"}},
                                  "autoscaling": {"minReplicas": 2, "maxReplicas": 5}}))
    pod = desired.runtime_pod(owner, SETTINGS)
    stored = json.loads(json.dumps(pod))
    green = desired.runtime_deployment(owner, api.GREEN, pod, 3, "digest", revision="77aa01bc9e0f")
    assert pod == stored, "the stored template is never changed in place"
    assert green["metadata"]["name"] == "qa-green" and green["metadata"]["labels"][api.LABEL_COLOR] == "green"
    assert green["spec"]["selector"]["matchLabels"] == {**api.pod_selector("qa", "runtime"), api.LABEL_COLOR: "green"}
    assert green["spec"]["replicas"] == 3, "a color's count is always the operator's (see layout)"
    template = green["spec"]["template"]
    assert template["metadata"]["labels"][api.LABEL_COLOR] == "green"
    assert template["metadata"]["annotations"][api.ANNOTATION_REVISION] == "77aa01bc9e0f"
    volumes = {volume["name"]: volume for volume in template["spec"]["volumes"]}
    assert volumes["routing"]["configMap"] == {"name": "qa-routing-green"}
    env = {entry["name"]: entry for entry in template["spec"]["containers"][0]["env"]}
    assert env["ROUTING_REDIS_KEY"]["value"] == "dspy:{demo/qa}:routing:green"
    single = desired.runtime_deployment(owner, api.SINGLE, pod, None, "digest")
    assert single["metadata"]["name"] == "qa" and "replicas" not in single["spec"]
    assert api.LABEL_COLOR not in single["spec"]["selector"]["matchLabels"]


def test_services_select_their_color_and_the_hpa_scales_the_active_one(body):
    owner = Owner.from_body(body({"autoscaling": {"minReplicas": 2, "maxReplicas": 5}}))
    children = {f"{child['kind']}/{child['metadata']['name']}": child
                for child in desired.serving_children(owner, api.BLUE, api.GREEN, api.BLUE)}
    assert sorted(children) == ["HorizontalPodAutoscaler/qa", "PodDisruptionBudget/qa", "Service/qa",
                                "Service/qa-preview"]
    assert children["Service/qa"]["spec"]["selector"][api.LABEL_COLOR] == "blue"
    assert children["Service/qa-preview"]["spec"]["selector"][api.LABEL_COLOR] == "green"
    assert children["HorizontalPodAutoscaler/qa"]["spec"]["scaleTargetRef"]["name"] == "qa-blue"
    assert children["PodDisruptionBudget/qa"]["spec"]["selector"]["matchLabels"] == api.pod_selector("qa", "runtime")
    single = {child["kind"]: child for child in desired.serving_children(owner, api.SINGLE, None, api.SINGLE)}
    assert api.LABEL_COLOR not in single["Service"]["spec"]["selector"], "every runtime pod, whatever its color"


def test_pinning_and_cache_bypass_reach_the_pods_only_when_allowed(body):
    """Off is the default of both the CRD and the runtime: nothing is rendered then, so the pods of
    existing resources keep their template."""
    plain = build(body({}))
    off = build(body({"routing": {"allowPinning": False}, "cache": {"allowBypass": False}}))
    assert "ALLOW_PINNING" not in env_of(off) and "ALLOW_CACHE_BYPASS" not in env_of(off)
    assert template_hash(off) == template_hash(plain)
    on = env_of(build(body({"routing": {"allowPinning": True}, "cache": {"allowBypass": True}})))
    assert on["ALLOW_PINNING"]["value"] == "true" and on["ALLOW_CACHE_BYPASS"]["value"] == "true"


def test_degradation_and_stale_seconds_env(body):
    spec = {"enabled": True, "windowSeconds": 20, "errorRate": 0.25, "p95Seconds": 4.5, "budgetLeftFraction": 0.1,
            "minHoldSeconds": 15, "maxTokensFactor": 0.5}
    values = {n: e.get("value") for n, e in env_of(build(body({"degradation": spec, "cache": {"staleSeconds": 900}}))).items()}
    assert {n: v for n, v in values.items() if n.startswith("DEGRADATION_")} == {
        "DEGRADATION_ENABLED": "true", "DEGRADATION_WINDOW_SECS": "20", "DEGRADATION_ERROR_RATE": "0.25",
        "DEGRADATION_P95_SECS": "4.5", "DEGRADATION_BUDGET_LEFT_FRACTION": "0.1", "DEGRADATION_MIN_HOLD_SECS": "15",
        "DEGRADATION_MAX_TOKENS_FACTOR": "0.5",
    }
    assert values["CACHE_STALE_SECS"] == "900"
    only_enabled = env_of(build(body({"degradation": {"enabled": True}})))
    assert [n for n in only_enabled if n.startswith("DEGRADATION_")] == ["DEGRADATION_ENABLED"]
    off = env_of(build(body({"degradation": {"enabled": False, "errorRate": 0.1}})))
    assert not [n for n in off if n.startswith("DEGRADATION_")]
