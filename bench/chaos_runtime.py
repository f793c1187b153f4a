"""Faults under load on two runtime processes: Redis SIGKILLed and restarted, an LM storm.

Two real runtime processes share one real redis-server and the project's fake LM, as
two pods of one resource share its Redis and its provider. Both run without L1
(MEMORY_CACHE_SIZE=0), so every request reads Redis and Redis's loss and return show
in each process's own `dspy_cache_operations_total{level="redis"}` counters.

1. Redis: one wrk per process (8 connections, 50 questions at random, so each reads
   what the other wrote) for 20 s; Redis is SIGKILLed at 5 s and restarted empty at
   10 s. Reported: wrk's failed requests (socket errors + non-2xx) across the outage,
   and the time from the restart until every process counts Redis hits again (its
   `/metrics`, polled every 10 ms) and `/health` says `redis: ok`.
2. LM storm, on two other processes (LM_TIMEOUT_SECS=1, no retries, breaker 5/2/2 s):
   after 5 s at rest, one wrk per process (8 connections, every question new, so each
   request needs the LM) while, per process, one thread GETs /health and one POSTs a new
   question every 10 ms, each on its own kept-alive connection. The LM fails every call
   for 6 s, then answers 3 s late for 4 s, then recovers. Reported: the time until both
   breakers open; the latency of the 503 `circuit_open` answers (fail fast) as the probe
   saw it and as the runtime logged it (its access log's `duration_ms`); every status and
   error type seen (probe, wrk, `dspy_errors_total`); /health p50/p99 during the storm
   against /health at rest (the same probes with no wrk, same run); and the time from the
   LM's recovery until both breakers are closed again, through half-open.

Client latencies are measured over loopback beside wrk's load, so they include queueing
behind it; the machine is a shared 2-core one, so read the ratios.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from harness import PYTHON, RESULTS, ROOT, exit_on_sigterm, fake_lm, free_port, runtime_env, server

sys.path.insert(0, str(ROOT / "tests"))
from servers import RedisServer, metric_sum  # noqa: E402

PODS = 2
LUA = str(Path(__file__).with_name("wrk_report.lua"))
WRK_SECONDS, KILL_AT, RESTART_AT = 20, 5.0, 10.0
CLIENTS = 8
FAIL_SECONDS, SLOW_SECONDS, REST_SECONDS = 6.0, 4.0, 5.0
STORM_SECONDS = 16  # wrk's run: the failing and slow phases, the recovery and a little after
MODEL = "openai/fake-model"
BREAKER = {"CIRCUIT_BREAKER_FAILURE_THRESHOLD": "5", "CIRCUIT_BREAKER_SUCCESS_THRESHOLD": "2",
           "CIRCUIT_BREAKER_TIMEOUT_SECS": "2", "LM_TIMEOUT_SECS": "1", "LM_MAX_RETRIES": "0"}


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def figures(seconds: Sequence[float]) -> dict[str, float]:
    """p50/p99/max of latencies in seconds, as milliseconds."""
    return {"count": len(seconds), "p50_ms": round(percentile(seconds, 0.50) * 1000, 3),
            "p99_ms": round(percentile(seconds, 0.99) * 1000, 3),
            "max_ms": round(max(seconds) * 1000, 3) if seconds else float("nan")}


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.load(response)


def metrics_text(url: str) -> str:
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as response:
        return str(response.read().decode())


def redis_hits(url: str) -> float:
    return metric_sum(metrics_text(url), "dspy_cache_operations_total", level="redis", operation="hit")


def wrk(url: str, seconds: float, **env: str) -> subprocess.Popen[str]:
    """wrk against ``url``'s /v1/predict in the background; its last line is wrk_report.lua's JSON."""
    return subprocess.Popen(
        ["wrk", "-t1", f"-c{CLIENTS}", f"-d{seconds}s", "--timeout", "10s", "-s", LUA, url + "/v1/predict"],
        env={"PATH": "/usr/bin:/bin", **env}, stdout=subprocess.PIPE, text=True,
    )


def configure_lm(lm_base: str, path: str, **config: Any) -> None:
    request = urllib.request.Request(lm_base.removesuffix("/v1") + path, data=json.dumps(config).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
    urllib.request.urlopen(request, timeout=10).close()


def redis_outage(pods: Sequence[str], redis: RedisServer) -> dict[str, Any]:
    """Scenario 1 (see the module docstring)."""
    runs = [wrk(url, WRK_SECONDS, WRK_QUESTIONS="50") for url in pods]
    began = time.monotonic()
    time.sleep(KILL_AT)
    redis.kill()
    time.sleep(RESTART_AT - KILL_AT)
    before = [redis_hits(url) for url in pods]
    redis.start()
    restarted = time.monotonic()
    hits_again: list[float] = []
    for url, hits in zip(pods, before, strict=True):
        while redis_hits(url) <= hits:
            time.sleep(0.01)
        hits_again.append(time.monotonic() - restarted)
    while any(get_json(f"{url}/health")["components"]["redis"] != "ok" for url in pods):
        time.sleep(0.01)
    health_ok = time.monotonic() - restarted
    results = [json.loads(run.communicate(timeout=WRK_SECONDS + 60)[0].strip().splitlines()[-1]) for run in runs]
    return {
        "requests": sum(r["requests"] for r in results),
        "failed_requests": sum(r["errors"] + r["non_2xx"] for r in results),
        "rps": round(sum(r["rps"] for r in results), 1),
        "p99_ms_per_pod": [r["p99_ms"] for r in results],
        "killed_at_s": KILL_AT, "restarted_at_s": round(restarted - began, 3),
        "l2_hits_again_after_restart_s": [round(s, 3) for s in hits_again],
        "health_redis_ok_after_restart_s": round(health_ok, 3),
    }


class Probe:
    """One thread per pod and kind beside the wrk load, on its own kept-alive connection:
    ``health`` GETs /health, ``predict`` POSTs a new question; each answer is recorded with
    the phase it was sent in, its status, error type and client-observed seconds."""

    def __init__(self, url: str, kind: str, storm: Storm) -> None:
        self.url, self.kind, self.storm = url, kind, storm
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        connection = http.client.HTTPConnection(self.url.removeprefix("http://"), timeout=60)
        i = 0
        while not self.storm.done:
            phase, start = self.storm.phase, time.perf_counter()
            if self.kind == "health":
                connection.request("GET", "/health")
            else:
                body = json.dumps({"input": f"probe {self.url} {i}"})
                connection.request("POST", "/v1/predict", body, {"Content-Type": "application/json"})
            response = connection.getresponse()
            raw = response.read()
            elapsed = time.perf_counter() - start
            try:
                body_json = json.loads(raw)
            except ValueError:
                body_json = None
            if self.kind == "health" and body_json is not None:
                self.storm.breakers[self.url] = body_json["components"]["breakers"][MODEL]
            error = (body_json or {}).get("error") if isinstance(body_json, dict) else None
            self.storm.samples.append(
                (self.kind, phase, response.status, error.get("type") if error else None, elapsed, body_json is not None))
            i += 1
            time.sleep(0.01)
        connection.close()


class Storm:
    """Scenario 2's shared state: the phase, the last breaker state seen per pod, the samples."""

    def __init__(self, pods: Sequence[str]) -> None:
        self.pods = pods
        self.phase = "rest"
        self.done = False
        self.breakers: dict[str, str] = {}
        self.samples: list[tuple[str, str, int, str | None, float, bool]] = []  # kind, phase, status, type, s, json

    def until_breakers(self, state: str) -> None:
        while any(self.breakers.get(url) != state for url in self.pods):
            time.sleep(0.005)

    def seconds(self, kind: str, phases: Sequence[str], error_type: str | None = None) -> list[float]:
        return [s for k, phase, _, kind_of_error, s, _ in self.samples
                if k == kind and phase in phases and (error_type is None or kind_of_error == error_type)]


def lm_storm(pods: Sequence[str], lm_base: str) -> dict[str, Any]:
    """Scenario 2 (see the module docstring)."""
    storm = Storm(pods)
    for url in pods:  # the first LM call of a process pays for DSPy's lazy set-up: not "at rest"
        urllib.request.urlopen(urllib.request.Request(f"{url}/v1/predict", json.dumps({"input": "warm"}).encode(),
                                                      {"Content-Type": "application/json"}), timeout=60).close()
    probes = [Probe(url, kind, storm) for url in pods for kind in ("health", "predict")]
    time.sleep(REST_SECONDS)  # at rest: the probes alone
    storm.phase = "failing"
    runs = [wrk(url, STORM_SECONDS, WRK_QUESTIONS="new", WRK_PREFIX=url) for url in pods]
    configure_lm(lm_base, "/admin/config", failure_rate=1.0)
    began = time.monotonic()
    storm.until_breakers("open")
    opened = time.monotonic() - began
    time.sleep(max(0.0, FAIL_SECONDS - opened))
    storm.phase = "slow"
    configure_lm(lm_base, "/admin/config", failure_rate=0.0, latency_ms=3000)
    time.sleep(SLOW_SECONDS)
    storm.phase = "recovering"
    configure_lm(lm_base, "/admin/reset")
    recovering = time.monotonic()
    storm.until_breakers("closed")
    recovered = time.monotonic() - recovering
    storm.phase = "recovered"
    loads = [json.loads(run.communicate(timeout=STORM_SECONDS + 60)[0].strip().splitlines()[-1]) for run in runs]
    storm.done = True
    for probe in probes:
        probe.thread.join(timeout=120)

    kinds = Counter(f"{status} {error_type or 'ok'}" for kind, _, status, error_type, _, _ in storm.samples
                    if kind == "predict")
    errors = {kind: sum(metric_sum(text, "dspy_errors_total", type=kind) for text in map(metrics_text, pods))
              for kind in ("upstream_error", "circuit_open", "upstream_timeout")}
    rest, during = figures(storm.seconds("health", ["rest"])), figures(storm.seconds("health", ["failing", "slow"]))
    return {
        "breakers_open_after_s": round(opened, 3),
        "wrk": {"requests": sum(r["requests"] for r in loads), "non_2xx": sum(r["non_2xx"] for r in loads),
                "socket_errors": sum(r["errors"] for r in loads)},
        "runtime_errors_total": errors,
        "probe_answers": dict(sorted(kinds.items())),
        "non_json_answers": sum(1 for sample in storm.samples if not sample[5]),
        "fail_fast_503": figures(storm.seconds("predict", ["failing", "slow"], "circuit_open")),
        "predict_at_rest": figures(storm.seconds("predict", ["rest"])),
        "health_at_rest": rest,
        "health_during_storm": during,
        "health_non_200": sum(1 for kind, _, status, _, _, _ in storm.samples if kind == "health" and status != 200),
        "health_p99_ratio_storm_to_rest": round(during["p99_ms"] / rest["p99_ms"], 2),
        "recovered_through_half_open_after_s": round(recovered, 3),
        "probe_answers_after_recovery": dict(sorted(Counter(
            f"{status} {error_type or 'ok'}" for kind, phase, status, error_type, _, _ in storm.samples
            if kind == "predict" and phase == "recovered").items())),
    }


@contextlib.contextmanager
def pods(lm_base: str, name: str, **extra: str) -> Iterator[list[str]]:
    """``PODS`` runtime processes with these settings; yields their base URLs."""
    with ExitStack() as stack:
        urls = []
        for index in range(PODS):
            port = free_port()
            stack.enter_context(server(f"{name}-{index}", [str(Path(PYTHON).parent / "dspy-runtime")],
                                       f"http://127.0.0.1:{port}/ready", runtime_env(lm_base, port, **extra)))
            urls.append(f"http://127.0.0.1:{port}")
        yield urls


def logs(name: str) -> str:
    return "".join((RESULTS / f"{name}-{index}.log").read_text(errors="replace") for index in range(PODS))


def served_seconds(log: str, error_type: str) -> list[float]:
    """The runtime's own ``duration_ms`` of every request it answered with ``error_type``
    (its access log): the time spent inside the process, without the client or the queue."""
    found = []
    for line in log.splitlines():
        if f'"error_type":"{error_type}"' in line:
            record = json.loads(line)
            if record.get("logger") == "dspy_runtime.access":
                found.append(float(record["duration_ms"]) / 1000)
    return found


def main() -> None:
    exit_on_sigterm()
    executable = shutil.which("redis-server")
    if executable is None or shutil.which("wrk") is None:
        raise SystemExit("redis-server and wrk are needed: run `make debs`")
    redis = RedisServer(executable, Path(tempfile.mkdtemp(prefix="bench-chaos-")))
    result: dict[str, Any] = {}
    try:
        redis.start()
        with fake_lm() as lm_base:
            # Default LM timeout and breaker: the LM is healthy here, only Redis fails.
            with pods(lm_base, "chaos-redis", REDIS_URL=redis.url, MEMORY_CACHE_SIZE="0") as urls:
                result["redis_sigkill"] = redis_outage(urls, redis)
            with pods(lm_base, "chaos-lm", **BREAKER) as urls:
                result["lm_storm"] = lm_storm(urls, lm_base)
            storm_log = logs("chaos-lm")
            result["lm_storm"]["fail_fast_503_in_process"] = figures(served_seconds(storm_log, "circuit_open"))
            result["tracebacks_in_logs"] = logs("chaos-redis").count("Traceback") + storm_log.count("Traceback")
    finally:
        redis.stop()
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "chaos_runtime.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
