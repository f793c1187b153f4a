"""The Helm chart on the real control plane (apiserver with `--authorization-mode Node,RBAC`).

`helm install` (the pinned helm, `hack/helm.sh`) puts the operator's Deployment into a namespace
that enforces the Pod Security Standard "restricted". Its pods are kwok pods that run nothing, so
the operator is started on this machine the way the chart runs it (`chart.StandIn`: the
container's entrypoint, arguments and environment), authenticated as the chart's ServiceAccount
with a token minted for it (TokenRequest API) and nothing else, behind a relay that records
every request and its answer (`chart.AuditRelay`). Then:

- the RBAC scenario (`STEPS`: a full reconcile of an example, a write conflict, features
  switched on and off, revisions pruned, the move to BlueGreen and a blue/green switch, a
  child restored, a deletion) and a canary rollout go through with no 401/403, and every verb
  the chart grants was used;
- each grant removed in turn, the operator meets a 403 for exactly that verb and resource;
- namespaced mode serves its namespaces with Roles only and never asks for anything else;
- `helm upgrade` to changed values, `helm rollback`, the documented CRD upgrade command;
- `helm uninstall`: its pre-delete hook (run here in place of its pod, as the hook's own
  ServiceAccount) deletes the DSPyDeployments while the operator runs, refuses when none runs,
  and nothing is left stuck.
"""

from __future__ import annotations

import contextlib
import copy
import json
import re
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from chart import (
    CHART, AuditRelay, Helm, StandIn, audited_proxy, authorized, container_of, grants, helm_binary,
    operator_entrypoint, without,
)
from resources import (
    CRD_PATH, GROUP, PLURAL, REPO, TIMEOUT, VERSION, api_key_secret, apply_yaml, condition, custom, get_dspy,
    owned_children,
)

pytestmark = pytest.mark.timeout(900)

RELEASE = "dspy-operator"  # the full name is then the release name: dspy-operator
HOOK = f"{RELEASE}-uninstall"
HOOK_NODE_LABEL = "dspy.dev/e2e-uninstall-hook"
EXAMPLE = REPO / "examples" / "03-ab-variants.yaml"  # managed Redis, variants, a saved program
EXAMPLE_NAME = "qa-ab"

# The verbs the chart grants the operator, one removal test each (the test checks that the live
# ClusterRole grants exactly these, so this list cannot drift from the chart).
OPERATOR_GRANTS = [
    ("get", "dspy.dev", "dspydeployments"), ("list", "dspy.dev", "dspydeployments"),
    ("watch", "dspy.dev", "dspydeployments"), ("patch", "dspy.dev", "dspydeployments"),
    ("patch", "dspy.dev", "dspydeployments/status"),
    ("create", "", "events"),
    *[(verb, "", "configmaps") for verb in ("get", "list", "watch", "create", "patch", "delete")],
    *[(verb, "", "secrets") for verb in ("get", "list", "watch", "create", "delete")],
    *[(verb, "", "services") for verb in ("list", "watch", "create", "patch", "delete")],
    *[(verb, "apps", "deployments") for verb in ("list", "watch", "create", "patch", "delete")],
    *[(verb, "autoscaling", "horizontalpodautoscalers") for verb in ("list", "watch", "create", "patch", "delete")],
    *[(verb, "policy", "poddisruptionbudgets") for verb in ("list", "watch", "create", "patch")],
    *[(verb, "networking.k8s.io", "networkpolicies") for verb in ("list", "watch", "create", "patch", "delete")],
]
HOOK_GRANTS = [("list", "dspy.dev", "dspydeployments"), ("delete", "dspy.dev", "dspydeployments"),
               ("get", "apps", "deployments")]


def grant_id(grant: tuple[str, str, str]) -> str:
    verb, group, resource = grant
    return f"{verb}-{group or 'core'}-{resource.replace('/', '.')}"


# --- fixtures ----------------------------------------------------------------------------


@dataclass
class Release:
    name: str
    namespace: str
    helm: Helm

    @property
    def fullname(self) -> str:
        return self.name if "dspy-operator" in self.name else f"{self.name}-dspy-operator"


@pytest.fixture(scope="module")
def helm(cluster: Any) -> Helm:
    return Helm(helm_binary(), cluster.kubeconfig)


def create_namespace(cluster: Any, prefix: str, labels: dict[str, str] | None = None) -> str:
    name = f"{prefix}-{uuid.uuid4().hex[:6]}"
    core = k8s.CoreV1Api(cluster.api_client)
    core.create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=name, labels=labels or {})))
    return name


def drop_resources(cluster: Any, namespace: str) -> None:
    """Test cleanup only: delete the namespace's DSPyDeployments, letting go of the finalizers a
    stopped operator can no longer release, and wait until they are gone, so that the next
    test's operator never finds one in a terminating namespace (writes there answer 403)."""
    api = custom(cluster)
    for item in api.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)["items"]:
        name = item["metadata"]["name"]
        with contextlib.suppress(ApiException):
            api.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name, {"metadata": {"finalizers": None}})
            api.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
    deadline = time.monotonic() + TIMEOUT
    while api.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)["items"]:
        assert time.monotonic() < deadline, f"DSPyDeployments left in {namespace}"
        time.sleep(0.2)


@pytest.fixture
def app_namespaces(cluster: Any) -> Iterator[Callable[[], str]]:
    """`new()`: a fresh namespace for DSPyDeployments; removed afterwards without leaving any stuck."""
    made: list[str] = []

    def new() -> str:
        made.append(create_namespace(cluster, "e2e-app"))
        return made[-1]

    yield new
    core = k8s.CoreV1Api(cluster.api_client)
    for namespace in made:
        with contextlib.suppress(ApiException):
            drop_resources(cluster, namespace)
            core.delete_namespace(namespace)


def install(cluster: Any, helm: Helm, name: str, *values: str) -> Release:
    """`helm install --wait` into a fresh namespace that enforces the restricted Pod Security
    Standard: the operator's pod is refused there unless its security context is restricted."""
    namespace = create_namespace(cluster, "dspy-system", {"pod-security.kubernetes.io/enforce": "restricted"})
    helm.run("install", name, str(CHART), "--namespace", namespace, "--wait", "--timeout", "3m",
             "--set", "operator.verbose=true",
             # The hook's pod stays Pending until a test lets it run (it stands in for it first).
             "--set", f"uninstall.nodeSelector.{HOOK_NODE_LABEL.replace('.', chr(92) + '.')}=run", *values)
    cluster.wait_established(f"{PLURAL}.{GROUP}")
    return Release(name=name, namespace=namespace, helm=helm)


def remove(cluster: Any, release: Release) -> None:
    """Fixture teardown of a release a test did not uninstall (no hook: nothing to run it)."""
    if release.helm.run("status", release.name, "-n", release.namespace, check=False).returncode == 0:
        release.helm.run("uninstall", release.name, "-n", release.namespace, "--no-hooks", "--wait")
    with contextlib.suppress(ApiException):
        k8s.CoreV1Api(cluster.api_client).delete_namespace(release.namespace)


@pytest.fixture(scope="module")
def release(cluster: Any, helm: Helm) -> Iterator[Release]:
    """The chart in cluster-wide mode, for the whole module (uninstalled by the last test)."""
    installed = install(cluster, helm, RELEASE)
    try:
        yield installed
    finally:
        remove(cluster, installed)


def live(cluster: Any, kind: str, name: str, namespace: str | None = None) -> dict[str, Any]:
    args = ["get", kind, name, "-o", "json"] + (["-n", namespace] if namespace else [])
    return json.loads(cluster.kubectl(*args).stdout)


def exists(cluster: Any, kind: str, name: str, namespace: str | None = None) -> bool:
    args = ["get", kind, name, "--ignore-not-found", "-o", "name"] + (["-n", namespace] if namespace else [])
    return bool(cluster.kubectl(*args).stdout.strip())


@dataclass
class Running:
    """A chart container running here as a ServiceAccount, with the audit of its requests."""

    standin: StandIn
    relay: AuditRelay
    started: float = field(default_factory=time.monotonic)


@pytest.fixture
def run_as(cluster: Any, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Callable[..., Any]]:
    """`with run_as(workload, service_account, namespace) as running:` the workload's container,
    started here with a token minted for that ServiceAccount only; its log is printed when the
    test fails, with every refused request."""
    started: list[Running] = []

    @contextlib.contextmanager
    def start(workload: dict[str, Any], service_account: str, namespace: str,
              entrypoint: list[str] | None = None) -> Iterator[Running]:
        index = len(started)
        token_kubeconfig = cluster.serviceaccount_kubeconfig(namespace, service_account,
                                                             path=tmp_path / f"sa-{index}.kubeconfig")
        with audited_proxy(cluster.kubectl_bin, token_kubeconfig, tmp_path / f"relay-{index}.kubeconfig") as relay:
            standin = StandIn(workload, tmp_path / f"relay-{index}.kubeconfig",
                              tmp_path / f"{workload['metadata']['name']}-{index}.log",
                              entrypoint or operator_entrypoint())
            running = Running(standin, relay)
            started.append(running)
            try:
                yield running
            finally:
                standin.stop()

    failed_before = request.session.testsfailed
    yield start
    if request.session.testsfailed > failed_before:
        for running in started:
            lines = [line for line in running.standin.logs().splitlines() if "[DEBUG" not in line]
            print(f"\n----- {' '.join(running.standin.argv)} (without DEBUG, last 300 lines) -----\n"
                  + "\n".join(lines[-300:]))
            print("----- refused requests -----\n" + "\n".join(str(e) for e in running.relay.forbidden()))


@contextlib.contextmanager
def operator_of(run_as: Callable[..., Any], cluster: Any, release: Release) -> Iterator[Running]:
    """The release's operator Deployment, run here as its ServiceAccount; its liveness endpoint
    (where the chart's probes point) answers before anything else happens."""
    deployment = live(cluster, "deployment", release.fullname, release.namespace)
    account = deployment["spec"]["template"]["spec"]["serviceAccountName"]
    with run_as(deployment, account, release.namespace) as running:
        deadline = time.monotonic() + TIMEOUT
        # Refused requests end the wait: a removal test looks at them, whatever kopf then does.
        while not running.relay.forbidden() and not running.standin.healthy():
            assert time.monotonic() < deadline, "kopf's liveness endpoint never answered 200"
            time.sleep(0.2)
        yield running


# --- the scenario ------------------------------------------------------------------------


def refusals(relay: AuditRelay, namespaces: Iterable[str]) -> list[Any]:
    """Every 401/403 that concerns the test: an RBAC refusal anywhere, and any other refusal in
    the test's own namespaces or outside any namespace. Left out: a namespace another test is
    deleting refuses new objects with a 403 too, and a cluster-wide operator may meet one there."""
    mine = set(namespaces)

    def concerns(exchange: Any) -> bool:
        if exchange.refused is not None or exchange.status == 401:
            return True
        namespace = re.search(r"/namespaces/([^/?]+)/", exchange.path)
        return namespace is None or namespace.group(1) in mine

    return [exchange for exchange in relay.forbidden() if concerns(exchange)]



class Refused(Exception):
    """The request the scenario watches for was refused (a removal test's expected outcome)."""


@dataclass
class Scenario:
    """The operator's work the RBAC proof drives, as steps, in one namespace.

    With `expect=None` any 401/403 fails at once. With `expect=(verb, group, resource)` (a grant
    taken away) the scenario stops with `Refused` as soon as that request is refused."""

    cluster: Any
    relay: AuditRelay
    namespace: str
    expect: tuple[str, str, str] | None = None
    revisions: list[str] = field(default_factory=list)

    def check(self) -> None:
        if self.expect is not None:
            verb, group, resource = self.expect
            if self.relay.refused(verb, resource, group):
                raise Refused()
        elif refused := refusals(self.relay, [self.namespace]):
            raise AssertionError("the operator was refused:\n" + "\n".join(str(e) for e in refused))

    def wait(self, predicate: Callable[[], Any], what: str, timeout: float = TIMEOUT) -> Any:
        """Poll like `wait_until`, and check the refusals before every look."""
        deadline = time.monotonic() + timeout
        last: BaseException | None = None
        while True:
            self.check()
            try:
                if result := predicate():
                    return result
            except ApiException as error:  # 404 for a moment is normal
                last = error
            if time.monotonic() >= deadline:
                raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}"
                                     + (f"; last error: {last!r}" if last else ""))
            time.sleep(0.25)

    # -- reads --
    def obj(self) -> dict[str, Any]:
        return get_dspy(self.cluster, self.namespace, EXAMPLE_NAME)

    def healthy(self) -> dict[str, Any] | None:
        obj = self.obj()
        status = obj.get("status") or {}
        done = status.get("phase") == "Healthy" and status.get("observedGeneration") == obj["metadata"]["generation"]
        return obj if done else None

    def children(self) -> dict[str, dict[str, Any]]:
        return owned_children(self.cluster, self.namespace, EXAMPLE_NAME)

    def patch(self, patch: dict[str, Any] | list[dict[str, Any]]) -> None:
        kind = "json" if isinstance(patch, list) else "merge"
        self.cluster.kubectl("patch", "dspydeployment", EXAMPLE_NAME, "-n", self.namespace, f"--type={kind}",
                             "-p", json.dumps(patch))

    def new_revision(self, temperature: float) -> str:
        """A revision-scoped change (no pod restart); waits for it to be stable and Healthy."""
        before = set(self.revisions)
        self.patch({"spec": {"lm": {"temperature": temperature}}})
        obj = self.wait(lambda: (o := self.healthy()) and o["status"]["stableRevision"] not in before and o,
                        f"revision with temperature {temperature}")
        self.revisions.append(obj["status"]["stableRevision"])
        return self.revisions[-1]


def step_example_reconciles(s: Scenario) -> None:
    """examples/03 as a user applies it: Secret, saved-program ConfigMap, managed Redis, variants."""
    docs = [doc for doc in yaml.safe_load_all(EXAMPLE.read_text()) if doc]
    apply_yaml(s.cluster, s.namespace, docs)
    obj = s.wait(s.healthy, f"{EXAMPLE_NAME} to be Healthy")
    assert condition(obj, "Ready")["status"] == "True" and condition(obj, "RedisReady")["status"] == "True"
    expected = {f"Deployment/{EXAMPLE_NAME}", f"Service/{EXAMPLE_NAME}", f"PodDisruptionBudget/{EXAMPLE_NAME}",
                f"ConfigMap/{EXAMPLE_NAME}-routing", f"Deployment/{EXAMPLE_NAME}-redis",
                f"Service/{EXAMPLE_NAME}-redis", f"Secret/{EXAMPLE_NAME}-redis", f"NetworkPolicy/{EXAMPLE_NAME}-redis"}
    assert expected <= set(s.children()), sorted(s.children())
    s.revisions.append(obj["status"]["stableRevision"])


def step_a_conflicting_status_write_is_retaken(s: Scenario) -> None:
    """The status commit is held in the relay while the resource changes under it: the API
    server answers 409 and the operator re-reads the resource (GET) and decides again."""
    path = f"/namespaces/{s.namespace}/dspydeployments/{EXAMPLE_NAME}/status"

    def commit(exchange: Any) -> bool:
        return exchange.method == "PATCH" and exchange.path.endswith(path) and b'"resourceVersion"' in exchange.body

    before = set(s.revisions)
    with s.relay.hold(commit) as hold:
        s.patch({"spec": {"lm": {"temperature": 0.3}}})
        s.wait(hold.caught.is_set, "the operator's status commit")
        s.patch({"metadata": {"annotations": {"e2e.dspy.dev/bump": uuid.uuid4().hex}}})
    held = hold.exchange
    assert held is not None
    s.wait(lambda: held.status is not None, "the held commit's answer")
    assert held.status == 409, held
    resource_path = path.removesuffix("/status")
    s.wait(lambda: any(e.method == "GET" and e.path.endswith(resource_path) and e.at > held.at and e.status == 200
                       for e in s.relay.since(held.at)), "the operator to re-read the resource")
    obj = s.wait(lambda: (o := s.healthy()) and o["status"]["stableRevision"] not in before and o,
                 "the new revision after the conflict")
    s.revisions.append(obj["status"]["stableRevision"])


def step_autoscaling_on(s: Scenario) -> None:
    s.patch({"spec": {"autoscaling": {"minReplicas": 2, "maxReplicas": 4}}})
    s.wait(lambda: f"HorizontalPodAutoscaler/{EXAMPLE_NAME}" in s.children(), "the HPA")
    s.wait(s.healthy, "Healthy with an HPA")


def step_features_off_prune_their_children(s: Scenario) -> None:
    s.patch([{"op": "remove", "path": "/spec/autoscaling"}, {"op": "replace", "path": "/spec/redis",
                                                             "value": {"mode": "Disabled"}}])
    s.wait(lambda: not {key for key in s.children() if key.endswith(f"/{EXAMPLE_NAME}-redis")
                        or key.startswith("HorizontalPodAutoscaler/")}, "the HPA and the Redis children pruned")
    s.wait(s.healthy, "Healthy without Redis")


def step_old_revisions_are_pruned(s: Scenario) -> None:
    """revisionHistoryLimit 2: the revisions of the history are kept, two more drop the first."""
    first = s.revisions[0]
    s.patch({"spec": {"revisionHistoryLimit": 2}})
    s.new_revision(0.5)
    s.new_revision(0.7)
    s.wait(lambda: f"ConfigMap/{EXAMPLE_NAME}-rev-{first}" not in s.children(), "the oldest revision pruned")


def step_blue_green_switch(s: Scenario) -> None:
    """The move to BlueGreen (blue takes over from the one Deployment), then a preview in green
    switched by auto-promotion, the old colors deleted after a delay of 0."""
    s.patch({"spec": {"rollout": {"strategy": "BlueGreen", "blueGreen": {"scaleDownDelaySeconds": 0}}}})
    moved = s.wait(lambda: (o := s.obj()).get("status", {}).get("activeColor") == "blue"
                   and f"Deployment/{EXAMPLE_NAME}" not in s.children() and o, "the move to blue")
    s.revisions.append(moved["status"]["stableRevision"])
    s.new_revision(0.9)
    obj = s.wait(lambda: (o := s.healthy()) and o["status"].get("activeColor") == "green" and o, "the switch to green")
    s.wait(lambda: f"Deployment/{EXAMPLE_NAME}-blue" not in s.children(), "blue deleted after the switch")
    assert obj["status"]["colorRevisions"] == {"green": obj["status"]["stableRevision"]}


def step_a_hand_deleted_child_comes_back(s: Scenario) -> None:
    core = k8s.CoreV1Api(s.cluster.api_client)
    old = core.read_namespaced_service(EXAMPLE_NAME, s.namespace).metadata.uid
    core.delete_namespaced_service(EXAMPLE_NAME, s.namespace)
    s.wait(lambda: core.read_namespaced_service(EXAMPLE_NAME, s.namespace).metadata.uid != old, "the Service back")


def step_deleted_resource_goes_with_its_finalizer(s: Scenario) -> None:
    s.cluster.kubectl("delete", "dspydeployment", EXAMPLE_NAME, "-n", s.namespace, "--wait=false")

    def gone() -> bool:
        try:
            s.obj()
        except ApiException as error:
            return error.status == 404
        return False

    s.wait(gone, "the operator to let the deleted resource go")


STEPS: list[tuple[str, Callable[[Scenario], None]]] = [
    ("an example reconciles", step_example_reconciles),
    ("a conflicting status write is retaken", step_a_conflicting_status_write_is_retaken),
    ("autoscaling on", step_autoscaling_on),
    ("features off prune their children", step_features_off_prune_their_children),
    ("old revisions are pruned", step_old_revisions_are_pruned),
    ("a blue/green switch", step_blue_green_switch),
    ("a hand-deleted child comes back", step_a_hand_deleted_child_comes_back),
    ("a deleted resource goes with its finalizer", step_deleted_resource_goes_with_its_finalizer),
]


def run_steps(scenario: Scenario) -> list[str]:
    done = []
    for name, step in STEPS:
        step(scenario)
        done.append(name)
    return done


def cluster_role_rules(cluster: Any, name: str) -> list[dict[str, Any]]:
    rules = live(cluster, "clusterrole", name)["rules"]
    return [{key: value for key, value in rule.items() if value} for rule in rules]


def set_cluster_role_rules(cluster: Any, name: str, rules: list[dict[str, Any]]) -> None:
    rbac = k8s.RbacAuthorizationV1Api(cluster.api_client)
    role = rbac.read_cluster_role(name)
    role.rules = [k8s.V1PolicyRule(api_groups=rule["apiGroups"], resources=rule["resources"], verbs=rule["verbs"],
                                   resource_names=rule.get("resourceNames")) for rule in rules]
    rbac.replace_cluster_role(name, role)


# --- install -----------------------------------------------------------------------------


def test_install_puts_a_restricted_operator_and_its_grants_in_place(cluster, helm, release):
    status = json.loads(helm.run("status", release.name, "-n", release.namespace, "-o", "json").stdout)
    assert status["info"]["status"] == "deployed" and status["version"] == 1
    notes = helm.run("get", "notes", release.name, "-n", release.namespace).stdout
    assert f"kubectl -n {release.namespace} rollout status deployment/{release.fullname}" in notes
    assert "kubectl apply --server-side --force-conflicts -f crds/dspy.dev_dspydeployments.yaml" in notes
    # The namespace enforces "restricted": a pod exists and is Ready only if its spec complies.
    pods = k8s.CoreV1Api(cluster.api_client).list_namespaced_pod(
        release.namespace, label_selector="app.kubernetes.io/component=operator").items
    assert len(pods) == 1 and pods[0].spec.service_account_name == release.fullname
    assert live(cluster, "deployment", release.fullname, release.namespace)["status"]["readyReplicas"] == 1
    rendered = {(doc["kind"], doc["metadata"]["name"]): doc
                for doc in helm.template(release.name, release.namespace, "--set", "operator.verbose=true")}
    assert cluster_role_rules(cluster, release.fullname) == rendered["ClusterRole", release.fullname]["rules"]
    binding = live(cluster, "clusterrolebinding", release.fullname)
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": release.fullname,
                                    "namespace": release.namespace}]
    assert not exists(cluster, "serviceaccount", HOOK, release.namespace), "the hook's account exists only at uninstall"


# --- the operator as the chart's ServiceAccount ----------------------------------------------


def test_the_operator_as_the_chart_service_account_gets_through_the_scenario_without_a_403(
        cluster, release, run_as, app_namespaces):
    with operator_of(run_as, cluster, release) as operator:
        scenario = Scenario(cluster, operator.relay, app_namespaces())
        done = run_steps(scenario)
        assert done == [name for name, _ in STEPS]
        exchanges = operator.relay.since()
        assert refusals(operator.relay, [scenario.namespace]) == []
    granted = grants(cluster_role_rules(cluster, release.fullname))
    used = authorized(exchanges)
    assert granted - used == set(), f"granted but never used by the scenario: {sorted(granted - used)}"
    assert used <= granted, f"used without a grant (allowed by another role?): {sorted(used - granted)}"


def test_canary_rollout_as_the_chart_service_account(
        cluster, release, run_as, app_namespaces, wait_until, redis_server, fake_lm, runtimes):
    from resources import Traffic, canary, kubectl_dspy, patch_spec, redis_secret, status

    namespace = app_namespaces()
    with operator_of(run_as, cluster, release) as operator:
        # A manual pause (ended by `kubectl dspy promote`, through the request annotation), then a
        # timed one that ends only after an analysis interval passed (the pods' figures in Redis).
        steps = [{"setWeight": 50}, {"pause": {}}, {"setWeight": 80}, {"pause": {"seconds": 5}}]
        analysis = {"intervalSeconds": 5, "minRequests": 5, "maxErrorRate": 0.2}
        apply_yaml(cluster, namespace, [api_key_secret(), redis_secret(redis_server.url),
                                        canary(fake_lm, steps, analysis)])
        first = wait_until(lambda: (s := status(cluster, namespace)).get("phase") == "Healthy" and s, "Healthy")
        stable = first["stableRevision"]
        pods = runtimes(namespace, "qa", 1)
        with Traffic(pods).running():
            patch_spec(cluster, namespace, "qa", {"program": {"signature": "question -> answer",
                                                              "module": "ChainOfThought"}})
            at_50 = wait_until(lambda: (s := status(cluster, namespace)).get("canaryWeight") == 50 and s, "weight 50")
            new = at_50["canaryRevision"]
            assert new and new != stable
            kubectl_dspy(cluster, namespace, "promote", "qa")
            wait_until(lambda: status(cluster, namespace).get("canaryWeight") == 80, "weight 80")
            done = wait_until(lambda: (s := status(cluster, namespace)).get("stableRevision") == new and s,
                              "the canary promoted", timeout=TIMEOUT)
        assert done["canaryRevision"] == "" and done["routing"]["weights"] == {new: 100}
        assert done["lastAnalysis"]["verdict"] == "Pass"
        refused = refusals(operator.relay, [namespace])
        granted = grants(cluster_role_rules(cluster, release.fullname))
        used = authorized(operator.relay.since())
    assert refused == [], "\n".join(str(e) for e in refused)
    assert used <= granted, sorted(used - granted)


def test_the_chart_grants_exactly_the_verbs_the_removal_tests_cover(cluster, release):
    assert grants(cluster_role_rules(cluster, release.fullname)) == set(OPERATOR_GRANTS)


@pytest.mark.parametrize("grant", OPERATOR_GRANTS, ids=[grant_id(grant) for grant in OPERATOR_GRANTS])
def test_without_this_grant_the_operator_is_refused(cluster, release, run_as, app_namespaces, grant):
    """No rule is superfluous: with one verb of one resource taken away, the scenario meets a
    403 for exactly that verb and resource (and no other)."""
    verb, group, resource = grant
    full = cluster_role_rules(cluster, release.fullname)
    set_cluster_role_rules(cluster, release.fullname, without(full, verb, group, resource))
    try:
        with operator_of(run_as, cluster, release) as operator:
            scenario = Scenario(cluster, operator.relay, app_namespaces(), expect=(verb, group, resource))
            with pytest.raises(Refused):
                run_steps(scenario)
            others = [e for e in refusals(operator.relay, [scenario.namespace]) if e.refused != (verb, resource, group)]
            assert others == [], "\n".join(str(e) for e in others)
    finally:
        set_cluster_role_rules(cluster, release.fullname, full)


# --- namespaced mode ---------------------------------------------------------------------


def test_namespaced_mode_serves_only_its_namespaces_with_roles_only(
        cluster, helm, run_as, app_namespaces, wait_until):
    watched = [app_namespaces(), app_namespaces()]
    other = app_namespaces()
    namespaced = install(cluster, helm, "dspy-ns", "--set", f"watchNamespaces={{{','.join(watched)}}}")
    try:
        for namespace in watched:
            role = live(cluster, "role", namespaced.fullname, namespace)
            assert grants(role["rules"]) == set(OPERATOR_GRANTS), namespace
        assert not exists(cluster, "clusterrole", namespaced.fullname)
        assert not exists(cluster, "clusterrolebinding", namespaced.fullname)
        # A resource in a namespace it does not serve comes first; it must stay untouched.
        apply_yaml(cluster, other, [api_key_secret(), resource_named("ignored")])
        with operator_of(run_as, cluster, namespaced) as operator:
            scenario = Scenario(cluster, operator.relay, watched[0])
            step_example_reconciles(scenario)
            apply_yaml(cluster, watched[1], [api_key_secret(), resource_named("second")])
            wait_until(lambda: (get_dspy(cluster, watched[1], "second").get("status") or {}).get("phase") == "Healthy",
                       "the second namespace's resource Healthy")
            exchanges = operator.relay.since()
            uninstall_with_the_hook(cluster, namespaced, run_as, [(watched[0], EXAMPLE_NAME), (watched[1], "second")])
        untouched = get_dspy(cluster, other, "ignored")
        assert not untouched.get("status") and not untouched["metadata"].get("finalizers"), untouched
        assert refusals(operator.relay, watched) == []
        scoped = [e for e in exchanges if authorized([e])]
        outside = [str(e) for e in scoped if not any(f"/namespaces/{ns}/" in e.path for ns in watched)]
        assert outside == [], "a request outside the watched namespaces:\n" + "\n".join(outside)
    finally:
        remove(cluster, namespaced)


def resource_named(name: str) -> dict[str, Any]:
    """The smallest resource (examples/01's shape), against the fake LM address of the e2e suite."""
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "DSPyDeployment", "metadata": {"name": name},
            "spec": {"program": {"signature": "question -> answer"},
                     "lm": {"model": "openai/fake-model", "apiBase": "http://fake-lm:18080/v1",
                            "apiKeySecretRef": {"name": "openai"}},
                     "runtime": {"image": "example.invalid/dspy-runtime:e2e"}}}


# --- upgrade, rollback, the CRD upgrade path ---------------------------------------------------


def operator_env(cluster: Any, release: Release) -> dict[str, str]:
    deployment = live(cluster, "deployment", release.fullname, release.namespace)
    return {entry["name"]: entry.get("value", "") for entry in container_of(deployment)["env"]}


def test_upgrade_to_changed_values_then_rollback(cluster, helm, release, run_as, app_namespaces, wait_until):
    image = "example.com/dspy-runtime:e2e-upgrade"
    helm.run("upgrade", release.name, str(CHART), "-n", release.namespace, "--reuse-values", "--wait",
             "--set", f"operator.runtimeImage={image}", "--set", "resources.limits.memory=768Mi")
    assert operator_env(cluster, release)["DSPY_OPERATOR_RUNTIME_IMAGE"] == image
    deployment = live(cluster, "deployment", release.fullname, release.namespace)
    assert container_of(deployment)["resources"]["limits"]["memory"] == "768Mi"
    # The upgraded operator acts on the new value: a resource that pins no image gets it.
    namespace = app_namespaces()
    with operator_of(run_as, cluster, release):
        unpinned = resource_named("unpinned")
        del unpinned["spec"]["runtime"]
        apply_yaml(cluster, namespace, [api_key_secret(), unpinned])
        wait_until(lambda: container_of(live(cluster, "deployment", "unpinned", namespace))["image"] == image,
                   "the runtime Deployment with the upgraded default image")
        cluster.kubectl("delete", "dspydeployment", "unpinned", "-n", namespace, "--wait=true", "--timeout=60s")

    helm.run("rollback", release.name, "1", "-n", release.namespace, "--wait")
    assert "DSPY_OPERATOR_RUNTIME_IMAGE" not in operator_env(cluster, release)
    deployment = live(cluster, "deployment", release.fullname, release.namespace)
    assert container_of(deployment)["resources"]["limits"]["memory"] == "512Mi"
    history = json.loads(helm.run("history", release.name, "-n", release.namespace, "-o", "json").stdout)
    assert [(entry["revision"], entry["status"]) for entry in history] == [
        (1, "superseded"), (2, "superseded"), (3, "deployed")]
    assert "Rollback to 1" in history[-1]["description"]


def test_the_documented_crd_upgrade_command_changes_and_reverts_the_installed_crd(cluster, release, tmp_path):
    """Helm never upgrades crds/: the README's `kubectl apply --server-side --force-conflicts -f`
    takes the new file over the CRD Helm installed (fields Helm owns included), and back."""
    crd = yaml.safe_load(CRD_PATH.read_text())
    changed = copy.deepcopy(crd)
    served = next(v for v in changed["spec"]["versions"] if v["name"] == VERSION)
    served["additionalPrinterColumns"].append({"name": "E2E", "type": "string", "jsonPath": ".spec.lm.model"})
    newer = tmp_path / "newer-crd.yaml"
    newer.write_text(yaml.safe_dump(changed))

    def columns() -> list[str]:
        live_crd = live(cluster, "crd", f"{PLURAL}.{GROUP}")
        version = next(v for v in live_crd["spec"]["versions"] if v["name"] == VERSION)
        return [column["name"] for column in version.get("additionalPrinterColumns") or []]

    try:
        cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(newer))
        assert "E2E" in columns()
    finally:
        cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD_PATH))
    assert "E2E" not in columns()
    cluster.wait_established(f"{PLURAL}.{GROUP}")


# --- uninstall ---------------------------------------------------------------------------


def hook_objects(helm: Helm, release: Release, *values: str) -> list[dict[str, Any]]:
    """The hook's ServiceAccount and grants as the chart renders them (its Job aside)."""
    docs = helm.template(release.name, release.namespace, "--show-only", "templates/uninstall-hook.yaml", *values)
    return [doc for doc in docs if doc["kind"] != "Job"]


def hook_job(helm: Helm, release: Release, *values: str) -> dict[str, Any]:
    docs = helm.template(release.name, release.namespace, "--show-only", "templates/uninstall-hook.yaml", *values)
    return next(doc for doc in docs if doc["kind"] == "Job")


def run_hook(run_as: Callable[..., Any], job: dict[str, Any], namespace: str) -> tuple[int, str, AuditRelay]:
    """The hook Job's container run here as the hook's ServiceAccount, to its end."""
    account = job["spec"]["template"]["spec"]["serviceAccountName"]
    with run_as(job, account, namespace) as running:
        code = running.standin.wait(timeout=TIMEOUT + 60)
        return code, running.standin.logs(), running.relay


def uninstall_with_the_hook(cluster: Any, release: Release, run_as: Callable[..., Any],
                            resources: list[tuple[str, str]]) -> None:
    """`helm uninstall` as a user runs it. Its pre-delete hook Job's pod runs nothing here: it is
    held Pending (a node selector no node matches) while its container runs on this machine as the
    hook's ServiceAccount; then a node gets the label, kwok completes the pod, helm goes on."""
    assert all(owned_children(cluster, namespace, name) for namespace, name in resources), "children to remove"
    uninstall = release.helm.start("uninstall", release.name, "-n", release.namespace, "--wait", "--timeout", "5m")
    node = None
    try:
        deadline = time.monotonic() + TIMEOUT
        while not exists(cluster, "job", f"{release.fullname}-uninstall", release.namespace):
            assert uninstall.poll() is None, uninstall.communicate()[0]
            assert time.monotonic() < deadline, "helm never created the hook Job"
            time.sleep(0.25)
        job = live(cluster, "job", f"{release.fullname}-uninstall", release.namespace)
        pods = k8s.CoreV1Api(cluster.api_client).list_namespaced_pod(
            release.namespace, label_selector="app.kubernetes.io/component=uninstall").items
        assert [pod.status.phase for pod in pods] == ["Pending"], "admitted (restricted) and held"
        code, output, relay = run_hook(run_as, job, release.namespace)
        assert code == 0, output
        assert relay.forbidden() == [], "\n".join(str(e) for e in relay.forbidden())
        for namespace, name in resources:
            assert f"deleting DSPyDeployment {namespace}/{name}" in output
        node = k8s.CoreV1Api(cluster.api_client).list_node(label_selector="type=kwok").items[0].metadata.name
        cluster.kubectl("label", "node", node, f"{HOOK_NODE_LABEL}=run", "--overwrite")
        out, _ = uninstall.communicate(timeout=360)
        assert uninstall.returncode == 0, out
    finally:
        if uninstall.poll() is None:
            uninstall.kill()
            uninstall.wait()
        if node is not None:
            cluster.kubectl("label", "node", node, f"{HOOK_NODE_LABEL}-")
    for namespace, name in resources:
        with pytest.raises(ApiException) as gone:
            get_dspy(cluster, namespace, name)
        assert gone.value.status == 404
    deadline = time.monotonic() + TIMEOUT
    while any(owned_children(cluster, namespace, name) for namespace, name in resources):
        assert time.monotonic() < deadline, "children left after the uninstall"
        time.sleep(0.5)


def test_the_uninstall_hook_needs_each_of_its_grants_and_refuses_without_an_operator(
        cluster, helm, release, run_as, app_namespaces, wait_until):
    namespace = app_namespaces()
    apply_yaml(cluster, namespace, [api_key_secret(), resource_named("kept")])
    objects = hook_objects(helm, release)
    job = hook_job(helm, release)
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(objects))
    try:
        assert grants(live(cluster, "clusterrole", HOOK)["rules"]) | grants(
            live(cluster, "role", f"{HOOK}-check", release.namespace)["rules"]) == set(HOOK_GRANTS)
        for verb, group, resource in HOOK_GRANTS:
            kind, name, ns = (("role", f"{HOOK}-check", release.namespace) if resource == "deployments"
                              else ("clusterrole", HOOK, None))
            full = live(cluster, kind, name, ns)
            reduced = {**full, "rules": without(full["rules"], verb, group, resource)}
            reduced["metadata"] = {k: v for k, v in full["metadata"].items() if k in ("name", "namespace", "labels")}
            cluster.kubectl("replace", "-f", "-", input=json.dumps(reduced))
            try:
                code, output, relay = run_hook(run_as, job, release.namespace)
            finally:
                cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(objects))
            assert code != 0, output
            assert relay.refused(verb, resource, group), (verb, resource, output)
            assert get_dspy(cluster, namespace, "kept"), "nothing was deleted"

        # No operator replica: the hook refuses and deletes nothing.
        cluster.kubectl("scale", "deployment", release.fullname, "-n", release.namespace, "--replicas=0")
        wait_until(lambda: not live(cluster, "deployment", release.fullname, release.namespace)["status"].get(
            "availableReplicas"), "no available operator replica")
        code, output, relay = run_hook(run_as, job, release.namespace)
        assert code == 1 and relay.forbidden() == []
        assert f"the operator Deployment {release.namespace}/{release.fullname} has no available replica" in output
        assert get_dspy(cluster, namespace, "kept")["metadata"].get("deletionTimestamp") is None
    finally:
        cluster.kubectl("scale", "deployment", release.fullname, "-n", release.namespace, "--replicas=1")
        cluster.kubectl("delete", "-f", "-", "--ignore-not-found", input=yaml.safe_dump_all(objects))
    wait_until(lambda: live(cluster, "deployment", release.fullname, release.namespace)["status"].get(
        "availableReplicas") == 1, "the operator replica back")


def test_uninstall_deletes_the_resources_first_and_leaves_nothing_stuck(
        cluster, release, run_as, app_namespaces, wait_until):
    first, second = app_namespaces(), app_namespaces()
    with operator_of(run_as, cluster, release) as operator:
        scenario = Scenario(cluster, operator.relay, first)
        step_example_reconciles(scenario)
        apply_yaml(cluster, second, [api_key_secret(), resource_named("qa")])
        wait_until(lambda: (get_dspy(cluster, second, "qa").get("status") or {}).get("phase") == "Healthy",
                   "the second resource Healthy")
        assert get_dspy(cluster, second, "qa")["metadata"]["finalizers"] == ["dspy.dev/finalizer"]
        uninstall_with_the_hook(cluster, release, run_as, [(first, EXAMPLE_NAME), (second, "qa")])
        assert refusals(operator.relay, [first, second]) == []
    for kind, name, namespace in [("deployment", release.fullname, release.namespace),
                                  ("serviceaccount", release.fullname, release.namespace),
                                  ("clusterrole", release.fullname, None),
                                  ("clusterrolebinding", release.fullname, None),
                                  ("job", HOOK, release.namespace), ("serviceaccount", HOOK, release.namespace),
                                  ("clusterrole", HOOK, None), ("clusterrolebinding", HOOK, None),
                                  ("role", f"{HOOK}-check", release.namespace)]:
        assert not exists(cluster, kind, name, namespace), f"{kind}/{name} left behind"
    assert release.helm.run("status", release.name, "-n", release.namespace, check=False).returncode != 0
    assert exists(cluster, "crd", f"{PLURAL}.{GROUP}"), "Helm keeps the CRD"
    # Nothing holds the namespaces: they go away (no DSPyDeployment stuck on a finalizer).
    core = k8s.CoreV1Api(cluster.api_client)
    for namespace in (first, second, release.namespace):
        core.delete_namespace(namespace)

    def all_gone() -> bool:
        names = {ns.metadata.name for ns in core.list_namespace().items}
        return not names & {first, second, release.namespace}

    wait_until(all_gone, "the namespaces to be deleted", timeout=TIMEOUT)

