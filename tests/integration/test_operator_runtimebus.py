"""The operator's Redis I/O against a real redis-server, with keys written as the contract says."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest
import redis

from dspy_operator.rollout.analysis import FAIL, PASS, Thresholds, by_revision, judge, windows_from_buckets
from dspy_operator.api import redis_prefix as prefix
from dspy_operator.runtimebus import BusUnavailable, RuntimeBus, RuntimeBuses
from dspy_operator.status.pods import PodReport

P = "dspy:{demo/qa}:"


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    """A plain client for writing what runtime pods would write, and for checking what the bus wrote."""
    plain = redis.Redis.from_url(redis_url, decode_responses=True, socket_timeout=2)
    try:
        yield plain
    finally:
        plain.close()


@pytest.fixture
def bus(redis_url: str) -> Iterator[RuntimeBus]:
    buses = RuntimeBuses()
    try:
        yield buses.for_url(redis_url)
    finally:
        buses.close()


def subscribe(client: redis.Redis, channel: str) -> redis.client.PubSub:
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(channel)
    assert pubsub.get_message(timeout=2) is None  # consumes the subscribe confirmation
    return pubsub


def next_message(pubsub: redis.client.PubSub) -> str | None:
    message = pubsub.get_message(timeout=5)
    return None if message is None else message["data"]


def test_prefix_is_the_contract_hash_tag():
    assert prefix("demo", "qa") == P


def test_one_bus_per_url(redis_url):
    buses = RuntimeBuses()
    try:
        assert buses.for_url(redis_url) is buses.for_url(redis_url)
    finally:
        buses.close()


def test_publish_table_stores_table_and_serial_and_announces_the_serial(bus, client):
    pubsub = subscribe(client, f"{P}routing")
    assert bus.table_serial(P + "routing") is None
    table = json.dumps({"serial": 1764624000123, "revisions": [{"name": "3f9a0c1d2e4b", "weight": 100}]})
    bus.publish_table(P + "routing", table, 1764624000123)
    assert client.get(f"{P}routing") == table
    assert bus.table_serial(P + "routing") == 1764624000123
    assert next_message(pubsub) == "1764624000123"
    pubsub.close()


def test_table_serial_ignores_garbage(bus, client):
    client.set(f"{P}routing:serial", "not-a-number")
    assert bus.table_serial(P + "routing") is None


def test_read_buckets_fetches_whole_buckets_in_range_only(bus, client):
    for start in (1000, 1005, 1010, 1015):
        client.hset(f"{P}win:{start}", mapping={"r1|a|requests": str(start - 999)})
    client.hset("dspy:{demo/other}:win:1005", "r1|a|requests", "99")  # another resource
    assert bus.read_buckets(P, 1001, 1015) == {1005: {"r1|a|requests": "6"}, 1010: {"r1|a|requests": "11"}}
    assert bus.read_buckets(P, 1020, 1040) == {}


def test_served_tables_reads_every_pod_report_and_skips_malformed_ones(bus, client):
    client.hset(f"{P}pods", mapping={"qa-7d9-abc": "1764624000123 1764624005.25", "qa-7d9-def": "12 1764624004",
                                     "qa-7d9-ghi": "12 1764624004 cache_only error_rate 1 (threshold 0.5)",
                                     "qa-broken": "garbage"})
    client.expire(f"{P}pods", 60)
    assert bus.served_tables(P) == {
        "qa-7d9-abc": PodReport(1764624000123, 1764624005.25), "qa-7d9-def": PodReport(12, 1764624004.0),
        "qa-7d9-ghi": PodReport(12, 1764624004.0, "cache_only", "error_rate 1 (threshold 0.5)"),
    }
    assert bus.served_tables("dspy:{demo/none}:") == {}


def test_request_evaluation_posts_once_lists_it_pending_and_wakes_the_pods(bus, client):
    pubsub = subscribe(client, f"{P}eval")
    request = {"id": "0123456789abcdef", "revisions": ["3f9a0c1d2e4b", "77aa01bc9e0f"], "metric": "exact_match",
               "examples": [{"inputs": {"question": "2+2?"}, "expected": {"answer": "4"}}]}
    bus.request_evaluation(P, request)
    assert json.loads(client.get(f"{P}eval:0123456789abcdef")) == request
    assert 86000 < client.ttl(f"{P}eval:0123456789abcdef") <= 86400
    assert client.smembers(f"{P}eval:pending") == {"0123456789abcdef"}
    assert next_message(pubsub) == "0123456789abcdef"
    # Posting again keeps the stored request (NX) and announces again.
    client.expire(f"{P}eval:0123456789abcdef", 100)
    bus.request_evaluation(P, {**request, "metric": "f1"})
    assert json.loads(client.get(f"{P}eval:0123456789abcdef"))["metric"] == "exact_match"
    assert client.ttl(f"{P}eval:0123456789abcdef") <= 100
    assert next_message(pubsub) == "0123456789abcdef"
    pubsub.close()


def test_evaluation_runner_and_result_as_a_pod_writes_them(bus, client):
    assert bus.evaluation_runner(P, "0123456789abcdef") is None
    assert bus.evaluation_result(P, "0123456789abcdef") is None
    assert client.set(f"{P}eval:0123456789abcdef:lock", "qa-7d9-abc", nx=True, ex=600)
    assert bus.evaluation_runner(P, "0123456789abcdef") == "qa-7d9-abc"
    result = {"id": "0123456789abcdef", "state": "Succeeded", "message": "",
              "scores": {"3f9a0c1d2e4b": {"score": 0.9, "examples": 10, "errors": 0, "costUsd": 0.01}},
              "finishedAt": "2025-12-01T21:20:00Z"}
    client.set(f"{P}eval:0123456789abcdef:result", json.dumps(result), ex=86400)
    assert bus.evaluation_result(P, "0123456789abcdef") == result


def test_an_unreadable_evaluation_result_reads_as_failed(bus, client):
    client.set(f"{P}eval:0123456789abcdef:result", "{truncated")
    assert bus.evaluation_result(P, "0123456789abcdef") == {
        "id": "0123456789abcdef", "state": "Failed", "message": "the runtime wrote an unreadable evaluation result",
    }


def test_every_call_raises_bus_unavailable_fast_when_redis_is_down(redis_server, redis_url):
    bus = RuntimeBus.from_url(redis_url)
    try:
        assert bus.table_serial(P + "routing") is None  # connected once, then Redis goes away
        redis_server.stop()
        calls = [
            lambda: bus.publish_table(P + "routing", "{}", 1),
            lambda: bus.table_serial(P + "routing"),
            lambda: bus.read_buckets(P, 1000, 1010),
            lambda: bus.served_tables(P),
            lambda: bus.request_evaluation(P, {"id": "0123456789abcdef"}),
            lambda: bus.evaluation_result(P, "0123456789abcdef"),
            lambda: bus.evaluation_runner(P, "0123456789abcdef"),
        ]
        for call in calls:
            began = time.monotonic()
            with pytest.raises(BusUnavailable, match="^cannot "):
                call()
            assert time.monotonic() - began < 5  # no ten retries with backoff
        redis_server.start()
        assert bus.table_serial(P + "routing") is None  # the same bus works again once Redis is back
    finally:
        redis_server.start()
        bus.close()


def write_prediction(pipe: redis.client.Pipeline, start: int, revision: str, variant: str, *, latency_bucket: int,
                     error: str | None = None, cached: bool = False, cost: float = 0.0) -> None:
    """One prediction, recorded exactly as the contract says a runtime pod flushes it."""
    key, base = f"{P}win:{start}", f"{revision}|{variant}|"
    pipe.hincrby(key, f"{base}requests", 1)
    if error is not None:
        pipe.hincrby(key, f"{base}class:{error}", 1)
        if error in ("upstream_error", "upstream_timeout", "circuit_open", "internal_error"):
            pipe.hincrby(key, f"{base}errors", 1)
    pipe.hincrby(key, f"{base}lat:{latency_bucket}", 1)
    pipe.hincrbyfloat(key, f"{base}latency_sum", 0.5)
    if cached:
        pipe.hincrby(key, f"{base}cache_hits", 1)
    elif error is None:  # a failed prediction used no tokens
        pipe.hincrby(key, f"{base}tokens_in", 100)
        pipe.hincrby(key, f"{base}tokens_out", 20)
        pipe.hincrbyfloat(key, f"{base}cost_usd", cost)
    pipe.expire(key, 3600)


def test_windows_written_in_the_contract_format_are_read_back_and_judged(bus, client):
    stable, canary = "3f9a0c1d2e4b", "77aa01bc9e0f"
    pipe = client.pipeline(transaction=False)
    for start in range(1000, 1060, 5):
        for i in range(30):  # stable: 2 variants, warm cache, rare 5xx, fast
            write_prediction(pipe, start, stable, "baseline" if i % 2 else "optimized", latency_bucket=11,
                             cached=i % 3 == 0, cost=0.001, error="upstream_error" if i == 7 and start == 1000 else None)
        for i in range(6):  # canary: cold cache, 5xx in one request of six, slower
            write_prediction(pipe, start, canary, "baseline", latency_bucket=13, cost=0.001,
                             error="upstream_timeout" if i == 0 else ("rate_limited" if i == 1 else None))
    pipe.execute()
    client.hset(f"{P}win:1060", f"{canary}|baseline|requests", 1000)  # the open bucket: outside the window

    buckets = bus.read_buckets(P, 1000, 1062)
    assert sorted(buckets) == list(range(1000, 1060, 5))
    windows = by_revision(windows_from_buckets(buckets, 1000, 1062))
    assert (windows[stable].requests, windows[stable].errors) == (360, 1)
    assert (windows[canary].requests, windows[canary].errors) == (72, 12)
    assert dict(windows[canary].errors_by_class) == {"rate_limited": 12, "upstream_timeout": 12}
    # Per computed request the warm stable cache does not count, and neither does any failure: a
    # 4xx rejection (rate_limited) never reached the LM. The canary's 48 paid requests cost 0.048.
    assert windows[stable].cost_per_computed_request == pytest.approx(0.001)
    assert windows[canary].cost_per_computed_request == pytest.approx(0.048 / 48)
    assert windows[canary].p95_latency_seconds == pytest.approx(1.0 + 1.5 * 0.95)  # all in (1, 2.5]

    verdict = judge(Thresholds.from_spec({"minRequests": 50, "maxErrorRate": 0.1,
                                          "relative": {"maxCostPerRequestRatio": 1.2}}),
                    windows[canary], windows[stable])
    assert verdict.result == FAIL and verdict.message == "errorRate 0.1667 > 0.1"
    assert judge(Thresholds(min_requests=50, max_error_rate=0.2), windows[canary], windows[stable]).result == PASS
