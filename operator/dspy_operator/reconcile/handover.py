"""Handing a Deployment's `spec.replicas` over to its HorizontalPodAutoscaler without a dip (pure).

Under autoscaling the operator's intent leaves `spec.replicas` out, so that the HPA owns it. But
a server-side apply that stops sending a field its manager owned *removes* that field, and the
API server then defaults `replicas` to 1: turning `spec.autoscaling` on for a Deployment running
5 pods (or a blue/green switch moving the HPA to a color whose count the operator set) would drop
it to one pod until the HPA's next sync. The documented way out is a hand-over: just before that
apply, a second field manager applies only `spec.replicas` with its live value, so the field has
another owner when ours lets go of it, and keeps its value. The HPA takes it from there (its
scale updates take ownership of the field).

The hand-over happens only at that transition: while the HPA already targets the Deployment,
ours no longer owns `replicas` and nothing is at risk.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

HANDOVER_SUFFIX = "-handover"


def handover_manager(field_manager: str) -> str:
    """The field manager of hand-over applies (`dspy-operator-handover`): never the operator's own,
    or the field would stay ours."""
    return field_manager + HANDOVER_SUFFIX


def replicas_handover(intent: Mapping[str, Any], observed: Mapping[str, Mapping[str, Any]]) -> dict[str, Any] | None:
    """The apply that keeps the live replica count through `intent`'s apply, or None when none is
    needed: `intent` is a Deployment without `spec.replicas` whose live twin has a count and is not
    yet the target of the observed HPA (`observed`: live children by `Kind/name`)."""
    if intent.get("kind") != "Deployment" or "replicas" in (intent.get("spec") or {}):
        return None
    metadata = intent["metadata"]
    live = observed.get(f"Deployment/{metadata['name']}")
    replicas = ((live or {}).get("spec") or {}).get("replicas")
    if replicas is None:
        return None  # a new Deployment: nothing to keep
    for key, child in observed.items():
        target = ((child.get("spec") or {}).get("scaleTargetRef") or {})
        if key.startswith("HorizontalPodAutoscaler/") and target.get("kind") == "Deployment" \
                and target.get("name") == metadata["name"]:
            return None
    return {
        "apiVersion": intent["apiVersion"], "kind": "Deployment",
        "metadata": {"name": metadata["name"], "namespace": metadata["namespace"]},
        "spec": {"replicas": int(replicas)},
    }
