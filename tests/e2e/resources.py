"""Helpers every e2e module uses to talk about DSPyDeployments: names, reads, applies, waits."""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import yaml
from kubernetes import client as k8s

from dspy_runtime.fakelm import field_value

if TYPE_CHECKING:
    from servers import FakeLMServer

REPO = Path(__file__).resolve().parents[2]
CRD_PATH = REPO / "crds" / "dspy.dev_dspydeployments.yaml"
GROUP, VERSION, PLURAL = "dspy.dev", "v1alpha1", "dspydeployments"
RESYNC_SECONDS = 10  # dspy_operator.handlers.lifecycle.RESYNC_SECONDS
TIMEOUT = float(os.environ.get("E2E_TIMEOUT", "120"))



def custom(cluster: Any) -> k8s.CustomObjectsApi:
    return k8s.CustomObjectsApi(cluster.api_client)


def get_dspy(cluster: Any, namespace: str, name: str) -> dict[str, Any]:
    return custom(cluster).get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)


def condition(obj: dict[str, Any], type_: str) -> dict[str, Any]:
    return next((c for c in (obj.get("status") or {}).get("conditions") or [] if c["type"] == type_), {})


def apply_yaml(cluster: Any, namespace: str, docs: list[dict[str, Any]]) -> None:
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump_all(docs))


def api_key_secret(name: str = "openai") -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name},
            "stringData": {"api-key": "sk-dummy-for-tests"}}


def dspy_deployment(name: str = "qa", **spec: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "program": {"signature": "question -> answer", "module": "ChainOfThought"},
        "lm": {"model": "openai/fake-model", "apiBase": "http://fake-lm:18080/v1",
               "apiKeySecretRef": {"name": "openai"}},
        "replicas": 2,
        "runtime": {"image": "example.invalid/dspy-runtime:e2e"},
    }
    base.update(spec)
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "DSPyDeployment", "metadata": {"name": name}, "spec": base}


def wait_phase(cluster: Any, wait_until: Any, namespace: str, name: str, phase: str) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        obj = get_dspy(cluster, namespace, name)
        status = obj.get("status") or {}
        return obj if status.get("phase") == phase and status.get("observedGeneration") == obj["metadata"]["generation"] else None
    return wait_until(check, f"{namespace}/{name} to be {phase}", timeout=TIMEOUT)


def owned_children(cluster: Any, namespace: str, name: str) -> dict[str, dict[str, Any]]:
    """Every child kind the operator makes, by `Kind/name`, selected by the operator's labels."""
    selector = f"dspy.dev/deployment={name}"
    out = cluster.kubectl("get", "deployments,services,configmaps,secrets,poddisruptionbudgets,"
                          "horizontalpodautoscalers,networkpolicies", "-n", namespace, "-l", selector, "-o", "yaml")
    return {f"{item['kind']}/{item['metadata']['name']}": item for item in yaml.safe_load(out.stdout)["items"]}


def redis_secret(url: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "redis-url"}, "stringData": {"url": url}}


def patch_spec(cluster: Any, namespace: str, name: str, patch: dict[str, Any]) -> None:
    cluster.kubectl("patch", "dspydeployment", name, "-n", namespace, "--type=merge",
                    "-p", json.dumps({"spec": patch}))


def status(cluster: Any, namespace: str, name: str = "qa") -> dict[str, Any]:
    return get_dspy(cluster, namespace, name).get("status") or {}


def kubectl_dspy(cluster: Any, namespace: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """The plugin as a user runs it (the console script of the operator package)."""
    plugin = shutil.which("kubectl-dspy", path=str(Path(sys.executable).parent))
    assert plugin, "kubectl-dspy is not installed in the virtualenv"
    proc = subprocess.run([plugin, "--kubeconfig", str(cluster.kubeconfig), "-n", namespace, *args],
                          capture_output=True, text=True, timeout=120)
    if check and proc.returncode != 0:
        raise AssertionError(f"kubectl dspy {' '.join(args)} failed ({proc.returncode}): {proc.stderr}{proc.stdout}")
    return proc


def devset(questions: list[str]) -> dict[str, Any]:
    """A dev set whose expected answers are the fake LM's (deterministic) answers to `answer`."""
    lines = [json.dumps({"inputs": {"question": q}, "expected": {"answer": field_value("answer", "str", q)}})
             for q in questions]
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "devset"},
            "data": {"devset.jsonl": "\n".join(lines) + "\n"}}


MODEL = "openai/fake-model"


def canary(lm: FakeLMServer, steps: list[dict[str, Any]], analysis: dict[str, Any] | None = None,
           name: str = "qa", **spec: Any) -> dict[str, Any]:
    rollout: dict[str, Any] = {"strategy": "Canary", "canary": {"steps": steps}}
    if analysis is not None:
        rollout["canary"]["analysis"] = analysis
    return dspy_deployment(
        name=name,
        program={"signature": "question -> answer", "module": "Predict"},
        lm={"model": MODEL, "apiBase": lm.api_base, "apiKeySecretRef": {"name": "openai"}},
        redis={"mode": "External", "urlSecretRef": {"name": "redis-url"}},
        routing={"stickyHeader": "X-User-ID"},
        rollout=rollout,
        **spec,
    )


class Traffic:
    """Steady background requests over the runtimes, each from a random user with a fresh
    question (so the LM is called and the analysis sees real outcomes)."""

    def __init__(self, runtimes: list[Any], rate: float = 25.0) -> None:
        self.runtimes = runtimes
        self.interval = 1.0 / rate
        self.results: list[tuple[float, int, str | None]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(timeout=60) as client:
            while not self._stop.is_set():
                runtime = random.choice(self.runtimes)
                try:
                    response = client.post(f"{runtime.base}/v1/predict",
                                           json={"inputs": {"question": f"q-{uuid.uuid4().hex[:12]}"}},
                                           headers={"X-User-ID": uuid.uuid4().hex})
                    self.results.append((time.monotonic(), response.status_code, response.json().get("revision")))
                except httpx.HTTPError:
                    self.results.append((time.monotonic(), 0, None))
                self._stop.wait(self.interval)

    def since(self, moment: float) -> list[tuple[float, int, str | None]]:
        return [result for result in list(self.results) if result[0] >= moment]

    @contextmanager
    def running(self) -> Iterator[Traffic]:
        self._thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            self._thread.join(timeout=90)
