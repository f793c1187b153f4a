"""From observations to the status block, and from there to the smallest status patch (pure).

The status is rebuilt from what is observed every time (level-based) and then diffed
against the current one, so an idle resource yields an empty patch: no API call.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from dspy_operator import api
from dspy_operator.errors import SpecProblem
from dspy_operator.rollout.state import Plan, RolloutState, parse_time
from dspy_operator.status import conditions as c
from dspy_operator.status.pods import degraded_message



@dataclass(frozen=True, slots=True)
class Observation:
    """Everything the status depends on, gathered by one reconcile."""

    generation: int
    paused: bool
    problems: tuple[SpecProblem, ...]
    runtime: Mapping[str, Any] | None
    """The live runtime Deployment (None: not created yet)."""
    redis_mode: str
    redis: Mapping[str, Any] | None
    """The live managed Redis Deployment (None when not Managed or not created yet)."""
    selector: str


@dataclass(frozen=True, slots=True)
class Rollout:
    """A Deployment's progress in numbers, read from its status."""

    desired: int
    current: int
    updated: int
    ready: int
    available: int
    observed: bool
    deadline_exceeded: bool

    @classmethod
    def of(cls, deployment: Mapping[str, Any]) -> Rollout:
        spec, status = deployment.get("spec") or {}, deployment.get("status") or {}
        generation = int((deployment.get("metadata") or {}).get("generation") or 0)
        deadline = any(
            condition.get("type") == "Progressing" and condition.get("reason") == "ProgressDeadlineExceeded"
            for condition in status.get("conditions") or []
        )
        return cls(
            desired=int(spec.get("replicas", 1)),
            current=int(status.get("replicas") or 0),
            updated=int(status.get("updatedReplicas") or 0),
            ready=int(status.get("readyReplicas") or 0),
            available=int(status.get("availableReplicas") or 0),
            observed=int(status.get("observedGeneration") or 0) >= generation,
            deadline_exceeded=deadline,
        )

    @property
    def complete(self) -> bool:
        """Every replica runs the newest template and no old pod is left."""
        return self.observed and self.updated >= self.desired and self.current <= self.desired and self.available >= self.desired

    @property
    def serving(self) -> bool:
        return self.available >= self.desired


@dataclass(frozen=True, slots=True)
class Pods:
    """What the runtime pods' own reports said this pass (`status.pods`)."""

    served_by: str
    """`3/3`: pods serving the current table over pods reporting."""
    degradation: Mapping[str, Any] | None
    """`status.degradation`; None when no pod reports a level (degradation off, or no pod yet)."""


@dataclass(frozen=True, slots=True)
class RolloutReport:
    """What the rollout pass decided and saw, for conditions and status."""

    plan: Plan
    state: RolloutState
    desired: str
    """The revision the current spec asks for."""
    redis_problem: str | None = None
    """Why the operator could not use the runtime pods' Redis this pass (None: it could, or there is
    none). It shows in status.routing.pushError, and holds a judged canary (AnalysisUnavailable);
    the pods' own use of Redis is RedisReady's business."""
    pods: Pods | None = None
    """None: the pods' reports could not be read this pass (their last known facts stay)."""
    experiment: Mapping[str, Any] | None = None
    shadow: Mapping[str, Any] | None = None
    """status.shadow when recomputed this pass (None: leave it as it is)."""
    shadow_gone: bool = False
    """The spec has no shadow target any more: status.shadow is dropped."""
    now: datetime | None = None


def desired_status(current: Mapping[str, Any], observation: Observation, now: str,
                   rollout: RolloutReport | None = None) -> dict[str, Any]:
    """The status block this observation calls for; conditions keep their transition times.

    `rollout` is None when no rollout decision was taken this pass (paused, invalid spec):
    the rollout fields then stay as they are."""
    gen = observation.generation
    conditions: list[c.Condition] = list(current.get("conditions") or [])

    def put(type_: str, status: str, reason: str, message: str) -> None:
        nonlocal conditions
        conditions = c.set_condition(conditions, type_, status, reason, message, gen, now)

    redis_ready, redis_reason, redis_message = _redis_state(observation)
    put(c.REDIS_READY, c.TRUE if redis_ready else c.FALSE, redis_reason, redis_message)

    deployment = Rollout.of(observation.runtime) if observation.runtime is not None else None
    if deployment is None:
        put(c.READY, c.FALSE, c.REASON_DEPLOYMENT_MISSING, "the runtime Deployment does not exist yet")
    elif deployment.serving and redis_ready:
        put(c.READY, c.TRUE, c.REASON_ALL_REPLICAS_READY, f"{deployment.available}/{deployment.desired} replicas available")
    elif deployment.serving:
        put(c.READY, c.FALSE, c.REASON_REDIS_NOT_READY, redis_message)
    else:
        put(c.READY, c.FALSE, c.REASON_REPLICAS_NOT_READY, f"{deployment.available}/{deployment.desired} replicas available")

    put(c.PROGRESSING, *_progressing(observation, deployment, rollout))
    degraded = _degraded(observation, deployment, rollout) or _serving_degraded(current, rollout)
    if degraded is not None:
        put(c.DEGRADED, c.TRUE, *degraded)
    elif not observation.paused or c.find(conditions, c.DEGRADED) is None:
        put(c.DEGRADED, c.FALSE, c.REASON_AS_EXPECTED, "")

    paused = observation.paused or (rollout is not None and rollout.state.paused)
    status: dict[str, Any] = {
        "phase": c.derive_phase(conditions, paused),
        "observedGeneration": gen,
        "replicas": deployment.current if deployment else 0,
        "readyReplicas": deployment.ready if deployment else 0,
        "readySummary": f"{deployment.ready}/{deployment.desired}" if deployment else "0/0",
        "selector": observation.selector,
        "conditions": conditions,
    }
    if rollout is not None:
        status["revision"] = rollout.desired
        # How the table reaches the pods: pushed through Redis, or (push failed) the mounted file only.
        routing = {key: value for key, value in (current.get("routing") or {}).items() if key not in ("servedBy", "pushError")}
        if rollout.pods is not None:
            routing["servedBy"] = rollout.pods.served_by
        if rollout.redis_problem:
            routing["pushError"] = rollout.redis_problem
        status["routing"] = routing
        if rollout.experiment is not None:
            status["experiment"] = dict(rollout.experiment)
        if rollout.shadow is not None:
            status["shadow"] = dict(rollout.shadow)
        elif rollout.shadow_gone and current.get("shadow") is not None:
            status["shadow"] = None
        if rollout.pods is not None and rollout.pods.degradation is not None:
            status["degradation"] = dict(rollout.pods.degradation)
        elif rollout.pods is not None and current.get("degradation") is not None:
            status["degradation"] = None
    return status


def _progressing(observation: Observation, deployment: Rollout | None,
                 rollout: RolloutReport | None) -> tuple[str, str, str]:
    if observation.paused:
        return c.FALSE, c.REASON_PAUSED, "spec.paused is true: changes are held"
    if observation.problems:
        return c.FALSE, c.REASON_SPEC_INVALID, "changes are held until the spec is fixed"
    if deployment is not None and deployment.deadline_exceeded:
        return c.FALSE, c.REASON_PROGRESS_DEADLINE_EXCEEDED, "the runtime Deployment stopped making progress"
    state = rollout.state if rollout is not None else None
    if state is not None and state.canary and state.preview_color:
        assert rollout is not None
        return (c.TRUE, *preview_message(rollout.plan, state, rollout.now))
    if state is not None and state.canary:
        assert rollout is not None
        if state.paused:
            return c.TRUE, c.REASON_ROLLOUT_PAUSED, f"canary {state.canary} held at {state.weight}%: {state.pause_reason}"
        evaluation = state.evaluation or {}
        if rollout.plan.gate is not None and evaluation.get("state") != "Passed":
            return c.TRUE, c.REASON_EVALUATING, (f"canary {state.canary} is scored on the dev set before any traffic "
                                                 f"({evaluation.get('state') or 'Pending'})")
        return c.TRUE, c.REASON_CANARY_IN_PROGRESS, canary_message(rollout.plan, state)
    if deployment is None or not deployment.complete:
        reason = c.REASON_ROLLOUT_IN_PROGRESS
        message = _rollout_message(deployment)
        if rollout is not None and rollout.plan.strategy == "Canary" and _replacing_pods(observation, deployment):
            # A canary covers program, LM and variants; anything else needs new pods.
            reason = c.REASON_POD_LEVEL_ROLLOUT
            message = f"pod-level fields changed, so pods are replaced by a rolling update (not a canary): {message}"
        return c.TRUE, reason, message
    message = "all replicas run the current revision"
    if state is not None and state.scale_down:
        going = ", ".join(color or "the single Deployment" for color in sorted(state.colors)
                          if color != state.active_color)
        message += f"; {going} goes at {state.scale_down} (`kubectl dspy undo` switches back until then)"
    return c.FALSE, c.REASON_ROLLOUT_COMPLETE, message


def _replacing_pods(observation: Observation, deployment: Rollout | None) -> bool:
    """A new pod template is rolling out over pods of an older one (not a first rollout, a scale-up
    or a restarted pod): only a pod-level change of the spec does that."""
    generation = int(((observation.runtime or {}).get("metadata") or {}).get("generation") or 0)
    return deployment is not None and generation > 1 and (
        deployment.updated < deployment.desired or deployment.current > deployment.desired)


def preview_message(plan: Plan, state: RolloutState, now: datetime | None) -> tuple[str, str]:
    """(reason, message) of the Progressing condition while a blue/green preview runs."""
    where = f"preview {state.canary} in the {state.preview_color} color"
    if api.SINGLE in state.colors and state.switching:
        return c.REASON_MIGRATING, (f"moving to BlueGreen: {where} is brought to the current count; the active "
                                    "Service moves to it once those pods are available")
    if state.paused:
        return c.REASON_ROLLOUT_PAUSED, f"{where} held: {state.pause_reason}"
    if state.switching:
        return c.REASON_SWITCHING, (f"{where} is scaled to the active count; the active Service switches once "
                                    "those pods are available")
    if state.preview_ready is None:
        return c.REASON_PREVIEW_STARTING, f"{where} is starting ({plan.switch.preview_replicas} pod(s))"
    evaluation = state.evaluation or {}
    if plan.gate is not None and evaluation.get("state") != "Passed":
        return c.REASON_EVALUATING, f"{where} is scored on the dev set ({evaluation.get('state') or 'Pending'})"
    if not plan.switch.auto_promotion:
        waiting = "waiting for `kubectl dspy promote`"
    elif plan.analysis is not None and not _passed_since_ready(state):
        waiting = "auto-promotion after a passing analysis of the preview's traffic"
    else:
        ready = parse_time(state.preview_ready)
        due = ready + timedelta(seconds=plan.switch.auto_promotion_seconds) if ready else None
        left = max(0, int((due - now).total_seconds())) if due is not None and now is not None else None
        waiting = f"auto-promotion in {left}s" if left is not None else "auto-promotion"
    return c.REASON_PREVIEW_READY, f"{where} is ready behind the preview Service; {waiting}"


def _passed_since_ready(state: RolloutState) -> bool:
    passed = parse_time((state.last_analysis or {}).get("passedAt"))
    ready = parse_time(state.preview_ready)
    return (state.last_analysis or {}).get("revision") == state.canary and passed is not None and (
        ready is None or passed > ready)


def canary_message(plan: Plan, state: RolloutState) -> str:
    """`canary 77aa01bc9e0f at 10% beside stable 3f9a0c1d2e4b, step 2/4 (pause 300s)`."""
    total = len(plan.steps)
    if state.step < total:
        current = plan.steps[state.step].describe()
    elif state.weight == 0:
        current = "waiting for a passing analysis, but the canary takes no traffic: `kubectl dspy promote` decides"
    else:
        current = "promotion after a passing analysis"
    return (f"canary {state.canary} at {state.weight}% beside stable {state.stable}, "
            f"step {min(state.step + 1, total)}/{total} ({current})")


def _degraded(observation: Observation, deployment: Rollout | None,
              rollout: RolloutReport | None) -> tuple[str, str] | None:
    """(reason, message) when something needs a human; None otherwise."""
    if observation.problems:
        return c.REASON_SPEC_INVALID, "; ".join(str(problem) for problem in observation.problems)
    if deployment is not None and deployment.deadline_exceeded and not observation.paused:
        return c.REASON_PROGRESS_DEADLINE_EXCEEDED, "the runtime Deployment exceeded its progress deadline"
    if rollout is None:
        return None
    state = rollout.state
    if state.aborted and state.aborted == rollout.desired:
        request = state.last_request or {}
        if request.get("action") == "undo" and request.get("result") == "Accepted":
            return c.REASON_ROLLED_BACK, (f"rolled back to revision {state.stable}; the spec's revision {state.aborted} "
                                          "is held until the spec changes or `kubectl dspy retry`")
        why = (state.last_analysis or {}).get("message") or (state.evaluation or {}).get("message") or "aborted"
        role = "preview" if rollout.plan.strategy == "BlueGreen" else "canary"
        return c.REASON_ROLLOUT_ABORTED, (f"{role} {state.aborted} aborted, traffic is back on {state.stable}: {why}; "
                                          "change the spec or `kubectl dspy retry`")
    judged = rollout.plan.analysis is not None or rollout.plan.gate is not None
    if rollout.redis_problem and state.canary and judged:
        return c.REASON_ANALYSIS_UNAVAILABLE, (f"the canary cannot be judged, so it is held where it is: "
                                               f"{rollout.redis_problem}")
    return None


def _serving_degraded(current: Mapping[str, Any], rollout: RolloutReport | None) -> tuple[str, str] | None:
    """(reason, message) while any pod answers below its normal level: the LM path is unwell and
    users get cheaper, shorter or cached answers. Without a fresh read the last known block holds,
    so a Redis hiccup does not flap the condition."""
    block = rollout.pods.degradation if rollout is not None and rollout.pods is not None else current.get("degradation")
    message = degraded_message(block)
    return None if message is None else (c.REASON_SERVING_DEGRADED, message)


def _rollout_message(rollout: Rollout | None) -> str:
    if rollout is None:
        return "creating the runtime Deployment"
    return f"{rollout.updated}/{rollout.desired} replicas updated, {rollout.available} available"


def _redis_state(observation: Observation) -> tuple[bool, str, str]:
    if observation.redis_mode == "Disabled":
        return True, c.REASON_REDIS_DISABLED, "spec.redis.mode is Disabled: the runtime caches in memory only"
    if observation.redis_mode == "External":
        return True, c.REASON_REDIS_EXTERNAL, "spec.redis.urlSecretRef points at an external Redis (not probed)"
    if observation.redis is None:
        return False, c.REASON_REDIS_NOT_READY, "the managed Redis Deployment does not exist yet"
    rollout_of_redis = Rollout.of(observation.redis)
    if rollout_of_redis.available >= 1:
        return True, c.REASON_REDIS_AVAILABLE, "the managed Redis is available"
    return False, c.REASON_REDIS_NOT_READY, "the managed Redis pod is not ready yet"


def status_changes(current: Mapping[str, Any], desired: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON merge patch (RFC 7386) that turns `current` into `desired` for the fields
    `desired` names; empty means: write nothing.

    A merge patch merges nested objects, so a key an object no longer has must be sent as
    null (a promoted canary's weight would otherwise stay in `routing.weights`); lists are
    replaced whole."""
    patch: dict[str, Any] = {}
    for key, value in desired.items():
        old = current.get(key)
        if old == value:
            continue
        if isinstance(value, Mapping) and isinstance(old, Mapping):
            nested = status_changes(old, value)
            nested.update({gone: None for gone in old if gone not in value})
            patch[key] = nested
        else:
            patch[key] = value
    return patch


def condition_message(conditions: Sequence[Mapping[str, Any]], type_: str) -> tuple[str, str]:
    """(status, message) of a condition, empty strings when absent: to spot transitions for Events."""
    condition = c.find(conditions, type_)
    return (str(condition.get("status", "")), str(condition.get("message", ""))) if condition else ("", "")
