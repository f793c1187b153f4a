"""The daily budget across real ``dspy-runtime`` processes on one real Redis: concurrent new
questions on two replicas never pay for more calls than the budget buys, and spend survives
Redis being killed (the operator's persistence) or losing its data (the pods' floor).

Prices are the fixtures' (1000 USD per million prompt tokens, 2000 per million completion
tokens; the fake LM reports 100 + 20 per call): a paid call costs 0.14 USD, and with
``LM_MAX_TOKENS=20`` a call reserves 2 LM calls x (about 140 prompt tokens x 0.001 + 20 x
0.002), about 0.36 USD, before it is made.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import httpx
import pytest
import redis

CALL_USD = 0.14
RESERVED_USD = 0.5
"""More than any call of these tests reserves (about 0.36), whatever the tokenizer counts."""
CALLS_BOUGHT = 8
BUDGET_USD = CALLS_BOUGHT * CALL_USD
CONCURRENCY = 16


def spent_in_redis(url: str) -> float:
    client = redis.Redis.from_url(url, socket_timeout=5)
    try:
        raw = client.get(f"dspy:budget:{datetime.now(UTC):%Y-%m-%d}")
        return float(raw) if raw is not None else 0.0
    finally:
        client.close()


def budget_pod(spawn_runtime: Callable[..., object], url: str, budget_usd: float) -> object:
    pod = spawn_runtime(REDIS_URL=url, DAILY_BUDGET_USD=str(budget_usd), LM_MAX_TOKENS="20")
    pod.wait_ready()
    return pod


def ask(base_url: str, question: str) -> httpx.Response:
    return httpx.post(f"{base_url}/v1/predict", json={"input": question}, timeout=120)


def assert_refused_for_budget(response: httpx.Response) -> None:
    assert response.status_code == 429, response.text
    assert response.json()["error"]["type"] == "budget_exhausted"


def settled(url: str, calls: int, poll: Callable[..., object]) -> float:
    """What Redis holds once every paid call's settle has landed (settles are written after the
    answers, batched per pod; a reservation counts until then)."""
    poll(lambda: spent_in_redis(url) == pytest.approx(calls * CALL_USD), timeout=30,
         what="every paid call's settle to reach Redis")
    return spent_in_redis(url)


def spend_until_refused(pods: list[object], prefix: str, limit: int = 40) -> httpx.Response:
    """New questions one at a time, alternating pods, until one is refused (that answer)."""
    for i in range(limit):
        response = ask(pods[i % len(pods)].url, f"{prefix} {i}")
        if response.status_code != 200:
            return response
    raise AssertionError(f"{limit} new questions were all paid for")


def test_two_replicas_under_concurrency_pay_for_no_more_calls_than_the_budget_buys(
        spawn_runtime, fake_lm, redis_url, poll):
    """32 new questions at once, 16 on each replica, while the fake LM holds every call it gets:
    each request either reached the LM (and reserved its worst case first) or was refused. The
    check-then-charge budget let all 32 through (spend 0 < limit for each) and paid for 32."""
    pods = [budget_pod(spawn_runtime, redis_url, BUDGET_USD) for _ in range(2)]
    fake_lm.configure(hold_models=["fake-model"])
    questions = [(pods[i % 2].url, f"concurrent question {i}") for i in range(2 * CONCURRENCY)]
    with ThreadPoolExecutor(max_workers=len(questions)) as pool:
        futures = [pool.submit(ask, url, question) for url, question in questions]
        poll(lambda: sum(f.done() for f in futures) + fake_lm.stats()["held"] == len(questions),
             timeout=120, what="every request to be refused or held at the LM")
        fake_lm.configure(hold_models=[])
        fake_lm.release()
        responses = [f.result() for f in futures]
    paid = [r for r in responses if r.status_code == 200]
    for response in responses:
        if response.status_code != 200:
            assert_refused_for_budget(response)
    assert 1 <= len(paid) <= CALLS_BOUGHT
    # One at a time, the rest of the budget is used until no call's worst case fits in it.
    assert_refused_for_budget(spend_until_refused(pods, "then one by one"))
    assert fake_lm.calls <= CALLS_BOUGHT, f"paid for {fake_lm.calls} calls on a budget for {CALLS_BOUGHT}"
    spent = settled(redis_url, fake_lm.calls, poll)
    assert BUDGET_USD - RESERVED_USD < spent <= BUDGET_USD, "used up to one reservation, never past the limit"
    for pod in pods:
        assert_refused_for_budget(ask(pod.url, "one more"))
        costs = httpx.get(f"{pod.url}/costs", timeout=10).json()["budget"]
        assert costs["exhausted"] is True and costs["reserved_usd"] == 0, "every reservation was settled"


def test_an_exhausted_budget_stays_exhausted_after_redis_is_killed_and_restarted(
        spawn_runtime, fake_lm, managed_redis, poll):
    """kill -9 of a Redis configured as the operator configures the managed one (append-only
    file), then a restart from the same directory: the spend is still there, for the pod that
    exhausted the budget and for a pod started afterwards. The operator's former Redis (no
    persistence) came back empty, and both pods paid for new questions again."""
    first = budget_pod(spawn_runtime, managed_redis.url, 0.7)
    assert_refused_for_budget(spend_until_refused([first], "before the crash"))
    paid = fake_lm.calls
    spent = settled(managed_redis.url, paid, poll)
    time.sleep(1.5)  # appendfsync everysec: a kill -9 loses at most the last second of writes
    managed_redis.kill()
    managed_redis.start()
    assert spent_in_redis(managed_redis.url) == pytest.approx(spent), "the append-only file kept it"
    second = budget_pod(spawn_runtime, managed_redis.url, 0.7)
    for pod in (first, second):
        for i in range(3):
            assert_refused_for_budget(ask(pod.url, f"after the crash {i}"))
    assert fake_lm.calls == paid


def test_a_pod_puts_back_the_spend_a_redis_lost(spawn_runtime, fake_lm, redis_server, redis_url, poll):
    """A Redis without persistence (or a replaced managed Redis pod) restarts empty: the pod that
    saw the day's total writes it back with its next call, so the budget stays exhausted for it
    and, from then on, for every pod (the budget that read Redis as the truth paid again)."""
    pod = budget_pod(spawn_runtime, redis_url, 0.7)
    assert_refused_for_budget(spend_until_refused([pod], "before the restart"))
    paid = fake_lm.calls
    spent = settled(redis_url, paid, poll)
    redis_server.stop()
    redis_server.start()
    assert spent_in_redis(redis_url) == 0.0, "this Redis forgot"
    assert_refused_for_budget(ask(pod.url, "after the restart"))
    assert spent_in_redis(redis_url) == pytest.approx(spent), "the pod's floor, written back"
    late = budget_pod(spawn_runtime, redis_url, 0.7)
    assert_refused_for_budget(ask(late.url, "a pod started after the restart"))
    assert fake_lm.calls == paid
