"""Revisions: what one pod can serve beside another, named by content; kept in immutable ConfigMaps."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

import pytest

from dspy_operator import api
from dspy_operator.reconcile.common import Owner
from dspy_operator.reconcile.inputs import Inputs, Program
from dspy_operator.reconcile.revisions import (
    REVISION_KEY,
    Revision,
    known_revisions,
    revision_configmap,
    revision_from_configmap,
    revision_of,
)

Spec = dict[str, Any]
SAVED = Inputs(programs={"spec.program": Program('{"predict": {"demos": [], "signature": {"instructions": "Be brief."}}}')})


def name_of(spec: Spec, inputs: Inputs = SAVED) -> str:
    return revision_of(spec, inputs).name


def test_the_name_is_a_12_hex_content_hash(body):
    name = name_of(body()["spec"])
    assert len(name) == api.REVISION_LENGTH and int(name, 16) >= 0
    assert name_of(body()["spec"]) == name, "deterministic"


def test_the_same_content_spelled_differently_is_the_same_revision(body):
    spec = body()["spec"]
    reordered = {key: dict(reversed(list(value.items()))) if isinstance(value, dict) else value
                 for key, value in reversed(list(spec.items()))}
    assert name_of(reordered) == name_of(spec), "key order"
    explicit = {**spec, "variants": [{"name": "default", "weight": 100}]}
    assert name_of(explicit) == name_of(spec), "no variants is one variant named default"
    respelled = Inputs(programs={"spec.program": Program(
        '{ "predict": { "signature": { "instructions": "Be brief." }, "demos": [ ] } }')})
    assert name_of(spec, respelled) == name_of(spec), "the saved program's JSON, not its text"
    moved = {**spec, "program": {**spec["program"], "configMapRef": {"name": "elsewhere", "key": "p.json"}}}
    assert name_of(moved, SAVED) == name_of({**spec, "program": {**spec["program"], "configMapRef": {"name": "prog"}}},
                                            SAVED), "where the saved program is kept is not its content"


def lm(change: dict[str, Any]) -> Callable[[Spec], Spec]:
    return lambda spec: {**spec, "lm": {**spec["lm"], **change}}


@pytest.mark.parametrize("change", [
    lambda spec: {**spec, "program": {**spec["program"], "signature": "question, context -> answer"}},
    lambda spec: {**spec, "program": {**spec["program"], "module": "Predict"}},
    lm({"model": "openai/gpt-4o"}),
    lm({"apiBase": "http://lm:8000/v1"}),
    lm({"temperature": 0.7}),
    lm({"maxTokens": 256}),
    lm({"timeoutSeconds": 10}),
    lm({"pricing": {"promptPerMillion": 0.15, "completionPerMillion": 0.6}}),
    lambda spec: {**spec, "variants": [{"name": "a", "weight": 50}, {"name": "b", "weight": 50}]},
    lambda spec: {**spec, "variants": [{"name": "default", "weight": 100, "lm": {"maxTokens": 64}}]},
], ids=["signature", "module", "model", "apiBase", "temperature", "maxTokens", "timeout", "pricing", "variants",
        "variant-override"])
def test_a_program_lm_or_variant_change_is_a_new_revision(body, change):
    spec = body()["spec"]
    assert name_of(change(copy.deepcopy(spec))) != name_of(spec)


def test_a_saved_program_change_is_a_new_revision(body):
    spec = body({"program": {"signature": "question -> answer", "configMapRef": {"name": "prog"}}})["spec"]
    other = Inputs(programs={"spec.program": Program('{"predict": {"demos": [{"question": "q", "answer": "a"}]}}')})
    assert name_of(spec, other) != name_of(spec, SAVED)
    assert name_of(spec, Inputs()) != name_of(spec, SAVED)


@pytest.mark.parametrize("change", [
    {"runtime": {"image": "registry.example/runtime:9", "resources": {"requests": {"cpu": "1"}},
                 "env": [{"name": "EXTRA", "value": "1"}], "nodeSelector": {"pool": "gpu"}}},
    {"replicas": 7},
    {"autoscaling": {"minReplicas": 2, "maxReplicas": 10}},
    {"cache": {"enabled": False, "memory": {"maxEntries": 10}, "redis": {"ttlSeconds": 5}}},
    {"circuitBreaker": {"failureThreshold": 1}, "rateLimit": {"requestsPerSecond": 1}, "budget": {"dailyUsd": 1}},
    {"redis": {"mode": "Disabled"}},
    {"routing": {"stickyHeader": "X-User-ID"}},
    {"rollout": {"strategy": "Canary", "canary": {"steps": [{"setWeight": 10}]}}},
], ids=["runtime", "replicas", "autoscaling", "cache", "limits", "redis", "sticky-header", "rollout"])
def test_a_pod_level_change_keeps_the_revision(body, change):
    spec = body()["spec"]
    assert name_of({**copy.deepcopy(spec), **change}) == name_of(spec)


def test_fallbacks_and_secret_names_are_pod_level(body):
    spec = body()["spec"]
    rotated = lm({"apiKeySecretRef": {"name": "openai-rotated", "key": "other"},
                  "fallbacks": [{"model": "openai/gpt-4o", "pricing": {"promptPerMillion": 1, "completionPerMillion": 1}}]})
    assert name_of(rotated(copy.deepcopy(spec))) == name_of(spec), "the pods read the key from the same env var"


def test_a_saved_program_travels_inline(body):
    spec = body({"program": {"signature": "question -> answer", "module": "ChainOfThought",
                             "configMapRef": {"name": "prog"}}})["spec"]
    [variant] = revision_of(spec, SAVED).variants
    assert variant == {
        "name": "default", "weight": 100,
        "program": {"signature": "question -> answer", "module": "ChainOfThought",
                    "state": {"predict": {"demos": [], "signature": {"instructions": "Be brief."}}}},
        "lm": {"model": "openai/gpt-4o-mini", "temperature": 0.0, "maxTokens": 512, "timeoutSeconds": 30,
               "apiKeyEnv": "LM_API_KEY"},
    }


def test_variant_overrides_their_saved_program_and_their_key(body):
    optimized = Program('{"optimized": true}')
    spec = body({
        "program": {"signature": "question -> answer", "module": "Predict", "configMapRef": {"name": "prog"}},
        "lm": {"model": "openai/gpt-4o-mini", "apiKeySecretRef": {"name": "openai"}, "temperature": 0.0},
        "variants": [
            {"name": "baseline", "weight": 70},
            {"name": "optimized", "weight": 20, "program": {"module": "ChainOfThought", "configMapRef": {"name": "opt"}},
             "lm": {"model": "openai/gpt-4o", "apiKeySecretRef": {"name": "openai-2"}, "maxTokens": 256}},
            {"name": "cot-only", "weight": 10, "program": {"module": "ChainOfThought"}},
        ],
    })["spec"]
    inputs = Inputs(programs={**SAVED.programs, "spec.variants[1].program": optimized})
    baseline, tuned, cot = revision_of(spec, inputs).variants
    assert baseline["program"]["state"] == json.loads(SAVED.programs["spec.program"].content)
    assert tuned == {
        "name": "optimized", "weight": 20,
        "program": {"signature": "question -> answer", "module": "ChainOfThought", "state": {"optimized": True}},
        "lm": {"model": "openai/gpt-4o", "temperature": 0.0, "maxTokens": 256, "apiKeyEnv": "LM_API_KEY_OPTIMIZED"},
    }
    assert cot["program"] == {"signature": "question -> answer", "module": "ChainOfThought"}, \
        "a saved state fits the module it was saved from: another module never gets the base's"
    assert cot["lm"]["apiKeyEnv"] == "LM_API_KEY"


def test_no_key_no_api_key_env_and_unset_fields_stay_unset(body):
    spec = body({"lm": {"model": "ollama/llama3"}})["spec"]
    [variant] = revision_of(spec, Inputs()).variants
    assert variant["lm"] == {"model": "ollama/llama3"}, "the runtime's own defaults apply"
    assert variant["program"] == {"signature": "question -> answer", "module": "ChainOfThought"}


def test_pricing_follows_the_model(body):
    price = {"promptPerMillion": 0.15, "completionPerMillion": 0.6}
    own = {"promptPerMillion": 2.5, "completionPerMillion": 10}
    spec = body({"lm": {"model": "openai/gpt-4o-mini", "pricing": price}, "variants": [
        {"name": "same", "weight": 40},
        {"name": "same-named", "weight": 20, "lm": {"model": "openai/gpt-4o-mini", "maxTokens": 64}},
        {"name": "other", "weight": 20, "lm": {"model": "openai/gpt-4o"}},
        {"name": "priced", "weight": 20, "lm": {"model": "openai/gpt-4o", "pricing": own}},
    ]})["spec"]
    same, same_named, other, priced = revision_of(spec, Inputs()).variants
    assert same["lm"]["pricing"] == price and same_named["lm"]["pricing"] == price
    assert "pricing" not in other["lm"], "another model never gets the base model's price"
    assert priced["lm"]["pricing"] == own


def owner(body: dict[str, Any]) -> Owner:
    return Owner.from_body(body)


def metadata_name(configmap: dict[str, Any]) -> str:
    return str(configmap["metadata"]["name"])


def test_the_revision_configmap_is_immutable_named_by_content_and_round_trips(body):
    revision = revision_of(body()["spec"], SAVED)
    configmap = revision_configmap(owner(body()), revision)
    metadata = configmap["metadata"]
    assert metadata["name"] == f"qa-rev-{revision.name}"
    assert metadata["annotations"] == {api.ANNOTATION_REVISION: revision.name}
    assert metadata["labels"][api.LABEL_COMPONENT] == api.COMPONENT_REVISION
    assert metadata["ownerReferences"][0]["uid"] == "uid-1234"
    assert configmap["immutable"] is True
    assert json.loads(configmap["data"][REVISION_KEY]) == {"variants": list(revision.variants)}
    assert revision_from_configmap(json.loads(json.dumps(configmap))) == revision


def test_a_tampered_or_foreign_configmap_is_refused(body):
    revision = revision_of(body()["spec"], SAVED)
    configmap = revision_configmap(owner(body()), revision)
    edited = json.loads(configmap["data"][REVISION_KEY])
    edited["variants"][0]["lm"]["model"] = "openai/gpt-4o"
    tampered = {**configmap, "data": {REVISION_KEY: json.dumps(edited)}}
    assert revision_from_configmap(tampered) is None, "other content must not be served under this name"
    assert revision_from_configmap({**configmap, "data": {REVISION_KEY: "not json"}}) is None
    assert revision_from_configmap({**configmap, "data": {REVISION_KEY: "[]"}}) is None
    assert revision_from_configmap({**configmap, "data": {}}) is None
    assert revision_from_configmap({**configmap, "metadata": {"name": metadata_name(configmap)}}) is None


def test_known_revisions_are_this_resources_revision_configmaps(body):
    first = revision_of(body()["spec"], SAVED)
    second = revision_of(body({"lm": {"model": "openai/gpt-4o"}})["spec"], Inputs())
    observed = {f"ConfigMap/{metadata_name(cm)}": cm for cm in (revision_configmap(owner(body()), first),
                                                                revision_configmap(owner(body()), second))}
    observed["ConfigMap/qa-routing"] = {"kind": "ConfigMap", "metadata": {"name": "qa-routing"}, "data": {"routing.json": "{}"}}
    broken = revision_configmap(owner(body()), Revision(name="0123456789ab", variants=first.variants))
    observed["ConfigMap/qa-rev-0123456789ab"] = broken
    assert known_revisions(owner(body()), observed) == {first.name: first, second.name: second}
    assert known_revisions(owner(body(name="other")), observed) == {}


def test_a_shadow_variant_is_marked_and_an_explicit_false_changes_nothing(body):
    live = [{"name": "baseline", "weight": 100}, {"name": "candidate", "weight": 0}]
    spec = body({"variants": live})["spec"]
    defaulted = body({"variants": [{**v, "shadow": False} for v in live]})["spec"]  # what the API server stores
    assert revision_of(defaulted, Inputs()) == revision_of(spec, Inputs()), "existing revisions keep their names"
    assert all("shadow" not in entry for entry in revision_of(spec, Inputs()).variants)
    shadowed = revision_of(body({"variants": [live[0], {**live[1], "shadow": True}]})["spec"], Inputs())
    assert [entry.get("shadow") for entry in shadowed.variants] == [None, True]
    assert shadowed.name != revision_of(spec, Inputs()).name
