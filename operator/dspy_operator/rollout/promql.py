"""Canary analysis from a Prometheus server the user already runs (pure: queries and arithmetic).

`spec.rollout.canary.analysis.prometheus` (or `.blueGreen.analysis.prometheus`) replaces the pods'
Redis windows as the source of the figures `analysis.judge` compares with the thresholds. Each
figure is one PromQL query, rendered once for the canary revision and once for the stable one:

    Source.from_spec(analysis)  --queries_for(revision)-->  {figure: PromQL}
    the server's answer to each (one number, or none)  --measured-->  Measured  --judge-->  Verdict

The default queries read the runtime's own series as the chart's PodMonitor labels them (the
`namespace` of the pod and `dspy_deployment`, the resource's name), so a user who installed the
chart's monitors needs only the server's address. A query a user writes may use the variables
`{{ namespace }}`, `{{ name }}`, `{{ revision }}` and `{{ interval }}` (the analysis interval as a
PromQL duration, e.g. `60s`); any other `{{ ... }}` is an error named in the verdict.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from dspy_operator.rollout.analysis import round_figure

FIGURES: Final = ("requests", "errorRate", "p95LatencySeconds", "costPerRequestUsd")
"""The figures `judge` reads, named as in status.lastAnalysis and in `prometheus.queries`."""

SERVER_ERROR_TYPES: Final = ("circuit_open", "internal_error", "not_ready", "upstream_error", "upstream_timeout")
"""The `status` label values of `dspy_predictions_total` whose HTTP status is >= 500: the failures a
bad revision causes, as the Redis windows count them. Copied, not imported: the operator never
imports the runtime (a unit test keeps this equal to the runtime's error classes)."""

DEFAULT_TIMEOUT_SECONDS: Final = 10

_SELECTOR: Final = 'namespace="{{ namespace }}", dspy_deployment="{{ name }}", revision="{{ revision }}"'
_ERRORS: Final = "|".join(SERVER_ERROR_TYPES)
DEFAULT_QUERIES: Final[Mapping[str, str]] = {
    "requests": f"sum(increase(dspy_predictions_total{{{_SELECTOR}}}[{{{{ interval }}}}]))",
    "errorRate": (
        f'sum(increase(dspy_predictions_total{{{_SELECTOR}, status=~"{_ERRORS}"}}[{{{{ interval }}}}]) or vector(0))'
        f" / sum(increase(dspy_predictions_total{{{_SELECTOR}}}[{{{{ interval }}}}]))"
    ),
    "p95LatencySeconds": (
        f"histogram_quantile(0.95, sum by (le) (rate(dspy_prediction_duration_seconds_bucket{{{_SELECTOR}}}"
        f"[{{{{ interval }}}}])))"
    ),
    # Cost per LM-computed request (neither cached nor failed), as the Redis windows define it: a
    # failure is recorded in the duration histogram with cached="false", so failures are taken out.
    "costPerRequestUsd": (
        f"sum(increase(dspy_cost_usd_total{{{_SELECTOR}}}[{{{{ interval }}}}]))"
        f' / (sum(increase(dspy_prediction_duration_seconds_count{{{_SELECTOR}, cached="false"}}[{{{{ interval }}}}]))'
        f' - (sum(increase(dspy_predictions_total{{{_SELECTOR}, status!="ok"}}[{{{{ interval }}}}])) or vector(0)))'
    ),
}
"""What each figure is when `prometheus.queries` does not say."""

VARIABLES: Final = ("namespace", "name", "revision", "interval")
_VARIABLE: Final = re.compile(r"\{\{\s*([^{}]*?)\s*\}\}")


class QueryError(ValueError):
    """A query that cannot be rendered or whose answer is not one number; the message says which."""


@dataclass(frozen=True, slots=True)
class Source:
    """`analysis.prometheus` with its defaults: where to ask, how long to wait, what to ask."""

    address: str
    timeout_seconds: int
    queries: Mapping[str, str]

    @classmethod
    def from_spec(cls, analysis: Mapping[str, Any] | None) -> Source | None:
        """None when the analysis reads the pods' Redis windows (no `prometheus` block)."""
        block = (analysis or {}).get("prometheus")
        if not block:
            return None
        written = block.get("queries") or {}
        queries = {figure: str(written.get(figure) or DEFAULT_QUERIES[figure]) for figure in FIGURES}
        return cls(address=str(block["address"]).rstrip("/"),
                   timeout_seconds=int(block.get("timeoutSeconds") or DEFAULT_TIMEOUT_SECONDS), queries=queries)

    def queries_for(self, namespace: str, name: str, revision: str, interval_seconds: int) -> dict[str, str]:
        """Every figure's query for one revision, ready to send. Raises QueryError naming the figure
        and the unknown variable."""
        variables = {"namespace": namespace, "name": name, "revision": revision, "interval": f"{interval_seconds}s"}
        return {figure: render(figure, query, variables) for figure, query in self.queries.items()}


def render(figure: str, query: str, variables: Mapping[str, str]) -> str:
    """`query` with each `{{ variable }}` replaced; an unknown one is a QueryError, not left in for
    Prometheus to reject with a message about a stray brace."""

    def value(match: re.Match[str]) -> str:
        variable = match.group(1)
        if variable not in variables:
            known = ", ".join("{{ %s }}" % known for known in VARIABLES)
            raise QueryError(f"prometheus.queries.{figure}: unknown variable {{{{ {variable} }}}} (known: {known})")
        return variables[variable]

    return _VARIABLE.sub(value, query)


def scalar(figure: str, data: Mapping[str, Any]) -> float | None:
    """The one number in the `data` of an instant query's answer; None when there is none (an empty
    vector: no series matched, e.g. no request yet) or it is not a number (NaN: 0/0, a quantile of
    nothing). More than one series is a QueryError: a figure must be one number per revision, and a
    query that forgot its `sum` would otherwise be judged on whichever series came first."""
    kind, result = data.get("resultType"), data.get("result")
    if kind == "scalar":
        samples = [result]
    elif kind == "vector" and isinstance(result, list):
        if len(result) > 1:
            raise QueryError(f"prometheus.queries.{figure} returned {len(result)} series; it must return one "
                             "(aggregate it, e.g. with sum(...))")
        samples = [series.get("value") for series in result]
    else:
        raise QueryError(f"prometheus.queries.{figure} returned a {kind}; it must return an instant vector or a scalar")
    if not samples:
        return None
    try:
        number = float(samples[0][1])
    except (TypeError, ValueError, IndexError) as error:
        raise QueryError(f"prometheus.queries.{figure} returned a sample that is not a number: {samples[0]!r}") from error
    return None if math.isnan(number) or math.isinf(number) else number


@dataclass(frozen=True, slots=True)
class Measured:
    """One revision's figures as Prometheus answered them: what `analysis.judge` reads of a Window.

    Counts from `increase` are extrapolated and so not whole numbers; they are rounded, and the
    errors are the error rate times the requests (the error-rate ratio's floor needs a count)."""

    requests: int = 0
    error_rate: float = 0.0
    p95_latency_seconds: float | None = None
    cost_per_computed_request: float | None = None

    @classmethod
    def from_values(cls, values: Mapping[str, float | None]) -> Measured:
        requests = max(0, round(values.get("requests") or 0.0))
        return cls(requests=requests, error_rate=min(1.0, max(0.0, values.get("errorRate") or 0.0)) if requests else 0.0,
                   p95_latency_seconds=values.get("p95LatencySeconds"),
                   cost_per_computed_request=values.get("costPerRequestUsd"))

    @property
    def errors(self) -> int:
        return round(self.error_rate * self.requests)

    def figures(self) -> dict[str, Any]:
        """For status (`lastAnalysis.canary` / `.stable`), shaped like `Window.figures`."""
        derived = {
            "errorRate": self.error_rate if self.requests else None,
            "p95LatencySeconds": self.p95_latency_seconds,
            "costPerRequestUsd": self.cost_per_computed_request,
        }
        rounded = {name: round_figure(value) for name, value in derived.items() if value is not None}
        return {"requests": self.requests, "errors": self.errors, **rounded}
