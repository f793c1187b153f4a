"""Weight propagation: from the operator publishing a new routing table to every runtime
process serving it, through Redis (the push) against the mounted file (the baseline).

Three real runtime processes share a real redis-server and a routing-table file, as pods
of one resource share the resource's Redis and the routing ConfigMap. 30 times, the
weights change (a new serial) and the table is published exactly as the operator does
(`RuntimeBus.publish_table`, a table built by `reconcile.routing`); the clock stops when
every process's `GET /config` shows the new serial (polled every 5 ms). The baseline, in
the same run: the same change written to the file only (renamed into place), which the
runtime re-reads every ROUTING_RELOAD_SECS (1 s).

In a cluster the file path also waits for the kubelet to refresh the mounted ConfigMap
(its sync period plus its cache TTL: typically up to a minute or more), which this
benchmark does not include; the push does not depend on it.

Goal (issue 10): every pod serves the new weights within 1 s of the status change.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

from harness import RESULTS, ROOT, fake_lm, free_port, server

sys.path.insert(0, str(ROOT / "tests"))
from servers import RedisServer  # noqa: E402

from dspy_operator import api  # noqa: E402
from dspy_operator.reconcile.revisions import Revision  # noqa: E402
from dspy_operator.reconcile.routing import table_text  # noqa: E402
from dspy_operator.runtimebus import RuntimeBus  # noqa: E402

PODS = 3
CHANGES = 30
POLL_SECONDS = 0.005
NAMESPACE, NAME = "bench", "qa"


def variants(model: str, lm_base: str) -> tuple[dict[str, object], ...]:
    return ({"name": "default", "weight": 100, "program": {"signature": "question -> answer", "module": "Predict"},
             "lm": {"model": model, "apiBase": lm_base}},)


def table(serial: int, canary_weight: int, lm_base: str) -> str:
    stable = Revision("a" * 12, variants("openai/fake-model", lm_base))
    canary = Revision("b" * 12, variants("openai/fake-model-2", lm_base))
    body = {"revisions": [{"name": stable.name, "weight": 100 - canary_weight, "variants": list(stable.variants)},
                          {"name": canary.name, "weight": canary_weight, "variants": list(canary.variants)}]}
    return table_text(body, serial)


def serial_of(base: str) -> int:
    with urllib.request.urlopen(f"{base}/config", timeout=5) as response:
        return int(json.load(response)["routing"].get("serial") or 0)


def until_served(bases: list[str], serial: int, timeout: float = 30.0) -> float:
    """Seconds until every process serves `serial` (or a newer one)."""
    started = time.perf_counter()
    waiting = set(bases)
    while waiting:
        waiting = {base for base in waiting if serial_of(base) < serial}
        if time.perf_counter() - started > timeout:
            raise RuntimeError(f"{len(waiting)} processes did not serve serial {serial} within {timeout}s")
        if waiting:
            time.sleep(POLL_SECONDS)
    return time.perf_counter() - started


def measure(change: Callable[[int, str], None], bases: list[str], lm_base: str, first_serial: int) -> list[float]:
    seconds = []
    for number in range(CHANGES):
        serial = first_serial + number
        change(serial, table(serial, 10 + number % 80, lm_base))
        seconds.append(until_served(bases, serial))
    return seconds


def summary(seconds: list[float]) -> dict[str, float]:
    ordered = sorted(seconds)
    return {"p50_ms": round(statistics.median(ordered) * 1000, 1),
            "p95_ms": round(ordered[int(0.95 * (len(ordered) - 1))] * 1000, 1),
            "max_ms": round(ordered[-1] * 1000, 1)}


@contextlib.contextmanager
def pods(lm_base: str, redis_url: str, routing_path: Path) -> Iterator[list[str]]:
    with contextlib.ExitStack() as stack:
        bases = []
        for index in range(PODS):
            port = free_port()
            env = {"HOST": "127.0.0.1", "PORT": str(port), "LM_API_KEY": "bench-dummy-key",
                   "LITELLM_LOCAL_MODEL_COST_MAP": "true", "REDIS_URL": redis_url,
                   "ROUTING_PATH": str(routing_path), "ROUTING_RELOAD_SECS": "1",
                   "DSPY_RESOURCE": api.resource_id(NAMESPACE, NAME),
                   "ROUTING_REDIS_KEY": api.routing_redis_key(NAMESPACE, NAME), "HOSTNAME": f"qa-{index}"}
            stack.enter_context(server(f"runtime-{index}", [str(Path(sys.executable).parent / "dspy-runtime")],
                                       f"http://127.0.0.1:{port}/ready", env))
            bases.append(f"http://127.0.0.1:{port}")
        yield bases


def main() -> None:
    executable = shutil.which("redis-server")
    if executable is None:
        raise SystemExit("redis-server is not installed: run `make debs`")
    workdir = Path(tempfile.mkdtemp(prefix="bench-weights-"))
    routing_path = workdir / "routing.json"
    redis = RedisServer(executable, workdir)
    redis.start()
    try:
        with fake_lm() as lm_base:
            routing_path.write_text(table(1, 10, lm_base))
            bus = RuntimeBus.from_url(redis.url)
            prefix = api.redis_prefix(NAMESPACE, NAME)

            def push(serial: int, text: str) -> None:
                bus.publish_table(prefix, text, serial)

            def write_file(serial: int, text: str) -> None:
                temporary = routing_path.with_suffix(".tmp")
                temporary.write_text(text)
                os.replace(temporary, routing_path)

            with pods(lm_base, redis.url, routing_path) as bases:
                until_served(bases, 1)
                pushed = measure(push, bases, lm_base, first_serial=100)
                # The baseline: Redis still up, but nothing published; only the file changes.
                filed = measure(write_file, bases, lm_base, first_serial=1000)
            bus.close()
    finally:
        redis.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    result = {"pods": PODS, "changes": CHANGES, "redis_push": summary(pushed), "mounted_file": summary(filed),
              "note": "the mounted-file figure excludes the kubelet's ConfigMap refresh (up to about a minute)",
              "goal": "every pod within 1 s"}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "weight_propagation.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
