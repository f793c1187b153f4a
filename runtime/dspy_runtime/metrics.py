"""Prometheus metrics of one runtime app.

Each ``Metrics`` owns its ``CollectorRegistry``: nothing registers at import time, so
tests (and benchmarks) can build as many apps as they like in one process without
"Duplicated timeseries" errors. Metric names are the contract in DESIGN.md and the
dashboards and alerts in the Helm chart depend on them; do not rename. ``revision``
(a 12-hex content hash, or ``default``) grows by one value per rollout a pod lives
through, which keeps it low-cardinality.

The request path uses pre-bound label children (``bound``, ``cache_op``), because
``Counter.labels(...)`` takes a lock and builds a key on every call.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from enum import Enum
from types import MappingProxyType

from typing import Protocol, TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.metrics import MetricWrapperBase

M = TypeVar("M", bound=MetricWrapperBase)


class _Budget(Protocol):
    """What ``watch_budget`` reads of ``resilience.Budget`` (not imported: metrics has no deps)."""

    daily_usd: float | None

    @property
    def known_today(self) -> float: ...

# Cached predictions finish in tens to hundreds of microseconds and LM calls in
# milliseconds to tens of seconds: the buckets cover both ends with ~2.5x steps.
LATENCY_BUCKETS: tuple[float, ...] = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)  # fmt: skip

BATCH_SIZE_BUCKETS: tuple[float, ...] = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 10_000)
STREAM_COMPLETE, STREAM_ERROR = "complete", "error"
"""``result`` of ``dspy_stream_responses_total``."""

BREAKER_STATE_VALUES: Mapping[str, int] = MappingProxyType({"closed": 0, "open": 1, "half_open": 2})
"""Gauge encoding of ``dspy_circuit_breaker_state`` (keys are ``BreakerState`` values)."""


class Metrics:
    """The runtime's metric families, registered on one registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        r = self.registry
        self.predictions_total = Counter(
            "dspy_predictions_total",
            "Predictions served, by revision, variant and outcome (ok, or the error type).",
            ("model", "revision", "variant", "status"),
            registry=r,
        )
        self.prediction_duration_seconds = Histogram(
            "dspy_prediction_duration_seconds",
            "Wall time of one prediction request, cached or computed; failures are recorded too "
            "(with cached=\"false\"), so a revision that times out does not look fast.",
            ("model", "revision", "variant", "cached"),
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.cache_operations_total = Counter(
            "dspy_cache_operations_total",
            "Cache operations by level (memory, redis) and operation (hit, miss, set, error).",
            ("level", "operation"),
            registry=r,
        )
        self.circuit_breaker_state = Gauge(
            "dspy_circuit_breaker_state",
            "Circuit breaker state per model: 0 closed, 1 open, 2 half-open.",
            ("model",),
            registry=r,
        )
        self.cost_usd_total = Counter(
            "dspy_cost_usd_total",
            "Estimated LM spend in US dollars, by revision and variant.",
            ("model", "revision", "variant"),
            registry=r,
        )
        self.token_usage_total = Counter(
            "dspy_token_usage_total",
            "LM tokens used, by type (input, output).",
            ("model", "type"),
            registry=r,
        )
        self.active_predictions = Gauge(
            "dspy_active_predictions",
            "Predictions in progress in this process.",
            registry=r,
        )
        self.errors_total = Counter(
            "dspy_errors_total",
            "Errors by type (a small fixed set of names, never messages).",
            ("type",),
            registry=r,
        )
        # Shadow traffic (shadow.py): copies of live requests, answered and discarded.
        # `revision`/`variant` name the shadow target; `result` and `reason` are fixed sets.
        self.shadow_requests_total = Counter(
            "dspy_shadow_requests_total",
            "Shadow copies run to the end, by result: agree or disagree with the live answer, or error.",
            ("revision", "variant", "result"),
            registry=r,
        )
        self.shadow_latency_seconds = Histogram(
            "dspy_shadow_latency_seconds",
            "Wall time of one shadow call, failures included (never part of a live request's time).",
            ("revision", "variant"),
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.shadow_dropped_total = Counter(
            "dspy_shadow_dropped_total",
            "Shadow copies not made, by reason: busy (no free slot), cap (shadow daily cap reached), "
            "budget (the live budget has too little left).",
            ("revision", "variant", "reason"),
            registry=r,
        )
        self.shadow_cost_usd_total = Counter(
            "dspy_shadow_cost_usd_total",
            "Estimated LM spend of shadow calls in US dollars (also counted in dspy_cost_usd_total and the budget).",
            ("revision", "variant"),
            registry=r,
        )
        # The daily budget (DAILY_BUDGET_USD), for dashboards and the "budget nearly spent" alert.
        self.budget_daily_usd = Gauge(
            "dspy_budget_daily_usd",
            "The daily spend limit in US dollars (DAILY_BUDGET_USD); 0 means unlimited.",
            registry=r,
        )
        self.budget_spent_today_usd = Gauge(
            "dspy_budget_spent_today_usd",
            "Today's (UTC) spend in US dollars as this pod last knew it: the total every replica "
            "shares through Redis, or this pod's own without Redis.",
            registry=r,
        )
        # Batch and streaming predictions: each item and each stream is also a prediction above.
        self.batch_items = Histogram(
            "dspy_batch_items",
            "Items per POST /v1/predict/batch request (its _count: batch requests served).",
            buckets=BATCH_SIZE_BUCKETS,
            registry=r,
        )
        self.stream_responses_total = Counter(
            "dspy_stream_responses_total",
            "Streamed predictions by how the stream ended: complete (the final body sent) or error "
            "(an error event after the first chunk). A failure before any chunk is a plain JSON error.",
            ("result",),
            registry=r,
        )
        for result in (STREAM_COMPLETE, STREAM_ERROR):
            self.stream_responses_total.labels(result)  # exported at 0, so increase() sees the first
        # Cache warm-up (warmup.py) and invalidation (cache/invalidation.py).
        self.cache_warmup_entries_total = Counter(
            "dspy_cache_warmup_entries_total",
            "Warm-up entries by outcome: redis (found in Redis), lm (computed by this pod), failed "
            "(the LM call failed or the time ran out), invalid (a bad line of CACHE_WARMUP_PATH), "
            "hot (copied into memory from Redis' most hit entries).",
            ("outcome",),
            registry=r,
        )
        self.cache_warmup_state = Gauge(
            "dspy_cache_warmup_state",
            "Warm-up state: 0 done (or nothing to warm), 1 running (/ready answers 503), "
            "2 incomplete (CACHE_WARMUP_TIMEOUT_SECS ran out; the pod serves anyway).",
            registry=r,
        )
        self.cache_invalidations_total = Counter(
            "dspy_cache_invalidations_total",
            "Invalidations applied to this pod's memory cache, by source: local (DELETE /v1/cache "
            "on this pod), remote (another pod's, by pub/sub), resync (missed while disconnected: all cleared).",
            ("source",),
            registry=r,
        )
        self.cache_invalidated_entries_total = Counter(
            "dspy_cache_invalidated_entries_total",
            "Entries removed by invalidations, by level (memory: this pod's; redis: by this pod's DELETE).",
            ("level",),
            registry=r,
        )
        self.degradation_level = Gauge(
            "dspy_degradation_level",
            "This pod's graceful degradation level: 0 normal, 1 cheaper model first, 2 shorter "
            "max_tokens, 3 cache only (stale answers, no LM call). 0 while DEGRADATION_ENABLED is false.",
            registry=r,
        )
        # (family, label values) -> child; label values are low-cardinality by contract.
        self._children: dict[tuple[MetricWrapperBase, tuple[str, ...]], MetricWrapperBase] = {}

    def bound(self, family: M, *labels: str) -> M:
        """``family.labels(*labels)``, created once and then looked up without a lock."""
        key = (family, labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = family.labels(*labels)
        return child  # type: ignore[return-value]

    def cache_op(self, level: str, operation: str) -> Counter:
        """The bound ``dspy_cache_operations_total`` child."""
        return self.bound(self.cache_operations_total, level, operation)

    def set_breaker_state(self, model: str, state: str | Enum) -> None:
        """Export a breaker state (a ``BreakerState`` or its value) as the gauge encoding."""
        value = state.value if isinstance(state, Enum) else state
        self.circuit_breaker_state.labels(model).set(BREAKER_STATE_VALUES[value])

    def watch_budget(self, budget: _Budget) -> None:
        """Export ``budget``'s limit, and its spend read at scrape time (no I/O)."""
        self.budget_daily_usd.set(budget.daily_usd or 0)
        self.budget_spent_today_usd.set_function(lambda: budget.known_today)

    def watch_degradation(self, level: Callable[[], int]) -> None:
        """Export the degradation level, asked for at scrape time (which also lets it recover when idle)."""
        self.degradation_level.set_function(level)

    def declare_variants(self, served: Iterable[tuple[str, str, str]], failures: Iterable[str]) -> None:
        """Export the series of every served (model, revision, variant) at 0 before its first
        request: its predictions (ok, and each server error), its computed and cached latency and
        its cost. Called at scrape time with the live table, so a new canary's series exist from
        its first scrape on: `increase()` and `rate()` only see increments between two samples,
        and a series first scraped at 1 would hide that first request from a Prometheus-based
        analysis (and a first error from an error-rate alert). `failures`: the server errors'
        ``status`` values (``errors.server_error_types()``; metrics imports nothing of the app)."""
        statuses = ("ok", *failures)
        for model, revision, variant in served:
            if (self.predictions_total, (model, revision, variant, "ok")) in self._children:
                continue  # declared (or served) before; bound() children are never removed
            for status in statuses:
                self.bound(self.predictions_total, model, revision, variant, status)
            for cached in ("false", "true"):
                self.bound(self.prediction_duration_seconds, model, revision, variant, cached)
            self.bound(self.cost_usd_total, model, revision, variant)

    def render(self) -> tuple[bytes, str]:
        """Body and content type for ``GET /metrics``."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
