"""Watchers of children: a child deleted or edited by someone else is restored at once.

The watches are filtered server-side to `app.kubernetes.io/managed-by=dspy-operator`
(see startup). A change is acted on only if it was not ours: a deletion, or an edit
recorded in managedFields by another manager after our last apply. Status updates by
controllers go to the status subresource and are ignored here; the resync timer
reports them.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import kopf

from dspy_operator import api
from dspy_operator.handlers.context import from_memo
from dspy_operator.handlers.indexes import Key, controller_name, owner_of
from dspy_operator.handlers.startup import CHILD_RESOURCES
from dspy_operator.reconcile.handover import handover_manager
from dspy_operator.handlers.sync import sync

_MANAGED = {api.LABEL_MANAGED_BY: api.MANAGED_BY}
CONTROLLER_MANAGER = "kube-controller-manager"


def worth_restoring(type: str | None, body: kopf.Body, memo: kopf.Memo, **_: Any) -> bool:
    """A deletion, or an edit by another manager: the only events that call for a reconcile.

    A `when=` filter: kopf checks it in the event loop, so our own writes and the controllers'
    status updates never take a thread of the pool the reconciles run in."""
    if type == "DELETED":
        return True
    return type == "MODIFIED" and edited_by_others(body, from_memo(memo).settings.field_manager)


def restore_child(type: str, body: kopf.Body, memo: kopf.Memo, logger: logging.Logger,
                  dspy_owners: kopf.Index[Key, dict[str, Any]], dspy_children: kopf.Index[Key, dict[str, Any]],
                  **_: Any) -> None:
    """Re-apply the owner's children when one of them was deleted or changed by hand.

    The owner and its children come from the indexes (kopf updates them with this very event
    before calling the handler); the owner's references as the timer sees them. The pass is
    the owner's own (`sync`), serialized with its other passes."""
    context = from_memo(memo)
    owner_name = controller_name(body)
    if owner_name is None:
        return
    namespace = body["metadata"]["namespace"]
    owner = owner_of(dspy_owners, namespace, owner_name)
    if owner is None or owner["metadata"].get("deletionTimestamp"):
        return  # the owner is going away; garbage collection removes the rest
    if (owner.get("spec") or {}).get("paused"):
        return  # paused: no child writes (the owner's handlers report the state)
    try:
        result = sync(owner, context, dspy_children, logger, fresh=False, retry=0)
    except kopf.TemporaryError as error:
        # A terminating namespace refuses new objects: nothing to restore, it is all going away.
        log = logger.debug if "being terminated" in str(error) else logger.warning
        log("could not restore children of %s/%s: %s", namespace, owner_name, error)
        return
    if result.writes:
        kind = body.get("kind") or "child"
        kopf.warn(owner, reason="ChildRestored",
                  message=f"{kind}/{body['metadata']['name']} {type.lower()} by hand: {result.writes.summary()}")


def edited_by_others(body: Mapping[str, Any], field_manager: str) -> bool:
    """Whether another manager updated the object's main resource at or after our last apply.

    kube-controller-manager is left out: it writes only fields of its own there (the
    Deployment's revision annotation), and counting it would re-reconcile on every
    status event of a Deployment that has rolled out once. So is our own hand-over of
    `spec.replicas` to the HPA (`reconcile.handover`)."""
    entries = (body.get("metadata") or {}).get("managedFields") or []
    ours = [entry.get("time") or "" for entry in entries if entry.get("manager") == field_manager]
    last_ours = max(ours, default="")
    return any(
        entry.get("manager") not in (field_manager, handover_manager(field_manager), CONTROLLER_MANAGER)
        and not entry.get("subresource")
        and (entry.get("time") or "") >= last_ours
        for entry in entries
    )


def _register() -> None:
    """One watcher per child kind, all calling the same function."""
    for group_version, plural in CHILD_RESOURCES:
        kopf.on.event(group_version, plural, labels=_MANAGED, when=worth_restoring,
                      id=f"restore-{plural}")(restore_child)


_register()
