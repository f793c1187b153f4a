"""Which `kubectl dspy` verb fits which rollout state, and the request the plugin writes (pure).

The operator decides every request again (`rollout/canary.py`, answered in
status.lastRequest), so these checks are a courtesy, not a safety net: they refuse at once,
with the reason in the user's terms, what the operator would only refuse after a round
trip, and they never write. They mirror the operator's rules rather than add to them, so a
request the plugin lets through is one the operator may accept.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from dspy_operator import api
from dspy_operator.rollout.canary import ABORT, ACTIONS, PAUSE, PROMOTE, PROMOTE_FULL, RESUME, RETRY, UNDO
from dspy_operator.rollout.state import Plan, RolloutState, format_time

PROGRESSIVE_ONLY = frozenset({PROMOTE, PROMOTE_FULL, ABORT, PAUSE, RESUME})
"""Verbs that act on a canary or a blue/green preview in progress. `retry` and `undo` also apply
to RollingUpdate (the operator holds aborted revisions and keeps a history under every strategy)."""
PROGRESSIVE = ("Canary", "BlueGreen")


def verb_of(action: str) -> str:
    """The word a user typed: `promote --full` is still "promote" in a message."""
    return action.split("-", 1)[0]


def unfit(action: str, body: Mapping[str, Any]) -> str | None:
    """Why `action` does not fit the resource's current state, or None when it may be sent.

    >>> unfit("promote", {"metadata": {"name": "qa"}, "spec": {}, "status": {}})
    'qa uses strategy RollingUpdate: nothing to promote'
    """
    if action not in ACTIONS:
        raise ValueError(f"unknown action {action!r}")
    name = body.get("metadata", {}).get("name", "")
    plan = Plan.from_spec(body.get("spec") or {})
    state = RolloutState.from_status(body.get("status") or {})
    verb = verb_of(action)
    if action in PROGRESSIVE_ONLY and plan.strategy not in PROGRESSIVE:
        return f"{name} uses strategy {plan.strategy}: nothing to {verb}"
    if action == RETRY and not state.aborted:
        return f"{name} has no aborted revision: nothing to retry"
    if action == UNDO and state.undo_target() is None:
        return f"{name} has no previous revision in its history: nothing to undo"
    if action == RESUME and not state.paused:
        hint = " (spec.paused is true: that one is lifted by editing the spec)" if (body.get("spec") or {}).get("paused") else ""
        return f"{name} is not paused: nothing to resume{hint}"
    if action in (PROMOTE, PROMOTE_FULL, ABORT, PAUSE) and not state.canary:
        what = "blue/green preview" if plan.strategy == "BlueGreen" else "canary"
        return f"{name} has no {what} in progress: nothing to {verb}"
    if action == PAUSE and state.paused:
        return f"{name} is already paused ({state.pause_reason or 'no reason given'}): nothing to pause"
    return None


def new_request(action: str, now: datetime, request_id: str | None = None) -> dict[str, str]:
    """The annotation's JSON object. A fresh uuid4 per request lets the plugin tell its own
    answer in status.lastRequest from an earlier one for the same action."""
    return {"id": request_id or str(uuid.uuid4()), "action": action, "time": format_time(now)}


def annotation_patch(request: Mapping[str, str]) -> dict[str, Any]:
    """The merge patch that carries a request: metadata.annotations only, never spec (a spec
    change would start a new revision and fight the user's own manifests)."""
    return {"metadata": {"annotations": {api.ANNOTATION_REQUEST: json.dumps(dict(request), separators=(",", ":"))}}}


def answer_to(body: Mapping[str, Any], request_id: str) -> Mapping[str, Any] | None:
    """status.lastRequest when it answers `request_id`; None while the operator has not."""
    last = (body.get("status") or {}).get("lastRequest") or {}
    return last if last.get("id") == request_id else None
