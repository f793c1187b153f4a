"""Conditions, phase derivation and the smallest status patch (pure functions)."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timezone
from typing import Any

import pytest

from dspy_operator.errors import SpecProblem
from dspy_operator.rollout.state import Plan, RolloutState
from dspy_operator.status import conditions as c
from dspy_operator.status.report import Observation, Pods, RolloutReport, canary_message, desired_status, status_changes

T0, T1 = "2026-11-23T12:00:00Z", "2026-11-23T12:05:00Z"
NOW = datetime(2026, 12, 1, 12, 0, 0, tzinfo=timezone.utc)


def deployment(desired: int = 2, ready: int = 2, updated: int | None = None, generation: int = 1,
               observed: int = 1, deadline: bool = False) -> dict[str, Any]:
    updated = ready if updated is None else updated
    conditions = [{"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"}] if deadline else []
    return {
        "metadata": {"generation": generation},
        "spec": {"replicas": desired, "template": {"metadata": {"annotations": {"dspy.dev/config-hash": "abcdef0123456789"}}}},
        "status": {"replicas": desired, "updatedReplicas": updated, "readyReplicas": ready,
                   "availableReplicas": ready, "observedGeneration": observed, "conditions": conditions},
    }


def observe(**overrides: Any) -> Observation:
    values: dict[str, Any] = {
        "generation": 4, "paused": False, "problems": (), "runtime": deployment(),
        "redis_mode": "Disabled", "redis": None, "selector": "a=b",
    }
    values.update(overrides)
    return Observation(**values)


def test_set_condition_keeps_transition_time_while_status_holds():
    first = c.set_condition([], c.READY, c.FALSE, c.REASON_REPLICAS_NOT_READY, "0/2", 1, T0)
    same = c.set_condition(first, c.READY, c.FALSE, c.REASON_REPLICAS_NOT_READY, "1/2", 2, T1)
    assert same[0]["lastTransitionTime"] == T0 and same[0]["message"] == "1/2" and same[0]["observedGeneration"] == 2
    flipped = c.set_condition(same, c.READY, c.TRUE, c.REASON_ALL_REPLICAS_READY, "2/2", 2, T1)
    assert flipped[0]["lastTransitionTime"] == T1


def test_set_condition_replaces_only_its_type_and_keeps_a_stable_order():
    conditions = c.set_condition([], c.DEGRADED, c.FALSE, c.REASON_AS_EXPECTED, "", 1, T0)
    conditions = c.set_condition(conditions, c.READY, c.TRUE, c.REASON_ALL_REPLICAS_READY, "", 1, T0)
    assert [condition["type"] for condition in conditions] == [c.READY, c.DEGRADED]


def test_healthy_when_all_replicas_ready():
    status = desired_status({}, observe(), T0)
    assert status["phase"] == c.PHASE_HEALTHY
    assert status["readyReplicas"] == 2 and status["replicas"] == 2 and status["readySummary"] == "2/2"
    assert status["observedGeneration"] == 4 and status["selector"] == "a=b"
    assert "revision" not in status, "the revision is the rollout's to say (no decision: left as it is)"
    types = {condition["type"]: condition for condition in status["conditions"]}
    assert types[c.READY]["status"] == c.TRUE and types[c.PROGRESSING]["status"] == c.FALSE
    assert types[c.DEGRADED]["status"] == c.FALSE and types[c.REDIS_READY]["reason"] == c.REASON_REDIS_DISABLED
    assert all(condition["observedGeneration"] == 4 for condition in status["conditions"])


def test_pending_without_deployment_and_progressing_during_rollout():
    assert desired_status({}, observe(runtime=None), T0)["phase"] == c.PHASE_PENDING
    rolling = desired_status({}, observe(runtime=deployment(ready=2, updated=1)), T0)
    assert rolling["phase"] == c.PHASE_PROGRESSING
    assert desired_status({}, observe(runtime=deployment(generation=2, observed=1)), T0)["phase"] == c.PHASE_PROGRESSING
    assert desired_status({}, observe(runtime=deployment(ready=0)), T0)["phase"] == c.PHASE_PROGRESSING


def test_spec_problem_degrades_with_the_field_in_the_message():
    problem = SpecProblem("spec.lm.apiKeySecretRef", 'Secret "openai" not found in namespace "demo"')
    status = desired_status({}, observe(problems=(problem,)), T0)
    assert status["phase"] == c.PHASE_DEGRADED
    degraded = c.find(status["conditions"], c.DEGRADED)
    assert degraded is not None and degraded["status"] == c.TRUE and degraded["reason"] == c.REASON_SPEC_INVALID
    assert degraded["message"] == 'spec.lm.apiKeySecretRef: Secret "openai" not found in namespace "demo"'


def test_progress_deadline_is_degraded_and_paused_wins():
    assert desired_status({}, observe(runtime=deployment(ready=1, deadline=True)), T0)["phase"] == c.PHASE_DEGRADED
    paused = desired_status({}, observe(paused=True, runtime=deployment(ready=1)), T0)
    assert paused["phase"] == c.PHASE_PAUSED
    assert c.find(paused["conditions"], c.PROGRESSING)["reason"] == c.REASON_PAUSED


def test_managed_redis_gates_ready():
    waiting = desired_status({}, observe(redis_mode="Managed", redis=deployment(desired=1, ready=0)), T0)
    assert c.find(waiting["conditions"], c.REDIS_READY)["status"] == c.FALSE
    assert c.find(waiting["conditions"], c.READY)["reason"] == c.REASON_REDIS_NOT_READY
    ready = desired_status({}, observe(redis_mode="Managed", redis=deployment(desired=1, ready=1)), T0)
    assert ready["phase"] == c.PHASE_HEALTHY


def test_unchanged_observation_means_an_empty_patch():
    first = desired_status({}, observe(), T0)
    again = desired_status(first, observe(), T1)
    assert status_changes(first, again) == {}
    later = desired_status(first, observe(runtime=deployment(ready=1)), T1)
    assert set(status_changes(first, later)) == {"phase", "readyReplicas", "readySummary", "conditions"}


# --- the rollout's conditions -------------------------------------------------------------------

STABLE, CANARY = "aaaaaaaaaaaa", "bbbbbbbbbbbb"
STEPS = [{"setWeight": 20}, {"pause": {"seconds": 60}}, {"setWeight": 50}, {"pause": {}}]
ANALYSIS = {"intervalSeconds": 30, "minRequests": 10}
GATE = {**ANALYSIS, "evaluation": {"configMapRef": {"name": "devset"}, "metric": "ExactMatch", "minScore": 0.8}}


def plan(strategy: str = "Canary", analysis: dict[str, Any] | None = None,
         blue_green: dict[str, Any] | None = None) -> Plan:
    if strategy == "BlueGreen":
        return Plan.from_spec({"rollout": {"strategy": strategy, "blueGreen": blue_green or {}}})
    canary: dict[str, Any] = {"steps": STEPS}
    if analysis is not None:
        canary["analysis"] = analysis
    return Plan.from_spec({"rollout": {"strategy": strategy, "canary": canary}})


def report(state: RolloutState, desired: str = CANARY, strategy: str = "Canary", analysis: dict[str, Any] | None = None,
           blue_green: dict[str, Any] | None = None, **kwargs: Any) -> RolloutReport:
    return RolloutReport(plan=plan(strategy, analysis, blue_green), state=state, desired=desired, **kwargs)


CANARY_AT_20 = RolloutState(stable=STABLE, canary=CANARY, weight=20, step=1, step_started=T0)


def condition(status: dict[str, Any], type_: str) -> dict[str, Any]:
    found = c.find(status["conditions"], type_)
    assert found is not None
    return dict(found)


def test_the_revision_is_the_one_the_spec_asks_for():
    status = desired_status({}, observe(), T0, report(RolloutState(stable=STABLE), desired=STABLE))
    assert status["revision"] == STABLE


def test_a_canary_in_progress_says_where_it_is():
    status = desired_status({}, observe(), T0, report(CANARY_AT_20))
    progressing = condition(status, c.PROGRESSING)
    assert (progressing["status"], progressing["reason"]) == (c.TRUE, c.REASON_CANARY_IN_PROGRESS)
    assert progressing["message"] == f"canary {CANARY} at 20% beside stable {STABLE}, step 2/4 (pause 60s)"
    assert status["phase"] == c.PHASE_PROGRESSING, "ready pods, and a canary under way"
    assert condition(status, c.DEGRADED)["status"] == c.FALSE


def test_canary_messages_past_the_last_step():
    done = RolloutState(stable=STABLE, canary=CANARY, weight=50, step=4)
    assert canary_message(plan(), done).endswith("step 4/4 (promotion after a passing analysis)")
    dark = RolloutState(stable=STABLE, canary=CANARY, weight=0, step=4)
    assert "takes no traffic: `kubectl dspy promote` decides" in canary_message(plan(), dark)


def test_a_gated_canary_is_evaluating_until_its_gate_passes():
    waiting = RolloutState(stable=STABLE, canary=CANARY, evaluation={"id": "e1", "revision": CANARY, "state": "Running"})
    progressing = condition(desired_status({}, observe(), T0, report(waiting, analysis=GATE)), c.PROGRESSING)
    assert (progressing["status"], progressing["reason"]) == (c.TRUE, c.REASON_EVALUATING)
    assert progressing["message"].endswith("(Running)")
    passed = RolloutState(stable=STABLE, canary=CANARY, weight=20, step=1,
                          evaluation={"id": "e1", "revision": CANARY, "state": "Passed"})
    assert condition(desired_status({}, observe(), T0, report(passed, analysis=GATE)), c.PROGRESSING)["reason"] == \
        c.REASON_CANARY_IN_PROGRESS


def test_a_paused_rollout_is_paused_with_its_reason():
    held = RolloutState(stable=STABLE, canary=CANARY, weight=20, step=1, paused=True, pause_reason="paused by request")
    status = desired_status({}, observe(), T0, report(held))
    progressing = condition(status, c.PROGRESSING)
    assert (progressing["status"], progressing["reason"]) == (c.TRUE, c.REASON_ROLLOUT_PAUSED)
    assert progressing["message"] == f"canary {CANARY} held at 20%: paused by request"
    assert status["phase"] == c.PHASE_PAUSED


def test_pods_replaced_under_a_canary_strategy_are_a_pod_level_rollout():
    steady = RolloutState(stable=STABLE)
    rolling = desired_status({}, observe(runtime=deployment(ready=2, updated=1, generation=3)), T0,
                             report(steady, desired=STABLE))
    progressing = condition(rolling, c.PROGRESSING)
    assert (progressing["status"], progressing["reason"]) == (c.TRUE, c.REASON_POD_LEVEL_ROLLOUT)
    assert progressing["message"].startswith("pod-level fields changed")
    plain = desired_status({}, observe(runtime=deployment(ready=2, updated=1)), T0,
                           report(steady, desired=STABLE, strategy="RollingUpdate"))
    assert condition(plain, c.PROGRESSING)["reason"] == c.REASON_ROLLOUT_IN_PROGRESS
    done = desired_status({}, observe(), T0, report(steady, desired=STABLE))
    assert condition(done, c.PROGRESSING)["reason"] == c.REASON_ROLLOUT_COMPLETE
    # A first rollout or a scale-up is no pod-level change, whatever the strategy.
    first = desired_status({}, observe(runtime=deployment(ready=0, updated=0)), T0, report(steady, desired=STABLE))
    assert condition(first, c.PROGRESSING)["reason"] == c.REASON_ROLLOUT_IN_PROGRESS
    scaling = desired_status({}, observe(runtime=deployment(desired=4, ready=2, updated=4, generation=5)), T0,
                             report(steady, desired=STABLE))
    assert condition(scaling, c.PROGRESSING)["reason"] == c.REASON_ROLLOUT_IN_PROGRESS


def test_an_aborted_canary_degrades_until_the_spec_changes():
    aborted = RolloutState(stable=STABLE, aborted=CANARY, last_analysis={"message": "errorRate 0.5 > 0.05"})
    status = desired_status({}, observe(), T0, report(aborted))
    degraded = condition(status, c.DEGRADED)
    assert (degraded["status"], degraded["reason"]) == (c.TRUE, c.REASON_ROLLOUT_ABORTED)
    assert degraded["message"] == (f"canary {CANARY} aborted, traffic is back on {STABLE}: errorRate 0.5 > 0.05; "
                                   "change the spec or `kubectl dspy retry`")
    assert status["phase"] == c.PHASE_DEGRADED
    moved_on = desired_status(status, observe(), T1, report(aborted, desired="cccccccccccc"))
    assert condition(moved_on, c.DEGRADED)["status"] == c.FALSE, "a newer spec is no longer the aborted one"


def test_an_undo_reports_rolled_back():
    undone = RolloutState(stable=STABLE, aborted=CANARY,
                          last_request={"id": "r1", "action": "undo", "result": "Accepted"})
    degraded = condition(desired_status({}, observe(), T0, report(undone)), c.DEGRADED)
    assert (degraded["status"], degraded["reason"]) == (c.TRUE, c.REASON_ROLLED_BACK)
    assert degraded["message"].startswith(f"rolled back to revision {STABLE}")


@pytest.mark.parametrize(("state", "reason", "text"), [
    (dict(preview_ready=None), c.REASON_PREVIEW_STARTING, "is starting (1 pod(s))"),
    (dict(preview_ready="2026-12-01T12:00:00Z"), c.REASON_PREVIEW_READY, "auto-promotion in 30s"),
    (dict(preview_ready="2026-12-01T12:00:00Z", switching=True), c.REASON_SWITCHING, "scaled to the active count"),
    (dict(preview_ready="2026-12-01T12:00:00Z", paused=True, pause_reason="paused by request"),
     c.REASON_ROLLOUT_PAUSED, "held: paused by request"),
])
def test_a_blue_green_preview_says_where_it_stands(state: dict[str, Any], reason: str, text: str):
    preview = RolloutState(stable=STABLE, canary=CANARY, active_color="blue", preview_color="green",
                           colors={"blue": STABLE, "green": CANARY}, **state)
    rollout = report(preview, strategy="BlueGreen", blue_green={"autoPromotionSeconds": 30})
    progressing = condition(desired_status({}, observe(), T0, replace(rollout, now=NOW)), c.PROGRESSING)
    assert (progressing["status"], progressing["reason"]) == (c.TRUE, reason)
    assert f"preview {CANARY} in the green color" in progressing["message"] and text in progressing["message"]


def test_after_a_switch_the_status_says_when_the_old_color_goes():
    switched = RolloutState(stable=CANARY, active_color="green", colors={"blue": STABLE, "green": CANARY},
                            scale_down="2026-12-01T12:05:00Z")
    progressing = condition(desired_status({}, observe(), T0, report(switched, desired=CANARY, strategy="BlueGreen")),
                            c.PROGRESSING)
    assert progressing["reason"] == c.REASON_ROLLOUT_COMPLETE
    assert progressing["message"].endswith("; blue goes at 2026-12-01T12:05:00Z (`kubectl dspy undo` switches back "
                                           "until then)")


def test_an_unreachable_redis_holds_a_judged_canary_and_shows_in_routing():
    problem = "cannot read the window buckets: Connection refused"
    current = {"routing": {"serial": 7, "hash": "h", "servedBy": "2/2"}}
    status = desired_status(current, observe(redis_mode="External"), T0,
                            report(CANARY_AT_20, analysis=ANALYSIS, redis_problem=problem))
    degraded = condition(status, c.DEGRADED)
    assert (degraded["status"], degraded["reason"]) == (c.TRUE, c.REASON_ANALYSIS_UNAVAILABLE)
    assert degraded["message"] == f"the canary cannot be judged, so it is held where it is: {problem}"
    assert status["routing"] == {"serial": 7, "hash": "h", "pushError": problem}, "no servedBy: it was not read"
    # RedisReady is the pods' Redis, not the operator's reach of it.
    assert condition(status, c.REDIS_READY)["reason"] == c.REASON_REDIS_EXTERNAL
    unjudged = desired_status(current, observe(redis_mode="External"), T0, report(CANARY_AT_20, redis_problem=problem))
    assert condition(unjudged, c.DEGRADED)["status"] == c.FALSE, "steps on time alone need no Redis"
    assert unjudged["routing"]["pushError"] == problem


def test_a_recovered_push_clears_push_error_and_reports_served_by():
    current = {"routing": {"serial": 7, "hash": "h", "pushError": "cannot publish the routing table: timeout"}}
    status = desired_status(current, observe(redis_mode="External"), T0, report(CANARY_AT_20, pods=Pods("1/2", None)))
    assert status["routing"] == {"serial": 7, "hash": "h", "servedBy": "1/2"}
    assert status_changes(current, status)["routing"] == {"servedBy": "1/2", "pushError": None}, \
        "a merge patch keeps a key it does not name: the old error is sent as null"


CACHE_ONLY = {"level": "cache_only", "pods": {"normal": 1, "cache_only": 1},
              "message": "1/2 pods answer below normal: qa-2 at cache_only (error_rate 1 (threshold 0.5))"}


def test_pods_below_normal_make_the_resource_degraded_with_the_block_in_status():
    status = desired_status({}, observe(redis_mode="External"), T0, report(CANARY_AT_20, pods=Pods("2/2", CACHE_ONLY)))
    assert status["degradation"] == CACHE_ONLY
    assert condition(status, c.DEGRADED)["reason"] == c.REASON_SERVING_DEGRADED
    assert condition(status, c.DEGRADED)["message"].startswith(CACHE_ONLY["message"])
    assert status["phase"] == c.PHASE_DEGRADED


def test_an_aborted_canary_outranks_degraded_serving_in_the_condition():
    aborted = RolloutState(stable=STABLE, aborted=CANARY, last_analysis={"message": "errorRate 1 > 0.05"})
    status = desired_status({}, observe(redis_mode="External"), T0, report(aborted, pods=Pods("2/2", CACHE_ONLY)))
    assert condition(status, c.DEGRADED)["reason"] == c.REASON_ROLLOUT_ABORTED
    assert status["degradation"] == CACHE_ONLY, "the block is there all the same"


def test_unread_reports_keep_the_last_block_and_its_condition():
    current = {"degradation": CACHE_ONLY}
    status = desired_status(current, observe(redis_mode="External"), T0, report(CANARY_AT_20, pods=None))
    assert "degradation" not in status_changes(current, status)
    assert condition(status, c.DEGRADED)["reason"] == c.REASON_SERVING_DEGRADED, "a Redis hiccup does not flap it"


def test_reports_without_a_level_drop_the_block():
    current = {"degradation": CACHE_ONLY}
    status = desired_status(current, observe(redis_mode="External"), T0, report(CANARY_AT_20, pods=Pods("2/2", None)))
    assert status_changes(current, status)["degradation"] is None
    assert condition(status, c.DEGRADED)["status"] == c.FALSE
    untouched = desired_status({}, observe(redis_mode="External"), T0, report(CANARY_AT_20, pods=Pods("2/2", None)))
    assert "degradation" not in untouched, "no block, and no null written where there was none"


def test_without_a_rollout_decision_the_rollout_fields_stay_as_they_are():
    current = {"stableRevision": STABLE, "routing": {"serial": 7, "servedBy": "2/2"}, "revision": STABLE}
    status = desired_status(current, observe(paused=True), T0)
    assert not {"revision", "routing", "stableRevision"} & set(status_changes(current, status))


def test_paused_keeps_a_degraded_condition_it_had():
    problem = SpecProblem("spec.lm.apiKeySecretRef", 'Secret "openai" not found in namespace "demo"')
    degraded = desired_status({}, observe(problems=(problem,)), T0)
    paused = desired_status(degraded, observe(paused=True), T1)
    assert condition(paused, c.DEGRADED)["status"] == c.TRUE, "a paused resource is not re-judged"
    assert condition(desired_status({}, observe(paused=True), T0), c.DEGRADED)["status"] == c.FALSE


def test_status_changes_is_a_merge_patch_that_drops_gone_keys():
    current = {"routing": {"serial": 1, "weights": {STABLE: 80, CANARY: 20}}, "canaryRevision": CANARY, "phase": "Healthy"}
    desired = {"routing": {"serial": 2, "weights": {CANARY: 100}}, "canaryRevision": "", "phase": "Healthy"}
    assert status_changes(current, desired) == {
        "routing": {"serial": 2, "weights": {CANARY: 100, STABLE: None}}, "canaryRevision": ""}
    assert status_changes(desired, desired) == {}


def test_shadow_figures_are_written_when_recomputed_and_dropped_once_the_spec_has_no_shadow():
    block = {"window": "30m", "updated": T0, "targets": [{"revision": STABLE, "variant": "shadowed", "requests": 3}]}
    steady = RolloutState(stable=STABLE)
    written = desired_status({}, observe(), T0, report(steady, desired=STABLE, shadow=block))
    assert written["shadow"] == block
    kept = desired_status(written, observe(), T1, report(steady, desired=STABLE))
    assert kept.get("shadow", block) == block and "shadow" not in status_changes(written, kept)
    gone = desired_status(written, observe(), T1, report(steady, desired=STABLE, shadow_gone=True))
    assert status_changes(written, gone)["shadow"] is None, "a merge patch null removes it"
