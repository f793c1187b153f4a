"""The rollout step machine: worked examples of every path, then properties over random runs."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dspy_operator.rollout.canary import (
    EvaluationResult,
    Judgement,
    Observations,
    analysis_due,
    decide,
)
from dspy_operator.rollout.state import Plan, RolloutState

T0 = datetime(2026, 12, 1, 12, 0, 0, tzinfo=timezone.utc)
STABLE, CANARY, NEWER = "aaaaaaaaaaaa", "bbbbbbbbbbbb", "cccccccccccc"
PASS = Judgement("Pass", "2 measurements passed", {"requests": 100})
FAIL = Judgement("Fail", "errorRate 0.5 > 0.05", {"requests": 100})
NO_DATA = Judgement("Inconclusive", "the canary served 0 requests", {"requests": 0})


def plan(steps: list[dict[str, Any]], analysis: dict[str, Any] | None = None, strategy: str = "Canary") -> Plan:
    canary: dict[str, Any] = {"steps": steps}
    if analysis is not None:
        canary["analysis"] = analysis
    return Plan.from_spec({"rollout": {"strategy": strategy, "canary": canary}})


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def obs(seconds: float = 0, desired: str = CANARY, **kwargs: Any) -> Observations:
    return Observations(desired=desired, now=at(seconds), kept=frozenset({STABLE, CANARY, NEWER}), **kwargs)


STEADY = RolloutState(stable=STABLE, history=({"revision": STABLE, "outcome": "Promoted", "time": "2026-12-01T11:00:00Z"},))


# --- worked examples ---------------------------------------------------------------------------


def test_a_first_revision_becomes_stable_at_once() -> None:
    decision = decide(plan([{"setWeight": 10}]), RolloutState(), obs(desired=STABLE))
    assert decision.state.stable == STABLE and decision.state.canary == ""
    assert decision.state.history[0]["revision"] == STABLE


def test_an_unchanged_spec_decides_nothing() -> None:
    decision = decide(plan([{"setWeight": 10}]), STEADY, obs(desired=STABLE))
    assert decision.state == STEADY and decision.events == ()


def test_steps_without_analysis_run_on_time_alone() -> None:
    p = plan([{"setWeight": 10}, {"pause": {"seconds": 60}}, {"setWeight": 50}, {"pause": {}}])
    s = decide(p, STEADY, obs(0)).state
    assert (s.canary, s.weight, s.step) == (CANARY, 10, 1), "started and the first weight applied at once"
    assert decide(p, s, obs(59)).state == s, "the pause holds"
    s = decide(p, s, obs(60)).state
    assert (s.weight, s.step) == (50, 3), "pause done, next weight applied, waiting at the manual pause"
    assert decide(p, s, obs(10_000)).state == s, "a pause without seconds never ends by itself"
    s = decide(p, s, obs(10_001, request={"id": "r1", "action": "promote"})).state
    assert s.stable == CANARY and s.canary == "" and s.weight == 0
    assert s.last_request is not None and s.last_request["result"] == "Accepted"
    assert [entry["revision"] for entry in s.history] == [CANARY, STABLE]


def test_a_timed_pause_with_analysis_waits_for_a_pass_measured_after_it_began() -> None:
    p = plan([{"setWeight": 20}, {"pause": {"seconds": 30}}], {"intervalSeconds": 10, "minRequests": 5})
    s = decide(p, STEADY, obs(0)).state
    assert analysis_due(p, s, at(9)) is False and analysis_due(p, s, at(10)) is True
    s = decide(p, s, obs(30, judgement=NO_DATA)).state
    assert (s.step, s.weight) == (1, 20), "elapsed but only Inconclusive: no promotion"
    s = decide(p, s, obs(40, judgement=PASS)).state
    assert (s.step, s.canary) == (2, CANARY), "pause done after a pass; the end needs a later pass"
    s = decide(p, s, obs(50, judgement=PASS)).state
    assert s.stable == CANARY and s.canary == ""


def test_failures_beyond_the_limit_abort_to_weight_zero_and_hold_the_revision() -> None:
    p = plan([{"setWeight": 50}, {"pause": {}}], {"intervalSeconds": 10, "failureLimit": 1})
    s = decide(p, STEADY, obs(0)).state
    s = decide(p, s, obs(10, judgement=FAIL)).state
    assert s.canary == CANARY and s.last_analysis is not None and s.last_analysis["failures"] == 1
    decision = decide(p, s, obs(20, judgement=FAIL))
    s = decision.state
    assert (s.canary, s.weight, s.aborted, s.stable) == ("", 0, CANARY, STABLE)
    assert "errorRate 0.5 > 0.05" in str(s.last_analysis["message"])
    assert any(event.reason == "RolloutAborted" and event.warning for event in decision.events)
    assert decide(p, s, obs(30)).state == s, "held: the same spec never restarts it"
    restarted = decide(p, s, obs(40, desired=NEWER)).state
    assert (restarted.canary, restarted.aborted) == (NEWER, ""), "a new spec starts a new canary"
    retried = decide(p, s, obs(40, request={"id": "r", "action": "retry"})).state
    assert retried.canary == CANARY and retried.weight == 50 and retried.aborted == ""


def test_inconclusive_intervals_pause_the_rollout_and_never_promote_or_abort() -> None:
    p = plan([{"setWeight": 10}], {"intervalSeconds": 10, "inconclusiveLimit": 3})
    s = decide(p, STEADY, obs(0)).state
    for tick in (10, 20):
        s = decide(p, s, obs(tick, judgement=NO_DATA)).state
        assert (s.canary, s.paused, s.aborted) == (CANARY, False, "")
    decision = decide(p, s, obs(30, judgement=NO_DATA))
    s = decision.state
    assert s.paused and "3 inconclusive" in s.pause_reason and s.canary == CANARY and s.weight == 10
    assert analysis_due(p, s, at(1_000)) is False, "a paused rollout is not measured"
    s = decide(p, s, obs(40, request={"id": "r", "action": "resume"})).state
    assert not s.paused and s.last_analysis is not None and s.last_analysis["inconclusive"] == 0


def test_the_spec_back_at_stable_cancels_the_canary() -> None:
    p = plan([{"setWeight": 10}, {"pause": {}}])
    s = decide(p, STEADY, obs(0)).state
    decision = decide(p, s, obs(5, desired=STABLE))
    assert (decision.state.canary, decision.state.weight, decision.state.stable) == ("", 0, STABLE)
    assert [event.reason for event in decision.events] == ["CanaryCancelled"]


def test_a_newer_spec_mid_canary_replaces_the_canary_from_the_first_step() -> None:
    p = plan([{"setWeight": 10}, {"pause": {}}, {"setWeight": 50}])
    s = decide(p, STEADY, obs(0)).state
    s = decide(p, s, obs(5, desired=NEWER)).state
    assert (s.canary, s.step, s.weight, s.stable) == (NEWER, 1, 10, STABLE)


def test_spec_paused_is_the_handlers_business_but_a_paused_rollout_freezes_the_split() -> None:
    p = plan([{"setWeight": 10}, {"pause": {"seconds": 5}}, {"setWeight": 90}])
    s = decide(p, STEADY, obs(0)).state
    s = decide(p, s, obs(1, request={"id": "p", "action": "pause"})).state
    assert s.paused
    assert decide(p, s, obs(100)).state.weight == 10


def test_requests_that_do_not_fit_are_rejected_with_a_reason() -> None:
    p = plan([{"setWeight": 10}])
    for action, why in (("promote", "no canary in progress"), ("abort", "no canary in progress"),
                        ("retry", "nothing was aborted"), ("undo", "no previous stable revision"),
                        ("dance", "unknown action")):
        s = decide(p, STEADY, obs(0, desired=STABLE, request={"id": action, "action": action})).state
        assert s.last_request is not None and s.last_request["result"] == "Rejected", action
        assert why in s.last_request["message"], action
    rolling = plan([], strategy="RollingUpdate")
    s = decide(rolling, STEADY, obs(0, desired=STABLE, request={"id": "x", "action": "promote"})).state
    assert s.last_request is not None and "only undo and retry apply" in s.last_request["message"]


def test_promote_full_skips_the_steps_and_the_gate() -> None:
    p = plan([{"setWeight": 10}, {"pause": {}}], {"evaluation": {"configMapRef": {"name": "dev"}, "metric": "F1",
                                                                  "minScore": 0.5}})
    s = decide(p, STEADY, obs(0, evaluation_id="e1")).state
    assert s.weight == 0 and s.evaluation is not None and s.evaluation["state"] == "Pending"
    rejected = decide(p, s, obs(1, evaluation_id="e1", request={"id": "a", "action": "promote"})).state
    assert rejected.last_request is not None and rejected.last_request["result"] == "Rejected"
    s = decide(p, s, obs(1, evaluation_id="e1", request={"id": "b", "action": "promote-full"})).state
    assert s.stable == CANARY and s.canary == ""


def test_the_evaluation_gate_holds_weight_zero_then_passes_or_aborts() -> None:
    gate = {"configMapRef": {"name": "dev"}, "metric": "ExactMatch", "minScore": 0.6, "maxRegression": 0.1,
            "timeoutSeconds": 100}
    p = plan([{"setWeight": 10}, {"pause": {}}], {"evaluation": gate})
    s = decide(p, STEADY, obs(0, evaluation_id="e1")).state
    assert (s.weight, s.evaluation and s.evaluation["id"]) == (0, "e1")
    s = decide(p, s, obs(5, evaluation_id="e1", evaluation=EvaluationResult(runner="pod-0"))).state
    assert s.evaluation is not None and s.evaluation["state"] == "Running" and s.weight == 0
    good = EvaluationResult(state="Succeeded", scores={CANARY: 0.8, STABLE: 0.85})
    passed = decide(p, s, obs(10, evaluation_id="e1", evaluation=good)).state
    assert passed.evaluation is not None and passed.evaluation["state"] == "Passed" and passed.weight == 10
    assert passed.evaluation["scores"] == {"canary": 0.8, "stable": 0.85}
    worse = EvaluationResult(state="Succeeded", scores={CANARY: 0.7, STABLE: 0.9})
    failed = decide(p, s, obs(10, evaluation_id="e1", evaluation=worse)).state
    assert (failed.canary, failed.weight, failed.aborted) == ("", 0, CANARY)
    assert failed.evaluation is not None and "0.200 below stable" in failed.evaluation["message"]
    timed_out = decide(p, s, obs(100, evaluation_id="e1")).state
    assert timed_out.aborted == CANARY and "no result within 100s" in str(timed_out.last_analysis)
    unreadable = decide(p, s, obs(100, evaluation_id="e1", reports_unavailable=True)).state
    assert unreadable.canary == CANARY and not unreadable.aborted, "never aborted on data it could not read"


def test_undo_returns_to_the_previous_stable_and_holds_the_spec() -> None:
    p = plan([{"setWeight": 10}])
    history = ({"revision": CANARY, "outcome": "Promoted", "time": "2026-12-01T11:30:00Z"},
               {"revision": STABLE, "outcome": "Promoted", "time": "2026-12-01T11:00:00Z"})
    s = RolloutState(stable=CANARY, history=history)
    undone = decide(p, s, obs(0, desired=CANARY, request={"id": "u", "action": "undo"})).state
    assert (undone.stable, undone.aborted, undone.canary) == (STABLE, CANARY, "")
    assert decide(p, undone, obs(1, desired=CANARY)).state.canary == "", "held, not re-rolled"
    gone = decide(p, s, replace(obs(0, desired=CANARY, request={"id": "u", "action": "undo"}), kept=frozenset()))
    assert gone.state.last_request is not None and "no longer kept" in gone.state.last_request["message"]


def test_rolling_update_replaces_at_once_and_history_grows() -> None:
    p = plan([], strategy="RollingUpdate")
    s = decide(p, STEADY, obs(0, desired=CANARY)).state
    assert (s.stable, s.canary, [h["revision"] for h in s.history]) == (CANARY, "", [CANARY, STABLE])


# --- properties --------------------------------------------------------------------------------

steps_strategy = st.lists(
    st.one_of(
        st.builds(lambda w: {"setWeight": w}, st.integers(0, 100)),
        st.builds(lambda s: {"pause": {"seconds": s}}, st.integers(0, 120)),
        st.just({"pause": {}}),
    ),
    min_size=1, max_size=8,
)
analysis_strategy = st.one_of(
    st.none(),
    st.builds(lambda interval, failures, inconclusive: {"intervalSeconds": interval, "failureLimit": failures,
                                                        "inconclusiveLimit": inconclusive},
              st.integers(5, 60), st.integers(0, 3), st.integers(0, 4)),
)
tick_strategy = st.tuples(
    st.integers(1, 90),  # seconds since the previous tick
    st.sampled_from(["Pass", "Fail", "Inconclusive", None]),
    st.sampled_from([None, None, None, "promote", "promote-full", "abort", "retry", "pause", "resume", "undo"]),
)


def run(p: Plan, ticks: list[tuple[int, str | None, str | None]]) -> list[tuple[RolloutState, RolloutState, Any]]:
    """Every (before, after, verdict given) of a run that starts a canary of CANARY at T0."""
    state, now, trace = STEADY, 0, []
    verdicts = {"Pass": PASS, "Fail": FAIL, "Inconclusive": NO_DATA}
    for number, (elapsed, verdict, action) in enumerate(ticks):
        now += elapsed
        judgement = verdicts[verdict] if verdict and analysis_due(p, state, at(now)) else None
        request = {"id": f"r{number}", "action": action} if action else None
        after = decide(p, state, obs(now, judgement=judgement, request=request)).state
        trace.append((state, after, judgement))
        state = after
    return trace


@settings(max_examples=300, deadline=None)
@given(steps_strategy, analysis_strategy, st.lists(tick_strategy, max_size=30))
def test_weights_stay_within_bounds_and_an_abort_always_reaches_zero(steps, analysis, ticks) -> None:
    for before, after, _ in run(plan(steps, analysis), ticks):
        assert 0 <= after.weight <= 100
        assert after.canary or after.weight == 0, "no canary, no canary traffic"
        if after.aborted and not before.aborted:
            assert after.weight == 0 and after.canary == ""
        assert sum(weight for _, weight in after.served()) == 100


@settings(max_examples=300, deadline=None)
@given(steps_strategy, analysis_strategy, st.lists(tick_strategy.map(lambda t: (t[0], t[1], None)), max_size=30))
def test_no_automatic_promotion_after_a_failure_or_on_inconclusive_windows(steps, analysis, ticks) -> None:
    p = plan(steps, analysis)
    for before, after, judgement in run(p, ticks):
        promoted = before.canary and after.stable == before.canary
        if not promoted:
            continue
        if p.analysis is not None:
            assert judgement is not None and judgement.result == "Pass", "promoted only on a Pass"
            assert int((before.last_analysis or {}).get("failures") or 0) <= p.failure_limit


@settings(max_examples=200, deadline=None)
@given(steps_strategy, st.integers(5, 60))
def test_every_step_sequence_terminates_with_passing_analysis_and_promotes(steps, interval) -> None:
    p = plan(steps, {"intervalSeconds": interval})
    state, now = STEADY, 0
    for _ in range(200):
        now += interval
        judgement = PASS if analysis_due(p, state, at(now)) else None
        request = {"id": f"r{now}", "action": "promote"} if state.canary and _waits_for_promotion(p, state) else None
        state = decide(p, state, obs(now, judgement=judgement, request=request)).state
        if not state.canary:
            break
    assert state.stable == CANARY and state.canary == ""


def _waits_for_promotion(p: Plan, state: RolloutState) -> bool:
    """At a pause without seconds, or past the last step at weight 0 without any pass (nothing to measure)."""
    if state.step >= len(p.steps):
        return state.weight == 0 and not (state.last_analysis or {}).get("passedAt")
    return p.steps[state.step].is_pause and p.steps[state.step].pause_seconds is None


@settings(max_examples=200, deadline=None)
@given(steps_strategy, analysis_strategy, st.lists(tick_strategy, max_size=20))
def test_a_decision_is_a_function_of_status_alone(steps, analysis, ticks) -> None:
    """A restarted operator rebuilds the state from status: deciding from the round-tripped
    status gives the same decision as from the in-memory state."""
    p = plan(steps, analysis)
    for before, after, _ in run(p, ticks):
        assert RolloutState.from_status(after.to_status()) == after
        again = decide(p, RolloutState.from_status(after.to_status()), obs(10_000, desired=CANARY)).state
        assert again == decide(p, after, obs(10_000, desired=CANARY)).state


@pytest.mark.parametrize("verdicts", [["Fail"] * 3, ["Fail", "Pass", "Fail", "Fail"]])
def test_an_abort_lands_on_the_failure_past_the_limit(verdicts: list[str]) -> None:
    p = plan([{"setWeight": 30}, {"pause": {}}], {"intervalSeconds": 10, "failureLimit": 2})
    trace = run(p, [(1, None, None)] + [(10, verdict, None) for verdict in verdicts])  # the canary starts first
    aborted_at = next(index for index, (_, after, _) in enumerate(trace) if after.aborted)
    assert aborted_at == len(verdicts)


def test_history_keeps_revision_history_limit_entries_and_every_revision_in_it() -> None:
    limited = Plan.from_spec({"revisionHistoryLimit": 3, "rollout": {"strategy": "RollingUpdate"}})
    state = RolloutState()
    for index, revision in enumerate(["r0" * 6, "r1" * 6, "r2" * 6, "r3" * 6, "r4" * 6]):
        state = decide(limited, state, obs(index, desired=revision)).state
    assert [entry["revision"] for entry in state.history] == ["r4" * 6, "r3" * 6, "r2" * 6]
    assert state.referenced() == {"r4" * 6, "r3" * 6, "r2" * 6}, "the programs undo may return to are kept"
    assert state.undo_target() == "r3" * 6


def test_an_abort_is_recorded_in_the_history_with_its_reason() -> None:
    p = plan([{"setWeight": 10}, {"pause": {}}], {"intervalSeconds": 10, "failureLimit": 0})
    s = decide(p, STEADY, obs(0)).state
    s = decide(p, s, obs(10, judgement=FAIL)).state
    assert s.history[0]["revision"] == CANARY and s.history[0]["outcome"] == "Aborted"
    assert "errorRate 0.5 > 0.05" in s.history[0]["message"]
    assert s.undo_target() is None, "nothing was promoted before the stable one"
