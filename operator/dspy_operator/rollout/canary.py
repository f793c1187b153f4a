"""The rollout step machine (pure): `(plan, state, observations, now) -> (new state, events)`.

Data in, decisions out: the handler gathers the observations (the spec's revision, the
analysis window's verdict, the evaluation gate's result, a `kubectl dspy` request) and
writes what comes back. Nothing here reads a clock or the cluster, so every path is a
unit test, and the operator killed at any point resumes from status alone: a decision
is a function of what status says, never of what the previous process remembered.

A pass, in order:
1. a `kubectl dspy` request is answered (it may change the state before anything else);
2. the spec's revision is compared with the state: back to stable cancels a canary, an
   aborted or rolled-back revision stays held, a new one starts a canary at weight 0;
3. a paused rollout stops here (the split stays where it is);
4. the evaluation gate, when configured, must pass before the first traffic step;
5. an analysis verdict, when one was measured, counts: failures beyond failureLimit abort,
   inconclusive intervals beyond inconclusiveLimit pause, never the other way round;
6. the steps run: setWeight applies at once, a timed pause waits its seconds and, with
   analysis, for a Pass measured after it began; a pause without seconds waits for
   `promote`; past the last step the canary is promoted once a Pass is measured after
   the last step began (without analysis: at once).

RollingUpdate makes every new revision stable at once; BlueGreen is `bluegreen.py`, which
shares the requests, the evaluation gate and the verdict counting defined here, and
`machine.decide` picks between them.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from collections.abc import Callable
from typing import Any, Mapping

from dspy_operator.rollout.state import (
    ABORTED, ROLLED_BACK, ColorReport, Decision, Event, Plan, RolloutState, format_time, parse_time,
)

# Actions of the `dspy.dev/request` annotation (`kubectl dspy <verb>`).
PROMOTE = "promote"
PROMOTE_FULL = "promote-full"
ABORT = "abort"
RETRY = "retry"
PAUSE = "pause"
RESUME = "resume"
UNDO = "undo"
ACTIONS = (PROMOTE, PROMOTE_FULL, ABORT, RETRY, PAUSE, RESUME, UNDO)

PASS, FAIL, INCONCLUSIVE = "Pass", "Fail", "Inconclusive"
EVAL_PENDING, EVAL_RUNNING, EVAL_PASSED, EVAL_FAILED = "Pending", "Running", "Passed", "Failed"


@dataclass(frozen=True, slots=True)
class Judgement:
    """One analysis interval's verdict, as the step machine needs it."""

    result: str
    message: str
    figures: Mapping[str, Any]
    """What goes to status.lastAnalysis besides time, verdict and counters."""


@dataclass(frozen=True, slots=True)
class EvaluationResult:
    """The runtime's answer to an evaluation request (None fields: not there yet)."""

    state: str | None = None
    """Succeeded or Failed (the runtime's document), None while it runs."""
    scores: Mapping[str, float] | None = None
    """By revision name."""
    message: str = ""
    runner: str | None = None


@dataclass(frozen=True, slots=True)
class Observations:
    desired: str
    """The revision the current spec asks for."""
    now: datetime
    judgement: Judgement | None = None
    """An analysis interval measured this pass (None: none was due, or it could not be read)."""
    evaluation_id: str | None = None
    """The id of the evaluation request for (stable, desired, dev set): set when the gate applies."""
    evaluation: EvaluationResult | None = None
    request: Mapping[str, Any] | None = None
    """An unanswered `kubectl dspy` request: {id, action}."""
    reports_unavailable: bool = False
    """The runtime pods' reports could not be read this pass (Redis down): nothing is judged on them,
    and the evaluation gate's timeout does not run out on data the operator could not read."""
    kept: frozenset[str] = frozenset()
    """Revisions whose definitions are still available (undo needs the target's)."""
    colors: Mapping[str, ColorReport] = field(default_factory=dict)
    """The runtime Deployments by color (SINGLE: the one of RollingUpdate and Canary)."""
    equivalent: str = ""
    """The stable revision under the spec's other naming, when the strategy changed between BlueGreen
    (revisions hold the pod template) and the others: the same program, not a new rollout."""


def takes_traffic(state: RolloutState) -> bool:
    """The new revision can be measured: a canary with weight, or a ready blue/green preview (its
    traffic is whatever reaches the preview Service)."""
    return bool(state.canary) and (state.weight > 0 or (bool(state.preview_color) and state.preview_ready is not None))


def analysis_due(plan: Plan, state: RolloutState, now: datetime) -> bool:
    """Whether an analysis interval ends now: the new revision takes traffic, the rollout is not
    paused or switching, and intervalSeconds have passed since the last measurement (or since
    the weight became non-zero, or the preview became ready)."""
    if plan.analysis is None or not takes_traffic(state) or state.paused or state.switching:
        return False
    since = parse_time((state.last_analysis or {}).get("time")) if _analysis_of_canary(state) else None
    since = since or parse_time(state.preview_ready if state.preview_color else state.step_started)
    return since is None or now - since >= timedelta(seconds=plan.interval_seconds)


def _analysis_of_canary(state: RolloutState) -> bool:
    return bool(state.last_analysis) and (state.last_analysis or {}).get("revision") == state.canary


def decide(plan: Plan, state: RolloutState, obs: Observations) -> Decision:
    """RollingUpdate and Canary (BlueGreen: `bluegreen.decide`)."""
    events: list[Event] = []
    if obs.request is not None:
        state = answer(plan, state, obs, events, _undo, _apply_request)
    state = _renamed(state, obs)
    if plan.strategy != "Canary":
        return Decision(_replace_at_once(plan, state, obs, events), tuple(events))
    state = _follow_spec(plan, state, obs, events)
    if not state.canary or state.paused:
        return Decision(state, tuple(events))
    state = gate(plan, state, obs, events)
    if state.canary and gate_open(plan, state):
        state = count_verdict(plan, state, obs, events)
        if state.canary and not state.paused:
            state = _run_steps(plan, state, obs.now, events)
    return Decision(state, tuple(events))


def _renamed(state: RolloutState, obs: Observations) -> RolloutState:
    """Back from BlueGreen: the stable revision is known by the name the spec now gives the same
    program (no canary of a program against itself), and the blue/green fields are cleared; the
    colors' Deployments keep serving until the one Deployment is complete (`reconcile.layout`
    decides that from what it observes, not from status)."""
    if obs.equivalent and state.stable == obs.equivalent and not state.canary:
        state = replace(state, stable=obs.desired)
    if state.active_color or state.preview_color or state.colors:
        state = replace(state, active_color="", preview_color="", preview_ready=None, switching=False,
                        scale_down=None, colors={})
    return state


# --- 2. following the spec -------------------------------------------------------------------


def _replace_at_once(plan: Plan, state: RolloutState, obs: Observations, events: list[Event]) -> RolloutState:
    """RollingUpdate: the spec's revision is stable as soon as it exists (held only after undo)."""
    if obs.desired == state.stable and not state.canary:
        return state
    if obs.desired == state.aborted:
        return replace(state, canary="", weight=0) if state.canary else state
    events.append(Event("RevisionServed", f"revision {obs.desired} serves all traffic"
                        + (f" (was {state.stable})" if state.stable else "")))
    return replace(state.with_promotion(obs.desired, obs.now, plan.history_limit), aborted="")


def _follow_spec(plan: Plan, state: RolloutState, obs: Observations, events: list[Event]) -> RolloutState:
    if not state.stable:
        events.append(Event("RevisionServed", f"revision {obs.desired} serves all traffic"))
        return state.with_promotion(obs.desired, obs.now, plan.history_limit)
    if obs.desired == state.stable:
        if state.canary:
            events.append(Event("CanaryCancelled",
                                f"the spec is back at the stable revision {state.stable}: canary {state.canary} dropped"))
            return _without_canary(state)
        return state
    if obs.desired == state.aborted:
        return state  # held until the spec changes again or a retry is asked for
    if obs.desired != state.canary:
        replaced = f"; canary {state.canary} replaced" if state.canary else ""
        events.append(Event("CanaryStarted", f"canary {obs.desired} started beside stable {state.stable}{replaced}"))
        state = replace(
            _without_canary(state), canary=obs.desired, aborted="", step=0, step_started=format_time(obs.now),
            evaluation=gate_request(obs) if plan.gate is not None else None,
        )
    return state


def _without_canary(state: RolloutState) -> RolloutState:
    return replace(state, canary="", weight=0, step=0, step_started=None, paused=False, pause_reason="", evaluation=None)


def gate_request(obs: Observations) -> dict[str, Any]:
    return {"id": obs.evaluation_id or "", "revision": obs.desired, "state": EVAL_PENDING,
            "requestedAt": format_time(obs.now)}


# --- 4. the evaluation gate ------------------------------------------------------------------


def gate_open(plan: Plan, state: RolloutState) -> bool:
    return plan.gate is None or (state.evaluation or {}).get("state") == EVAL_PASSED


def gate(plan: Plan, state: RolloutState, obs: Observations, events: list[Event]) -> RolloutState:
    """The evaluation gate of the new revision: requested, waited for, judged (a failure aborts)."""
    gate = plan.gate
    evaluation = dict(state.evaluation or {})
    if gate is None or evaluation.get("state") in (EVAL_PASSED, EVAL_FAILED):
        return state
    if evaluation.get("revision") != state.canary or not evaluation.get("id"):
        evaluation = gate_request(replace(obs, desired=state.canary))
        if not evaluation["id"]:
            return replace(state, evaluation=evaluation)  # the handler has no request id yet
    result = obs.evaluation
    if result is not None and result.state is not None:
        return _judge_gate(plan, state, evaluation, result, obs.now, events)
    requested = parse_time(evaluation.get("requestedAt")) or obs.now
    if obs.now - requested >= timedelta(seconds=gate.timeout_seconds) and not obs.reports_unavailable:
        message = f"the evaluation gate got no result within {gate.timeout_seconds}s"
        evaluation.update(state=EVAL_FAILED, message=message)
        return abort(plan, replace(state, evaluation=evaluation), message, obs.now, events)
    if result is not None and result.runner and evaluation.get("state") != EVAL_RUNNING:
        evaluation.update(state=EVAL_RUNNING, runner=result.runner)
    return replace(state, evaluation=evaluation)


def _judge_gate(plan: Plan, state: RolloutState, evaluation: dict[str, Any], result: EvaluationResult,
                now: datetime, events: list[Event]) -> RolloutState:
    assert plan.gate is not None
    gate = plan.gate
    scores = result.scores or {}
    canary, stable = scores.get(state.canary), scores.get(state.stable)
    evaluation["scores"] = {role: round(value, 4) for role, value in (("canary", canary), ("stable", stable))
                            if value is not None}
    problems = []
    if result.state != "Succeeded" or canary is None:
        problems.append(f"the evaluation did not complete: {result.message or 'no canary score'}")
    else:
        if gate.min_score is not None and canary < gate.min_score:
            problems.append(f"canary score {canary:.3f} < minScore {gate.min_score}")
        if gate.max_regression is not None and stable is not None and stable - canary > gate.max_regression:
            problems.append(f"canary score {canary:.3f} is {stable - canary:.3f} below stable {stable:.3f} "
                            f"(maxRegression {gate.max_regression})")
    metric = gate.metric
    if problems:
        message = f"evaluation gate ({metric}) failed: " + "; ".join(problems)
        evaluation.update(state=EVAL_FAILED, message=message)
        return abort(plan, replace(state, evaluation=evaluation), message, now, events)
    stable_text = f" (stable {stable:.3f})" if stable is not None else ""
    message = f"evaluation gate ({metric}) passed: canary {canary:.3f}{stable_text}"
    evaluation.update(state=EVAL_PASSED, message=message)
    events.append(Event("EvaluationPassed", message))
    return replace(state, evaluation=evaluation)


# --- 5. analysis verdicts --------------------------------------------------------------------


def count_verdict(plan: Plan, state: RolloutState, obs: Observations, events: list[Event]) -> RolloutState:
    """An analysis verdict counted: failures beyond failureLimit abort, inconclusive intervals
    beyond inconclusiveLimit pause."""
    judgement = obs.judgement
    if judgement is None or plan.analysis is None or not takes_traffic(state):
        return state
    previous = state.last_analysis if _analysis_of_canary(state) else {}
    failures = int((previous or {}).get("failures") or 0)
    inconclusive = int((previous or {}).get("inconclusive") or 0)
    passed_at = (previous or {}).get("passedAt")
    if judgement.result == FAIL:
        failures, inconclusive = failures + 1, 0
    elif judgement.result == INCONCLUSIVE:
        inconclusive += 1
    else:
        inconclusive, passed_at = 0, format_time(obs.now)
    analysis: dict[str, Any] = {
        **judgement.figures, "time": format_time(obs.now), "revision": state.canary, "verdict": judgement.result,
        "failures": failures, "inconclusive": inconclusive, "message": judgement.message,
    }
    if passed_at:
        analysis["passedAt"] = passed_at
    state = replace(state, last_analysis=analysis)
    if judgement.result == FAIL:
        events.append(Event("AnalysisFailed", f"{judgement.message} ({failures}/{plan.failure_limit} failures tolerated)",
                            warning=True))
        if failures > plan.failure_limit:
            return abort(plan, state, f"analysis failed {failures} times (failureLimit {plan.failure_limit}): "
                                      f"{judgement.message}", obs.now, events)
    elif judgement.result == INCONCLUSIVE and 0 < plan.inconclusive_limit <= inconclusive:
        reason = (f"{inconclusive} inconclusive analysis intervals in a row ({judgement.message}): "
                  "waiting for traffic, `kubectl dspy promote` or `resume`")
        events.append(Event("RolloutPaused", reason, warning=True))
        return replace(state, paused=True, pause_reason=reason)
    return state


def abort(plan: Plan, state: RolloutState, message: str, now: datetime, events: list[Event]) -> RolloutState:
    """Weight 0 at once; the revision is held until the spec changes or a retry is asked for.
    (A blue/green preview is dropped by `bluegreen`, which sees `canary` gone.)"""
    role = "preview" if state.preview_color else "canary"
    events.append(Event("RolloutAborted", f"{role} {state.canary} aborted: {message}", warning=True))
    analysis = {**(state.last_analysis or {}), "message": message}
    aborted = replace(_without_canary(state), aborted=state.canary, last_analysis=analysis,
                      evaluation=state.evaluation)
    return aborted.recorded(state.canary, ABORTED, now, plan.history_limit, message)


# --- 6. the steps ----------------------------------------------------------------------------


def passed_since(state: RolloutState, moment: str | None) -> bool:
    """A passing analysis interval of the new revision was measured after `moment`."""
    passed = parse_time((state.last_analysis or {}).get("passedAt")) if _analysis_of_canary(state) else None
    started = parse_time(moment)
    return passed is not None and (started is None or passed > started)


def _run_steps(plan: Plan, state: RolloutState, now: datetime, events: list[Event]) -> RolloutState:
    steps = plan.steps
    while state.step < len(steps):
        step = steps[state.step]
        if not step.is_pause:
            if step.weight != state.weight:
                events.append(Event("WeightChanged", f"canary {state.canary} weight {state.weight}% -> {step.weight}%"))
            state = replace(state, weight=int(step.weight or 0), step=state.step + 1, step_started=format_time(now))
            continue
        if step.pause_seconds is None:
            return state  # until promoted
        started = parse_time(state.step_started) or now
        if now - started < timedelta(seconds=step.pause_seconds):
            return state
        if plan.analysis is not None and state.weight > 0 and not passed_since(state, state.step_started):
            return state  # elapsed, but no passing interval in it yet (at weight 0 nothing can pass)
        state = replace(state, step=state.step + 1, step_started=format_time(now))
    if plan.analysis is not None and not passed_since(state, state.step_started if state.weight > 0 else None):
        return state  # at weight 0: any pass of this canary will do, none means a human decides
    return _promote(plan, state, now, events, "all steps done")


def _promote(plan: Plan, state: RolloutState, now: datetime, events: list[Event], why: str) -> RolloutState:
    events.append(Event("Promoted", f"canary {state.canary} promoted to stable ({why}); was {state.stable}"))
    return state.with_promotion(state.canary, now, plan.history_limit)


# --- 1. requests -----------------------------------------------------------------------------

Apply = Callable[[Plan, RolloutState, Observations, str, list[Event]], tuple[bool, str, RolloutState]]
"""A strategy's handling of one request action: (accepted, message, new state)."""


def answer(plan: Plan, state: RolloutState, obs: Observations, events: list[Event], undo: Apply,
           apply: Apply) -> RolloutState:
    """Answer the pending request (in status.lastRequest and an Event): the actions every strategy
    answers alike here, `undo` and the others with the strategy's own functions."""
    request = obs.request or {}
    action = str(request.get("action") or "")
    common = _held_request(plan, state, action) if action != UNDO else None
    if action not in ACTIONS:
        accepted, message = False, f"unknown action {action!r}; known: {', '.join(ACTIONS)}"
    elif common is not None:
        accepted, message, state = common
    else:
        accepted, message, state = (undo if action == UNDO else apply)(plan, state, obs, action, events)
    answer = {"id": str(request.get("id") or ""), "action": action, "result": "Accepted" if accepted else "Rejected",
              "message": message, "time": format_time(obs.now)}
    events.append(Event("RequestAccepted" if accepted else "RequestRejected", f"{action}: {message}",
                        warning=not accepted))
    return replace(state, last_request=answer)


def _held_request(plan: Plan, state: RolloutState, action: str) -> tuple[bool, str, RolloutState] | None:
    """The actions every strategy answers alike (retry, and pause and resume of a rollout in
    progress); None for the others."""
    if action == RETRY:
        if not state.aborted:
            return False, "nothing was aborted or held", state
        return True, f"revision {state.aborted} will be rolled out again", replace(state, aborted="")
    if action not in (PAUSE, RESUME) or not state.canary:
        return None
    if action == PAUSE:
        if state.paused:
            return False, "the rollout is already paused", state
        return True, "rollout paused", replace(state, paused=True, pause_reason="paused by request")
    if not state.paused:
        return False, "the rollout is not paused", state
    analysis = {**state.last_analysis, "inconclusive": 0} if state.last_analysis else None
    return True, "rollout resumed", replace(state, paused=False, pause_reason="", last_analysis=analysis)


def _apply_request(plan: Plan, state: RolloutState, obs: Observations, action: str,
                   events: list[Event]) -> tuple[bool, str, RolloutState]:
    if plan.strategy != "Canary":
        return False, f"strategy is {plan.strategy}: only undo and retry apply", state
    if not state.canary:
        return False, "no canary in progress", state
    if action == ABORT:
        return True, f"canary {state.canary} aborted", abort(plan, state, "aborted by request", obs.now, events)
    if action == PROMOTE_FULL:
        return True, f"canary {state.canary} promoted", _promote(plan, state, obs.now, events, "promoted by request")
    if not gate_open(plan, state):
        return False, "the evaluation gate has not passed yet; promote --full skips it", state
    state = replace(state, paused=False, pause_reason="")
    if state.step >= len(plan.steps):
        return True, f"canary {state.canary} promoted", _promote(plan, state, obs.now, events, "promoted by request")
    skipped = plan.steps[state.step].describe()
    state = replace(state, step=state.step + 1, step_started=format_time(obs.now))
    if state.step >= len(plan.steps):
        # Past the last step by hand: the human is the gate, no further passing interval is awaited.
        return True, f"canary {state.canary} promoted", _promote(plan, state, obs.now, events, "promoted by request")
    return True, f"step {state.step}/{len(plan.steps)} ({skipped}) done by request", state


def undo_target(state: RolloutState, obs: Observations) -> tuple[str | None, str]:
    """(the revision undo returns to, or None with the reason it cannot)."""
    previous = state.undo_target()
    if previous is None:
        return None, "no previous stable revision in status.history"
    if previous not in obs.kept:
        return None, f"revision {previous} is no longer kept"
    return previous, ""


def rolled_back(plan: Plan, state: RolloutState, obs: Observations, previous: str,
                events: list[Event]) -> RolloutState:
    """The history entry and Event of an undo; the spec's revision is held (unless it is `previous`)."""
    held = obs.desired if obs.desired != previous else ""
    events.append(Event("RolledBack", f"stable {state.stable} -> {previous}"
                        + (f"; the spec's revision {held} is held until the spec changes or a retry" if held else ""),
                        warning=True))
    return replace(state.recorded(state.stable, ROLLED_BACK, obs.now, plan.history_limit,
                                  f"rolled back to {previous}"), aborted=held)


def _undo(plan: Plan, state: RolloutState, obs: Observations, action: str,
          events: list[Event]) -> tuple[bool, str, RolloutState]:
    previous, why = undo_target(state, obs)
    if previous is None:
        return False, why, state
    rolled = rolled_back(plan, _without_canary(state), obs, previous, events)
    rolled = replace(rolled, stable=previous, step=0, step_started=None)
    return True, f"rolled back to revision {previous}", rolled
