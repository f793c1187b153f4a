"""Routing table parsing and the variant choice (pure parts), and reload behaviour of Router."""

from __future__ import annotations

import json
import logging
from collections import Counter

import pytest

from dspy_runtime.errors import InvalidInput
from dspy_runtime.routing import (
    Router,
    RoutingError,
    choose_index,
    cumulative_shares,
    parse_table,
    sticky_point,
)
from dspy_runtime.settings import RuntimeSettings


@pytest.fixture
def settings():
    return RuntimeSettings(
        lm_model="openai/base", lm_api_key="sk-base", dspy_signature="question -> answer", dspy_module="Predict",
        lm_temperature=0.1, lm_max_tokens=100, openai_api_key=None, program_path=None, routing_path=None,
    )  # fmt: skip


def table(**extra):
    return json.dumps({"variants": [{"name": "a", "weight": 80}, {"name": "b", "weight": 20}], **extra}).encode()


def test_fields_fall_back_to_pod_settings(settings):
    raw = json.dumps(
        {
            "stickyHeader": "X-User-ID",
            "variants": [
                {"name": "a", "weight": 1},
                {"name": "b", "weight": 1, "program": {"module": "ChainOfThought"},
                 "lm": {"model": "openai/other", "temperature": 0.0, "apiKeyEnv": "KEY_B", "maxTokens": 7}},
            ],
            "someFutureField": True,
        }
    ).encode()  # fmt: skip
    parsed = parse_table(raw, settings, {"KEY_B": "sk-b"})
    a, b = parsed.variants
    assert parsed.sticky_header == "X-User-ID"
    assert (a.program.signature, a.program.module, a.lm.model, a.lm.temperature) == (
        "question -> answer", "Predict", "openai/base", 0.1,
    )  # fmt: skip
    assert a.lm.api_key.get_secret_value() == "sk-base"
    assert (b.program.module, b.program.signature) == ("ChainOfThought", "question -> answer")
    assert (b.lm.model, b.lm.temperature, b.lm.max_tokens) == ("openai/other", 0.0, 7)
    assert b.lm.api_key.get_secret_value() == "sk-b"


def test_program_path_only_applies_to_variants_naming_no_program(tmp_path):
    saved = tmp_path / "p.json"
    saved.write_text("{}")
    s = RuntimeSettings(program_path=saved, routing_path=None)
    raw = json.dumps({"variants": [{"name": "a", "weight": 1}, {"name": "b", "weight": 1, "program": {"module": "ChainOfThought"}}]})
    a, b = parse_table(raw.encode(), s, {}).variants
    assert a.program.path == saved and b.program.path is None


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        (b"{", "not JSON"),
        (b'{"variants": []}', "variants"),
        (b'{"variants": [{"name": "a", "weight": 0}]}', "positive weight"),
        (b'{"variants": [{"name": "a", "weight": 1}, {"name": "a", "weight": 1}]}', "duplicate variant names: a"),
        (b'{"variants": [{"name": "bad name", "weight": 1}]}', "variants.0.name"),
        (b'{"variants": [{"name": "a", "weight": -1}]}', "variants.0.weight"),
        (b'{"variants": [{"name": "a", "weight": 1, "program": {"module": "X"}}]}', "unknown DSPy module 'X'"),
        (b'{"variants": [{"name": "a", "weight": 1, "lm": {"apiKeyEnv": "MISSING"}}]}', "MISSING (apiKeyEnv) is not set"),
    ],
)
def test_bad_tables_are_refused(settings, raw, fragment):
    with pytest.raises(RoutingError, match=fragment.replace("(", "\\(").replace(")", "\\)")):
        parse_table(raw, settings, {})


def test_choice_by_cumulative_share():
    edges = cumulative_shares([80, 20])
    assert edges == (0.8, 1.0)
    assert [choose_index(edges, p) for p in (0.0, 0.79, 0.8, 0.99)] == [0, 0, 1, 1]
    zero_first = cumulative_shares([0, 100])
    assert choose_index(zero_first, 0.0) == 1  # a zero-weight variant is never chosen
    assert choose_index(cumulative_shares([1, 1, 1]), 0.999999) == 2


def test_sticky_points_are_stable_and_spread():
    assert sticky_point("user-1") == sticky_point("user-1")
    points = [sticky_point(f"user-{i}") for i in range(10_000)]
    assert all(0 <= p < 1 for p in points)
    edges = cumulative_shares([80, 20])
    shares = Counter(choose_index(edges, p) for p in points)
    assert 0.78 < shares[0] / 10_000 < 0.82


def _router(tmp_path, raw, rng=lambda: 0.5, **kw):
    path = tmp_path / "routing.json"
    path.write_bytes(raw)
    return Router(RuntimeSettings(routing_path=path, **kw), rng=rng), path


def test_router_pins_sticks_and_draws(tmp_path):
    router, _ = _router(tmp_path, table(stickyHeader="X-User-ID"), rng=lambda: 0.9)
    assert router.sticky_header == "X-User-ID"
    assert router.choose().name == "b"  # 0.9 is in b's slice
    assert router.choose(pinned="a").name == "a"
    user = router.choose(sticky_value="alice").name
    assert all(router.choose(sticky_value="alice").name == user for _ in range(20))
    with pytest.raises(InvalidInput, match="unknown variant 'c'; known variants: a, b"):
        router.choose(pinned="c")


def test_router_reloads_on_change_and_keeps_the_old_table_when_broken(tmp_path):
    errors = []
    router, path = _router(tmp_path, table())
    router._on_error = errors.append
    old = router.state
    assert router.reload_if_changed() is False  # unchanged content
    path.write_text("{broken")
    assert router.reload_if_changed() is False
    assert router.reload_if_changed() is False
    assert router.state is old
    assert len(errors) == 1  # logged once while the file stays broken
    path.write_bytes(json.dumps({"variants": [{"name": "c", "weight": 1}]}).encode())
    assert router.reload_if_changed() is True
    assert [v.name for v in router.state.variants] == ["c"]
    path.unlink()
    assert router.reload_if_changed() is False
    assert [v.name for v in router.state.variants] == ["c"]


def test_router_without_a_path_serves_one_default_variant():
    router = Router(RuntimeSettings(routing_path=None, dspy_module="ChainOfThought"))
    assert [v.name for v in router.state.variants] == ["default"]
    assert router.choose(sticky_value="x").program.spec.module == "ChainOfThought"
    assert router.reload_if_changed() is False


def test_missing_routing_file_at_startup_is_an_error(tmp_path):
    with pytest.raises(RoutingError, match="cannot read ROUTING_PATH"):
        Router(RuntimeSettings(routing_path=tmp_path / "absent.json"))


def test_cache_version_changes_with_program_and_lm_settings(tmp_path):
    router, _ = _router(
        tmp_path,
        json.dumps({"variants": [
            {"name": "a", "weight": 1},
            {"name": "b", "weight": 1, "lm": {"temperature": 0.9}},
            {"name": "c", "weight": 1, "program": {"module": "ChainOfThought"}},
        ]}).encode(),
    )  # fmt: skip
    a, b, c = router.state.variants
    assert a.program.version == b.program.version != c.program.version
    assert len({a.cache_version, b.cache_version, c.cache_version}) == 3


# ---- revisions, the serial rule, inline programs, pricing ----------------------------------------

SAVED_PREDICT = {
    "traces": [], "train": [], "demos": [{"question": "1+1?", "answer": "2"}],
    "signature": {"instructions": "Be terse.", "fields": [{"prefix": "Question:", "description": "${question}"},
                                                           {"prefix": "Answer:", "description": "${answer}"}]},
    "lm": None,
}  # fmt: skip


def revisions_table(serial=None, **extra):
    table = {
        "stickyHeader": "X-User-ID",
        "revisions": [
            {"name": "aaaaaaaaaaaa", "weight": 70,
             "variants": [{"name": "baseline", "weight": 80}, {"name": "optimized", "weight": 20}]},
            {"name": "bbbbbbbbbbbb", "weight": 30,
             "variants": [{"name": "baseline", "weight": 80}, {"name": "optimized", "weight": 20}]},
        ],
        **extra,
    }  # fmt: skip
    if serial is not None:
        table["serial"] = serial
    return json.dumps(table).encode()


def test_revisions_format_is_parsed_with_serial_and_legacy_is_one_default_revision(settings):
    parsed = parse_table(revisions_table(serial=42), settings, {})
    assert parsed.serial == 42 and parsed.sticky_header == "X-User-ID"
    assert [(r.name, r.weight) for r in parsed.revisions] == [("aaaaaaaaaaaa", 70), ("bbbbbbbbbbbb", 30)]
    assert [v.name for v in parsed.revisions[1].variants] == ["baseline", "optimized"]
    assert len(parsed.variants) == 4  # every revision's, in order
    legacy = parse_table(table(), settings, {})
    assert legacy.serial == 0
    assert [(r.name, r.weight, [v.name for v in r.variants]) for r in legacy.revisions] == [("default", 100, ["a", "b"])]


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        (b'{"stickyHeader": "X"}', "give 'revisions'"),
        (b'{"revisions": [{"name": "r", "weight": 1, "variants": [{"name": "a", "weight": 1}]}],'
         b' "variants": [{"name": "a", "weight": 1}]}', "give 'revisions'"),
        (b'{"revisions": []}', "revisions"),
        (b'{"revisions": [{"name": "r", "weight": 0, "variants": [{"name": "a", "weight": 1}]}]}',
         "at least one revision needs a positive weight"),
        (b'{"revisions": [{"name": "r", "weight": 1, "variants": [{"name": "a", "weight": 1}]},'
         b' {"name": "r", "weight": 1, "variants": [{"name": "a", "weight": 1}]}]}', "duplicate revision names: r"),
        (b'{"revisions": [{"name": "r", "weight": 1, "variants": [{"name": "a", "weight": 0}]}]}',
         "at least one variant needs a positive weight"),
        (b'{"revisions": [{"name": "bad name", "weight": 1, "variants": [{"name": "a", "weight": 1}]}]}',
         "revisions.0.name"),
        (b'{"serial": -1, "variants": [{"name": "a", "weight": 1}]}', "serial"),
        (b'{"variants": [{"name": "a", "weight": 1, "program": {"path": "/p.json", "state": {}}}]}',
         "path or as state, not both"),
        (b'{"variants": [{"name": "a", "weight": 1, "lm": {"pricing": {"promptPerMillion": -1, "completionPerMillion": 1}}}]}',
         "variants.0.lm.pricing.promptPerMillion"),
        (b'{"revisions": [{"name": "r", "weight": 1, "variants": [{"name": "a", "weight": 1, "lm": {"apiKeyEnv": "NOPE"}}]}]}',
         "revision 'r', variant 'a': environment variable NOPE"),
    ],
)
def test_bad_revision_tables_are_refused(settings, raw, fragment):
    with pytest.raises(RoutingError, match=fragment.replace("(", "\\(").replace(")", "\\)")):
        parse_table(raw, settings, {})


def test_revision_and_variant_choices_are_independent_and_follow_the_weights(tmp_path):
    router, _ = _router(tmp_path, revisions_table(serial=1))
    users = 20_000
    picks = [router.choose(sticky_value=f"user-{i}") for i in range(users)]
    revisions = Counter(v.revision for v in picks)
    assert abs(revisions["aaaaaaaaaaaa"] / users - 0.70) < 0.015, revisions
    variants = Counter(v.name for v in picks)
    assert abs(variants["baseline"] / users - 0.80) < 0.015, variants
    # Independent: inside each revision the variant split is the variant weights again (with
    # one point for both choices, revision a would get only baseline users).
    for revision, count in revisions.items():
        inside = Counter(v.name for v in picks if v.revision == revision)
        assert abs(inside["baseline"] / count - 0.80) < 0.015, (revision, inside)


def test_without_a_sticky_value_two_random_draws_are_made(tmp_path):
    draws = iter([0.75, 0.1, 0.1, 0.9])
    router, _ = _router(tmp_path, revisions_table(), rng=lambda: next(draws))
    first, second = router.choose(), router.choose()
    assert (first.revision, first.name) == ("bbbbbbbbbbbb", "baseline")  # 0.75 is past a's 70 %
    assert (second.revision, second.name) == ("aaaaaaaaaaaa", "optimized")


def test_pinned_revisions_weight_zero_included_and_variants_inside_them(tmp_path):
    raw = json.dumps({"revisions": [
        {"name": "stable", "weight": 100, "variants": [{"name": "a", "weight": 1}]},
        {"name": "canary", "weight": 0, "variants": [{"name": "a", "weight": 1}, {"name": "b", "weight": 1}]},
    ]}).encode()  # fmt: skip
    router, _ = _router(tmp_path, raw, rng=lambda: 0.99)
    assert {router.choose(sticky_value=f"u{i}").revision for i in range(200)} == {"stable"}
    pinned = router.choose(revision="canary")
    assert (pinned.revision, pinned.name) == ("canary", "b")  # 0.99 inside the pinned revision
    assert router.choose(revision="canary", pinned="a").revision == "canary"
    with pytest.raises(InvalidInput, match="unknown revision 'nope'; known revisions: stable, canary"):
        router.choose(revision="nope")
    with pytest.raises(InvalidInput, match="unknown variant 'b'; known variants: a \\(revision stable\\)"):
        router.choose(revision="stable", pinned="b")


def _served(router):
    return router.state.serial, [r.name for r in router.state.revisions]


def test_serial_rule_newer_wins_stale_and_equal_are_ignored(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="dspy_runtime.routing")
    router, path = _router(tmp_path, revisions_table(serial=10))
    assert _served(router) == (10, ["aaaaaaaaaaaa", "bbbbbbbbbbbb"])
    newer = json.dumps({"serial": 11, "variants": [{"name": "x", "weight": 1}]}).encode()
    stale = json.dumps({"serial": 9, "variants": [{"name": "old", "weight": 1}]}).encode()
    equal = json.dumps({"serial": 11, "variants": [{"name": "other", "weight": 1}]}).encode()
    unserialed = json.dumps({"variants": [{"name": "legacy", "weight": 1}]}).encode()
    assert router.offer(newer, "redis") is True
    assert _served(router) == (11, ["default"]) and router.state.source == "redis"
    for raw in (stale, equal, unserialed):
        assert router.offer(raw, "redis") is False
    assert [v.name for v in router.state.variants] == ["x"]
    assert len([r for r in caplog.records if "not newer" in r.getMessage()]) == 3
    # The file still holds serial 10: polling it changes nothing, and costs no parse after the first.
    assert router.reload_if_changed() is False
    path.write_bytes(newer)  # the file catches up with the push: the same table, silently
    assert router.reload_if_changed() is False
    path.write_bytes(json.dumps({"serial": 12, "variants": [{"name": "y", "weight": 1}]}).encode())
    assert router.reload_if_changed() is True
    assert _served(router) == (12, ["default"]) and router.state.source == "file"


def test_startup_takes_the_files_table_whatever_its_serial_and_serial_zero_tables_stay_live(tmp_path):
    router, path = _router(tmp_path, table())  # no serial: 0
    assert router.state.serial == 0 and router.state.source == "file"
    assert router.offer(json.dumps({"serial": 0, "variants": [{"name": "c", "weight": 1}]}).encode(), "redis")
    assert [v.name for v in router.state.variants] == ["c"]  # serial-less tables replace each other
    assert router.offer(revisions_table(serial=5), "redis")
    path.write_bytes(json.dumps({"variants": [{"name": "d", "weight": 1}]}).encode())
    assert router.reload_if_changed() is False  # serial 0 never undoes serial 5
    assert router.state.serial == 5


def test_a_broken_offer_keeps_the_table_and_is_reported_once_per_source(tmp_path):
    errors = []
    router, _ = _router(tmp_path, table())
    router._on_error = errors.append
    served = router.state
    for _ in range(3):
        assert router.offer(b"{broken", "redis") is False
    assert router.state is served and len(errors) == 1


def test_inline_state_is_loaded_and_versions_the_cache_like_a_file(tmp_path):
    saved = tmp_path / "p.json"
    saved.write_text(json.dumps(SAVED_PREDICT))
    other = {**SAVED_PREDICT, "demos": []}
    raw = json.dumps({"revisions": [
        {"name": "r1", "weight": 50, "variants": [{"name": "v", "weight": 1, "program": {"state": SAVED_PREDICT}}]},
        # The same program (keys in another order) and LM: the same cache entries.
        {"name": "r2", "weight": 50, "variants": [{"name": "v", "weight": 1,
                                                   "program": {"state": dict(reversed(SAVED_PREDICT.items()))}}]},
        {"name": "r3", "weight": 0, "variants": [{"name": "v", "weight": 1, "program": {"state": other}}]},
        {"name": "r4", "weight": 0, "variants": [{"name": "v", "weight": 1, "program": {"path": str(saved)}}]},
        {"name": "r5", "weight": 0, "variants": [{"name": "v", "weight": 1}]},
    ]}).encode()  # fmt: skip
    router, _ = _router(tmp_path, raw)
    r1, r2, r3, r4, r5 = (router.choose(revision=name) for name in ("r1", "r2", "r3", "r4", "r5"))
    assert r1.program.module.signature.instructions == "Be terse." and len(r1.program.module.demos) == 1
    assert r1.program.public()["inline_state"] is True and r1.program.public()["path"] is None
    assert r1.cache_version == r2.cache_version
    assert len({r1.cache_version, r3.cache_version, r4.cache_version, r5.cache_version}) == 4
    assert r4.program.module.signature.instructions == "Be terse."


def test_inline_state_that_does_not_fit_refuses_the_table(tmp_path):
    router, _ = _router(tmp_path, table())
    bad = json.dumps({"serial": 1, "variants": [
        {"name": "v", "weight": 1, "program": {"module": "ChainOfThought", "state": SAVED_PREDICT}}]}).encode()  # fmt: skip
    errors = []
    router._on_error = errors.append
    assert router.offer(bad, "redis") is False
    assert "variant 'v': inline saved program holds predictors" in errors[0]


def test_pricing_is_per_variant_and_shown_in_public(settings):
    raw = json.dumps({"variants": [
        {"name": "a", "weight": 1, "lm": {"pricing": {"promptPerMillion": 0.15, "completionPerMillion": 0.6, "new": 1}}},
        {"name": "b", "weight": 1},
    ]}).encode()  # fmt: skip
    a, b = parse_table(raw, settings, {}).variants
    assert (a.pricing.prompt_per_million, a.pricing.completion_per_million) == (0.15, 0.6)
    assert b.pricing is None
