"""One reconcile of one DSPyDeployment: from its inputs and observed children, write the
children that drifted, and observe.

Called by the change handlers, the resync timer and the child watchers alike, so every
path converges on the same state. It reads nothing: the caller passes the resolved inputs
(`inputs.gather`) and the live children (the operator's index) as data, and the only calls
it makes are the writer's writes. It never writes the resource itself: the caller (the
resource pass in `handlers.sync`) turns the returned observation into status.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from dspy_operator import api
from dspy_operator.kube import KubeClient
from dspy_operator.reconcile import desired
from dspy_operator.reconcile.apply import ChildWriter, Writes, describe
from dspy_operator.reconcile.common import Owner
from dspy_operator.reconcile.inputs import Inputs
from dspy_operator.reconcile.revisions import Revision, revision_configmap
from dspy_operator.reconcile.routing import routing_configmap
from dspy_operator.settings import OperatorSettings
from dspy_operator.status.report import Observation, Rollout


@dataclass(frozen=True, slots=True)
class Result:
    observation: Observation
    writes: Writes


def reconcile(
    body: Mapping[str, Any],
    inputs: Inputs,
    observed: Mapping[str, dict[str, Any]],
    kube: KubeClient,
    settings: OperatorSettings,
    logger: logging.Logger | logging.LoggerAdapter[Any],
    served: Served | None,
) -> Result:
    """Bring the children in line with the spec (unless paused or invalid) and observe them.

    `inputs`: the spec's resolved references (ignored when paused); `observed`: the live
    children by `Kind/name`; `served`: the revisions to keep and the routing table text
    (None: write nothing, as when paused or invalid). Nothing is written when they match."""
    owner = Owner.from_body(body)
    paused = bool(owner.spec.get("paused"))
    writer = ChildWriter(kube, settings.field_manager, logger, observed)
    problems = () if paused else inputs.problems
    if served is not None and not paused and not problems:
        _write_children(owner, served, settings, writer)
    redis = writer.observed.get(f"Deployment/{api.redis_name(owner.name)}") if owner.redis_mode == "Managed" else None
    observation = Observation(
        generation=owner.generation,
        paused=paused,
        problems=tuple(problems),
        runtime=writer.observed.get(f"Deployment/{api.runtime_name(owner.name)}"),
        redis_mode=owner.redis_mode,
        redis=redis,
        selector=api.selector_string(api.pod_selector(owner.name, api.COMPONENT_RUNTIME)),
    )
    return Result(observation=observation, writes=writer.writes)


@dataclass(frozen=True, slots=True)
class Served:
    """What the rollout decided the pods serve: the revisions to keep and the table."""

    revisions: Sequence[Revision]
    table_text: str


def _write_children(owner: Owner, served: Served, settings: OperatorSettings, writer: ChildWriter) -> None:
    keep: set[str] = set()
    secret_uid: str | None = None
    if owner.redis_mode == "Managed":
        # Generated here, not in the builder: builders stay pure; used only if the Secret is new.
        secret = writer.create_once(desired.redis_secret(owner, secrets.token_hex(24)))
        secret_uid = secret["metadata"]["uid"]
        keep.add(f"Secret/{api.redis_name(owner.name)}")
    intents = [
        *(revision_configmap(owner, revision) for revision in served.revisions),
        routing_configmap(owner, served.table_text),
        *desired.runtime_children(owner, settings, secret_uid),
    ]
    writer.ensure(intents)
    keep.update(describe(intent) for intent in intents)
    runtime = writer.observed[f"Deployment/{api.runtime_name(owner.name)}"]
    # Program ConfigMaps of operator versions before revisions are mounted by their pods until those are replaced.
    spare = frozenset() if Rollout.of(runtime).complete else frozenset({api.COMPONENT_PROGRAM})
    writer.prune(owner.namespace, owner.uid, keep, spare)
