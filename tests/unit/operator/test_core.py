"""The exact API calls one reconcile makes, given its inputs, the children it observes and what
the rollout decided the pods serve.

The reconcile reads nothing: children come from the index as data, so every call recorded
here is a write, and a pass over matching children makes none.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from typing import Any

from dspy_operator import api
from dspy_operator.errors import SpecProblem
from served import settled

from dspy_operator.reconcile.core import Served, reconcile
from dspy_operator.reconcile.inputs import Inputs
from dspy_operator.reconcile.revisions import Revision, revision_of
from dspy_operator.reconcile.routing import routing_table, table_text
from dspy_operator.settings import OperatorSettings

LOGGER = logging.getLogger("test")
SETTINGS = OperatorSettings()


class RecordingKube:
    """Answers writes like the API server would (the object back, with a uid); records each call
    and keeps what it wrote, by `Kind/name`."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.written: dict[str, dict[str, Any] | None] = {}

    def apply(self, obj: dict[str, Any], field_manager: str) -> dict[str, Any]:
        return self._write("apply", obj)

    def create(self, obj: dict[str, Any], field_manager: str) -> dict[str, Any]:
        return self._write("create", obj)

    def delete(self, kind: str, namespace: str, name: str) -> None:
        self.calls.append(f"delete {kind}/{name}")
        self.written[f"{kind}/{name}"] = None

    def _write(self, verb: str, obj: dict[str, Any]) -> dict[str, Any]:
        key = f"{obj['kind']}/{obj['metadata']['name']}"
        self.calls.append(f"{verb} {key}")
        live = copy.deepcopy(obj)
        live["metadata"]["uid"] = f"uid-{obj['metadata']['name']}"
        self.written[key] = live
        return live


def run(body: dict[str, Any], observed: dict[str, dict[str, Any]], served: Served | None = None,
        inputs: Inputs | None = None) -> tuple[list[str], dict[str, dict[str, Any]]]:
    """The calls of one pass, and the children as the index would show them after it."""
    kube = RecordingKube()
    served = settled(body) if served is None else served
    result = reconcile(body, inputs or Inputs(), observed, kube, SETTINGS, LOGGER, served)  # type: ignore[arg-type]
    assert bool(result.writes) == bool(kube.calls)
    after = {**observed, **kube.written}
    return kube.calls, {key: live for key, live in after.items() if live is not None}


def revision_key(revision: Revision) -> str:
    return f"ConfigMap/{api.revision_name('qa', revision.name)}"


def test_first_pass_writes_every_child_and_an_observed_match_writes_nothing(body):
    spec = body({"redis": {"mode": "Disabled"}})
    revision = revision_of(spec["spec"], Inputs())
    calls, children = run(spec, {})
    assert calls == [f"apply {revision_key(revision)}", "apply ConfigMap/qa-routing", "apply Deployment/qa",
                     "apply Service/qa", "apply PodDisruptionBudget/qa"]
    assert run(spec, children)[0] == []


def test_managed_redis_creates_its_password_once_and_a_hand_deleted_child_is_reapplied(body):
    spec = body()
    calls, children = run(spec, {})
    assert calls[0] == "create Secret/qa-redis" and "apply Deployment/qa-redis" in calls
    assert calls.index("apply Deployment/qa-redis") < calls.index("apply Deployment/qa"), "Redis before its users"
    del children["Service/qa"]
    assert run(spec, children)[0] == ["apply Service/qa"]


def test_children_no_longer_desired_are_pruned_without_listing(body):
    _, children = run(body(), {})
    calls, _ = run(body({"redis": {"mode": "Disabled"}}), children)
    assert sorted(calls) == ["apply Deployment/qa", "delete Deployment/qa-redis", "delete NetworkPolicy/qa-redis",
                             "delete Secret/qa-redis", "delete Service/qa-redis"]


def test_a_new_revision_beside_the_stable_one_writes_its_configmap_and_the_table_never_the_pods(body):
    spec = body({"redis": {"mode": "Disabled"}})
    stable = revision_of(spec["spec"], Inputs())
    _, children = run(spec, {})
    changed = body({"redis": {"mode": "Disabled"}, "lm": {**spec["spec"]["lm"], "temperature": 0.7}})
    canary = revision_of(changed["spec"], Inputs())
    calls, children = run(changed, children, settled(changed, stable, canary, serial=2))
    assert calls == [f"apply {revision_key(canary)}", "apply ConfigMap/qa-routing"], \
        "a program or LM change reaches running pods through the table: no pod is replaced"
    calls, _ = run(changed, children, settled(changed, canary, serial=3))
    assert calls == ["apply ConfigMap/qa-routing", f"delete {revision_key(stable)}"]


def test_a_paused_resource_writes_nothing(body):
    assert run(body({"paused": True}), {})[0] == []


def test_nothing_to_serve_or_an_invalid_spec_writes_nothing(body):
    kube = RecordingKube()
    reconcile(body(), Inputs(), {}, kube, SETTINGS, LOGGER, None)  # type: ignore[arg-type]
    assert kube.calls == [], "served=None: the pass only observes"
    problem = SpecProblem("spec.lm.apiKeySecretRef", 'Secret "openai" not found in namespace "demo"')
    result = reconcile(body(), Inputs(problems=(problem,)), {}, kube, SETTINGS, LOGGER, settled(body()))  # type: ignore[arg-type]
    assert kube.calls == [] and result.observation.problems == (problem,)


def test_program_configmaps_of_older_operators_are_kept_until_the_pods_are_replaced(body):
    spec = body({"redis": {"mode": "Disabled"}})
    _, children = run(spec, {})
    legacy = {"apiVersion": "v1", "kind": "ConfigMap", "data": {"program.json": "{}"}, "metadata": {
        "name": "qa-program-0123456789", "namespace": "demo",
        "labels": {**api.common_labels("qa"), api.LABEL_COMPONENT: api.COMPONENT_PROGRAM},
        "ownerReferences": [{"uid": "uid-1234", "controller": True}]}}
    children["ConfigMap/qa-program-0123456789"] = legacy
    assert run(spec, children)[0] == [], "old pods still mount it while the rollout is under way"
    children["Deployment/qa"] = {**children["Deployment/qa"], "status": {
        "observedGeneration": 1, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 2, "readyReplicas": 2}}
    assert run(spec, children)[0] == ["delete ConfigMap/qa-program-0123456789"]


def test_a_namesake_not_controlled_by_this_resource_is_never_pruned(body):
    spec = body({"redis": {"mode": "Disabled"}})
    _, children = run(spec, {})
    children["Service/qa-extra"] = {"kind": "Service", "metadata": {
        "name": "qa-extra", "labels": api.common_labels("qa"),
        "ownerReferences": [{"uid": "uid-of-an-earlier-qa", "controller": True}]}}
    assert run(spec, children)[0] == []


def test_the_observation_is_what_the_writer_saw(body):
    kube = RecordingKube()
    result = reconcile(body(), Inputs(), {}, kube, SETTINGS, LOGGER, settled(body()))  # type: ignore[arg-type]
    observation = result.observation
    assert observation.runtime is not None and observation.runtime["metadata"]["name"] == "qa"
    assert observation.redis is not None and observation.redis["metadata"]["name"] == "qa-redis"
    assert (observation.generation, observation.redis_mode, observation.paused) == (3, "Managed", False)
    assert observation.selector == "app.kubernetes.io/component=runtime,dspy.dev/deployment=qa"
    disabled = reconcile(body({"redis": {"mode": "Disabled"}}), Inputs(), {}, RecordingKube(), SETTINGS, LOGGER,  # type: ignore[arg-type]
                         None)
    assert disabled.observation.runtime is None and disabled.observation.redis is None
