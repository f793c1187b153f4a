"""DSPyDeployment handlers: on create/update/resume, on a `kubectl dspy` request, a resync
timer (level-based) and a faster rollout timer while a canary or a blue/green preview is in progress.

Each handler is a few lines around the one pass (`sync.sync`): it observes, decides the
rollout, writes status and children, and posts Events. Spec problems raise TemporaryError
from the change handlers (kopf retries with backoff); the timers only report them and keep
their own steady interval.

Children are observed from the operator's index (`indexes.dspy_children`), so a pass whose
children already match makes no API call. The only reads are of the user's Secrets and
ConfigMaps the spec refers to: fresh in a change handler, and from `inputs.RecentReads` in
the timers (shared by all resources, at most `inputs.REREAD_SECONDS` old, never for a
problem: a Secret that appears heals within a tick).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import kopf

from dspy_operator import api
from dspy_operator.handlers.context import from_memo
from dspy_operator.handlers.indexes import Key
from dspy_operator.handlers.sync import raise_problems, sync

RESYNC_SECONDS = 10.0
"""How often every resource is re-observed: the delay before status catches up with pods."""
FIRST_RESYNC_SECONDS = 3.0
"""The first look after a resource appears (or the operator starts): pods are often ready by then."""
ROLLOUT_SECONDS = 2.0
"""How often a canary or a preview in progress is stepped: the resolution of pauses, analysis intervals and switches."""


@kopf.on.resume(api.GROUP, api.VERSION, api.PLURAL)
@kopf.on.create(api.GROUP, api.VERSION, api.PLURAL)
@kopf.on.update(api.GROUP, api.VERSION, api.PLURAL, field="spec")
def reconcile_spec(body: kopf.Body, memo: kopf.Memo, logger: logging.Logger, retry: int,
                   dspy_children: kopf.Index[Key, dict[str, Any]], **_: Any) -> None:
    """A new or changed spec (or an operator restart): converge now, retry spec problems with backoff."""
    raise_problems(sync(body, from_memo(memo), dspy_children, logger, fresh=True, retry=retry), retry)


@kopf.on.update(api.GROUP, api.VERSION, api.PLURAL, field=("metadata", "annotations", api.ANNOTATION_REQUEST))
def answer_request(body: kopf.Body, memo: kopf.Memo, logger: logging.Logger, retry: int,
                   dspy_children: kopf.Index[Key, dict[str, Any]], **_: Any) -> None:
    """A `kubectl dspy` verb: answered at once rather than on the next tick."""
    sync(body, from_memo(memo), dspy_children, logger, fresh=False, retry=retry)


@kopf.timer(api.GROUP, api.VERSION, api.PLURAL, interval=RESYNC_SECONDS, initial_delay=FIRST_RESYNC_SECONDS)
def resync(body: kopf.Body, memo: kopf.Memo, logger: logging.Logger, retry: int,
           dspy_children: kopf.Index[Key, dict[str, Any]], **_: Any) -> None:
    """Close whatever gap appeared since (pods became ready, a referenced Secret appeared)."""
    sync(body, from_memo(memo), dspy_children, logger, fresh=False, retry=retry)


def canary_in_progress(body: Mapping[str, Any], **_: Any) -> bool:
    """A `when=` filter: kopf runs the rollout timer only while this holds, so idle resources
    cost it nothing."""
    status = body.get("status") or {}
    return bool(status.get("canaryRevision")) and not (body.get("spec") or {}).get("paused")


@kopf.timer(api.GROUP, api.VERSION, api.PLURAL, interval=ROLLOUT_SECONDS, when=canary_in_progress)
def step_rollout(body: kopf.Body, memo: kopf.Memo, logger: logging.Logger, retry: int,
                 dspy_children: kopf.Index[Key, dict[str, Any]], **_: Any) -> None:
    """Take the canary's next step when it is due (a pause elapsed, an analysis interval ended)."""
    sync(body, from_memo(memo), dspy_children, logger, fresh=False, retry=retry)


@kopf.on.delete(api.GROUP, api.VERSION, api.PLURAL, optional=True)
def forget(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """Drop what the serializer and the phase gauge remember of a deleted resource (children go
    by garbage collection)."""
    from_memo(memo).serializer.forget(body["metadata"]["uid"])
    from_memo(memo).metrics.forget(body["metadata"]["uid"])
