"""What a rollout pass observes besides the cluster: the runtime pods' reports in Redis.

The I/O edge in front of the pure step machine: it reads the analysis window when one is due
(or asks the user's Prometheus for the same figures), the evaluation gate's result, and which
table the pods serve, and hands them over as data (`rollout.canary.Observations`, `Judgement`,
`EvaluationResult`). Every Redis error surfaces as `runtimebus.BusUnavailable`; the pass then
holds the rollout where it is. A Prometheus that cannot answer makes the interval Inconclusive.
"""

from __future__ import annotations

import base64
import threading
import time
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from cachetools import TTLCache

from dspy_operator import api, prometheus
from dspy_operator.reconcile.common import Owner, section
from dspy_operator.reconcile.inputs import MAX_REMEMBERED, REREAD_SECONDS
from dspy_operator.prometheus import PrometheusUnavailable
from dspy_operator.rollout.analysis import (INCONCLUSIVE, Thresholds, Window, by_revision, judge, settled_end,
                                           windows_from_buckets)
from dspy_operator.rollout.canary import EvaluationResult, Judgement
from dspy_operator.rollout.experiment import experiment_status
from dspy_operator.rollout.promql import Measured, QueryError, Source, scalar
from dspy_operator.rollout.shadow import shadow_status
from dspy_operator.rollout.state import Plan, RolloutState
from dspy_operator.runtimebus import BusUnavailable, RuntimeBus
from dspy_operator.status.conditions import now_rfc3339
from dspy_operator.status.pods import degradation_status, served_by
from dspy_operator.status.report import Pods

REDIS, PROMETHEUS = "Redis", "Prometheus"
"""`status.lastAnalysis.source`: where the figures of a verdict came from."""
EXPERIMENT_WINDOW_SECONDS = 1800
"""The A/B statistics cover the last half hour (the pods' buckets live an hour)."""
EXPERIMENT_REFRESH_SECONDS = 60.0
"""How often they are recomputed: a status write a minute at most, and none while nothing is served."""
SHADOW_WINDOW = "30m"
"""`status.shadow.window`: the span of EXPERIMENT_WINDOW_SECONDS, as the block names it."""


def reads_prometheus(plan: Plan) -> bool:
    """Whether the analysis asks the user's Prometheus (and so needs no Redis for its verdicts)."""
    return Source.from_spec(plan.analysis) is not None


def judgement(bus: RuntimeBus | None, owner: Owner, plan: Plan, state: RolloutState, now: datetime) -> Judgement:
    """The verdict on the analysis interval that ends now (the caller checked it is due), from the
    pods' windows in Redis or, with `analysis.prometheus`, from the user's Prometheus server (`bus`
    may then be None)."""
    source = Source.from_spec(plan.analysis)
    if source is None:
        if bus is None:
            raise BusUnavailable("the analysis reads the pods' windows from Redis, and there is no Redis")
        canary, stable = _windows(bus, owner, plan, state, now)
    else:
        try:
            canary, stable = _asked(source, owner, plan, state, now)
        except (QueryError, PrometheusUnavailable) as error:
            return Judgement(result=INCONCLUSIVE, message=f"no figures from Prometheus: {error}",
                             figures={"source": PROMETHEUS})
    verdict = judge(Thresholds.from_spec(plan.analysis), canary, stable)
    figures = canary.figures()
    summary: dict[str, Any] = {key: figures[key] for key in ("requests", "errorRate", "p95LatencySeconds") if key in figures}
    summary.update(source=REDIS if source is None else PROMETHEUS,
                   measurements=[measurement.as_status() for measurement in verdict.measurements], canary=figures)
    if stable is not None:
        summary["stable"] = stable.figures()
    return Judgement(result=verdict.result, message=verdict.message, figures=summary)


def _windows(bus: RuntimeBus, owner: Owner, plan: Plan, state: RolloutState,
             now: datetime) -> tuple[Window, Window | None]:
    """The canary's and the stable revision's windows of the last interval the pods have flushed."""
    end = settled_end(now.timestamp())
    start = end - plan.interval_seconds
    buckets = bus.read_buckets(api.redis_prefix(owner.namespace, owner.name), start, end)
    windows = by_revision(windows_from_buckets(buckets, start, end))
    return windows.get(state.canary, Window()), windows.get(state.stable)


def _asked(source: Source, owner: Owner, plan: Plan, state: RolloutState,
           now: datetime) -> tuple[Measured, Measured | None]:
    """The canary's and the stable revision's figures over the last interval, one query each.
    Raises QueryError or PrometheusUnavailable, naming the figure or the server."""

    def measured(revision: str) -> Measured:
        return prometheus_figures(source, owner.namespace, owner.name, revision, plan.interval_seconds, now.timestamp())

    return measured(state.canary), measured(state.stable) if state.stable else None


def prometheus_figures(source: Source, namespace: str, name: str, revision: str, interval_seconds: int,
                       at: float) -> Measured:
    """One revision's figures as `source` answers them at `at` (every figure's query, asked in
    turn). Raises QueryError or PrometheusUnavailable, naming the figure or the server."""
    queries = source.queries_for(namespace, name, revision, interval_seconds)
    return Measured.from_values({
        figure: scalar(figure, prometheus.instant_query(source.address, query, at, source.timeout_seconds))
        for figure, query in queries.items()
    })


class Throttle:
    """At most one run per key per period, remembered in this process (a restart runs once more)."""

    def __init__(self, period: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._period = period
        self._clock = clock
        self._last: dict[str, float] = {}
        self._lock = threading.Lock()

    def due(self, key: str) -> bool:
        now = self._clock()
        with self._lock:
            if now - self._last.get(key, -self._period) < self._period:
                return False
            self._last[key] = now
            return True


def _live_variants(spec: Mapping[str, Any]) -> list[str]:
    """spec.variants that take traffic by weight: a shadow variant is no arm of the experiment."""
    return [str(variant["name"]) for variant in spec.get("variants") or [] if not variant.get("shadow")]


def experiment_due(owner: Owner, state: RolloutState, throttle: Throttle) -> bool:
    """A standing experiment (two live variants or more), at most once per refresh period."""
    return len(_live_variants(owner.spec)) >= 2 and bool(state.stable) and throttle.due(owner.uid)


def experiment(bus: RuntimeBus, owner: Owner, state: RolloutState, current: Mapping[str, Any] | None,
               now: datetime) -> dict[str, Any] | None:
    """`status.experiment`: spec.variants of the stable revision over the last window; None when
    the figures are those already in status (only the window moved), so idle means no write."""
    end = settled_end(now.timestamp())
    start = end - EXPERIMENT_WINDOW_SECONDS
    buckets = bus.read_buckets(api.redis_prefix(owner.namespace, owner.name), start, end)
    windows = windows_from_buckets(buckets, start, end)
    names = _live_variants(owner.spec)
    figures = experiment_status([(name, windows.get((state.stable, name), Window())) for name in names], start, end)
    return None if current and current.get("variants") == figures["variants"] else figures


def has_shadow(owner: Owner, state: RolloutState) -> bool:
    """The spec asks for shadow targets among the served revisions: a shadow variant, or a canary
    that takes shadow copies (spec.rollout.canary.shadow) while one is in progress."""
    canary = section(owner.spec, "rollout", "canary")
    wanted = any(variant.get("shadow") for variant in owner.spec.get("variants") or []) or (
        bool(canary.get("shadow")) and bool(state.canary))
    return wanted and bool(state.stable)


def shadow(bus: RuntimeBus, owner: Owner, state: RolloutState, previous: Mapping[str, Any] | None,
           now: datetime, throttle: Throttle) -> dict[str, Any] | None:
    """`status.shadow`: the shadow targets of the served revisions over the last window, at most
    once per refresh period. None when the spec has no shadow target (no Redis read), when not due,
    or when the targets' figures are those already in status (`previous`): idle means no write,
    and `updated` says when the figures last changed."""
    if not has_shadow(owner, state) or not throttle.due(owner.uid):
        return None
    end = settled_end(now.timestamp())
    start = end - EXPERIMENT_WINDOW_SECONDS
    buckets = bus.read_buckets(api.redis_prefix(owner.namespace, owner.name), start, end)
    served = {name for name, _ in state.served()}
    block = shadow_status(buckets, start, end, served, window=SHADOW_WINDOW, updated=now_rfc3339(now))
    return None if previous and previous.get("targets") == block["targets"] else block


def evaluation(bus: RuntimeBus, owner: Owner, evaluation_id: str) -> EvaluationResult:
    """The runtime's result for the gate, or who runs it, or nothing yet."""
    prefix = api.redis_prefix(owner.namespace, owner.name)
    result = bus.evaluation_result(prefix, evaluation_id)
    if result is None:
        return EvaluationResult(runner=bus.evaluation_runner(prefix, evaluation_id))
    scores = {name: float(entry.get("score", 0.0)) for name, entry in (result.get("scores") or {}).items()
              if isinstance(entry, Mapping)}
    return EvaluationResult(state=str(result.get("state") or "Failed"), scores=scores,
                            message=str(result.get("message") or ""))


def pods(bus: RuntimeBus, owner: Owner, serial: int, now: float) -> Pods:
    """What the pods' reports say: who serves `serial`, and at which degradation level."""
    reports = bus.served_tables(api.redis_prefix(owner.namespace, owner.name))
    return Pods(served_by(reports, serial, now), degradation_status(reports, now))


class RedisAddresses:
    """The URL of each resource's Redis, as the operator reaches it.

    External: the URL Secret's value, read by GET and remembered for REREAD_SECONDS (a rotated
    URL is picked up within that). Managed: the managed Service with the generated password
    (the operator must run where that Service resolves: in the cluster). Values stay in this
    process' memory only."""

    def __init__(self, read: Callable[[str, str, str], Mapping[str, Any] | None],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._read = read
        self._cache: TTLCache[tuple[str, str, str], str] = TTLCache(MAX_REMEMBERED, REREAD_SECONDS, timer=clock)
        self._lock = threading.Lock()

    def url(self, owner: Owner, observed: Mapping[str, Mapping[str, Any]]) -> str | None:
        """None when the resource has no Redis or its Secret is not there (yet). `observed`: the
        live children, which hold the managed password Secret (see `handlers.indexes`)."""
        if owner.redis_mode == "External":
            ref = section(owner.spec, "redis").get("urlSecretRef") or {}
            return self._secret_value(owner.namespace, str(ref.get("name") or ""), str(ref.get("key") or "url"))
        if owner.redis_mode == "Managed":
            secret = observed.get(f"Secret/{api.redis_name(owner.name)}") or {}
            encoded = (secret.get("data") or {}).get(api.REDIS_PASSWORD_KEY)
            if not encoded:
                return None
            password = base64.b64decode(encoded).decode()
            host = f"{api.redis_name(owner.name)}.{owner.namespace}.svc"
            return f"redis://:{password}@{host}:{api.REDIS_PORT}/0"
        return None

    def _secret_value(self, namespace: str, name: str, key: str) -> str | None:
        if not name:
            return None
        with self._lock:
            remembered = self._cache.get((namespace, name, key))
        if remembered is not None:
            return remembered
        secret = self._read("Secret", namespace, name)
        encoded = ((secret or {}).get("data") or {}).get(key)
        if not encoded:
            return None
        value = base64.b64decode(encoded).decode()
        with self._lock:
            self._cache[namespace, name, key] = value
        return value
