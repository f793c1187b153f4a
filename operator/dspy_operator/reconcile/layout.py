"""Which runtime Deployments a resource has, what each serves and how many pods it runs (pure).

RollingUpdate and Canary run one Deployment named after the resource (color SINGLE) whose
pods all serve the rollout's routing table. BlueGreen runs one Deployment per color in
`status.colorRevisions`, each serving its own revision from its own table. The active
Service selects the active color, the preview Service the preview one, the HPA scales the
active color.

Moving between the two layouts never leaves the Service without pods: a Deployment
selectors cannot change, so the other layout's Deployments are built beside the old
ones, which are kept as they are (neither applied nor deleted) until they are no longer
needed. Into BlueGreen, the one Deployment is a color of the switch (`rollout.bluegreen`)
until the Service has moved to blue; out of it, the colors stay while the one Deployment
is not yet complete, and the Service (selecting every runtime pod) reaches both.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from dspy_operator import api
from dspy_operator.reconcile.common import Obj
from dspy_operator.reconcile.revisions import Revision
from dspy_operator.reconcile.routing import routing_table
from dspy_operator.rollout.bluegreen import active_count, preview_count
from dspy_operator.rollout.canary import Observations
from dspy_operator.rollout.state import ColorReport, Plan, RolloutState
from dspy_operator.status.report import Rollout

Table = tuple[tuple[str, int], ...]
"""(revision, percent) pairs of one routing table."""


@dataclass(frozen=True, slots=True)
class Slot:
    """One runtime Deployment."""

    color: str
    table: Table | None
    """What its pods serve; None: its routing table is left as it is."""
    replicas: int | None = None
    """None: the HPA owns the count."""
    pod_revision: str | None = None
    """The revision whose stored pod template it runs (BlueGreen); None: the spec's template."""
    kept: bool = False
    """The Deployment is left as it is (a layout being moved away from)."""


@dataclass(frozen=True, slots=True)
class Layout:
    slots: tuple[Slot, ...]
    active: str
    """The color the active Service selects (SINGLE: every runtime pod)."""
    preview: str | None
    """The color the preview Service selects; None: no preview Service."""
    scaled: str
    """The color whose Deployment the HPA targets."""

    def slot(self, color: str) -> Slot | None:
        return next((slot for slot in self.slots if slot.color == color), None)


def layout(plan: Plan, state: RolloutState, obs: Observations) -> Layout:
    if plan.strategy == "BlueGreen" and state.colors:
        return _blue_green(plan, state, obs)
    single_ready = (obs.colors.get(api.SINGLE) or ColorReport("", 0, 0, False)).complete
    count = None if plan.scale.autoscaling is not None else plan.scale.replicas
    slots = [Slot(api.SINGLE, tuple(state.served()), count)]
    if not single_ready:
        slots.extend(Slot(color, None, kept=True) for color in api.COLORS if color in obs.colors)
    return Layout(tuple(slots), active=api.SINGLE, preview=None, scaled=api.SINGLE)


def _blue_green(plan: Plan, state: RolloutState, obs: Observations) -> Layout:
    slots = []
    for color, revision in sorted(state.colors.items()):
        table: Table = ((revision, 100),)
        if color == api.SINGLE:
            # The Deployment being migrated from: its pods stay, serving the stable revision only.
            slots.append(Slot(color, table, kept=True))
            continue
        if color == state.active_color:
            replicas = active_count(plan, state, obs)
        elif color == state.preview_color:
            replicas = preview_count(plan, state, obs)
            if plan.gate is not None and state.stable and state.stable != revision:
                # The gate scores stable and preview in one pod: the preview's pods serve both.
                table = (*table, (state.stable, 0))
        else:
            # Kept for scaleDownDelaySeconds after a switch, at the count it had.
            report = obs.colors.get(color)
            replicas = report.replicas if report is not None else active_count(plan, state, obs)
        slots.append(Slot(color, table, replicas, pod_revision=revision))
    return Layout(tuple(slots), active=state.active_color, preview=state.preview_color or state.active_color,
                  scaled=state.active_color)


def tables_of(spec: Mapping[str, Any], placed: Layout, known: Mapping[str, Revision],
              shadowed: frozenset[str] = frozenset()) -> dict[str, Obj]:
    """The routing table of every slot whose table is written, by color (serial not yet set);
    `shadowed`: revisions served in shadow while at weight 0 (`routing.routing_table`)."""
    return {slot.color: routing_table(spec, [(known[name], weight) for name, weight in slot.table if name in known],
                                      shadowed)
            for slot in placed.slots if slot.table is not None}


def color_reports(name: str, observed: Mapping[str, Mapping[str, Any]]) -> dict[str, ColorReport]:
    """The live runtime Deployments of resource `name`, by color."""
    reports: dict[str, ColorReport] = {}
    for color in (api.SINGLE, *api.COLORS):
        live = observed.get(f"Deployment/{api.deployment_name(name, color)}")
        if live is None:
            continue
        rollout = Rollout.of(live)
        template = ((live.get("spec") or {}).get("template") or {}).get("metadata") or {}
        reports[color] = ColorReport(
            revision=str((template.get("annotations") or {}).get(api.ANNOTATION_REVISION) or ""),
            replicas=rollout.desired, available=rollout.available, complete=rollout.complete,
        )
    return reports
