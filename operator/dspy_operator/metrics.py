"""Prometheus metrics of the operator itself, served on its own port (`DSPY_OPERATOR_METRICS_PORT`).

One `OperatorMetrics` owns its `CollectorRegistry`, built at startup and kept in the memo's
`Context` (nothing registers at import time, so every test builds its own). Labels are
low-cardinality by construction: a pass result, an API verb and HTTP code, an Event reason
from the rollout machines' fixed set, a verdict, a phase. No resource names: per-resource
state is in `kubectl get dspy` and the resources' Events.

The dashboards and alerts in the Helm chart use these names; do not rename.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from dspy_operator.status import conditions as c

OK, ERROR, CONFLICT, SPEC_INVALID = "ok", "error", "conflict", "spec_invalid"
RESULTS = (OK, ERROR, CONFLICT, SPEC_INVALID)
VERBS = ("get", "list", "apply", "create", "delete", "patch_status")
"""`list` is the startup discovery read of the resources a group/version serves."""
ROLLOUT_REASONS = (
    "CanaryStarted", "CanaryCancelled", "WeightChanged", "AnalysisFailed", "EvaluationPassed", "RolloutPaused",
    "RolloutAborted", "Promoted", "RolledBack", "RevisionServed", "RevisionLost", "RequestAccepted",
    "RequestRejected", "MigrationStarted", "PreviewStarted", "PreviewReady", "PreviewCancelled", "SwitchStarted",
    "Switched", "ScaledDown",
)
"""Every reason the rollout machines post (a test reads them from the source): exported at 0 from
the start, so `increase(...{reason="RolloutAborted"}[15m])` sees the first abort."""
VERDICTS = ("Pass", "Fail", "Inconclusive")
PHASES = (c.PHASE_PENDING, c.PHASE_PROGRESSING, c.PHASE_HEALTHY, c.PHASE_DEGRADED, c.PHASE_PAUSED)

# A pass makes zero to a few dozen API calls: milliseconds when idle, seconds when it writes.
DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


@dataclass(slots=True)
class PassOutcome:
    """How one pass ended, filled in by `handlers.sync` (an exception means `error`)."""

    result: str = OK

    def of(self, result: Any) -> Any:
        """Mark a finished pass `spec_invalid` when it found spec problems; returns `result`."""
        if result.observation.problems:
            self.result = SPEC_INVALID
        return result


class OperatorMetrics:
    """The operator's metric families on one registry, and its HTTP exporter."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        r = self.registry
        self.reconciles_total = Counter(
            "dspy_operator_reconciles_total",
            "Passes over a DSPyDeployment, by result: ok, error (an API or other failure, retried by "
            "kopf), conflict (status changed twice during the pass), spec_invalid (a spec problem reported).",
            ("result",), registry=r)
        self.reconcile_duration_seconds = Histogram(
            "dspy_operator_reconcile_duration_seconds",
            "Wall time of one pass (after waiting for the resource's turn), whatever its result.",
            buckets=DURATION_BUCKETS, registry=r)
        self.api_requests_total = Counter(
            "dspy_operator_api_requests_total",
            "Kubernetes API requests the operator's client made, by verb and HTTP status code "
            "(code \"none\": no answer, e.g. a connection error). kopf's own watches are not counted.",
            ("verb", "code"), registry=r)
        self.rollout_events_total = Counter(
            "dspy_operator_rollout_events_total",
            "Rollout Events posted, by reason (WeightChanged, Promoted, RolloutAborted, Switched, ...).",
            ("reason",), registry=r)
        self.analysis_verdicts_total = Counter(
            "dspy_operator_analysis_verdicts_total",
            "Canary and preview analysis verdicts recorded in status.lastAnalysis, by result "
            "(Pass, Fail, Inconclusive).",
            ("result",), registry=r)
        self.resources = Gauge(
            "dspy_operator_resources",
            "DSPyDeployments this operator serves, by status.phase.",
            ("phase",), registry=r)
        for result in RESULTS:
            self.reconciles_total.labels(result)
        for reason in ROLLOUT_REASONS:
            self.rollout_events_total.labels(reason)
        for verdict in VERDICTS:
            self.analysis_verdicts_total.labels(verdict)
        for phase in PHASES:
            self.resources.labels(phase).set(0)
        self._phases: dict[str, str] = {}
        self._lock = threading.Lock()
        self._server: Any = None

    @contextmanager
    def reconciling(self) -> Iterator[PassOutcome]:
        """Time one pass and count its result (an exception escaping is `error` unless marked)."""
        outcome = PassOutcome()
        start = time.perf_counter()
        try:
            yield outcome
        except BaseException:
            if outcome.result == OK:
                outcome.result = ERROR
            raise
        finally:
            self.reconcile_duration_seconds.observe(time.perf_counter() - start)
            self.reconciles_total.labels(outcome.result).inc()

    def api_request(self, verb: str, code: int | None) -> None:
        self.api_requests_total.labels(verb, str(code) if code is not None else "none").inc()

    def rollout(self, old: Mapping[str, Any] | None, new: Mapping[str, Any] | None, reasons: Iterable[str]) -> None:
        """Count the rollout Events a pass posted and the verdict it recorded, if a new one
        (`old`/`new`: status.lastAnalysis before and after the pass)."""
        for reason in reasons:
            self.rollout_events_total.labels(reason).inc()
        if new and new != old and new.get("verdict"):
            self.analysis_verdicts_total.labels(str(new["verdict"])).inc()

    def phase(self, uid: str, phase: str | None) -> None:
        """Remember a resource's phase (None forgets it: the resource is gone)."""
        with self._lock:
            if phase is None:
                self._phases.pop(uid, None)
            else:
                self._phases[uid] = phase
            counts = dict.fromkeys(PHASES, 0)
            for value in self._phases.values():
                counts[value] = counts.get(value, 0) + 1
            for name, count in counts.items():
                self.resources.labels(name).set(count)

    def forget(self, uid: str) -> None:
        self.phase(uid, None)

    def serve(self, port: int, address: str = "0.0.0.0") -> int:
        """Serve `GET /metrics` on `port` (0 < port) in a daemon thread; returns the bound port."""
        server, _thread = start_http_server(port, addr=address, registry=self.registry)
        self._server = server
        return int(server.server_address[1])

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
