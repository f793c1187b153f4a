"""Blue/green switches end to end: the real operator on the real control plane, the
Services' EndpointSlices (written by the controller-manager from the kwok pods) as the
proof of where traffic goes, and, where the pods' own behaviour matters, real runtime
processes started from each color's Deployment with a real redis-server and the fake LM.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import httpx
import pytest
from kubernetes import client as k8s

from resources import (
    TIMEOUT, api_key_secret, apply_yaml, condition, devset, dspy_deployment, get_dspy, kubectl_dspy, patch_spec,
    redis_secret, status, wait_phase,
)

pytestmark = pytest.mark.timeout(900)


# --- helpers ----------------------------------------------------------------------------


def blue_green(name: str = "qa", replicas: int = 2, **settings: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {"replicas": replicas,
                            "rollout": {"strategy": "BlueGreen", "blueGreen": {"previewReplicas": 1, **settings}}}
    return dspy_deployment(name=name, **spec)


def endpoint_pods(cluster: Any, namespace: str, service: str) -> set[str]:
    """The ready pods behind a Service, from its EndpointSlices."""
    slices = k8s.DiscoveryV1Api(cluster.api_client).list_namespaced_endpoint_slice(
        namespace, label_selector=f"kubernetes.io/service-name={service}").items
    return {endpoint.target_ref.name for piece in slices for endpoint in piece.endpoints or []
            if endpoint.target_ref is not None and (endpoint.conditions is None or endpoint.conditions.ready)}


def pods_of(cluster: Any, namespace: str, deployment: str) -> set[str]:
    """The running pods of one runtime Deployment (by its selector)."""
    apps = k8s.AppsV1Api(cluster.api_client)
    labels = apps.read_namespaced_deployment(deployment, namespace).spec.selector.match_labels
    selector = ",".join(f"{key}={value}" for key, value in labels.items())
    pods = k8s.CoreV1Api(cluster.api_client).list_namespaced_pod(namespace, label_selector=selector).items
    return {pod.metadata.name for pod in pods if pod.metadata.deletion_timestamp is None}


def deployment(cluster: Any, namespace: str, name: str) -> Any | None:
    try:
        return k8s.AppsV1Api(cluster.api_client).read_namespaced_deployment(name, namespace)
    except k8s.ApiException as error:
        if error.status == 404:
            return None
        raise


def serves_color(cluster: Any, namespace: str, service: str, color: str) -> set[str] | None:
    """The Service's endpoints when they are exactly the ready pods of `color` (None otherwise)."""
    wanted = pods_of(cluster, namespace, f"qa-{color}")
    found = endpoint_pods(cluster, namespace, service)
    return found if found and found == wanted else None


def printed_column(cluster: Any, namespace: str, column: str) -> str:
    lines = cluster.kubectl("get", "dspy", "qa", "-n", namespace).stdout.splitlines()
    header, row = lines[0].split(), lines[1].split()
    return row[header.index(column)]


def events(cluster: Any, namespace: str, reason: str) -> list[str]:
    out = cluster.kubectl("get", "events", "-n", namespace, "--field-selector", f"reason={reason}", "-o", "json")
    return [item["message"] for item in json.loads(out.stdout)["items"]]


class EndpointWatch:
    """Polls a Service's ready endpoints in the background: proof that it never went empty."""

    def __init__(self, cluster: Any, namespace: str, service: str = "qa") -> None:
        self.counts: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(cluster, namespace, service), daemon=True)
        self._thread.start()

    def _run(self, cluster: Any, namespace: str, service: str) -> None:
        while not self._stop.is_set():
            self.counts.append(len(endpoint_pods(cluster, namespace, service)))
            self._stop.wait(0.2)

    def stop(self) -> list[int]:
        self._stop.set()
        self._thread.join(timeout=10)
        return self.counts


def predict_revision(runtime: Any) -> str:
    response = httpx.post(f"{runtime.base}/v1/predict", json={"inputs": {"question": f"q-{time.monotonic()}"}},
                          timeout=60)
    assert response.status_code == 200, response.text
    return str(response.json()["revision"])


# --- tests ------------------------------------------------------------------------------


def test_a_change_is_previewed_in_the_idle_color_promoted_by_hand_and_undone_at_once(
        cluster, operator, namespace, wait_until, redis_server, fake_lm, runtimes):
    resource = blue_green(autoPromotionEnabled=False, scaleDownDelaySeconds=600)
    resource["spec"].update(lm={"model": "openai/fake-model", "apiBase": fake_lm.api_base,
                                "apiKeySecretRef": {"name": "openai"}},
                            redis={"mode": "External", "urlSecretRef": {"name": "redis-url"}})
    apply_yaml(cluster, namespace, [api_key_secret(), redis_secret(redis_server.url), resource])
    first = wait_phase(cluster, wait_until, namespace, "qa", "Healthy")["status"]
    stable = first["stableRevision"]
    assert first["activeColor"] == "blue" and first["colorRevisions"] == {"blue": stable}
    assert deployment(cluster, namespace, "qa-blue").spec.replicas == 2
    assert deployment(cluster, namespace, "qa-green") is None and deployment(cluster, namespace, "qa") is None
    wait_until(lambda: serves_color(cluster, namespace, "qa", "blue"), "qa to serve the blue pods")
    wait_until(lambda: serves_color(cluster, namespace, "qa-preview", "blue"), "qa-preview on blue without a preview")
    assert printed_column(cluster, namespace, "ACTIVE") == "blue"
    blue_runtime = runtimes(namespace, "qa-blue", 1)[0]
    assert predict_revision(blue_runtime) == stable

    patch_spec(cluster, namespace, "qa", {"lm": {"temperature": 0.5}})
    preview = wait_until(lambda: (s := status(cluster, namespace)).get("previewReadyTime") and s, "a ready preview")
    new = preview["canaryRevision"]
    assert new and new != stable and preview["previewColor"] == "green" and preview["activeColor"] == "blue"
    assert deployment(cluster, namespace, "qa-green").spec.replicas == 1
    wait_until(lambda: serves_color(cluster, namespace, "qa-preview", "green"), "qa-preview to serve green")
    assert serves_color(cluster, namespace, "qa", "blue"), "live traffic stays on blue"
    progressing = wait_until(lambda: (c := condition(get_dspy(cluster, namespace, "qa"), "Progressing"))
                             .get("reason") == "PreviewReady" and c, "Progressing PreviewReady")
    assert "waiting for `kubectl dspy promote`" in progressing["message"]
    green_runtime = runtimes(namespace, "qa-green", 1)[0]
    assert predict_revision(green_runtime) == new, "each color serves its own revision from its own table"
    assert predict_revision(blue_runtime) == stable
    shown = kubectl_dspy(cluster, namespace, "status", "qa").stdout
    assert "green" in shown and new in shown

    assert "accepted" in kubectl_dspy(cluster, namespace, "promote", "qa").stdout.lower()
    switched = wait_until(lambda: (s := status(cluster, namespace)).get("activeColor") == "green" and s,
                          "the switch to green")
    assert switched["stableRevision"] == new and switched["previewColor"] == "" and switched["scaleDownTime"]
    assert deployment(cluster, namespace, "qa-green").spec.replicas == 2, "scaled to the active count first"
    assert deployment(cluster, namespace, "qa-blue").spec.replicas == 2, "blue keeps running for the delay"
    wait_until(lambda: serves_color(cluster, namespace, "qa", "green"), "qa to serve the green pods")
    assert switched["history"][0]["revision"] == new and switched["history"][0]["outcome"] == "Promoted"
    assert predict_revision(blue_runtime) == stable and predict_revision(green_runtime) == new
    wait_until(lambda: any("green" in message for message in events(cluster, namespace, "Switched")),
               "the Switched Event")

    assert "accepted" in kubectl_dspy(cluster, namespace, "undo", "qa").stdout.lower()
    back = wait_until(lambda: (s := status(cluster, namespace)).get("activeColor") == "blue" and s, "back to blue")
    assert back["stableRevision"] == stable and back["abortedRevision"] == new
    wait_until(lambda: serves_color(cluster, namespace, "qa", "blue"), "qa to serve blue again")
    obj = wait_phase(cluster, wait_until, namespace, "qa", "Degraded")
    assert condition(obj, "Degraded")["reason"] == "RolledBack"
    assert obj["status"]["history"][0]["outcome"] == "RolledBack"
    assert "RolledBack" in kubectl_dspy(cluster, namespace, "history", "qa").stdout


def test_auto_promotion_waits_its_seconds_the_old_color_goes_after_the_delay_and_abort_drops_a_preview(
        cluster, operator, namespace, wait_until):
    apply_yaml(cluster, namespace, [api_key_secret(), blue_green(autoPromotionSeconds=4, scaleDownDelaySeconds=8)])
    stable = wait_phase(cluster, wait_until, namespace, "qa", "Healthy")["status"]["stableRevision"]
    patch_spec(cluster, namespace, "qa", {"runtime": {"image": "example.invalid/dspy-runtime:e2e-2"}})
    switched = wait_until(lambda: (s := status(cluster, namespace)).get("activeColor") == "green" and s,
                          "the auto-promotion to green", timeout=TIMEOUT)
    new = switched["stableRevision"]
    assert new != stable, "a pod-level change is a blue/green revision too"
    assert deployment(cluster, namespace, "qa-green").spec.template.spec.containers[0].image.endswith("e2e-2")
    wait_until(lambda: events(cluster, namespace, "PreviewReady"), "the PreviewReady Event")
    promoted_at = switched["history"][0]["time"]
    wait_until(lambda: [m for m in events(cluster, namespace, "SwitchStarted") if "auto-promotion" in m],
               "the Event: the switch was started by the timer")
    assert deployment(cluster, namespace, "qa-blue") is not None, "the old color stays for scaleDownDelaySeconds"
    assert switched["scaleDownTime"] > promoted_at
    gone = wait_until(lambda: deployment(cluster, namespace, "qa-blue") is None and status(cluster, namespace),
                      "blue to go after the delay", timeout=TIMEOUT)
    assert gone["colorRevisions"] == {"green": new} and not gone.get("scaleDownTime")
    wait_until(lambda: serves_color(cluster, namespace, "qa", "green"), "qa on green")

    patch_spec(cluster, namespace, "qa", {"lm": {"maxTokens": 128},
                                         "rollout": {"blueGreen": {"autoPromotionEnabled": False}}})
    wait_until(lambda: status(cluster, namespace).get("previewColor") == "blue", "a preview in blue")
    wait_until(lambda: deployment(cluster, namespace, "qa-blue") is not None, "the blue Deployment again")
    assert "accepted" in kubectl_dspy(cluster, namespace, "abort", "qa").stdout.lower()
    obj = wait_phase(cluster, wait_until, namespace, "qa", "Degraded")
    assert condition(obj, "Degraded")["reason"] == "RolloutAborted"
    assert obj["status"]["activeColor"] == "green" and obj["status"]["previewColor"] == ""
    assert obj["status"]["history"][0]["outcome"] == "Aborted"
    wait_until(lambda: deployment(cluster, namespace, "qa-blue") is None, "the dropped preview's Deployment to go")
    assert serves_color(cluster, namespace, "qa", "green")


def test_with_an_hpa_the_preview_meets_its_count_and_one_hpa_follows_the_active_color(
        cluster, operator, namespace, wait_until):
    resource = blue_green(autoPromotionEnabled=False, scaleDownDelaySeconds=600)
    resource["spec"].update(autoscaling={"minReplicas": 2, "maxReplicas": 6},
                            runtime={"image": "example.invalid/dspy-runtime:e2e",
                                     "resources": {"requests": {"cpu": "100m"}}})
    resource["spec"].pop("replicas")
    resource["spec"]["rollout"]["blueGreen"].pop("previewReplicas")
    apply_yaml(cluster, namespace, [api_key_secret(), resource])
    wait_phase(cluster, wait_until, namespace, "qa", "Healthy")
    autoscaling = k8s.AutoscalingV2Api(cluster.api_client)
    assert autoscaling.read_namespaced_horizontal_pod_autoscaler("qa", namespace).spec.scale_target_ref.name == "qa-blue"
    # What the HPA does under load: it scales the active color through the scale subresource.
    cluster.kubectl("scale", "deployment", "qa-blue", "-n", namespace, "--replicas=4")
    wait_until(lambda: len(pods_of(cluster, namespace, "qa-blue")) == 4, "blue at 4 pods")
    patch_spec(cluster, namespace, "qa", {"lm": {"temperature": 0.2}})
    wait_until(lambda: status(cluster, namespace).get("previewReadyTime"), "a ready preview")
    assert deployment(cluster, namespace, "qa-green").spec.replicas == 2, "previewReplicas: minReplicas"
    assert deployment(cluster, namespace, "qa-blue").spec.replicas == 4, "the operator keeps the HPA's count"
    kubectl_dspy(cluster, namespace, "promote", "qa")
    wait_until(lambda: status(cluster, namespace).get("activeColor") == "green", "the switch")
    assert deployment(cluster, namespace, "qa-green").spec.replicas == 4, "the preview met the HPA's count"
    wait_until(lambda: len(endpoint_pods(cluster, namespace, "qa")) == 4 and serves_color(cluster, namespace, "qa",
                                                                                         "green"), "4 green endpoints")
    # Written in the same pass as the Service, just after it.
    wait_until(lambda: [(hpa.metadata.name, hpa.spec.scale_target_ref.name)
                        for hpa in autoscaling.list_namespaced_horizontal_pod_autoscaler(namespace).items]
               == [("qa", "qa-green")], "exactly one HPA, on green")


def test_the_operator_killed_mid_switch_resumes_and_never_switches_to_a_short_color(
        cluster, operator, namespace, wait_until):
    apply_yaml(cluster, namespace, [api_key_secret(), blue_green(autoPromotionEnabled=False, scaleDownDelaySeconds=600)])
    wait_phase(cluster, wait_until, namespace, "qa", "Healthy")
    patch_spec(cluster, namespace, "qa", {"lm": {"temperature": 0.9}})
    wait_until(lambda: status(cluster, namespace).get("previewReadyTime"), "a ready preview")
    # Room for exactly the pods running now (2 blue, 1 green): the preview cannot grow yet.
    quota = {"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "pods"}, "spec": {"hard": {"pods": "3"}}}
    apply_yaml(cluster, namespace, [quota])
    wait_until(lambda: cluster.kubectl("get", "resourcequota", "pods", "-n", namespace, "-o",
                                       "jsonpath={.status.used.pods}").stdout == "3", "the quota to count the pods")
    kubectl_dspy(cluster, namespace, "promote", "qa")
    wait_until(lambda: status(cluster, namespace).get("switching") is True, "the switch to start")
    operator.kill_and_restart()
    time.sleep(6)  # several rollout ticks of the new process, with the preview still one pod short
    held = status(cluster, namespace)
    assert (held["activeColor"], held["switching"], held["previewColor"]) == ("blue", True, "green")
    assert serves_color(cluster, namespace, "qa", "blue"), "the Service waits for the whole green count"
    cluster.kubectl("delete", "resourcequota", "pods", "-n", namespace)
    # The ReplicaSet controller retries a refused pod with growing backoff; any change of the
    # ReplicaSet makes it try again at once.
    cluster.kubectl("annotate", "replicaset", "-n", namespace, "-l", "dspy.dev/color=green", "e2e/quota=lifted")
    wait_until(lambda: status(cluster, namespace).get("activeColor") == "green", "the switch to finish",
               timeout=TIMEOUT)
    assert len(pods_of(cluster, namespace, "qa-green")) >= 2
    wait_until(lambda: serves_color(cluster, namespace, "qa", "green"), "qa on green")


def test_moving_between_strategies_never_leaves_the_service_without_pods(cluster, operator, namespace, wait_until):
    apply_yaml(cluster, namespace, [api_key_secret(), dspy_deployment()])
    first = wait_phase(cluster, wait_until, namespace, "qa", "Healthy")["status"]
    wait_until(lambda: len(endpoint_pods(cluster, namespace, "qa")) == 2, "2 endpoints")
    watch = EndpointWatch(cluster, namespace)
    try:
        patch_spec(cluster, namespace, "qa", {"rollout": {"strategy": "BlueGreen",
                                                           "blueGreen": {"scaleDownDelaySeconds": 2}}})
        moved = wait_until(lambda: (s := status(cluster, namespace)).get("activeColor") == "blue"
                           and deployment(cluster, namespace, "qa") is None and s, "the move to blue", timeout=TIMEOUT)
        assert moved["colorRevisions"] == {"blue": moved["stableRevision"]}
        wait_until(lambda: serves_color(cluster, namespace, "qa", "blue"), "qa on blue")
        assert moved["history"][1]["revision"] == first["stableRevision"]

        patch_spec(cluster, namespace, "qa", {"rollout": {"strategy": "Canary", "blueGreen": None,
                                                           "canary": {"steps": [{"setWeight": 50}, {"pause": {}}]}}})
        back = wait_until(lambda: (s := status(cluster, namespace)).get("activeColor") == ""
                          and deployment(cluster, namespace, "qa-blue") is None and s, "the move back", timeout=TIMEOUT)
        assert back["canaryRevision"] == "", "the same program under the other naming: no canary"
        assert back["stableRevision"] == first["stableRevision"] == back["revision"]
        wait_until(lambda: len(endpoint_pods(cluster, namespace, "qa")) == 2, "2 endpoints of the one Deployment")
    finally:
        counts = watch.stop()
    assert counts and min(counts) >= 1, f"the Service was left without pods on the way: {counts}"
    wait_phase(cluster, wait_until, namespace, "qa", "Healthy")


def test_the_preview_passes_its_evaluation_gate_and_analysis_in_its_own_pods_before_auto_promotion(
        cluster, operator, namespace, wait_until, redis_server, fake_lm, runtimes):
    analysis = {"intervalSeconds": 5, "minRequests": 5, "maxErrorRate": 0.05,
                "evaluation": {"configMapRef": {"name": "devset"}, "metric": "ExactMatch", "minScore": 0.9}}
    resource = blue_green(replicas=1, autoPromotionSeconds=0, scaleDownDelaySeconds=600, analysis=analysis)
    resource["spec"].update(lm={"model": "openai/fake-model", "apiBase": fake_lm.api_base,
                                "apiKeySecretRef": {"name": "openai"}},
                            redis={"mode": "External", "urlSecretRef": {"name": "redis-url"}})
    apply_yaml(cluster, namespace, [api_key_secret(), redis_secret(redis_server.url),
                                    devset([f"dev question {i}" for i in range(4)]), resource])
    stable = wait_phase(cluster, wait_until, namespace, "qa", "Healthy")["status"]["stableRevision"]
    blue = runtimes(namespace, "qa-blue", 1)[0]
    patch_spec(cluster, namespace, "qa", {"program": {"signature": "question -> answer", "module": "Predict"}})
    wait_until(lambda: deployment(cluster, namespace, "qa-green") is not None, "the green Deployment")
    green = runtimes(namespace, "qa-green", 1)[0]
    stop = threading.Event()

    def testers() -> None:  # what reaches the preview Service (and the active one)
        while not stop.is_set():
            for runtime in (green, blue):
                try:
                    predict_revision(runtime)
                except (AssertionError, httpx.HTTPError):
                    pass
            stop.wait(0.1)

    thread = threading.Thread(target=testers, daemon=True)
    thread.start()
    try:
        switched = wait_until(lambda: (s := status(cluster, namespace)).get("activeColor") == "green" and s,
                              "the preview to pass and be promoted", timeout=TIMEOUT)
    except AssertionError as error:
        raise AssertionError(f"{error}; status: {json.dumps(status(cluster, namespace), indent=1)}") from None
    finally:
        stop.set()
        thread.join(timeout=30)
    new = switched["stableRevision"]
    assert new != stable
    gate = switched["evaluation"]
    assert gate["state"] == "Passed" and gate["scores"] == {"canary": 1.0, "stable": 1.0}, gate
    assert gate.get("runner", "qa-green").startswith("qa-green"), "only a preview pod serves both revisions"
    analysis_seen = switched["lastAnalysis"]
    assert analysis_seen["revision"] == new and analysis_seen["verdict"] == "Pass", analysis_seen
    wait_until(lambda: [m for m in events(cluster, namespace, "SwitchStarted") if "auto-promotion" in m],
               "the Event: promoted by the timer once the gate and an analysis interval passed")
    assert predict_revision(green) == new and predict_revision(blue) == stable
