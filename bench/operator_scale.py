"""The operator at scale: N DSPyDeployments applied at once, against the floor of creating
their children directly, and what it costs when nothing changes.

Run by hand from the repository root (results in bench/results/operator_scale.json):

    .venv/bin/python bench/operator_scale.py            # 200 resources, ~10 min on 2 cores
    .venv/bin/python bench/operator_scale.py --count 20 # a quick look

One run, one private control plane (`tests/cluster/cluster.sh up` with its own
DSPY_CLUSTER_DIR, stopped at the end), three phases:

1. floor (namespace A): the children the operator would make for N resources, built by the
   operator's own pure builders and server-side applied once each by this process. No
   DSPyDeployment objects, no operator. Time until every runtime Deployment is fully ready.
2. operator (namespace B): the real `python -m dspy_operator`, scoped to B, while N
   DSPyDeployments are applied at once. Time until all are Healthy at their generation.
3. steady state: nothing changes; the operator's writes and reads per minute (goal: 0 writes).

Both the floor's client and the operator reach the API server the same way: `kubectl proxy`
behind the e2e suite's counting relay (`tests/e2e/relay.py`), so "requests" means the same
thing on both sides and the ratio compares like with like. Absolute seconds depend on the
machine (kube-controller-manager's client rate limits dominate the floor); compare ratios.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client as k8s
from kubernetes import config as k8s_config

from harness import RESULTS, ROOT

sys.path.insert(0, str(ROOT / "tests" / "e2e"))
from conftest import read_state  # noqa: E402  (the e2e suite's reader of cluster.sh's state file)
from relay import CountingRelay, Request, relayed_proxy, start_operator, stop  # noqa: E402

from dspy_operator import api  # noqa: E402
from dspy_operator.handlers.lifecycle import RESYNC_SECONDS  # noqa: E402
from dspy_operator.kube import KubeClient  # noqa: E402
from dspy_operator.reconcile import core  # noqa: E402
from dspy_operator.reconcile.common import Owner  # noqa: E402
from dspy_operator.reconcile.core import Served  # noqa: E402
from dspy_operator.reconcile.layout import layout, tables_of  # noqa: E402
from dspy_operator.reconcile.revisions import revision_of  # noqa: E402
from dspy_operator.reconcile.routing import table_text  # noqa: E402
from dspy_operator.rollout.canary import Observations  # noqa: E402
from dspy_operator.rollout.state import Plan, RolloutState  # noqa: E402
from dspy_operator.reconcile.drift import with_applied_hash  # noqa: E402
from dspy_operator.reconcile.inputs import REREAD_SECONDS, gather  # noqa: E402
from dspy_operator.settings import OperatorSettings  # noqa: E402
from dspy_operator.status.conditions import PHASE_HEALTHY  # noqa: E402

CLUSTER_SH = ROOT / "tests" / "cluster" / "cluster.sh"
CRD_PATH = ROOT / "crds" / "dspy.dev_dspydeployments.yaml"
EXAMPLE = ROOT / "examples" / "01-minimal.yaml"
FLOOR_NS, OPERATOR_NS = "bench-floor", "bench-operator"
BENCH_MANAGER = "operator-scale-bench"
# Bounds on every wait: generous for 2 cores, never part of a measurement.
CLUSTER_TIMEOUT = 900.0
READY_TIMEOUT = 1200.0
SETTLE_TIMEOUT = 300.0
PROGRESS_EVERY = 5.0
POLL_EVERY = 1.0
STEADY_SECONDS = max(120.0, 3 * RESYNC_SECONDS)
"""The brief: two minutes or three resync periods, whichever is longer (two rereads of references at 60 s)."""
CONTROL_PLANE = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")


# --- the private control plane ----------------------------------------------------------


@dataclass(frozen=True)
class ControlPlane:
    kubeconfig: Path
    kubectl: str
    state: Mapping[str, str]

    def run_kubectl(self, *args: str, timeout: float = 120) -> str:
        proc = subprocess.run([self.kubectl, "--kubeconfig", str(self.kubeconfig), *args],
                              capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)} failed:\n{proc.stderr}{proc.stdout}")
        return proc.stdout

    def pids(self) -> dict[str, int]:
        """Component -> pid, from the state file (for CPU accounting)."""
        out = {}
        for component in CONTROL_PLANE:
            value = self.state.get(f"PID_{component.replace('-', '_')}")
            if value and value.isdigit():
                out[component] = int(value)
        return out


@contextlib.contextmanager
def control_plane(state_dir: Path) -> Iterator[ControlPlane]:
    """`cluster.sh up` in a state dir of our own (never `.cluster/`, which someone may be
    using), and `cluster.sh down` with the same dir however the block ends."""
    env = {**os.environ, "DSPY_CLUSTER_DIR": str(state_dir)}
    try:
        print(f"starting a control plane in {state_dir} ...", flush=True)
        proc = subprocess.run([str(CLUSTER_SH), "up"], env=env, capture_output=True, text=True,
                              timeout=CLUSTER_TIMEOUT)
        if proc.returncode != 0:
            raise RuntimeError(f"cluster.sh up failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}")
        state = read_state(state_dir / "state.env")
        yield ControlPlane(Path(state["KUBECONFIG_PATH"]), state["KUBECTL"], state)
    finally:
        print("stopping the control plane ...", flush=True)
        down = subprocess.run([str(CLUSTER_SH), "down"], env=env, capture_output=True, text=True,
                              timeout=CLUSTER_TIMEOUT)
        if down.returncode != 0:
            print(f"cluster.sh down failed:\n{down.stdout}{down.stderr}", file=sys.stderr)


def prepare(plane: ControlPlane, direct: k8s.ApiClient) -> None:
    """The CRD (Established: lists answer 429 before) and both namespaces (with their default
    ServiceAccount: pods are refused without it)."""
    plane.run_kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD_PATH))
    plane.run_kubectl("wait", "--for=condition=Established", "--timeout=120s",
                      f"crd/{api.PLURAL}.{api.GROUP}")
    core = k8s.CoreV1Api(direct)
    for namespace in (FLOOR_NS, OPERATOR_NS):
        core.create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=namespace)))
    poll(lambda: all(_exists(lambda ns=ns: core.read_namespaced_service_account("default", ns))
                     for ns in (FLOOR_NS, OPERATOR_NS)),
         "the namespaces' default ServiceAccounts", timeout=120)


def _exists(read: Callable[[], Any]) -> bool:
    try:
        read()
    except k8s.ApiException as error:
        if error.status == 404:
            return False
        raise
    return True


# --- measuring --------------------------------------------------------------------------


def poll(predicate: Callable[[], Any], what: str, timeout: float,
         progress: Callable[[float], str] | None = None) -> float:
    """Poll until `predicate()` is truthy; return the monotonic time it first was.

    Prints `progress(elapsed)` every PROGRESS_EVERY seconds; raises after `timeout`."""
    started = time.monotonic()
    last_print = started
    while True:
        if predicate():
            return time.monotonic()
        now = time.monotonic()
        if now - started > timeout:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        if progress is not None and now - last_print >= PROGRESS_EVERY:
            print(progress(now - started), flush=True)
            last_print = now
        time.sleep(POLL_EVERY)


def call_of(request: Request) -> str:
    """`VERB resource[/subresource]` of a request, VERB one of GET LIST WATCH POST PUT PATCH DELETE:
    where the requests go, for the breakdowns in the summary."""
    path, _, query = request.path.partition("?")
    parts = [part for part in path.split("/") if part]
    rest = parts[2:] if parts[:1] == ["api"] else parts[3:]
    if rest[:1] == ["namespaces"] and len(rest) > 2:
        rest = rest[2:]
    verb = request.method
    if verb == "GET":
        verb = "WATCH" if "watch=true" in query or "watch=1" in query else ("GET" if len(rest) > 1 else "LIST")
    resource = (rest[0] if rest else path) + (f"/{rest[2]}" if len(rest) > 2 else "")
    return f"{verb} {resource}"


def request_summary(requests: list[Request], per: int | None = None) -> dict[str, Any]:
    writes = [request for request in requests if request.is_write]
    out: dict[str, Any] = {
        "requests": len(requests),
        "writes": len(writes),
        "reads": len(requests) - len(writes),
        "by_call": dict(Counter(call_of(request) for request in requests).most_common()),
    }
    if per:
        out["requests_per_resource"] = round(len(requests) / per, 2)
        out["writes_per_resource"] = round(len(writes) / per, 2)
    return out


@dataclass
class Load:
    """CPU seconds of the processes that matter and of the whole machine over one phase, and
    the highest 1-minute load average seen (the machine is shared: others' work shows here)."""

    pids: dict[str, int]
    started: dict[str, float] = field(default_factory=dict)
    machine_started: tuple[float, float] = (0.0, 0.0)
    wall_started: float = 0.0
    max_loadavg: float = 0.0

    def begin(self) -> Load:
        self.started = {name: _cpu_seconds(pid) for name, pid in self.pids.items()}
        self.machine_started = _machine_cpu()
        self.wall_started = time.monotonic()
        self.max_loadavg = os.getloadavg()[0]
        return self

    def sample(self) -> None:
        self.max_loadavg = max(self.max_loadavg, os.getloadavg()[0])

    def end(self) -> dict[str, Any]:
        busy0, total0 = self.machine_started
        busy1, total1 = _machine_cpu()
        return {
            "cpu_seconds": {name: round(_cpu_seconds(pid) - self.started[name], 1) for name, pid in self.pids.items()},
            "machine_cpu_busy_percent": round(100 * (busy1 - busy0) / max(total1 - total0, 1e-9), 1),
            "cores": os.cpu_count(),
            "max_loadavg_1m": round(max(self.max_loadavg, os.getloadavg()[0]), 2),
            "loadavg_at_end": [round(value, 2) for value in os.getloadavg()],
        }


def _cpu_seconds(pid: int) -> float:
    """utime + stime of a process (0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _machine_cpu() -> tuple[float, float]:
    """(busy, total) jiffies of all CPUs since boot, from /proc/stat."""
    values = [int(value) for value in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return float(sum(values) - idle), float(sum(values))


# --- what is applied --------------------------------------------------------------------


def example_documents(count: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The Secret and `count` DSPyDeployments shaped like examples/01-minimal.yaml, each with
    1 replica and redis Disabled (the example's defaults, written out so they hold)."""
    docs = [doc for doc in yaml.safe_load_all(EXAMPLE.read_text()) if doc]
    secret = next(doc for doc in docs if doc["kind"] == "Secret")
    template = next(doc for doc in docs if doc["kind"] == api.KIND)
    resources = []
    for index in range(count):
        resource = copy.deepcopy(template)
        resource["metadata"] = {"name": f"qa-{index:03d}"}
        resource["spec"]["replicas"] = 1
        resource["spec"]["redis"] = {"mode": "Disabled"}
        resources.append(resource)
    return secret, resources


def in_namespace(obj: Mapping[str, Any], namespace: str) -> dict[str, Any]:
    placed = copy.deepcopy(dict(obj))
    placed["metadata"] = {**placed["metadata"], "namespace": namespace}
    return placed


def as_the_operator_sees_it(direct: k8s.ApiClient, resource: Mapping[str, Any], namespace: str) -> dict[str, Any]:
    """The resource with the CRD's defaults filled in, as the operator's handlers receive it:
    a dry-run create (nothing is stored), so the floor's builders get the same spec."""
    return k8s.CustomObjectsApi(direct).create_namespaced_custom_object(
        api.GROUP, api.VERSION, namespace, api.PLURAL, in_namespace(resource, namespace), dry_run="All")


def floor_children(body: Mapping[str, Any], inputs: Any, settings: OperatorSettings) -> list[dict[str, Any]]:
    """What `reconcile.core` would apply for `body`: the same builders, the same applied-hash
    stamp; minus the ownerReferences, since the owner does not exist here and the garbage
    collector would delete children of a missing owner."""
    owner = Owner.from_body(body)
    revision = revision_of(owner.spec, inputs)
    state = RolloutState(stable=revision.name)
    placed = layout(Plan.from_spec(owner.spec), state, Observations(desired=revision.name, now=datetime.now(timezone.utc)))
    texts = {color: table_text(table, 1) for color, table in tables_of(owner.spec, placed, {revision.name: revision}).items()}
    intents = core.children(owner, settings, Served([revision], placed, texts), None)
    children = [with_applied_hash(intent) for intent in intents]
    for child in children:
        child["metadata"].pop("ownerReferences", None)
    return children


# --- the phases -------------------------------------------------------------------------


def count_ready_runtimes(apps: k8s.AppsV1Api, namespace: str) -> int:
    """Runtime Deployments whose every replica is updated and ready at their generation."""
    selector = f"{api.LABEL_COMPONENT}={api.COMPONENT_RUNTIME}"
    ready = 0
    for deployment in apps.list_namespaced_deployment(namespace, label_selector=selector).items:
        status, want = deployment.status, deployment.spec.replicas
        if (status.observed_generation == deployment.metadata.generation
                and (status.ready_replicas or 0) == want and (status.updated_replicas or 0) == want):
            ready += 1
    return ready


def count_healthy(custom: k8s.CustomObjectsApi, namespace: str) -> int:
    """DSPyDeployments whose status says Healthy for their current generation."""
    items = custom.list_namespaced_custom_object(api.GROUP, api.VERSION, namespace, api.PLURAL)["items"]
    return sum(
        1 for item in items
        if (item.get("status") or {}).get("phase") == PHASE_HEALTHY
        and (item.get("status") or {}).get("observedGeneration") == item["metadata"]["generation"]
    )


def run_floor(plane: ControlPlane, direct: k8s.ApiClient, workdir: Path, count: int, workers: int,
              settings: OperatorSettings, load: Load) -> dict[str, Any]:
    secret, resources = example_documents(count)
    # Setup, not measured: the specs differ only by name, so one dry run gives every body.
    defaulted = as_the_operator_sees_it(direct, resources[0], FLOOR_NS)
    bodies = [{**defaulted, "metadata": {**defaulted["metadata"], "name": resource["metadata"]["name"]}}
              for resource in resources]
    apps = k8s.AppsV1Api(direct)
    with relayed_proxy(plane.kubectl, plane.kubeconfig, workdir / "floor.kubeconfig") as relay:
        client = k8s_config.new_client_from_config(config_file=str(workdir / "floor.kubeconfig"))
        kube = KubeClient(client)
        load.begin()
        started = time.monotonic()
        kube.apply(in_namespace(secret, FLOOR_NS), BENCH_MANAGER)
        # One read of the Secret serves all: every spec refers to the same one.
        inputs = gather(kube.get, FLOOR_NS, bodies[0]["spec"])
        if inputs.problems:
            raise RuntimeError(f"the example's spec has problems: {inputs.problems}")

        def create(body: Mapping[str, Any]) -> None:
            for child in floor_children(body, inputs, settings):
                kube.apply(child, api.FIELD_MANAGER)

        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(create, bodies))
        written = time.monotonic()
        print(f"[floor] {count} resources' children applied in {written - started:.1f}s", flush=True)

        def progress(elapsed: float) -> str:
            load.sample()
            return f"[floor {elapsed:6.1f}s] runtime Deployments ready: {count_ready_runtimes(apps, FLOOR_NS)}/{count}"

        ready_at = poll(lambda: count_ready_runtimes(apps, FLOOR_NS) == count, "the floor's Deployments",
                        READY_TIMEOUT, progress)
        requests = relay.select(started, ready_at)
        client.close()
    children = len(floor_children(bodies[0], inputs, settings))
    return {
        "seconds_to_ready": round(ready_at - started, 1),
        "seconds_writing": round(written - started, 1),
        "children_per_resource": children,
        **request_summary(requests, count),
        "load": load.end(),
    }


def run_operator(plane: ControlPlane, direct: k8s.ApiClient, workdir: Path, count: int, workers: int,
                 load: Load) -> dict[str, Any]:
    secret, resources = example_documents(count)
    custom = k8s.CustomObjectsApi(direct)
    applier = KubeClient(direct)  # the user's applies: direct, not counted as the operator's
    with relayed_proxy(plane.kubectl, plane.kubeconfig, workdir / "operator.kubeconfig") as relay, \
            _running_operator(workdir) as start:
        process = start(workdir / "operator.kubeconfig")
        load.pids["operator"] = process.pid
        boot = time.monotonic()
        poll(lambda: _watching_all(relay) or _exited(process), "the operator's watches", 120)
        if process.poll() is not None:
            raise RuntimeError(f"the operator exited ({process.returncode}); see {workdir / 'operator.log'}")
        startup_requests = relay.select(boot, time.monotonic())

        load.begin()
        started = time.monotonic()
        applier.apply(in_namespace(secret, OPERATOR_NS), BENCH_MANAGER)
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(lambda resource: applier.apply(in_namespace(resource, OPERATOR_NS), BENCH_MANAGER),
                          resources))
        applied = time.monotonic()
        print(f"[operator] {count} DSPyDeployments applied in {applied - started:.1f}s", flush=True)

        def progress(elapsed: float) -> str:
            load.sample()
            seen = relay.select(started)
            return (f"[operator {elapsed:6.1f}s] Healthy: {count_healthy(custom, OPERATOR_NS)}/{count}; "
                    f"operator requests so far {len(seen)} ({sum(r.is_write for r in seen)} writes)")

        healthy_at = poll(lambda: count_healthy(custom, OPERATOR_NS) == count or _exited(process),
                          "every DSPyDeployment to be Healthy", READY_TIMEOUT, progress)
        if process.poll() is not None:
            raise RuntimeError(f"the operator exited ({process.returncode}); see {workdir / 'operator.log'}")
        result = {
            "seconds_to_healthy": round(healthy_at - started, 1),
            "seconds_applying": round(applied - started, 1),
            **request_summary(relay.select(started, healthy_at), count),
            "startup_requests": len(startup_requests),
            "load": load.end(),
        }
        result["steady"] = run_steady(relay, process, custom, count, healthy_at, load)
        return result


@contextlib.contextmanager
def _running_operator(workdir: Path) -> Iterator[Callable[[Path], subprocess.Popen[bytes]]]:
    """Yields a starter; whatever it started is stopped when the block ends."""
    started: list[subprocess.Popen[bytes]] = []

    def start(kubeconfig: Path) -> subprocess.Popen[bytes]:
        # Without --verbose, as it runs in production: debug logs of 200 resources cost CPU.
        process = start_operator(kubeconfig, workdir / "operator.log", namespaces=(OPERATOR_NS,), verbose=False)
        started.append(process)
        return process

    try:
        yield start
    finally:
        for process in started:
            stop(process)


def _watching_all(relay: CountingRelay) -> bool:
    """The operator has opened a watch on DSPyDeployments and on every child kind."""
    watched = {call_of(request).split(" ", 1)[1] for request in relay.select(0) if call_of(request).startswith("WATCH")}
    wanted = {api.PLURAL, "deployments", "services", "configmaps", "secrets", "horizontalpodautoscalers",
              "poddisruptionbudgets", "networkpolicies"}
    return wanted <= watched


def _exited(process: subprocess.Popen[bytes]) -> bool:
    return process.poll() is not None


def run_steady(relay: CountingRelay, process: subprocess.Popen[bytes], custom: k8s.CustomObjectsApi,
               count: int, healthy_at: float, load: Load) -> dict[str, Any]:
    """Let the last writes after Healthy settle (no write for a resync period and a bit), then
    count over STEADY_SECONDS with nothing changing."""
    quiet_needed = RESYNC_SECONDS + 2

    def settled() -> bool:
        now = time.monotonic()
        return now - healthy_at >= quiet_needed and not relay.select(now - quiet_needed, writes_only=True)

    try:
        quiet_from = poll(settled, "the operator's writes to settle", SETTLE_TIMEOUT,
                          lambda elapsed: f"[settle {elapsed:6.1f}s] waiting for {quiet_needed:.0f}s without writes")
        settled_ok = True
    except TimeoutError:
        quiet_from, settled_ok = time.monotonic(), False  # measured anyway; reported as not settled
    settle_writes = relay.select(healthy_at, quiet_from, writes_only=True)
    load.begin()
    until = quiet_from + STEADY_SECONDS
    while (now := time.monotonic()) < until and process.poll() is None:
        load.sample()
        seen = relay.select(quiet_from)
        print(f"[steady {now - quiet_from:6.1f}s/{STEADY_SECONDS:.0f}s] operator requests {len(seen)}, "
              f"writes {sum(r.is_write for r in seen)}", flush=True)
        time.sleep(min(10.0, max(until - now, 0.0)))
    requests = relay.select(quiet_from, until)
    summary = request_summary(requests)
    minutes = STEADY_SECONDS / 60
    return {
        "settled": settled_ok,
        "seconds_settling_after_healthy": round(quiet_from - healthy_at, 1),
        "writes_while_settling": dict(Counter(call_of(request) for request in settle_writes).most_common()),
        "window_seconds": STEADY_SECONDS,
        "resync_seconds": RESYNC_SECONDS,
        "reference_reread_seconds": REREAD_SECONDS,
        "writes_per_minute": round(summary["writes"] / minutes, 2),
        "reads_per_minute": round(summary["reads"] / minutes, 1),
        "reads_per_resource_per_minute": round(summary["reads"] / minutes / count, 2),
        **summary,
        "healthy_at_end": count_healthy(custom, OPERATOR_NS),
        "operator_alive": process.poll() is None,
        "load": load.end(),
    }


def ratio(numerator: float, denominator: float) -> float | None:
    return round(numerator / denominator, 2) if denominator else None


def main(argv: Iterable[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=200, help="DSPyDeployments (and floor resources)")
    parser.add_argument("--workers", type=int, default=8,
                        help="threads applying objects, the same for the floor and the user's applies")
    args = parser.parse_args(list(argv) if argv is not None else None)
    # SIGTERM unwinds like Ctrl-C, so the operator, the proxies and the control plane stop.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    settings = OperatorSettings.from_env({"DSPY_OPERATOR_NAMESPACES": OPERATOR_NS})
    workdir = Path(tempfile.mkdtemp(prefix="operator-scale-"))
    RESULTS.mkdir(parents=True, exist_ok=True)
    print(f"{args.count} DSPyDeployments shaped like {EXAMPLE.relative_to(ROOT)}: 1 replica each, "
          f"redis Disabled; operator log in {workdir / 'operator.log'}", flush=True)
    with control_plane(workdir / "cluster") as plane:
        direct = k8s_config.new_client_from_config(config_file=str(plane.kubeconfig))
        prepare(plane, direct)
        load = Load(pids=plane.pids())
        floor = run_floor(plane, direct, workdir, args.count, args.workers, settings, load)
        print(f"[floor] ready after {floor['seconds_to_ready']}s with {floor['requests']} requests", flush=True)
        operator = run_operator(plane, direct, workdir, args.count, args.workers, load)
        direct.close()
    steady = operator.pop("steady")
    summary = {
        "config": {
            "resources": args.count,
            "shape": f"{EXAMPLE.relative_to(ROOT)}: 1 replica, redis Disabled, no saved program",
            "workers": args.workers,
            "kubernetes": plane.state.get("K8S_VERSION"),
            "nodes": "kwok (pods become Ready at once; nothing runs)",
            "api_path": "kubectl proxy + counting relay, for the floor's client and the operator alike",
            "operator_flags": "none (no --verbose)",
            "order": "floor (namespace A) first, then the operator (namespace B), same control plane",
        },
        "floor": floor,
        "operator": operator,
        "ratios_operator_over_floor": {
            "time": ratio(operator["seconds_to_healthy"], floor["seconds_to_ready"]),
            "requests": ratio(operator["requests"], floor["requests"]),
            "writes": ratio(operator["writes"], floor["writes"]),
        },
        "steady_state": steady,
    }
    text = json.dumps(summary, indent=2)
    print(text)
    (RESULTS / "operator_scale.json").write_text(text + "\n")
    print(f"written to {RESULTS / 'operator_scale.json'}")


if __name__ == "__main__":
    main()
