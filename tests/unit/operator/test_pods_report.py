"""The runtime pods' own reports (served table, degradation level) read as status facts (pure)."""

from __future__ import annotations

from dspy_operator.status.pods import (MAX_NAMED_PODS, PodReport, degradation_status, degraded_message,
                                       parse_report, served_by)

NOW = 1_764_624_030.0


def test_a_report_reads_with_and_without_a_degradation_level():
    assert parse_report("1764624000123 1764624005.25") == PodReport(1764624000123, 1764624005.25)
    assert parse_report("12 1764624004 cache_only error_rate 1 (threshold 0.5)") == PodReport(
        12, 1764624004.0, "cache_only", "error_rate 1 (threshold 0.5)"), "the cause keeps its spaces"
    assert parse_report("12 1764624004 normal started") == PodReport(12, 1764624004.0, "normal", "started")


def test_a_report_that_does_not_read_as_one_is_none():
    for text in ("garbage", "", "12", "12 noon", "x 1764624004 normal started"):
        assert parse_report(text) is None, text


def test_served_by_counts_only_fresh_reports():
    reports = {"qa-1": PodReport(9, NOW), "qa-2": PodReport(8, NOW - 1), "qa-old": PodReport(9, NOW - 300)}
    assert served_by(reports, 9, NOW) == "1/2"
    assert served_by(reports, 8, NOW) == "2/2"


def test_no_level_in_any_fresh_report_is_no_degradation_block():
    assert degradation_status({"qa-1": PodReport(9, NOW)}, NOW) is None
    assert degradation_status({"qa-1": PodReport(9, NOW - 300, "cache_only", "error_rate 1")}, NOW) is None, \
        "a pod gone quiet is no news"


def test_the_block_names_the_worst_level_counts_pods_and_says_why():
    reports = {
        "qa-b": PodReport(9, NOW, "cache_only", "error_rate 1 (threshold 0.5)"),
        "qa-a": PodReport(9, NOW, "normal", "started"),
        "qa-c": PodReport(9, NOW, "cheaper_model", "p95_secs 12 (threshold 10)"),
        "qa-d": PodReport(9, NOW, "normal", "healthy"),
    }
    block = degradation_status(reports, NOW)
    assert block == {
        "level": "cache_only",
        "pods": {"normal": 2, "cheaper_model": 1, "cache_only": 1},
        "message": "2/4 pods answer below normal: qa-b at cache_only (error_rate 1 (threshold 0.5)); "
                   "qa-c at cheaper_model (p95_secs 12 (threshold 10))",
    }
    assert list(block["pods"]) == ["normal", "cheaper_model", "cache_only"], "best level first"
    assert degraded_message(block) == f"{block['message']}; see status.degradation and the pods' /health"


def test_a_healthy_fleet_reports_normal_and_no_degraded_message():
    block = degradation_status({"qa-1": PodReport(9, NOW, "normal", "started")}, NOW)
    assert block == {"level": "normal", "pods": {"normal": 1}, "message": "all 1 pods answer normally"}
    assert degraded_message(block) is None
    assert degraded_message(None) is None


def test_an_unknown_level_from_a_newer_runtime_ranks_below_every_known_one():
    block = degradation_status({"qa-1": PodReport(9, NOW, "cache_only", "x"), "qa-2": PodReport(9, NOW, "offline", "y")},
                               NOW)
    assert block is not None and block["level"] == "offline"


def test_the_message_names_a_few_pods_and_counts_the_rest():
    reports = {f"qa-{index:02}": PodReport(9, NOW, "cache_only", "") for index in range(MAX_NAMED_PODS + 3)}
    block = degradation_status(reports, NOW)
    assert block is not None
    assert block["message"].endswith("qa-04 at cache_only; 3 more")
    assert block["message"].startswith(f"{MAX_NAMED_PODS + 3}/{MAX_NAMED_PODS + 3} pods answer below normal: qa-00")

