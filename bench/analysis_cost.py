"""The operator's cost of judging one canary interval, per resource: CPU and Redis commands.

A real redis-server holds, for 50 resources, the buckets their pods would have written in
a 60 s interval (12 buckets of 5 s; two revisions with two variants each, every figure
of the contract: requests, errors, failure classes, the latency histogram, latency sum,
cache hits, tokens, cost), plus each resource's routing serial and its three pods'
served-table reports. For each resource the operator's analysis runs as it does in a
pass (`observe.judgement`: one pipelined read, then windows, sums and the verdict), and
so do the two reads every pass of a resource with Redis makes anyway (`table_serial`,
`observe.served_by`). The baseline, in the same run: the same pipelined HGETALLs through
a plain client with no parsing, the floor any analysis pays for the round trip and
redis-py's reply decoding. The operator's own arithmetic (windows, sums, verdict, on
buckets already read) is timed alone too.

CPU is this process' `time.process_time`; the measurements are interleaved over
REPEATS rounds and each figure is the median round. Commands are counted from Redis' own
`INFO commandstats` (the INFO calls themselves left out).
"""

from __future__ import annotations

import json
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import redis

from harness import RESULTS, ROOT, exit_on_sigterm

sys.path.insert(0, str(ROOT / "tests"))
from servers import RedisServer  # noqa: E402

from dspy_operator import api, observe  # noqa: E402
from dspy_operator.reconcile.common import Owner  # noqa: E402
from dspy_operator.rollout.analysis import (  # noqa: E402
    BUCKET_SECONDS, LATENCY_BUCKETS, Thresholds, Window, bucket_starts, by_revision, judge, settled_end,
    windows_from_buckets,
)
from dspy_operator.rollout.state import Plan, RolloutState  # noqa: E402
from dspy_operator.runtimebus import RuntimeBus  # noqa: E402

RESOURCES = 50
INTERVAL = 60
REPEATS = 11
PODS = 3
SERIAL = 1764624000123
STABLE, CANARY = "aaaaaaaaaaaa", "bbbbbbbbbbbb"
PLAN = Plan.from_spec({"rollout": {"strategy": "Canary", "canary": {
    "steps": [{"setWeight": 20}], "analysis": {"intervalSeconds": INTERVAL, "minRequests": 10,
                                                 "relative": {"maxP95LatencyRatio": 2, "maxErrorRateRatio": 2}}}}})
STATE = RolloutState(stable=STABLE, canary=CANARY, weight=20, step=1)
# Requests per 5 s bucket per variant: 80% of the traffic to the stable revision, 20% to the canary.
TRAFFIC = {STABLE: (60, 240), CANARY: (15, 60)}
# Share of requests per latency bucket: most between 25 ms and 1 s (LATENCY_BUCKETS[7..12]).
LATENCY_SHARES = {7: 0.05, 8: 0.15, 9: 0.35, 10: 0.3, 11: 0.1, 12: 0.04, 13: 0.01}


def owner(index: int) -> Owner:
    return Owner(name=f"qa-{index}", namespace="bench", uid=f"uid-{index}", generation=1, spec={})


def prefix_of(index: int) -> str:
    return api.redis_prefix("bench", f"qa-{index}")


def bucket_fields(rng: random.Random) -> dict[str, str]:
    """One bucket hash as the runtime's flush writes it (`<revision>|<variant>|<figure>`), self-consistent:
    the latency histogram sums to the requests and the latency sum matches it."""
    fields: dict[str, str] = {}
    for revision, (low, high) in TRAFFIC.items():
        for variant in ("baseline", "optimized"):
            requests = rng.randint(low, high)
            upstream = rng.randint(0, requests // 40)
            timeouts = rng.randint(0, requests // 100)
            invalid = rng.randint(0, 2)
            cache_hits = int(requests * rng.uniform(0.2, 0.4))
            computed = requests - cache_hits - upstream - timeouts - invalid
            latencies = Counter(rng.choices(list(LATENCY_SHARES), weights=list(LATENCY_SHARES.values()), k=requests))
            latency_sum = sum(count * (LATENCY_BUCKETS[index - 1] + LATENCY_BUCKETS[index]) / 2
                              for index, count in latencies.items())
            key = f"{revision}|{variant}|"
            fields.update({key + "requests": str(requests), key + "errors": str(upstream + timeouts),
                           key + "latency_sum": repr(latency_sum), key + "cache_hits": str(cache_hits),
                           key + "tokens_in": str(computed * 140), key + "tokens_out": str(computed * 35),
                           key + "cost_usd": repr(computed * 0.0000420)})
            classes = {"upstream_error": upstream, "upstream_timeout": timeouts, "invalid_input": invalid}
            fields.update({key + f"class:{name}": str(count) for name, count in classes.items() if count})
            fields.update({key + f"lat:{index}": str(count) for index, count in latencies.items()})
    return fields


def command_calls(client: redis.Redis) -> Counter[str]:
    """Calls per command so far, the INFO calls this bench makes left out."""
    stats = client.info("commandstats")
    return Counter({name.removeprefix("cmdstat_"): int(entry["calls"]) for name, entry in stats.items()
                    if name != "cmdstat_info"})


def main() -> None:
    exit_on_sigterm()
    executable = shutil.which("redis-server")
    if executable is None:
        raise SystemExit("redis-server is not installed: run `make debs`")
    workdir = Path(tempfile.mkdtemp(prefix="bench-analysis-"))
    server = RedisServer(executable, workdir)
    try:
        server.start()
        client = redis.Redis.from_url(server.url, decode_responses=True)
        bus = RuntimeBus.from_url(server.url)
        try:
            now = datetime.now(timezone.utc)
            end = settled_end(now.timestamp())
            starts = list(bucket_starts(end - INTERVAL, end))
            rng = random.Random(7)
            for index in range(RESOURCES):
                prefix = prefix_of(index)
                pipe = client.pipeline(transaction=False)
                for start in starts:
                    pipe.hset(f"{prefix}win:{start}", mapping=bucket_fields(rng))
                pipe.set(f"{prefix}routing:serial", SERIAL)
                pipe.hset(f"{prefix}pods", mapping={f"qa-{index}-{pod}": f"{SERIAL} {int(time.time())}"
                                                    for pod in range(PODS)})
                pipe.execute()
            fields_per_resource = sum(client.hlen(f"{prefix_of(0)}win:{start}") for start in starts)
            prefetched = [bus.read_buckets(prefix_of(index), end - INTERVAL, end) for index in range(RESOURCES)]
            thresholds = Thresholds.from_spec(PLAN.analysis)
            verdicts = Counter(observe.judgement(bus, owner(index), PLAN, STATE, now).result
                               for index in range(RESOURCES))
            served = {observe.served_by(bus, owner(index), SERIAL, time.time()) for index in range(RESOURCES)}

            def analysis() -> None:
                for index in range(RESOURCES):
                    observe.judgement(bus, owner(index), PLAN, STATE, now)

            def floor() -> None:
                for index in range(RESOURCES):
                    pipe = client.pipeline(transaction=False)
                    for start in starts:
                        pipe.hgetall(f"{prefix_of(index)}win:{start}")
                    pipe.execute()

            def arithmetic() -> None:
                for buckets in prefetched:
                    windows = by_revision(windows_from_buckets(buckets, end - INTERVAL, end))
                    canary, stable = windows.get(CANARY, Window()), windows.get(STABLE)
                    judge(thresholds, canary, stable)
                    canary.figures()
                    if stable is not None:
                        stable.figures()

            def pass_reads() -> None:
                for index in range(RESOURCES):
                    bus.table_serial(prefix_of(index))
                    observe.served_by(bus, owner(index), SERIAL, time.time())

            runs: dict[str, Callable[[], None]] = {"analysis": analysis, "floor": floor,
                                                   "arithmetic_only": arithmetic, "pass_reads": pass_reads}
            rounds: dict[str, list[tuple[float, float]]] = {name: [] for name in runs}
            sent: dict[str, Counter[str]] = {name: Counter() for name in runs}
            for run in runs.values():
                run()  # warm the connection pools
            for _ in range(REPEATS):
                for name, run in runs.items():
                    before = command_calls(client)
                    cpu, wall = time.process_time(), time.perf_counter()
                    run()
                    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
                    sent[name] += command_calls(client) - before
                    rounds[name].append((cpu, wall))
        finally:
            bus.close()
            client.close()
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)

    per_resource = REPEATS * RESOURCES
    results = {name: {
        "cpu_ms_per_resource": round(statistics.median(cpu for cpu, _ in rounds[name]) * 1000 / RESOURCES, 3),
        "wall_ms_per_resource": round(statistics.median(wall for _, wall in rounds[name]) * 1000 / RESOURCES, 3),
        "redis_commands_per_resource": round(sum(sent[name].values()) / per_resource, 2),
        "commands": {command: round(calls / per_resource, 2) for command, calls in sorted(sent[name].items())},
    } for name in runs}
    ratio = results["analysis"]["cpu_ms_per_resource"] / max(results["floor"]["cpu_ms_per_resource"], 1e-9)
    report = {"resources": RESOURCES, "interval_seconds": INTERVAL, "buckets": len(starts),
              "bucket_seconds": BUCKET_SECONDS, "bucket_fields_per_resource": fields_per_resource,
              "repeats": REPEATS, "verdicts": dict(verdicts), "served_by": sorted(served), **results,
              "analysis_cpu_vs_floor": round(ratio, 2),
              "analysis_cpu_ms_per_resource_per_interval": results["analysis"]["cpu_ms_per_resource"],
              "pass_cpu_ms_per_resource": results["pass_reads"]["cpu_ms_per_resource"]}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "analysis_cost.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    a, f, o, p = (results[name] for name in ("analysis", "floor", "arithmetic_only", "pass_reads"))
    print(f"per resource per {INTERVAL} s interval: analysis {a['cpu_ms_per_resource']} ms CPU, "
          f"{a['redis_commands_per_resource']} commands (1 round trip); floor {f['cpu_ms_per_resource']} ms CPU, "
          f"{f['redis_commands_per_resource']} commands: {ratio:.2f}x the floor "
          f"(the operator's own arithmetic alone: {o['cpu_ms_per_resource']} ms); every pass also: "
          f"{p['cpu_ms_per_resource']} ms CPU, {p['redis_commands_per_resource']} commands (table_serial + served_by)")


if __name__ == "__main__":
    main()
