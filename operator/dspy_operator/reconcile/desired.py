"""Pure builders of the pod-level children: the runtime pod template and Deployments,
Services, HPA, PDB and the managed Redis (the routing tables and revisions are `routing`
and `revisions`; which Deployments exist is `layout`; `core.children` puts them together).

No I/O and no clock here, so every child is unit-tested as a plain dict. The runtime's
environment contract (DESIGN.md, "The runtime") is spelled out in `runtime_env`.
Values the spec leaves unset are omitted rather than defaulted: the CRD's schema
defaults and the runtime's own defaults are the single source of each default.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from typing import Any

from dspy_operator import api
from dspy_operator.reconcile.common import Obj, Owner, canonical_hash, metadata, section
from dspy_operator.settings import OperatorSettings

# Used only when the CRD's defaults did not apply (e.g. an older CRD); same values.
DEFAULT_RESOURCES: Mapping[str, Any] = {"requests": {"cpu": "250m", "memory": "512Mi"}}
DEFAULT_REDIS_MAXMEMORY_MB = 256
REDIS_UID = 999  # the `redis` user of the official image
RUNTIME_UID = 10001


def _env(name: str, value: Any) -> Obj:
    if isinstance(value, bool):
        value = "true" if value else "false"
    return {"name": name, "value": str(value)}


def _secret_env(name: str, ref: Mapping[str, Any], default_key: str = "api-key") -> Obj:
    """An env var read from a Secret by the kubelet: the value never appears in any manifest."""
    return {"name": name, "valueFrom": {"secretKeyRef": {"name": ref["name"], "key": ref.get("key") or default_key}}}


# --- the runtime ------------------------------------------------------------------------


def runtime_port(owner: Owner) -> int:
    return int(section(owner.spec, "runtime").get("port") or api.DEFAULT_RUNTIME_PORT)


def runtime_env(owner: Owner) -> list[Obj]:
    """The runtime's pod-level environment; secrets only by secretKeyRef.

    Revision-scoped settings (program, LM, variants, pricing) are not here: they reach the
    pods in the routing table, so a canary can serve two of them in one pod. A variable
    in this list is part of the pod template: changing it replaces the pods."""
    spec = owner.spec
    lm = section(spec, "lm")
    cache, breaker = section(spec, "cache"), section(spec, "circuitBreaker")
    rate, budget = section(spec, "rateLimit"), section(spec, "budget")
    degradation = section(spec, "degradation")
    env: list[Obj] = [
        _env("HOST", "0.0.0.0"),
        _env("PORT", runtime_port(owner)),
        _env("LOG_FORMAT", section(spec, "runtime").get("logFormat") or "json"),
        _env("LOG_LEVEL", section(spec, "runtime").get("logLevel") or "INFO"),
        _env("LITELLM_LOCAL_MODEL_COST_MAP", True),
        _env("ROUTING_PATH", f"{api.ROUTING_DIR}/{api.ROUTING_FILE}"),
        _env("DSPY_RESOURCE", api.resource_id(owner.namespace, owner.name)),
    ]
    optional: list[tuple[str, Any]] = [
        ("CACHE_ENABLED", cache.get("enabled")),
        # Off is the runtime's default too: rendered only when on, so existing pods keep their template.
        ("ALLOW_CACHE_BYPASS", True if cache.get("allowBypass") else None),
        ("ALLOW_PINNING", True if section(spec, "routing").get("allowPinning") else None),
        ("MEMORY_CACHE_SIZE", section(cache, "memory").get("maxEntries")),
        ("MEMORY_CACHE_TTL_SECS", section(cache, "memory").get("ttlSeconds")),
        ("REDIS_CACHE_TTL_SECS", section(cache, "redis").get("ttlSeconds")),
        ("REDIS_CACHE_JITTER_SECS", section(cache, "redis").get("jitterSeconds")),
        ("MEMORY_CACHE_WARM_ENTRIES", section(cache, "memory").get("warmEntries")),
        ("CACHE_WARMUP_PATH", f"{api.WARMUP_DIR}/{api.WARMUP_FILE}" if cache.get("warmup") else None),
        ("CACHE_WARMUP_TIMEOUT_SECS", section(cache, "warmup").get("timeoutSeconds")),
        ("CACHE_STALE_SECS", cache.get("staleSeconds")),
        ("CIRCUIT_BREAKER_FAILURE_THRESHOLD", breaker.get("failureThreshold")),
        ("CIRCUIT_BREAKER_SUCCESS_THRESHOLD", breaker.get("successThreshold")),
        ("CIRCUIT_BREAKER_TIMEOUT_SECS", breaker.get("openSeconds")),
        ("RATE_LIMIT_RPS", rate.get("requestsPerSecond")),
        ("RATE_LIMIT_BURST", rate.get("burst")),
        ("RATE_LIMIT_KEY_HEADER", rate.get("keyHeader")),
        ("RATE_LIMIT_TOTAL_RPS", rate.get("totalRequestsPerSecond")),
        ("RATE_LIMIT_TOTAL_BURST", rate.get("totalBurst")),
        # `pod` is the runtime's default: omitted, so existing resources keep their pod template.
        ("RATE_LIMIT_SCOPE", "global" if rate.get("scope") == "global" else None),
        ("DAILY_BUDGET_USD", budget.get("dailyUsd")),
        ("RUNTIME_REPLICAS", runtime_replicas(owner)),
        *_degradation_env(degradation),
    ]
    env.extend(_env(name, value) for name, value in optional if value is not None)
    if cache.get("adminTokenSecretRef"):
        env.append(_secret_env("CACHE_ADMIN_TOKEN", cache["adminTokenSecretRef"], api.DEFAULT_ADMIN_TOKEN_KEY))
    if lm.get("apiKeySecretRef"):
        env.append(_secret_env(api.LM_API_KEY_ENV, lm["apiKeySecretRef"]))
    env.extend(_fallback_env(lm))
    for variant in spec.get("variants") or []:
        ref = (variant.get("lm") or {}).get("apiKeySecretRef")
        if ref:
            env.append(_secret_env(api.variant_key_env(variant["name"]), ref))
    pricing = lm_pricing(spec)
    if pricing:
        env.append(_env("LM_PRICING", json.dumps(pricing, sort_keys=True, separators=(",", ":"))))
    env.extend(redis_env(owner))
    if owner.redis_mode != "Disabled":
        env.append(_env("ROUTING_REDIS_KEY", api.routing_redis_key(owner.namespace, owner.name)))
    return _with_user_env(env, section(spec, "runtime").get("env") or [])


DEGRADATION_ENV: tuple[tuple[str, str], ...] = (
    ("DEGRADATION_WINDOW_SECS", "windowSeconds"),
    ("DEGRADATION_ERROR_RATE", "errorRate"),
    ("DEGRADATION_P95_SECS", "p95Seconds"),
    ("DEGRADATION_BUDGET_LEFT_FRACTION", "budgetLeftFraction"),
    ("DEGRADATION_MIN_HOLD_SECS", "minHoldSeconds"),
    ("DEGRADATION_MAX_TOKENS_FACTOR", "maxTokensFactor"),
)
"""spec.degradation's thresholds and the runtime settings they set."""


def _degradation_env(degradation: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """DEGRADATION_* only when enabled: thresholds of a disabled controller would be settings it ignores."""
    if not degradation.get("enabled"):
        return []
    return [("DEGRADATION_ENABLED", True), *((name, degradation.get(field)) for name, field in DEGRADATION_ENV)]


def runtime_replicas(owner: Owner) -> int | None:
    """`RUNTIME_REPLICAS`, the most runtime pods serving at once: autoscaling.maxReplicas (the HPA
    moves the count below it, and a pod cannot follow: the env is the pod template), else
    replicas. Pods divide the fleet's limits by it while they cannot share them (Redis down for
    the global rate limit and the budget, Redis Disabled for the budget), so the fleet stays
    within them. Rendered only for a global rate limit or a budget: elsewhere it would only
    roll the pods at every `kubectl scale`. A blue/green switch briefly runs both colors; the
    preview takes no user traffic, so the count is the active color's."""
    if section(owner.spec, "rateLimit").get("scope") != "global" and not section(owner.spec, "budget").get("dailyUsd"):
        return None
    scaling = owner.spec.get("autoscaling")
    count = scaling.get("maxReplicas") if scaling else owner.spec.get("replicas")
    return max(1, int(count if count is not None else 1))


def _fallback_env(lm: Mapping[str, Any]) -> list[Obj]:
    """LM_FALLBACK_MODELS with each fallback's API base and key spelled out.

    The runtime lets a fallback of the primary's provider inherit the primary's base and
    key; the primary's LM settings now live in the routing table, so the operator applies
    that rule here and the pods get explicit values (a change of the inherited base is then
    pod-level: fallbacks are)."""
    fallbacks = lm.get("fallbacks") or []
    if not fallbacks:
        return []
    env = [_env("LM_FALLBACK_MODELS", ",".join(fallback["model"] for fallback in fallbacks))]
    primary_provider = _provider(str(lm.get("model") or ""))
    for index, fallback in enumerate(fallbacks):
        inherits = _provider(fallback["model"]) == primary_provider
        base = fallback.get("apiBase") or (lm.get("apiBase") if inherits else None)
        key_ref = fallback.get("apiKeySecretRef") or (lm.get("apiKeySecretRef") if inherits else None)
        if base:
            env.append(_env(api.fallback_base_env(index), base))
        if key_ref:
            env.append(_secret_env(api.fallback_key_env(index), key_ref))
    return env


def _provider(model: str) -> str:
    """litellm's provider prefix (`openai/gpt-4o` -> `openai`), the runtime's `provider_of`."""
    provider, sep, _ = model.partition("/")
    return provider if sep else ""


def _with_user_env(env: list[Obj], extra: list[Mapping[str, Any]]) -> list[Obj]:
    """`spec.runtime.env` wins over the operator's variables of the same name (replaced in
    place, since a container's env is a map keyed by name for server-side apply)."""
    merged = {entry["name"]: entry for entry in env}
    for entry in extra:
        merged[entry["name"]] = {key: entry[key] for key in ("name", "value", "valueFrom") if key in entry}
    return list(merged.values())


def lm_pricing(spec: Mapping[str, Any]) -> dict[str, Any]:
    """Prices of the fallback models for LM_PRICING (pod-level, like the fallbacks); the
    primary's and the variants' prices travel with their revision in the routing table."""
    fallbacks = section(spec, "lm").get("fallbacks") or []
    return {entry["model"]: dict(entry["pricing"]) for entry in fallbacks if entry.get("model") and entry.get("pricing")}


def redis_env(owner: Owner) -> list[Obj]:
    """REDIS_URL by mode. Managed: the password joins the URL by `$(REDIS_PASSWORD)` expansion,
    which the kubelet performs only for variables defined earlier in the list."""
    mode = owner.redis_mode
    if mode == "External":
        return [_secret_env("REDIS_URL", section(owner.spec, "redis").get("urlSecretRef") or {}, "url")]
    if mode != "Managed":
        return []
    host = f"{api.redis_name(owner.name)}.{owner.namespace}.svc"
    return [
        _secret_env("REDIS_PASSWORD", {"name": api.redis_name(owner.name), "key": api.REDIS_PASSWORD_KEY}),
        _env("REDIS_URL", f"redis://:$(REDIS_PASSWORD)@{host}:{api.REDIS_PORT}/0"),
    ]


def _restricted_container_security() -> Obj:
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
    }


def _pod_security(uid: int) -> Obj:
    return {
        "runAsNonRoot": True,
        "runAsUser": uid,
        "runAsGroup": uid,
        "fsGroup": uid,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def runtime_volumes(owner: Owner) -> tuple[list[Obj], list[Obj]]:
    """(volumes, mounts): writable /tmp, the routing table (programs travel inside it) and the
    cache warm-up inputs when spec.cache.warmup names them. The routing ConfigMap named here is
    the SINGLE Deployment's; `runtime_deployment` points a color's pods at that color's."""
    volumes: list[Obj] = [
        {"name": "tmp", "emptyDir": {}},
        {"name": "routing", "configMap": {"name": api.routing_name(owner.name)}},
    ]
    mounts: list[Obj] = [
        {"name": "tmp", "mountPath": "/tmp"},
        {"name": "routing", "mountPath": api.ROUTING_DIR, "readOnly": True},
    ]
    ref = section(owner.spec, "cache", "warmup").get("configMapRef")
    if ref:
        # The one key, under a fixed name: CACHE_WARMUP_PATH does not depend on the user's key.
        item = {"key": ref.get("key") or api.DEFAULT_WARMUP_KEY, "path": api.WARMUP_FILE}
        volumes.append({"name": "cache-warmup", "configMap": {"name": ref["name"], "items": [item]}})
        mounts.append({"name": "cache-warmup", "mountPath": api.WARMUP_DIR, "readOnly": True})
    return volumes, mounts


def pod_template_hash(owner: Owner, redis_secret_uid: str | None) -> str:
    """What the pods were started with and cannot pick up while running: the environment
    and which Redis password Secret. Never the routing table (weights and revisions reach
    running pods without a restart). The password's value is not in the template, so
    without this hash a recreated Secret would not roll the pods."""
    return canonical_hash({"env": runtime_env(owner), "redisSecret": redis_secret_uid})


def color_pod_hash(pod: Mapping[str, Any], redis_secret_uid: str | None) -> str:
    """`pod_template_hash` of a color running a stored (BlueGreen) pod template."""
    return canonical_hash({"pod": pod, "redisSecret": redis_secret_uid})


def runtime_pod(owner: Owner, settings: OperatorSettings) -> Obj:
    """The runtime pod template the spec asks for, without labels and without what belongs to
    one color (its routing ConfigMap and Redis key): what a BlueGreen revision stores."""
    runtime = section(owner.spec, "runtime")
    port = runtime_port(owner)
    volumes, mounts = runtime_volumes(owner)
    container: Obj = {
        "name": "runtime",
        "image": runtime.get("image") or settings.runtime_image,
        "imagePullPolicy": runtime.get("imagePullPolicy") or "IfNotPresent",
        "ports": [{"name": "http", "containerPort": port, "protocol": "TCP"}],
        "env": runtime_env(owner),
        "resources": dict(runtime.get("resources") or DEFAULT_RESOURCES),
        "livenessProbe": {
            "httpGet": {"path": "/health", "port": "http"},
            "periodSeconds": 10, "timeoutSeconds": 2, "failureThreshold": 3,
        },
        "readinessProbe": {
            "httpGet": {"path": "/ready", "port": "http"},
            "periodSeconds": 5, "timeoutSeconds": 2, "failureThreshold": 2,
        },
        "securityContext": _restricted_container_security(),
        "volumeMounts": mounts,
    }
    return {
        "metadata": {"annotations": {
            **(runtime.get("podAnnotations") or {}),
            "prometheus.io/scrape": "true",
            "prometheus.io/port": str(port),
            "prometheus.io/path": "/metrics",
        }},
        "spec": _runtime_pod_spec(runtime, container, volumes),
    }


def runtime_deployment(owner: Owner, color: str, pod: Mapping[str, Any], replicas: int | None,
                       config_digest: str, revision: str | None = None) -> Obj:
    """One color's runtime Deployment running `pod` (SINGLE: the Deployment named after the
    resource). `replicas` None leaves the count to the HPA; `revision` (BlueGreen) is written on
    the pod template, which is how the rollout sees which revision a color's pods run."""
    selector = api.color_selector(owner.name, color)
    template = json.loads(json.dumps(pod))  # a deep copy: the stored template is shared
    if color:
        _point_at_color(owner, template["spec"], color)
    annotations = {**template["metadata"].get("annotations", {}), api.ANNOTATION_CONFIG_HASH: config_digest}
    if revision:
        annotations[api.ANNOTATION_REVISION] = revision
    spec: Obj = {
        "selector": {"matchLabels": selector},
        "revisionHistoryLimit": 5,
        # Serving capacity never drops during a rollout: surge first, then retire.
        "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
        "template": {
            "metadata": {"labels": {**api.common_labels(owner.name), **selector}, "annotations": annotations},
            "spec": template["spec"],
        },
    }
    if replicas is not None:
        spec["replicas"] = replicas
    meta = metadata(owner, api.deployment_name(owner.name, color), api.COMPONENT_RUNTIME)
    if color:
        meta["labels"][api.LABEL_COLOR] = color
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta, "spec": spec}


def _point_at_color(owner: Owner, pod_spec: Obj, color: str) -> None:
    """A color's pods read that color's routing table: its ConfigMap and its Redis key."""
    for volume in pod_spec.get("volumes", []):
        if volume.get("name") == "routing":
            volume["configMap"] = {"name": api.routing_name(owner.name, color)}
    for container in pod_spec.get("containers", []):
        for entry in container.get("env", []):
            if entry.get("name") == "ROUTING_REDIS_KEY" and "value" in entry:
                entry["value"] = api.routing_redis_key(owner.namespace, owner.name, color)


def _runtime_pod_spec(runtime: Mapping[str, Any], container: Obj, volumes: list[Obj]) -> Obj:
    pod: Obj = {
        # The runtime never calls the Kubernetes API: no token in its pods.
        "automountServiceAccountToken": False,
        "securityContext": _pod_security(RUNTIME_UID),
        "containers": [container],
        "volumes": volumes,
    }
    for key in ("serviceAccountName", "nodeSelector", "tolerations"):
        if runtime.get(key):
            pod[key] = runtime[key]
    return pod


def runtime_service(owner: Owner, color: str = api.SINGLE, preview: bool = False) -> Obj:
    """The active Service `<name>` (or the preview Service `<name>-preview`) selecting one
    color's pods; SINGLE selects every runtime pod of the resource."""
    name = api.preview_name(owner.name) if preview else api.runtime_name(owner.name)
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(owner, name, api.COMPONENT_RUNTIME),
        "spec": {
            "type": "ClusterIP",
            "selector": api.color_selector(owner.name, color),
            "ports": [{"name": "http", "port": api.SERVICE_PORT, "targetPort": "http", "protocol": "TCP"}],
        },
    }


def autoscaler(owner: Owner, color: str = api.SINGLE) -> Obj | None:
    """The HPA of the Deployment that takes the live traffic (the active color's)."""
    scaling = owner.spec.get("autoscaling")
    if not scaling:
        return None
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": metadata(owner, api.runtime_name(owner.name), api.COMPONENT_RUNTIME),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment",
                               "name": api.deployment_name(owner.name, color)},
            "minReplicas": int(scaling.get("minReplicas", 1)),
            "maxReplicas": int(scaling.get("maxReplicas", max(int(scaling.get("minReplicas", 1)), 1))),
            "metrics": [{
                "type": "Resource",
                "resource": {"name": "cpu", "target": {
                    "type": "Utilization",
                    "averageUtilization": int(scaling.get("targetCPUUtilizationPercentage", 70)),
                }},
            }],
        },
    }


def disruption_budget(owner: Owner) -> Obj:
    """At most one runtime pod evicted at a time; unlike minAvailable, this never blocks a
    node drain when there is a single replica."""
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": metadata(owner, api.runtime_name(owner.name), api.COMPONENT_RUNTIME),
        "spec": {
            "maxUnavailable": 1,
            "selector": {"matchLabels": api.pod_selector(owner.name, api.COMPONENT_RUNTIME)},
        },
    }


# --- managed Redis ----------------------------------------------------------------------


def redis_secret(owner: Owner, password: str) -> Obj:
    """The managed Redis password; created once (never applied again) so it never changes."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": metadata(owner, api.redis_name(owner.name), api.COMPONENT_REDIS),
        "type": "Opaque",
        "data": {api.REDIS_PASSWORD_KEY: base64.b64encode(password.encode()).decode()},
    }


def redis_server_args(max_memory_mb: int) -> list[str]:
    """How the managed Redis keeps what must outlive it while it stays a bounded cache.

    * `volatile-lru`: under memory pressure only keys with a TTL are evicted. Every cache entry,
      window bucket, report and rate-limit bucket has one; the budget's spend and reservations
      and the routing tables have none, so eviction takes cache entries and never the day's
      spend (`allkeys-lru` could take any key, the budget's included).
    * An append-only file, fsynced every second, in the pod's `/data` volume: Redis killed or
      crashed comes back with what it had (the container restarts in the same pod and the
      emptyDir survives). A replaced pod starts empty; the runtime pods then write back the
      spend they saw (`resilience/budget.py`). No RDB snapshots: the AOF is the one copy.
    """
    return [
        "--save", "", "--appendonly", "yes", "--appendfsync", "everysec",
        "--maxmemory", f"{max_memory_mb}mb", "--maxmemory-policy", "volatile-lru",
    ]


def redis_children(owner: Owner, settings: OperatorSettings, redis_secret_uid: str | None) -> list[Obj]:
    """Deployment, Service and NetworkPolicy of the managed Redis (the Secret is separate)."""
    name = api.redis_name(owner.name)
    selector = api.pod_selector(owner.name, api.COMPONENT_REDIS)
    managed = section(owner.spec, "redis", "managed")
    max_memory = int(managed.get("maxMemoryMegabytes") or DEFAULT_REDIS_MAXMEMORY_MB)
    container: Obj = {
        "name": "redis",
        "image": managed.get("image") or settings.redis_image,
        "imagePullPolicy": "IfNotPresent",
        "args": ["--requirepass", "$(REDIS_PASSWORD)", *redis_server_args(max_memory)],
        "env": [_secret_env("REDIS_PASSWORD", {"name": name, "key": api.REDIS_PASSWORD_KEY})],
        "ports": [{"name": "redis", "containerPort": api.REDIS_PORT, "protocol": "TCP"}],
        "resources": dict(managed.get("resources") or _redis_resources(max_memory)),
        "readinessProbe": {"tcpSocket": {"port": "redis"}, "periodSeconds": 5},
        "livenessProbe": {"tcpSocket": {"port": "redis"}, "periodSeconds": 10},
        "securityContext": _restricted_container_security(),
        "volumeMounts": [{"name": "data", "mountPath": "/data"}],
    }
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata(owner, name, api.COMPONENT_REDIS),
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": selector},
            "strategy": {"type": "Recreate"},
            "template": {
                "metadata": {
                    "labels": {**api.common_labels(owner.name), **selector},
                    # A new password Secret (deleted by hand, recreated) restarts Redis with it.
                    "annotations": {api.ANNOTATION_CONFIG_HASH: canonical_hash({"redisSecret": redis_secret_uid})},
                },
                "spec": {
                    "automountServiceAccountToken": False,
                    "securityContext": _pod_security(REDIS_UID),
                    "containers": [container],
                    "volumes": [{"name": "data", "emptyDir": {}}],
                },
            },
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(owner, name, api.COMPONENT_REDIS),
        "spec": {
            "type": "ClusterIP",
            "selector": selector,
            "ports": [{"name": "redis", "port": api.REDIS_PORT, "targetPort": "redis", "protocol": "TCP"}],
        },
    }
    policy = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": metadata(owner, name, api.COMPONENT_REDIS),
        "spec": {
            "podSelector": {"matchLabels": selector},
            "policyTypes": ["Ingress"],
            "ingress": [{
                # The runtime pods, and the operator (it pushes routing tables and reads the
                # analysis windows), from whatever namespace it runs in.
                "from": [
                    {"podSelector": {"matchLabels": api.pod_selector(owner.name, api.COMPONENT_RUNTIME)}},
                    {"namespaceSelector": {}, "podSelector": {"matchLabels": {api.LABEL_NAME: api.MANAGED_BY}}},
                ],
                "ports": [{"protocol": "TCP", "port": api.REDIS_PORT}],
            }],
        },
    }
    return [deployment, service, policy]


def _redis_resources(max_memory_mb: int) -> Obj:
    """Room for maxmemory plus Redis' own overhead (about a quarter more)."""
    return {
        "requests": {"cpu": "50m", "memory": f"{max_memory_mb}Mi"},
        "limits": {"memory": f"{max_memory_mb + max_memory_mb // 4 + 32}Mi"},
    }


# --- everything -------------------------------------------------------------------------


def redis_children_of(owner: Owner, settings: OperatorSettings, redis_secret_uid: str | None) -> list[Obj]:
    """The managed Redis' children when the spec asks for one."""
    return redis_children(owner, settings, redis_secret_uid) if owner.redis_mode == "Managed" else []


def serving_children(owner: Owner, active: str, preview: str | None, scaled: str) -> list[Obj]:
    """What routes to and guards the runtime pods: the active Service on the `active` color,
    the preview Service on `preview` (None: none), the HPA on `scaled`, the PDB over all."""
    built = [runtime_service(owner, active)]
    if preview is not None:
        built.append(runtime_service(owner, preview, preview=True))
    hpa = autoscaler(owner, scaled)
    if hpa is not None:
        built.append(hpa)
    built.append(disruption_budget(owner))
    return built
