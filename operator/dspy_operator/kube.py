"""A small JSON client for the handful of kinds the operator reads and writes.

Why not the generated typed APIs: the operator works on plain dicts end to end
(builders produce dicts, server-side apply takes them as they are, drift checks
compare dicts), and a static table of the seven child kinds avoids the dynamic
client's discovery round-trips and on-disk cache. Authentication and TLS come from
the official client's `ApiClient`, configured once at startup.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from kubernetes import client as k8s
from kubernetes import config as k8s_config

from dspy_operator import api
from dspy_operator.errors import KubeApiError
from dspy_operator.metrics import OperatorMetrics

APPLY_CONTENT_TYPE = "application/apply-patch+yaml"  # JSON is valid YAML: the body goes as JSON
MERGE_CONTENT_TYPE = "application/merge-patch+json"


@dataclass(frozen=True, slots=True)
class Kind:
    """Where a kind lives in the REST API."""

    api_version: str
    kind: str
    plural: str

    def path(self, namespace: str, name: str | None = None) -> str:
        base = "/api/v1" if self.api_version == "v1" else f"/apis/{self.api_version}"
        path = f"{base}/namespaces/{namespace}/{self.plural}"
        return f"{path}/{name}" if name else path


KINDS: dict[str, Kind] = {
    kind.kind: kind
    for kind in (
        Kind("apps/v1", "Deployment", "deployments"),
        Kind("v1", "Service", "services"),
        Kind("v1", "ConfigMap", "configmaps"),
        Kind("v1", "Secret", "secrets"),
        Kind("autoscaling/v2", "HorizontalPodAutoscaler", "horizontalpodautoscalers"),
        Kind("policy/v1", "PodDisruptionBudget", "poddisruptionbudgets"),
        Kind("networking.k8s.io/v1", "NetworkPolicy", "networkpolicies"),
        Kind(api.API_VERSION, api.KIND, api.PLURAL),
    )
}


def load_api_client() -> k8s.ApiClient:
    """In a pod use the ServiceAccount; elsewhere the kubeconfig (KUBECONFIG or ~/.kube/config)."""
    configuration = k8s.Configuration()
    try:
        k8s_config.load_incluster_config(client_configuration=configuration)
    except k8s_config.ConfigException:
        k8s_config.load_kube_config(client_configuration=configuration)
    return k8s.ApiClient(configuration)


class KubeClient:
    """GET, server-side APPLY, CREATE and DELETE of plain dicts (children are observed through
    kopf's watches and indexes, never listed), and one discovery read at startup. Every request
    is counted in `dspy_operator_api_requests_total{verb,code}` when given `metrics`."""

    def __init__(self, api_client: k8s.ApiClient, metrics: OperatorMetrics | None = None) -> None:
        self._api = api_client
        self._metrics = metrics

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        """The live object, or None when it does not exist."""
        try:
            return self._call("GET", KINDS[kind].path(namespace, name), verb="get")
        except KubeApiError as error:
            if error.status == 404:
                return None
            raise

    def served_resources(self, api_version: str) -> frozenset[str]:
        """The resource names (plurals, subresources as `plural/sub`) the API serves under
        `api_version` (discovery); empty when the group/version is not served at all."""
        base = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
        try:
            listing = self._call("GET", base, verb="list")
        except KubeApiError as error:
            if error.status == 404:
                return frozenset()
            raise
        return frozenset(str(resource.get("name")) for resource in listing.get("resources") or [])

    def apply(self, obj: dict[str, Any], field_manager: str) -> dict[str, Any]:
        """Server-side apply with `force`: the operator owns every field it sets."""
        kind = KINDS[obj["kind"]]
        metadata = obj["metadata"]
        return self._call(
            "PATCH",
            kind.path(metadata["namespace"], metadata["name"]),
            verb="apply",
            query=[("fieldManager", field_manager), ("force", "true")],
            body=obj,
            content_type=APPLY_CONTENT_TYPE,
        )

    def create(self, obj: dict[str, Any], field_manager: str) -> dict[str, Any]:
        kind = KINDS[obj["kind"]]
        return self._call(
            "POST", kind.path(obj["metadata"]["namespace"]),
            query=[("fieldManager", field_manager)], body=obj, verb="create",
        )

    def patch_status(self, namespace: str, name: str, status: dict[str, Any],
                     resource_version: str | None = None) -> dict[str, Any]:
        """A merge patch of a DSPyDeployment's status (None values remove fields).

        With `resource_version`, the API server applies it only if the object is still at
        that version (409 otherwise): a decision taken from a stale body never lands."""
        body: dict[str, Any] = {"status": status}
        if resource_version is not None:
            body["metadata"] = {"resourceVersion": resource_version}
        return self._call(
            "PATCH", KINDS[api.KIND].path(namespace, name) + "/status",
            body=body, content_type=MERGE_CONTENT_TYPE, verb="patch_status",
        )

    def delete(self, kind: str, namespace: str, name: str) -> None:
        """Delete in the background; an object already gone is fine."""
        try:
            self._call("DELETE", KINDS[kind].path(namespace, name),
                       body={"propagationPolicy": "Background"}, verb="delete")
        except KubeApiError as error:
            if error.status != 404:
                raise

    def _call(
        self,
        method: str,
        path: str,
        *,
        query: list[tuple[str, str]] | None = None,
        body: dict[str, Any] | None = None,
        content_type: str = "application/json",
        verb: str,
    ) -> dict[str, Any]:
        """One request; `verb` (get, list, apply, create, delete, patch_status) labels its count."""
        method, url, headers, payload, post_params = self._api.param_serialize(
            method,
            path,
            query_params=query or [],
            header_params={"Accept": "application/json", "Content-Type": content_type},
            body=body,
            auth_settings=["BearerToken"],
        )
        code: int | None = None
        try:
            response = self._api.call_api(method, url, headers, payload, post_params)
            code = response.status
        finally:
            if self._metrics is not None:
                self._metrics.api_request(verb, code)
        data = response.read() or b"{}"
        if not 200 <= response.status <= 299:
            raise KubeApiError(response.status, str(response.reason), _server_message(data))
        return json.loads(data)


def _server_message(data: bytes) -> str:
    """The `message` of a Kubernetes Status answer, or the raw text if it is not one."""
    text = data.decode("utf-8", errors="replace")
    try:
        return str(json.loads(text).get("message") or text)
    except (ValueError, AttributeError):
        return text
