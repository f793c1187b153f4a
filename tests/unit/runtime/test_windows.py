"""Windowed figures: the accumulator's field math (injected clock), bounded pending buckets,
and the exact Redis commands of a flush (a recording client)."""

from __future__ import annotations

from typing import Any

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from dspy_runtime.clock import ManualClock
from dspy_runtime.metrics import LATENCY_BUCKETS
from dspy_runtime.windows import MAX_PENDING_BUCKETS, WINDOW_KEY_TTL_SECS, WindowFlusher, Windows, bucket_start

OK = {"error_type": None, "http_status": 200}


def _record(windows: Windows, revision: str = "r1", variant: str = "v", **figures: Any) -> None:
    values: dict[str, Any] = {
        "latency_s": 0.01, **OK, "cached": False, "tokens_in": 0, "tokens_out": 0, "cost_usd": 0.0, **figures,
    }  # fmt: skip
    windows.record(revision, variant, **values)


def test_bucket_start_is_floor_of_five_seconds():
    assert [bucket_start(t) for t in (1000.0, 1004.999, 1005.0, 1764624003.7)] == [1000, 1000, 1005, 1764624000]


def test_fields_of_successes_hits_and_failures():
    clock = ManualClock(1_764_624_000.5)
    windows = Windows(clock)
    _record(windows, latency_s=0.003, tokens_in=100, tokens_out=20, cost_usd=0.14)  # computed: lat:5 (0.0025, 0.005]
    _record(windows, latency_s=0.0002, cached=True)  # a cache hit: lat:1 (0.0001, 0.00025]
    _record(windows, latency_s=0.001, cached=True)  # exactly on a bound: that bucket, lat:3
    _record(windows, latency_s=75.0, error_type="upstream_timeout", http_status=504)  # above the last bound
    _record(windows, latency_s=0.00005, error_type="invalid_input", http_status=422)  # a 4xx: a class, not an error
    _record(windows, latency_s=0.2, error_type="upstream_error", http_status=502)
    clock.advance(4.0)  # still the same bucket
    _record(windows, variant="other", latency_s=0.02)

    taken = windows.take()

    assert list(taken) == [1_764_624_000]
    cells = taken[1_764_624_000]
    counts, amounts = cells[("r1", "v")].fields()
    assert counts == {
        "requests": 6, "errors": 2, "cache_hits": 2, "tokens_in": 100, "tokens_out": 20,
        "lat:0": 1, "lat:1": 1, "lat:3": 1, "lat:5": 1, "lat:10": 1, f"lat:{len(LATENCY_BUCKETS)}": 1,
        "class:upstream_timeout": 1, "class:invalid_input": 1, "class:upstream_error": 1,
    }  # fmt: skip
    assert amounts == pytest.approx({"latency_sum": 0.003 + 0.0002 + 0.001 + 75.0 + 0.00005 + 0.2, "cost_usd": 0.14})
    assert cells[("r1", "other")].fields()[0] == {
        "requests": 1, "errors": 0, "cache_hits": 0, "tokens_in": 0, "tokens_out": 0, "lat:7": 1,
    }  # fmt: skip
    assert windows.take() == {}  # taken means gone


def test_requests_land_in_the_bucket_of_the_moment_they_ended():
    clock = ManualClock(1000.0)
    windows = Windows(clock)
    _record(windows)
    clock.advance(5.0)
    _record(windows)
    _record(windows, revision="r2")
    assert {start: sorted(cells) for start, cells in windows.take().items()} == {
        1000: [("r1", "v")],
        1005: [("r1", "v"), ("r2", "v")],
    }


def test_a_failed_flush_is_merged_back_and_at_most_an_hour_of_buckets_is_kept():
    clock = ManualClock(0.0)
    windows = Windows(clock)
    _record(windows, tokens_in=1)
    taken = windows.take()
    _record(windows, tokens_in=2)  # recorded while the flush was in flight
    assert windows.give_back(taken) == 0
    merged = windows.take()[0][("r1", "v")].fields()[0]
    assert (merged["requests"], merged["tokens_in"], merged["lat:6"]) == (2, 3, 2)

    for _ in range(MAX_PENDING_BUCKETS + 3):
        _record(windows)
        clock.advance(5.0)
    taken = windows.take()
    assert windows.give_back(taken) == 3
    kept = windows.take()
    assert len(kept) == MAX_PENDING_BUCKETS and min(kept) == 15  # the oldest three went


def _shadow(windows: Windows, revision: str = "r1", variant: str = "s", **figures: Any) -> None:
    values: dict[str, Any] = {
        "latency_s": 0.3, "live_latency_s": 0.02, "agreed": True, "error_type": None, "cached": False,
        "tokens_in": 10, "tokens_out": 2, "cost_usd": 0.01, **figures,
    }  # fmt: skip
    windows.record_shadow(revision, variant, **values)


def test_shadow_figures_are_prefixed_and_a_shadow_only_cell_has_no_live_figures():
    windows = Windows(ManualClock(1000.0))
    _shadow(windows)
    _shadow(windows, agreed=False, cached=True, cost_usd=0.0)
    _shadow(windows, agreed=None, error_type="invalid_input", latency_s=0.0002, tokens_in=0, tokens_out=0, cost_usd=0.0)
    windows.record_shadow_drop("r1", "s", "busy")
    windows.record_shadow_drop("r1", "s", "busy")
    windows.record_shadow_drop("r1", "s", "cap")
    windows.record_shadow_drop("r1", "dropped-only", "budget")
    _record(windows, variant="live")
    cells = windows.take()[1000]
    counts, amounts = cells[("r1", "s")].fields()
    assert counts == {
        "shadow_requests": 3, "shadow_errors": 1, "shadow_cache_hits": 1, "shadow_tokens_in": 20, "shadow_tokens_out": 4,
        "shadow_lat:1": 1, "shadow_lat:11": 2, "shadow_class:invalid_input": 1,  # a 4xx too: every failure is an error
        "shadow_compared": 2, "shadow_agree": 1, "shadow_live_lat:7": 3,
        "shadow_dropped:busy": 2, "shadow_dropped:cap": 1,
    }  # fmt: skip
    assert amounts == pytest.approx({"shadow_latency_sum": 0.6002, "shadow_cost_usd": 0.01,
                                     "shadow_live_latency_sum": 0.06})
    assert cells[("r1", "dropped-only")].fields() == ({"shadow_dropped:budget": 1}, {})
    assert "shadow_requests" not in cells[("r1", "live")].fields()[0]


def test_a_cell_with_live_and_shadow_figures_carries_both_and_merges_back_whole():
    windows = Windows(ManualClock(1000.0))
    _record(windows)
    _shadow(windows, revision="r1", variant="v")
    taken = windows.take()
    _shadow(windows, revision="r1", variant="v", agreed=False)
    windows.give_back(taken)
    counts, _ = windows.take()[1000][("r1", "v")].fields()
    assert (counts["requests"], counts["shadow_requests"], counts["shadow_compared"], counts["shadow_agree"]) == (1, 2, 2, 1)


class RecordingPipeline:
    def __init__(self, client: RecordingRedis) -> None:
        self._client = client
        self._commands: list[tuple[Any, ...]] = []

    async def __aenter__(self) -> RecordingPipeline:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    def hincrby(self, key: str, field: str, amount: int) -> None:
        self._commands.append(("HINCRBY", key, field, amount))

    def hincrbyfloat(self, key: str, field: str, amount: float) -> None:
        self._commands.append(("HINCRBYFLOAT", key, field, amount))

    def expire(self, key: str, seconds: int) -> None:
        self._commands.append(("EXPIRE", key, seconds))

    async def execute(self) -> list[Any]:
        if self._client.down:
            raise RedisConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")
        self._client.executed.append(self._commands)
        return []


class RecordingRedis:
    """Records the pipelines a flush makes (and whether they were transactions)."""

    def __init__(self) -> None:
        self.down = False
        self.transactions: list[bool] = []
        self.executed: list[list[tuple[Any, ...]]] = []

    def pipeline(self, transaction: bool = True) -> RecordingPipeline:
        self.transactions.append(transaction)
        return RecordingPipeline(self)


async def test_a_flush_is_one_transaction_of_exact_commands_and_survives_redis_down(caplog):
    clock = ManualClock(1000.0)
    windows = Windows(clock)
    client = RecordingRedis()
    flusher = WindowFlusher(windows, client, "dspy:{demo/qa}:", interval=1.0)  # type: ignore[arg-type]
    assert await flusher.flush() is True and client.transactions == []  # nothing recorded: no round trip

    _record(windows, revision="3f9a0c1d2e4b", variant="baseline", latency_s=0.03, error_type="circuit_open", http_status=503)
    client.down = True
    assert await flusher.flush() is False
    assert await flusher.flush() is False  # still pending, and logged once
    assert len([r for r in caplog.records if "Redis is unavailable" in r.getMessage()]) == 1
    client.down = False
    _record(windows, revision="3f9a0c1d2e4b", variant="baseline", latency_s=0.03, cost_usd=0.5, tokens_in=7, tokens_out=3)
    assert await flusher.flush() is True

    key, field = "dspy:{demo/qa}:win:1000", "3f9a0c1d2e4b|baseline|"
    assert client.transactions == [True, True, True]
    assert client.executed == [[
        ("HINCRBY", key, field + "requests", 2),
        ("HINCRBY", key, field + "errors", 1),
        ("HINCRBY", key, field + "cache_hits", 0),
        ("HINCRBY", key, field + "tokens_in", 7),
        ("HINCRBY", key, field + "tokens_out", 3),
        ("HINCRBY", key, field + "lat:8", 2),
        ("HINCRBY", key, field + "class:circuit_open", 1),
        ("HINCRBYFLOAT", key, field + "latency_sum", pytest.approx(0.06)),
        ("HINCRBYFLOAT", key, field + "cost_usd", 0.5),
        ("EXPIRE", key, WINDOW_KEY_TTL_SECS),
    ]]  # fmt: skip
