"""The lifecycle handlers around the one pass: status through the API client (never kopf's
patch or a handler result), Events, retries, which reads are fresh, the rollout timer's filter."""

from __future__ import annotations

import json
import logging
from typing import Any

import kopf
import pytest

from dspy_operator import api
from dspy_operator.handlers import lifecycle
from dspy_operator.status import conditions as c

LOGGER = logging.getLogger("test")
ROLLING = {"redis": {"mode": "Disabled"}}


def call(handler: Any, world: Any, body: dict[str, Any], retry: int = 0) -> tuple[Any, kopf.Patch]:
    """Run a handler as kopf would; the Patch is kopf's own, which the handlers must leave empty."""
    patch = kopf.Patch()
    world.kube.calls.clear()
    world.events.clear()
    result = handler(body=kopf.Body(body), patch=patch, memo=kopf.Memo(context=world.context), logger=LOGGER,
                     retry=retry, dspy_children=world.index)
    return result, patch


def secret_reads(world: Any) -> int:
    return world.kube.calls.count("get Secret/openai")


def test_status_goes_through_the_api_client_and_a_phase_change_posts_an_event(world):
    result, patch = call(lifecycle.reconcile_spec, world, world.create(ROLLING))
    assert result is None, "nothing lands under status.<handler>"
    assert not patch, "kopf's patch stays empty: status is written by the pass itself"
    assert world.kube.writes[0].startswith("patch status@") and world.kube.writes[-1] == "patch status"
    assert world.status()["phase"] == c.PHASE_PROGRESSING
    assert ("info", "PhaseChanged") in [(verb, reason) for verb, reason, _ in world.events]


def test_spec_problems_raise_a_temporary_error_with_backoff_from_change_handlers_only(world):
    broken = world.create({**ROLLING, "lm": {"model": "m", "apiKeySecretRef": {"name": "missing"}}})
    with pytest.raises(kopf.TemporaryError) as raised:
        call(lifecycle.reconcile_spec, world, broken, retry=2)
    assert raised.value.delay == 20
    assert 'Secret "missing" not found' in str(raised.value)
    assert world.status()["phase"] == c.PHASE_DEGRADED, "reported before the retry"
    assert ("warn", c.REASON_SPEC_INVALID) in [(verb, reason) for verb, reason, _ in world.events]
    result, _ = call(lifecycle.resync, world, world.resource())
    assert result is None, "the timer reports and keeps its own interval"


def test_change_handlers_read_references_fresh_the_timers_from_recent_reads(world):
    created = world.create(ROLLING)
    call(lifecycle.reconcile_spec, world, created)
    assert secret_reads(world) == 1
    world.settle()
    call(lifecycle.resync, world, world.resource())
    assert secret_reads(world) == 0, "remembered for a minute and shared"
    call(lifecycle.answer_request, world, world.resource())
    call(lifecycle.step_rollout, world, world.resource())
    assert secret_reads(world) == 0
    call(lifecycle.reconcile_spec, world, world.resource())
    assert secret_reads(world) == 1


def test_a_paused_resource_reads_no_references(world):
    call(lifecycle.resync, world, world.create({**ROLLING, "paused": True}))
    assert not any(entry.startswith("get ") for entry in world.kube.calls)
    assert world.status()["phase"] == c.PHASE_PAUSED


def test_a_request_is_answered_by_its_own_handler_at_once(world):
    call(lifecycle.reconcile_spec, world, world.create(ROLLING))
    world.settle()
    asked = world.annotate(api.ANNOTATION_REQUEST, json.dumps({"id": "r1", "action": "pause"}))
    call(lifecycle.answer_request, world, asked)
    answer = world.status()["lastRequest"]
    assert (answer["id"], answer["result"]) == ("r1", "Rejected"), "RollingUpdate has no canary to pause"
    assert answer["message"] == "strategy is RollingUpdate: only undo and retry apply"


def test_the_rollout_timer_runs_only_while_a_canary_is_in_progress():
    assert lifecycle.canary_in_progress(body={"status": {"canaryRevision": "bbbbbbbbbbbb"}, "spec": {}})
    assert not lifecycle.canary_in_progress(body={"status": {"canaryRevision": ""}, "spec": {}})
    assert not lifecycle.canary_in_progress(body={"spec": {}})
    assert not lifecycle.canary_in_progress(body={"status": {"canaryRevision": "bbbbbbbbbbbb"}, "spec": {"paused": True}})


def test_a_deleted_resource_is_forgotten_by_the_serializer(world):
    call(lifecycle.reconcile_spec, world, world.create(ROLLING))
    uid = world.resource()["metadata"]["uid"]
    stale = world.resource()
    stale["status"] = {}
    assert world.context.serializer.freshest(uid, stale)["status"] != {}, "remembered while it lives"
    lifecycle.forget(body=kopf.Body(world.resource()), memo=kopf.Memo(context=world.context))
    assert world.context.serializer.freshest(uid, stale)["status"] == {}
