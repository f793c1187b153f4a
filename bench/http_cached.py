"""Throughput and latency of a cached POST /v1/predict against a bare FastAPI endpoint.

Both servers run under uvicorn (one worker, uvloop, httptools, no access log) on
loopback and are driven by wrk, alternating rounds so that the machine's noise
falls on both alike. The bare endpoint returns the very JSON the runtime returns,
so the ratio is the price of the runtime's own work on a cache hit.

Goals (issue 13): at 50 clients, at least the bare throughput (ratio >= 1.0) with a p99
no more than 1.5 times the bare p99; at 1 client, a p50 no more than the bare p50. The
ratios are the medians of the rounds, and each ratio's spread over the rounds (each
round's runtime figure over the same round's bare one) is reported beside it.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import urllib.request
from pathlib import Path

from harness import PYTHON, RESULTS, fake_lm, free_port, runtime, server

BODY = json.dumps({"inputs": {"question": "What is DSPy?"}})
LUA = str(Path(__file__).with_name("wrk_report.lua"))
ROUNDS = 3
SECONDS = 8


def wrk(url: str, connections: int) -> dict[str, float]:
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{SECONDS}s", "--latency", "-s", LUA, url + "/v1/predict"],
        env={"WRK_BODY": BODY, "PATH": "/usr/bin:/bin"}, capture_output=True, text=True, check=True,
    ).stdout
    result: dict[str, float] = json.loads(out.strip().splitlines()[-1])
    if result["errors"] or result["non_2xx"]:
        raise RuntimeError(f"wrk saw errors against {url}: {result}")
    return result


def warm(url: str) -> bytes:
    request = urllib.request.Request(url + "/v1/predict", data=BODY.encode(), headers={"Content-Type": "application/json"})
    for _ in range(2):  # the second answer comes from the cache
        with urllib.request.urlopen(request, timeout=30) as response:
            body = response.read()
    if not json.loads(body)["metadata"]["cached"]:
        raise RuntimeError("the warm-up request was not served from the cache")
    return body


def main() -> None:
    with fake_lm() as lm, runtime(lm) as rt:
        cached_body = warm(rt)
        bare_port = free_port()
        with server("bare", [PYTHON, str(Path(__file__).with_name("bare_app.py")), str(bare_port)],
                    f"http://127.0.0.1:{bare_port}/docs", {"BARE_BODY": cached_body.decode()}):
            bare = f"http://127.0.0.1:{bare_port}"
            runs: dict[str, list[dict[str, float]]] = {k: [] for k in ("bare50", "rt50", "bare1", "rt1")}
            for round_ in range(ROUNDS):
                print(f"  round {round_ + 1}/{ROUNDS}", file=sys.stderr)
                runs["bare50"].append(wrk(bare, 50))
                runs["rt50"].append(wrk(rt, 50))
                runs["bare1"].append(wrk(bare, 1))
                runs["rt1"].append(wrk(rt, 1))

    def med(key: str, field: str) -> float:
        return statistics.median(r[field] for r in runs[key])

    report = {
        "bare_rps_c50": med("bare50", "rps"), "runtime_rps_c50": med("rt50", "rps"),
        "bare_p50_ms_c50": med("bare50", "p50_ms"), "runtime_p50_ms_c50": med("rt50", "p50_ms"),
        "bare_p99_ms_c50": med("bare50", "p99_ms"), "runtime_p99_ms_c50": med("rt50", "p99_ms"),
        "bare_p50_ms_c1": med("bare1", "p50_ms"), "runtime_p50_ms_c1": med("rt1", "p50_ms"),
        "bare_p99_ms_c1": med("bare1", "p99_ms"), "runtime_p99_ms_c1": med("rt1", "p99_ms"),
    }
    def ratios(runtime_key: str, bare_key: str, field: str) -> list[float]:
        return [round(r[field] / b[field], 3) for r, b in zip(runs[runtime_key], runs[bare_key], strict=True)]

    report["throughput_ratio_c50"] = report["runtime_rps_c50"] / report["bare_rps_c50"]
    report["p99_ratio_c50"] = report["runtime_p99_ms_c50"] / report["bare_p99_ms_c50"]
    report["p50_ratio_c1"] = report["runtime_p50_ms_c1"] / report["bare_p50_ms_c1"]
    report["throughput_ratio_c50_rounds"] = ratios("rt50", "bare50", "rps")
    report["p99_ratio_c50_rounds"] = ratios("rt50", "bare50", "p99_ms")
    report["p50_ratio_c1_rounds"] = ratios("rt1", "bare1", "p50_ms")
    report["goal_throughput_ratio_c50"] = ">= 1.0"
    report["goal_p99_ratio_c50"] = "<= 1.5"
    report["goal_p50_ratio_c1"] = "<= 1.0"
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "http_cached.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
