"""Every spec field the operator reads exists in the CRD (crds/ is the API's single source)."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import pytest
import yaml

CRD = Path(__file__).resolve().parents[3] / "crds" / "dspy.dev_dspydeployments.yaml"

# The fields reconcile/desired.py and reconcile/inputs.py read, as paths under spec
# ("[]" steps into list items).
READ_BY_OPERATOR = [
    "program.signature", "program.module", "program.configMapRef.name", "program.configMapRef.key",
    "lm.model", "lm.apiBase", "lm.apiKeySecretRef.name", "lm.apiKeySecretRef.key", "lm.temperature",
    "lm.maxTokens", "lm.timeoutSeconds", "lm.pricing.promptPerMillion", "lm.pricing.completionPerMillion",
    "lm.fallbacks[].model", "lm.fallbacks[].apiKeySecretRef.name", "lm.fallbacks[].pricing",
    "replicas", "autoscaling.minReplicas", "autoscaling.maxReplicas", "autoscaling.targetCPUUtilizationPercentage",
    "variants[].name", "variants[].weight", "variants[].program.module", "variants[].program.configMapRef.name",
    "variants[].lm.model", "variants[].lm.apiBase", "variants[].lm.apiKeySecretRef.name",
    "variants[].lm.temperature", "variants[].lm.maxTokens", "variants[].lm.pricing",
    "routing.stickyHeader",
    "cache.enabled", "cache.memory.maxEntries", "cache.memory.ttlSeconds", "cache.redis.ttlSeconds",
    "cache.redis.jitterSeconds", "cache.memory.warmEntries", "cache.warmup.configMapRef.name",
    "cache.warmup.configMapRef.key", "cache.warmup.timeoutSeconds", "cache.adminTokenSecretRef.name",
    "cache.adminTokenSecretRef.key",
    "redis.mode", "redis.urlSecretRef.name", "redis.urlSecretRef.key", "redis.managed.image",
    "redis.managed.maxMemoryMegabytes", "redis.managed.resources",
    "circuitBreaker.failureThreshold", "circuitBreaker.successThreshold", "circuitBreaker.openSeconds",
    "rateLimit.requestsPerSecond", "rateLimit.burst", "rateLimit.keyHeader", "rateLimit.totalRequestsPerSecond",
    "rateLimit.totalBurst", "rateLimit.scope", "budget.dailyUsd",
    "runtime.image", "runtime.imagePullPolicy", "runtime.port", "runtime.logLevel", "runtime.logFormat",
    "runtime.resources", "runtime.env", "runtime.podAnnotations", "runtime.nodeSelector", "runtime.tolerations",
    "runtime.serviceAccountName", "paused",
    # shadow traffic (reconcile/routing.py, reconcile/revisions.py, observe.py)
    "variants[].shadow", "shadow.samplePercent", "shadow.maxConcurrent", "shadow.maxDailyUsd", "rollout.canary.shadow",
]
WRITTEN_STATUS = ["phase", "observedGeneration", "replicas", "readyReplicas", "readySummary", "selector",
                  "revision", "conditions",
                  # the status.shadow block (rollout/shadow.py)
                  "shadow.window", "shadow.updated", "shadow.targets[].revision", "shadow.targets[].variant",
                  "shadow.targets[].requests", "shadow.targets[].agreementRate", "shadow.targets[].agreementCI",
                  "shadow.targets[].errorRate", "shadow.targets[].p95LatencySeconds",
                  "shadow.targets[].liveP95LatencySeconds", "shadow.targets[].costPerRequestUsd",
                  "shadow.targets[].dropped"]


@functools.cache
def _schema() -> dict[str, Any]:
    crd = yaml.safe_load(CRD.read_text())
    return crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]


def _resolve(node: dict[str, Any], path: str) -> dict[str, Any]:
    for step in path.split("."):
        is_list = step.endswith("[]")
        node = node["properties"][step.removesuffix("[]")]
        if is_list:
            node = node["items"]
    return node


@pytest.mark.parametrize("path", READ_BY_OPERATOR)
def test_spec_field_exists_in_the_crd(path: str) -> None:
    assert _resolve(_schema()["spec"], path) is not None


@pytest.mark.parametrize("path", WRITTEN_STATUS)
def test_status_field_exists_in_the_crd(path: str) -> None:
    assert _resolve(_schema()["status"], path) is not None
