"""`python -m dspy_operator.uninstall`: what the Helm chart's pre-delete hook runs.

kopf keeps a finalizer (`dspy.dev/finalizer`) on every DSPyDeployment while the operator
serves it (its timers need one). Once the operator is gone nobody removes it: a
DSPyDeployment deleted after that stays Terminating for ever, and so does its namespace.
So before `helm uninstall` removes the operator, this command, while the operator still runs:

1. lists the DSPyDeployments the operator serves (its namespaces, or all); none: done;
2. refuses when the operator's Deployment has no available replica: deleting now would
   leave every one of them stuck (exit 1, nothing deleted, the message says what to do);
3. deletes them (their children go by garbage collection) and waits until the operator
   has let every one go, or until `--timeout`, then names the ones left and their
   finalizers (exit 1: the hook fails, `helm uninstall` stops and keeps the release, so
   nothing is left half-removed; rerun it once the operator runs).

The namespaces come from `DSPY_OPERATOR_NAMESPACES`, as for the operator itself.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TextIO

from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from dspy_operator import api
from dspy_operator.kube import load_api_client
from dspy_operator.settings import OperatorSettings

DEFAULT_TIMEOUT_SECONDS = 300.0
POLL_SECONDS = 1.0
FINALIZER = f"{api.GROUP}/finalizer"


class Cluster(Protocol):
    """The three calls the command makes (a fake stands in for it in the unit tests)."""

    def list(self, namespaces: Sequence[str]) -> list[Mapping[str, Any]]:
        """The DSPyDeployments of these namespaces (all namespaces when empty)."""

    def delete(self, namespace: str, name: str) -> None:
        """Delete one (already gone is fine)."""

    def available_replicas(self, namespace: str, name: str) -> int | None:
        """The operator Deployment's available replicas; None when it does not exist."""


@dataclass(frozen=True, slots=True)
class Options:
    namespaces: tuple[str, ...]
    operator: tuple[str, str] | None
    """The operator's Deployment (namespace, name), checked before anything is deleted."""
    timeout: float = DEFAULT_TIMEOUT_SECONDS
    interval: float = POLL_SECONDS


def run(cluster: Cluster, options: Options, out: TextIO = sys.stdout,
        clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep) -> int:
    """The hook's work; returns the exit code (0: none left)."""
    scope = ", ".join(options.namespaces) if options.namespaces else "all namespaces"
    found = cluster.list(options.namespaces)
    if not found:
        print(f"no DSPyDeployment in {scope}: nothing to delete", file=out)
        return 0
    if options.operator is not None:
        namespace, name = options.operator
        available = cluster.available_replicas(namespace, name)
        if not available:
            state = "does not exist" if available is None else "has no available replica"
            print(f"refusing to delete {len(found)} DSPyDeployment(s) in {scope}: the operator Deployment "
                  f"{namespace}/{name} {state}, and without it every one would stay Terminating on its "
                  f"finalizer {FINALIZER}. Start the operator (kubectl -n {namespace} scale deployment {name} "
                  f"--replicas 1) and run helm uninstall again; or keep the resources with "
                  f"helm uninstall --no-hooks (then delete them while an operator runs).", file=out)
            return 1
    for obj in found:
        metadata = obj["metadata"]
        print(f"deleting DSPyDeployment {metadata['namespace']}/{metadata['name']}", file=out)
        cluster.delete(metadata["namespace"], metadata["name"])
    deadline = clock() + options.timeout
    while True:
        left = cluster.list(options.namespaces)
        if not left:
            print(f"all {len(found)} DSPyDeployment(s) in {scope} are gone", file=out)
            return 0
        if clock() >= deadline:
            break
        sleep(options.interval)
    print(f"timed out after {options.timeout:.0f}s: {len(left)} DSPyDeployment(s) still there "
          "(is the operator running and healthy? see its log):", file=out)
    for obj in left:
        metadata = obj["metadata"]
        finalizers = ", ".join(metadata.get("finalizers") or []) or "none"
        print(f"  {metadata['namespace']}/{metadata['name']} (finalizers: {finalizers})", file=out)
    print("helm uninstall stops here and keeps the release; once the operator runs, run it again. "
          f"Last resort, which skips the operator's cleanup: kubectl -n <namespace> patch dspydeployment "
          "<name> --type=merge -p '{\"metadata\":{\"finalizers\":null}}'", file=out)
    return 1


class KubeCluster:
    """`Cluster` over the official client."""

    def __init__(self, api_client: k8s.ApiClient) -> None:
        self._custom = k8s.CustomObjectsApi(api_client)
        self._apps = k8s.AppsV1Api(api_client)

    def list(self, namespaces: Sequence[str]) -> list[Mapping[str, Any]]:
        if not namespaces:
            return list(self._custom.list_cluster_custom_object(api.GROUP, api.VERSION, api.PLURAL)["items"])
        return [item for namespace in namespaces for item in
                self._custom.list_namespaced_custom_object(api.GROUP, api.VERSION, namespace, api.PLURAL)["items"]]

    def delete(self, namespace: str, name: str) -> None:
        try:
            self._custom.delete_namespaced_custom_object(api.GROUP, api.VERSION, namespace, api.PLURAL, name,
                                                         propagation_policy="Background")
        except ApiException as error:
            if error.status != 404:
                raise

    def available_replicas(self, namespace: str, name: str) -> int | None:
        try:
            deployment = self._apps.read_namespaced_deployment(name, namespace)
        except ApiException as error:
            if error.status == 404:
                return None
            raise
        return int((deployment.status and deployment.status.available_replicas) or 0)


def parse(argv: Sequence[str] | None, environ: Mapping[str, str]) -> Options:
    parser = argparse.ArgumentParser(prog="python -m dspy_operator.uninstall",
                                     description="Delete every DSPyDeployment the operator serves and wait until "
                                                 "the operator has let them go (the Helm chart's pre-delete hook).")
    parser.add_argument("--operator-deployment", metavar="NAMESPACE/NAME",
                        help="the operator's Deployment: nothing is deleted unless it has an available replica")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_SECONDS,
                        help="seconds to wait for the deletions (default %(default)s)")
    args = parser.parse_args(argv)
    operator = None
    if args.operator_deployment:
        namespace, slash, name = args.operator_deployment.partition("/")
        if not (slash and namespace and name):
            parser.error("--operator-deployment must be NAMESPACE/NAME")
        operator = (namespace, name)
    return Options(namespaces=OperatorSettings.from_env(environ).namespaces, operator=operator, timeout=args.timeout)


def main(argv: Sequence[str] | None = None) -> None:
    options = parse(argv, os.environ)
    with load_api_client() as api_client:
        code = run(KubeCluster(api_client), options)
    sys.stdout.flush()
    sys.exit(code)


if __name__ == "__main__":
    main()
