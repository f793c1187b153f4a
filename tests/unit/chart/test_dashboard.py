"""The Grafana dashboard and the alert rules cannot drift from the metrics: every metric name an
expression uses is one the runtime's or the operator's registry exports (both metrics modules
imported, every family's series names collected), and every panel asks for something."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml
from prometheus_client import CollectorRegistry

from dspy_operator.metrics import OperatorMetrics
from dspy_runtime.metrics import Metrics as RuntimeMetrics

CHART = Path(__file__).resolve().parents[3] / "charts" / "dspy-operator"
DASHBOARD = CHART / "dashboards" / "dspy-operator.json"
RULES = CHART / "alerts" / "dspy-operator.rules.yaml"
# Series names a scrape adds itself; anything else in an expression must be ours.
PROMETHEUS_SERIES = {"up", "scrape_duration_seconds"}
SUFFIXES = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_count", "_sum", "_created"),
            "gauge": ("",), "summary": ("", "_count", "_sum", "_created")}
# Label names, functions and keywords never follow `{` or `(` as a series would; a name is the
# identifier that is not a function call, not inside {...} or by (...), not a duration.
PROMQL_WORDS = {
    "sum", "max", "min", "avg", "count", "rate", "increase", "irate", "histogram_quantile", "by", "without",
    "ignoring", "on", "group_left", "group_right", "and", "or", "unless", "label_values", "bool", "offset",
    "absent", "clamp_min", "clamp_max", "topk", "bottomk", "le", "humanize",
}


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


def metric_names(expr: str) -> set[str]:
    """The series names in a PromQL expression (or a Grafana `label_values(...)` query)."""
    text = re.sub(r'\{[^}]*\}', " ", expr)  # label matchers
    text = re.sub(r'\b(by|without|ignoring|on|group_left|group_right)\s*\([^)]*\)', " ", text)  # label lists
    text = re.sub(r'\[[^\]]*\]', " ", text)  # ranges
    text = re.sub(r'"[^"]*"', " ", text)
    text = re.sub(r'label_values\(([^,()]+),[^)]*\)', r"\1", text)
    names = set()
    for match in re.finditer(r'\$?[A-Za-z_:][A-Za-z0-9_:]*', text):
        token, rest = match.group(), text[match.end():].lstrip()
        if token.startswith("$") or token in PROMQL_WORDS or rest.startswith("("):
            continue  # a Grafana variable, a keyword or aggregation, a function call
        names.add(token)
    return names


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels") or []


def dashboard_exprs() -> list[tuple[str, str]]:
    dashboard = json.loads(DASHBOARD.read_text())
    found = [(panel["title"], target["expr"]) for panel in panels(dashboard) if panel["type"] != "row"
             for target in panel["targets"]]
    found += [(f"variable {variable['name']}", variable["query"]["query"])
              for variable in dashboard["templating"]["list"] if variable["type"] == "query"]
    return found


def rule_exprs() -> list[tuple[str, str]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [(rule["alert"], rule["expr"]) for group in groups for rule in group["rules"]]


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
