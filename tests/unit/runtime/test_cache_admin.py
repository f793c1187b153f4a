"""What ``DELETE /v1/cache`` removes for a scope (``resolve``), and the invalidation message."""

from __future__ import annotations

import json

import pytest

from dspy_runtime.api.cache_admin import CacheClearRequest, resolve
from dspy_runtime.cache import cache_key
from dspy_runtime.cache.invalidation import Invalidation
from dspy_runtime.cache.keys import variant_scope
from dspy_runtime.errors import InvalidInput
from dspy_runtime.routing import Router
from dspy_runtime.settings import RuntimeSettings

TABLE = {
    "revisions": [
        {"name": "r1", "weight": 100, "variants": [{"name": "a", "weight": 50}, {"name": "b", "weight": 50,
                                                   "program": {"signature": "context, question -> answer"}}]},
        {"name": "r2", "weight": 0, "variants": [{"name": "a", "weight": 100}]},
    ],
}


@pytest.fixture
def state(tmp_path):
    path = tmp_path / "routing.json"
    path.write_text(json.dumps(TABLE))
    return Router(RuntimeSettings(routing_path=path)).state


def variant(state, revision, name):
    return state.by_name[revision].by_name[name]


def test_nothing_named_is_everything(state):
    assert resolve(state, CacheClearRequest()) == Invalidation("all")


def test_revision_and_variant_narrow_to_scopes(state):
    r1a, r1b, r2a = variant(state, "r1", "a"), variant(state, "r1", "b"), variant(state, "r2", "a")
    assert variant_scope(r1a) == variant_scope(r2a), "same program and LM: the revisions share entries"
    assert resolve(state, CacheClearRequest(revision="r1")).items == {variant_scope(r1a), variant_scope(r1b)}
    assert resolve(state, CacheClearRequest(variant="b")) == Invalidation("scopes", frozenset({variant_scope(r1b)}))
    assert resolve(state, CacheClearRequest(revision="r2", variant="a")).items == {variant_scope(r2a)}


def test_inputs_name_the_keys_of_the_variants_they_fit(state):
    r1a = variant(state, "r1", "a")
    what = resolve(state, CacheClearRequest(input="  What is DSPy? "))
    assert what == Invalidation("keys", frozenset({cache_key(r1a.cache_version, r1a.model, "a", {"question": "What is DSPy?"})}))
    r1b = variant(state, "r1", "b")
    both = resolve(state, CacheClearRequest(inputs={"context": "c", "question": "q"}))
    assert both.items == {cache_key(r1b.cache_version, r1b.model, "b", {"context": "c", "question": "q"})}


@pytest.mark.parametrize(
    ("clear", "message"),
    [
        (CacheClearRequest(revision="r9"), "revision: unknown revision 'r9'; known revisions: r1, r2"),
        (CacheClearRequest(revision="r2", variant="b"), "variant: unknown variant 'b'; known variants: a"),
        (CacheClearRequest(inputs={"nope": 1}), "inputs: missing input field(s): question"),
    ],
)
def test_unknown_names_and_unfit_inputs_are_refused_naming_the_field(state, clear, message):
    with pytest.raises(InvalidInput) as caught:
        resolve(state, clear)
    assert message in caught.value.message


def test_the_message_round_trips_and_anything_else_is_refused():
    what = Invalidation("scopes", frozenset({"s1", "s2"}))
    assert Invalidation.from_message(what.message(7, "pod-a")) == (7, "pod-a", what)
    for raw in (b"not json", b"[]", b'{"generation": 1}', b'{"generation": "1", "origin": "x", "kind": "all", "items": []}',
                b'{"generation": 1, "origin": "x", "kind": "some", "items": []}'):
        with pytest.raises(ValueError):
            Invalidation.from_message(raw)
