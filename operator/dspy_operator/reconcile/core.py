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
from dspy_operator.reconcile.common import Obj, Owner
from dspy_operator.reconcile.layout import Layout
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
    children by `Kind/name`; `served`: the layout the rollout decided, the revisions to keep
    and the routing tables (None: write nothing, as when paused or invalid). Nothing is
    written when they match."""
    owner = Owner.from_body(body)
    paused = bool(owner.spec.get("paused"))
    writer = ChildWriter(kube, settings.field_manager, logger, observed)
    problems = () if paused else inputs.problems
    if served is not None and not paused and not problems:
        _write_children(owner, served, settings, writer)
    active = served.layout.active if served is not None else str((body.get("status") or {}).get("activeColor") or "")
    redis = writer.observed.get(f"Deployment/{api.redis_name(owner.name)}") if owner.redis_mode == "Managed" else None
    observation = Observation(
        generation=owner.generation,
        paused=paused,
        problems=tuple(problems),
        runtime=writer.observed.get(f"Deployment/{api.deployment_name(owner.name, active)}"),
        redis_mode=owner.redis_mode,
        redis=redis,
        selector=api.selector_string(api.color_selector(owner.name, active)),
    )
    return Result(observation=observation, writes=writer.writes)


@dataclass(frozen=True, slots=True)
class Served:
    """What the rollout decided the pods serve: the revisions to keep, the Deployments and their
    routing tables (by color, for the slots whose table is written)."""

    revisions: Sequence[Revision]
    layout: Layout
    tables: Mapping[str, str]


def children(owner: Owner, settings: OperatorSettings, served: Served, secret_uid: str | None) -> list[Obj]:
    """Every child `served` calls for, in dependency order (Redis before the pods that use it),
    except the managed Redis password Secret (created once, see `_write_children`)."""
    revisions = {revision.name: revision for revision in served.revisions}
    built: list[Obj] = [*desired.redis_children_of(owner, settings, secret_uid)]
    built.extend(revision_configmap(owner, revision) for revision in served.revisions)
    for slot in served.layout.slots:
        if slot.table is not None:
            built.append(routing_configmap(owner, served.tables[slot.color], slot.color))
        if slot.kept:
            continue
        stored = revisions[slot.pod_revision].pod if slot.pod_revision in revisions else None
        pod = stored if stored is not None else desired.runtime_pod(owner, settings)
        digest = (desired.color_pod_hash(pod, secret_uid) if slot.color
                  else desired.pod_template_hash(owner, secret_uid))
        built.append(desired.runtime_deployment(owner, slot.color, pod, slot.replicas, digest, slot.pod_revision))
    layout = served.layout
    built.extend(desired.serving_children(owner, layout.active, layout.preview, layout.scaled))
    return built


def left_as_they_are(owner: Owner, layout: Layout) -> set[str]:
    """`Kind/name` of the children a layout keeps without writing them."""
    kept: set[str] = set()
    for slot in layout.slots:
        if slot.kept:
            kept.add(f"Deployment/{api.deployment_name(owner.name, slot.color)}")
        if slot.table is None:
            kept.add(f"ConfigMap/{api.routing_name(owner.name, slot.color)}")
    return kept


def _write_children(owner: Owner, served: Served, settings: OperatorSettings, writer: ChildWriter) -> None:
    keep = left_as_they_are(owner, served.layout)
    secret_uid: str | None = None
    if owner.redis_mode == "Managed":
        # Generated here, not in the builder: builders stay pure; used only if the Secret is new.
        secret = writer.create_once(desired.redis_secret(owner, secrets.token_hex(24)))
        secret_uid = secret["metadata"]["uid"]
        keep.add(f"Secret/{api.redis_name(owner.name)}")
    intents = children(owner, settings, served, secret_uid)
    writer.ensure(intents)
    keep.update(describe(intent) for intent in intents)
    runtime = writer.observed.get(f"Deployment/{api.deployment_name(owner.name, served.layout.active)}")
    # Program ConfigMaps of operator versions before revisions are mounted by their pods until those are replaced.
    spare = frozenset() if runtime is not None and Rollout.of(runtime).complete else frozenset({api.COMPONENT_PROGRAM})
    writer.prune(owner.namespace, owner.uid, keep, spare)
