"""The blue/green switch and the layout it calls for: worked examples of every path, then
properties over random runs (the Service never moves to a color short of pods)."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta, timezone
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from dspy_operator import api
from dspy_operator.reconcile.layout import layout
from dspy_operator.rollout.canary import EvaluationResult, Judgement, Observations
from dspy_operator.rollout.machine import decide
from dspy_operator.rollout.state import ColorReport, Decision, Plan, RolloutState

T0 = datetime(2026, 12, 1, 12, 0, 0, tzinfo=timezone.utc)
STABLE, NEW, NEWER = "aaaaaaaaaaaa", "bbbbbbbbbbbb", "cccccccccccc"
PASS = Judgement("Pass", "2 measurements passed", {"requests": 100})
FAIL = Judgement("Fail", "errorRate 0.5 > 0.05", {"requests": 100})


def plan(replicas: int = 3, autoscaling: dict[str, Any] | None = None, analysis: dict[str, Any] | None = None,
         **blue_green: Any) -> Plan:
    settings_: dict[str, Any] = {"autoPromotionEnabled": False, "scaleDownDelaySeconds": 300, "previewReplicas": 1,
                                 **blue_green}
    if analysis is not None:
        settings_["analysis"] = analysis
    spec: dict[str, Any] = {"replicas": replicas, "rollout": {"strategy": "BlueGreen", "blueGreen": settings_}}
    if autoscaling is not None:
        spec["autoscaling"] = autoscaling
    return Plan.from_spec(spec)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def running(revision: str, count: int, replicas: int | None = None) -> ColorReport:
    """A color whose `count` pods of `revision` are all available."""
    return ColorReport(revision=revision, replicas=count if replicas is None else replicas, available=count,
                       complete=True)


def obs(seconds: float = 0, desired: str = NEW, colors: dict[str, ColorReport] | None = None,
        **kwargs: Any) -> Observations:
    return Observations(desired=desired, now=at(seconds), kept=frozenset({STABLE, NEW, NEWER}),
                        colors=colors or {}, **kwargs)


def request(action: str, id_: str = "r1") -> dict[str, str]:
    return {"id": id_, "action": action}


ACTIVE = RolloutState(stable=STABLE, active_color="blue", colors={"blue": STABLE},
                      history=({"revision": STABLE, "outcome": "Promoted", "time": "2026-12-01T11:00:00Z"},))
BLUE_RUNS = {"blue": running(STABLE, 3)}


def reasons(decision: Decision) -> list[str]:
    return [event.reason for event in decision.events]


def previewing(p: Plan, seconds: float = 0) -> RolloutState:
    """A preview of NEW in green, ready since `seconds`."""
    started = decide(p, ACTIVE, obs(seconds, colors=BLUE_RUNS)).state
    return decide(p, started, obs(seconds, colors={**BLUE_RUNS, "green": running(NEW, 1)})).state


# --- worked examples ---------------------------------------------------------------------------


def test_the_first_revision_runs_in_blue_behind_both_services() -> None:
    decision = decide(plan(), RolloutState(), obs(desired=STABLE))
    state = decision.state
    assert (state.stable, state.active_color, dict(state.colors)) == (STABLE, "blue", {"blue": STABLE})
    placed = layout(plan(), state, obs(desired=STABLE))
    assert [(slot.color, slot.replicas, slot.pod_revision) for slot in placed.slots] == [("blue", 3, STABLE)]
    assert (placed.active, placed.preview, placed.scaled) == ("blue", "blue", "blue")


def test_a_new_revision_starts_in_the_idle_color_and_is_ready_once_its_pods_are() -> None:
    p = plan()
    started = decide(p, ACTIVE, obs(0, colors=BLUE_RUNS))
    state = started.state
    assert reasons(started) == ["PreviewStarted"]
    assert (state.canary, state.preview_color, state.preview_ready, dict(state.colors)) == (
        NEW, "green", None, {"blue": STABLE, "green": NEW})
    placed = layout(p, state, obs(0, colors=BLUE_RUNS))
    assert {slot.color: slot.replicas for slot in placed.slots} == {"blue": 3, "green": 1}
    assert (placed.active, placed.preview, placed.scaled) == ("blue", "green", "blue")
    # Old pods, or too few, are not a ready preview.
    assert decide(p, state, obs(5, colors={**BLUE_RUNS, "green": running(STABLE, 1)})).state == state
    assert decide(p, state, obs(5, colors={**BLUE_RUNS, "green": replace(running(NEW, 1), available=0)})).state == state
    ready = decide(p, state, obs(6, colors={**BLUE_RUNS, "green": running(NEW, 1)}))
    assert reasons(ready) == ["PreviewReady"] and ready.state.preview_ready == "2026-12-01T12:00:06Z"


def test_promotion_scales_the_preview_to_the_active_count_before_the_service_flips() -> None:
    p = plan()
    state = previewing(p)
    promoted = decide(p, state, obs(10, colors={**BLUE_RUNS, "green": running(NEW, 1)}, request=request("promote")))
    state = promoted.state
    assert state.switching and state.active_color == "blue", "not yet: green runs 1 pod of 3"
    assert reasons(promoted)[:1] == ["SwitchStarted"]
    assert {slot.color: slot.replicas for slot in layout(p, state, obs(10)).slots} == {"blue": 3, "green": 3}
    short = {**BLUE_RUNS, "green": running(NEW, 2, replicas=3)}
    assert decide(p, state, obs(12, colors=short)).state.active_color == "blue"
    switched = decide(p, state, obs(15, colors={**BLUE_RUNS, "green": running(NEW, 3)}))
    state = switched.state
    assert "Switched" in reasons(switched)
    assert (state.stable, state.active_color, state.preview_color, state.canary, state.switching) == (
        NEW, "green", "", "", False)
    assert state.scale_down == "2026-12-01T12:05:15Z" and dict(state.colors) == {"blue": STABLE, "green": NEW}
    assert state.history[0] == {"revision": NEW, "outcome": "Promoted", "time": "2026-12-01T12:00:15Z"}
    placed = layout(p, state, obs(15, colors={"blue": running(STABLE, 3), "green": running(NEW, 3)}))
    assert (placed.active, placed.preview, placed.scaled) == ("green", "green", "green")
    assert {slot.color: slot.replicas for slot in placed.slots} == {"blue": 3, "green": 3}, "the old color stays"
    gone = decide(p, state, obs(315, desired=NEW, colors={"blue": running(STABLE, 3), "green": running(NEW, 3)}))
    assert reasons(gone) == ["ScaledDown"] and dict(gone.state.colors) == {"green": NEW}
    assert gone.state.scale_down is None


def test_under_autoscaling_the_preview_meets_the_hpa_count_and_the_hpa_follows_the_active_color() -> None:
    p = plan(autoscaling={"minReplicas": 2, "maxReplicas": 8})
    assert p.switch.preview_replicas == 1
    hpa_scaled = {"blue": running(STABLE, 5)}  # the HPA took blue to 5
    started = decide(p, ACTIVE, obs(0, colors=hpa_scaled)).state
    assert {slot.color: slot.replicas for slot in layout(p, started, obs(0, colors=hpa_scaled)).slots} == {
        "blue": 5, "green": 1}, "the operator keeps the HPA's count on the active color"
    ready = decide(p, started, obs(1, colors={**hpa_scaled, "green": running(NEW, 1)})).state
    switching = decide(p, ready, obs(2, colors={**hpa_scaled, "green": running(NEW, 1)},
                                     request=request("promote"))).state
    assert layout(p, switching, obs(2, colors=hpa_scaled)).slot("green").replicas == 5  # type: ignore[union-attr]
    four = decide(p, switching, obs(3, colors={**hpa_scaled, "green": running(NEW, 4, replicas=5)})).state
    assert four.active_color == "blue"
    flipped = decide(p, switching, obs(4, colors={**hpa_scaled, "green": running(NEW, 5)})).state
    assert flipped.active_color == "green"
    assert layout(p, flipped, obs(4, colors={**hpa_scaled, "green": running(NEW, 5)})).scaled == "green"


def test_auto_promotion_waits_its_seconds_and_with_analysis_a_pass_since_ready() -> None:
    p = plan(autoPromotionEnabled=True, autoPromotionSeconds=30)
    state = previewing(p, 0)
    colors = {**BLUE_RUNS, "green": running(NEW, 1)}
    assert not decide(p, state, obs(29, colors=colors)).state.switching
    assert decide(p, state, obs(30, colors=colors)).state.switching
    judged = plan(autoPromotionEnabled=True, autoPromotionSeconds=30, analysis={"intervalSeconds": 10})
    state = previewing(judged, 0)
    assert not decide(judged, state, obs(40, colors=colors)).state.switching, "no passing interval yet"
    passed = decide(judged, state, obs(41, colors=colors, judgement=PASS)).state
    assert passed.switching and passed.last_analysis is not None and passed.last_analysis["verdict"] == "Pass"


def test_failing_analysis_of_the_preview_aborts_it_and_keeps_the_active_color() -> None:
    p = plan(analysis={"intervalSeconds": 10, "failureLimit": 0})
    state = previewing(p)
    aborted = decide(p, state, obs(10, colors={**BLUE_RUNS, "green": running(NEW, 1)}, judgement=FAIL))
    state = aborted.state
    assert "RolloutAborted" in reasons(aborted)
    assert (state.stable, state.active_color, state.preview_color, state.canary, state.aborted) == (
        STABLE, "blue", "", "", NEW)
    assert dict(state.colors) == {"blue": STABLE}, "the preview's Deployment goes"
    assert state.history[0]["outcome"] == "Aborted"
    assert decide(p, state, obs(20, colors=BLUE_RUNS)).state == state, "held until the spec changes"


def test_the_evaluation_gate_runs_in_the_preview_pods_which_also_serve_the_stable_revision() -> None:
    spec = {"rollout": {"strategy": "BlueGreen", "blueGreen": {"autoPromotionEnabled": True, "analysis": {
        "evaluation": {"configMapRef": {"name": "dev"}, "minScore": 0.9}}}}}
    p = Plan.from_spec(spec)
    started = decide(p, ACTIVE, obs(0, colors=BLUE_RUNS, evaluation_id="e1")).state
    assert started.evaluation is not None and started.evaluation["id"] == "e1"
    green = {**BLUE_RUNS, "green": running(NEW, 1)}
    ready = decide(p, started, obs(1, colors=green, evaluation_id="e1")).state
    assert not ready.switching, "the gate has not passed: no auto-promotion"
    assert layout(p, ready, obs(1, colors=green)).slot("green").table == ((NEW, 100), (STABLE, 0))  # type: ignore[union-attr]
    rejected = decide(p, ready, obs(2, colors=green, evaluation_id="e1", request=request("promote"))).state
    assert rejected.last_request is not None and rejected.last_request["result"] == "Rejected"
    result = EvaluationResult(state="Succeeded", scores={NEW: 0.95, STABLE: 0.9})
    passed = decide(p, ready, obs(3, colors=green, evaluation_id="e1", evaluation=result)).state
    assert passed.evaluation is not None and passed.evaluation["state"] == "Passed"
    assert not passed.switching, "the analysis section is there: a passing interval is still awaited"
    assert decide(p, passed, obs(63, colors=green, judgement=PASS)).state.active_color == "green", "1 pod: at count"


def test_abort_drops_the_preview_and_a_spec_back_at_stable_cancels_it() -> None:
    p = plan()
    state = previewing(p)
    aborted = decide(p, state, obs(5, request=request("abort"))).state
    assert (aborted.preview_color, aborted.aborted, dict(aborted.colors)) == ("", NEW, {"blue": STABLE})
    cancelled = decide(p, state, obs(5, desired=STABLE, colors=BLUE_RUNS))
    assert reasons(cancelled) == ["PreviewCancelled"] and dict(cancelled.state.colors) == {"blue": STABLE}
    assert cancelled.state.aborted == "", "cancelled, not aborted: nothing is held"


def test_a_newer_spec_replaces_the_preview_in_the_same_color() -> None:
    p = plan()
    state = previewing(p)
    replaced = decide(p, state, obs(5, desired=NEWER, colors={**BLUE_RUNS, "green": running(NEW, 1)})).state
    assert (replaced.canary, replaced.preview_color, replaced.preview_ready) == (NEWER, "green", None)
    assert dict(replaced.colors) == {"blue": STABLE, "green": NEWER}


def test_undo_within_the_delay_flips_back_at_once_and_after_it_runs_the_old_revision_again() -> None:
    p = plan()
    state = previewing(p)
    state = decide(p, state, obs(1, colors={**BLUE_RUNS, "green": running(NEW, 1)}, request=request("promote"))).state
    both = {"blue": running(STABLE, 3), "green": running(NEW, 3)}
    switched = decide(p, state, obs(2, colors=both)).state
    assert switched.active_color == "green"
    undone = decide(p, switched, obs(60, colors=both, request=request("undo", "u1")))
    state = undone.state
    assert "RolledBack" in reasons(undone) and "Switched" in reasons(undone)
    assert (state.stable, state.active_color, state.aborted) == (STABLE, "blue", NEW), "back at once, NEW held"
    assert state.scale_down == "2026-12-01T12:06:00Z"
    assert [entry["outcome"] for entry in state.history[:2]] == ["RolledBack", "Promoted"]
    # After the delay the old color is gone: undo brings the revision back through the idle color.
    gone = decide(p, switched, obs(400, colors=both)).state
    assert dict(gone.colors) == {"green": NEW}
    again = decide(p, gone, obs(401, colors={"green": running(NEW, 3)}, request=request("undo", "u2"))).state
    assert (again.canary, again.preview_color, again.switching, again.active_color) == (STABLE, "blue", True, "green")
    assert layout(p, again, obs(401)).slot("blue").replicas == 3  # type: ignore[union-attr]
    back = decide(p, again, obs(410, colors={"green": running(NEW, 3), "blue": running(STABLE, 3)})).state
    assert (back.stable, back.active_color, back.aborted) == (STABLE, "blue", NEW)


def test_a_resource_moving_to_blue_green_keeps_its_deployment_until_blue_runs_at_its_count() -> None:
    p = plan(replicas=2)
    single = RolloutState(stable=STABLE, history=ACTIVE.history)
    started = decide(p, single, obs(0, desired=NEW, colors={"": running("", 2)}))
    state = started.state
    assert reasons(started) == ["MigrationStarted"]
    assert (state.active_color, state.preview_color, state.switching) == ("", "blue", True)
    placed = layout(p, state, obs(0))
    assert [(slot.color, slot.kept, slot.replicas) for slot in placed.slots] == [("", True, None), ("blue", False, 2)]
    assert placed.active == api.SINGLE, "the Service selects every runtime pod meanwhile"
    assert decide(p, state, obs(1, desired=NEW, colors={"": running("", 2), "blue": running(NEW, 1, 2)})
                  ).state.active_color == ""
    moved = decide(p, state, obs(2, desired=NEW, colors={"": running("", 2), "blue": running(NEW, 2)})).state
    assert (moved.active_color, moved.stable) == ("blue", NEW)
    assert layout(p, moved, obs(2)).active == "blue"
    gone = decide(p, moved, obs(303, desired=NEW, colors={"": running("", 2), "blue": running(NEW, 2)})).state
    assert dict(gone.colors) == {"blue": NEW}


def test_leaving_blue_green_keeps_the_colors_until_the_single_deployment_is_complete() -> None:
    p = Plan.from_spec({"replicas": 2, "rollout": {"strategy": "Canary", "canary": {"steps": [{"setWeight": 10}]}}})
    state = RolloutState(stable=STABLE, active_color="green", colors={"green": STABLE}, history=ACTIVE.history)
    decision = decide(p, state, obs(0, desired=NEW, equivalent=STABLE, colors={"green": running(STABLE, 2)}))
    assert decision.state.stable == NEW and decision.state.canary == "", "the same program: no canary"
    assert (decision.state.active_color, dict(decision.state.colors)) == ("", {})
    colors = {"green": running(STABLE, 2)}
    placed = layout(p, decision.state, obs(0, colors=colors))
    assert [(slot.color, slot.kept, slot.table) for slot in placed.slots] == [
        ("", False, ((NEW, 100),)), ("green", True, None)]
    done = layout(p, decision.state, obs(1, colors={**colors, "": running("", 2)}))
    assert [slot.color for slot in done.slots] == [""]


# --- properties --------------------------------------------------------------------------------

EVENTS = st.lists(st.one_of(
    st.tuples(st.just("spec"), st.sampled_from([STABLE, NEW, NEWER])),
    st.tuples(st.just("pods"), st.integers(0, 3)),
    st.tuples(st.just("wait"), st.integers(1, 400)),
    st.tuples(st.just("request"), st.sampled_from(["promote", "promote-full", "abort", "undo", "pause", "resume"])),
), max_size=30)


def converge(reports: dict[str, ColorReport], p: Plan, state: RolloutState, obs_: Observations, up: int
             ) -> dict[str, ColorReport]:
    """The cluster after `up` pods came up: each color of the layout runs its revision with at
    most `up` pods available (of what the layout asks)."""
    placed = layout(p, state, obs_)
    after: dict[str, ColorReport] = {}
    for slot in placed.slots:
        if slot.kept:
            continue
        wanted = slot.replicas or 0
        before = reports.get(slot.color)
        same = before is not None and before.revision == slot.pod_revision
        available = min(wanted, (before.available if same else 0) + up)
        after[slot.color] = ColorReport(str(slot.pod_revision), wanted, available, available >= wanted)
    return after


@settings(max_examples=300, deadline=None)
@given(EVENTS)
def test_the_service_only_ever_moves_to_a_color_running_the_stable_revision_at_full_count(events: list[Any]) -> None:
    p = plan(replicas=3, autoPromotionEnabled=True, autoPromotionSeconds=5, scaleDownDelaySeconds=60)
    state, reports, desired, now, serial = RolloutState(), {}, STABLE, 0.0, 0
    for kind, value in events:
        request_ = None
        if kind == "spec":
            desired = value
        elif kind == "wait":
            now += value
        elif kind == "request":
            serial += 1
            request_ = {"id": str(serial), "action": value}
        observed = obs(now, desired=desired, colors=reports, request=request_)
        before = state
        state = decide(p, state, observed).state
        if before.stable and state.active_color != before.active_color:
            report = reports.get(state.active_color)
            assert report is not None and report.revision == state.stable and report.available >= 3, (
                f"switched to {state.active_color} short of pods: {report}")
        assert not state.active_color or state.colors.get(state.active_color) == state.stable
        assert not state.preview_color or state.colors.get(state.preview_color) == state.canary
        assert state.preview_color != state.active_color or not state.preview_color
        placed = layout(p, state, observed)
        assert placed.scaled == placed.active, "exactly one HPA, on the active color"
        reports = converge(reports, p, state, observed, value if kind == "pods" else 0)
