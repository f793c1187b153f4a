"""One pass over one DSPyDeployment: observe, decide the rollout, write status, write children.

Every handler (change handlers, the resync and rollout timers, the child watchers) runs
this same pass, one at a time per resource (`serialize`). In order:

1. read: the spec's references (`inputs`), the live children (the index), the runtime
   pods' reports in Redis when the rollout needs them (`observe`);
2. decide: the pure step machine (`rollout.machine.decide`: canary or blue/green) returns
   the new rollout state, and `reconcile.layout` the Deployments it calls for;
3. commit the decision: the rollout fields of status are written first, with the body's
   resourceVersion as a precondition (a 409 retakes the decision from a fresh read);
4. apply what status now says: revision ConfigMaps, the routing tables (ConfigMap and the
   Redis push, one per color) and the pod-level children, through the one writer;
5. report: conditions and phase from what was observed, written only when changed.

Each pass is timed and counted by result in the operator's metrics (`metrics.py`), with the
rollout Events it posted, the verdict it recorded and the phase it reported.

Status before children: killed between the two, the operator finds the decision in status
and re-applies it; killed before, nothing was decided. Either way no step is lost or redone.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime, timezone
from typing import Any

import kopf

from dspy_operator import api, observe
from dspy_operator.errors import KubeApiError, SpecProblems, as_temporary
from dspy_operator.handlers.context import Context
from dspy_operator.handlers.indexes import Key, children_of
from dspy_operator.metrics import CONFLICT
from dspy_operator.reconcile.common import Owner, canonical_hash
from dspy_operator.reconcile.core import Result, Served, reconcile
from dspy_operator.reconcile.inputs import Inputs, resolve
from dspy_operator.reconcile.revisions import Revision, known_revisions, revision_of
from dspy_operator.reconcile.routing import next_serial, table_hash, table_text
from dspy_operator.reconcile.desired import runtime_pod as desired_pod
from dspy_operator.reconcile.layout import color_reports, layout, tables_of
from dspy_operator.rollout.canary import EVAL_PASSED, EVAL_FAILED, Observations, analysis_due
from dspy_operator.rollout.machine import decide
from dspy_operator.rollout.evaluation import evaluation_request
from dspy_operator.rollout.state import Event, Plan, RolloutState
from dspy_operator.runtimebus import BusUnavailable, RuntimeBus
from dspy_operator.status import conditions as c
from dspy_operator.status.report import Pods, RolloutReport, condition_message, desired_status, status_changes

Logger = logging.Logger | logging.LoggerAdapter[Any]
RETRY_CONFLICT_SECONDS = 1.0


class _Conflict(Exception):
    """Our rollout status write met a newer object (409)."""


def sync(body: Mapping[str, Any], context: Context, index: kopf.Index[Key, dict[str, Any]], logger: Logger,
         *, fresh: bool, retry: int) -> Result:
    """Run the pass; a second conflict in a row is retried by kopf a second later."""
    uid = body["metadata"]["uid"]
    with context.serializer.hold(uid), context.metrics.reconciling() as outcome:
        snapshot = context.serializer.freshest(uid, body)
        try:
            try:
                return outcome.of(_pass(snapshot, context, index, logger, fresh))
            except _Conflict:
                latest = context.kube.get(api.KIND, snapshot["metadata"]["namespace"], snapshot["metadata"]["name"])
                if latest is None:
                    raise kopf.TemporaryError("the resource is gone", delay=RETRY_CONFLICT_SECONDS) from None
                return outcome.of(_pass(latest, context, index, logger, fresh))
        except _Conflict:
            outcome.result = CONFLICT
            raise kopf.TemporaryError("status changed during the pass; retrying", delay=RETRY_CONFLICT_SECONDS) from None
        except KubeApiError as error:
            raise as_temporary(error, retry) from error


def raise_problems(result: Result, retry: int) -> None:
    """Change handlers retry spec problems with backoff; the timers only report them."""
    if result.observation.problems:
        raise as_temporary(SpecProblems(result.observation.problems), retry)


def _pass(body: dict[str, Any], context: Context, index: kopf.Index[Key, dict[str, Any]], logger: Logger,
          fresh: bool) -> Result:
    owner = Owner.from_body(body)
    status: dict[str, Any] = dict(body.get("status") or {})
    inputs = Inputs() if owner.spec.get("paused") else resolve(context.references, owner.namespace, owner.spec, fresh)
    observed = children_of(index, owner.namespace, owner.name)
    now = datetime.now(timezone.utc)
    if owner.spec.get("paused") or inputs.problems:
        result = reconcile(body, inputs, observed, context.kube, context.settings, logger, served=None)
        _report(body, context, status, result, None, now, ())
        return result

    plan = Plan.from_spec(owner.spec)
    pod = desired_pod(owner, context.settings) if plan.strategy == "BlueGreen" else None
    desired = revision_of(owner.spec, inputs, pod)
    known = {**known_revisions(owner, observed), desired.name: desired}
    state = RolloutState.from_status(status)
    url = context.redis.url(owner, observed)
    bus = context.buses.for_url(url) if url else None
    problem: str | None = None if bus is not None or owner.redis_mode == "Disabled" else "its URL is not known yet"
    request = _evaluation_request(plan, state.stable, desired.name, inputs)
    observations = Observations(
        desired=desired.name, now=now, request=pending_request(body, state), kept=frozenset(known),
        evaluation_id=request["id"] if request else None, colors=color_reports(owner.name, observed),
        equivalent=_equivalent(state.stable, desired, known),
    )
    try:
        observations = _with_runtime_reports(observations, bus, owner, plan, state)
    except BusUnavailable as error:
        problem = str(error)
    if problem is not None:
        observations = replace(observations, reports_unavailable=True)
    decision = decide(plan, state, observations)
    new_state, events = _servable(plan, decision.state, decision.events, known, desired.name, now)

    placed = layout(plan, new_state, observations)
    shadowed = frozenset({new_state.canary}) if plan.shadow and plan.strategy == "Canary" and new_state.canary else frozenset()
    tables = tables_of(owner.spec, placed, known, shadowed)
    digest = table_hash(tables[api.SINGLE]) if list(tables) == [api.SINGLE] else table_hash(tables)
    routing = status.get("routing") or {}
    serial = int(routing.get("serial") or 0)
    if routing.get("hash") != digest:
        serial = next_serial(serial, int(now.timestamp() * 1000))
    active = placed.slot(placed.active)
    weights = dict(active.table) if active is not None and active.table is not None else dict(new_state.served())
    committed = {**new_state.to_status(), "routing": {**routing, "serial": serial, "hash": digest, "weights": weights}}
    changes = status_changes(status, committed)
    if changes:
        status = _commit(body, context, changes)

    names = new_state.referenced() | {desired.name} | {name for slot in placed.slots for name, _ in slot.table or ()}
    kept = [known[name] for name in sorted(names) if name in known]
    texts = {color: table_text(table, serial) for color, table in tables.items()}
    result = reconcile(body, inputs, observed, context.kube, context.settings, logger, Served(kept, placed, texts))
    pods = experiment = shadow = None
    if bus is not None and problem is None:
        try:
            pods = _publish(bus, owner, new_state, texts, serial, request)
            if observe.experiment_due(owner, new_state, context.experiments):
                experiment = observe.experiment(bus, owner, new_state, status.get("experiment"), now)
            shadow = observe.shadow(bus, owner, new_state, status.get("shadow"), now, context.shadows)
        except BusUnavailable as error:
            problem = str(error)
    report = RolloutReport(plan=plan, state=new_state, desired=desired.name, redis_problem=problem,
                           pods=pods, experiment=experiment, shadow=shadow,
                           shadow_gone=not observe.has_shadow(owner, new_state), now=now)
    _report(body, context, status, result, report, now, events)
    context.metrics.rollout(state.last_analysis, new_state.last_analysis, (event.reason for event in events))
    return result


def _evaluation_request(plan: Plan, stable: str, canary: str, inputs: Inputs) -> dict[str, Any] | None:
    """The evaluation request a canary needs (stable vs canary on the dev set)."""
    if plan.gate is None or inputs.devset is None or not stable or canary == stable:
        return None
    return evaluation_request(stable, canary, plan.gate.metric, inputs.devset)


def pending_request(body: Mapping[str, Any], state: RolloutState) -> dict[str, Any] | None:
    """The `kubectl dspy` request in the annotation, unless status already answers it. An
    annotation that is not a request is answered too (Rejected), once."""
    raw = ((body.get("metadata") or {}).get("annotations") or {}).get(api.ANNOTATION_REQUEST)
    if not raw:
        return None
    try:
        request = json.loads(raw)
        request_id, action = str(request["id"]), str(request["action"])
    except (ValueError, KeyError, TypeError):
        request_id, action = canonical_hash(raw)[:16], f"<{api.ANNOTATION_REQUEST} is not a request>"
    if request_id == (state.last_request or {}).get("id"):
        return None
    return {"id": request_id, "action": action}


def _with_runtime_reports(observations: Observations, bus: RuntimeBus | None, owner: Owner, plan: Plan,
                          state: RolloutState) -> Observations:
    """The analysis verdict when one is due and its source is reachable (the pods' windows need
    Redis, a Prometheus source does not), and the evaluation gate's result (Redis only)."""
    judgement = None
    if analysis_due(plan, state, observations.now) and (bus is not None or observe.reads_prometheus(plan)):
        judgement = observe.judgement(bus, owner, plan, state, observations.now)
    gate = state.evaluation or {}
    evaluation = None
    if bus is not None and state.canary and gate.get("id") and gate.get("state") not in (EVAL_PASSED, EVAL_FAILED):
        evaluation = observe.evaluation(bus, owner, str(gate["id"]))
    return replace(observations, judgement=judgement, evaluation=evaluation)


def _equivalent(stable: str, desired: Revision, known: Mapping[str, Revision]) -> str:
    """The stable revision when it serves the spec's program under the other strategy family's
    naming (BlueGreen revisions hold the pod template, the others do not); empty otherwise."""
    current = known.get(stable)
    if current is None or stable == desired.name or (current.pod is None) == (desired.pod is None):
        return ""
    return stable if current.variants == desired.variants else ""


def _servable(plan: Plan, state: RolloutState, events: tuple[Event, ...], known: Mapping[str, Revision],
              desired: str, now: datetime) -> tuple[RolloutState, tuple[Event, ...]]:
    """A stable revision whose ConfigMap was deleted by hand cannot be routed to: the spec's
    revision takes over at once, said loudly."""
    if not state.stable or state.stable in known:
        return state, events
    lost = Event("RevisionLost", f"the ConfigMap of stable revision {state.stable} is gone: revision {desired} "
                 "now serves all traffic", warning=True)
    return state.with_promotion(desired, now, plan.history_limit), (*events, lost)


def _commit(body: dict[str, Any], context: Context, changes: Mapping[str, Any]) -> dict[str, Any]:
    metadata = body["metadata"]
    try:
        written = context.kube.patch_status(metadata["namespace"], metadata["name"], dict(changes),
                                            resource_version=metadata.get("resourceVersion"))
    except KubeApiError as error:
        if error.status == 409:
            raise _Conflict() from error
        raise
    context.serializer.remember(metadata["uid"], written)
    metadata["resourceVersion"] = written["metadata"].get("resourceVersion")
    body["status"] = written.get("status") or {}
    return dict(body["status"])


def _publish(bus: RuntimeBus, owner: Owner, state: RolloutState, texts: Mapping[str, str], serial: int,
             request: Mapping[str, Any] | None) -> Pods:
    """Push each color's table when Redis does not hold this serial, ask again for the evaluation
    the gate still waits for (`request`: the one this pass built for the spec's revision), and
    read what the pods report (who serves the tables, at which degradation level)."""
    prefix = api.redis_prefix(owner.namespace, owner.name)
    for color, text in texts.items():
        key = api.routing_redis_key(owner.namespace, owner.name, color)
        if bus.table_serial(key) != serial:
            bus.publish_table(key, text, serial)
    gate = state.evaluation or {}
    if (request is not None and state.canary and gate.get("id") == request["id"]
            and gate.get("state") not in (EVAL_PASSED, EVAL_FAILED)):
        bus.request_evaluation(prefix, request)
    return observe.pods(bus, owner, serial, time.time())


def _report(body: Mapping[str, Any], context: Context, status: Mapping[str, Any], result: Result,
            rollout: RolloutReport | None, now: datetime, events: tuple[Event, ...]) -> None:
    new_status = desired_status(status, result.observation, c.now_rfc3339(now), rollout)
    changes = status_changes(status, new_status)
    if changes:
        metadata = body["metadata"]
        written = context.kube.patch_status(metadata["namespace"], metadata["name"], changes)
        context.serializer.remember(metadata["uid"], written)
    context.metrics.phase(body["metadata"]["uid"], new_status.get("phase"))
    for event in events:
        (kopf.warn if event.warning else kopf.info)(body, reason=event.reason, message=event.message)
    _post_events(body, status, new_status, result)


def _post_events(body: Mapping[str, Any], old: Mapping[str, Any], new: Mapping[str, Any], result: Result) -> None:
    """An Event per significant action: children written, a problem found or fixed, a phase change."""
    if result.writes:
        kopf.info(body, reason="Applied", message=result.writes.summary())
    was_degraded, old_message = condition_message(old.get("conditions") or [], c.DEGRADED)
    is_degraded, new_message = condition_message(new.get("conditions") or [], c.DEGRADED)
    if is_degraded == c.TRUE and (was_degraded != c.TRUE or old_message != new_message):
        reason = (c.find(new["conditions"], c.DEGRADED) or {}).get("reason", c.REASON_SPEC_INVALID)
        kopf.warn(body, reason=str(reason), message=new_message)
    elif was_degraded == c.TRUE and is_degraded != c.TRUE:
        kopf.info(body, reason="Recovered", message="no longer degraded")
    was_progressing = c.find(old.get("conditions") or [], c.PROGRESSING) or {}
    progressing = c.find(new.get("conditions") or [], c.PROGRESSING) or {}
    if progressing.get("reason") == c.REASON_POD_LEVEL_ROLLOUT and was_progressing.get("reason") != c.REASON_POD_LEVEL_ROLLOUT:
        kopf.info(body, reason="PodLevelRollout", message=str(progressing.get("message") or ""))
    if old.get("phase") != new.get("phase"):
        kopf.info(body, reason="PhaseChanged", message=f"{old.get('phase') or 'None'} -> {new['phase']}")
