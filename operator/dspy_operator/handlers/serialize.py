"""One pass at a time per resource, and never a decision from a body older than our own write.

kopf runs a resource's change handlers, its resync timer and the child watchers in separate
tasks of one thread pool, so two passes of one resource can overlap. A rollout step taken
twice, or taken from a body that predates the previous step, would skip or repeat a step.
Three guards, each cheap:

1. a lock per resource: passes of one resource run one after another (different resources
   still run in parallel);
2. the status this process wrote last is remembered: a body whose routing serial is older
   than it is stale (kopf's watch has not delivered our write yet), and the pass uses the
   remembered status instead;
3. rollout status is written with the body's resourceVersion as a precondition, so a
   decision from any other stale body is refused by the API server (409) and retaken from
   a fresh read (`handlers.sync`).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any


def routing_serial(body: Mapping[str, Any]) -> int:
    return int(((body.get("status") or {}).get("routing") or {}).get("serial") or 0)


class Serializer:
    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._locks: dict[str, threading.Lock] = {}
        self._written: dict[str, dict[str, Any]] = {}

    @contextmanager
    def hold(self, uid: str) -> Iterator[None]:
        with self._guard:
            lock = self._locks.setdefault(uid, threading.Lock())
        with lock:
            yield

    def freshest(self, uid: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """`body` as a plain dict, with our last written status and version when the body is older."""
        fresh = _plain(body)
        written = self._written.get(uid)
        if written is not None and routing_serial(written) > routing_serial(fresh):
            fresh["status"] = written.get("status") or {}
            fresh["metadata"]["resourceVersion"] = written["metadata"].get("resourceVersion")
        return fresh

    def remember(self, uid: str, written: Mapping[str, Any]) -> None:
        """The object as the API server returned it after our status write."""
        self._written[uid] = {"metadata": dict(written.get("metadata") or {}), "status": written.get("status") or {}}

    def forget(self, uid: str) -> None:
        with self._guard:
            self._locks.pop(uid, None)
        self._written.pop(uid, None)


def _plain(body: Mapping[str, Any]) -> dict[str, Any]:
    """A kopf Body is a live view; a pass works on a snapshot it may amend."""
    return {
        "apiVersion": body.get("apiVersion"),
        "kind": body.get("kind"),
        "metadata": dict(body.get("metadata") or {}),
        "spec": body.get("spec") or {},
        "status": dict(body.get("status") or {}),
    }
