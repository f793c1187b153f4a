"""The daily budget shared through a real Redis by several replicas, and its fallback."""

import asyncio
import time
from datetime import UTC, datetime, timedelta

import pytest
from redis.asyncio import Redis

from dspy_runtime.cache import redis_client
from dspy_runtime.resilience import Budget

DAY = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
KEY = "dspy:budget:2026-11-23"


def replica(url: str, limit: float = 1.0) -> tuple[Budget, Redis]:
    client = redis_client(url)
    return Budget(limit, client, now=lambda: DAY, backoff_seconds=0.0), client


async def test_two_replicas_spend_atomically_into_one_counter(redis_url: str) -> None:
    (first, c1), (second, c2) = replica(redis_url), replica(redis_url)
    try:
        await asyncio.gather(*(b.spend(0.01) for b in (first, second) for _ in range(50)))
        assert await first.spent_today() == pytest.approx(1.0)
        assert await second.spent_today() == pytest.approx(1.0)
        assert await first.exhausted() and await second.exhausted()
        # No TTL: the managed Redis' volatile-lru policy never evicts the day's spend.
        assert await c1.ttl(KEY) == -1
    finally:
        await c1.aclose()
        await c2.aclose()


async def test_one_replica_sees_the_others_spend(redis_url: str) -> None:
    (first, c1), (second, c2) = replica(redis_url), replica(redis_url)
    try:
        await first.spend(0.7)
        assert not await second.exhausted()
        assert await second.spend(0.3) == pytest.approx(1.0)
        assert await first.exhausted()
    finally:
        await c1.aclose()
        await c2.aclose()


async def test_falls_back_to_a_local_count_and_syncs_it_when_redis_returns(redis_server, redis_url: str) -> None:
    budget, client = replica(redis_url)
    try:
        await budget.spend(0.5)
        redis_server.stop()
        assert await budget.spend(0.25) == pytest.approx(0.75)  # never raises
        assert not budget.healthy
        assert await budget.spend(0.25) == pytest.approx(1.0)
        assert await budget.exhausted()

        redis_server.start()  # empty again: no persistence
        # The 0.5 this replica saw in Redis is its floor; the outage's 0.5 is still to add.
        assert await budget.spent_today() == pytest.approx(1.0)
        assert budget.healthy
        # Both go to Redis with the next spend (the old budget forgot the 0.5 and wrote 0.6).
        assert await budget.spend(0.1) == pytest.approx(1.1)
        assert float(await client.get(KEY)) == pytest.approx(1.1)
    finally:
        await client.aclose()


async def test_reservations_of_two_replicas_never_exceed_the_limit(redis_url: str) -> None:
    (first, c1), (second, c2) = replica(redis_url), replica(redis_url)
    try:
        holds = await asyncio.gather(*(b.reserve(0.1, 60) for b in (first, second) for _ in range(25)))
        admitted = [h for h in holds if h is not None]
        assert len(admitted) == 10, "1.0 holds ten reservations of 0.1, whoever asks"
        assert first.refusing or second.refusing
        await asyncio.gather(*(first.settle(h, 0.05) for h in admitted))  # any replica may settle
        assert await second.spent_today() == pytest.approx(0.5)
        assert await c1.hget(f"{KEY}:held", "total") is None, "no reservation left, none drifting"
        again = await asyncio.gather(*(second.reserve(0.1, 60) for _ in range(10)))
        assert sum(h is not None for h in again) == 5
        assert second.reserved_today == pytest.approx(0.5)
    finally:
        await c1.aclose()
        await c2.aclose()


async def test_a_reservation_never_settled_lapses_at_its_deadline(redis_url: str) -> None:
    """A pod that died mid-call never settles; its hold lapses by Redis' clock, not at midnight."""
    (crashed, c1), (survivor, c2) = replica(redis_url), replica(redis_url)
    try:
        assert await crashed.reserve(0.9, hold_seconds=0.5) is not None
        assert await survivor.reserve(0.5, 60) is None
        deadline = time.monotonic() + 30  # an upper bound on the wait, not a measurement
        while await survivor.reserve(0.5, 60) is None:
            assert time.monotonic() < deadline, "the crashed pod's hold never lapsed"
            await asyncio.sleep(0.05)
    finally:
        await c1.aclose()
        await c2.aclose()


async def test_concurrent_settles_share_script_calls_and_all_land_in_redis(redis_url: str) -> None:
    budget, client = replica(redis_url, limit=10.0)
    try:
        await budget.spend(0.0001)  # loads the script
        await client.config_resetstat()
        await asyncio.gather(*(budget.spend(0.01) for _ in range(100)))
        calls = (await client.info("commandstats"))["cmdstat_evalsha"]["calls"]
        # The first call carries its own spend; the next, everything that arrived meanwhile.
        assert calls <= 3, f"{calls} script calls for 100 concurrent spends"
        assert float(await client.get(KEY)) == pytest.approx(1.0001)
    finally:
        await client.aclose()


async def test_a_new_day_starts_at_zero_and_retires_the_old_days_keys(redis_url: str) -> None:
    today = [DAY]
    client = redis_client(redis_url)
    budget = Budget(1.0, client, now=lambda: today[0], backoff_seconds=0.0)
    try:
        hold = await budget.reserve(0.2, 60)
        assert hold is not None
        await budget.spend(0.9)
        today[0] = DAY + timedelta(days=1)
        assert await budget.settle(hold, 0.1) == pytest.approx(0.1), "the call counts on the day it ended"
        ttls = [await client.ttl(key) for key in (KEY, f"{KEY}:held", f"{KEY}:deadlines")]
        assert all(0 < ttl <= 24 * 3600 for ttl in ttls), ttls
        assert await client.ttl("dspy:budget:2026-11-24") == -1
    finally:
        await client.aclose()


async def test_eviction_under_memory_pressure_takes_cache_entries_never_the_spend(managed_redis) -> None:
    """The operator's managed Redis settings (volatile-lru) on a full Redis: the day's spend and
    the routing table (no TTL) stay, cache entries (TTLs) go. allkeys-lru evicted the spend."""
    from dspy_runtime.cache import RedisCache

    budget, client = replica(managed_redis.url, limit=100.0)
    cache = RedisCache(client, ttl_seconds=3600)
    try:
        await budget.spend(12.5)
        await client.set("dspy:{default/qa}:routing", b"{}")
        value = b"x" * 4096
        for i in range(3000):  # 12 MB into a 4 MB Redis
            await cache.set(f"entry-{i}", value)
        stats = await client.info("stats")
        assert stats["evicted_keys"] > 1000, "the Redis was full and evicted"
        assert float(await client.get(KEY)) == pytest.approx(12.5)
        assert await client.get("dspy:{default/qa}:routing") == b"{}"
    finally:
        await client.aclose()
