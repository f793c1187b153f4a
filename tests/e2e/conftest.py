"""Fixtures for the e2e suite: a real Kubernetes control plane.

Which cluster the suite runs on is chosen by ``E2E_CLUSTER``:

- ``local`` (default): ``tests/cluster/cluster.sh up`` starts etcd, kube-apiserver,
  kube-controller-manager, kube-scheduler and kwok on 127.0.0.1 (or reuses a
  running one). The session stops it at the end only if it started it; set
  ``E2E_KEEP_CLUSTER=1`` to leave it running for debugging.
- ``existing``: whatever ``$KUBECONFIG`` points at; never stopped.
- ``kind``: the kind cluster made by ``tests/cluster/kind/up.sh``; never stopped.

When any test using the cluster fails, the tail of every control-plane log is
printed in the terminal summary.
"""

from __future__ import annotations

import base64
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# The test modules import `relay.py` (shared with bench/operator_scale.py), `resources.py` and
# `tests/servers.py` by name; pytest's importlib mode does not put these directories on
# sys.path, and conftest is loaded first.
for _directory in (Path(__file__).resolve().parent, Path(__file__).resolve().parents[1]):
    if str(_directory) not in sys.path:
        sys.path.insert(0, str(_directory))

import httpx  # noqa: E402
import pytest  # noqa: E402
import yaml  # noqa: E402
from kubernetes import client as k8s  # noqa: E402
from kubernetes import config as k8s_config  # noqa: E402

from relay import CountingRelay, relayed_proxy, start_operator, stop  # noqa: E402
from resources import CRD_PATH, GROUP, PLURAL, REPO  # noqa: E402
from servers import (  # noqa: E402
    FakeLMServer, PrometheusServer, RedisServer, free_port, running_fake_lm, running_prometheus, running_redis,
    stop_process,
)

CLUSTER_SH = REPO / "tests" / "cluster" / "cluster.sh"
STATE_DIR = Path(os.environ.get("DSPY_CLUSTER_DIR", REPO / ".cluster"))
KIND_CLUSTER_NAME = os.environ.get("KIND_CLUSTER_NAME", "dspy-operator")

# Generous: the machine has two cores and the suite never asserts on durations.
DEFAULT_TIMEOUT = float(os.environ.get("E2E_TIMEOUT", "120"))
LOG_TAIL_LINES = 60

_LOG_DIR_KEY = pytest.StashKey[Path]()
_FAILED_KEY = pytest.StashKey[bool]()


def wait_until(
    predicate: Callable[[], Any],
    what: str,
    timeout: float = DEFAULT_TIMEOUT,
    interval: float = 0.25,
) -> Any:
    """Poll ``predicate`` until it returns something truthy, and return that.

    Exceptions raised by the predicate count as "not yet" (an API that answers
    404 or 429 for a moment is normal); the last one is reported on timeout.
    """
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        try:
            result = predicate()
            if result:
                return result
        except Exception as exc:  # noqa: BLE001 - reported below on timeout
            last_error = exc
        if time.monotonic() >= deadline:
            detail = f"; last error: {last_error!r}" if last_error else ""
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}{detail}")
        time.sleep(interval)


def read_state(path: Path) -> dict[str, str]:
    """The KEY=VALUE state file that ``cluster.sh up`` writes (shell-quoted values)."""
    state: dict[str, str] = {}
    for line in path.read_text().splitlines():
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        parts = shlex.split(value)
        state[key] = parts[0] if parts else ""
    return state


@dataclass
class Cluster:
    """A reachable cluster and the ways the tests talk to it."""

    kubeconfig: Path
    api_client: k8s.ApiClient
    kubectl_bin: str
    log_dir: Path | None = None
    state: dict[str, str] = field(default_factory=dict)

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        """Run kubectl against this cluster; text output; raises on failure when ``check``."""
        proc = subprocess.run(
            [self.kubectl_bin, "--kubeconfig", str(self.kubeconfig), *args],
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"kubectl {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}{proc.stdout}"
            )
        return proc

    def wait_established(self, crd: str, timeout: float = 60) -> None:
        """Until the CRD's Established condition is True. Not `kubectl wait`: right after the
        CRD is created its status has no conditions yet, and kubectl then fails at once
        (".status.conditions accessor error") instead of waiting."""
        jsonpath = '{.status.conditions[?(@.type=="Established")].status}'
        wait_until(lambda: self.kubectl("get", f"crd/{crd}", "-o", f"jsonpath={jsonpath}",
                                        check=False).stdout == "True",
                   f"CRD {crd} to be Established", timeout=timeout)

    def client_for(self, kubeconfig: Path) -> k8s.ApiClient:
        """An ApiClient for another kubeconfig (for example a minted ServiceAccount's)."""
        return k8s_config.new_client_from_config(config_file=str(kubeconfig))

    def serviceaccount_kubeconfig(
        self,
        namespace: str,
        name: str,
        path: Path | None = None,
        expiration_seconds: int = 3600,
    ) -> Path:
        """Mint a token for ServiceAccount ``namespace/name`` (TokenRequest API) and
        write a kubeconfig that authenticates as it. The ServiceAccount must exist."""
        request = k8s.AuthenticationV1TokenRequest(
            spec=k8s.V1TokenRequestSpec(audiences=[], expiration_seconds=expiration_seconds)
        )
        token = (
            k8s.CoreV1Api(self.api_client)
            .create_namespaced_service_account_token(name, namespace, request)
            .status.token
        )
        conf = self.api_client.configuration
        cluster_entry: dict[str, Any] = {"server": conf.host}
        if conf.ssl_ca_cert:
            ca = Path(conf.ssl_ca_cert).read_bytes()
            cluster_entry["certificate-authority-data"] = base64.b64encode(ca).decode()
        if not conf.verify_ssl:
            cluster_entry["insecure-skip-tls-verify"] = True
        user = f"system:serviceaccount:{namespace}:{name}"
        doc = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "e2e", "cluster": cluster_entry}],
            "users": [{"name": user, "user": {"token": token}}],
            "contexts": [{"name": user, "context": {"cluster": "e2e", "user": user}}],
            "current-context": user,
        }
        if path is None:
            path = Path(tempfile.mkdtemp(prefix="e2e-sa-")) / f"{namespace}-{name}.kubeconfig"
        path.write_text(yaml.safe_dump(doc))
        path.chmod(0o600)
        return path


def _cached_kubectl() -> str | None:
    """The kubectl `cluster.sh build` cached (matches the server's version), if any."""
    cache = Path(os.environ.get("DSPY_CACHE_DIR", Path.home() / ".cache" / "dspy-operator"))
    found = sorted(cache.glob("k8s-v*/bin/kubectl"))
    return str(found[-1]) if found else None


def _run_cluster_sh(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(CLUSTER_SH), *args], capture_output=True, text=True)


def _local_cluster() -> tuple[Path, dict[str, str], bool]:
    """Start (or reuse) the local control plane. Returns kubeconfig, state, started."""
    already = _run_cluster_sh("status").returncode == 0
    proc = _run_cluster_sh("up")
    print(proc.stdout, end="")
    if proc.returncode != 0:
        pytest.exit(
            f"tests/cluster/cluster.sh up failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}",
            returncode=3,
        )
    state = read_state(STATE_DIR / "state.env")
    return Path(state["KUBECONFIG_PATH"]), state, not already


def _kind_kubeconfig() -> Path:
    kind = shutil.which("kind")
    if kind is None:
        pytest.exit("E2E_CLUSTER=kind but `kind` is not on PATH", returncode=3)
    proc = subprocess.run(
        [kind, "get", "kubeconfig", "--name", KIND_CLUSTER_NAME], capture_output=True, text=True
    )
    if proc.returncode != 0:
        pytest.exit(
            f"no kind cluster {KIND_CLUSTER_NAME!r}; create it with tests/cluster/kind/up.sh\n"
            f"{proc.stderr}",
            returncode=3,
        )
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    path = STATE_DIR / "kind-kubeconfig"
    path.write_text(proc.stdout)
    path.chmod(0o600)
    return path


@pytest.fixture(scope="session")
def cluster(request: pytest.FixtureRequest) -> Iterator[Cluster]:
    """The cluster the e2e suite runs on (see the module docstring)."""
    mode = os.environ.get("E2E_CLUSTER", "local")
    state: dict[str, str] = {}
    started = False
    if mode == "local":
        kubeconfig, state, started = _local_cluster()
    elif mode == "existing":
        env = os.environ.get("KUBECONFIG")
        if not env:
            pytest.exit("E2E_CLUSTER=existing needs $KUBECONFIG", returncode=3)
        kubeconfig = Path(env.split(os.pathsep)[0])
    elif mode == "kind":
        kubeconfig = _kind_kubeconfig()
    else:
        pytest.exit(f"E2E_CLUSTER must be local, existing or kind, not {mode!r}", returncode=3)

    kubectl_bin = (
        os.environ.get("KUBECTL")
        or state.get("KUBECTL")
        or _cached_kubectl()
        or shutil.which("kubectl")
    )
    if not kubectl_bin:
        pytest.exit("no kubectl: set $KUBECTL or put kubectl on PATH", returncode=3)
    log_dir = Path(state["LOG_DIR"]) if "LOG_DIR" in state else None
    if log_dir is not None:
        request.config.stash[_LOG_DIR_KEY] = log_dir

    api_client = k8s_config.new_client_from_config(config_file=str(kubeconfig))
    try:
        yield Cluster(
            kubeconfig=kubeconfig,
            api_client=api_client,
            kubectl_bin=kubectl_bin,
            log_dir=log_dir,
            state=state,
        )
    finally:
        api_client.close()
        if started and not os.environ.get("E2E_KEEP_CLUSTER"):
            proc = _run_cluster_sh("down")
            if proc.returncode != 0:
                print(f"cluster.sh down failed:\n{proc.stdout}{proc.stderr}")


@pytest.fixture
def namespace(cluster: Cluster) -> Iterator[str]:
    """A fresh namespace for one test, deleted afterwards (without waiting)."""
    name = f"e2e-{uuid.uuid4().hex[:8]}"
    core = k8s.CoreV1Api(cluster.api_client)
    core.create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=name)))
    # Wait for the namespace's default ServiceAccount: pods are refused without it.
    wait_until(
        lambda: core.read_namespaced_service_account("default", name),
        f"the default ServiceAccount in {name}",
    )
    yield name
    core.delete_namespace(name)


# --- the operator ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def crd(cluster: Any) -> str:
    """The DSPyDeployment CRD, installed and Established (lists answer 429 until then)."""
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD_PATH))
    cluster.wait_established(f"{PLURAL}.{GROUP}")
    return f"{PLURAL}.{GROUP}"


@dataclass
class Operator:
    relay: CountingRelay
    kubeconfig: Path
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    metrics_port: int = field(default_factory=free_port)
    """Where the process serves its own /metrics (kept across restarts)."""

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill_and_restart(self) -> None:
        """SIGKILL the process (no cleanup of any kind), start a new one, and return once it
        lists DSPyDeployments: what a node failure under the operator looks like."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)
        restarted = time.monotonic()
        self.process = start_operator(self.kubeconfig, self.log_path, metrics_port=self.metrics_port)
        wait_until(lambda: any(r.at >= restarted and "dspydeployments" in r.path for r in self.relay.requests),
                   "the restarted operator to list DSPyDeployments")


@pytest.fixture(scope="module")
def operator(cluster: Any, crd: str, tmp_path_factory: pytest.TempPathFactory,
             request: pytest.FixtureRequest) -> Iterator[Operator]:
    """The real operator, all namespaces, behind kubectl proxy and the counting relay.
    Its output is printed when a test of this module fails."""
    workdir = tmp_path_factory.mktemp("operator")
    with relayed_proxy(cluster.kubectl_bin, cluster.kubeconfig, workdir / "kubeconfig") as relay:
        handle = Operator(relay=relay, kubeconfig=workdir / "kubeconfig", log_path=workdir / "operator.log")
        handle.process = start_operator(handle.kubeconfig, handle.log_path, metrics_port=handle.metrics_port)
        failed_before = request.session.testsfailed
        try:
            yield handle
        finally:
            if handle.process is not None:
                stop(handle.process)
            if request.session.testsfailed > failed_before:
                lines = [line for line in handle.logs().splitlines() if "[DEBUG" not in line]
                print("\n----- operator output (without DEBUG) -----\n" + "\n".join(lines[-400:]))


# --- the runtime's real parts: Redis, the fake LM, runtime processes -------------------------


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A real redis-server on loopback: resources point at it with `redis.mode: External`."""
    with running_redis(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture(scope="session")
def fake_lm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeLMServer]:
    with running_fake_lm(tmp_path_factory.mktemp("fakelm")) as server:
        yield server


@pytest.fixture(scope="session")
def flaky_lm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeLMServer]:
    """A second fake LM, for canaries whose LM fails (set its failure rate per test)."""
    with running_fake_lm(tmp_path_factory.mktemp("flakylm")) as server:
        yield server


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[PrometheusServer]:
    """A real Prometheus server (the pinned build), scraping nothing until `scrape(...)` is called."""
    with running_prometheus(tmp_path / "prometheus") as server:
        yield server


class RuntimeProcess:
    """A runtime started from a Deployment the operator wrote, with the pod's exact command and
    environment (`hack/run_pod_locally.py`, as `make demo` does); listens on loopback."""

    def __init__(self, kubeconfig: Path, namespace: str, deployment: str, pod_name: str, workdir: Path) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.pod_name = pod_name
        self.log_path = workdir / f"{pod_name}.log"
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child process
        self.process = subprocess.Popen(
            [sys.executable, str(REPO / "hack" / "run_pod_locally.py"), "--namespace", namespace,
             "--deployment", deployment, "--port", str(self.port), "--pod-name", pod_name,
             "--entrypoint", str(Path(sys.executable).parent / "dspy-runtime")],
            stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "KUBECONFIG": str(kubeconfig)},
        )
        log.close()

    def get(self, path: str) -> dict[str, Any]:
        return httpx.get(self.base + path, timeout=5).json()

    def ready(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"runtime {self.pod_name} exited {self.process.returncode}:\n{self.output()[-3000:]}")
        try:
            return httpx.get(self.base + "/ready", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def serial(self) -> int:
        return int(self.get("/config")["routing"].get("serial") or 0)

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        stop_process(self.process)


@pytest.fixture
def runtimes(cluster: Cluster, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Callable[..., list[RuntimeProcess]]]:
    """`runtimes(namespace, name, count)`: that many runtime processes of the resource, ready.
    Their output is printed when the test fails."""
    started: list[RuntimeProcess] = []

    def start(namespace: str, name: str, count: int = 2) -> list[RuntimeProcess]:
        batch = [RuntimeProcess(cluster.kubeconfig, namespace, name, f"{name}-local-{len(started) + i}", tmp_path)
                 for i in range(count)]
        started.extend(batch)
        for runtime in batch:
            wait_until(runtime.ready, f"runtime {runtime.pod_name} to be ready", timeout=240)
        return batch

    failed_before = request.session.testsfailed
    try:
        yield start
    finally:
        for runtime in started:
            runtime.stop()
        if request.session.testsfailed > failed_before:
            for runtime in started:
                print(f"\n----- runtime {runtime.pod_name} (last 60 lines) -----\n"
                      + "\n".join(runtime.output().splitlines()[-60:]))


@pytest.fixture(name="wait_until", scope="session")
def wait_until_fixture() -> Callable[..., Any]:
    """``wait_until(predicate, what, timeout=..., interval=...)``: poll, never sleep blindly."""
    return wait_until


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # noqa: ARG001
    outcome = yield
    report = outcome.get_result()
    if report.failed and "cluster" in getattr(item, "fixturenames", ()):
        item.config.stash[_FAILED_KEY] = True


def pytest_terminal_summary(terminalreporter, exitstatus, config: pytest.Config) -> None:  # noqa: ARG001
    """After a failed e2e test, show the tail of every control-plane component's log."""
    if not config.stash.get(_FAILED_KEY, False):
        return
    log_dir = config.stash.get(_LOG_DIR_KEY, None)
    if log_dir is None or not log_dir.is_dir():
        return
    terminalreporter.section("control-plane logs (an e2e test failed)")
    for log in sorted(log_dir.glob("*.log")):
        lines = log.read_text(errors="replace").splitlines()[-LOG_TAIL_LINES:]
        terminalreporter.write_line(f"----- {log} (last {len(lines)} lines) -----")
        for line in lines:
            terminalreporter.write_line(line)
