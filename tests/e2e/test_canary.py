"""Canary rollouts end to end: the real operator on the real control plane, real runtime
processes (started with the exact command and environment of the operator's Deployment),
a real redis-server (the resources use `redis.mode: External`) and the fake LM.

The runtime pods on kwok nodes run nothing; the runtime processes of each test stand in for
them, read the routing table the operator wrote and follow its pushes through Redis, and
publish their windowed figures there for the operator's analysis.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from typing import Any

import httpx
import pytest
import yaml

from resources import (
    MODEL, REPO, TIMEOUT, Traffic, api_key_secret, apply_yaml, canary, condition, devset, dspy_deployment, get_dspy,
    kubectl_dspy, patch_spec, redis_secret, status, wait_phase,
)


pytestmark = pytest.mark.timeout(900)

# --- helpers ----------------------------------------------------------------------------


def predict(runtime: Any, question: str, user: str | None = None) -> dict[str, Any]:
    headers = {"X-User-ID": user} if user else {}
    response = httpx.post(f"{runtime.base}/v1/predict", json={"inputs": {"question": question}}, headers=headers,
                          timeout=60)
    body = response.json()
    return {"status": response.status_code, "revision": body.get("revision"), "body": body}


def wait_served(runtimes: list[Any], cluster: Any, namespace: str, wait_until: Any) -> int:
    """Every runtime process serves the table status says (or a newer one); returns its serial."""
    serial = int(status(cluster, namespace)["routing"]["serial"])
    wait_until(lambda: all(runtime.serial() >= serial for runtime in runtimes),
               f"every runtime to serve table {serial}", timeout=30)
    return serial


class Recorder:
    """Polls status in the background: the sequence of (canaryRevision, canaryWeight) it went through."""

    def __init__(self, cluster: Any, namespace: str, name: str = "qa") -> None:
        self.seen: list[tuple[str, int]] = []
        self._stop = threading.Event()

        def run() -> None:
            while not self._stop.is_set():
                try:
                    current = status(cluster, namespace, name)
                    pair = (str(current.get("canaryRevision") or ""), int(current.get("canaryWeight") or 0))
                    if not self.seen or self.seen[-1] != pair:
                        self.seen.append(pair)
                except Exception:  # noqa: BLE001 - a missed poll is a missed sample, not a failure
                    pass
                self._stop.wait(0.2)

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()

    def stop(self) -> list[tuple[str, int]]:
        self._stop.set()
        self._thread.join(timeout=10)
        return self.seen


def start_with(cluster: Any, namespace: str, wait_until: Any, redis_server: Any, docs: list[dict[str, Any]],
               name: str = "qa") -> dict[str, Any]:
    apply_yaml(cluster, namespace, [api_key_secret(), redis_secret(redis_server.url), *docs])
    return wait_phase(cluster, wait_until, namespace, name, "Healthy")


# --- tests ------------------------------------------------------------------------------


def test_a_healthy_canary_passes_its_gate_and_is_promoted_step_by_step(
        cluster, operator, namespace, wait_until, redis_server, fake_lm, runtimes):
    steps = [{"setWeight": 25}, {"pause": {"seconds": 5}}, {"setWeight": 75}, {"pause": {"seconds": 5}}]
    analysis = {"intervalSeconds": 5, "minRequests": 5, "maxErrorRate": 0.05,
                "evaluation": {"configMapRef": {"name": "devset"}, "metric": "ExactMatch", "minScore": 0.9}}
    first = start_with(cluster, namespace, wait_until, redis_server,
                       [devset([f"dev question {i}" for i in range(4)]), canary(fake_lm, steps, analysis)])
    stable = first["status"]["stableRevision"]
    pods = runtimes(namespace, "qa", 2)
    with Traffic(pods).running() as traffic:
        recorder = Recorder(cluster, namespace)
        patch_spec(cluster, namespace, "qa", {"program": {"signature": "question -> answer", "module": "ChainOfThought"}})
        at_25 = wait_until(lambda: (s := status(cluster, namespace)).get("canaryWeight") == 25 and s, "weight 25")
        new = at_25["canaryRevision"]
        assert new and new != stable and at_25["stableRevision"] == stable
        assert at_25["evaluation"]["state"] == "Passed", at_25["evaluation"]
        assert at_25["evaluation"]["scores"] == {"canary": 1.0, "stable": 1.0}
        printed = cluster.kubectl("get", "dspy", "qa", "-n", namespace).stdout.splitlines()
        header, row = printed[0].split(), printed[1].split()
        assert row[header.index("CANARY")] == "25", printed
        done = wait_until(lambda: (s := status(cluster, namespace)).get("stableRevision") == new and s,
                          "the canary to be promoted", timeout=TIMEOUT)
        seen = recorder.stop()
        assert [weight for revision, weight in seen if revision == new and weight] == [25, 75], seen
        assert done["canaryRevision"] == "" and done["routing"]["weights"] == {new: 100}
        assert done["lastAnalysis"]["verdict"] == "Pass" and done["lastAnalysis"]["revision"] == new
        assert [entry["revision"] for entry in done["history"][:2]] == [new, stable]
        wait_served(pods, cluster, namespace, wait_until)
        served_at = time.monotonic()
        time.sleep(3)
    after = traffic.since(served_at)
    assert after and {revision for _, _, revision in after} == {new}
    assert all(code == 200 for _, code, _ in traffic.results), Counter(code for _, code, _ in traffic.results)
    obj = wait_phase(cluster, wait_until, namespace, "qa", "Healthy")
    assert condition(obj, "Progressing")["reason"] == "RolloutComplete"


def test_a_canary_whose_lm_fails_half_the_time_is_aborted_and_then_gets_no_request(
        cluster, operator, namespace, wait_until, redis_server, fake_lm, flaky_lm, runtimes):
    flaky_lm.reset(failure_rate=0.5)
    steps = [{"setWeight": 50}, {"pause": {}}]
    analysis = {"intervalSeconds": 5, "minRequests": 10, "maxErrorRate": 0.05, "failureLimit": 0}
    first = start_with(cluster, namespace, wait_until, redis_server, [canary(fake_lm, steps, analysis)])
    stable = first["status"]["stableRevision"]
    pods = runtimes(namespace, "qa", 2)
    with Traffic(pods).running():
        patch_spec(cluster, namespace, "qa", {"lm": {"apiBase": flaky_lm.api_base}})
        aborted = wait_until(lambda: (s := status(cluster, namespace)).get("abortedRevision") and s,
                             "the canary to be aborted", timeout=TIMEOUT)
    bad = aborted["abortedRevision"]
    assert aborted["canaryRevision"] == "" and aborted["canaryWeight"] == 0 and aborted["stableRevision"] == stable
    assert aborted["lastAnalysis"]["verdict"] == "Fail" and "errorRate" in aborted["lastAnalysis"]["message"]
    assert aborted["routing"]["weights"] == {stable: 100}
    obj = wait_phase(cluster, wait_until, namespace, "qa", "Degraded")
    degraded = condition(obj, "Degraded")
    assert degraded["reason"] == "RolloutAborted" and "errorRate" in degraded["message"] and "> 0.05" in degraded["message"]

    wait_served(pods, cluster, namespace, wait_until)
    calls_before = flaky_lm.calls
    after = [predict(pods[i % 2], f"after-abort-{i}", user=f"user-{i}") for i in range(200)]
    assert Counter(result["revision"] for result in after) == {stable: 200}, "0 requests reached the bad revision"
    assert all(result["status"] == 200 for result in after)
    assert flaky_lm.calls == calls_before
    time.sleep(12)  # a retry is only by request: the same spec is never rolled out again
    held = status(cluster, namespace)
    assert (held["canaryRevision"], held["abortedRevision"]) == ("", bad)


def test_no_traffic_is_inconclusive_never_promoted_never_aborted(
        cluster, operator, namespace, wait_until, redis_server, fake_lm):
    steps = [{"setWeight": 50}, {"pause": {"seconds": 5}}]
    analysis = {"intervalSeconds": 5, "minRequests": 5, "inconclusiveLimit": 2}
    first = start_with(cluster, namespace, wait_until, redis_server, [canary(fake_lm, steps, analysis)])
    stable = first["status"]["stableRevision"]
    patch_spec(cluster, namespace, "qa", {"lm": {"temperature": 0.5}})
    paused = wait_until(lambda: (s := status(cluster, namespace)).get("rolloutPaused") and s,
                        "the rollout to pause after inconclusive intervals", timeout=TIMEOUT)
    assert paused["lastAnalysis"]["verdict"] == "Inconclusive" and paused["lastAnalysis"]["inconclusive"] == 2
    assert "inconclusive" in paused["pauseReason"]
    time.sleep(12)
    still = status(cluster, namespace)
    assert (still["stableRevision"], still["abortedRevision"], still["canaryWeight"]) == (stable, "", 50)
    assert get_dspy(cluster, namespace, "qa")["status"]["phase"] == "Paused"
    shown = kubectl_dspy(cluster, namespace, "status", "qa").stdout
    assert "Inconclusive" in shown and "50%" in shown


def test_the_evaluation_gate_stops_a_worse_program_before_any_traffic(
        cluster, operator, namespace, wait_until, redis_server, fake_lm, runtimes):
    steps = [{"setWeight": 50}, {"pause": {}}]
    analysis = {"intervalSeconds": 5, "minRequests": 5,
                "evaluation": {"configMapRef": {"name": "devset"}, "metric": "ExactMatch", "minScore": 0.8,
                               "maxRegression": 0.1}}
    first = start_with(cluster, namespace, wait_until, redis_server,
                       [devset([f"dev question {i}" for i in range(5)]), canary(fake_lm, steps, analysis)])
    stable = first["status"]["stableRevision"]
    runtimes(namespace, "qa", 1)
    recorder = Recorder(cluster, namespace)
    # The new program names its output `response`: every dev-set answer is missing.
    patch_spec(cluster, namespace, "qa", {"program": {"signature": "question -> response", "module": "Predict"}})
    aborted = wait_until(lambda: (s := status(cluster, namespace)).get("abortedRevision") and s,
                         "the gate to abort the canary", timeout=TIMEOUT)
    seen = recorder.stop()
    assert all(weight == 0 for _, weight in seen), f"the canary got traffic: {seen}"
    assert aborted["evaluation"]["state"] == "Failed"
    assert aborted["evaluation"]["scores"] == {"canary": 0.0, "stable": 1.0}
    assert "minScore" in aborted["evaluation"]["message"] and aborted["stableRevision"] == stable
    shown = kubectl_dspy(cluster, namespace, "status", "qa").stdout
    assert "Failed" in shown


def test_the_operator_killed_mid_canary_resumes_at_the_same_step(
        cluster, operator, namespace, wait_until, redis_server, fake_lm):
    steps = [{"setWeight": 30}, {"pause": {}}, {"setWeight": 60}, {"pause": {}}]
    start_with(cluster, namespace, wait_until, redis_server, [canary(fake_lm, steps)])
    patch_spec(cluster, namespace, "qa", {"lm": {"maxTokens": 256}})
    before = wait_until(lambda: (s := status(cluster, namespace)).get("canaryWeight") == 30 and s, "weight 30")
    operator.kill_and_restart()
    time.sleep(8)  # several rollout ticks
    after = status(cluster, namespace)
    for key in ("canaryRevision", "canaryWeight", "currentStep", "currentStepStartTime", "stableRevision"):
        assert after[key] == before[key], key
    assert after["routing"]["serial"] == before["routing"]["serial"], "no table was re-issued"
    answer = kubectl_dspy(cluster, namespace, "promote", "qa").stdout
    assert "accepted" in answer.lower()
    moved = wait_until(lambda: (s := status(cluster, namespace)).get("canaryWeight") == 60 and s, "weight 60")
    assert moved["currentStep"] == 3


def test_weights_changed_under_traffic_split_as_asked_without_restarting_a_runtime(
        cluster, operator, namespace, wait_until, redis_server, fake_lm, runtimes):
    steps = [{"setWeight": 30}, {"pause": {}}, {"setWeight": 70}, {"pause": {}}]
    first = start_with(cluster, namespace, wait_until, redis_server, [canary(fake_lm, steps)])
    stable = first["status"]["stableRevision"]
    pods = runtimes(namespace, "qa", 2)
    pids = [pod.process.pid for pod in pods]
    patch_spec(cluster, namespace, "qa", {"lm": {"temperature": 0.3}})
    new = wait_until(lambda: (s := status(cluster, namespace)).get("canaryWeight") == 30 and s["canaryRevision"],
                     "weight 30")
    for expected in (30, 70):
        wait_served(pods, cluster, namespace, wait_until)
        questions = [f"split question {i}" for i in range(200)]  # repeated: cached answers still count
        results = [predict(pods[i % 2], questions[i % 200], user=uuid.uuid4().hex) for i in range(2000)]
        share = 100 * sum(result["revision"] == new for result in results) / len(results)
        assert {result["revision"] for result in results} == {stable, new}
        assert abs(share - expected) <= 3, f"canary share {share:.1f}% for weight {expected}%"
        if expected == 30:
            kubectl_dspy(cluster, namespace, "promote", "qa")
            wait_until(lambda: status(cluster, namespace).get("canaryWeight") == 70, "weight 70")
    assert [pod.process.poll() for pod in pods] == [None, None] and [pod.process.pid for pod in pods] == pids
    assert all(pod.get("/health")["status"] == "ok" for pod in pods)


def test_example_04_canary_does_what_its_comments_say(
        cluster, operator, namespace, wait_until, redis_server, fake_lm, runtimes):
    docs = [doc for doc in yaml.safe_load_all((REPO / "examples" / "04-canary.yaml").read_text()) if doc]
    resource = next(doc for doc in docs if doc["kind"] == "DSPyDeployment")
    # The operator runs outside the cluster here: point it (and the runtimes) at the test's Redis
    # and the fake LM instead of the managed Redis and OpenAI.
    resource["spec"]["redis"] = {"mode": "External", "urlSecretRef": {"name": "redis-url"}}
    resource["spec"]["lm"] = {"model": MODEL, "apiBase": fake_lm.api_base, "apiKeySecretRef": {"name": "openai"}}
    others = [doc for doc in docs if doc["kind"] != "DSPyDeployment"]
    start_with(cluster, namespace, wait_until, redis_server, [*others, resource], name="qa-canary")
    runtimes(namespace, "qa-canary", 1)
    patch_spec(cluster, namespace, "qa-canary", {"program": {"signature": "question -> answer",
                                                             "module": "ChainOfThought"}})
    at_pause = wait_until(lambda: (s := status(cluster, namespace, "qa-canary")).get("currentStep") == 1 and s,
                          "10% and the 5-minute pause")
    assert at_pause["canaryWeight"] == 10
    shown = kubectl_dspy(cluster, namespace, "status", "qa-canary").stdout
    assert "step 2/4" in shown and "left" in shown, shown
    kubectl_dspy(cluster, namespace, "promote", "qa-canary")  # skip the 5-minute pause
    wait_until(lambda: status(cluster, namespace, "qa-canary").get("canaryWeight") == 50, "50%")
    kubectl_dspy(cluster, namespace, "promote", "qa-canary")  # the manual pause
    done = wait_until(lambda: (s := status(cluster, namespace, "qa-canary")).get("canaryRevision") == "" and s,
                      "promotion")
    assert done["stableRevision"] == at_pause["canaryRevision"]
    history = kubectl_dspy(cluster, namespace, "history", "qa-canary").stdout
    assert done["stableRevision"] in history
