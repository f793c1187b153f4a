"""Faults under load on real runtime processes (issue 14, "Faults under load", runtime part).

Redis is SIGKILLed and restarted while two runtime processes sharing it serve traffic,
and the LM fails every call, then answers slower than LM_TIMEOUT_SECS, then recovers,
while GET /health is sampled beside the storm. What is asserted is behaviour only
(which answers, which bodies, which transitions), never how fast: bench/chaos_runtime.py
measures the same scenarios.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

MODEL = "openai/fake-model"


@dataclass
class Answer:
    """One response seen by the load: its status, its error type and whether the body was JSON."""

    phase: str
    status: int
    error_type: str | None
    json: bool
    retry_after: str | None


def _answer(phase: str, response: httpx.Response) -> Answer:
    try:
        body: Any = response.json()
    except ValueError:
        return Answer(phase, response.status_code, None, False, None)
    error = body.get("error") if isinstance(body, dict) else None
    error_type = error.get("type") if isinstance(error, dict) else None
    return Answer(phase, response.status_code, error_type, True, response.headers.get("retry-after"))


@dataclass
class Load:
    """``workers`` threads per URL posting predictions until ``stop()``; ``question(i)`` names
    the i-th question a worker asks. ``phase`` labels the answers from now on."""

    urls: Sequence[str]
    question: Callable[[str, int], str]
    workers: int = 2
    phase: str = "before"
    answers: list[Answer] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> Load:
        for url in self.urls:
            for n in range(self.workers):
                thread = threading.Thread(target=self._run, args=(url, f"{url}#{n}"), daemon=True)
                thread.start()
                self._threads.append(thread)
        return self

    def _run(self, url: str, worker: str) -> None:
        with httpx.Client(base_url=url, timeout=60) as client:
            i = 0
            while not self._stop.is_set():
                phase = self.phase
                response = client.post("/v1/predict", json={"input": self.question(worker, i)})
                self.answers.append(_answer(phase, response))
                i += 1

    def count(self, phase: str | None = None) -> int:
        return sum(1 for a in self.answers if phase is None or a.phase == phase)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=120)


class HealthSampler:
    """GET /health in a loop beside the load: every answer's status and breaker state."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.samples: list[tuple[int, str | None]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=60) as client:
            while not self._stop.is_set():
                response = client.get("/health")
                try:
                    state = response.json()["components"]["breakers"][MODEL]
                except (ValueError, KeyError, TypeError):
                    state = None
                self.samples.append((response.status_code, state))
                time.sleep(0.01)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=120)


def _health(url: str) -> dict[str, Any]:
    return httpx.get(f"{url}/health", timeout=30).json()


def test_redis_sigkill_under_load_on_two_runtimes_fails_no_request_and_l2_is_used_again(
    spawn_runtime, fake_lm, redis_server, redis_url, poll
):
    # No L1: every request reads Redis, so its loss and its return show in each process's counters.
    pods = [spawn_runtime(REDIS_URL=redis_url, MEMORY_CACHE_SIZE="0") for _ in range(2)]
    for pod in pods:
        pod.wait_ready()
    # 30 questions shared by both pods: each reads what the other wrote; every 3rd request is new.
    load = Load([pod.url for pod in pods], lambda worker, i: f"new {worker} {i}" if i % 3 == 0 else f"shared {i % 30}")
    load.start()
    try:
        poll(lambda: all(pod.metric("dspy_cache_operations_total", level="redis", operation="hit") > 0 for pod in pods),
             what="both pods to hit Redis")
        load.phase = "outage"
        redis_server.kill()
        for pod in pods:
            poll(lambda pod=pod: _health(pod.url)["components"]["redis"] == "down", what="/health to say redis down")
        errors = [pod.metric("dspy_cache_operations_total", level="redis", operation="error") for pod in pods]
        assert all(e > 0 for e in errors), errors  # requests did reach a dead Redis, and were answered
        seen = load.count()
        poll(lambda: load.count() >= seen + 40, what="traffic during the outage")
        hits = [pod.metric("dspy_cache_operations_total", level="redis", operation="hit") for pod in pods]
        load.phase = "restarted"
        redis_server.start()
        for pod, before in zip(pods, hits, strict=True):
            poll(lambda pod=pod, before=before:
                 pod.metric("dspy_cache_operations_total", level="redis", operation="hit") > before,
                 what="Redis hits counted again after the restart")
            poll(lambda pod=pod: (h := _health(pod.url))["components"]["redis"] == "ok" and h["status"] == "ok",
                 what="/health ok again")
        seen = load.count("restarted")
        poll(lambda: load.count("restarted") >= seen + 20, what="traffic after the restart")
    finally:
        load.stop()
    assert load.count("outage") >= 40 and load.count("restarted") >= 20
    failed = [a for a in load.answers if a.status != 200]
    assert failed == [], failed[:5]
    assert all(a.json for a in load.answers)


def test_lm_failing_then_slow_then_recovering_breaker_opens_fails_fast_and_health_always_answers(
    spawn_runtime, fake_lm, poll
):
    threshold, successes, open_secs = 5, 2, 1.0
    pod = spawn_runtime(
        LM_MAX_RETRIES="0", LM_TIMEOUT_SECS="1",  # a healthy answer takes ms; a slow one 3 s
        CIRCUIT_BREAKER_FAILURE_THRESHOLD=str(threshold),
        CIRCUIT_BREAKER_SUCCESS_THRESHOLD=str(successes),
        CIRCUIT_BREAKER_TIMEOUT_SECS=str(open_secs),
    )
    pod.wait_ready()
    workers = 4
    # Every question new: each request would call the LM; none is answered from a cache.
    load = Load([pod.url], lambda worker, i: f"{worker} {i}", workers=workers)
    load.start()
    health = HealthSampler(pod.url)
    try:
        poll(lambda: load.count("before") >= 10, what="traffic before the storm")
        assert {a.status for a in load.answers} == {200}

        load.phase = "failing"
        fake_lm.configure(failure_rate=1.0)
        poll(lambda: _health(pod.url)["components"]["breakers"][MODEL] == "open", what="the breaker to open")
        calls, opened = fake_lm.calls, time.monotonic()
        seen = load.count("failing")
        poll(lambda: load.count("failing") >= seen + 60, what="fail-fast answers while open")
        windows = math.floor((time.monotonic() - opened) / open_secs) + 1
        # Fail fast: beyond the calls already in flight when it opened, only half-open probes
        # (at most SUCCESS_THRESHOLD per open period) reach the LM, not the 60 requests.
        assert fake_lm.calls - calls <= workers + successes * windows

        load.phase = "slow"
        fake_lm.configure(failure_rate=0.0, latency_ms=3000)
        poll(lambda: any(a.status == 504 for a in load.answers if a.phase == "slow"), what="a probe to time out")

        load.phase = "recovering"
        fake_lm.reset(prompt_tokens=100, completion_tokens=20)  # answers at once again; held probes released
        poll(lambda: _health(pod.url)["components"]["breakers"][MODEL] == "closed", what="the breaker to close")
        load.phase = "recovered"
        poll(lambda: load.count("recovered") >= 20, what="traffic after recovery")
    finally:
        load.stop()
        health.stop()

    documented = {502: "upstream_error", 503: "circuit_open", 504: "upstream_timeout"}
    for answer in load.answers:
        assert answer.json, answer
        if answer.status != 200:
            assert documented.get(answer.status) == answer.error_type, answer
    storm = [a for a in load.answers if a.phase in ("failing", "slow")]
    opens = [a for a in storm if a.status == 503]
    assert len(opens) >= 60 and all(a.retry_after and int(a.retry_after) >= 1 for a in opens)
    assert {a.status for a in load.answers if a.phase == "slow"} >= {503, 504}
    assert {a.status for a in load.answers if a.phase == "recovered"} == {200}

    # The event loop kept answering: /health was 200, with a readable breaker state, every time.
    assert health.samples and all(status == 200 and state for status, state in health.samples)
    states = [state for _, state in health.samples]
    assert {"closed", "open"} <= set(states)
    # The runtime's own log shows the path out: open -> half_open -> (probes fail) open, and finally closed.
    log = pod.output()
    for transition in ("closed -> open", "open -> half_open", "half_open -> open", "half_open -> closed"):
        assert f"circuit breaker {transition}" in log, transition
    assert "Traceback" not in log
