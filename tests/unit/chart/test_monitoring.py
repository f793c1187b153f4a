"""The chart's monitoring pieces, rendered by the pinned helm: the operator's metrics Service,
and each optional object (ServiceMonitor, PodMonitor, PrometheusRule, Grafana dashboard), off by
default, on with its toggle, pointing at what the operator and the runtime pods really expose."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from dspy_operator import api
from dspy_operator.reconcile.common import Owner
from dspy_operator.reconcile.desired import runtime_deployment, runtime_pod
from dspy_operator.settings import OperatorSettings

REPO = Path(__file__).resolve().parents[3]
CHART = REPO / "charts" / "dspy-operator"
RULES = CHART / "alerts" / "dspy-operator.rules.yaml"
DASHBOARD = CHART / "dashboards" / "dspy-operator.json"
RELEASE, NAMESPACE, FULLNAME = "dspy", "dspy-system", "dspy-dspy-operator"
MONITORING_KINDS = {"ServiceMonitor", "PodMonitor", "PrometheusRule"}


@pytest.fixture(scope="module")
def helm() -> str:
    proc = subprocess.run([str(REPO / "hack" / "helm.sh"), "path"], capture_output=True, text=True, check=True)
    return proc.stdout.strip()


def render(helm: str, *sets: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    args = [arg for value in sets for arg in ("--set", value)]
    return subprocess.run([helm, "template", RELEASE, str(CHART), "--namespace", NAMESPACE, *args],
                          capture_output=True, text=True, check=check)


def objects(helm: str, *sets: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(render(helm, *sets).stdout) if doc]


def one(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    [found] = [doc for doc in docs if doc["kind"] == kind]
    return found


def operator_deployment(docs: list[dict[str, Any]]) -> dict[str, Any]:
    [found] = [doc for doc in docs if doc["kind"] == "Deployment" and doc["metadata"]["name"] == FULLNAME]
    return found


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    [found] = deployment["spec"]["template"]["spec"]["containers"]
    return found


def dashboard_config_maps(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [doc for doc in docs if doc["kind"] == "ConfigMap" and doc["metadata"]["name"].endswith("-dashboard")]


def test_by_default_no_monitoring_object_is_rendered_but_the_metrics_service_is(helm):
    docs = objects(helm)
    assert not [doc["kind"] for doc in docs if doc["kind"] in MONITORING_KINDS]
    assert not dashboard_config_maps(docs)
    service = [doc for doc in docs if doc["kind"] == "Service"]
    assert [doc["metadata"]["name"] for doc in service] == [f"{FULLNAME}-metrics"]


def test_the_metrics_service_reaches_the_port_the_operator_serves(helm):
    docs = objects(helm, "operator.metricsPort=9181")
    deployment = operator_deployment(docs)
    env = {entry["name"]: entry["value"] for entry in container(deployment)["env"]}
    assert OperatorSettings.from_env(env).metrics_port == 9181, "the chart's value is the operator's setting"
    ports = {port["name"]: port["containerPort"] for port in container(deployment)["ports"]}
    assert ports["metrics"] == 9181
    service = one(docs, "Service")
    assert service["spec"]["ports"] == [{"name": "metrics", "port": 9181, "targetPort": "metrics", "protocol": "TCP"}]
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()


def test_metrics_port_0_turns_the_exporter_and_its_service_off_and_a_service_monitor_is_refused(helm):
    docs = objects(helm, "operator.metricsPort=0")
    assert not [doc for doc in docs if doc["kind"] == "Service"]
    deployment = operator_deployment(docs)
    env = {entry["name"]: entry["value"] for entry in container(deployment)["env"]}
    assert OperatorSettings.from_env(env).metrics_port == 0
    assert "metrics" not in {port["name"] for port in container(deployment)["ports"]}
    proc = render(helm, "operator.metricsPort=0", "serviceMonitor.enabled=true", check=False)
    assert proc.returncode != 0 and "serviceMonitor.enabled needs operator.metricsPort > 0" in proc.stderr


def test_the_service_monitor_scrapes_the_metrics_service_by_its_labels_and_port_name(helm):
    docs = objects(helm, "serviceMonitor.enabled=true", "serviceMonitor.labels.release=prom",
                   "serviceMonitor.interval=15s")
    monitor, service = one(docs, "ServiceMonitor"), one(docs, "Service")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "prom", "what a Prometheus selects monitors by"
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    [endpoint] = monitor["spec"]["endpoints"]
    assert (endpoint["port"], endpoint["path"], endpoint["interval"]) == ("metrics", "/metrics", "15s")
    assert endpoint["port"] in {port["name"] for port in service["spec"]["ports"]}


def runtime_pod_template() -> dict[str, Any]:
    """The pod template the operator builds for a blue/green color: what the PodMonitor must select."""
    body = {"apiVersion": api.API_VERSION, "kind": api.KIND,
            "metadata": {"name": "qa", "namespace": "team-a", "uid": "u1", "generation": 1},
            "spec": {"program": {"signature": "question -> answer"}, "lm": {"model": "openai/gpt-4o-mini"}}}
    owner = Owner.from_body(body)
    pod = runtime_pod(owner, OperatorSettings())
    template: dict[str, Any] = runtime_deployment(owner, api.BLUE, pod, 1, "digest")["spec"]["template"]
    return template


def test_the_pod_monitor_selects_the_runtime_pods_the_operator_builds_on_their_http_port(helm):
    cluster = one(objects(helm, "podMonitor.enabled=true"), "PodMonitor")
    assert cluster["spec"]["namespaceSelector"] == {"any": True}, "cluster-wide: every namespace"
    template = runtime_pod_template()
    labels = template["metadata"]["labels"]
    selector = cluster["spec"]["selector"]["matchLabels"]
    assert selector.items() <= labels.items()
    assert selector["app.kubernetes.io/name"] == "dspy-runtime"
    [endpoint] = cluster["spec"]["podMetricsEndpoints"]
    assert (endpoint["port"], endpoint["path"]) == ("http", "/metrics")
    assert "http" in {port["name"] for c in template["spec"]["containers"] for port in c.get("ports") or []}
    # The relabelings read the pod labels the dashboard and the alerts group by (Prometheus
    # sanitizes label names: dspy.dev/color -> __meta_kubernetes_pod_label_dspy_dev_color).
    relabel = {r["targetLabel"]: r["sourceLabels"] for r in endpoint["relabelings"]}
    sanitized = {"__meta_kubernetes_pod_label_" + key.replace(".", "_").replace("/", "_"): key for key in labels}
    assert sanitized[relabel["dspy_deployment"][0]] == api.LABEL_DEPLOYMENT
    assert sanitized[relabel["color"][0]] == api.LABEL_COLOR

    namespaced = one(objects(helm, "podMonitor.enabled=true", "watchNamespaces={team-a,team-b}"), "PodMonitor")
    assert namespaced["spec"]["namespaceSelector"] == {"matchNames": ["team-a", "team-b"]}


def test_the_prometheus_rule_holds_the_plain_rules_file_as_is(helm):
    rule = one(objects(helm, "prometheusRule.enabled=true", "prometheusRule.labels.release=prom"), "PrometheusRule")
    assert rule["metadata"]["labels"]["release"] == "prom"
    assert rule["spec"] == yaml.safe_load(RULES.read_text()), "one source: the file promtool tests"
    annotations = rule["spec"]["groups"][0]["rules"][0]["annotations"]
    assert "{{ $labels.dspy_deployment }}" in annotations["summary"], "Helm left Prometheus's templates alone"


def test_the_dashboard_config_map_holds_the_dashboard_file_with_the_sidecar_label(helm):
    [config_map] = dashboard_config_maps(objects(helm, "grafanaDashboard.enabled=true"))
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert config_map["metadata"]["namespace"] == NAMESPACE
    assert json.loads(config_map["data"]["dspy-operator.json"]) == json.loads(DASHBOARD.read_text())
    [moved] = dashboard_config_maps(objects(helm, "grafanaDashboard.enabled=true", "grafanaDashboard.namespace=monitoring"))
    assert moved["metadata"]["namespace"] == "monitoring"


@pytest.mark.parametrize(("value", "message"), [
    ("operator.metricsPort=8080", "operator.metricsPort and operator.healthPort must differ"),
    ("podMonitor.interval=30 seconds", "at '/podMonitor/interval'"),
    ("operator.metricsPort=70000", "at '/operator/metricsPort'"),
    ("grafanaDashboard.namespace=Not_A_Name", "at '/grafanaDashboard/namespace'"),
    ("serviceMonitor.enable=true", "additional properties 'enable' not allowed"),
])
def test_bad_monitoring_values_are_refused_naming_the_key(helm, value, message):
    proc = render(helm, value, check=False)
    assert proc.returncode != 0 and message in proc.stderr, proc.stderr
