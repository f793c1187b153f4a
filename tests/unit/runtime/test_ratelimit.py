import pytest

from dspy_runtime.clock import ManualClock
from dspy_runtime.resilience.ratelimit import RateLimiter


def test_burst_then_refill_at_rate_with_exact_retry_after() -> None:
    clock = ManualClock()
    limiter = RateLimiter(rate=2, burst=3, clock=clock)
    assert [limiter.acquire() for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.acquire() == pytest.approx(0.5)
    clock.advance(0.25)
    assert limiter.acquire() == pytest.approx(0.25)
    clock.advance(0.25)
    assert limiter.acquire() == 0.0
    assert limiter.acquire() == pytest.approx(0.5)


def test_idle_time_refills_no_more_than_the_burst() -> None:
    clock = ManualClock()
    limiter = RateLimiter(rate=10, burst=2, clock=clock)
    limiter.acquire()
    limiter.acquire()
    clock.advance(3600)
    assert [limiter.acquire() for _ in range(3)][:2] == [0.0, 0.0]


def test_keys_have_separate_buckets() -> None:
    limiter = RateLimiter(rate=1, burst=1, clock=ManualClock())
    assert limiter.acquire("alice") == 0.0
    assert limiter.acquire("alice") > 0
    assert limiter.acquire("bob") == 0.0


def test_the_key_map_is_bounded_least_recently_used_first() -> None:
    limiter = RateLimiter(rate=1, burst=1, clock=ManualClock(), max_keys=2)
    limiter.acquire("a")
    limiter.acquire("b")
    limiter.acquire("a")  # "a" is refused and becomes most recently used
    limiter.acquire("c")  # evicts "b"
    assert limiter.acquire("a") > 0
    assert limiter.acquire("b") == 0.0  # forgotten, so a fresh bucket


def test_zero_rate_disables_limiting() -> None:
    limiter = RateLimiter(rate=0, burst=0, clock=ManualClock())
    assert not limiter.enabled
    assert all(limiter.acquire() == 0.0 for _ in range(1000))


def test_a_burst_below_one_still_admits_requests() -> None:
    limiter = RateLimiter(rate=1, burst=0, clock=ManualClock())
    assert limiter.acquire() == 0.0


def test_a_client_inventing_a_key_per_request_meets_the_overall_bucket() -> None:
    """Per-key buckets alone admitted 200 of 200 requests that each carried a new key."""
    clock = ManualClock()
    limiter = RateLimiter(rate=1, burst=2, clock=clock, total_rate=5, total_burst=10)
    admitted = sum(limiter.acquire(f"invented-{i}") == 0.0 for i in range(200))
    assert admitted == 10, "the overall burst"
    assert limiter.acquire("a-real-client") == pytest.approx(0.2), "the overall bucket's wait"
    clock.advance(1.0)
    assert sum(limiter.acquire(f"more-{i}") == 0.0 for i in range(200)) == 5, "then the overall rate"


def test_keys_refused_by_the_overall_bucket_are_not_remembered() -> None:
    clock = ManualClock()
    limiter = RateLimiter(rate=0.1, burst=1, clock=clock, max_keys=2, total_rate=10, total_burst=2)
    limiter.acquire("alice")
    limiter.acquire("bob")
    for i in range(100):
        assert limiter.acquire(f"flood-{i}") > 0
    clock.advance(1.0)  # the overall bucket is full again; alice's and bob's are not
    # The flood evicted neither: both are still in debt (a forgotten key would start full).
    assert limiter.acquire("alice") > 0 and limiter.acquire("bob") > 0


def test_an_overall_bucket_never_admits_more_than_a_keys_own_bucket() -> None:
    limiter = RateLimiter(rate=1, burst=1, clock=ManualClock(), total_rate=100, total_burst=100)
    assert limiter.acquire("alice") == 0.0
    assert limiter.acquire("alice") == pytest.approx(1.0)
