"""What every pure builder shares: the owner's view and the small helpers of child dicts."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from dspy_operator import api

Obj = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Owner:
    """The parts of the DSPyDeployment every builder needs."""

    name: str
    namespace: str
    uid: str
    generation: int
    spec: Mapping[str, Any]

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> Owner:
        metadata = body["metadata"]
        return cls(
            name=metadata["name"],
            namespace=metadata["namespace"],
            uid=metadata["uid"],
            generation=int(metadata.get("generation") or 0),
            spec=body.get("spec") or {},
        )

    @property
    def reference(self) -> Obj:
        return api.owner_reference({"metadata": {"name": self.name, "uid": self.uid}})

    @property
    def redis_mode(self) -> str:
        return str((self.spec.get("redis") or {}).get("mode") or "Disabled")

    @property
    def strategy(self) -> str:
        return str(section(self.spec, "rollout").get("strategy") or "RollingUpdate")


def canonical_hash(value: Any) -> str:
    """sha256 of canonical JSON: equal content gives an equal hash whatever the key order."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def metadata(owner: Owner, name: str, component: str, **extra: Any) -> Obj:
    """A child's metadata: common labels, its component and the owner reference."""
    labels = {**api.common_labels(owner.name), api.LABEL_COMPONENT: component}
    return {
        "name": name,
        "namespace": owner.namespace,
        "labels": labels,
        "ownerReferences": [owner.reference],
        **extra,
    }


def section(spec: Mapping[str, Any], *path: str) -> Mapping[str, Any]:
    """The nested mapping at `path`, or an empty one when any level is unset."""
    node: Any = spec
    for key in path:
        node = (node or {}).get(key)
    return node or {}
