"""The blue/green switch (pure): `(plan, state, observations) -> (new state, events)`.

Deployment-level, unlike a canary: each color (blue, green) is a Deployment running one
revision, pod template included (`reconcile.revisions`); the active Service `<name>`
selects the active color, the preview Service `<name>-preview` the preview color (the
active one when there is no preview). Like the canary machine, every decision is a
function of status and what the handler observed (the Deployments by color, the analysis
verdict, the gate's result, a request), so an operator killed mid-switch resumes where
status says it was.

A pass, in order:
1. a `kubectl dspy` request is answered;
2. the spec is followed: the first revision becomes the active color (blue) at once; a
   resource coming from RollingUpdate or Canary is migrated (its one Deployment plays the
   active color until blue runs at the same count, then the Service moves to blue); a new
   revision starts in the idle color with previewReplicas pods; back at stable cancels the
   preview; an aborted or rolled-back revision stays held;
3. a paused rollout stops here (nothing switches, nothing is scaled down);
4. the preview is ready once the idle color runs the new revision at previewReplicas, all
   available; then the evaluation gate and the analysis (on whatever reaches the preview
   Service) judge it, exactly as for a canary;
5. promotion (by request, or autoPromotionSeconds after ready with autoPromotionEnabled and,
   with analysis, a Pass measured since ready) first scales the preview to the active
   count (the HPA's current count under autoscaling: the switch never meets a cold,
   undersized color); once that many pods are available the Service flips, and the old
   color keeps running for scaleDownDelaySeconds (undo flips back at once meanwhile);
6. after the delay, the colors other than active and preview go (their Deployments are
   deleted).
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta

from dspy_operator import api
from dspy_operator.rollout.canary import (
    ABORT, PROMOTE, PROMOTE_FULL, Observations, abort, answer, count_verdict, gate, gate_open, gate_request,
    passed_since, rolled_back, undo_target,
)
from dspy_operator.rollout.state import Decision, Event, Plan, RolloutState, format_time, parse_time


def decide(plan: Plan, state: RolloutState, obs: Observations) -> Decision:
    events: list[Event] = []
    if obs.request is not None:
        state = _dropped(answer(plan, state, obs, events, _undo, _apply_request))
    state = _follow_spec(plan, state, obs, events)
    if state.paused:
        return Decision(state, tuple(events))
    state = _dropped(_preview(plan, state, obs, events))
    state = _scale_down(plan, state, obs.now, events)
    return Decision(state, tuple(events))


def idle_color(state: RolloutState) -> str:
    return api.GREEN if state.active_color == api.BLUE else api.BLUE


def active_count(plan: Plan, state: RolloutState, obs: Observations) -> int:
    """The pods the active color runs now: the spec's count, or under autoscaling the HPA's
    current one (within its bounds). A preview is scaled to this before the switch."""
    if plan.scale.autoscaling is None:
        return plan.scale.replicas
    report = obs.colors.get(state.active_color)
    return plan.scale.clamp(report.replicas if report is not None else plan.scale.floor)


def preview_count(plan: Plan, state: RolloutState, obs: Observations) -> int:
    """The preview's pods: previewReplicas until promotion, then the active count."""
    return active_count(plan, state, obs) if state.switching else plan.switch.preview_replicas


def _runs(obs: Observations, color: str, revision: str, count: int) -> bool:
    """`color` runs `revision` on at least `count` available pods of its newest template."""
    report = obs.colors.get(color)
    return (report is not None and report.revision == revision and report.complete
            and report.replicas >= count and report.available >= count)


# --- 2. following the spec -------------------------------------------------------------------


def _follow_spec(plan: Plan, state: RolloutState, obs: Observations, events: list[Event]) -> RolloutState:
    now, desired = obs.now, obs.desired
    if not state.stable:
        events.append(Event("RevisionServed", f"revision {desired} serves all traffic from the {api.BLUE} color"))
        first = state.with_promotion(desired, now, plan.history_limit)
        return replace(first, active_color=api.BLUE, colors={api.BLUE: desired})
    if not state.active_color and api.SINGLE not in state.colors:
        events.append(Event("MigrationStarted", f"moving to BlueGreen: revision {desired} starts in the {api.BLUE} "
                            f"color at the current count; the Service moves to it once it runs"))
        migrating = replace(state, canary="", weight=0, step=0, step_started=format_time(now), paused=False,
                            pause_reason="", evaluation=None)
        return replace(migrating, canary=desired, preview_color=api.BLUE, preview_ready=None, switching=True,
                       colors={api.SINGLE: state.stable, api.BLUE: desired})
    if api.SINGLE in state.colors and state.switching:
        return state  # the migration finishes first: the one Deployment is not a color to preview beside
    if desired in (state.aborted, state.canary):
        # Held until the spec changes or a retry (an undo through the idle color holds the
        # active revision itself); or already previewed.
        return state
    if desired == state.stable:
        if state.canary and state.preview_color:
            events.append(Event("PreviewCancelled", f"the spec is back at the active revision {state.stable}: "
                                f"preview {state.canary} in {state.preview_color} dropped"))
            return _without_preview(state)
        return state
    idle = idle_color(state)
    replaced = f"; preview {state.canary} replaced" if state.canary else ""
    events.append(Event("PreviewStarted", f"revision {desired} starts in the {idle} color with "
                        f"{plan.switch.preview_replicas} pod(s) behind the preview Service{replaced}"))
    state = _without_preview(state)
    colors = {color: revision for color, revision in state.colors.items() if color != idle}
    return replace(state, canary=desired, preview_color=idle, colors={**colors, idle: desired}, aborted="",
                   step_started=format_time(now), evaluation=gate_request(obs) if plan.gate is not None else None)


def _without_preview(state: RolloutState) -> RolloutState:
    colors = {color: revision for color, revision in state.colors.items() if color != state.preview_color}
    return replace(state, canary="", weight=0, step=0, step_started=None, paused=False, pause_reason="",
                   evaluation=None, preview_color="", preview_ready=None, switching=False, colors=colors)


def _dropped(state: RolloutState) -> RolloutState:
    """After an abort (the canary machinery clears `canary`), the preview color goes too."""
    if state.preview_color and not state.canary:
        colors = {color: revision for color, revision in state.colors.items() if color != state.preview_color}
        return replace(state, preview_color="", preview_ready=None, switching=False, colors=colors)
    return state


# --- 4 and 5. the preview and the switch -----------------------------------------------------


def _preview(plan: Plan, state: RolloutState, obs: Observations, events: list[Event]) -> RolloutState:
    if not state.canary or not state.preview_color:
        return state
    if state.switching:
        return _switch(plan, state, obs, events)
    if state.preview_ready is None:
        if not _runs(obs, state.preview_color, state.canary, plan.switch.preview_replicas):
            return state
        state = replace(state, preview_ready=format_time(obs.now))
        events.append(Event("PreviewReady", f"preview {state.canary} runs in the {state.preview_color} color "
                            "behind the preview Service"))
    state = gate(plan, state, obs, events)
    if not state.canary or not gate_open(plan, state):
        return state
    state = count_verdict(plan, state, obs, events)
    if not state.canary or state.paused or not plan.switch.auto_promotion:
        return state
    ready = parse_time(state.preview_ready) or obs.now
    if obs.now - ready < timedelta(seconds=plan.switch.auto_promotion_seconds):
        return state
    if plan.analysis is not None and not passed_since(state, state.preview_ready):
        return state
    return _start_switch(plan, state, obs, events, "auto-promotion")


def _start_switch(plan: Plan, state: RolloutState, obs: Observations, events: list[Event], why: str) -> RolloutState:
    count = active_count(plan, replace(state, switching=True), obs)
    events.append(Event("SwitchStarted", f"preview {state.canary} ({why}) is scaled to {count} pod(s) in the "
                        f"{state.preview_color} color; the active Service switches once they are available"))
    return _switch(plan, replace(state, switching=True, paused=False, pause_reason=""), obs, events)


def _switch(plan: Plan, state: RolloutState, obs: Observations, events: list[Event]) -> RolloutState:
    count = active_count(plan, state, obs)
    if not _runs(obs, state.preview_color, state.canary, count):
        return state
    old, new = state.active_color, state.preview_color
    was = f"the {old} color" if old else "the single Deployment"
    events.append(Event("Switched", f"the active Service now selects the {new} color (revision {state.canary}, "
                        f"{count} pod(s)); {was} (revision {state.stable}) goes in "
                        f"{plan.switch.scale_down_delay_seconds}s"))
    promoted = state.with_promotion(state.canary, obs.now, plan.history_limit)
    scale_down = obs.now + timedelta(seconds=plan.switch.scale_down_delay_seconds)
    return replace(promoted, active_color=new, preview_color="", preview_ready=None, switching=False,
                   scale_down=format_time(scale_down))


# --- 6. scaling down -------------------------------------------------------------------------


def _scale_down(plan: Plan, state: RolloutState, now: datetime, events: list[Event]) -> RolloutState:
    staying = {state.active_color} | ({state.preview_color} if state.preview_color else set())
    others = sorted(color for color in state.colors if color not in staying)
    if not others:
        return replace(state, scale_down=None) if state.scale_down else state
    due = parse_time(state.scale_down)
    if due is None:
        due = now + timedelta(seconds=plan.switch.scale_down_delay_seconds)
        return replace(state, scale_down=format_time(due))
    if now < due:
        return state
    for color in others:
        name = f"the {color} color" if color else "the single Deployment"
        events.append(Event("ScaledDown", f"{name} (revision {state.colors[color]}) scaled down"))
    colors = {color: revision for color, revision in state.colors.items() if color not in others}
    return replace(state, colors=colors, scale_down=None)


# --- 1. requests -----------------------------------------------------------------------------


def _apply_request(plan: Plan, state: RolloutState, obs: Observations, action: str,
                   events: list[Event]) -> tuple[bool, str, RolloutState]:
    if not state.canary or not state.preview_color:
        return False, "no blue/green preview in progress", state
    if action == ABORT:
        if api.SINGLE in state.colors:
            return False, "the migration to BlueGreen cannot be aborted; change rollout.strategy back", state
        return True, f"preview {state.canary} aborted", abort(plan, state, "aborted by request", obs.now, events)
    if action == PROMOTE and not gate_open(plan, state):
        return False, "the evaluation gate has not passed yet; promote --full skips it", state
    if state.switching:
        return False, f"the switch to {state.preview_color} is already under way", state
    assert action in (PROMOTE, PROMOTE_FULL)
    return True, f"switching to preview {state.canary}", _start_switch(plan, state, obs, events, "promoted by request")


def _undo(plan: Plan, state: RolloutState, obs: Observations, action: str,
          events: list[Event]) -> tuple[bool, str, RolloutState]:
    """While the previous color still runs the target, the Service flips back at once; after it
    went, the target runs again in the idle color and the Service flips once it is at count."""
    previous, why = undo_target(state, obs)
    if previous is None:
        return False, why, state
    if api.SINGLE in state.colors:
        return False, "the migration to BlueGreen is under way; change rollout.strategy back instead", state
    standing = next((color for color, revision in state.colors.items()
                     if revision == previous and color not in (state.active_color, api.SINGLE)), None)
    rolled = rolled_back(plan, _without_preview(state), obs, previous, events)
    if standing is not None and _runs(obs, standing, previous, active_count(plan, state, obs)):
        delay = obs.now + timedelta(seconds=plan.switch.scale_down_delay_seconds)
        flipped = replace(rolled, stable=previous, active_color=standing, scale_down=format_time(delay))
        events.append(Event("Switched", f"the active Service is back on the {standing} color (revision {previous})"))
        return True, f"switched back to the {standing} color (revision {previous})", flipped
    idle = idle_color(rolled)
    colors = {**{color: revision for color, revision in rolled.colors.items() if color != idle}, idle: previous}
    again = replace(rolled, canary=previous, preview_color=idle, colors=colors, switching=True,
                    step_started=format_time(obs.now))
    return True, (f"revision {previous} starts again in the {idle} color; the active Service switches to it "
                  f"once it runs {active_count(plan, again, obs)} pod(s)"), again
