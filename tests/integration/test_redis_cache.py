"""RedisCache and TieredCache against a real redis-server, including outages."""

import asyncio

from redis.asyncio import Redis

from dspy_runtime.cache import MemoryCache, RedisCache, TieredCache, redis_client


def make_cache(url: str, **kwargs) -> RedisCache:
    kwargs.setdefault("ttl_seconds", 60)
    # No back-off window: each call after an outage probes at once, so tests need
    # no waiting (the window itself is unit-tested with a manual clock).
    kwargs.setdefault("backoff_seconds", 0.0)
    return RedisCache(redis_client(url, timeout_seconds=0.3), **kwargs)


async def test_miss_then_hit(redis_url: str) -> None:
    cache = make_cache(redis_url)
    try:
        assert await cache.get("k") is None
        await cache.set("k", b"\x00binary answer")
        assert await cache.get("k") == b"\x00binary answer"
        assert cache.healthy
    finally:
        await cache.close()


async def test_client_fails_fast_and_retries_only_once(redis_url: str) -> None:
    cache = make_cache(redis_url)
    try:
        kwargs = cache.client.connection_pool.connection_kwargs
        assert kwargs["socket_timeout"] == 0.3
        assert kwargs["socket_connect_timeout"] == 0.3
        assert kwargs["retry"].get_retries() == 1
    finally:
        await cache.close()


async def test_entries_carry_ttl_plus_jitter(redis_url: str) -> None:
    picked: list[tuple[int, int]] = []

    def randint(low: int, high: int) -> int:
        picked.append((low, high))
        return 7

    cache = make_cache(redis_url, ttl_seconds=100, jitter_seconds=30, randint=randint)
    raw = Redis.from_url(redis_url)
    try:
        await cache.set("k", b"v")
        assert picked == [(0, 30)]
        assert await raw.ttl("dspy:cache:k") in (106, 107)
    finally:
        await cache.close()
        await raw.aclose()


async def test_entries_expire(redis_url: str) -> None:
    cache = make_cache(redis_url, ttl_seconds=1)
    raw = Redis.from_url(redis_url)
    try:
        await cache.set("k", b"v")
        # Expire it on the server rather than waiting a second of wall time.
        await raw.pexpire("dspy:cache:k", 1)
        for _ in range(200):
            if await cache.get("k") is None:
                break
            await asyncio.sleep(0.01)
        assert await cache.get("k") is None
    finally:
        await cache.close()
        await raw.aclose()


async def test_redis_down_is_a_fast_miss_and_it_reconnects_by_itself(redis_server, redis_url: str) -> None:
    cache = make_cache(redis_url)
    try:
        await cache.set("k", b"v")
        assert await cache.get("k") == b"v"

        redis_server.stop()
        # The guard only catches a hang; the bound that matters is the client's config.
        assert await asyncio.wait_for(cache.get("k"), timeout=30) is None
        assert not cache.healthy
        assert await cache.ping() is False
        await cache.set("other", b"x")  # never raises

        redis_server.start()
        assert await cache.ping() is True
        assert cache.healthy
        await cache.set("k", b"again")  # over the connection the restart broke: reconnects
        assert await cache.get("k") == b"again"
    finally:
        await cache.close()


async def test_tiered_cache_keeps_answering_from_memory_while_redis_is_down(redis_server, redis_url: str) -> None:
    l2 = make_cache(redis_url)
    cache = TieredCache(MemoryCache(max_entries=100, ttl_seconds=60), l2)
    calls = 0

    async def compute() -> tuple[bytes, bool]:
        nonlocal calls
        calls += 1
        return b"answer", True

    try:
        assert await cache.get_or_compute("k", compute) == (b"answer", None)
        redis_server.stop()
        assert await cache.get_or_compute("k", compute) == (b"answer", "memory")
        assert await cache.get_or_compute("new", compute) == (b"answer", None)
        assert (await cache.health())["redis"] == "down"
        assert calls == 2

        redis_server.start()
        assert await cache.health() == {"memory": "ok", "redis": "ok"}
    finally:
        await cache.close()


async def test_a_second_replica_reads_what_the_first_wrote(redis_url: str) -> None:
    first = TieredCache(MemoryCache(max_entries=10, ttl_seconds=60), make_cache(redis_url))
    second = TieredCache(MemoryCache(max_entries=10, ttl_seconds=60), make_cache(redis_url))

    async def compute() -> tuple[bytes, bool]:
        return b"from first", True

    async def must_not_run() -> tuple[bytes, bool]:
        raise AssertionError("second replica should have hit Redis")

    try:
        await first.get_or_compute("k", compute)
        assert await second.get_or_compute("k", must_not_run) == (b"from first", "redis")
        assert await second.get_or_compute("k", must_not_run) == (b"from first", "memory")
    finally:
        await first.close()
        await second.close()


async def test_the_first_call_after_a_restart_succeeds_over_a_fresh_connection(redis_server, redis_url: str) -> None:
    cache = make_cache(redis_url)
    try:
        await cache.set("k", b"v")  # leaves a pooled connection that the restart kills
        redis_server.stop()
        redis_server.start()
        await cache.set("k", b"after restart")
        assert cache.healthy
        assert await cache.get("k") == b"after restart"
    finally:
        await cache.close()


async def test_entries_are_read_and_deleted_in_batches_by_scope_under_the_prefix_only(redis_url: str) -> None:
    from dspy_runtime.cache.redis import MGET_BATCH, SCAN_COUNT

    mine = make_cache(redis_url, key_prefix="dspy:{demo/qa}:cache:")
    theirs = make_cache(redis_url, key_prefix="dspy:{demo/other}:cache:")
    count = max(MGET_BATCH, SCAN_COUNT) + 7  # more than one batch of each
    try:
        for i in range(count):
            await mine.set(f"{'a' * 16}:{i:032x}", b"a")
        await mine.set(f"{'b' * 16}:{0:032x}", b"b")
        await theirs.set(f"{'a' * 16}:{0:032x}", b"theirs")
        keys = [f"{'a' * 16}:{i:032x}" for i in range(count)] + ["missing"]
        found = await mine.get_many(keys)
        assert len(found) == count and set(found.values()) == {b"a"}
        assert await mine.delete_matching("a" * 16 + ":*") == count
        assert await mine.get_many(keys) == {}
        assert await mine.delete([f"{'b' * 16}:{0:032x}", "missing"]) == 1
        assert await theirs.get(f"{'a' * 16}:{0:032x}") == b"theirs", "another resource's entries are untouched"
        await mine.set("x" * 16 + ":1", b"x")
        assert await mine.delete_matching() == 1
        assert await theirs.delete_matching() == 1
    finally:
        await mine.close()
        await theirs.close()


async def test_hit_counts_add_up_across_replicas_stay_bounded_and_name_the_hottest(redis_url: str) -> None:
    from dspy_runtime.cache.hot import MIN_KEEP, HotKeys
    from dspy_runtime.cache.keys import CacheNames

    client = Redis.from_url(redis_url)
    names = CacheNames("dspy:{demo/qa}:")
    first, second = (HotKeys(client, names, load=2, ttl_seconds=100) for _ in range(2))
    scope_a, scope_b = "a" * 16, "b" * 16
    try:
        for _ in range(3):
            first.hit(f"{scope_a}:hot")
        second.hit(f"{scope_a}:hot")
        second.hit(f"{scope_b}:warm")
        second.hit(f"{scope_b}:warm")
        first.hit(f"{scope_a}:cold")
        for i in range(MIN_KEEP + 10):
            first.hit(f"{scope_a}:once-{i}")
        assert await first.flush() and await second.flush()
        assert await client.zscore(names.hot(scope_a), f"{scope_a}:hot") == 4, "both replicas' counts"
        assert await client.zcard(names.hot(scope_a)) == MIN_KEEP, "trimmed to the best"
        assert 90 < await client.ttl(names.hot(scope_a)) <= 100
        assert await first.hottest({scope_a, scope_b}) == [f"{scope_a}:hot", f"{scope_b}:warm"]
        assert await first.hottest({scope_b}) == [f"{scope_b}:warm"]
        await first.forget({scope_a})
        assert await first.hottest({scope_a, scope_b}) == [f"{scope_b}:warm"]
        await first.forget(None)
        assert await first.hottest({scope_b}) == []
    finally:
        await client.aclose()
