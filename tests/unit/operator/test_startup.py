"""Startup: the kopf settings the chart's RBAC relies on, and the CRD check that replaces kopf's CRD watch."""

from __future__ import annotations

import logging
from typing import Any

import kopf
import pytest

from dspy_operator.errors import KubeApiError
from dspy_operator.handlers import startup
from dspy_operator.kube import KubeClient

LOGGER = logging.getLogger("test")


class FakeKube:
    """Stands in for KubeClient: discovery answers only."""

    def __init__(self, served: frozenset[str]) -> None:
        self.served = served
        self.asked: list[str] = []

    def served_resources(self, api_version: str) -> frozenset[str]:
        self.asked.append(api_version)
        return self.served

    def get(self, kind: str, namespace: str, name: str) -> None:
        raise AssertionError("startup reads no object")


def configure(monkeypatch: pytest.MonkeyPatch, kube: FakeKube) -> kopf.OperatorSettings:
    monkeypatch.setattr(startup, "load_api_client", lambda: None)
    monkeypatch.setattr(startup, "KubeClient", lambda _client, _metrics=None: kube)
    monkeypatch.setenv("DSPY_OPERATOR_METRICS_PORT", "0")  # no exporter: test_metrics serves one
    settings = kopf.OperatorSettings()
    startup.configure(settings=settings, memo=kopf.Memo(), logger=LOGGER)
    return settings


def test_startup_turns_off_kopfs_cluster_wide_crd_and_namespace_watches(monkeypatch):
    """With scanning on, kopf watches CRDs (and, per namespace, lists Namespaces) cluster-wide:
    requests the chart's least-privilege RBAC does not allow, least of all in namespaced mode."""
    kube = FakeKube(frozenset({"dspydeployments", "dspydeployments/status", "dspydeployments/scale"}))
    settings = configure(monkeypatch, kube)
    assert settings.scanning.disabled is True
    assert kube.asked == ["dspy.dev/v1alpha1"]
    assert settings.watching.label_selectors[("v1", "secrets")] == "app.kubernetes.io/managed-by=dspy-operator"


def test_startup_waits_for_the_crd_with_a_message_that_says_how_to_install_it(monkeypatch):
    with pytest.raises(kopf.TemporaryError) as raised:
        configure(monkeypatch, FakeKube(frozenset()))
    assert "install the CRD first" in str(raised.value)
    assert "crds/dspy.dev_dspydeployments.yaml" in str(raised.value)
    assert raised.value.delay == startup.CRD_RETRY_SECONDS


class Discovery(KubeClient):
    """A KubeClient whose only answer is one canned discovery document (or error)."""

    def __init__(self, answer: dict[str, Any] | KubeApiError) -> None:
        super().__init__(None)  # type: ignore[arg-type]
        self.answer = answer
        self.paths: list[str] = []

    def _call(self, method: str, path: str, **_: Any) -> dict[str, Any]:
        self.paths.append(f"{method} {path}")
        if isinstance(self.answer, KubeApiError):
            raise self.answer
        return self.answer


def test_served_resources_reads_the_group_versions_discovery_document():
    kube = Discovery({"kind": "APIResourceList", "resources": [{"name": "dspydeployments"},
                                                                {"name": "dspydeployments/status"}]})
    assert kube.served_resources("dspy.dev/v1alpha1") == {"dspydeployments", "dspydeployments/status"}
    assert kube.paths == ["GET /apis/dspy.dev/v1alpha1"]
    assert Discovery({"resources": []}).served_resources("v1") == frozenset()


def test_served_resources_is_empty_for_an_unserved_group_and_raises_on_other_errors():
    assert Discovery(KubeApiError(404, "Not Found", "")).served_resources("dspy.dev/v1alpha1") == frozenset()
    with pytest.raises(KubeApiError):
        Discovery(KubeApiError(503, "Service Unavailable", "")).served_resources("dspy.dev/v1alpha1")
