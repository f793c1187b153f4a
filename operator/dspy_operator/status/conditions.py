"""A tiny conditions library: set a condition, keep lastTransitionTime unless the status flips.

Every reason is a named constant so that alerts, tests and `kubectl wait` can rely on it.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from typing import Any, Final

Condition = dict[str, Any]

# Condition types.
READY: Final = "Ready"
PROGRESSING: Final = "Progressing"
DEGRADED: Final = "Degraded"
REDIS_READY: Final = "RedisReady"
CONDITION_TYPES: Final = (READY, PROGRESSING, DEGRADED, REDIS_READY)

TRUE: Final = "True"
FALSE: Final = "False"
UNKNOWN: Final = "Unknown"

# Reasons.
REASON_ALL_REPLICAS_READY: Final = "AllReplicasReady"
REASON_REPLICAS_NOT_READY: Final = "ReplicasNotReady"
REASON_DEPLOYMENT_MISSING: Final = "DeploymentMissing"
REASON_ROLLOUT_IN_PROGRESS: Final = "RolloutInProgress"
REASON_ROLLOUT_COMPLETE: Final = "RolloutComplete"
REASON_PROGRESS_DEADLINE_EXCEEDED: Final = "ProgressDeadlineExceeded"
REASON_SPEC_INVALID: Final = "SpecInvalid"
REASON_AS_EXPECTED: Final = "AsExpected"
REASON_PAUSED: Final = "Paused"
REASON_REDIS_AVAILABLE: Final = "RedisAvailable"
REASON_REDIS_NOT_READY: Final = "RedisNotReady"
REASON_REDIS_EXTERNAL: Final = "ExternalRedis"
REASON_REDIS_DISABLED: Final = "RedisDisabled"
REASON_CANARY_IN_PROGRESS: Final = "CanaryInProgress"
REASON_EVALUATING: Final = "Evaluating"
REASON_ROLLOUT_PAUSED: Final = "RolloutPaused"
REASON_POD_LEVEL_ROLLOUT: Final = "PodLevelRollout"
REASON_ROLLOUT_ABORTED: Final = "RolloutAborted"
REASON_ROLLED_BACK: Final = "RolledBack"
REASON_ANALYSIS_UNAVAILABLE: Final = "AnalysisUnavailable"
REASON_SERVING_DEGRADED: Final = "ServingDegraded"
REASON_PREVIEW_STARTING: Final = "PreviewStarting"
REASON_PREVIEW_READY: Final = "PreviewReady"
REASON_SWITCHING: Final = "Switching"
REASON_MIGRATING: Final = "Migrating"

# Phases.
PHASE_PENDING: Final = "Pending"
PHASE_PROGRESSING: Final = "Progressing"
PHASE_HEALTHY: Final = "Healthy"
PHASE_DEGRADED: Final = "Degraded"
PHASE_PAUSED: Final = "Paused"


def now_rfc3339(now: datetime | None = None) -> str:
    """Kubernetes' time format: UTC, seconds precision, `Z` suffix."""
    moment = now or datetime.now(timezone.utc)
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def find(conditions: Sequence[Mapping[str, Any]], type_: str) -> Mapping[str, Any] | None:
    return next((condition for condition in conditions if condition.get("type") == type_), None)


def set_condition(
    conditions: Sequence[Mapping[str, Any]],
    type_: str,
    status: str,
    reason: str,
    message: str,
    generation: int,
    now: str,
) -> list[Condition]:
    """A new list with `type_` set; its lastTransitionTime moves only when `status` changes."""
    updated = [copy.deepcopy(dict(condition)) for condition in conditions if condition.get("type") != type_]
    previous = find(conditions, type_)
    transition = now if previous is None or previous.get("status") != status else previous.get("lastTransitionTime", now)
    updated.append({
        "type": type_,
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": transition,
        "observedGeneration": generation,
    })
    order = {name: index for index, name in enumerate(CONDITION_TYPES)}
    return sorted(updated, key=lambda condition: order.get(condition["type"], len(order)))


def is_true(conditions: Sequence[Mapping[str, Any]], type_: str) -> bool:
    condition = find(conditions, type_)
    return condition is not None and condition.get("status") == TRUE


def derive_phase(conditions: Sequence[Mapping[str, Any]], paused: bool) -> str:
    """One word for humans and printer columns, derived from the conditions only.

    Paused wins (the user asked for it); then Degraded (something needs a human); no
    runtime Deployment yet is Pending; a rollout under way is Progressing; all replicas
    ready is Healthy; anything else (pods not ready yet) is still Progressing.
    """
    if paused:
        return PHASE_PAUSED
    if is_true(conditions, DEGRADED):
        return PHASE_DEGRADED
    ready = find(conditions, READY)
    if ready is None or ready.get("reason") == REASON_DEPLOYMENT_MISSING:
        return PHASE_PENDING
    if is_true(conditions, PROGRESSING):
        return PHASE_PROGRESSING
    if is_true(conditions, READY):
        return PHASE_HEALTHY
    return PHASE_PROGRESSING
