"""Operator settings from the environment, the child watcher's decisions and the child index's view."""

from __future__ import annotations

import asyncio
import logging

import kopf

from dspy_operator.errors import backoff_delay
from dspy_operator.handlers.children import edited_by_others, restore_child, worth_restoring
from dspy_operator.handlers.context import Context
from dspy_operator.handlers.indexes import child_view, children_of, controller_name, dspy_owners, owner_of
from dspy_operator.settings import OperatorSettings

LOGGER = logging.getLogger("test")


def test_settings_default_to_all_namespaces():
    settings = OperatorSettings.from_env({})
    assert settings.clusterwide and settings.namespaces == ()
    assert settings.field_manager == "dspy-operator"


def test_settings_namespace_list():
    settings = OperatorSettings.from_env({"DSPY_OPERATOR_NAMESPACES": " a, b ,,", "DSPY_OPERATOR_RUNTIME_IMAGE": "x:1"})
    assert settings.namespaces == ("a", "b") and not settings.clusterwide
    assert settings.runtime_image == "x:1"


def test_backoff_grows_and_is_capped():
    assert [backoff_delay(retry) for retry in range(4)] == [5, 10, 20, 40]
    assert backoff_delay(50) == 120


def test_controller_name_only_from_our_kind():
    ours = {"metadata": {"ownerReferences": [
        {"apiVersion": "dspy.dev/v1alpha1", "kind": "DSPyDeployment", "name": "qa", "controller": True}]}}
    theirs = {"metadata": {"ownerReferences": [
        {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "qa-1", "controller": True}]}}
    assert controller_name(ours) == "qa" and controller_name(theirs) is None


def test_edits_by_others_after_our_apply_are_noticed_status_updates_are_not():
    ours = {"manager": "dspy-operator", "operation": "Apply", "time": "2026-11-23T12:00:00Z"}
    status = {"manager": "kube-controller-manager", "operation": "Update", "subresource": "status", "time": "2026-11-23T12:01:00Z"}
    edit = {"manager": "kubectl-edit", "operation": "Update", "time": "2026-11-23T12:02:00Z"}
    assert not edited_by_others({"metadata": {"managedFields": [ours, status]}}, "dspy-operator")
    assert edited_by_others({"metadata": {"managedFields": [ours, status, edit]}}, "dspy-operator")
    handover = {"manager": "dspy-operator-handover", "operation": "Apply", "time": "2026-11-23T12:00:00Z"}
    assert not edited_by_others({"metadata": {"managedFields": [handover, ours]}}, "dspy-operator")


def test_only_deletions_and_edits_by_others_are_worth_restoring():
    memo = kopf.Memo(context=Context(settings=OperatorSettings(), kube=None, references=None,  # type: ignore[arg-type]
                                     redis=None, buses=None, serializer=None, experiments=None, shadows=None))  # type: ignore[arg-type]
    ours = {"metadata": {"managedFields": [{"manager": "dspy-operator", "operation": "Apply", "time": "t1"}]}}
    edited = {"metadata": {"managedFields": [*ours["metadata"]["managedFields"],
                                             {"manager": "kubectl-edit", "operation": "Update", "time": "t2"}]}}
    assert worth_restoring(type="DELETED", body=ours, memo=memo)
    assert worth_restoring(type="MODIFIED", body=edited, memo=memo)
    assert not worth_restoring(type="MODIFIED", body=ours, memo=memo)
    assert not worth_restoring(type="ADDED", body=edited, memo=memo)


def test_main_runs_kopf_cluster_wide_or_per_namespace(monkeypatch):
    import kopf

    from dspy_operator import __main__ as entry

    calls: list[dict[str, object]] = []
    monkeypatch.setattr(kopf, "run", lambda **kwargs: calls.append(kwargs))
    monkeypatch.setattr(kopf, "configure", lambda **_: None)
    monkeypatch.delenv("DSPY_OPERATOR_NAMESPACES", raising=False)
    entry.main([])
    monkeypatch.setenv("DSPY_OPERATOR_NAMESPACES", "a,b")
    entry.main([])
    assert (calls[0]["clusterwide"], calls[0]["namespaces"]) == (True, ())
    assert (calls[1]["clusterwide"], calls[1]["namespaces"]) == (False, ("a", "b"))
    assert calls[0]["standalone"] is True


def test_the_child_index_keeps_bodies_without_managed_fields_or_secret_data():
    body = {"apiVersion": "v1", "metadata": {"name": "qa-other", "managedFields": [{"manager": "x"}], "uid": "1"},
            "data": {"password": "c2VjcmV0"}, "type": "Opaque"}
    assert child_view(body, "Secret") == {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                                          "metadata": {"name": "qa-other", "uid": "1"}}
    configmap = child_view({**body, "kind": "ConfigMap"}, "ConfigMap")
    assert configmap["data"] == body["data"] and "managedFields" not in configmap["metadata"]


def test_the_managed_redis_password_is_the_one_secret_value_the_index_keeps():
    """The operator connects to that Redis itself (routing pushes, analysis windows)."""
    password = {"apiVersion": "v1", "data": {"password": "c2VjcmV0"}, "metadata": {
        "name": "qa-redis", "labels": {"app.kubernetes.io/component": "redis"}}}
    assert child_view(password, "Secret")["data"] == {"password": "c2VjcmV0"}


def test_the_owner_index_keeps_status_for_the_child_watchers_pass():
    body = kopf.Body({"apiVersion": "dspy.dev/v1alpha1", "kind": "DSPyDeployment",
                      "metadata": {"name": "qa", "namespace": "demo", "uid": "u", "managedFields": [{"manager": "x"}]},
                      "spec": {"replicas": 1}, "status": {"stableRevision": "aaaaaaaaaaaa"}})
    [(key, owner)] = asyncio.run(dspy_owners(body=body)).items()
    assert key == ("demo", "qa")
    assert owner["status"] == {"stableRevision": "aaaaaaaaaaaa"} and "managedFields" not in owner["metadata"]
    assert owner_of({key: [owner]}, "demo", "qa") == owner and owner_of({}, "demo", "qa") is None  # type: ignore[arg-type]


def test_a_child_deleted_by_hand_is_restored_by_the_owners_own_pass(world):
    world.sync(world.create({"redis": {"mode": "Disabled"}}))
    world.settle()
    service = world.kube.objects.pop("Service/qa")
    world.settle()
    owners = {("demo", "qa"): [asyncio.run(dspy_owners(body=kopf.Body(world.resource())))[("demo", "qa")]]}
    world.kube.calls.clear()
    world.events.clear()
    restore_child(type="DELETED", body=kopf.Body(service), memo=kopf.Memo(context=world.context), logger=LOGGER,
                  dspy_owners=owners, dspy_children=world.index)
    assert world.kube.writes == ["apply Service/qa"]
    assert world.events == [("info", "Applied", "applied Service/qa"),
                            ("warn", "ChildRestored", "Service/qa deleted by hand: applied Service/qa")]
    paused = {key: [{**owner, "spec": {**owner["spec"], "paused": True}} for owner in entries]
              for key, entries in owners.items()}
    world.kube.calls.clear()
    restore_child(type="DELETED", body=kopf.Body(service), memo=kopf.Memo(context=world.context), logger=LOGGER,
                  dspy_owners=paused, dspy_children=world.index)
    assert world.kube.calls == [], "paused: no child writes"


def test_children_of_an_unknown_owner_is_empty_and_keyed_by_kind_and_name():
    index = {("demo", "qa"): [{"kind": "Service", "metadata": {"name": "qa"}}]}
    assert children_of(index, "demo", "qa") == {"Service/qa": {"kind": "Service", "metadata": {"name": "qa"}}}  # type: ignore[arg-type]
    assert children_of(index, "demo", "other") == {}  # type: ignore[arg-type]
