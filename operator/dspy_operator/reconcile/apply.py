"""The one writer of children: every create, apply and delete of a child goes through here.

Applies are server-side (field manager `dspy-operator`, force) and skipped when the
live child already carries the intent (see `drift`), so an idle reconcile makes no
write at all. Every write is logged with its verb, which is also how the e2e suite
can tell what the operator changed.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from dspy_operator import api
from dspy_operator.errors import KubeApiError
from dspy_operator.kube import KubeClient
from dspy_operator.reconcile.drift import up_to_date, with_applied_hash
from dspy_operator.reconcile.handover import handover_manager, replicas_handover


def describe(obj: Mapping[str, Any]) -> str:
    return f"{obj['kind']}/{obj['metadata']['name']}"


@dataclass(slots=True)
class Writes:
    """What one reconcile wrote, for Events and logs."""

    applied: list[str] = field(default_factory=list)
    created: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.applied or self.created or self.deleted)

    def summary(self) -> str:
        parts = [
            f"{verb} {', '.join(items)}"
            for verb, items in (("applied", self.applied), ("created", self.created), ("deleted", self.deleted))
            if items
        ]
        return "; ".join(parts)


class ChildWriter:
    """Writes children of one resource and remembers what it wrote.

    `observed` is what the caller knows of the live children (`Kind/name` -> body, from the
    operator's index): the writer compares against it instead of reading, and keeps it
    current with the answers of its own writes."""

    def __init__(self, kube: KubeClient, field_manager: str, logger: logging.Logger | logging.LoggerAdapter[Any],
                 observed: Mapping[str, dict[str, Any]]) -> None:
        self._kube = kube
        self._field_manager = field_manager
        self._logger = logger
        self.observed = dict(observed)
        self.writes = Writes()

    def ensure(self, intents: Iterable[dict[str, Any]]) -> None:
        """Apply each intent whose live child differs."""
        for intent in intents:
            stamped = with_applied_hash(intent)
            key = describe(stamped)
            if not up_to_date(stamped, self.observed.get(key)):
                handover = replicas_handover(stamped, self.observed)
                if handover is not None:
                    self._logger.info("hand spec.replicas of %s over to its HorizontalPodAutoscaler", key)
                    self._kube.apply(handover, handover_manager(self._field_manager))
                self._logger.info("server-side apply %s", key)
                self.observed[key] = self._kube.apply(stamped, self._field_manager)
                self.writes.applied.append(key)

    def create_once(self, obj: dict[str, Any]) -> dict[str, Any]:
        """The live object if it exists, otherwise create `obj`; never updates an existing one."""
        key = describe(obj)
        live = self.observed.get(key)
        if live is not None:
            return live
        metadata = obj["metadata"]
        self._logger.info("create %s", key)
        try:
            live = self._kube.create(obj, self._field_manager)
        except KubeApiError as error:
            if error.status != 409:
                raise
            # Created since the index last heard of it (another pass of the same resource); use it.
            live = self._kube.get(obj["kind"], metadata["namespace"], metadata["name"])
            assert live is not None
        else:
            self.writes.created.append(key)
        self.observed[key] = live
        return live

    def prune(self, namespace: str, owner_uid: str, keep: set[str], spare: frozenset[str]) -> None:
        """Delete observed children of this owner that the desired set no longer has (`keep`:
        `Kind/name`), except those whose component label is in `spare`."""
        for key, live in list(self.observed.items()):
            component = (live["metadata"].get("labels") or {}).get(api.LABEL_COMPONENT)
            if key in keep or component in spare or not _owned_by(live, owner_uid):
                continue
            self._logger.info("delete %s", key)
            self._kube.delete(live["kind"], namespace, live["metadata"]["name"])
            del self.observed[key]
            self.writes.deleted.append(key)


def _owned_by(obj: Mapping[str, Any], uid: str) -> bool:
    """Only children whose controller reference is this very resource (not a namesake) are pruned."""
    return any(
        ref.get("uid") == uid and ref.get("controller")
        for ref in (obj.get("metadata") or {}).get("ownerReferences") or []
    )
