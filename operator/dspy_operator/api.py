"""Names shared by every part of the operator: the resource, labels, annotations, child names.

One place for them so that builders, the writer, the watchers and the tests agree on
the spelling; a label typo here would orphan children silently.
"""

from __future__ import annotations

import re
from typing import Any, Final

GROUP: Final = "dspy.dev"
VERSION: Final = "v1alpha1"
API_VERSION: Final = f"{GROUP}/{VERSION}"
KIND: Final = "DSPyDeployment"
PLURAL: Final = "dspydeployments"

FIELD_MANAGER: Final = "dspy-operator"

LABEL_NAME: Final = "app.kubernetes.io/name"
LABEL_INSTANCE: Final = "app.kubernetes.io/instance"
LABEL_MANAGED_BY: Final = "app.kubernetes.io/managed-by"
LABEL_COMPONENT: Final = "app.kubernetes.io/component"
LABEL_DEPLOYMENT: Final = "dspy.dev/deployment"
LABEL_COLOR: Final = "dspy.dev/color"

APP_NAME: Final = "dspy-runtime"
MANAGED_BY: Final = "dspy-operator"
COMPONENT_RUNTIME: Final = "runtime"
COMPONENT_REDIS: Final = "redis"
COMPONENT_PROGRAM: Final = "program"
COMPONENT_ROUTING: Final = "routing"
COMPONENT_REVISION: Final = "revision"

# Hash of what the operator last applied to a child; equal hash and equal owned
# fields mean the apply call can be skipped.
ANNOTATION_APPLIED_HASH: Final = "dspy.dev/applied-hash"
# Hash of the pod-level configuration in the pod template: a change rolls pods.
ANNOTATION_CONFIG_HASH: Final = "dspy.dev/config-hash"
# The revision a revision ConfigMap holds.
ANNOTATION_REVISION: Final = "dspy.dev/revision"
# A `kubectl dspy` request: {"id", "action", "time"}; answered in status.lastRequest.
ANNOTATION_REQUEST: Final = "dspy.dev/request"

BLUE: Final = "blue"
GREEN: Final = "green"
COLORS: Final = (BLUE, GREEN)
SINGLE: Final = ""
"""The color of the one runtime Deployment of RollingUpdate and Canary (named after the resource)."""

REVISION_LENGTH: Final = 12
LM_API_KEY_ENV: Final = "LM_API_KEY"

WARMUP_DIR: Final = "/etc/dspy/warmup"
WARMUP_FILE: Final = "warmup.jsonl"
"""Where a pod reads the cache warm-up inputs (spec.cache.warmup's ConfigMap key, mounted as this file)."""
DEFAULT_WARMUP_KEY: Final = "warmup.jsonl"
DEFAULT_ADMIN_TOKEN_KEY: Final = "token"
CACHE_ADMIN_TOKEN_HEADER: Final = "X-Cache-Admin-Token"
"""How `kubectl dspy cache clear` presents the token: the API server's service proxy removes
`Authorization`. The runtime's `api/cache_admin.py` reads the same header (a test checks)."""
PROGRAMS_DIR: Final = "/etc/dspy/programs"
ROUTING_DIR: Final = "/etc/dspy/routing"
ROUTING_FILE: Final = "routing.json"
PROGRAM_KEY: Final = "program.json"
REDIS_PASSWORD_KEY: Final = "password"
REDIS_PORT: Final = 6379
SERVICE_PORT: Final = 80
DEFAULT_RUNTIME_PORT: Final = 8080


def common_labels(name: str) -> dict[str, str]:
    """Labels every child carries: how humans, watchers and the scale selector find them."""
    return {
        LABEL_NAME: APP_NAME,
        LABEL_INSTANCE: name,
        LABEL_MANAGED_BY: MANAGED_BY,
        LABEL_DEPLOYMENT: name,
    }


def pod_selector(name: str, component: str) -> dict[str, str]:
    """The immutable selector of one component's pods (runtime or redis) of one resource."""
    return {LABEL_DEPLOYMENT: name, LABEL_COMPONENT: component}


def selector_string(labels: dict[str, str]) -> str:
    """A label selector in the string form `status.selector` (the scale subresource) needs."""
    return ",".join(f"{key}={value}" for key, value in sorted(labels.items()))


def runtime_name(name: str) -> str:
    """The active Service, HPA and PDB share the resource's name (and so does the runtime
    Deployment of RollingUpdate and Canary)."""
    return name


def deployment_name(name: str, color: str) -> str:
    """The runtime Deployment of one color: `<name>` for SINGLE, `<name>-blue`, `<name>-green`."""
    return f"{name}-{color}" if color else name


def preview_name(name: str) -> str:
    """The blue/green preview Service."""
    return f"{name}-preview"


def color_selector(name: str, color: str) -> dict[str, str]:
    """The pods of one color. SINGLE selects every runtime pod of the resource (all colors),
    which is what lets a Service follow a migration between strategies without a gap."""
    selector = pod_selector(name, COMPONENT_RUNTIME)
    return {**selector, LABEL_COLOR: color} if color else selector


def routing_name(name: str, color: str = SINGLE) -> str:
    """The routing ConfigMap mounted by one color's pods."""
    return f"{name}-routing-{color}" if color else f"{name}-routing"


def redis_name(name: str) -> str:
    return f"{name}-redis"


def revision_name(name: str, revision: str) -> str:
    """Immutable revision ConfigMaps are named by content, like ControllerRevisions."""
    return f"{name}-rev-{revision}"


def resource_id(namespace: str, name: str) -> str:
    """How runtime pods and Redis keys name the resource (`DSPY_RESOURCE`)."""
    return f"{namespace}/{name}"


def redis_prefix(namespace: str, name: str) -> str:
    """Every Redis key of one resource; the braces are a Redis Cluster hash tag (one shard)."""
    return f"dspy:{{{resource_id(namespace, name)}}}:"


def routing_redis_key(namespace: str, name: str, color: str = SINGLE) -> str:
    """Key and channel of the routing table push to one color's pods (`ROUTING_REDIS_KEY`)."""
    return redis_prefix(namespace, name) + ("routing:" + color if color else "routing")


def variant_key_env(variant: str) -> str:
    """The env var that carries a variant's own API key (routing table `lm.apiKeyEnv`)."""
    return "LM_API_KEY_" + re.sub(r"[^A-Za-z0-9]", "_", variant).upper()


def fallback_key_env(index: int) -> str:
    """The env var with the API key of the `index`-th (0-based) model in LM_FALLBACK_MODELS."""
    return f"LM_FALLBACK_API_KEY_{index}"


def fallback_base_env(index: int) -> str:
    """The env var with the API base of the `index`-th (0-based) model in LM_FALLBACK_MODELS."""
    return f"LM_FALLBACK_API_BASE_{index}"


def owner_reference(owner: dict[str, Any]) -> dict[str, Any]:
    """A controller owner reference to the DSPyDeployment: garbage collection removes children."""
    metadata = owner["metadata"]
    return {
        "apiVersion": owner.get("apiVersion", API_VERSION),
        "kind": owner.get("kind", KIND),
        "name": metadata["name"],
        "uid": metadata["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }
