"""The routing table: revisions with their shares, a serial that only grows, and its ConfigMap."""

from __future__ import annotations

import json

from dspy_operator import api
from dspy_operator.reconcile.common import Owner
from dspy_operator.reconcile.inputs import Inputs, Program
from dspy_operator.reconcile.revisions import revision_of
from dspy_operator.reconcile.routing import (
    TABLE_HASH_LENGTH,
    next_serial,
    routing_configmap,
    routing_table,
    table_hash,
    table_text,
)

NOW_MS = 1_764_624_000_123


def two_revisions(body):
    stable = revision_of(body()["spec"], Inputs())
    optimized = Program('{"optimized": true}')
    spec = body({"variants": [
        {"name": "baseline", "weight": 80},
        {"name": "optimized", "weight": 20, "program": {"configMapRef": {"name": "opt"}}, "lm": {"maxTokens": 256}},
    ], "routing": {"stickyHeader": "X-User-ID"}})["spec"]
    canary = revision_of(spec, Inputs(programs={"spec.variants[1].program": optimized}))
    return spec, stable, canary


def test_a_table_with_two_revisions_and_their_weights(body):
    spec, stable, canary = two_revisions(body)
    table = routing_table(spec, [(stable, 90), (canary, 10)])
    assert table == {
        "stickyHeader": "X-User-ID",
        "revisions": [
            {"name": stable.name, "weight": 90, "variants": list(stable.variants)},
            {"name": canary.name, "weight": 10, "variants": list(canary.variants)},
        ],
    }
    assert [variant["name"] for variant in table["revisions"][1]["variants"]] == ["baseline", "optimized"]
    assert table["revisions"][1]["variants"][1]["program"]["state"] == {"optimized": True}
    assert sum(entry["weight"] for entry in table["revisions"]) == 100


def test_a_revision_at_weight_zero_stays_in_the_table(body):
    spec, stable, canary = two_revisions(body)
    table = routing_table(spec, [(stable, 100), (canary, 0)])
    assert [(entry["name"], entry["weight"]) for entry in table["revisions"]] == [(stable.name, 100), (canary.name, 0)]


def test_without_a_sticky_header_the_table_has_none(body):
    stable = revision_of(body()["spec"], Inputs())
    assert routing_table(body()["spec"], [(stable, 100)]) == {
        "revisions": [{"name": stable.name, "weight": 100, "variants": list(stable.variants)}]}


def test_the_table_hash_follows_content_and_weights_never_the_serial(body):
    spec, stable, canary = two_revisions(body)
    digest = table_hash(routing_table(spec, [(stable, 90), (canary, 10)]))
    assert len(digest) == TABLE_HASH_LENGTH
    assert table_hash(routing_table(spec, [(stable, 90), (canary, 10)])) == digest
    assert table_hash(routing_table(spec, [(stable, 80), (canary, 20)])) != digest
    assert table_hash(routing_table({**spec, "routing": {"stickyHeader": "X-Other"}}, [(stable, 90), (canary, 10)])) != digest


def test_the_serial_only_grows_and_follows_the_clock():
    assert next_serial(0, NOW_MS) == NOW_MS, "close to the wall clock: a recreated resource still wins"
    assert next_serial(NOW_MS, NOW_MS) == NOW_MS + 1, "twice in one millisecond"
    assert next_serial(NOW_MS + 5_000, NOW_MS) == NOW_MS + 5_001, "a clock that went back never lowers it"
    serials = [0]
    for now in (NOW_MS, NOW_MS, NOW_MS - 10, NOW_MS + 1_000):
        serials.append(next_serial(serials[-1], now))
    assert serials == sorted(set(serials)), "strictly increasing"


def test_the_table_text_carries_the_serial_and_is_canonical(body):
    spec, stable, canary = two_revisions(body)
    table = routing_table(spec, [(stable, 90), (canary, 10)])
    text = table_text(table, 42)
    assert json.loads(text) == {**table, "serial": 42}
    assert text == json.dumps({**table, "serial": 42}, sort_keys=True, separators=(",", ":"))
    assert table_text(dict(reversed(list(table.items()))), 42) == text


def test_the_routing_configmap_is_mounted_by_name_and_not_immutable(body):
    owner = Owner.from_body(body())
    configmap = routing_configmap(owner, '{"serial":1}')
    assert configmap["metadata"]["name"] == api.routing_name("qa") == "qa-routing"
    assert configmap["metadata"]["labels"][api.LABEL_COMPONENT] == api.COMPONENT_ROUTING
    assert configmap["metadata"]["ownerReferences"][0]["uid"] == "uid-1234"
    assert configmap["data"] == {api.ROUTING_FILE: '{"serial":1}'}
    assert "immutable" not in configmap, "weights change in place: the kubelet refreshes the mounted file"


# ---- shadow traffic ------------------------------------------------------------------------------

SHADOW_VARIANTS = [{"name": "baseline", "weight": 100}, {"name": "candidate", "weight": 0, "shadow": True}]


def test_a_shadow_variant_brings_the_shadow_settings_with_their_defaults(body):
    spec = body({"variants": SHADOW_VARIANTS})["spec"]
    revision = revision_of(spec, Inputs())
    table = routing_table(spec, [(revision, 100)])
    assert table["shadow"] == {"samplePercent": 10, "maxConcurrent": 4}, "no budget, no maxDailyUsd: no cap"
    assert [v.get("shadow", False) for v in table["revisions"][0]["variants"]] == [False, True]


def test_the_shadow_cap_is_the_specs_or_a_tenth_of_the_budget(body):
    budgeted = body({"variants": SHADOW_VARIANTS, "budget": {"dailyUsd": 25}})["spec"]
    revision = revision_of(budgeted, Inputs())
    assert routing_table(budgeted, [(revision, 100)])["shadow"] == {"samplePercent": 10, "maxConcurrent": 4,
                                                                   "maxDailyUsd": 2.5}
    explicit = {**budgeted, "shadow": {"samplePercent": 30, "maxConcurrent": 2, "maxDailyUsd": 0}}
    assert routing_table(explicit, [(revision, 100)])["shadow"] == {"samplePercent": 30, "maxConcurrent": 2,
                                                                   "maxDailyUsd": 0}


def test_a_revision_in_shadow_is_marked_only_at_weight_zero(body):
    spec, stable, canary = two_revisions(body)
    spec = {**spec, "shadow": {"samplePercent": 50, "maxConcurrent": 4}}
    shadowed = routing_table(spec, [(stable, 100), (canary, 0)], shadow_revisions=frozenset({canary.name}))
    assert [entry.get("shadow") for entry in shadowed["revisions"]] == [None, True]
    assert shadowed["shadow"] == {"samplePercent": 50, "maxConcurrent": 4}
    live = routing_table(spec, [(stable, 90), (canary, 10)], shadow_revisions=frozenset({canary.name}))
    assert live == routing_table(spec, [(stable, 90), (canary, 10)]), "at its first traffic step it is a plain canary"
    assert "shadow" not in live


def test_without_shadow_targets_the_table_and_its_hash_are_as_before(body):
    spec, stable, canary = two_revisions(body)
    spec = {**spec, "shadow": {"samplePercent": 50, "maxConcurrent": 4}}  # the CRD defaults it: no target, no object
    table = routing_table(spec, [(stable, 90), (canary, 10)])
    assert set(table) == {"revisions", "stickyHeader"}
    assert table_hash(table) == table_hash(routing_table({k: v for k, v in spec.items() if k != "shadow"},
                                                         [(stable, 90), (canary, 10)]))
