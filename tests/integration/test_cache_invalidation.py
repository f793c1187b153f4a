"""``DELETE /v1/cache`` on a real Redis with two runtimes: Redis and both replicas' memory are
cleared, by scope (all, revision, variant, one input), behind the admin token."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from dspy_runtime.cache import MemoryCache, RedisCache, TieredCache
from dspy_runtime.cache.invalidation import Invalidation, Invalidator
from dspy_runtime.cache.keys import CacheNames
from dspy_runtime.metrics import Metrics

TOKEN = "cache-admin-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
TABLE = {
    "serial": 1,
    "revisions": [
        {"name": "r1", "weight": 100, "variants": [{"name": "a", "weight": 50}, {"name": "b", "weight": 50}]},
        {"name": "r2", "weight": 0, "variants": [{"name": "a", "weight": 100, "program": {"module": "ChainOfThought"}}]},
    ],
}
TARGETS = [("r1", "a"), ("r1", "b"), ("r2", "a")]


def cache_keys(url: str) -> list[bytes]:
    return list(redis.Redis.from_url(url).scan_iter("dspy:cache:*"))


def level(runtime: Any, question: str, revision: str | None = None, variant: str | None = None) -> str | None:
    """The cache level that answered (None: the LM did)."""
    body: dict[str, Any] = {"input": question}
    if revision:
        body["revision"] = revision
    if variant:
        body["variant"] = variant
    response = runtime.predict(body)
    assert response.status_code == 200, response.text
    return response.json()["metadata"]["cache_level"]


def delete(runtime: Any, *, headers: dict[str, str] | None = AUTH, **kwargs: Any) -> httpx.Response:
    return runtime.client.request("DELETE", "/v1/cache", headers=headers, **kwargs)


@pytest.fixture
def pair(start_runtime, redis_url, tmp_path):
    """Two replicas on one Redis serving TABLE, the admin token set, every target of two
    questions cached in both replicas' memory."""
    table = tmp_path / "routing.json"
    table.write_text(json.dumps(TABLE))
    runtimes = [start_runtime(redis_url=redis_url, routing_path=table, cache_admin_token=TOKEN) for _ in range(2)]
    for runtime in runtimes:
        for revision, variant in TARGETS:
            for question in ("q1", "q2"):
                level(runtime, question, revision, variant)
                assert level(runtime, question, revision, variant) == "memory"
    assert len(cache_keys(redis_url)) == 6
    return runtimes


def remote_invalidations(runtime: Any) -> float:
    return runtime.metric("dspy_cache_invalidations_total", source="remote")


def test_clearing_everything_empties_redis_and_the_memory_of_both_replicas(pair, fake_lm, redis_url, poll):
    first, second = pair
    heard = remote_invalidations(second)
    response = delete(first)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["removed"] == {"redis": 6, "memory": 6}
    assert body["replicas_notified"] == 2  # both runtimes listen (the sender too)
    assert body["scope"] == {"revision": None, "variant": None, "inputs": False}
    assert cache_keys(redis_url) == []
    poll(lambda: remote_invalidations(second) > heard, what="the second replica to hear the invalidation")
    calls = fake_lm.calls
    assert level(first, "q1", "r1", "a") is None, "a miss on the replica that was asked: the LM answered"
    assert level(second, "q1", "r1", "a") == "redis", "a miss in the other replica's memory too"
    assert fake_lm.calls == calls + 1
    assert second.metric("dspy_cache_invalidated_entries_total", level="memory") == 6


@pytest.mark.parametrize(
    ("scope", "cleared"),
    [
        ({"params": {"variant": "b", "revision": "r1"}}, {("r1", "b")}),
        ({"params": {"variant": "a"}}, {("r1", "a"), ("r2", "a")}),
        ({"json": {"revision": "r2"}}, {("r2", "a")}),
        ({"json": {"revision": "r1"}, "params": {"revision": "r1"}}, {("r1", "a"), ("r1", "b")}),
    ],
)
def test_a_variant_or_a_revision_clears_only_its_entries(pair, redis_url, poll, scope, cleared):
    first, second = pair
    heard = remote_invalidations(second)
    body = delete(first, **scope).json()
    assert body["removed"] == {"redis": 2 * len(cleared), "memory": 2 * len(cleared)}, body
    assert len(cache_keys(redis_url)) == 6 - 2 * len(cleared)
    poll(lambda: remote_invalidations(second) > heard, what="the second replica to hear the invalidation")
    for revision, variant in TARGETS:
        expected = None if (revision, variant) in cleared else "memory"  # None: gone from memory and Redis
        assert level(second, "q2", revision, variant) == expected, (revision, variant)


def test_one_input_clears_that_input_for_every_variant_and_nothing_else(pair, redis_url, poll):
    first, second = pair
    heard = remote_invalidations(second)
    body = delete(first, json={"input": "  q1 "}).json()  # the key's normalization applies
    assert body["removed"] == {"redis": 3, "memory": 3} and body["scope"]["inputs"] is True
    poll(lambda: remote_invalidations(second) > heard, what="the second replica to hear the invalidation")
    for revision, variant in TARGETS:
        assert level(second, "q1", revision, variant) is None, (revision, variant)  # Redis lost it too
        assert level(second, "q2", revision, variant) == "memory", (revision, variant)
    narrowed = delete(first, json={"inputs": {"question": "q2"}, "variant": "b"}).json()
    assert narrowed["removed"] == {"redis": 1, "memory": 1}


def test_access_is_off_without_a_token_and_refused_with_a_wrong_one(start_runtime, redis_url):
    off = start_runtime(redis_url=redis_url)
    response = delete(off)
    assert response.status_code == 404
    assert response.json()["error"]["type"] == "disabled" and "CACHE_ADMIN_TOKEN" in response.json()["error"]["message"]

    on = start_runtime(redis_url=redis_url, cache_admin_token=TOKEN)
    missing = delete(on, headers=None)
    assert missing.status_code == 401 and missing.headers["WWW-Authenticate"] == "Bearer"
    assert missing.json()["error"]["type"] == "unauthorized"
    assert delete(on, headers={"Authorization": "Basic " + TOKEN}).status_code == 401
    wrong = delete(on, headers={"Authorization": "Bearer " + TOKEN[:-1] + "X"})
    assert wrong.status_code == 403 and wrong.json()["error"]["type"] == "forbidden"
    assert delete(on, headers={"X-Cache-Admin-Token": "nope"}).status_code == 403
    assert delete(on, headers={"X-Cache-Admin-Token": TOKEN}).status_code == 200
    assert TOKEN not in on.client.get("/config").text


@pytest.mark.parametrize(
    ("request_kwargs", "field"),
    [
        ({"params": {"variant": "nope"}}, "variant"),
        ({"params": {"revision": "nope"}}, "revision"),
        ({"json": {"revision": "r1"}, "params": {"revision": "r2"}}, "revision"),
        ({"json": {"inputs": {"query": "x"}}}, "inputs"),
        ({"json": {"variants": "a"}}, "variants"),
        ({"json": {"input": "x", "inputs": {"question": "x"}}}, "inputs"),
        ({"content": b"[1]", "headers": {**AUTH, "Content-Type": "application/json"}}, "JSON object"),
    ],
)
def test_bad_scopes_are_422_naming_the_field(start_runtime, redis_url, tmp_path, request_kwargs, field):
    table = tmp_path / "routing.json"
    table.write_text(json.dumps(TABLE))
    runtime = start_runtime(redis_url=redis_url, routing_path=table, cache_admin_token=TOKEN)
    response = delete(runtime, **{"headers": AUTH, **request_kwargs})
    assert response.status_code == 422, response.text
    assert field in response.json()["error"]["message"]


def test_without_redis_only_this_pods_memory_is_cleared(start_runtime):
    runtime = start_runtime(cache_admin_token=TOKEN)
    level(runtime, "q1")
    assert delete(runtime).json() == {
        "removed": {"redis": 0, "memory": 1}, "replicas_notified": 0,
        "scope": {"revision": None, "variant": None, "inputs": False},
    }
    assert level(runtime, "q1") is None


def test_redis_down_is_a_503_and_nothing_is_removed(start_runtime, redis_server, redis_url):
    runtime = start_runtime(redis_url=redis_url, cache_admin_token=TOKEN)
    level(runtime, "q1")
    redis_server.stop()
    response = delete(runtime)
    assert response.status_code == 503 and response.json()["error"]["type"] == "cache_unavailable"
    assert level(runtime, "q1") == "memory"


async def test_a_replica_that_missed_invalidations_while_disconnected_clears_its_memory(redis_url):
    """Pub/sub drops messages to a disconnected subscriber; the generation counter tells."""
    names = CacheNames()
    memory = MemoryCache(100, 60)
    cache = TieredCache(memory, RedisCache.from_url(redis_url, 60))
    listener = Invalidator(cache, names, Metrics())
    other = Invalidator(TieredCache(None, RedisCache.from_url(redis_url, 60)), names, Metrics())
    try:
        task = asyncio.create_task(listener.run())
        await other.invalidate(Invalidation("all"))  # generation 1, heard or read at subscription
        for _ in range(200):
            if listener._generation == 1:  # subscribed and caught up
                break
            await asyncio.sleep(0.05)
        memory.set("k", b"v")
        task.cancel()  # disconnected ...
        await asyncio.gather(task, return_exceptions=True)
        await other.invalidate(Invalidation("keys", frozenset({"k"})))  # ... while this is published
        assert memory.get("k") == b"v", "nobody told it"
        task = asyncio.create_task(listener.run())  # reconnected
        for _ in range(200):
            if memory.get("k") is None:
                break
            await asyncio.sleep(0.05)
        assert memory.get("k") is None
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    finally:
        await cache.close()
        await other._cache.close()
