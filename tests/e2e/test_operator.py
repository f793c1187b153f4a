"""The operator end to end: the real `python -m dspy_operator` against the real control plane.

The operator talks to the API server through `kubectl proxy` and a small counting relay
in this process (`relay.py`, shared with `bench/operator_scale.py`), so the tests see every
request it makes: "idle means zero writes" is asserted on the operator's actual
PATCH/POST/PUT/DELETE calls, not on its logs.
Pods run on kwok nodes: nothing really runs in them, and they become Ready.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.request

import yaml
from kubernetes import client as k8s
from kubernetes import watch as k8s_watch
from urllib3.exceptions import ProtocolError

from relay import start_operator, stop
from resources import (
    GROUP, PLURAL, REPO, RESYNC_SECONDS, TIMEOUT, VERSION, api_key_secret, apply_yaml, condition, custom,
    dspy_deployment, get_dspy, owned_children, wait_phase,
)

TIMER_SUCCEEDED = "Timer 'resync' succeeded"  # kopf's log line after each tick of the timer


# --- tests ------------------------------------------------------------------------------


def test_children_appear_owned_and_resource_becomes_healthy(cluster, operator, namespace, wait_until):
    apply_yaml(cluster, namespace, [api_key_secret(), dspy_deployment(redis={"mode": "Managed"})])
    started = time.monotonic()
    obj = wait_phase(cluster, wait_until, namespace, "qa", "Healthy")
    print(f"\nHealthy {time.monotonic() - started:.1f}s after apply")
    assert condition(obj, "Ready")["status"] == "True"
    assert condition(obj, "RedisReady")["status"] == "True"
    assert obj["status"]["readyReplicas"] == 2 and obj["status"]["replicas"] == 2
    assert obj["status"]["selector"] == "app.kubernetes.io/component=runtime,dspy.dev/deployment=qa"

    children = owned_children(cluster, namespace, "qa")
    expected = {"Deployment/qa", "Service/qa", "PodDisruptionBudget/qa", "ConfigMap/qa-routing",
                "Deployment/qa-redis", "Service/qa-redis", "Secret/qa-redis", "NetworkPolicy/qa-redis"}
    assert expected <= set(children)
    uid = obj["metadata"]["uid"]
    for key in expected:
        refs = children[key]["metadata"]["ownerReferences"]
        assert refs == [{"apiVersion": f"{GROUP}/{VERSION}", "kind": "DSPyDeployment", "name": "qa", "uid": uid,
                         "controller": True, "blockOwnerDeletion": True}], key
    env = {e["name"]: e for e in children["Deployment/qa"]["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["LM_API_KEY"]["valueFrom"]["secretKeyRef"] == {"name": "openai", "key": "api-key"}
    assert "value" not in env["LM_API_KEY"]

    # The scale subresource works through status.selector and status.replicas.
    scale = custom(cluster).get_namespaced_custom_object_scale(GROUP, VERSION, namespace, PLURAL, "qa")
    assert scale["status"]["replicas"] == 2 and "dspy.dev/deployment=qa" in scale["status"]["selector"]


def scrape_operator(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def test_the_operator_serves_its_own_metrics_counting_what_it_did(cluster, operator, namespace, wait_until):
    """The real process on its DSPY_OPERATOR_METRICS_PORT: passes, the API calls it made (as the
    relay saw them answered), the resource's phase."""
    apply_yaml(cluster, namespace, [api_key_secret(), dspy_deployment(name="qm", redis={"mode": "Disabled"})])
    wait_phase(cluster, wait_until, namespace, "qm", "Healthy")

    def counted() -> dict[tuple[str, tuple[tuple[str, str], ...]], float] | None:
        samples = scrape_operator(operator.metrics_port)
        healthy = samples.get(("dspy_operator_resources", (("phase", "Healthy"),)), 0)
        return samples if healthy >= 1 else None

    samples = wait_until(counted, "the operator's metrics to count qm Healthy")
    assert samples[("dspy_operator_reconciles_total", (("result", "ok"),))] >= 1
    assert samples[("dspy_operator_reconcile_duration_seconds_count", ())] >= 1
    answered = {(labels["verb"], labels["code"]): count for (name, pairs), count in samples.items()
                if name == "dspy_operator_api_requests_total" and (labels := dict(pairs))}
    assert answered.get(("apply", "201"), 0) >= 1, f"server-side apply creating the children: {answered}"
    assert answered.get(("patch_status", "200"), 0) >= 1, answered
    assert answered.get(("list", "200"), 0) >= 1, f"the startup discovery read: {answered}"
    assert samples[("dspy_operator_rollout_events_total", (("reason", "RolloutAborted"),))] == 0


def test_every_example_reconciles_to_the_phase_it_promises(cluster, operator, namespace, wait_until):
    """examples/ is what users copy: each one reconciles to Healthy (blue/green on its blue color)."""
    names = []
    for path in sorted((REPO / "examples").glob("*.yaml")):
        docs = [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
        apply_yaml(cluster, namespace, docs)
        names += [(doc["metadata"]["name"], doc["spec"].get("rollout", {}).get("strategy"))
                  for doc in docs if doc["kind"] == "DSPyDeployment"]
    assert names
    for name, strategy in names:
        obj = wait_phase(cluster, wait_until, namespace, name, "Healthy")
        if strategy == "BlueGreen":
            assert obj["status"]["activeColor"] == "blue"


def test_a_program_change_switches_the_table_and_a_pod_level_change_rolls_the_pods(
        cluster, operator, namespace, wait_until):
    apply_yaml(cluster, namespace, [api_key_secret(), dspy_deployment()])
    first = wait_phase(cluster, wait_until, namespace, "qa", "Healthy")["status"]
    apps = k8s.AppsV1Api(cluster.api_client)
    core = k8s.CoreV1Api(cluster.api_client)

    def pod_hash() -> str:
        return apps.read_namespaced_deployment("qa", namespace).spec.template.metadata.annotations["dspy.dev/config-hash"]

    before = pod_hash()
    replicasets_before = {rs.metadata.name for rs in apps.list_namespaced_replica_set(namespace).items}

    # Revision-scoped (LM settings): a new revision in the routing table, no new pods.
    cluster.kubectl("patch", "dspydeployment", "qa", "-n", namespace, "--type=merge",
                    "-p", '{"spec": {"lm": {"temperature": 0.7}}}')
    second = wait_until(lambda: (s := get_dspy(cluster, namespace, "qa")["status"]).get("stableRevision") !=
                        first["stableRevision"] and s, "a new stable revision")
    table = yaml.safe_load(core.read_namespaced_config_map("qa-routing", namespace).data["routing.json"])
    assert [(entry["name"], entry["weight"]) for entry in table["revisions"]] == [(second["stableRevision"], 100)]
    assert table["revisions"][0]["variants"][0]["lm"]["temperature"] == 0.7
    assert table["serial"] == second["routing"]["serial"] > first["routing"]["serial"]
    assert pod_hash() == before, "a revision change never restarts pods"
    assert f"ConfigMap/qa-rev-{second['stableRevision']}" in owned_children(cluster, namespace, "qa")

    # Pod-level (the runtime's environment): new pods.
    cluster.kubectl("patch", "dspydeployment", "qa", "-n", namespace, "--type=merge",
                    "-p", '{"spec": {"runtime": {"logLevel": "DEBUG"}}}')
    wait_until(lambda: pod_hash() != before, "a new pod-template hash")
    wait_until(lambda: {rs.metadata.name for rs in apps.list_namespaced_replica_set(namespace).items} - replicasets_before,
               "a new ReplicaSet")
    obj = wait_phase(cluster, wait_until, namespace, "qa", "Healthy")
    env = {e.name: e.value for e in apps.read_namespaced_deployment("qa", namespace).spec.template.spec.containers[0].env}
    assert env["LOG_LEVEL"] == "DEBUG" and "LM_TEMPERATURE" not in env
    assert obj["status"]["stableRevision"] == second["stableRevision"], "pod-level changes are not revisions"


def test_deleting_the_resource_removes_its_children(cluster, operator, namespace, wait_until):
    apply_yaml(cluster, namespace, [api_key_secret(), dspy_deployment(redis={"mode": "Managed"})])
    wait_phase(cluster, wait_until, namespace, "qa", "Healthy")
    assert owned_children(cluster, namespace, "qa")
    cluster.kubectl("delete", "dspydeployment", "qa", "-n", namespace, "--wait=true", "--timeout=60s")
    wait_until(lambda: not owned_children(cluster, namespace, "qa"), "the garbage collector to remove every child")


def test_bad_spec_is_rejected_by_the_api_server_with_the_field_path(cluster, operator, namespace):
    bad = dspy_deployment(variants=[{"name": "a", "weight": 70}, {"name": "b", "weight": 20}])
    proc = cluster.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(bad), check=False)
    assert proc.returncode != 0
    assert "spec.variants" in proc.stderr and "sum to 100" in proc.stderr


def test_missing_secret_degrades_then_heals_when_it_appears(cluster, operator, namespace, wait_until):
    apply_yaml(cluster, namespace, [dspy_deployment(name="needs-key")])
    obj = wait_phase(cluster, wait_until, namespace, "needs-key", "Degraded")
    degraded = condition(obj, "Degraded")
    assert degraded["status"] == "True" and degraded["reason"] == "SpecInvalid"
    assert degraded["message"] == f'spec.lm.apiKeySecretRef: Secret "openai" not found in namespace "{namespace}"'
    assert "Traceback" not in str(obj["status"])
    assert not owned_children(cluster, namespace, "needs-key"), "nothing is created from an invalid spec"
    core = k8s.CoreV1Api(cluster.api_client)
    wait_until(lambda: any(event.reason == "SpecInvalid" and "apiKeySecretRef" in (event.message or "")
                           for event in core.list_namespaced_event(namespace).items), "a SpecInvalid Event")

    apply_yaml(cluster, namespace, [api_key_secret()])
    obj = wait_phase(cluster, wait_until, namespace, "needs-key", "Healthy")
    assert condition(obj, "Degraded")["status"] == "False"


def test_hand_deleted_or_edited_children_come_back(cluster, operator, namespace, wait_until):
    apply_yaml(cluster, namespace, [api_key_secret(), dspy_deployment()])
    wait_phase(cluster, wait_until, namespace, "qa", "Healthy")
    core = k8s.CoreV1Api(cluster.api_client)
    old_uid = core.read_namespaced_service("qa", namespace).metadata.uid

    core.delete_namespaced_service("qa", namespace)
    restored = wait_until(lambda: (svc := core.read_namespaced_service("qa", namespace)).metadata.uid != old_uid and svc,
                          "the Service to be recreated")
    assert restored.spec.selector == {"app.kubernetes.io/component": "runtime", "dspy.dev/deployment": "qa"}

    cluster.kubectl("patch", "service", "qa", "-n", namespace, "--type=merge",
                    "-p", '{"spec": {"selector": {"dspy.dev/deployment": "hijacked"}}}')
    wait_until(lambda: core.read_namespaced_service("qa", namespace).spec.selector.get("dspy.dev/deployment") == "qa",
               "the hand-edited selector to be restored")


def test_saved_programs_live_in_immutable_revisions_and_old_revisions_are_pruned(
        cluster, operator, namespace, wait_until):
    program = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "qa-program"},
               "data": {"program.json": '{"predict": {"demos": []}}'}}
    spec = {"program": {"signature": "question -> answer", "configMapRef": {"name": "qa-program"}},
            "revisionHistoryLimit": 3}
    apply_yaml(cluster, namespace, [api_key_secret(), program, dspy_deployment(**spec)])
    first = wait_phase(cluster, wait_until, namespace, "qa", "Healthy")["status"]["stableRevision"]
    copy = owned_children(cluster, namespace, "qa")[f"ConfigMap/qa-rev-{first}"]
    assert copy["immutable"] is True
    saved = yaml.safe_load(copy["data"]["revision.json"])["variants"][0]["program"]["state"]
    assert saved == {"predict": {"demos": []}}, "the saved program travels inline with its revision"

    revisions = [first]
    for demos in range(1, 4):  # a new saved program: a new revision each time
        demo = [{"question": f"q{i}", "answer": f"a{i}"} for i in range(demos)]
        edited = {**program, "metadata": {"name": f"qa-program-{demos}"},
                  "data": {"program.json": json.dumps({"predict": {"demos": demo}})}}
        apply_yaml(cluster, namespace, [edited])
        cluster.kubectl("patch", "dspydeployment", "qa", "-n", namespace, "--type=merge", "-p",
                        f'{{"spec": {{"program": {{"configMapRef": {{"name": "qa-program-{demos}"}}}}}}}}')
        revisions.append(wait_until(
            lambda: (r := get_dspy(cluster, namespace, "qa")["status"].get("stableRevision")) not in revisions and r,
            "a new revision", timeout=TIMEOUT))

    def kept() -> set[str]:
        return {key.removeprefix("ConfigMap/qa-rev-") for key in owned_children(cluster, namespace, "qa")
                if key.startswith("ConfigMap/qa-rev-")}
    # revisionHistoryLimit 3: the stable revision and the two before it (undo may return to them).
    wait_until(lambda: kept() == set(revisions[-3:]), "the revisions of the history kept, the older one pruned")
    history = get_dspy(cluster, namespace, "qa")["status"]["history"]
    assert [entry["revision"] for entry in history] == revisions[:0:-1][:3]
    assert {entry["outcome"] for entry in history} == {"Promoted"}
    wait_phase(cluster, wait_until, namespace, "qa", "Healthy")


def test_autoscaling_and_redis_children_follow_the_spec(cluster, operator, namespace, wait_until):
    """Turning autoscaling on hands replicas to an HPA; turning features off prunes their children."""
    apply_yaml(cluster, namespace, [api_key_secret(), dspy_deployment(redis={"mode": "Managed"})])
    wait_phase(cluster, wait_until, namespace, "qa", "Healthy")
    cluster.kubectl("patch", "dspydeployment", "qa", "-n", namespace, "--type=merge", "-p",
                    '{"spec": {"autoscaling": {"minReplicas": 2, "maxReplicas": 5}, "redis": {"mode": "Disabled"}}}')
    autoscaling = k8s.AutoscalingV2Api(cluster.api_client)
    hpa = wait_until(lambda: autoscaling.read_namespaced_horizontal_pod_autoscaler("qa", namespace), "the HPA")
    assert hpa.spec.scale_target_ref.name == "qa" and (hpa.spec.min_replicas, hpa.spec.max_replicas) == (2, 5)
    wait_until(lambda: not any(key.endswith("/qa-redis") for key in owned_children(cluster, namespace, "qa")),
               "the managed Redis children to be pruned")
    cluster.kubectl("patch", "dspydeployment", "qa", "-n", namespace, "--type=json",
                    "-p", '[{"op": "remove", "path": "/spec/autoscaling"}]')
    wait_until(lambda: "HorizontalPodAutoscaler/qa" not in owned_children(cluster, namespace, "qa"), "the HPA to be pruned")
    wait_phase(cluster, wait_until, namespace, "qa", "Healthy")


def test_turning_autoscaling_on_never_drops_the_running_count(cluster, operator, namespace, wait_until):
    """Every version of the Deployment the API server stored (a watch sees each one) keeps 4
    replicas while the operator stops setting the count and the HPA takes it over: without the
    hand-over the field would be removed by the operator's apply and defaulted to 1."""
    apply_yaml(cluster, namespace, [api_key_secret(), dspy_deployment(replicas=4)])
    wait_phase(cluster, wait_until, namespace, "qa", "Healthy")
    apps = k8s.AppsV1Api(cluster.api_client)
    start = apps.read_namespaced_deployment("qa", namespace)
    assert start.spec.replicas == 4
    seen: list[int] = []
    watcher = k8s_watch.Watch()
    stopped = threading.Event()

    def record() -> None:
        try:
            for event in watcher.stream(apps.list_namespaced_deployment, namespace, field_selector="metadata.name=qa",
                                        resource_version=start.metadata.resource_version, timeout_seconds=60):
                seen.append(event["object"].spec.replicas)
        except ProtocolError:
            if not stopped.is_set():
                raise  # the stream broke before the test was done with it


    thread = threading.Thread(target=record, daemon=True)
    thread.start()
    cluster.kubectl("patch", "dspydeployment", "qa", "-n", namespace, "--type=merge", "-p",
                    '{"spec": {"autoscaling": {"minReplicas": 2, "maxReplicas": 6}}}')
    autoscaling = k8s.AutoscalingV2Api(cluster.api_client)
    wait_until(lambda: autoscaling.read_namespaced_horizontal_pod_autoscaler("qa", namespace), "the HPA")
    wait_phase(cluster, wait_until, namespace, "qa", "Healthy")
    wait_until(lambda: seen, "the operator's writes to the Deployment")
    time.sleep(3)  # what the API server did with the apply is visible in the events already seen
    stopped.set()
    watcher.stop()
    thread.join(timeout=70)
    assert seen and set(seen) == {4}, seen
    live = apps.read_namespaced_deployment("qa", namespace)
    assert live.spec.replicas == 4
    managers = {entry.manager for entry in live.metadata.managed_fields
                if "f:replicas" in json.dumps(entry.fields_v1 or {})}
    assert "dspy-operator" not in managers, managers  # the count is no longer the operator's


def test_idle_reconciles_make_zero_writes(cluster, operator, namespace, wait_until):
    apply_yaml(cluster, namespace, [api_key_secret(), dspy_deployment(redis={"mode": "Managed"})])
    wait_phase(cluster, wait_until, namespace, "qa", "Healthy")
    # Let the last status write and Events settle, then watch three resync periods.
    settle = time.monotonic()
    wait_until(lambda: not operator.relay.writes(time.monotonic() - RESYNC_SECONDS - 2, namespace)
               and time.monotonic() - settle > RESYNC_SECONDS + 2, "writes to settle", timeout=TIMEOUT)
    quiet_from = time.monotonic()
    ticks_before = operator.logs().count(TIMER_SUCCEEDED)
    time.sleep(3 * RESYNC_SECONDS + 5)
    writes = operator.relay.writes(quiet_from, namespace)
    requests = operator.relay.select(quiet_from, namespace=namespace)
    print(f"\nidle {3 * RESYNC_SECONDS + 5}s: {len(requests)} requests to {namespace}, {len(writes)} writes: "
          f"{[f'{r.method} {r.path}' for r in requests]}")
    assert writes == [], [f"{w.method} {w.path}" for w in writes]
    assert operator.logs().count(TIMER_SUCCEEDED) > ticks_before, "the resync timer did run"
    # Children are observed from the operator's index: an idle tick reads nothing but, at most
    # once a minute, the one Secret the spec refers to (less than a minute is watched here).
    assert len(requests) <= 1, [f"{r.method} {r.path}" for r in requests]


def test_paused_holds_changes(cluster, operator, namespace, wait_until):
    apply_yaml(cluster, namespace, [api_key_secret(), dspy_deployment()])
    before = wait_phase(cluster, wait_until, namespace, "qa", "Healthy")["status"]
    apps = k8s.AppsV1Api(cluster.api_client)
    pod_hash = apps.read_namespaced_deployment("qa", namespace).spec.template.metadata.annotations["dspy.dev/config-hash"]
    cluster.kubectl("patch", "dspydeployment", "qa", "-n", namespace, "--type=merge",
                    "-p", '{"spec": {"paused": true, "lm": {"temperature": 0.9}, "runtime": {"logLevel": "DEBUG"}}}')
    obj = wait_phase(cluster, wait_until, namespace, "qa", "Paused")
    assert condition(obj, "Progressing")["reason"] == "Paused"
    assert obj["status"]["stableRevision"] == before["stableRevision"]
    assert obj["status"]["routing"] == before["routing"]
    assert apps.read_namespaced_deployment("qa", namespace).spec.template.metadata.annotations[
        "dspy.dev/config-hash"] == pod_hash
    cluster.kubectl("patch", "dspydeployment", "qa", "-n", namespace, "--type=merge", "-p", '{"spec": {"paused": false}}')
    wait_until(lambda: apps.read_namespaced_deployment("qa", namespace).spec.template.metadata.annotations[
        "dspy.dev/config-hash"] != pod_hash, "the held pod-level change to roll out once unpaused")
    after = wait_phase(cluster, wait_until, namespace, "qa", "Healthy")
    assert after["status"]["stableRevision"] != before["stableRevision"], "the held revision is served once unpaused"


def test_operator_restart_loses_nothing(cluster, operator, namespace, wait_until):
    apply_yaml(cluster, namespace, [api_key_secret(), dspy_deployment()])
    before = wait_phase(cluster, wait_until, namespace, "qa", "Healthy")
    assert operator.process is not None
    stop(operator.process)
    restarted = time.monotonic()
    operator.process = start_operator(operator.kubeconfig, operator.log_path)
    wait_until(lambda: any(r.at >= restarted and "dspydeployments" in r.path for r in operator.relay.requests),
               "the restarted operator to list DSPyDeployments")
    time.sleep(RESYNC_SECONDS + 5)
    after = get_dspy(cluster, namespace, "qa")
    assert after["status"]["conditions"] == before["status"]["conditions"]
    writes = operator.relay.writes(restarted, namespace)
    print(f"\nafter restart: {[f'{w.method} {w.path}' for w in writes]}")
    child_writes = [w for w in writes if "dspydeployments" not in w.path]
    assert child_writes == [], [f"{w.method} {w.path}" for w in child_writes]
