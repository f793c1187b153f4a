"""The alert rules, checked and unit-tested by a real Prometheus rule engine: `promtool` (built
from the Prometheus Go module by hack/promtool.sh, cached) runs `check rules` on the chart's
rules file and on every dashboard expression, and `test rules` on tests/unit/alerts/*.yaml,
where each alert fires on synthetic series and stays quiet on healthy ones."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[3]
CHART = REPO / "charts" / "dspy-operator"
RULES = CHART / "alerts" / "dspy-operator.rules.yaml"
DASHBOARD = CHART / "dashboards" / "dspy-operator.json"
ALERT_TESTS = sorted((REPO / "tests" / "unit" / "alerts").glob("*.yaml"))


@pytest.fixture(scope="module")
def promtool() -> str:
    """The cached promtool (built by `make promtool-build`, or here on first use)."""
    proc = subprocess.run([str(REPO / "hack" / "promtool.sh"), "path"], capture_output=True, text=True, check=True)
    return proc.stdout.strip()


def run(promtool: str, *args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool, *args], capture_output=True, text=True, cwd=cwd)


def rules() -> list[dict[str, Any]]:
    return [rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]]


def test_promtool_checks_the_rules_file(promtool):
    proc = run(promtool, "check", "rules", str(RULES))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"SUCCESS: {len(rules())} rules found" in proc.stdout


@pytest.mark.parametrize("tests", ALERT_TESTS, ids=[path.name for path in ALERT_TESTS])
def test_promtool_unit_tests_of_the_alerts_pass(promtool, tests):
    proc = run(promtool, "test", "rules", str(tests), cwd=tests.parent)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout


def test_a_wrong_expectation_makes_promtool_fail(promtool, tmp_path):
    """The test above trusts promtool's exit code: here it must say FAILED for an alert expected
    to fire on healthy series."""
    case = {"rule_files": [str(RULES)], "evaluation_interval": "1m", "tests": [{
        "interval": "1m",
        "input_series": [{"series": 'dspy_circuit_breaker_state{namespace="n",dspy_deployment="qa",model="m"}',
                          "values": "0x10"}],
        "alert_rule_test": [{"eval_time": "10m", "alertname": "DSPyCircuitBreakerOpen",
                             "exp_alerts": [{"exp_labels": {"severity": "warning", "namespace": "n",
                                                            "dspy_deployment": "qa", "model": "m"}}]}],
    }]}
    path = tmp_path / "wrong.test.yaml"
    path.write_text(yaml.safe_dump(case))
    proc = run(promtool, "test", "rules", str(path), cwd=tmp_path)
    assert proc.returncode != 0 and "FAILED" in proc.stdout + proc.stderr


def test_every_alert_is_tested_firing_and_quiet():
    firing: set[str] = set()
    quiet: set[str] = set()
    for path in ALERT_TESTS:
        for case in yaml.safe_load(path.read_text())["tests"]:
            for check in case.get("alert_rule_test") or []:
                (firing if check.get("exp_alerts") else quiet).add(check["alertname"])
    alerts = {rule["alert"] for rule in rules()}
    assert alerts == {"DSPyHighErrorRate", "DSPyCircuitBreakerOpen", "DSPyHighLatencyP95", "DSPyBudgetNearlySpent",
                      "DSPyCanaryAborted", "DSPyOperatorReconcileErrors"}
    assert firing == alerts, f"never seen firing: {sorted(alerts - firing)}"
    assert quiet == alerts, f"never seen quiet: {sorted(alerts - quiet)}"


def test_every_alert_waits_has_a_severity_and_says_what_happened():
    for rule in rules():
        assert re.fullmatch(r"[0-9]+[smh]", str(rule.get("for", ""))), rule["alert"]
        assert rule["labels"]["severity"] in {"warning", "critical"}, rule["alert"]
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], rule["alert"]


def test_every_dashboard_expression_parses_as_promql(promtool, tmp_path):
    """Each panel's query, with Grafana's variables given values, as a recording rule that
    `promtool check rules` parses (it refuses a rules file with any invalid expression)."""
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets") or []]
    assert exprs

    def concrete(expr: str) -> str:
        return (expr.replace("$__rate_interval", "5m").replace("$namespace", ".*").replace("$deployment", ".*"))

    records = [{"record": f"dashboard:panel_{i}", "expr": concrete(expr)} for i, expr in enumerate(exprs)]
    assert not [r["expr"] for r in records if "$" in r["expr"]], "a variable without a value"
    path = tmp_path / "dashboard.rules.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": records}]}))
    proc = run(promtool, "check", "rules", str(path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"SUCCESS: {len(records)} rules found" in proc.stdout
