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
"""Entries of status.history when spec.revisionHistoryLimit is unset (the CRD's default)."""
PROMOTED, ABORTED, ROLLED_BACK = "Promoted", "Aborted", "RolledBack"
"""How a revision's rollout ended, in status.history."""


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
class Switch:
    """spec.rollout.blueGreen with the CRD's defaults."""

    auto_promotion: bool = True
    auto_promotion_seconds: int = 0
    scale_down_delay_seconds: int = 300
    preview_replicas: int = 1


@dataclass(frozen=True, slots=True)
class Scale:
    """How many runtime pods the spec asks for: a count, or the HPA's bounds."""

    replicas: int = 1
    autoscaling: tuple[int, int] | None = None
    """(minReplicas, maxReplicas) when the HPA owns the count."""

    def clamp(self, count: int) -> int:
        if self.autoscaling is None:
            return self.replicas
        low, high = self.autoscaling
        return min(max(count, low), high)

    @property
    def floor(self) -> int:
        return self.autoscaling[0] if self.autoscaling is not None else self.replicas


@dataclass(frozen=True, slots=True)
class Plan:
    """What spec.rollout asks for, with the CRD's defaults."""

    strategy: str
    steps: tuple[Step, ...] = ()
    analysis: Mapping[str, Any] | None = None
    """The analysis section of spec.rollout.canary or .blueGreen as written (thresholds are read by
    `analysis.Thresholds`)."""
    gate: Gate | None = None
    switch: Switch = field(default_factory=Switch)
    scale: Scale = field(default_factory=Scale)
    history_limit: int = HISTORY_LIMIT
    shadow: bool = False
    """spec.rollout.canary.shadow: a canary at weight 0 gets shadow copies of the stable's requests."""

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any]) -> Plan:
        rollout = spec.get("rollout") or {}
        strategy = str(rollout.get("strategy") or "RollingUpdate")
        canary = rollout.get("canary") or {}
        blue_green = rollout.get("blueGreen") or {}
        steps = tuple(
            Step(weight=int(step["setWeight"])) if "setWeight" in step
            else Step(pause_seconds=(step.get("pause") or {}).get("seconds"))
            for step in canary.get("steps") or []
        )
        scaling = spec.get("autoscaling")
        replicas = int(spec.get("replicas", 1))
        scale = Scale(replicas=replicas, autoscaling=(
            (int(scaling.get("minReplicas", 1)), int(scaling.get("maxReplicas", max(int(scaling.get("minReplicas", 1)), 1))))
            if scaling else None))
        switch = Switch(
            auto_promotion=bool(blue_green.get("autoPromotionEnabled", True)),
            auto_promotion_seconds=int(blue_green.get("autoPromotionSeconds") or 0),
            scale_down_delay_seconds=int(blue_green.get("scaleDownDelaySeconds", 300)),
            preview_replicas=int(blue_green.get("previewReplicas") or scale.floor),
        )
        analysis = canary.get("analysis") if strategy != "BlueGreen" else blue_green.get("analysis")
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
        return cls(strategy=strategy, steps=steps, analysis=analysis, gate=gate, switch=switch, scale=scale,
                   history_limit=int(spec.get("revisionHistoryLimit") or HISTORY_LIMIT),
                   shadow=bool(canary.get("shadow")))

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
    """The rollout fields of status. `canary` empty: no canary in progress.

    Under BlueGreen `canary` is the preview's revision (at weight 0: the preview takes no live
    traffic), and `colors` says which revision each color's Deployment runs; a color absent
    from it has no Deployment. SINGLE in `colors` is the one Deployment of a resource that is
    migrating to BlueGreen."""

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
    active_color: str = ""
    preview_color: str = ""
    preview_ready: str | None = None
    switching: bool = False
    """The preview is being scaled to the active count; the Service flips once it is there."""
    scale_down: str | None = None
    """When the colors other than the active and preview ones go."""
    colors: Mapping[str, str] = field(default_factory=dict)

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
            history=tuple(_history_entry(entry) for entry in status.get("history") or ()),
            last_analysis=status.get("lastAnalysis"),
            evaluation=status.get("evaluation"),
            last_request=status.get("lastRequest"),
            active_color=str(status.get("activeColor") or ""),
            preview_color=str(status.get("previewColor") or ""),
            preview_ready=status.get("previewReadyTime"),
            switching=bool(status.get("switching")),
            scale_down=status.get("scaleDownTime"),
            colors={("" if color == "single" else color): str(revision)
                    for color, revision in (status.get("colorRevisions") or {}).items() if revision},
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
            "activeColor": self.active_color,
            "previewColor": self.preview_color,
            "previewReadyTime": self.preview_ready,
            "switching": self.switching,
            "scaleDownTime": self.scale_down,
            "colorRevisions": {(color or "single"): revision for color, revision in sorted(self.colors.items())},
        }

    def served(self) -> list[tuple[str, int]]:
        """(revision, percent) pairs of the routing table this state calls for (for RollingUpdate
        and Canary: every pod serves it). A canary at weight 0 (behind its evaluation gate) is
        listed: servable when pinned, never chosen."""
        if not self.stable:
            return []
        if not self.canary:
            return [(self.stable, 100)]
        return [(self.stable, 100 - self.weight), (self.canary, self.weight)]

    def referenced(self) -> set[str]:
        """Revisions whose definitions must be kept: served ones, those a color runs, and every
        revision in the history (undo may return to any promoted one)."""
        kept = {name for name, _ in self.served()} | set(self.colors.values())
        kept.update(str(entry.get("revision")) for entry in self.history if entry.get("revision"))
        return kept

    def recorded(self, revision: str, outcome: str, now: datetime, limit: int, message: str = "") -> RolloutState:
        """A history entry, newest first, at most `limit` of them."""
        entry = {"revision": revision, "outcome": outcome, "time": format_time(now)}
        if message:
            entry["message"] = message
        return replace(self, history=(entry, *self.history)[:limit])

    def with_promotion(self, revision: str, now: datetime, limit: int = HISTORY_LIMIT) -> RolloutState:
        """`revision` becomes stable: a history entry, no canary."""
        promoted = replace(
            self, stable=revision, canary="", weight=0, step=0, step_started=None, paused=False, pause_reason="",
        )
        return promoted.recorded(revision, PROMOTED, now, limit)

    def undo_target(self) -> str | None:
        """The revision `undo` returns to: the newest promoted one that is not stable and was not
        aborted or rolled back since (so undo after undo walks further back)."""
        ended: set[str] = {self.stable}
        for entry in self.history:
            revision = str(entry.get("revision") or "")
            if entry.get("outcome") == PROMOTED and revision and revision not in ended:
                return revision
            ended.add(revision)
        return None


def _history_entry(entry: Mapping[str, Any]) -> Mapping[str, Any]:
    """Entries written before outcomes were recorded were all promotions."""
    if "outcome" in entry or "promotedAt" not in entry:
        return entry
    return {"revision": entry.get("revision"), "outcome": PROMOTED, "time": entry.get("promotedAt")}


@dataclass(frozen=True, slots=True)
class ColorReport:
    """One runtime Deployment as the rollout sees it (read from the cluster by the handler)."""

    revision: str
    """The revision its pod template runs (BlueGreen colors; empty for the SINGLE Deployment)."""
    replicas: int
    """Its spec.replicas (the HPA's count when autoscaling)."""
    available: int
    complete: bool
    """Every pod runs the newest template and is available."""


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
