"""What the chart's Grafana dashboard and alert rules ask Prometheus for: their expressions and the
series names in them. Shared by tests/unit/chart (every name is one our registries export) and
tests/e2e/test_prometheus.py (every name returns data from a live runtime and operator)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

CHART = Path(__file__).resolve().parents[1] / "charts" / "dspy-operator"
DASHBOARD = CHART / "dashboards" / "dspy-operator.json"
RULES = CHART / "alerts" / "dspy-operator.rules.yaml"
# Label names, functions and keywords never follow `{` or `(` as a series would; a name is the
# identifier that is not a function call, not inside {...} or by (...), not a duration.
PROMQL_WORDS = {
    "sum", "max", "min", "avg", "count", "rate", "increase", "irate", "histogram_quantile", "by", "without",
    "ignoring", "on", "group_left", "group_right", "and", "or", "unless", "label_values", "bool", "offset",
    "absent", "clamp_min", "clamp_max", "topk", "bottomk", "le", "humanize",
}


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
