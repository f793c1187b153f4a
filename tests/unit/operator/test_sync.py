"""The one pass every handler runs, against a fake API server, a fake Redis and a fake index.

Each test asserts the exact API calls a pass makes, in order (the rollout decision is written
before any child, the level status last), and that the pass after it makes none.
"""

from __future__ import annotations

import json
from typing import Any

import kopf
import pytest

from dspy_operator import api
from dspy_operator.reconcile.inputs import Inputs
from dspy_operator.reconcile.revisions import revision_of
from dspy_operator.status import conditions as c
from dspy_operator.status.pods import PodReport


ROLLING = {"redis": {"mode": "Disabled"}}
EXTERNAL = {"mode": "External", "urlSecretRef": {"name": "redis-url"}}
PREFIX = "dspy:{demo/qa}:"
STEPS = [{"setWeight": 20}, {"pause": {"seconds": 60}}, {"setWeight": 50}, {"pause": {}}]


def canary_spec(analysis: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    canary: dict[str, Any] = {"steps": STEPS}
    if analysis is not None:
        canary["analysis"] = analysis
    return {"redis": EXTERNAL, "rollout": {"strategy": "Canary", "canary": canary}, **extra}


def revision(spec: dict[str, Any]) -> str:
    return revision_of(spec, Inputs()).name


def condition(status: dict[str, Any], type_: str) -> dict[str, Any]:
    found = c.find(status.get("conditions") or [], type_)
    assert found is not None, f"no {type_} condition"
    return dict(found)


def rollout_fields(status: dict[str, Any]) -> tuple[Any, ...]:
    return (status.get("stableRevision"), status.get("canaryRevision"), status.get("canaryWeight"),
            status.get("currentStep"))


def start_canary(world, analysis: dict[str, Any] | None = None) -> tuple[str, str]:
    """Stable A served, then a spec change (temperature) starts canary B at the first step's 20%."""
    created = world.create(canary_spec(analysis))
    world.sync(created)
    world.settle()
    stable = world.status()["stableRevision"]
    edited = world.edit_spec(lm={"temperature": 0.7})
    world.sync(edited, after=10)
    world.settle()
    return stable, world.status()["canaryRevision"]


# --- RollingUpdate ------------------------------------------------------------------------------


def test_the_first_pass_commits_the_decision_before_any_child_and_the_second_writes_nothing(world):
    created = world.create(ROLLING)
    stable = revision(created["spec"])
    world.sync(created)
    assert world.kube.writes == [
        f"patch status@{created['metadata']['resourceVersion']}",
        f"apply ConfigMap/qa-rev-{stable}", "apply ConfigMap/qa-routing",
        "apply Deployment/qa", "apply Service/qa", "apply PodDisruptionBudget/qa",
        "patch status",
    ]
    committed = world.kube.status_patches[0]
    assert committed["stableRevision"] == stable and committed["canaryRevision"] == ""
    assert committed["history"] == [{"revision": stable, "outcome": "Promoted", "time": "2026-12-01T12:00:00Z"}]
    serial = committed["routing"]["serial"]
    assert serial == int(world.now.timestamp() * 1000)
    assert committed["routing"]["weights"] == {stable: 100}
    table = json.loads(world.kube.objects["ConfigMap/qa-routing"]["data"]["routing.json"])
    assert table["serial"] == serial and [entry["name"] for entry in table["revisions"]] == [stable]
    status = world.status()
    assert status["revision"] == stable and status["phase"] == c.PHASE_PROGRESSING
    assert condition(status, c.PROGRESSING)["reason"] == c.REASON_ROLLOUT_IN_PROGRESS
    assert world.reasons() == ["RevisionServed", "Applied", "PhaseChanged"]
    assert world.buses.urls == [], "no Redis, nothing pushed"

    world.settle()
    world.sync(after=10)
    assert world.kube.writes == [] and world.events == []


def test_a_revision_change_under_rolling_update_replaces_at_once_without_new_pods(world):
    world.sync(world.create(ROLLING))
    world.settle()
    first = world.status()
    edited = world.edit_spec(lm={"temperature": 0.7})
    world.sync(edited, after=5)
    new = revision(edited["spec"])
    assert world.kube.writes == [f"patch status@{edited['metadata']['resourceVersion']}",
                                 f"apply ConfigMap/qa-rev-{new}", "apply ConfigMap/qa-routing", "patch status"]
    status = world.status()
    assert status["stableRevision"] == new and status["routing"]["weights"] == {new: 100}
    assert status["routing"]["serial"] > first["routing"]["serial"]
    assert [entry["revision"] for entry in status["history"]] == [new, first["stableRevision"]]
    assert f"ConfigMap/qa-rev-{first['stableRevision']}" in world.kube.objects, "kept for undo"


# --- Canary -------------------------------------------------------------------------------------


def test_a_spec_change_starts_a_canary_and_pushes_both_revisions_with_their_weights(world):
    created = world.create(canary_spec())
    world.sync(created)
    world.settle()
    stable = world.status()["stableRevision"]
    assert world.bus.published[-1][1]["revisions"][0]["name"] == stable
    first_serial = world.status()["routing"]["serial"]

    edited = world.edit_spec(lm={"temperature": 0.7})
    canary = revision(edited["spec"])
    world.sync(edited, after=10)
    assert world.kube.writes == [f"patch status@{edited['metadata']['resourceVersion']}",
                                 f"apply ConfigMap/qa-rev-{canary}", "apply ConfigMap/qa-routing", "patch status"], \
        "a canary is a new table, never new pods"
    status = world.status()
    assert rollout_fields(status) == (stable, canary, 20, 1), "the first setWeight applies at once"
    assert status["currentStepStartTime"] == "2026-12-01T12:00:10Z"
    assert status["routing"]["weights"] == {stable: 80, canary: 20}
    serial = status["routing"]["serial"]
    assert serial > first_serial
    prefix, table, pushed = world.bus.published[-1]
    assert (prefix, pushed) == (PREFIX + "routing", serial)
    assert [(entry["name"], entry["weight"]) for entry in table["revisions"]] == [(stable, 80), (canary, 20)]
    assert table["revisions"][1]["variants"][0]["lm"]["temperature"] == 0.7
    assert json.loads(world.kube.objects["ConfigMap/qa-routing"]["data"]["routing.json"]) == {**table, "serial": serial}
    assert world.buses.urls[-1] == "redis://redis.example:6379/0"
    assert condition(status, c.PROGRESSING)["reason"] == c.REASON_CANARY_IN_PROGRESS
    assert "CanaryStarted" in world.reasons() and "WeightChanged" in world.reasons()

    world.settle()
    world.sync(after=10)
    assert world.kube.writes == [] and len(world.bus.published) == 2, "nothing due: no write, no push"


def test_the_steps_run_to_promotion_and_the_old_weight_leaves_status(world):
    stable, canary = start_canary(world)
    world.sync(after=60)
    assert rollout_fields(world.status()) == (stable, canary, 50, 3), "pause done, next weight, manual pause"
    world.settle()
    promoted = world.annotate(api.ANNOTATION_REQUEST, json.dumps({"id": "r1", "action": "promote"}))
    world.sync(promoted, fresh=False, after=5)
    status = world.status()
    assert rollout_fields(status) == (canary, "", 0, 0)
    assert status["routing"]["weights"] == {canary: 100}, "the merge patch dropped the old stable's weight"
    assert [entry["name"] for entry in world.bus.published[-1][1]["revisions"]] == [canary]
    assert "Promoted" in world.reasons()
    world.settle()
    world.sync(fresh=False, after=10)
    assert world.kube.writes == [], "an idle pass after a promotion writes nothing"


def test_pods_reporting_the_table_show_in_served_by(world):
    start_canary(world)
    serial = world.status()["routing"]["serial"]
    at = world.now.timestamp()
    world.bus.pods[PREFIX] = {"qa-1": PodReport(serial, at), "qa-2": PodReport(serial - 1, at),
                              "qa-old": PodReport(serial, at - 300)}
    world.sync(after=1)
    assert world.kube.writes == ["patch status"]
    assert world.status()["routing"]["servedBy"] == "1/2", "a report older than 30 s does not count"


def test_pods_below_normal_degrade_the_resource_with_one_warning_then_recover(world):
    start_canary(world)
    serial = world.status()["routing"]["serial"]
    at = world.now.timestamp()
    world.bus.pods[PREFIX] = {"qa-1": PodReport(serial, at, "normal", "started"),
                              "qa-2": PodReport(serial, at, "cache_only", "error_rate 1 (threshold 0.5)")}
    world.sync(after=1)
    status = world.status()
    assert status["degradation"]["level"] == "cache_only" and status["degradation"]["pods"] == {"normal": 1, "cache_only": 1}
    assert (status["phase"], condition(status, c.DEGRADED)["reason"]) == ("Degraded", "ServingDegraded")
    assert "qa-2 at cache_only (error_rate 1 (threshold 0.5))" in condition(status, c.DEGRADED)["message"]
    assert world.reasons().count("ServingDegraded") == 1
    world.sync(after=1)
    assert world.kube.writes == [] and world.reasons() == [], "a steady degraded fleet writes and posts nothing more"

    at = world.now.timestamp()
    world.bus.pods[PREFIX] = {"qa-1": PodReport(serial, at, "normal", "started"),
                              "qa-2": PodReport(serial, at, "normal", "healthy")}
    world.sync(after=1)
    status = world.status()
    assert status["degradation"]["level"] == "normal" and condition(status, c.DEGRADED)["status"] == "False"
    assert status["phase"] != "Degraded" and world.reasons().count("Recovered") == 1


# --- conflicts and stale bodies -----------------------------------------------------------------


def test_a_409_on_the_decision_rereads_and_decides_again(world):
    created = world.create(ROLLING)
    world.sync(created)  # another operator process took this decision; our serializer never saw it
    world.settle()
    decided = world.status()
    world.context.serializer.forget(created["metadata"]["uid"])
    world.sync(created, after=5)  # kopf delivers the body from before that write
    assert world.kube.calls == [
        "get Secret/openai", f"patch status@{created['metadata']['resourceVersion']}",  # refused
        "get DSPyDeployment/qa", "get Secret/openai",  # a fresh read, and the pass again from it
    ], "decided again from the fresh body: nothing left to write"
    assert world.status()["history"] == decided["history"], "the stale decision never landed"
    assert "RevisionServed" not in world.reasons()


def test_a_second_409_in_a_row_is_a_temporary_error_and_writes_no_child(world):
    created = world.create(ROLLING)
    world.kube.conflicts = 2
    with pytest.raises(kopf.TemporaryError) as raised:
        world.sync(created)
    assert raised.value.delay == 1.0
    assert world.kube.writes == ["patch status@" + created["metadata"]["resourceVersion"]] * 2
    assert world.children() == {} and world.events == []


def test_a_stale_body_is_replaced_by_the_status_this_process_wrote(world):
    world.sync(world.create(canary_spec()))
    world.settle()
    edited = world.edit_spec(lm={"temperature": 0.7})
    world.sync(edited, after=10)
    world.settle()
    started = world.status()
    assert started["canaryRevision"] and started["routing"]["serial"] > edited["status"]["routing"]["serial"]
    world.sync(edited, fresh=False, after=1)  # a timer still holding the body from before the canary
    assert world.kube.calls == [], "the remembered status is newer: the same decision, no read, no write"
    assert world.events == [], "the canary is not started twice"
    assert world.status() == started


# --- kubectl dspy requests ----------------------------------------------------------------------


def test_a_request_is_answered_once(world):
    stable, canary = start_canary(world)
    asked = world.annotate(api.ANNOTATION_REQUEST, json.dumps({"id": "r1", "action": "pause",
                                                               "time": "2026-12-01T12:00:15Z"}))
    world.sync(asked, fresh=False, after=5)
    status = world.status()
    assert status["lastRequest"] == {"id": "r1", "action": "pause", "result": "Accepted", "message": "rollout paused",
                                     "time": "2026-12-01T12:00:15Z"}
    assert status["rolloutPaused"] is True and status["phase"] == c.PHASE_PAUSED
    assert rollout_fields(status) == (stable, canary, 20, 1)
    assert "RequestAccepted" in world.reasons()

    world.settle()
    world.sync(fresh=False, after=5)
    assert world.kube.writes == [] and "RequestAccepted" not in world.reasons()
    world.sync(asked, fresh=False, after=5)  # the annotation event's own body, delivered late
    assert world.kube.writes == [f"patch status@{asked['metadata']['resourceVersion']}"], \
        "a decision from the stale body is refused by the precondition and retaken from a fresh read"
    assert world.status()["lastRequest"]["id"] == "r1" and "RequestAccepted" not in world.reasons()


def test_an_unreadable_request_is_rejected_once(world):
    start_canary(world)
    world.sync(world.annotate(api.ANNOTATION_REQUEST, "promote please"), fresh=False, after=1)
    answer = world.status()["lastRequest"]
    assert answer["result"] == "Rejected" and answer["action"] == f"<{api.ANNOTATION_REQUEST} is not a request>"
    assert ("warn", "RequestRejected") in [(verb, reason) for verb, reason, _ in world.events]
    world.settle()
    world.sync(fresh=False, after=1)
    assert world.kube.writes == []


# --- Redis unavailable --------------------------------------------------------------------------


def test_an_unreachable_redis_holds_a_judged_canary_where_it_is(world):
    stable, canary = start_canary(world, analysis={"intervalSeconds": 10, "minRequests": 5})
    pushed = len(world.bus.published)
    world.bus.down = True
    world.sync(after=70)  # the pause is over and an analysis is due, but nothing can be read
    status = world.status()
    assert rollout_fields(status) == (stable, canary, 20, 1), "neither advanced nor aborted"
    assert world.kube.writes == ["patch status"], "no decision changed, so only the level status is written"
    degraded = condition(status, c.DEGRADED)
    assert (degraded["status"], degraded["reason"]) == (c.TRUE, c.REASON_ANALYSIS_UNAVAILABLE)
    assert "cannot read the window buckets" in degraded["message"]
    assert status["routing"]["pushError"].startswith("cannot read the window buckets")
    assert condition(status, c.REDIS_READY)["status"] == c.TRUE, "the pods' Redis is not what failed to be read"
    assert len(world.bus.published) == pushed
    assert ("warn", c.REASON_ANALYSIS_UNAVAILABLE) in [(verb, reason) for verb, reason, _ in world.events]

    world.bus.down = False
    world.sync(after=5)
    status = world.status()
    assert "pushError" not in status["routing"], "cleared once Redis answers again"
    assert condition(status, c.DEGRADED)["status"] == c.FALSE and "Recovered" in world.reasons()


def test_an_unreachable_redis_at_publish_time_is_reported_too(world):
    world.sync(world.create({"redis": EXTERNAL}))
    world.settle()
    world.bus.down = True
    world.sync(world.edit_spec(lm={"temperature": 0.5}), after=1)
    status = world.status()
    assert status["stableRevision"] == revision(world.resource()["spec"]), "RollingUpdate needs no Redis to decide"
    assert status["routing"]["pushError"].startswith("cannot read the routing serial")
    assert condition(status, c.DEGRADED)["status"] == c.FALSE, "nothing is judged: the mounted table follows"


def test_managed_redis_is_reached_through_the_indexed_password_once_it_exists(world):
    world.sync(world.create({}))
    assert world.kube.writes[1] == "create Secret/qa-redis"
    assert world.status()["routing"]["pushError"] == "its URL is not known yet"
    assert world.bus.published == []
    world.settle()
    world.sync(after=5)
    [url] = world.buses.urls
    assert url.startswith("redis://:") and url.endswith("@qa-redis.demo.svc:6379/0")
    assert world.bus.published[-1][2] == world.status()["routing"]["serial"]
    assert "pushError" not in world.status()["routing"]


# --- paused and invalid -------------------------------------------------------------------------


def test_spec_paused_writes_no_child_reads_no_reference_and_answers_no_request(world):
    stable, canary = start_canary(world)
    world.edit_spec(paused=True)
    asked = world.annotate(api.ANNOTATION_REQUEST, json.dumps({"id": "r9", "action": "abort"}))
    world.sync(asked, after=100)
    assert world.kube.calls == ["patch status"], "only the level status: no child, no Secret read"
    status = world.status()
    assert status["phase"] == c.PHASE_PAUSED and condition(status, c.PROGRESSING)["reason"] == c.REASON_PAUSED
    assert rollout_fields(status) == (stable, canary, 20, 1) and "lastRequest" not in status
    world.sync(after=100)
    assert world.kube.calls == []


def test_a_spec_problem_writes_no_child_and_degrades(world):
    created = world.create({**ROLLING, "lm": {"model": "openai/gpt-4o-mini", "apiKeySecretRef": {"name": "missing"}}})
    result = world.sync(created)
    assert world.kube.writes == ["patch status"]
    assert [str(problem) for problem in result.observation.problems] == [
        'spec.lm.apiKeySecretRef: Secret "missing" not found in namespace "demo"']
    status = world.status()
    assert status["phase"] == c.PHASE_DEGRADED and "stableRevision" not in status
    assert ("warn", c.REASON_SPEC_INVALID) in [(verb, reason) for verb, reason, _ in world.events]


def test_a_deleted_stable_revision_configmap_hands_all_traffic_to_the_spec(world):
    stable, canary = start_canary(world)
    del world.kube.objects[f"ConfigMap/qa-rev-{stable}"]
    world.settle()
    world.sync(after=1)
    status = world.status()
    assert rollout_fields(status) == (canary, "", 0, 0)
    assert status["routing"]["weights"] == {canary: 100}
    assert ("warn", "RevisionLost") in [(verb, reason) for verb, reason, _ in world.events]


# --- A/B statistics ------------------------------------------------------------------------------


def test_a_standing_experiment_gets_its_statistics_once_a_minute_and_none_when_nothing_changed(world):
    variants = [{"name": "baseline", "weight": 50}, {"name": "optimized", "weight": 50}]
    created = world.create({"redis": EXTERNAL, "variants": variants})
    world.sync(created)
    world.settle()
    stable = world.status()["stableRevision"]
    start = int(world.now.timestamp()) // 5 * 5 - 600
    world.bus.buckets[PREFIX] = {start: {
        f"{stable}|baseline|requests": "400", f"{stable}|baseline|errors": "40",
        f"{stable}|baseline|class:upstream_error": "40", f"{stable}|baseline|lat:9": "400",
        f"{stable}|optimized|requests": "400", f"{stable}|optimized|errors": "4",
        f"{stable}|optimized|class:upstream_error": "4", f"{stable}|optimized|lat:9": "400",
    }}
    world.sync(after=61)
    experiment = world.status()["experiment"]
    baseline, optimized = experiment["variants"]
    assert (baseline["name"], baseline["requests"], baseline["successRate"]) == ("baseline", 400, 0.9)
    assert optimized["successRate"] == 0.99 and optimized["vsBaseline"]["significant"] is True
    assert experiment["test"] == "two-proportion z-test"
    world.settle()
    world.sync(after=10)
    assert world.kube.writes == [], "within the minute: not recomputed"
    world.sync(after=61)
    assert world.kube.writes == [], "recomputed, same figures: no write although the window moved"


# --- the evaluation gate -------------------------------------------------------------------------


def test_a_gated_canary_asks_the_pods_for_its_evaluation_and_holds_weight_zero_until_it_passes(world):
    world.kube.put({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "dev", "namespace": "demo"},
                    "data": {"devset.jsonl": '{"inputs": {"question": "q"}, "expected": {"answer": "a"}}\n'}})
    gate = {"evaluation": {"configMapRef": {"name": "dev"}, "metric": "ExactMatch", "minScore": 0.5}}
    stable, canary = start_canary(world, gate)
    evaluation = world.status()["evaluation"]
    assert (evaluation["state"], evaluation["revision"], world.status()["canaryWeight"]) == ("Pending", canary, 0)
    request = world.bus.evaluations[evaluation["id"]]
    assert request["revisions"] == [stable, canary] and request["metric"] == "exact_match"
    assert request["examples"] == [{"inputs": {"question": "q"}, "expected": {"answer": "a"}}]
