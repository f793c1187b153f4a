"""The Helm chart rendered by the pinned helm (`hack/helm.sh`, built from its Go module and cached):
what each mode grants, how the Deployment and the uninstall hook run the operator, and which bad
values the schema refuses with which message. No cluster: `helm template` and `helm package` only.

The RBAC rules are pinned here as a table; that each one is needed (the operator meets a 403
without it) and sufficient (no 403 with them) is proven on the real control plane by
`tests/e2e/test_chart.py`.
"""

from __future__ import annotations

import subprocess
import tarfile
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from dspy_operator import uninstall
from dspy_operator.handlers.startup import CHILD_RESOURCES
from dspy_operator.settings import OperatorSettings

REPO = Path(__file__).resolve().parents[3]
CHART = REPO / "charts" / "dspy-operator"
CRD = REPO / "crds" / "dspy.dev_dspydeployments.yaml"
BAD_VALUES = sorted((Path(__file__).parent / "bad-values").glob("*.yaml"))
RELEASE, NAMESPACE = "dspy", "dspy-system"
FULLNAME = "dspy-dspy-operator"

# The least-privilege contract: (apiGroup, resource) -> verbs. tests/e2e/test_chart.py removes
# each verb in turn and sees the operator meet a 403 for it.
OPERATOR_RULES = {
    ("dspy.dev", "dspydeployments"): ["get", "list", "watch", "patch"],
    ("dspy.dev", "dspydeployments/status"): ["patch"],
    ("", "events"): ["create"],
    ("", "configmaps"): ["get", "list", "watch", "create", "patch", "delete"],
    ("", "secrets"): ["get", "list", "watch", "create", "delete"],
    ("", "services"): ["list", "watch", "create", "patch", "delete"],
    ("apps", "deployments"): ["list", "watch", "create", "patch", "delete"],
    ("autoscaling", "horizontalpodautoscalers"): ["list", "watch", "create", "patch", "delete"],
    ("policy", "poddisruptionbudgets"): ["list", "watch", "create", "patch"],
    ("networking.k8s.io", "networkpolicies"): ["list", "watch", "create", "patch", "delete"],
}
HOOK_RULES = {("dspy.dev", "dspydeployments"): ["list", "delete"]}


@pytest.fixture(scope="session")
def helm() -> str:
    """The cached helm binary (built by `make helm-build`, or here on first use)."""
    proc = subprocess.run([str(REPO / "hack" / "helm.sh"), "path"], capture_output=True, text=True, check=True)
    return proc.stdout.strip()


def render(helm: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run([helm, "template", RELEASE, str(CHART), "--namespace", NAMESPACE, *args],
                          capture_output=True, text=True, check=check)


def objects(helm: str, *args: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(render(helm, *args).stdout) if doc]


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [doc for doc in docs if doc["kind"] == kind]


def one(docs: list[dict[str, Any]], kind: str, name: str, namespace: str | None = None) -> dict[str, Any]:
    [found] = [doc for doc in by_kind(docs, kind) if doc["metadata"]["name"] == name
               and doc["metadata"].get("namespace") == namespace]
    return found


def rule_table(rules: list[dict[str, Any]]) -> dict[tuple[str, str], list[str]]:
    table: dict[tuple[str, str], list[str]] = {}
    for rule in rules:
        assert set(rule) <= {"apiGroups", "resources", "verbs", "resourceNames"}, rule
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                assert (group, resource) not in table, f"{group}/{resource} granted twice"
                table[group, resource] = list(rule["verbs"])
    return table


def is_hook(doc: dict[str, Any]) -> bool:
    return "helm.sh/hook" in (doc["metadata"].get("annotations") or {})


def release_objects(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [doc for doc in docs if not is_hook(doc)]


def hook_objects(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [doc for doc in docs if is_hook(doc)]


def container(workload: dict[str, Any]) -> dict[str, Any]:
    [found] = workload["spec"]["template"]["spec"]["containers"]
    return found


def env_of(workload: dict[str, Any]) -> dict[str, str]:
    return {entry["name"]: entry["value"] for entry in container(workload).get("env") or []}


# --- the CRD -----------------------------------------------------------------------------


def test_the_chart_carries_the_crd_file_itself_not_a_copy():
    [entry] = list((CHART / "crds").iterdir())
    assert entry.is_symlink() and entry.resolve() == CRD.resolve()
    assert entry.read_bytes() == CRD.read_bytes()


def test_the_packaged_chart_carries_exactly_the_crd_files_bytes(helm, tmp_path):
    """What users install (`helm package`, a chart repository) has the file's bytes, the link resolved."""
    subprocess.run([helm, "package", str(CHART), "--destination", str(tmp_path)], capture_output=True, check=True)
    [package] = list(tmp_path.glob("dspy-operator-*.tgz"))
    with tarfile.open(package) as archive:
        crds = [member for member in archive.getmembers() if "/crds/" in member.name]
        assert [member.name for member in crds] == ["dspy-operator/crds/dspy.dev_dspydeployments.yaml"]
        assert crds[0].isfile()
        extracted = archive.extractfile(crds[0])
        assert extracted is not None and extracted.read() == CRD.read_bytes()
        assert not [m.name for m in archive.getmembers() if "/ci/" in m.name], "ci/ values stay out of the package"


def test_the_rendered_crd_is_the_file_as_is(helm):
    out = render(helm, "--include-crds").stdout
    source = "# Source: dspy-operator/crds/dspy.dev_dspydeployments.yaml\n"
    assert source in out
    rendered = out.split(source, 1)[1].split("\n---\n", 1)[0]
    assert rendered.strip() == CRD.read_text().strip()


# --- cluster-wide mode -------------------------------------------------------------------


def test_cluster_mode_grants_the_rules_through_one_cluster_role(helm):
    docs = release_objects(objects(helm, "-f", str(CHART / "ci" / "cluster-values.yaml")))
    role = one(docs, "ClusterRole", FULLNAME)
    assert rule_table(role["rules"]) == OPERATOR_RULES
    binding = one(docs, "ClusterRoleBinding", FULLNAME)
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": FULLNAME}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": FULLNAME, "namespace": NAMESPACE}]
    assert not by_kind(docs, "Role") and not by_kind(docs, "RoleBinding")
    one(docs, "ServiceAccount", FULLNAME, NAMESPACE)
    assert OperatorSettings.from_env(env_of(one(docs, "Deployment", FULLNAME, NAMESPACE))).clusterwide


def test_no_rule_grants_a_wildcard_or_a_verb_beyond_read_create_patch_delete(helm):
    for values in ("cluster-values.yaml", "namespaced-values.yaml"):
        for doc in objects(helm, "-f", str(CHART / "ci" / values)):
            for rule in doc.get("rules") or []:
                assert "*" not in rule["apiGroups"] + rule["resources"] + rule["verbs"], rule
                assert set(rule["verbs"]) <= {"get", "list", "watch", "create", "patch", "delete"}, rule


def test_every_kind_the_operator_watches_is_listable_and_watchable():
    """startup.CHILD_RESOURCES is what kopf indexes and watches: a kind added there needs its rule."""
    for group_version, plural in CHILD_RESOURCES:
        group = group_version.rpartition("/")[0]
        assert {"list", "watch"} <= set(OPERATOR_RULES[group, plural]), (group, plural)


# --- namespaced mode ---------------------------------------------------------------------


def test_namespaced_mode_has_a_role_per_namespace_and_nothing_cluster_wide(helm):
    docs = objects(helm, "-f", str(CHART / "ci" / "namespaced-values.yaml"))
    assert not by_kind(docs, "ClusterRole") and not by_kind(docs, "ClusterRoleBinding"), "hooks included"
    for namespace in ("team-a", "team-b"):
        role = one(docs, "Role", FULLNAME, namespace)
        assert rule_table(role["rules"]) == OPERATOR_RULES
        binding = one(docs, "RoleBinding", FULLNAME, namespace)
        assert binding["roleRef"]["kind"] == "Role" and binding["roleRef"]["name"] == FULLNAME
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": FULLNAME, "namespace": NAMESPACE}]
        hook_role = one(docs, "Role", f"{FULLNAME}-uninstall", namespace)
        assert rule_table(hook_role["rules"]) == HOOK_RULES
    operator = one(docs, "Deployment", FULLNAME, NAMESPACE)
    settings = OperatorSettings.from_env(env_of(operator))
    assert settings.namespaces == ("team-a", "team-b") and not settings.clusterwide


def test_namespaced_mode_leaves_the_release_namespace_ungranted_unless_listed(helm):
    docs = release_objects(objects(helm, "-f", str(CHART / "ci" / "namespaced-values.yaml")))
    assert {doc["metadata"]["namespace"] for doc in by_kind(docs, "Role")} == {"team-a", "team-b"}
    listed = release_objects(objects(helm, "--set", f"watchNamespaces={{{NAMESPACE},team-a}}"))
    assert {doc["metadata"]["namespace"] for doc in by_kind(listed, "Role")} == {NAMESPACE, "team-a"}


def test_without_rbac_create_the_operator_gets_no_grant_but_the_hook_keeps_its_own(helm):
    docs = objects(helm, "--set", "rbac.create=false")
    assert not [doc for doc in release_objects(docs) if doc["kind"] in
                ("ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding")]
    assert {doc["kind"] for doc in hook_objects(docs)} >= {"ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"}


# --- the operator Deployment -------------------------------------------------------------


@pytest.fixture(scope="module")
def operator(helm: str) -> dict[str, Any]:
    return one(objects(helm), "Deployment", FULLNAME, NAMESPACE)


def test_one_replica_replaced_by_recreate(operator):
    """The operator runs standalone (no kopf peering): never two pods at once."""
    assert operator["spec"]["replicas"] == 1
    assert operator["spec"]["strategy"] == {"type": "Recreate"}
    assert container(operator).get("args") is None, "`python -m dspy_operator` without --verbose by default"


def test_the_probes_hit_kopfs_liveness_endpoint_where_the_operator_serves_it(operator):
    main = container(operator)
    liveness = urlsplit(env_of(operator)["DSPY_OPERATOR_LIVENESS"])
    ports = {port["name"]: port["containerPort"] for port in main["ports"]}
    assert ports == {"health": liveness.port, "metrics": 8081}, "metrics: tests/unit/chart/test_monitoring.py"
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert main[probe]["httpGet"] == {"path": liveness.path, "port": "health"}, probe
    assert liveness.hostname == "0.0.0.0", "reachable by the kubelet"


def restricted(pod_spec: dict[str, Any]) -> None:
    """The Pod Security Standard "restricted" profile's requirements, field by field."""
    pod = pod_spec["securityContext"]
    assert pod["runAsNonRoot"] is True and pod["runAsUser"] != 0
    assert pod["seccompProfile"] == {"type": "RuntimeDefault"}
    for each in pod_spec["containers"]:
        security = each["securityContext"]
        assert security["allowPrivilegeEscalation"] is False
        assert security["capabilities"] == {"drop": ["ALL"]}
        assert security["readOnlyRootFilesystem"] is True
        assert not security.get("privileged")
        assert each["resources"]["requests"] and each["resources"]["limits"]["memory"]
    assert not pod_spec.get("hostNetwork") and not pod_spec.get("hostPID")


def test_the_operator_pod_is_restricted_and_has_resources(operator):
    spec = operator["spec"]["template"]["spec"]
    restricted(spec)
    assert spec["serviceAccountName"] == FULLNAME
    assert {"name": "tmp", "mountPath": "/tmp"} in container(operator)["volumeMounts"]


def test_values_reach_the_operators_settings(helm):
    docs = objects(helm, "--set", "operator.runtimeImage=example.com/runtime:2,operator.redisImage=redis:8",
                   "--set", "operator.verbose=true,operator.healthPort=9090,image.tag=1.2.3")
    deployment = one(docs, "Deployment", FULLNAME, NAMESPACE)
    settings = OperatorSettings.from_env(env_of(deployment))
    assert (settings.runtime_image, settings.redis_image) == ("example.com/runtime:2", "redis:8")
    assert container(deployment)["args"] == ["--verbose"]
    assert container(deployment)["image"] == "ghcr.io/dspy-operator/operator:1.2.3"
    assert urlsplit(env_of(deployment)["DSPY_OPERATOR_LIVENESS"]).port == 9090


# --- the uninstall hook ------------------------------------------------------------------


def test_the_pre_delete_hook_runs_the_uninstall_command_against_the_operators_deployment(helm):
    docs = objects(helm, "-f", str(CHART / "ci" / "namespaced-values.yaml"))
    job = one(docs, "Job", f"{FULLNAME}-uninstall", NAMESPACE)
    annotations = job["metadata"]["annotations"]
    assert annotations["helm.sh/hook"] == "pre-delete"
    assert annotations["helm.sh/hook-delete-policy"] == "before-hook-creation,hook-succeeded"
    main = container(job)
    assert main["command"] == ["python", "-m", "dspy_operator.uninstall"]
    assert main["image"] == container(one(docs, "Deployment", FULLNAME, NAMESPACE))["image"]
    options = uninstall.parse(main["args"], env_of(job))
    assert options.operator == (NAMESPACE, FULLNAME)
    assert options.namespaces == ("team-a", "team-b")
    assert options.timeout == 240
    assert job["spec"]["backoffLimit"] == 0 and job["spec"]["activeDeadlineSeconds"] > options.timeout
    restricted(job["spec"]["template"]["spec"])
    assert job["spec"]["template"]["spec"]["serviceAccountName"] == f"{FULLNAME}-uninstall"


def test_the_hooks_grants_exist_before_its_job_and_only_while_it_runs(helm):
    hooks = hook_objects(objects(helm))
    weights = {(doc["kind"], doc["metadata"]["name"]): int(doc["metadata"]["annotations"]["helm.sh/hook-weight"])
               for doc in hooks}
    job_weight = weights.pop(("Job", f"{FULLNAME}-uninstall"))
    assert weights and all(weight < job_weight for weight in weights.values()), weights
    assert all(doc["metadata"]["annotations"]["helm.sh/hook"] == "pre-delete" for doc in hooks)
    assert rule_table(one(hooks, "ClusterRole", f"{FULLNAME}-uninstall")["rules"]) == HOOK_RULES
    check = one(hooks, "Role", f"{FULLNAME}-uninstall-check", NAMESPACE)
    assert check["rules"] == [{"apiGroups": ["apps"], "resources": ["deployments"],
                               "resourceNames": [FULLNAME], "verbs": ["get"]}]


def test_the_hook_and_its_grants_are_gone_when_resources_are_kept(helm):
    docs = objects(helm, "--set", "uninstall.deleteResources=false")
    assert hook_objects(docs) == []
    assert not [doc for doc in docs if "uninstall" in doc["metadata"]["name"]]


def test_the_hooks_pod_can_be_placed_apart_from_the_operator(helm):
    docs = objects(helm, "--set", "nodeSelector.pool=ops,uninstall.nodeSelector.pool=hooks")
    assert one(docs, "Job", f"{FULLNAME}-uninstall", NAMESPACE)["spec"]["template"]["spec"]["nodeSelector"] == {
        "pool": "hooks"}
    defaulted = objects(helm, "--set", "nodeSelector.pool=ops")
    assert one(defaulted, "Job", f"{FULLNAME}-uninstall", NAMESPACE)["spec"]["template"]["spec"]["nodeSelector"] == {
        "pool": "ops"}


# --- bad values --------------------------------------------------------------------------


def expected_message(path: Path) -> str:
    first = path.read_text().splitlines()[0]
    assert first.startswith("# expect: "), f"{path.name} must start with '# expect: <message>'"
    return first.removeprefix("# expect: ")


@pytest.mark.parametrize("values", BAD_VALUES, ids=[path.stem for path in BAD_VALUES])
def test_bad_values_fail_with_a_message_that_names_the_key(helm, values):
    proc = render(helm, "-f", str(values), check=False)
    assert proc.returncode != 0, proc.stdout[:500]
    assert expected_message(values) in proc.stderr, proc.stderr


def test_the_good_values_files_render(helm):
    for values in sorted((CHART / "ci").glob("*-values.yaml")):
        assert objects(helm, "-f", str(values)), values.name
