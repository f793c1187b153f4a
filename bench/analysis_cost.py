"""The operator's cost of judging one canary interval, per resource: CPU and Redis commands.

A real redis-server holds, for 50 resources, the buckets their pods would have written in
a 60 s interval (12 buckets of 5 s; two revisions with two variants each, every figure
of the contract: requests, errors, failure classes, the latency histogram, latency sum,
cache hits, tokens, cost). For each resource the operator's analysis runs as it does in a
pass (`observe.judgement`: one pipelined read, then windows, sums and the verdict), and
the per-pass reads every resource with Redis makes anyway (`table_serial`,
`served_tables`). The baseline, in the same run: the same pipelined HGETALLs with no
parsing, the floor any analysis pays for the round trip. Commands are counted from
Redis' own `INFO commandstats`.
"""

from __future__ import annotations

import json
import random
import shutil
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import redis

from harness import RESULTS, ROOT

sys.path.insert(0, str(ROOT / "tests"))
from servers import RedisServer  # noqa: E402

from dspy_operator import api, observe  # noqa: E402
from dspy_operator.reconcile.common import Owner  # noqa: E402
from dspy_operator.rollout.analysis import BUCKET_SECONDS, bucket_starts, settled_end  # noqa: E402
from dspy_operator.rollout.state import Plan, RolloutState  # noqa: E402
from dspy_operator.runtimebus import RuntimeBus  # noqa: E402

RESOURCES = 50
INTERVAL = 60
REPEATS = 5
STABLE, CANARY = "aaaaaaaaaaaa", "bbbbbbbbbbbb"
PLAN = Plan.from_spec({"rollout": {"strategy": "Canary", "canary": {
    "steps": [{"setWeight": 20}], "analysis": {"intervalSeconds": INTERVAL, "minRequests": 10,
                                                 "relative": {"maxP95LatencyRatio": 2, "maxErrorRateRatio": 2}}}}})
STATE = RolloutState(stable=STABLE, canary=CANARY, weight=20, step=1)


def owner(index: int) -> Owner:
    return Owner(name=f"qa-{index}", namespace="bench", uid=f"uid-{index}", generation=1, spec={})


def bucket_fields(rng: random.Random) -> dict[str, str]:
    fields: dict[str, str] = {}
    for revision in (STABLE, CANARY):
        for variant in ("baseline", "optimized"):
            requests = rng.randint(20, 200)
            errors = rng.randint(0, requests // 20)
            key = f"{revision}|{variant}|"
            fields.update({key + "requests": str(requests), key + "errors": str(errors),
                           key + "class:upstream_error": str(errors), key + "class:invalid_input": "1",
                           key + "latency_sum": str(requests * 0.04), key + "cache_hits": str(requests // 3),
                           key + "tokens_in": str(requests * 120), key + "tokens_out": str(requests * 30),
                           key + "cost_usd": str(requests * 0.0001)})
            for index in range(6, 12):
                fields[key + f"lat:{index}"] = str(requests // 6)
    return fields


def commands(client: redis.Redis) -> int:
    return sum(int(stats["calls"]) for stats in client.info("commandstats").values())


def main() -> None:
    executable = shutil.which("redis-server")
    if executable is None:
        raise SystemExit("redis-server is not installed: run `make debs`")
    workdir = Path(tempfile.mkdtemp(prefix="bench-analysis-"))
    server = RedisServer(executable, workdir)
    server.start()
    try:
        client = redis.Redis.from_url(server.url, decode_responses=True)
        now = datetime.now(timezone.utc)
        end = settled_end(now.timestamp())
        starts = list(bucket_starts(end - INTERVAL, end))
        rng = random.Random(7)
        for index in range(RESOURCES):
            prefix = api.redis_prefix("bench", f"qa-{index}")
            for start in starts:
                client.hset(f"{prefix}win:{start}", mapping=bucket_fields(rng))
        bus = RuntimeBus.from_url(server.url)

        def judge_all() -> None:
            for index in range(RESOURCES):
                observe.judgement(bus, owner(index), PLAN, STATE, now)

        def pass_reads() -> None:
            for index in range(RESOURCES):
                prefix = api.redis_prefix("bench", f"qa-{index}")
                bus.table_serial(prefix)
                bus.served_tables(prefix)

        def floor() -> None:
            for index in range(RESOURCES):
                pipe = client.pipeline(transaction=False)
                for start in starts:
                    pipe.hgetall(f"{api.redis_prefix('bench', f'qa-{index}')}win:{start}")
                pipe.execute()

        results = {}
        for name, run in (("analysis", judge_all), ("floor", floor), ("pass_reads", pass_reads)):
            run()  # warm the connection pools
            before_commands = commands(client)
            cpu, wall = time.process_time(), time.perf_counter()
            for _ in range(REPEATS):
                run()
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
            # INFO itself is one command per call; subtract the one this measurement made.
            sent = commands(client) - before_commands - 1
            results[name] = {
                "cpu_ms_per_resource": round(cpu * 1000 / (REPEATS * RESOURCES), 3),
                "wall_ms_per_resource": round(wall * 1000 / (REPEATS * RESOURCES), 3),
                "redis_commands_per_resource": round(sent / (REPEATS * RESOURCES), 1),
            }
        bus.close()
        client.close()
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    ratio = results["analysis"]["cpu_ms_per_resource"] / max(results["floor"]["cpu_ms_per_resource"], 1e-9)
    report = {"resources": RESOURCES, "interval_seconds": INTERVAL, "buckets": len(starts),
              "bucket_seconds": BUCKET_SECONDS, **results, "analysis_cpu_vs_floor": round(ratio, 2)}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "analysis_cost.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
