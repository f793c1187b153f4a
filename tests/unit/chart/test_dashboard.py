"""The Grafana dashboard and the alert rules cannot drift from the metrics: every metric name an
expression uses is one the runtime's or the operator's registry exports (both metrics modules
imported, every family's series names collected), and every panel asks for something."""

from __future__ import annotations

import json
import re

from prometheus_client import CollectorRegistry

from dspy_operator.metrics import OperatorMetrics
from dspy_runtime.metrics import Metrics as RuntimeMetrics
from monitoring import DASHBOARD, dashboard_exprs, metric_names, panels, rule_exprs

# Series names a scrape adds itself; anything else in an expression must be ours.
PROMETHEUS_SERIES = {"up", "scrape_duration_seconds"}
SUFFIXES = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_count", "_sum", "_created"),
            "gauge": ("",), "summary": ("", "_count", "_sum", "_created")}


def exported_names() -> set[str]:
    """Every series name the two registries can produce (`_total` of counters, `_bucket` of
    histograms, ...), families with labels included (they have no sample until first used)."""
    names: set[str] = set()
    for registry in (RuntimeMetrics().registry, OperatorMetrics().registry):
        names |= series_names(registry)
    return names


def series_names(registry: CollectorRegistry) -> set[str]:
    names = set()
    for family in registry.collect():
        base = family.name
        names |= {base + suffix for suffix in SUFFIXES[family.type]}
    return names


def test_the_name_parser_finds_series_and_skips_labels_functions_and_variables():
    expr = ('histogram_quantile(0.95, sum by (le, variant) (rate(dspy_prediction_duration_seconds_bucket'
            '{namespace=~"$namespace", status!="ok"}[$__rate_interval]))) / ignoring (revision) group_left '
            'sum(dspy_budget_daily_usd > 0) and on (pod) up')
    assert metric_names(expr) == {"dspy_prediction_duration_seconds_bucket", "dspy_budget_daily_usd", "up"}
    assert metric_names('label_values(dspy_predictions_total{namespace=~"$namespace"}, dspy_deployment)') == {
        "dspy_predictions_total"}


def test_every_panel_asks_for_at_least_one_of_our_metrics_and_each_exists():
    exported = exported_names()
    assert {"dspy_predictions_total", "dspy_operator_reconciles_total",
            "dspy_operator_reconcile_duration_seconds_bucket"} <= exported
    exprs = dashboard_exprs()
    assert len(exprs) >= 20
    for title, expr in exprs:
        names = metric_names(expr)
        assert any(name.startswith("dspy_") for name in names), (title, expr)
        unknown = names - exported - PROMETHEUS_SERIES
        assert not unknown, f"panel {title!r} uses {sorted(unknown)}, which no registry exports"


def test_every_alert_uses_only_exported_metrics():
    exported = exported_names()
    for alert, expr in rule_exprs():
        names = metric_names(expr)
        assert names and not names - exported, f"alert {alert} uses {sorted(names - exported)}"


def test_the_dashboard_covers_what_the_issue_asks_for():
    """Request and error rate, latency quantiles, cache, breaker, cost and budget, canary weight and
    verdicts, blue/green color, shadow agreement, and the operator's health: one metric each."""
    used = {name for _, expr in dashboard_exprs() for name in metric_names(expr)}
    assert {
        "dspy_predictions_total", "dspy_prediction_duration_seconds_bucket", "dspy_cache_operations_total",
        "dspy_circuit_breaker_state", "dspy_cost_usd_total", "dspy_budget_daily_usd", "dspy_budget_spent_today_usd",
        "dspy_operator_analysis_verdicts_total", "dspy_shadow_requests_total", "dspy_operator_reconciles_total",
        "dspy_operator_api_requests_total", "dspy_operator_rollout_events_total", "dspy_operator_resources",
    } <= used
    quantiles = {float(q) for _, expr in dashboard_exprs() for q in re.findall(r'histogram_quantile\(([0-9.]+)', expr)}
    assert {0.5, 0.95, 0.99} <= quantiles
    titles = {title for title, _ in dashboard_exprs()}
    assert any("color" in title for title in titles) and any("Canary weight" in title for title in titles)
    uids = [panel["id"] for panel in panels(json.loads(DASHBOARD.read_text()))]
    assert len(uids) == len(set(uids)), "panel ids are unique"
