"""Process plumbing shared by the benchmarks: free ports, servers that start and stop cleanly.

Benchmarks run real processes (the fake LM, the runtime, the bare baseline, wrk)
on loopback, so what they measure is what a pod would do; this module keeps the
start/wait/stop dance in one place.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
PYTHON = sys.executable


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def exit_on_sigterm() -> None:
    """SIGTERM unwinds like Ctrl-C, so every `finally` stops the processes a benchmark started."""
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))


def wait_http(url: str, timeout: float = 120.0) -> None:
    """Poll until the URL answers 200; servers here import DSPy, which takes seconds."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except Exception as exc:  # noqa: BLE001 - any failure means "not yet"
            last = exc
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not become ready in {timeout:.0f}s: {last}")


@contextlib.contextmanager
def server(name: str, args: list[str], ready_url: str, env: Mapping[str, str] | None = None) -> Iterator[subprocess.Popen[bytes]]:
    """Run a server process until the block ends; its output goes to bench/results/<name>.log."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    log = open(RESULTS / f"{name}.log", "wb")
    proc = subprocess.Popen(args, env={**os.environ, **(env or {})}, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    try:
        wait_http(ready_url)
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@contextlib.contextmanager
def fake_lm(latency_ms: float = 0.0) -> Iterator[str]:
    """The project's fake OpenAI-compatible LM; yields its base URL (…/v1)."""
    port = free_port()
    with server("fakelm", [PYTHON, "-m", "dspy_runtime.fakelm", "--port", str(port),
                           "--latency-ms", str(latency_ms)], f"http://127.0.0.1:{port}/stats"):
        yield f"http://127.0.0.1:{port}/v1"


def runtime_env(lm_base: str, port: int, **extra: str) -> dict[str, str]:
    """The environment of a runtime pod pointed at the fake LM, in-memory cache only."""
    return {
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "DSPY_SIGNATURE": "question -> answer",
        "DSPY_MODULE": "Predict",
        "LM_MODEL": "openai/fake-model",
        "LM_API_BASE": lm_base,
        "LM_API_KEY": "bench-dummy-key",
        "LITELLM_LOCAL_MODEL_COST_MAP": "true",
        "RATE_LIMIT_RPS": "0",
        **extra,
    }


@contextlib.contextmanager
def runtime(lm_base: str, **extra: str) -> Iterator[str]:
    """A runtime process (the `dspy-runtime` console script); yields its base URL."""
    port = free_port()
    with server("runtime", [str(Path(PYTHON).parent / "dspy-runtime")], f"http://127.0.0.1:{port}/ready",
                runtime_env(lm_base, port, **extra)):
        yield f"http://127.0.0.1:{port}"


def lm_calls(lm_base: str) -> int:
    """How many chat completions the fake LM has answered."""
    with urllib.request.urlopen(lm_base.removesuffix("/v1") + "/stats", timeout=5) as response:
        return int(json.load(response)["calls"])
