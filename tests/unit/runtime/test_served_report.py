"""The text of the served-table report a pod keeps in Redis for the operator (no Redis needed)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from dspy_runtime.resilience.degradation import CACHE_ONLY, Cause, Level
from dspy_runtime.routing_wire import ServedTableReport

from dspy_operator.status.pods import PodReport, parse_report


def report(level: Any = None) -> ServedTableReport:
    router: Any = SimpleNamespace(state=SimpleNamespace(serial=1764624000123))
    return ServedTableReport(router, client=None, key_prefix="dspy:{demo/qa}:", pod="qa-1",  # type: ignore[arg-type]
                             clock=lambda: 1764624005.75, level=level)


def test_without_degradation_the_report_is_serial_and_time():
    assert report().value() == "1764624000123 1764624005"


def test_with_degradation_it_adds_the_level_and_its_cause_which_the_operator_reads_back():
    level = Level(CACHE_ONLY, 0.0, Cause("error_rate", 1.0, 0.5))
    text = report(lambda: level).value()
    assert text == "1764624000123 1764624005 cache_only error_rate 1 (threshold 0.5)"
    assert parse_report(text) == PodReport(1764624000123, 1764624005.0, "cache_only", "error_rate 1 (threshold 0.5)")
