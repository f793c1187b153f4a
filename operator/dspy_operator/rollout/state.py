"""The rollout's state as it lives in `status` (the only place it lives), and its plan from `spec`.

Kept apart from the step machine so that the handler, the status report and the plugin
read the same typed view. Times are RFC 3339 strings in status and aware datetimes here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import Any

HISTORY_LIMIT = 10
"""Promotions remembered in status.history (the CRD's maxItems)."""
REVISIONS_KEPT = 3
"""Revisions whose ConfigMaps are kept beyond stable and canary: how far `undo` reaches."""


def parse_time(text: Any) -> datetime | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError:
        return None


def format_time(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True, slots=True)
class Step:
    """One canary step: a weight to set, or a pause (`seconds` None: until promoted)."""

    weight: int | None = None
    pause_seconds: int | None = None

    @property
    def is_pause(self) -> bool:
        return self.weight is None

    def describe(self) -> str:
        if not self.is_pause:
            return f"setWeight {self.weight}"
        return f"pause {self.pause_seconds}s" if self.pause_seconds is not None else "pause until promoted"


@dataclass(frozen=True, slots=True)
class Gate:
    """The evaluation gate of spec.rollout.canary.analysis.evaluation."""

    configmap: str
    key: str
    metric: str
    min_score: float | None
    max_regression: float | None
    timeout_seconds: int


@dataclass(frozen=True, slots=True)
class Plan:
    """What spec.rollout asks for, with the CRD's defaults."""

    strategy: str
    steps: tuple[Step, ...] = ()
    analysis: Mapping[str, Any] | None = None
    """spec.rollout.canary.analysis as written (thresholds are read by `analysis.Thresholds`)."""
    gate: Gate | None = None

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any]) -> Plan:
        rollout = spec.get("rollout") or {}
        strategy = str(rollout.get("strategy") or "RollingUpdate")
        canary = rollout.get("canary") or {}
        steps = tuple(
            Step(weight=int(step["setWeight"])) if "setWeight" in step
            else Step(pause_seconds=(step.get("pause") or {}).get("seconds"))
            for step in canary.get("steps") or []
        )
        analysis = canary.get("analysis")
        evaluation = (analysis or {}).get("evaluation")
        gate = None
        if evaluation:
            ref = evaluation.get("configMapRef") or {}
            gate = Gate(
                configmap=str(ref.get("name") or ""),
                key=str(ref.get("key") or "devset.jsonl"),
                metric=str(evaluation.get("metric") or "ExactMatch"),
                min_score=evaluation.get("minScore"),
                max_regression=evaluation.get("maxRegression"),
                timeout_seconds=int(evaluation.get("timeoutSeconds") or 600),
            )
        return cls(strategy=strategy, steps=steps, analysis=analysis, gate=gate)

    @property
    def interval_seconds(self) -> int:
        return int((self.analysis or {}).get("intervalSeconds") or 60)

    @property
    def failure_limit(self) -> int:
        return int((self.analysis or {}).get("failureLimit", 2))

    @property
    def inconclusive_limit(self) -> int:
        return int((self.analysis or {}).get("inconclusiveLimit", 3))


@dataclass(frozen=True, slots=True)
class RolloutState:
    """The rollout fields of status. `canary` empty: no canary in progress."""

    stable: str = ""
    canary: str = ""
    weight: int = 0
    step: int = 0
    step_started: str | None = None
    aborted: str = ""
    paused: bool = False
    pause_reason: str = ""
    history: tuple[Mapping[str, Any], ...] = ()
    last_analysis: Mapping[str, Any] | None = None
    evaluation: Mapping[str, Any] | None = None
    last_request: Mapping[str, Any] | None = None

    @classmethod
    def from_status(cls, status: Mapping[str, Any]) -> RolloutState:
        return cls(
            stable=str(status.get("stableRevision") or ""),
            canary=str(status.get("canaryRevision") or ""),
            weight=int(status.get("canaryWeight") or 0),
            step=int(status.get("currentStep") or 0),
            step_started=status.get("currentStepStartTime"),
            aborted=str(status.get("abortedRevision") or ""),
            paused=bool(status.get("rolloutPaused")),
            pause_reason=str(status.get("pauseReason") or ""),
            history=tuple(status.get("history") or ()),
            last_analysis=status.get("lastAnalysis"),
            evaluation=status.get("evaluation"),
            last_request=status.get("lastRequest"),
        )

    def to_status(self) -> dict[str, Any]:
        """Every field, including empty ones: a finished canary must clear canaryRevision."""
        return {
            "stableRevision": self.stable,
            "canaryRevision": self.canary,
            "canaryWeight": self.weight,
            "currentStep": self.step,
            "currentStepStartTime": self.step_started,
            "abortedRevision": self.aborted,
            "rolloutPaused": self.paused,
            "pauseReason": self.pause_reason,
            "history": [dict(entry) for entry in self.history],
            "lastAnalysis": dict(self.last_analysis) if self.last_analysis is not None else None,
            "evaluation": dict(self.evaluation) if self.evaluation is not None else None,
            "lastRequest": dict(self.last_request) if self.last_request is not None else None,
        }

    def served(self) -> list[tuple[str, int]]:
        """(revision, percent) pairs of the routing table this state calls for. A canary at
        weight 0 (behind its evaluation gate) is listed: servable when pinned, never chosen."""
        if not self.stable:
            return []
        if not self.canary:
            return [(self.stable, 100)]
        return [(self.stable, 100 - self.weight), (self.canary, self.weight)]

    def referenced(self) -> set[str]:
        """Revisions whose definitions must be kept: served ones, and the recent stables undo may return to."""
        kept = {name for name, _ in self.served()}
        kept.update(str(entry.get("revision")) for entry in self.history[:REVISIONS_KEPT] if entry.get("revision"))
        return kept

    def with_promotion(self, revision: str, now: datetime) -> RolloutState:
        """`revision` becomes stable: a history entry, no canary."""
        entry = {"revision": revision, "promotedAt": format_time(now)}
        return replace(
            self, stable=revision, canary="", weight=0, step=0, step_started=None, paused=False, pause_reason="",
            history=(entry, *self.history)[:HISTORY_LIMIT],
        )


@dataclass(frozen=True, slots=True)
class Event:
    """An Event the handler posts for a decision (Normal unless `warning`)."""

    reason: str
    message: str
    warning: bool = False


@dataclass(frozen=True, slots=True)
class Decision:
    state: RolloutState
    events: tuple[Event, ...] = field(default_factory=tuple)
