"""`kubectl dspy`: rendering, verb/state fit rules, the request annotation, argument parsing,
and every command end to end against a fake API (no cluster, no network, no real waiting)."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator, Mapping
from datetime import datetime, timezone
from typing import Any

import pytest

from dspy_operator.cli import __main__ as cli
from dspy_operator.cli import client, render, verbs
from dspy_operator.cli.client import CliError, NotFound

NOW = datetime(2026, 11, 23, 12, 5, 0, tzinfo=timezone.utc)
STEPS = [{"setWeight": 10}, {"pause": {"seconds": 300}}, {"setWeight": 50}, {"pause": {}}]
ANALYSIS = {"intervalSeconds": 60, "minRequests": 50, "maxErrorRate": 0.05, "maxP95LatencySeconds": 2.0,
            "failureLimit": 2, "inconclusiveLimit": 3, "relative": {"maxP95LatencyRatio": 1.5}}
STABLE, CANARY, OLD = "3f9a0c1d2e4b", "77aa01bc9e0f", "1111aaaa2222"
HISTORY = [{"revision": STABLE, "outcome": "Promoted", "time": "2026-11-21T12:00:00Z"},
           {"revision": OLD, "outcome": "Promoted", "time": "2026-11-19T09:30:00Z"}]


def deployment(strategy: str = "Canary", status: Mapping[str, Any] | None = None, analysis: Mapping[str, Any] | None = None,
               spec: Mapping[str, Any] | None = None) -> dict[str, Any]:
    rollout: dict[str, Any] = {"strategy": strategy}
    if strategy == "Canary":
        rollout["canary"] = {"steps": copy.deepcopy(STEPS)}
        if analysis is not None:
            rollout["canary"]["analysis"] = copy.deepcopy(dict(analysis))
    return {
        "apiVersion": "dspy.dev/v1alpha1", "kind": "DSPyDeployment",
        "metadata": {"name": "qa", "namespace": "demo", "resourceVersion": "100"},
        "spec": {"rollout": rollout, **(spec or {})},
        "status": copy.deepcopy(dict(status or {})),
    }


def steady(**extra: Any) -> dict[str, Any]:
    """A status with nothing in progress."""
    return {"phase": "Healthy", "readySummary": "3/3", "stableRevision": STABLE, "canaryRevision": "",
            "canaryWeight": 0, "currentStep": 0, "abortedRevision": "", "rolloutPaused": False,
            "history": copy.deepcopy(HISTORY), **extra}


def at_timed_pause(**extra: Any) -> dict[str, Any]:
    """Canary at step 2/4 (pause 300 s), started 1m46s before NOW."""
    status = steady(phase="Progressing", canaryRevision=CANARY, canaryWeight=10, currentStep=1,
                  currentStepStartTime="2026-11-23T12:03:14Z",
                  routing={"serial": 1764624000123, "servedBy": "3/3"},
                  lastAnalysis={"time": "2026-11-23T12:04:40Z", "revision": CANARY, "verdict": "Pass",
                                "requests": 412, "failures": 0, "inconclusive": 0, "passedAt": "2026-11-23T12:04:40Z",
                                "message": "3 measurements passed",
                                "measurements": [
                                    {"name": "errorRate", "value": 0.0073, "threshold": 0.05, "passed": True},
                                    {"name": "p95LatencySeconds", "value": 0.412, "threshold": 2.0, "passed": True},
                                    {"name": "p95LatencyRatio", "value": 1.1, "threshold": 1.5, "passed": True,
                                     "detail": "412ms vs 375ms"}],
                                "canary": {"requests": 412, "errors": 3, "errorRate": 0.0073, "p95LatencySeconds": 0.412,
                                           "costPerRequestUsd": 0.000123, "cacheHitRatio": 0.12},
                                "stable": {"requests": 3708, "errors": 7, "errorRate": 0.0019,
                                           "p95LatencySeconds": 0.375, "costPerRequestUsd": 0.000118,
                                           "cacheHitRatio": 0.41}},
                  conditions=[{"type": "Ready", "status": "True", "reason": "AllReplicasReady", "message": "3/3 ready",
                               "lastTransitionTime": "2026-11-21T12:00:00Z"},
                              {"type": "Progressing", "status": "True", "reason": "CanaryInProgress",
                               "message": f"canary {CANARY} at 10%", "lastTransitionTime": "2026-11-23T12:00:00Z"}],
                  lastRequest={"id": "1b9d6bcd-bbfd-4b2d-9b5d-ab8dfbbd4bed", "action": "promote", "result": "Accepted",
                               "message": "step 1/4 (setWeight 10) done by request", "time": "2026-11-23T12:03:14Z"})
    status.update(extra)
    return status


def aborted() -> dict[str, Any]:
    message = ("analysis failed 3 times (failureLimit 2): errorRate 0.084 > 0.05; "
               "p95LatencyRatio 2.1 > 1.5 (1.32s vs 0.63s)")
    return steady(phase="Degraded", abortedRevision=CANARY,
                  lastAnalysis={"time": "2026-11-23T12:03:00Z", "revision": CANARY, "verdict": "Fail", "requests": 412,
                                "failures": 3, "inconclusive": 0, "message": message,
                                "measurements": [
                                    {"name": "errorRate", "value": 0.084, "threshold": 0.05, "passed": False},
                                    {"name": "p95LatencySeconds", "value": 1.32, "threshold": 2.0, "passed": True},
                                    {"name": "p95LatencyRatio", "value": 2.1, "threshold": 1.5, "passed": False,
                                     "detail": "1.32s vs 0.63s"},
                                    {"name": "costPerRequestRatio", "threshold": 2.0,
                                     "skipped": "the stable revision served 12 requests, fewer than 50"}],
                                "canary": {"requests": 412, "errors": 35, "errorRate": 0.085, "p95LatencySeconds": 1.32,
                                           "costPerRequestUsd": 0.00021, "cacheHitRatio": 0.03},
                                "stable": {"requests": 12, "errors": 0, "errorRate": 0.0, "p95LatencySeconds": 0.63}})


def evaluation_failed() -> dict[str, Any]:
    return steady(phase="Degraded", abortedRevision=CANARY,
                  evaluation={"id": "a1b2c3d4e5f60718", "revision": CANARY, "state": "Failed",
                              "runner": "qa-7d9f-x2k4", "scores": {"canary": 0.71, "stable": 0.82},
                              "message": "evaluation gate (ExactMatch) failed: canary score 0.710 < minScore 0.8"})


EXPERIMENT = {"window": {"start": "2026-11-23T11:00:00Z", "end": "2026-11-23T12:00:00Z"},
              "test": "two-proportion z-test",
              "variants": [
                  {"name": "baseline", "requests": 1000, "successRate": 0.98, "successRateCI": [0.9695, 0.9870],
                   "p95LatencySeconds": 0.41, "costPerRequestUsd": 0.00012, "cacheHitRatio": 0.4},
                  {"name": "optimized", "requests": 980, "successRate": 0.991, "successRateCI": [0.9827, 0.9953],
                   "p95LatencySeconds": 0.62, "costPerRequestUsd": 0.00031, "cacheHitRatio": 0.38,
                   "vsBaseline": {"pValue": 0.0412, "significant": True, "samplesNeededPerArm": None}},
                  {"name": "cheap", "requests": 15, "successRate": 1.0, "successRateCI": [0.7961, 1.0],
                   "vsBaseline": {"pValue": 0.55, "significant": False, "samplesNeededPerArm": 2231}}]}


def lines_with(text: str, needle: str) -> list[str]:
    return [line for line in text.splitlines() if needle in line]


# --- render ----------------------------------------------------------------------------------------


def test_status_without_rollout_shows_the_stable_revision_and_nothing_about_canaries():
    text = render.render_status(deployment("RollingUpdate", steady()), NOW)
    assert text.splitlines()[:6] == [
        "Name:         qa", "Namespace:    demo", "Phase:        Healthy", "Ready:        3/3",
        "Strategy:     RollingUpdate", f"Stable:       {STABLE}  100%"]
    for absent in ("Canary:", "Rollout:", "Analysis:", "Evaluation:", "Experiment:", "\x1b["):
        assert absent not in text


def test_status_of_a_resource_the_operator_has_not_seen_yet():
    body = deployment("RollingUpdate")
    del body["status"]
    assert "Phase:        Unknown (the operator has not reported yet)" in render.render_status(body, NOW)


def test_status_at_a_timed_pause_shows_bar_countdown_weights_and_figures():
    text = render.render_status(deployment(status=at_timed_pause(), analysis=ANALYSIS), NOW)
    assert f"Stable:       {STABLE}  90%" in text and f"Canary:       {CANARY}  10%" in text
    assert "Routing:      serial 1764624000123, served by 3/3 pods" in text
    assert "Rollout:      [##########----------] step 2/4 pause 5m00s" in text
    assert "              3m14s left (until 12:08:14Z)" in text  # 300 s from 12:03:14
    assert "Analysis:     Pass 20s ago (12:04:40Z): 412 canary requests" in text
    assert lines_with(text, "errorRate   ")[0].split() == ["errorRate", "0.7%", "<=", "5.0%", "pass"]
    assert lines_with(text, "p95LatencyRatio")[0].split() == ["p95LatencyRatio", "1.10x", "<=", "1.50x", "pass",
                                                              "412ms", "vs", "375ms"]
    assert "  failures 0 (limit 2), inconclusive in a row 0 (limit 3)" in text
    assert lines_with(text, f"{CANARY}  canary")[0].split() == [CANARY, "canary", "412", "3", "0.7%", "412ms", "$0.000123",
                                                       "12.0%"]
    assert lines_with(text, f"{STABLE}  stable")[0].split() == [STABLE, "stable", "3,708", "7", "0.2%", "375ms", "$0.000118",
                                                       "41.0%"]
    assert ("Last request: promote (1b9d6bcd) Accepted 1m46s ago: step 1/4 (setWeight 10) done by request"
            in text)
    condition = lines_with(text, "CanaryInProgress")[0].split()
    assert condition[:4] == ["Progressing", "True", "CanaryInProgress", "5m00s"]


def test_status_table_columns_are_aligned():
    text = render.render_status(deployment(status=at_timed_pause(), analysis=ANALYSIS), NOW)
    header = lines_with(text, "REVISION")[0]
    rows = [lines_with(text, f"{CANARY}  canary")[0], lines_with(text, f"{STABLE}  stable")[0]]
    end_of_requests = header.index("REQUESTS") + len("REQUESTS")
    assert all(row[end_of_requests - 1] != " " and row[end_of_requests] == " " for row in rows)  # right-aligned


def test_timed_pause_past_its_time_waits_for_a_passing_analysis():
    status = at_timed_pause(currentStepStartTime="2026-11-23T11:58:00Z")  # 7 min ago; the pass was 12:04:40
    text = render.render_status(deployment(status=status, analysis=ANALYSIS), NOW)
    assert "time is up; the next step comes on the operator's next pass" in text
    status["lastAnalysis"]["passedAt"] = "2026-11-23T11:57:00Z"
    text = render.render_status(deployment(status=status, analysis=ANALYSIS), NOW)
    assert "time is up; the next step waits for a passing analysis" in text


def test_manual_pause_and_held_rollout_say_which_verb_continues():
    status = at_timed_pause(currentStep=3, canaryWeight=50, rolloutPaused=True,
                            pauseReason="3 inconclusive analysis intervals in a row")
    text = render.render_status(deployment(status=status, analysis=ANALYSIS), NOW)
    assert "Rollout:      [####################] step 4/4 pause until promoted" in text
    assert "waiting for `kubectl dspy promote qa` (since 1m46s)" in text
    assert "held: 3 inconclusive analysis intervals in a row; `kubectl dspy resume qa` continues" in text


def test_aborted_rollout_shows_failing_figures_against_their_limits():
    text = render.render_status(deployment(status=aborted(), analysis=ANALYSIS), NOW)
    assert f"Aborted:      {CANARY}  held at 0% until the spec changes or a retry" in text
    assert "Rollout:      no canary in progress" in text
    assert f"`kubectl dspy retry qa` rolls {CANARY} out again" in text
    assert "Analysis:     Fail 2m00s ago (12:03:00Z): 412 canary requests" in text
    assert "analysis failed 3 times (failureLimit 2)" in text
    assert lines_with(text, "errorRate   ")[0].split() == ["errorRate", "8.4%", "<=", "5.0%", "FAIL"]
    assert lines_with(text, "  p95LatencyRatio  ")[0].split()[:5] == ["p95LatencyRatio", "2.10x", "<=", "1.50x", "FAIL"]
    assert lines_with(text, "costPerRequestRatio")[0].split()[:5] == ["costPerRequestRatio", "-", "<=", "2.00x",
                                                                      "skipped"]
    assert "  failures 3 (limit 2)" in text
    assert lines_with(text, f"{CANARY}  canary")[0].split()[:2] == [CANARY, "canary"]  # named though canaryRevision is empty
    assert lines_with(text, f"{STABLE}  stable")[0].split() == [STABLE, "stable", "12", "0", "0.0%", "630ms", "-", "-"]


def test_failed_evaluation_gate_shows_scores_against_limits():
    gate = {**ANALYSIS, "evaluation": {"configMapRef": {"name": "devset"}, "metric": "ExactMatch", "minScore": 0.8,
                                       "maxRegression": 0.05}}
    text = render.render_status(deployment(status=evaluation_failed(), analysis=gate), NOW)
    assert f"Evaluation:   Failed (ExactMatch, of {CANARY}, run by qa-7d9f-x2k4)" in text
    assert lines_with(text, "  canary  ")[0].split() == ["canary", "0.710", ">=", "0.80", "(minScore)"]
    assert lines_with(text, "  stable  ")[0].split() == ["stable", "0.820"]
    assert lines_with(text, "  drop  ")[0].split() == ["drop", "0.110", "<=", "0.05", "(maxRegression)"]
    assert "canary score 0.710 < minScore 0.8" in text


def test_experiment_table_compares_each_variant_with_the_baseline():
    text = render.render_status(deployment("RollingUpdate", steady(experiment=EXPERIMENT)), NOW)
    assert ("Experiment:   window 11:00:00Z to 12:00:00Z (1h00m, ended 5m00s ago), two-proportion z-test "
            "against the first variant") in text
    header = lines_with(text, "VARIANT")[0].split()
    assert header == ["VARIANT", "REQUESTS", "SUCCESS", "(95%", "CI)", "P95", "COST/REQ", "CACHE", "HIT", "P-VALUE",
                      "SIGNIFICANT", "SAMPLES/ARM"]
    assert lines_with(text, "baseline")[0].split() == ["baseline", "1,000", "98.0%", "(97.0-98.7)", "410ms",
                                                       "$0.000120", "40.0%", "baseline"]
    assert lines_with(text, "optimized")[0].split() == ["optimized", "980", "99.1%", "(98.3-99.5)", "620ms",
                                                        "$0.000310", "38.0%", "0.041", "yes", "-"]
    assert lines_with(text, "cheap")[0].split() == ["cheap", "15", "100.0%", "(79.6-100.0)", "-", "-", "-", "0.550",
                                                    "no", "2,231"]


def test_color_only_when_asked_and_never_shifts_columns():
    body = deployment(status=aborted(), analysis=ANALYSIS)
    plain, colored = render.render_status(body, NOW), render.render_status(body, NOW, color=True)
    assert "\x1b[" not in plain
    assert "Phase:        \x1b[31mDegraded\x1b[0m" in colored
    strip = colored.replace("\x1b[31m", "").replace("\x1b[32m", "").replace("\x1b[33m", "").replace("\x1b[2m", "")
    assert strip.replace("\x1b[0m", "") == plain


def test_history_marks_stable_canary_and_the_undo_target():
    text = render.render_history(deployment(status=at_timed_pause()), NOW)
    assert text.splitlines() == [
        "REVISION      OUTCOME     WHEN                   AGE",
        f"{CANARY}  InProgress  -                        -  canary (10%)",
        f"{STABLE}  Promoted    2026-11-21T12:00:00Z  2d0h  stable",
        f"{OLD}  Promoted    2026-11-19T09:30:00Z  4d2h  undo returns here",
    ]
    assert "retry or a new spec rolls it out" in render.render_history(deployment(status=aborted()), NOW)
    assert render.render_history(deployment(status={}), NOW) == "no revision has been rolled out yet\n"


def test_history_shows_how_each_rollout_ended_and_undo_skips_what_was_rolled_back():
    history = [{"revision": CANARY, "outcome": "RolledBack", "time": "2026-11-23T11:00:00Z", "message": "rolled back"},
               {"revision": CANARY, "outcome": "Promoted", "time": "2026-11-23T10:00:00Z"},
               {"revision": STABLE, "outcome": "Promoted", "time": "2026-11-21T12:00:00Z"},
               {"revision": "0ddba11c0ffe", "outcome": "Aborted", "time": "2026-11-20T12:00:00Z"},
               {"revision": OLD, "outcome": "Promoted", "time": "2026-11-19T09:30:00Z"}]
    lines = render.render_history(deployment(status={"stableRevision": STABLE, "history": history}), NOW).splitlines()
    assert [line.split()[:2] for line in lines[1:]] == [
        [CANARY, "RolledBack"], [CANARY, "Promoted"], [STABLE, "Promoted"], ["0ddba11c0ffe", "Aborted"], [OLD, "Promoted"]]
    assert lines[3].endswith("stable") and lines[5].endswith("undo returns here")
    assert not lines[2].endswith("undo returns here")  # rolled back since it was promoted


@pytest.mark.parametrize(("name", "value", "text"), [
    ("errorRate", 0.0523, "5.2%"), ("p95LatencySeconds", 0.0042, "4ms"), ("p95LatencySeconds", 2.5, "2.50s"),
    ("errorRateRatio", 3, "3.00x"), ("cacheHitRatio", 0.5, "50.0%"), ("costPerRequestUsd", 1.5e-05, "$0.0000150"),
    ("costPerRequestUsd", 0.25, "$0.250"), ("requests", 12, "12"), ("anything", None, "-"),
])
def test_figures_are_shown_in_their_unit(name: str, value: float | None, text: str):
    assert render.figure(name, value) == text


# --- fit rules and the annotation -------------------------------------------------------------------


@pytest.mark.parametrize(("action", "strategy", "status", "expected"), [
    ("promote", "RollingUpdate", steady(), "qa uses strategy RollingUpdate: nothing to promote"),
    ("promote-full", "BlueGreen", steady(), "qa has no blue/green preview in progress: nothing to promote"),
    ("abort", "RollingUpdate", steady(), "qa uses strategy RollingUpdate: nothing to abort"),
    ("pause", "RollingUpdate", steady(), "qa uses strategy RollingUpdate: nothing to pause"),
    ("resume", "RollingUpdate", steady(rolloutPaused=True), "qa uses strategy RollingUpdate: nothing to resume"),
    ("promote", "Canary", steady(), "qa has no canary in progress: nothing to promote"),
    ("promote-full", "Canary", steady(), "qa has no canary in progress: nothing to promote"),
    ("abort", "Canary", steady(), "qa has no canary in progress: nothing to abort"),
    ("pause", "Canary", steady(), "qa has no canary in progress: nothing to pause"),
    ("pause", "Canary", at_timed_pause(rolloutPaused=True, pauseReason="paused by request"),
     "qa is already paused (paused by request): nothing to pause"),
    ("resume", "Canary", at_timed_pause(), "qa is not paused: nothing to resume"),
    ("retry", "Canary", at_timed_pause(), "qa has no aborted revision: nothing to retry"),
    ("retry", "RollingUpdate", steady(), "qa has no aborted revision: nothing to retry"),
    ("undo", "Canary", steady(history=HISTORY[:1]), "qa has no previous revision in its history: nothing to undo"),
    ("undo", "RollingUpdate", steady(history=[]), "qa has no previous revision in its history: nothing to undo"),
    ("undo", "Canary", steady(history=[HISTORY[0], HISTORY[0]]),
     "qa has no previous revision in its history: nothing to undo"),
])
def test_a_verb_that_does_not_fit_is_refused_with_the_reason(action: str, strategy: str, status: dict[str, Any],
                                                              expected: str):
    assert verbs.unfit(action, deployment(strategy, status)) == expected


@pytest.mark.parametrize(("action", "strategy", "status"), [
    ("promote", "Canary", at_timed_pause()),
    ("promote-full", "Canary", at_timed_pause()),
    ("abort", "Canary", at_timed_pause()),
    ("pause", "Canary", at_timed_pause()),
    ("resume", "Canary", at_timed_pause(rolloutPaused=True)),
    ("retry", "Canary", aborted()),
    ("retry", "RollingUpdate", steady(abortedRevision=CANARY)),  # the operator holds revisions under every strategy
    ("undo", "Canary", steady()),
    ("undo", "RollingUpdate", steady()),
])
def test_a_verb_that_fits_is_let_through(action: str, strategy: str, status: dict[str, Any]):
    assert verbs.unfit(action, deployment(strategy, status)) is None


def test_resume_says_spec_paused_is_lifted_elsewhere():
    body = deployment(status=at_timed_pause(), spec={"paused": True})
    assert verbs.unfit("resume", body) == ("qa is not paused: nothing to resume "
                                              "(spec.paused is true: that one is lifted by editing the spec)")


def test_unknown_action_is_a_programming_error():
    with pytest.raises(ValueError):
        verbs.unfit("rollback", deployment())


def test_request_annotation_body_and_patch():
    request = verbs.new_request("promote-full", NOW, request_id="fixed-id")
    assert request == {"id": "fixed-id", "action": "promote-full", "time": "2026-11-23T12:05:00Z"}
    patch = verbs.annotation_patch(request)
    assert list(patch) == ["metadata"] and list(patch["metadata"]) == ["annotations"]
    assert json.loads(patch["metadata"]["annotations"]["dspy.dev/request"]) == request
    fresh = verbs.new_request("abort", NOW)
    assert len(fresh["id"]) == 36 and fresh["id"][14] == "4"  # a uuid4
    assert fresh["id"] != verbs.new_request("abort", NOW)["id"]


def test_answer_is_matched_by_id():
    body = deployment(status=at_timed_pause())
    assert verbs.answer_to(body, "1b9d6bcd-bbfd-4b2d-9b5d-ab8dfbbd4bed")["result"] == "Accepted"
    assert verbs.answer_to(body, "another") is None
    assert verbs.answer_to(deployment(), "another") is None


# --- argument parsing --------------------------------------------------------------------------------


def test_global_options_before_or_after_the_verb():
    before = cli.parse_args(["-n", "team-a", "--context", "prod", "--kubeconfig", "/k", "status", "qa"])
    after = cli.parse_args(["status", "qa", "--namespace=team-a", "--context", "prod", "--kubeconfig", "/k"])
    for args in (before, after):
        assert (args.namespace, args.context, args.kubeconfig, args.verb, args.name) == ("team-a", "prod", "/k",
                                                                                         "status", "qa")
    defaults = cli.parse_args(["promote", "qa"])
    assert (defaults.namespace, defaults.context, defaults.full, defaults.no_wait, defaults.timeout) == (
        None, None, False, False, 30.0)
    assert cli.parse_args(["-n", "a", "history", "qa"]).namespace == "a"


def test_verb_options():
    assert cli.parse_args(["promote", "qa", "--full", "--no-wait"]).full is True
    assert cli.parse_args(["status", "qa", "-w"]).watch is True
    assert cli.parse_args(["undo", "qa", "--timeout", "2m"]).timeout == 120.0
    with pytest.raises(SystemExit):
        cli.parse_args(["abort", "qa", "--full"])
    with pytest.raises(SystemExit):
        cli.parse_args(["status"])


@pytest.mark.parametrize(("text", "seconds"), [("30", 30.0), ("45s", 45.0), ("2m", 120.0), ("1m30s", 90.0),
                                                ("1h", 3600.0), ("0.5", 0.5)])
def test_timeouts(text: str, seconds: float):
    assert cli.timeout_seconds(text) == seconds


@pytest.mark.parametrize("text", ["", "soon", "5x", "-3"])
def test_bad_timeouts(text: str):
    with pytest.raises(Exception, match="invalid duration"):
        cli.timeout_seconds(text)


def test_connect_uses_the_context_and_its_namespace(monkeypatch: pytest.MonkeyPatch):
    contexts = [{"name": "dev", "context": {"cluster": "c", "user": "u"}},
                {"name": "prod", "context": {"cluster": "c", "user": "u", "namespace": "team-a"}}]
    loaded: list[tuple[str | None, str | None]] = []
    monkeypatch.setattr(client.k8s_config, "list_kube_config_contexts", lambda config_file: (contexts, contexts[0]))
    monkeypatch.setattr(client.k8s_config, "load_kube_config",
                        lambda config_file, context, client_configuration, persist_config:
                        loaded.append((config_file, context)))
    assert client.KubeDSPyApi.connect("/k", "prod").default_namespace == "team-a"
    assert client.KubeDSPyApi.connect(None, None).default_namespace == "default"
    assert loaded == [("/k", "prod"), (None, None)]
    with pytest.raises(CliError, match='context "nope" not found in the kubeconfig'):
        client.KubeDSPyApi.connect(None, "nope")


def test_api_errors_become_one_line():
    gone = client.k8s.ApiException(status=404, reason="Not Found")
    gone.body = json.dumps({"kind": "Status", "message": 'dspydeployments.dspy.dev "qa" not found',
                            "details": {"name": "qa", "kind": "dspydeployments"}})
    assert str(client._api_error(gone, "demo", "qa")) == 'dspydeployment "qa" not found in namespace "demo"'
    no_crd = client.k8s.ApiException(status=404, reason="Not Found")
    no_crd.body = json.dumps({"kind": "Status", "message": "the server could not find the requested resource"})
    assert "is the dspy-operator CRD installed?" in str(client._api_error(no_crd, "demo", "qa"))
    forbidden = client.k8s.ApiException(status=403, reason="Forbidden")
    forbidden.body = json.dumps({"message": 'dspydeployments.dspy.dev "qa" is forbidden: User "bob" cannot patch'})
    assert str(client._api_error(forbidden, "demo", "qa")) == ('dspydeployments.dspy.dev "qa" is forbidden: '
                                                               'User "bob" cannot patch (HTTP 403)')


# --- end to end against a fake API --------------------------------------------------------------------


class FakeClock:
    """Monotonic seconds that only move when a watch times out."""

    def __init__(self) -> None:
        self.value = 1000.0

    def __call__(self) -> float:
        return self.value


class FakeApi:
    """In-memory `DSPyApi`: records calls; `operator` (when set) answers a request on the
    first watch, as the operator would, with `result` and `message`."""

    default_namespace = "demo"

    def __init__(self, body: dict[str, Any] | None, clock: FakeClock | None = None,
                 answer: tuple[str, str] | None = None, frames: list[dict[str, Any]] | None = None) -> None:
        self.body = body
        self.clock = clock or FakeClock()
        self.answer = answer
        self.frames = frames
        self.calls: list[tuple[str, ...]] = []
        self.patches: list[dict[str, Any]] = []

    def get(self, namespace: str, name: str) -> dict[str, Any]:
        self.calls.append(("get", namespace, name))
        if self.body is None or self.body["metadata"]["name"] != name or namespace != "demo":
            raise NotFound(namespace, name)
        return copy.deepcopy(self.body)

    def annotate(self, namespace: str, name: str, patch: Mapping[str, Any]) -> dict[str, Any]:
        self.calls.append(("annotate", namespace, name))
        assert self.body is not None
        self.patches.append(copy.deepcopy(dict(patch)))
        self.body["metadata"].setdefault("annotations", {}).update(patch["metadata"]["annotations"])
        self.body["metadata"]["resourceVersion"] = "101"
        return copy.deepcopy(self.body)

    def watch(self, namespace: str, name: str, resource_version: str, timeout_seconds: int) -> Iterator[dict[str, Any]]:
        self.calls.append(("watch", namespace, name, resource_version))
        assert self.body is not None
        if self.frames is not None:
            if not self.frames:
                raise KeyboardInterrupt  # the user's Ctrl-C once every frame was shown
            while self.frames:
                self.body = self.frames.pop(0)  # what a later get returns, as on a real server
                yield copy.deepcopy(self.body)
            return
        if self.answer is not None:
            request = json.loads(self.body["metadata"]["annotations"]["dspy.dev/request"])
            yield copy.deepcopy(self.body)  # an unrelated change first (kopf's own annotations)
            result, message = self.answer
            self.body["status"]["lastRequest"] = {"id": request["id"], "action": request["action"],
                                                  "result": result, "message": message, "time": "2026-11-23T12:05:01Z"}
            yield copy.deepcopy(self.body)
            return
        self.clock.value += timeout_seconds  # nothing happened for the whole watch


def run(argv: list[str], fake: FakeApi) -> int:
    return cli.main(argv, api=fake, now=lambda: NOW, monotonic=fake.clock)


def test_status_end_to_end(capsys: pytest.CaptureFixture[str]):
    fake = FakeApi(deployment(status=at_timed_pause(), analysis=ANALYSIS))
    assert run(["status", "qa"], fake) == 0
    out = capsys.readouterr().out
    assert out == render.render_status(fake.body, NOW)
    assert fake.calls == [("get", "demo", "qa")]


def test_missing_resource_is_one_line_and_exit_1(capsys: pytest.CaptureFixture[str]):
    for argv in (["status", "nope"], ["promote", "nope"], ["history", "nope"], ["-n", "other", "status", "qa"]):
        assert run(argv, FakeApi(deployment())) == 1
        captured = capsys.readouterr()
        namespace = "other" if "other" in argv else "demo"
        name = argv[-1]
        assert captured.err == f'error: dspydeployment "{name}" not found in namespace "{namespace}"\n'
        assert captured.out == ""


def test_request_accepted_prints_the_operators_message(capsys: pytest.CaptureFixture[str]):
    fake = FakeApi(deployment(status=at_timed_pause()), answer=("Accepted", "step 2/4 (pause 300s) done by request"))
    assert run(["promote", "qa"], fake) == 0
    assert capsys.readouterr().out == "qa: promote accepted: step 2/4 (pause 300s) done by request\n"
    assert [call[0] for call in fake.calls] == ["get", "annotate", "watch"]
    assert fake.calls[2] == ("watch", "demo", "qa", "101")  # from the annotated object's version: nothing missed
    request = json.loads(fake.patches[0]["metadata"]["annotations"]["dspy.dev/request"])
    assert request["action"] == "promote" and request["time"] == "2026-11-23T12:05:00Z"
    assert "spec" not in fake.patches[0]


def test_promote_full_sends_action_promote_full(capsys: pytest.CaptureFixture[str]):
    fake = FakeApi(deployment(status=at_timed_pause()), answer=("Accepted", f"canary {CANARY} promoted"))
    assert run(["promote", "qa", "--full"], fake) == 0
    assert json.loads(fake.patches[0]["metadata"]["annotations"]["dspy.dev/request"])["action"] == "promote-full"
    assert capsys.readouterr().out == f"qa: promote-full accepted: canary {CANARY} promoted\n"


def test_request_rejected_exits_1_with_the_reason(capsys: pytest.CaptureFixture[str]):
    fake = FakeApi(deployment(status=at_timed_pause()),
                   answer=("Rejected", "the evaluation gate has not passed yet; promote --full skips it"))
    assert run(["promote", "qa"], fake) == 1
    captured = capsys.readouterr()
    assert captured.err == ("error: the operator rejected promote: the evaluation gate has not passed yet; "
                            "promote --full skips it\n")
    assert captured.out == ""


def test_no_answer_times_out_with_exit_1(capsys: pytest.CaptureFixture[str]):
    fake = FakeApi(deployment(status=at_timed_pause()))
    assert run(["abort", "qa", "--timeout", "5s"], fake) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: the operator did not answer abort request ")
    assert "within 5s; is dspy-operator running?" in err and err.count("\n") == 1
    assert [call[0] for call in fake.calls] == ["get", "annotate", "watch", "get"]  # a last look at the deadline
    assert fake.clock.value == 1005.0


def test_a_watch_that_ends_early_is_resumed_from_a_fresh_get(capsys: pytest.CaptureFixture[str]):
    fake = FakeApi(deployment(status=at_timed_pause()))
    real_watch = fake.watch

    def short_watches(namespace: str, name: str, version: str, timeout: int) -> Iterator[dict[str, Any]]:
        fake.clock.value += 10  # each watch gives up after 10 s, before the deadline
        if len([call for call in fake.calls if call[0] == "watch"]) == 1:  # the second watch sees the answer
            fake.answer = ("Accepted", "rollout paused")
        return real_watch(namespace, name, version, 0)

    fake.watch = short_watches  # type: ignore[method-assign]
    assert run(["pause", "qa"], fake) == 0
    assert [call[0] for call in fake.calls] == ["get", "annotate", "watch", "get", "watch"]
    assert capsys.readouterr().out == "qa: pause accepted: rollout paused\n"


def test_no_wait_writes_and_returns(capsys: pytest.CaptureFixture[str]):
    fake = FakeApi(deployment(status=aborted()))
    assert run(["retry", "qa", "--no-wait"], fake) == 0
    assert [call[0] for call in fake.calls] == ["get", "annotate"]
    assert capsys.readouterr().out.startswith("qa: retry requested (id ")


def test_a_verb_that_does_not_fit_writes_nothing(capsys: pytest.CaptureFixture[str]):
    fake = FakeApi(deployment("RollingUpdate", steady()))
    assert run(["promote", "qa"], fake) == 1
    assert capsys.readouterr().err == "error: qa uses strategy RollingUpdate: nothing to promote\n"
    assert fake.calls == [("get", "demo", "qa")] and fake.patches == []


def test_history_end_to_end(capsys: pytest.CaptureFixture[str]):
    fake = FakeApi(deployment(status=steady()))
    assert run(["history", "qa"], fake) == 0
    assert capsys.readouterr().out.splitlines()[1].split() == [STABLE, "Promoted", "2026-11-21T12:00:00Z", "2d0h", "stable"]


def test_status_watch_repaints_only_on_a_change_until_ctrl_c(capsys: pytest.CaptureFixture[str]):
    first = deployment(status=at_timed_pause(), analysis=ANALYSIS)
    kopf_only = copy.deepcopy(first)
    kopf_only["metadata"]["annotations"] = {"dspy.dev/last-handled-configuration": "{}"}
    promoted = copy.deepcopy(first)
    promoted["status"].update(currentStep=2, canaryWeight=50)
    fake = FakeApi(first, frames=[kopf_only, promoted])
    assert run(["status", "qa", "--watch"], fake) == 130
    out = capsys.readouterr().out
    assert out.count("Name:         qa") == 2
    assert "step 2/4 pause 5m00s" in out and "step 3/4 setWeight 50" in out
    assert "\x1b[" not in out  # not a TTY: frames are separated by a blank line, never by escape codes
    assert [call[0] for call in fake.calls] == ["get", "watch", "get", "watch"]


# --- the API edge over a stub CustomObjectsApi -------------------------------------------------------


class StubObjects:
    """Stands in for `CustomObjectsApi`: returns `result` or raises `error`, records the call."""

    def __init__(self, result: Any = None, error: Exception | None = None) -> None:
        self.result, self.error = result, error
        self.calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []

    def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        self.calls.append((method, args, kwargs))
        if self.error is not None:
            raise self.error
        return self.result

    def get_namespaced_custom_object(self, *args: Any, **kwargs: Any) -> Any:
        return self._call("get", *args, **kwargs)

    def patch_namespaced_custom_object(self, *args: Any, **kwargs: Any) -> Any:
        return self._call("patch", *args, **kwargs)

    def list_namespaced_custom_object(self, *args: Any, **kwargs: Any) -> Any:
        return self._call("list", *args, **kwargs)


def test_kube_api_get_and_annotate_call_the_custom_objects_api():
    objects = StubObjects(result={"metadata": {"name": "qa"}})
    kube = client.KubeDSPyApi(objects, "demo")  # type: ignore[arg-type]
    assert kube.get("demo", "qa") == {"metadata": {"name": "qa"}}
    kube.annotate("demo", "qa", verbs.annotation_patch(verbs.new_request("abort", NOW, "x")))
    (_, get_args, _), (_, patch_args, patch_kwargs) = objects.calls
    assert get_args == ("dspy.dev", "v1alpha1", "demo", "dspydeployments", "qa")
    assert patch_args[:5] == get_args and list(patch_args[5]) == ["metadata"]
    assert patch_kwargs["_content_type"] == "application/merge-patch+json"


def test_kube_api_translates_failures_into_one_line():
    missing = client.k8s.ApiException(status=404, reason="Not Found")
    missing.body = json.dumps({"details": {"name": "qa"}})
    with pytest.raises(NotFound, match='dspydeployment "qa" not found in namespace "demo"'):
        client.KubeDSPyApi(StubObjects(error=missing), "demo").get("demo", "qa")  # type: ignore[arg-type]
    refused = client.urllib3.exceptions.MaxRetryError(None, "/apis", reason=ConnectionRefusedError("Connection refused"))
    with pytest.raises(CliError, match="^cannot reach the API server: Connection refused$"):
        client.KubeDSPyApi(StubObjects(error=refused), "demo").annotate("demo", "qa", {})  # type: ignore[arg-type]


def test_kube_api_watch_yields_objects_and_ends_on_expired_history(monkeypatch: pytest.MonkeyPatch):
    events: list[Any] = [None, {"type": "BOOKMARK", "raw_object": {}},
                         {"type": "MODIFIED", "raw_object": {"metadata": {"resourceVersion": "7"}}}]
    seen: dict[str, Any] = {}

    class StubWatch:
        def stream(self, func: Any, *args: Any, **kwargs: Any) -> Iterator[Any]:
            seen.update(kwargs, args=args)
            yield from events
            raise client.k8s.ApiException(status=410, reason="Gone")

    monkeypatch.setattr(client.k8s_watch, "Watch", StubWatch)
    kube = client.KubeDSPyApi(StubObjects(), "demo")  # type: ignore[arg-type]
    assert list(kube.watch("demo", "qa", "5", 30)) == [{"metadata": {"resourceVersion": "7"}}]
    assert seen["field_selector"] == "metadata.name=qa" and seen["resource_version"] == "5"
    assert seen["timeout_seconds"] == 30 and seen["args"] == ("dspy.dev", "v1alpha1", "demo", "dspydeployments")
    events[:] = [{"type": "DELETED", "raw_object": {}}]
    with pytest.raises(CliError, match='dspydeployment "qa" was deleted from namespace "demo"'):
        list(kube.watch("demo", "qa", "5", 30))


SHADOW = {"window": "30m", "updated": "2026-11-23T12:04:00Z", "targets": [
    {"revision": STABLE, "variant": "candidate", "requests": 98, "agreementRate": 0.510204,
     "agreementCI": [0.413, 0.606], "errorRate": 0.02, "p95LatencySeconds": 2.3125, "liveP95LatencySeconds": 0.23125,
     "costPerRequestUsd": 0.0111111, "dropped": 6},
    {"revision": CANARY, "variant": "baseline", "requests": 0, "dropped": 4},
]}  # fmt: skip


def test_shadow_table_shows_agreement_errors_latency_beside_live_cost_and_drops():
    text = render.render_status(deployment("RollingUpdate", steady(shadow=SHADOW)), NOW)
    assert "Shadow:       window 30m, updated 1m00s ago" in text
    assert lines_with(text, "TARGET")[0].split() == ["TARGET", "COMPARED", "AGREEMENT", "(95%", "CI)", "ERRORS", "P95",
                                                     "SHADOW", "P95", "LIVE", "COST/REQ", "DROPPED"]
    assert lines_with(text, f"{STABLE}/candidate")[0].split() == [f"{STABLE}/candidate", "98", "51.0%", "(41.3-60.6)",
                                                                  "2.0%", "2.31s", "231ms", "$0.0111", "6"]
    assert lines_with(text, f"{CANARY}/baseline")[0].split() == [f"{CANARY}/baseline", "0", "-", "-", "-", "-", "-", "4"]


def test_shadow_section_says_so_before_any_copy_and_is_absent_without_shadow():
    waiting = render.render_status(deployment("RollingUpdate", steady(shadow={"window": "30m", "targets": []})), NOW)
    assert "Shadow:       window 30m\n  no copies compared yet" in waiting
    assert "Shadow:" not in render.render_status(deployment("RollingUpdate", steady()), NOW)


def test_status_of_a_blue_green_preview_shows_the_colors_and_the_scale_down():
    preview = deployment("BlueGreen", status={
        "phase": "Progressing", "stableRevision": STABLE, "canaryRevision": CANARY, "activeColor": "blue",
        "previewColor": "green", "previewReadyTime": "2026-11-23T12:03:00Z",
        "colorRevisions": {"blue": STABLE, "green": CANARY}})
    text = render.render_status(preview, NOW)
    assert f"Stable:       {STABLE}  active" in text
    assert f"Preview:      {CANARY}  ready behind the preview Service" in text
    assert f"Colors:       blue {STABLE} (active), green {CANARY} (preview, ready for 2m00s)" in text
    switched = deployment("BlueGreen", status={
        "phase": "Healthy", "stableRevision": CANARY, "activeColor": "green", "scaleDownTime": "2026-11-23T12:09:00Z",
        "colorRevisions": {"blue": STABLE, "green": CANARY}})
    text = render.render_status(switched, NOW)
    assert (f"Colors:       blue {STABLE} (previous), green {CANARY} (active); the previous color goes in 4m00s "
            "(undo switches back until then)") in text
    assert verbs.unfit("promote", switched) == "qa has no blue/green preview in progress: nothing to promote"
    assert verbs.unfit("abort", preview) is None


# --- cache clear ---------------------------------------------------------------------------------------

CACHE_TOKEN = "cache-admin-token-0123456789abcdef"
CACHE_SPEC = {"cache": {"adminTokenSecretRef": {"name": "cache-admin", "key": "token"}}, "redis": {"mode": "Managed"}}
CLEARED = {"removed": {"redis": 12, "memory": 3}, "replicas_notified": 2,
           "scope": {"revision": None, "variant": "b", "inputs": False}}


class CacheFakeApi(FakeApi):
    """`FakeApi` with the Secret read and the service call `cache clear` makes, recorded."""

    def __init__(self, body: dict[str, Any] | None, answer: tuple[int, dict[str, Any]] = (200, CLEARED)) -> None:
        super().__init__(body)
        self.secrets = {("demo", "cache-admin"): {"token": CACHE_TOKEN}}
        self.service_answer = answer
        self.deletes: list[tuple[Any, ...]] = []

    def secret_value(self, namespace: str, name: str, key: str) -> str:
        self.calls.append(("secret", namespace, name, key))
        value = self.secrets.get((namespace, name), {}).get(key)
        if value is None:
            raise CliError(f'Secret "{name}" not found in namespace "{namespace}"')
        return value

    def delete_through_service(self, namespace: str, service: str, port: str, path: str,
                               query: Mapping[str, str], headers: Mapping[str, str]) -> tuple[int, dict[str, Any]]:
        self.deletes.append((namespace, service, port, path, dict(query), dict(headers)))
        return self.service_answer


def test_cache_clear_reads_the_token_and_deletes_through_the_runtime_service(capsys: pytest.CaptureFixture[str]):
    fake = CacheFakeApi(deployment(status=steady(), spec=CACHE_SPEC))
    assert run(["cache", "clear", "qa", "--variant", "b", "-n", "demo"], fake) == 0
    assert fake.deletes == [("demo", "qa", "http", "/v1/cache", {"variant": "b"}, {"X-Cache-Admin-Token": CACHE_TOKEN})]
    assert ("secret", "demo", "cache-admin", "token") in fake.calls
    out = capsys.readouterr().out
    assert out == ("qa: cache cleared (variant b): 12 entries removed from Redis, 3 from the answering pod's memory; "
                   "2 runtime(s) notified\n")
    assert CACHE_TOKEN not in out
    assert run(["cache", "clear", "qa", "--revision", STABLE, "--variant", "a"], fake) == 0
    assert fake.deletes[-1][4] == {"variant": "a", "revision": STABLE}
    assert run(["cache", "clear", "qa"], fake) == 0
    assert fake.deletes[-1][4] == {} and "(all entries)" in capsys.readouterr().out


def test_cache_clear_without_redis_warns_that_only_one_pod_was_cleared(capsys: pytest.CaptureFixture[str]):
    spec = {**CACHE_SPEC, "redis": {"mode": "Disabled"}}
    fake = CacheFakeApi(deployment(status=steady(), spec=spec),
                        answer=(200, {"removed": {"redis": 0, "memory": 4}, "replicas_notified": 0}))
    assert run(["cache", "clear", "qa"], fake) == 0
    assert "warning: spec.redis.mode is Disabled: only the pod that answered was cleared" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("spec", "answer", "message"),
    [
        ({}, (200, CLEARED), "qa has no spec.cache.adminTokenSecretRef: cache invalidation is off"),
        ({"cache": {**CACHE_SPEC["cache"], "enabled": False}}, (200, CLEARED), "spec.cache.enabled false"),
        ({"cache": {"adminTokenSecretRef": {"name": "gone"}}}, (200, CLEARED), 'Secret "gone" not found in namespace "demo"'),
        (CACHE_SPEC, (403, {"error": {"type": "forbidden", "message": "the cache admin token is wrong"}}),
         "the runtime refused: the cache admin token is wrong (HTTP 403, forbidden)"),
        (CACHE_SPEC, (422, {"error": {"type": "invalid_input", "message": "variant: unknown variant 'x'"}}),
         "the runtime refused: variant: unknown variant 'x' (HTTP 422, invalid_input)"),
        (CACHE_SPEC, (503, {"kind": "Status", "message": 'no endpoints available for service "qa"'}),
         'the API server refused: no endpoints available for service "qa" (HTTP 503) (are the runtime pods ready?)'),
    ],
)
def test_cache_clear_failures_are_one_line_and_exit_1(capsys: pytest.CaptureFixture[str], spec: dict[str, Any],
                                                      answer: tuple[int, dict[str, Any]], message: str):
    fake = CacheFakeApi(deployment(status=steady(), spec=spec), answer=answer)
    assert run(["cache", "clear", "qa"], fake) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1, err
    assert CACHE_TOKEN not in err


def test_cache_clear_needs_its_verb_and_a_name():
    for argv in (["cache"], ["cache", "clear"], ["cache", "flush", "qa"]):
        with pytest.raises(SystemExit):
            cli.parse_args(argv)
    args = cli.parse_args(["cache", "clear", "qa", "--variant", "b", "--context", "prod"])
    assert (args.verb, args.cache_verb, args.name, args.variant, args.revision, args.context) == (
        "cache", "clear", "qa", "b", None, "prod")


def test_the_token_header_is_the_one_the_runtime_reads():
    import ast
    from pathlib import Path

    from dspy_operator import api

    source = Path(__file__).resolve().parents[3] / "runtime" / "dspy_runtime" / "api" / "cache_admin.py"
    values = {node.targets[0].id: ast.literal_eval(node.value) for node in ast.parse(source.read_text()).body
              if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name)
              and isinstance(node.value, ast.Constant)}
    assert values["TOKEN_HEADER"] == api.CACHE_ADMIN_TOKEN_HEADER


class _ApiServer:
    """A loopback HTTP server standing in for the API server: records requests, answers from `routes`."""

    def __init__(self, routes: dict[tuple[str, str], tuple[int, bytes]]) -> None:
        import http.server
        import threading

        self.requests: list[tuple[str, str, dict[str, str]]] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _answer(self) -> None:
                server.requests.append((self.command, self.path, {k.lower(): v for k, v in self.headers.items()}))
                status, body = routes.get((self.command, self.path.split("?")[0]), (404, b'{"message": "nope"}'))
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_DELETE = _answer

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def test_kube_api_reads_the_secret_and_deletes_through_the_service_proxy():
    import base64

    proxy = "/api/v1/namespaces/demo/services/qa:http/proxy/v1/cache"
    server = _ApiServer({
        ("GET", "/api/v1/namespaces/demo/secrets/cache-admin"): (200, json.dumps({
            "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "cache-admin"},
            "data": {"token": base64.b64encode(CACHE_TOKEN.encode()).decode()}}).encode()),
        ("DELETE", proxy): (200, json.dumps(CLEARED).encode()),
    })
    try:
        configuration = client.k8s.Configuration()
        configuration.host = server.url
        configuration.api_key = {"BearerToken": "Bearer user-token"}
        api_client = client.k8s.ApiClient(configuration)
        kube = client.KubeDSPyApi(client.k8s.CustomObjectsApi(api_client), "demo", client.k8s.CoreV1Api(api_client))
        assert kube.secret_value("demo", "cache-admin", "token") == CACHE_TOKEN
        with pytest.raises(CliError, match='Secret "cache-admin" in namespace "demo" has no key "other"'):
            kube.secret_value("demo", "cache-admin", "other")
        with pytest.raises(CliError, match='Secret "absent" not found in namespace "demo"'):
            kube.secret_value("demo", "absent", "token")
        status, answer = kube.delete_through_service("demo", "qa", "http", "/v1/cache", {"variant": "b"},
                                                     {"X-Cache-Admin-Token": CACHE_TOKEN})
        assert (status, answer) == (200, CLEARED), server.requests[-1]
        method, path, headers = server.requests[-1]
        assert (method, path) == ("DELETE", proxy + "?variant=b")
        assert headers["x-cache-admin-token"] == CACHE_TOKEN
        assert headers["authorization"] == "Bearer user-token", "the user's own credentials, for the API server"
        assert kube.delete_through_service("demo", "other", "http", "/v1/cache", {}, {}) == (404, {"message": "nope"})
    finally:
        server.close()
