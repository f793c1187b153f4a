"""Weight propagation: from the operator publishing a new routing table to every runtime
process serving it, through Redis (the push) against the mounted file (the baseline).

Three real runtime processes share a real redis-server and a routing-table file, as pods
of one resource share the resource's Redis and the routing ConfigMap. 30 times per path,
the weights change (a new serial, as `reconcile.routing.next_serial` makes it) and the
table, built by `reconcile.routing` as the operator builds it, is either published exactly
as the operator does (`RuntimeBus.publish_table`: SET, SET serial, PUBLISH in one MULTI)
or written to the file only (renamed into place, nothing published), which the runtime
re-reads every ROUTING_RELOAD_SECS (1 s). The clock stops when every process's
`GET /config` shows the new serial (each process polled every 5 ms over a kept-alive
connection, so a figure can be up to one poll late). The runtimes' own "routing table
reloaded" log lines (millisecond timestamps) give the same figure without the polling,
from the moment of the change to the last process's line. The two paths alternate, so
both see the same machine load.

Each change waits a random fraction of ROUTING_RELOAD_SECS first (seeded): a status change
comes at any moment of the pods' file-poll cycle. Without it the loop locks onto that
cycle (the next change is made just after the poll that picked up the previous one) and
the file path would always show its worst case.

In a cluster the file path also waits for the kubelet to refresh the mounted ConfigMap
(its syncFrequency plus its ConfigMap cache TTL: typically up to ~60-90 s), which this
benchmark does not include; the push does not depend on it.

Goal (issue 10): every pod serves the new weights within 1 s of the status change.
"""

from __future__ import annotations

import contextlib
import datetime
import http.client
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from harness import RESULTS, ROOT, exit_on_sigterm, fake_lm, free_port, server

sys.path.insert(0, str(ROOT / "tests"))
from servers import RedisServer  # noqa: E402

from dspy_operator import api  # noqa: E402
from dspy_operator.reconcile.revisions import Revision  # noqa: E402
from dspy_operator.reconcile.routing import next_serial, routing_table, table_text  # noqa: E402
from dspy_operator.runtimebus import RuntimeBus  # noqa: E402

PODS = 3
CHANGES = 30
POLL_SECONDS = 0.005
RELOAD_SECONDS = 1.0
NAMESPACE, NAME = "bench", "qa"
KUBELET_NOTE = ("in a real cluster the mounted-file path also waits for the kubelet's ConfigMap sync "
                "(typically up to ~60-90 s: the kubelet's syncFrequency plus its ConfigMap cache TTL), "
                "which this benchmark does not include; the Redis push does not depend on it")


def revisions(lm_base: str) -> tuple[Revision, Revision]:
    """A stable and a canary revision, one variant each, as `revision_of` would name them."""
    def variant(model: str) -> tuple[dict[str, Any], ...]:
        return ({"name": "default", "weight": 100, "program": {"signature": "question -> answer", "module": "Predict"},
                 "lm": {"model": model, "apiBase": lm_base, "apiKeyEnv": "LM_API_KEY"}},)
    return Revision("a" * 12, variant("openai/fake-model")), Revision("b" * 12, variant("openai/fake-model-2"))


def table(pair: tuple[Revision, Revision], canary_weight: int, serial: int) -> str:
    stable, canary = pair
    return table_text(routing_table({}, [(stable, 100 - canary_weight), (canary, canary_weight)]), serial)


class Poller:
    """`GET /config` of every process over one kept-alive connection each."""

    def __init__(self, ports: list[int]) -> None:
        self._connections = {port: http.client.HTTPConnection("127.0.0.1", port, timeout=5) for port in ports}

    def serial_of(self, port: int) -> int:
        connection = self._connections[port]
        connection.request("GET", "/config")
        return int(json.loads(connection.getresponse().read())["routing"].get("serial") or 0)

    def until_served(self, serial: int, timeout: float = 30.0) -> float:
        """Seconds until every process serves `serial` (or a newer one)."""
        started = time.perf_counter()
        waiting = set(self._connections)
        while True:
            waiting = {port for port in waiting if self.serial_of(port) < serial}
            elapsed = time.perf_counter() - started
            if not waiting:
                return elapsed
            if elapsed > timeout:
                raise RuntimeError(f"{len(waiting)} processes did not serve serial {serial} within {timeout}s")
            time.sleep(POLL_SECONDS)

    def close(self) -> None:
        for connection in self._connections.values():
            connection.close()


def adoption_times(logs: list[Path]) -> dict[int, float]:
    """Serial -> unix time at which the last process logged adopting it."""
    adopted: dict[int, float] = {}
    for log in logs:
        for line in log.read_text(errors="replace").splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if record.get("message") == "routing table reloaded":
                moment = datetime.datetime.fromisoformat(record["ts"]).timestamp()
                adopted[record["serial"]] = max(adopted.get(record["serial"], 0.0), moment)
    return adopted


def summary(seconds: list[float]) -> dict[str, float]:
    """Nearest-rank percentiles of 30 samples: p95 is the 29th."""
    ordered = sorted(seconds)
    return {"p50_ms": round(statistics.median(ordered) * 1000, 1),
            "p95_ms": round(ordered[max(0, -(-95 * len(ordered) // 100) - 1)] * 1000, 1),
            "max_ms": round(ordered[-1] * 1000, 1)}


@contextlib.contextmanager
def pods(lm_base: str, redis_url: str, routing_path: Path) -> Iterator[list[int]]:
    """The runtime processes, each with the env the operator gives a pod (and a HOSTNAME of its own)."""
    with contextlib.ExitStack() as stack:
        ports = []
        for index in range(PODS):
            port = free_port()
            env = {"HOST": "127.0.0.1", "PORT": str(port), "LM_API_KEY": "bench-dummy-key",
                   "LITELLM_LOCAL_MODEL_COST_MAP": "true", "RATE_LIMIT_RPS": "0", "REDIS_URL": redis_url,
                   "ROUTING_PATH": str(routing_path), "ROUTING_RELOAD_SECS": str(RELOAD_SECONDS),
                   "DSPY_RESOURCE": api.resource_id(NAMESPACE, NAME),
                   "ROUTING_REDIS_KEY": api.routing_redis_key(NAMESPACE, NAME), "HOSTNAME": f"qa-{index}"}
            stack.enter_context(server(f"runtime-{index}", [str(Path(sys.executable).parent / "dspy-runtime")],
                                       f"http://127.0.0.1:{port}/ready", env))
            ports.append(port)
        yield ports


def main() -> None:
    exit_on_sigterm()
    executable = shutil.which("redis-server")
    if executable is None:
        raise SystemExit("redis-server is not installed: run `make debs`")
    workdir = Path(tempfile.mkdtemp(prefix="bench-weights-"))
    routing_path = workdir / "routing.json"
    redis = RedisServer(executable, workdir)
    rng = random.Random(10)
    timings: dict[str, list[float]] = {"redis_push": [], "mounted_file": []}
    changed: dict[str, list[tuple[int, float]]] = {"redis_push": [], "mounted_file": []}
    try:
        redis.start()
        with fake_lm() as lm_base:
            pair = revisions(lm_base)
            serial = next_serial(0, int(time.time() * 1000))
            routing_path.write_text(table(pair, 10, serial))
            bus = RuntimeBus.from_url(redis.url)
            prefix = api.redis_prefix(NAMESPACE, NAME)

            def push(text: str, serial: int) -> None:
                bus.publish_table(prefix, text, serial)

            def write_file(text: str, serial: int) -> None:
                temporary = routing_path.with_suffix(".tmp")
                temporary.write_text(text)
                os.replace(temporary, routing_path)

            paths: dict[str, Callable[[str, int], None]] = {"redis_push": push, "mounted_file": write_file}
            try:
                with pods(lm_base, redis.url, routing_path) as ports:
                    poller = Poller(ports)
                    try:
                        poller.until_served(serial)
                        for number in range(CHANGES):
                            for name, change in paths.items():
                                time.sleep(rng.uniform(0, RELOAD_SECONDS))
                                serial = next_serial(serial, int(time.time() * 1000))
                                changed[name].append((serial, time.time()))
                                change(table(pair, 10 + (7 * number) % 80, serial), serial)
                                timings[name].append(poller.until_served(serial))
                    finally:
                        poller.close()
            finally:
                bus.close()
    finally:
        redis.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    push_figures, file_figures = summary(timings["redis_push"]), summary(timings["mounted_file"])
    adopted = adoption_times([RESULTS / f"runtime-{index}.log" for index in range(PODS)])
    logged = {name: summary([adopted[serial] - moment for serial, moment in pairs]) for name, pairs in changed.items()}
    result = {"pods": PODS, "changes_per_path": CHANGES, "poll_ms": POLL_SECONDS * 1000,
              "routing_reload_secs": RELOAD_SECONDS, "redis_push": push_figures, "mounted_file": file_figures,
              "from_runtime_logs": logged,
              "p50_file_over_push": round(file_figures["p50_ms"] / max(push_figures["p50_ms"], 1e-9), 1),
              "goal": "every pod within 1 s", "goal_met_by_push": push_figures["max_ms"] < 1000,
              "note": KUBELET_NOTE}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "weight_propagation.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    print(f"redis push: p50 {push_figures['p50_ms']} ms, p95 {push_figures['p95_ms']} ms, max {push_figures['max_ms']} ms; "
          f"mounted file: p50 {file_figures['p50_ms']} ms, p95 {file_figures['p95_ms']} ms, max {file_figures['max_ms']} ms "
          f"(to all {PODS} processes, {CHANGES} changes each)")
    print(f"from the runtimes' log lines: redis push p50 {logged['redis_push']['p50_ms']} ms, "
          f"max {logged['redis_push']['max_ms']} ms; mounted file p50 {logged['mounted_file']['p50_ms']} ms, "
          f"max {logged['mounted_file']['max_ms']} ms")
    print(f"note: {KUBELET_NOTE}")


if __name__ == "__main__":
    main()
