"""The degradation rule (pure) and its window, on a manual clock."""

from __future__ import annotations

import logging

import pytest

from dspy_runtime.clock import ManualClock
from dspy_runtime.resilience.degradation import (
    CACHE_ONLY, CHEAPER_MODEL, EVALUATE_EVERY_SECS, HEALTHY, NORMAL, SHORTER_ANSWERS, STARTED, Degradation, Level, Signals, Thresholds,
    decide,
)  # fmt: skip

T = Thresholds(error_rate=0.5, p95_secs=2.0, budget_left_fraction=0.1, min_hold_secs=10.0, min_samples=5)
HEALTHY_SIGNALS = Signals(samples=100, error_rate=0.0, p95_secs=0.1, budget_left_fraction=0.9)


def at(level: int, since: float = 0.0) -> Level:
    return Level(level, since, STARTED)


@pytest.mark.parametrize(
    ("signals", "signal"),
    [
        (Signals(10, 0.5, 0.1, None), "error_rate"),
        (Signals(10, 0.0, 2.0, None), "p95_secs"),
        (Signals(0, 0.0, 0.0, 0.05), "budget_left_fraction"),
    ],
)
def test_each_signal_past_its_threshold_steps_down_one_level_with_its_cause(signals, signal):
    new = decide(signals, at(NORMAL), 10.0, T)
    assert (new.level, new.since, new.cause.signal) == (CHEAPER_MODEL, 10.0, signal)
    assert new.cause.threshold is not None and new.cause.value is not None


def test_signals_just_inside_their_thresholds_keep_the_level():
    inside = Signals(10, 0.49, 1.99, 0.1)
    assert decide(inside, at(NORMAL), 100.0, T) == at(NORMAL)


def test_too_few_samples_are_not_judged_but_the_budget_is():
    assert decide(Signals(4, 1.0, 60.0, None), at(NORMAL), 100.0, T) == at(NORMAL)
    assert decide(Signals(4, 1.0, 60.0, 0.0), at(NORMAL), 100.0, T).level == CHEAPER_MODEL


def test_a_level_holds_for_the_minimum_time_down_and_up():
    failing = Signals(10, 1.0, 0.1, None)
    assert decide(failing, at(CHEAPER_MODEL, since=5.0), 14.9, T).level == CHEAPER_MODEL
    assert decide(failing, at(CHEAPER_MODEL, since=5.0), 15.0, T).level == SHORTER_ANSWERS
    assert decide(HEALTHY_SIGNALS, at(SHORTER_ANSWERS, since=5.0), 14.9, T).level == SHORTER_ANSWERS


def test_steps_down_no_further_than_cache_only():
    failing = Signals(10, 1.0, 0.1, None)
    level = at(NORMAL)
    for step in range(1, 6):
        level = decide(failing, level, step * 10.0, T)
    assert level.level == CACHE_ONLY and level.since == 30.0  # reached at the third step, then held


def test_recovers_one_level_per_hold():
    level, seen = at(CACHE_ONLY), []
    for step in range(1, 5):
        level = decide(HEALTHY_SIGNALS, level, step * 10.0, T)
        seen.append(level.level)
        assert level.level == NORMAL or level.cause == HEALTHY
    assert seen == [SHORTER_ANSWERS, CHEAPER_MODEL, NORMAL, NORMAL]


def test_controller_window_drives_the_level_and_restarts_on_change(caplog):
    clock = ManualClock()
    d = Degradation(T, window_secs=5, max_tokens_factor=0.5, clock=clock)
    for _ in range(5):
        d.record(0.1, error=True)
    assert d.level().level == NORMAL  # held: the start counts as a change
    clock.advance(10)
    for _ in range(5):
        d.record(0.1, error=True)
    with caplog.at_level(logging.WARNING, logger="dspy_runtime.resilience.degradation"):
        assert d.level().level == CHEAPER_MODEL
        assert d.level().level == CHEAPER_MODEL  # logged once
    [record] = caplog.records
    fields = record.fields  # type: ignore[attr-defined]
    assert fields == {"degradation_from": 0, "degradation_to": 1, "cause": "error_rate", "value": 1.0, "threshold": 0.5}
    assert d.signals().samples == 0  # the new level is judged by its own outcomes
    clock.advance(10)
    assert d.level().level == NORMAL  # nothing failed since: healthy


def test_controller_forgets_seconds_older_than_the_window():
    clock = ManualClock()
    d = Degradation(T, window_secs=3, max_tokens_factor=0.5, clock=clock)
    for _ in range(5):
        d.record(3.0, error=False)
    assert d.signals().p95_secs == 3.0
    clock.advance(3)
    d.record(0.2, error=True)
    assert (d.signals().samples, d.signals().error_rate) == (1, 1.0)


def test_p95_is_the_95th_percentile_of_the_window():
    clock = ManualClock()
    d = Degradation(T, window_secs=10, max_tokens_factor=0.5, clock=clock)
    for i in range(1, 101):
        d.record(i / 100, error=False)
        clock.advance(0.05)
    assert d.signals().p95_secs == 0.95


def test_budget_signal_from_the_budget_left():
    clock = ManualClock()
    left = [0.5]
    d = Degradation(T, window_secs=5, max_tokens_factor=0.5, budget_left=lambda: left[0], clock=clock)
    clock.advance(10)
    assert d.level().level == NORMAL
    left[0] = 0.05
    assert d.level().level == NORMAL  # read a moment ago
    clock.advance(EVALUATE_EVERY_SECS)
    assert d.level().level == CHEAPER_MODEL
    assert d.public()["cause"] == "budget_left_fraction 0.05 (threshold 0.1)"


def test_max_tokens_factor_scales_and_never_reaches_zero():
    d = Degradation(T, window_secs=5, max_tokens_factor=0.25, clock=ManualClock())
    assert (d.max_tokens(512), d.max_tokens(3)) == (128, 1)
