"""The plugin's only door to the cluster: get, annotate and watch one DSPyDeployment.

`DSPyApi` is the protocol the verbs use, so tests pass a fake and no verb knows about
HTTP. `KubeDSPyApi` implements it over the official client's `CustomObjectsApi`, loaded
from a kubeconfig like kubectl (`--kubeconfig`, `KUBECONFIG`, `~/.kube/config`; `--context`).
Every failure leaves this module as a `CliError` carrying one line for the terminal: a
missing object, a refused call, an unreachable server, a broken kubeconfig.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any, Protocol

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


class KubeDSPyApi:
    """`DSPyApi` over `CustomObjectsApi`."""

    def __init__(self, objects: k8s.CustomObjectsApi, default_namespace: str) -> None:
        self._objects = objects
        self.default_namespace = default_namespace

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
        return cls(k8s.CustomObjectsApi(k8s.ApiClient(configuration)), namespace)

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
