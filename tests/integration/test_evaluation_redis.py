"""The evaluation gate against a real Redis: several "pods" (Evaluator instances) on one
request, pub/sub and the pending-set scan, locks of crashed and stopping pods, Redis outages."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from redis.asyncio import Redis

from dspy_runtime.cache import redis_client
from dspy_runtime.errors import UpstreamError
from dspy_runtime.evaluation import EvalKeys, EvalPrediction, Evaluator

PREFIX = "dspy:{default/qa}:"
KEYS = EvalKeys(PREFIX)
FAST = {"scan_interval": 0.1, "backoff": (0.05, 0.2)}


def request_body(eval_id: str, revisions: list[str], n: int = 3, metric: str = "exact_match") -> dict[str, Any]:
    return {
        "id": eval_id,
        "revisions": revisions,
        "metric": metric,
        "examples": [{"inputs": {"question": f"q{i}"}, "expected": {"answer": f"a{i}"}} for i in range(n)],
    }


async def submit(
    client: Redis, body: dict[str, Any] | str, eval_id: str | None = None, *, publish: bool = True
) -> str:
    """What the operator does: the request (EX 86400), the pending set, then the PUBLISH."""
    eval_id = eval_id or body["id"]  # type: ignore[index]
    await client.set(KEYS.request(eval_id), body if isinstance(body, str) else json.dumps(body), ex=86400)
    await client.sadd(KEYS.pending, eval_id)
    if publish:
        await client.publish(KEYS.channel, eval_id)
    return eval_id


async def eventually(check: Callable[[], Any], timeout: float = 20.0, what: str = "condition") -> Any:
    """Poll ``check`` (sync, or returning an awaitable) until its value is truthy; that value."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def result_of(client: Redis, eval_id: str, timeout: float = 20.0) -> dict[str, Any]:
    raw = await eventually(lambda: client.get(KEYS.result(eval_id)), timeout, what=f"the result of {eval_id}")
    return json.loads(raw)


class Pod:
    """One runtime pod's evaluator, with a fake predict: right answers for revision ``good``
    (in another case and with spaces), wrong for ``bad``, failures for ``broken``."""

    def __init__(self, url: str, name: str, *, delay: float = 0.0, **options: Any) -> None:
        self.name = name
        self.client = redis_client(url)
        self.calls: list[tuple[str, str, int]] = []
        self.delay = delay
        self.release = asyncio.Event()
        self.release.set()
        self.evaluator = Evaluator(self.client, PREFIX, name, self.predict, **{**FAST, **options})
        self.task: asyncio.Task[None] | None = None

    async def predict(self, eval_id: str, revision: str, inputs: dict[str, Any], index: int) -> EvalPrediction:
        self.calls.append((eval_id, revision, index))
        await self.release.wait()
        await asyncio.sleep(self.delay)
        if revision == "broken" or (revision == "flaky" and index % 2):
            raise UpstreamError("the LM call failed (openai/fake-model: error, HTTP 500)")
        answer = f"  A{index} " if revision in ("good", "flaky") else "no idea"
        return EvalPrediction({"answer": answer}, cost_usd=0.25)

    def start(self) -> None:
        self.task = asyncio.create_task(self.evaluator.run(), name=f"evaluator-{self.name}")

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        await self.client.aclose()


@pytest.fixture
async def operator_client(redis_url: str) -> AsyncIterator[Redis]:
    """The operator's side of Redis (decoded strings, for readable assertions)."""
    client = Redis.from_url(redis_url, decode_responses=True, socket_timeout=2)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
async def pods(redis_url: str, operator_client: Redis) -> AsyncIterator[Callable[..., Awaitable[Pod]]]:
    """``await pods(name, **evaluator_options)`` -> a started pod, subscribed to the channel."""
    started: list[Pod] = []

    async def start(name: str, **options: Any) -> Pod:
        pod = Pod(redis_url, name, **options)
        started.append(pod)
        pod.start()
        subscribers = sum(1 for p in started if p.task is not None and not p.task.done())

        async def subscribed() -> bool:
            counts = dict(await operator_client.pubsub_numsub(KEYS.channel))
            return counts.get(KEYS.channel, 0) >= subscribers

        await eventually(subscribed, what=f"{name} to subscribe")
        return pod

    try:
        yield start
    finally:
        for pod in started:
            await pod.stop()


async def test_one_pod_of_two_runs_a_request_and_scores_each_revision(pods, operator_client) -> None:
    first, second = await pods("pod-a"), await pods("pod-b")
    eval_id = await submit(operator_client, request_body("00000000000000a1", ["good", "bad"], n=3))
    result = await result_of(operator_client, eval_id)

    assert result["state"] == "Succeeded"
    assert result["scores"] == {
        "good": {"score": 1.0, "examples": 3, "errors": 0, "costUsd": 0.75},
        "bad": {"score": 0.0, "examples": 3, "errors": 0, "costUsd": 0.75},
    }
    assert result["id"] == eval_id
    assert result["message"] == "3 example(s) x 2 revision(s) scored by exact_match"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", result["finishedAt"])
    # Exactly one pod ran it: every (example, revision) pair once, on one pod.
    runner, idle = (first, second) if first.calls else (second, first)
    assert sorted(runner.calls) == sorted((eval_id, rev, i) for rev in ("good", "bad") for i in range(3))
    assert idle.calls == []
    # Cleaned up: no longer pending, no lock left; the result expires after a day.
    assert not await operator_client.sismember(KEYS.pending, eval_id)
    assert await operator_client.exists(KEYS.lock(eval_id)) == 0
    assert 86000 < await operator_client.ttl(KEYS.result(eval_id)) <= 86400
    # Later scans and re-publishes of a finished request run nothing again.
    await operator_client.publish(KEYS.channel, eval_id)
    await operator_client.sadd(KEYS.pending, eval_id)
    await asyncio.sleep(0.5)
    assert len(runner.calls) == 6 and idle.calls == []


async def test_failed_predictions_score_zero_and_count_as_errors(pods, operator_client) -> None:
    await pods("pod-a", concurrency=2)
    eval_id = await submit(operator_client, request_body("00000000000000b2", ["broken", "flaky"], n=4, metric="f1"))
    result = await result_of(operator_client, eval_id)
    assert result["state"] == "Succeeded"
    assert result["scores"] == {
        "broken": {"score": 0.0, "examples": 4, "errors": 4, "costUsd": 0.0},
        "flaky": {"score": 0.5, "examples": 4, "errors": 2, "costUsd": 0.5},
    }
    assert "broken: 4 of 4 predictions failed (first: upstream_error: the LM call failed" in result["message"]
    assert "flaky: 2 of 4 predictions failed" in result["message"]


async def test_a_request_missed_by_pub_sub_is_picked_up_from_the_pending_set(pods, operator_client) -> None:
    pod = await pods("pod-a")
    eval_id = await submit(operator_client, request_body("00000000000000c3", ["good"]), publish=False)
    result = await result_of(operator_client, eval_id)
    assert result["scores"]["good"]["score"] == 1.0
    assert len(pod.calls) == 3


async def test_the_lock_of_a_crashed_pod_expires_and_another_pod_runs_the_request(pods, operator_client) -> None:
    eval_id = "00000000000000d4"
    # What a pod that died mid-run leaves: its lock (short TTL here), no result.
    await operator_client.set(KEYS.lock(eval_id), "pod-crashed", ex=1)
    await submit(operator_client, request_body(eval_id, ["good", "bad"]), publish=False)
    pod = await pods("pod-b")
    await asyncio.sleep(0.4)  # several scans: the lock holds them off
    assert pod.calls == [] and await operator_client.get(KEYS.lock(eval_id)) == "pod-crashed"
    result = await result_of(operator_client, eval_id)
    assert result["scores"]["good"]["score"] == 1.0 and len(pod.calls) == 6


async def test_a_long_run_keeps_its_lock_and_shows_who_runs_it(pods, operator_client) -> None:
    # Each prediction takes 0.6 s: the run outlasts the 1 s lock TTL several times over.
    runner = await pods("pod-a", lock_ttl=1, delay=0.6, concurrency=1)
    eval_id = await submit(operator_client, request_body("00000000000000e5", ["good"], n=4))
    await eventually(lambda: runner.calls, what="the run to start")
    other = await pods("pod-b", lock_ttl=1)
    await asyncio.sleep(1.5)
    assert await operator_client.get(KEYS.lock(eval_id)) == "pod-a"
    result = await result_of(operator_client, eval_id)
    assert result["scores"]["good"] == {"score": 1.0, "examples": 4, "errors": 0, "costUsd": 1.0}
    assert other.calls == [] and len(runner.calls) == 4


async def test_a_pod_stopped_mid_run_releases_its_lock_for_another_pod(pods, operator_client) -> None:
    stopping = await pods("pod-a")
    stopping.release.clear()  # its predictions hang until stopped
    eval_id = await submit(operator_client, request_body("00000000000000f6", ["good"]))
    await eventually(lambda: stopping.calls, what="the run to start")
    assert await operator_client.get(KEYS.lock(eval_id)) == "pod-a"
    await stopping.stop()
    assert await operator_client.exists(KEYS.lock(eval_id)) == 0  # released at once, not after 600 s
    taking_over = await pods("pod-b")
    result = await result_of(operator_client, eval_id)
    assert result["scores"]["good"]["score"] == 1.0 and len(taking_over.calls) == 3


async def test_an_invalid_request_gets_a_failed_result_and_the_pod_goes_on(pods, operator_client) -> None:
    pod = await pods("pod-a")
    bad = await submit(operator_client, request_body("0000000000000a07", ["good"], metric="bleu"))
    result = await result_of(operator_client, bad)
    assert result["state"] == "Failed" and result["scores"] == {}
    assert result["message"].startswith("invalid evaluation request: metric: Input should be")
    not_json = await submit(operator_client, "{oops", "0000000000000a08")
    assert "not JSON" in (await result_of(operator_client, not_json))["message"]
    assert not await operator_client.sismember(KEYS.pending, bad)
    assert await operator_client.exists(KEYS.lock(bad), KEYS.lock(not_json)) == 0
    good = await submit(operator_client, request_body("0000000000000a09", ["good"]))
    assert (await result_of(operator_client, good))["state"] == "Succeeded"
    assert len(pod.calls) == 3


async def test_a_request_waits_for_a_pod_that_serves_its_revisions(pods, operator_client) -> None:
    served = {"good"}
    pod = await pods("pod-a", serves=served.__contains__)
    eval_id = await submit(operator_client, request_body("0000000000000b10", ["good", "new"]))
    await asyncio.sleep(0.4)
    assert pod.calls == [] and await operator_client.exists(KEYS.lock(eval_id)) == 0
    served.add("new")  # the pod adopts the routing table that names the new revision
    result = await result_of(operator_client, eval_id)
    assert set(result["scores"]) == {"good", "new"} and len(pod.calls) == 6


async def test_redis_outage_is_logged_once_and_evaluations_resume(pods, redis_server, caplog) -> None:
    caplog.set_level(logging.INFO, logger="dspy_runtime.evaluation")
    pod = await pods("pod-a")
    redis_server.stop()
    await asyncio.sleep(1.5)  # many reconnect attempts (back-off 0.05 s to 0.2 s)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert warnings[0].getMessage().startswith("evaluations: Redis is unavailable")
    assert pod.task is not None and not pod.task.done()

    redis_server.start()  # empty: no persistence
    operator = Redis.from_url(redis_server.url, decode_responses=True, socket_timeout=2)  # the old pool is dead
    try:
        eval_id = await submit(operator, request_body("0000000000000c11", ["good"]), publish=False)
        result = await result_of(operator, eval_id)
    finally:
        await operator.aclose()
    assert result["scores"]["good"]["score"] == 1.0
    assert "evaluations: Redis is reachable again" in [r.getMessage() for r in caplog.records]


# ---- end to end: a real runtime app, its prediction path and the fake LM --------------------------

STABLE, CANARY = "5ab1e0000001", "ca4a40000002"


def test_a_runtime_pod_runs_a_request_through_its_prediction_path(start_runtime, fake_lm, redis_url, tmp_path, poll):
    import redis

    from dspy_runtime.fakelm import field_value

    table = {
        "revisions": [
            {"name": STABLE, "weight": 100, "variants": [{"name": "baseline", "weight": 100}]},
            # Weight 0: no traffic, but pinnable. Its program answers in another field, so it scores 0.
            {"name": CANARY, "weight": 0, "variants": [{"name": "baseline", "weight": 100,
                                                       "program": {"signature": "question -> reply"}}]},
        ]
    }  # fmt: skip
    path = tmp_path / "routing.json"
    path.write_text(json.dumps(table))
    runtime = start_runtime(redis_url=redis_url, dspy_resource="default/qa", routing_path=path, hostname="pod-e2e")
    client = redis.Redis.from_url(redis_url, decode_responses=True, socket_timeout=5)

    def run(eval_id: str) -> dict[str, Any]:
        body = {
            "id": eval_id,
            "revisions": [STABLE, CANARY],
            "metric": "exact_match",
            "examples": [
                {"inputs": {"question": f"q{i}"}, "expected": {"answer": field_value("answer", "str", f"q{i}")}}
                for i in range(3)
            ],
        }
        client.set(KEYS.request(eval_id), json.dumps(body), ex=86400)
        client.sadd(KEYS.pending, eval_id)
        client.publish(KEYS.channel, eval_id)
        raw = poll(lambda: client.get(KEYS.result(eval_id)), timeout=120, what=f"the result of {eval_id}")
        return json.loads(raw)

    try:
        result = run("e2e0000000000001")
        assert result["state"] == "Succeeded", result
        stable, canary = result["scores"][STABLE], result["scores"][CANARY]
        assert (stable["score"], stable["examples"], stable["errors"]) == (1.0, 3, 0)
        assert (canary["score"], canary["examples"], canary["errors"]) == (0.0, 3, 0)
        # 100 prompt and 20 completion tokens per call at the fake model's price: 0.14 USD.
        assert stable["costUsd"] == pytest.approx(0.42) and canary["costUsd"] == pytest.approx(0.42)
        assert fake_lm.calls == 6
        assert client.sismember(KEYS.pending, "e2e0000000000001") == 0
        assert client.exists(KEYS.lock("e2e0000000000001")) == 0

        # The same examples again: answered from the cache, so nothing is spent.
        again = run("e2e0000000000002")
        assert again["scores"][STABLE]["score"] == 1.0 and again["scores"][STABLE]["costUsd"] == 0.0
        assert fake_lm.calls == 6
        assert runtime.client.get("/ready").status_code == 200
    finally:
        client.close()
