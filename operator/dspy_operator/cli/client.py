"""The plugin's only door to the cluster: get, annotate and watch one DSPyDeployment, read a
Secret key and call a runtime Service through the API server's service proxy.

`DSPyApi` is the protocol the verbs use, so tests pass a fake and no verb knows about
HTTP. `KubeDSPyApi` implements it over the official client's `CustomObjectsApi`, loaded
from a kubeconfig like kubectl (`--kubeconfig`, `KUBECONFIG`, `~/.kube/config`; `--context`).
Every failure leaves this module as a `CliError` carrying one line for the terminal: a
missing object, a refused call, an unreachable server, a broken kubeconfig.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any, Protocol
from urllib.parse import quote

import urllib3
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes import watch as k8s_watch

from dspy_operator import api

CONNECT_TIMEOUT_SECONDS = 10.0
"""Client-side bound on reaching the API server, so an unreachable cluster fails fast."""
READ_TIMEOUT_SECONDS = 60.0
"""Client-side bound on one GET or PATCH answer."""
READ_GRACE_SECONDS = 10.0
"""A watch's read timeout beyond its server-side timeout: a connection that went silent
(e.g. a dropped VPN) ends instead of hanging the terminal."""
HTTP_GONE = 410


class CliError(Exception):
    """A failure to show as `error: <message>` with exit code 1 (never a traceback)."""


class NotFound(CliError):
    """The named DSPyDeployment does not exist (kubectl's wording)."""

    def __init__(self, namespace: str, name: str) -> None:
        super().__init__(f'dspydeployment "{name}" not found in namespace "{namespace}"')


class DSPyApi(Protocol):
    """What the verbs need from the cluster; bodies are plain dicts as the API returns them."""

    default_namespace: str
    """The namespace of the kubeconfig context, used when -n is not given."""

    def get(self, namespace: str, name: str) -> dict[str, Any]:
        """The object; raises NotFound or CliError."""
        ...

    def annotate(self, namespace: str, name: str, patch: Mapping[str, Any]) -> dict[str, Any]:
        """Merge-patch `patch` (metadata.annotations only) and return the object as written."""
        ...

    def watch(self, namespace: str, name: str, resource_version: str, timeout_seconds: int) -> Iterator[dict[str, Any]]:
        """The object after each change since `resource_version`, for at most `timeout_seconds`.
        The stream may end early (the server's choice, or history too old): callers get the
        object again and watch on."""
        ...

    def secret_value(self, namespace: str, name: str, key: str) -> str:
        """One key of a Secret, decoded; raises CliError naming the Secret and key when missing."""
        ...

    def delete_through_service(self, namespace: str, service: str, port: str, path: str,
                               query: Mapping[str, str], headers: Mapping[str, str]) -> tuple[int, dict[str, Any]]:
        """DELETE `path` on a Service through the API server's service proxy (so it works from
        outside the cluster): (HTTP status, JSON body). A body that is not JSON is `{}`."""
        ...


class KubeDSPyApi:
    """`DSPyApi` over `CustomObjectsApi` (and `CoreV1Api`'s client for Secrets and the service proxy)."""

    def __init__(self, objects: k8s.CustomObjectsApi, default_namespace: str,
                 core: k8s.CoreV1Api | None = None) -> None:
        self._objects = objects
        self._core = core
        """None only in tests of the custom-object calls; `connect` always sets it."""
        self.default_namespace = default_namespace

    @property
    def core(self) -> k8s.CoreV1Api:
        if self._core is None:
            raise CliError("no CoreV1Api client (construct with core=..., or use connect())")
        return self._core

    @classmethod
    def connect(cls, kubeconfig: str | None, context: str | None) -> KubeDSPyApi:
        """Load the kubeconfig into a private Configuration (no process-wide default is
        touched) and take the default namespace from the chosen context, as kubectl does."""
        try:
            contexts, active = k8s_config.list_kube_config_contexts(config_file=kubeconfig)
            chosen = active if context is None else next((c for c in contexts if c.get("name") == context), None)
            if chosen is None:
                raise CliError(f'context "{context}" not found in the kubeconfig')
            configuration = k8s.Configuration()
            k8s_config.load_kube_config(config_file=kubeconfig, context=context, client_configuration=configuration,
                                        persist_config=False)
        except k8s_config.ConfigException as error:
            where = kubeconfig or os.environ.get("KUBECONFIG") or "~/.kube/config"
            raise CliError(f"kubeconfig {where}: {error}") from None
        namespace = (chosen.get("context") or {}).get("namespace") or "default"
        api_client = k8s.ApiClient(configuration)
        return cls(k8s.CustomObjectsApi(api_client), namespace, k8s.CoreV1Api(api_client))

    def get(self, namespace: str, name: str) -> dict[str, Any]:
        with _translated(namespace, name):
            return self._objects.get_namespaced_custom_object(
                api.GROUP, api.VERSION, namespace, api.PLURAL, name,
                _request_timeout=(CONNECT_TIMEOUT_SECONDS, READ_TIMEOUT_SECONDS))

    def annotate(self, namespace: str, name: str, patch: Mapping[str, Any]) -> dict[str, Any]:
        with _translated(namespace, name):
            return self._objects.patch_namespaced_custom_object(
                api.GROUP, api.VERSION, namespace, api.PLURAL, name, dict(patch),
                _content_type="application/merge-patch+json", _request_timeout=(CONNECT_TIMEOUT_SECONDS, READ_TIMEOUT_SECONDS))

    def watch(self, namespace: str, name: str, resource_version: str, timeout_seconds: int) -> Iterator[dict[str, Any]]:
        stream = k8s_watch.Watch().stream(
            self._objects.list_namespaced_custom_object, api.GROUP, api.VERSION, namespace, api.PLURAL,
            field_selector=f"metadata.name={name}", resource_version=resource_version,
            timeout_seconds=max(int(timeout_seconds), 1),
            _request_timeout=(CONNECT_TIMEOUT_SECONDS, timeout_seconds + READ_GRACE_SECONDS))
        with _translated(namespace, name):
            try:
                for event in stream:
                    kind = (event or {}).get("type")  # blank keep-alive lines arrive as None
                    if kind == "DELETED":
                        raise CliError(f'dspydeployment "{name}" was deleted from namespace "{namespace}"')
                    if kind in ("ADDED", "MODIFIED"):
                        yield event["raw_object"]
            except k8s.ApiException as error:
                if error.status != HTTP_GONE:  # 410: the watch's history expired; the caller gets afresh
                    raise
            except urllib3.exceptions.ReadTimeoutError:
                return  # the connection went silent; the caller gets afresh
            finally:
                stream.close()  # a caller that found its answer stops early: release the connection now


    def secret_value(self, namespace: str, name: str, key: str) -> str:
        where = f'Secret "{name}" in namespace "{namespace}"'
        try:
            secret = self.core.read_namespaced_secret(name, namespace,
                                                       _request_timeout=(CONNECT_TIMEOUT_SECONDS, READ_TIMEOUT_SECONDS))
        except k8s.ApiException as error:
            if error.status == 404:
                raise CliError(f'Secret "{name}" not found in namespace "{namespace}"') from None
            raise _api_error(error, namespace, name) from None
        except urllib3.exceptions.HTTPError as error:
            raise CliError(f"cannot reach the API server: {_reason(error)}") from None
        value = (secret.data or {}).get(key)
        if value is None:
            raise CliError(f'{where} has no key "{key}"')
        return base64.b64decode(value).decode()

    def delete_through_service(self, namespace: str, service: str, port: str, path: str,
                               query: Mapping[str, str], headers: Mapping[str, str]) -> tuple[int, dict[str, Any]]:
        api_client = self.core.api_client
        # Spelled out rather than as path parameters, which the client percent-encodes whole: the
        # proxied path keeps its slashes and `<service>:<port>` its colon, as kubectl sends them.
        target = f"{quote(service, safe='')}:{quote(port, safe='')}"
        method, url, header_params, body, _ = api_client.param_serialize(
            method="DELETE", resource_path=f"/api/v1/namespaces/{quote(namespace, safe='')}/services/{target}/proxy{path}",
            query_params=list(query.items()), header_params={"Accept": "application/json", **headers},
            auth_settings=["BearerToken"])
        try:
            response = api_client.call_api(method, url, header_params=header_params, body=body,
                                           _request_timeout=(CONNECT_TIMEOUT_SECONDS, READ_TIMEOUT_SECONDS))
            raw = response.read()
        except k8s.ApiException as error:
            raise CliError(f"the API server refused: {error.reason or error.status}") from None
        except urllib3.exceptions.HTTPError as error:
            raise CliError(f"cannot reach the API server: {_reason(error)}") from None
        try:
            answer = json.loads(raw or b"{}")
        except ValueError:
            answer = {}
        return response.status, answer if isinstance(answer, dict) else {}


@contextmanager
def _translated(namespace: str, name: str) -> Iterator[None]:
    """Turns the client's exceptions into one-line CliErrors around one call (or one watch)."""
    try:
        yield
    except k8s.ApiException as error:
        raise _api_error(error, namespace, name) from None
    except urllib3.exceptions.HTTPError as error:
        raise CliError(f"cannot reach the API server: {_reason(error)}") from None


def _api_error(error: k8s.ApiException, namespace: str, name: str) -> CliError:
    """The API server's own message (its Status body), which already names the object and the
    permission; a 404 for the object gets kubectl's wording, a 404 for the kind says the CRD
    is missing."""
    status: dict[str, Any] = {}
    try:
        status = json.loads(error.body or "{}")
    except (TypeError, ValueError):
        pass
    if error.status == 404:
        if (status.get("details") or {}).get("name") == name or not status:
            return NotFound(namespace, name)
        return CliError(f"the API server does not serve {api.PLURAL}.{api.GROUP}/{api.VERSION}: "
                        "is the dspy-operator CRD installed?")
    message = status.get("message") or error.reason or "no message"
    return CliError(f"{message} (HTTP {error.status})")


def _reason(error: urllib3.exceptions.HTTPError) -> str:
    """urllib3 wraps the cause (refused, DNS, TLS) in a MaxRetryError; the cause is the news."""
    cause = getattr(error, "reason", None) or error
    return str(cause).splitlines()[0]
