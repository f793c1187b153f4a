import pytest

from dspy_runtime.cache.memory import MemoryCache
from dspy_runtime.clock import ManualClock


def test_entries_expire_after_ttl() -> None:
    clock = ManualClock()
    cache = MemoryCache(max_entries=10, ttl_seconds=5, clock=clock)
    cache.set("k", b"v")
    clock.advance(4.9)
    assert cache.get("k") == b"v"
    clock.advance(0.2)
    assert cache.get("k") is None


def test_least_recently_used_entry_is_evicted_at_capacity() -> None:
    cache = MemoryCache(max_entries=2, ttl_seconds=60, clock=ManualClock())
    cache.set("a", b"1")
    cache.set("b", b"2")
    assert cache.get("a") == b"1"  # "b" is now the least recently used
    cache.set("c", b"3")
    assert cache.get("b") is None
    assert cache.get("a") == b"1"
    assert cache.get("c") == b"3"
    assert len(cache) == 2


@pytest.mark.parametrize(("size", "ttl"), [(0, 10), (10, 0)])
def test_refuses_a_cache_that_could_hold_nothing(size: int, ttl: float) -> None:
    with pytest.raises(ValueError):
        MemoryCache(max_entries=size, ttl_seconds=ttl)


def test_entries_are_removed_by_key_by_scope_or_all() -> None:
    clock = ManualClock()
    cache = MemoryCache(max_entries=10, ttl_seconds=60, clock=clock)
    a1, a2, b1 = "a" * 16 + ":1", "a" * 16 + ":2", "b" * 16 + ":1"
    for key in (a1, a2, b1):
        cache.set(key, b"v")
    assert cache.discard([a1, "missing"]) == 1
    assert cache.get(a1) is None and cache.get(a2) == b"v"
    assert cache.discard_scopes({"a" * 16}) == 1
    assert cache.get(a2) is None and cache.get(b1) == b"v"
    cache.set(a1, b"v")
    clock.advance(61)
    cache.set(a2, b"v")
    assert cache.clear() == 1, "expired entries are not counted as removed"
    assert len(cache) == 0
