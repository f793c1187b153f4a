"""Shadow traffic: the pure rules (sampling, targets, agreement, the cap), the table's shadow
fields, and the Shadower's bookkeeping around a scripted prediction (no Redis, no HTTP)."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

import pytest

from dspy_runtime.errors import BudgetExhausted, UpstreamTimeout
from dspy_runtime.metrics import Metrics
from dspy_runtime.resilience import Budget
from dspy_runtime.routing import Router, RoutingError, ShadowPolicy, parse_table, sticky_point
from dspy_runtime.settings import RuntimeSettings
from dspy_runtime.shadow import (
    BUDGET,
    BUSY,
    CAP,
    Shadower,
    agrees,
    effective_cap,
    normalized,
    sample_point,
    sampled,
    shadow_targets,
    spend_refusal,
)
from dspy_runtime.windows import Windows


def router_for(tmp_path, table: dict[str, Any]) -> Router:
    path = tmp_path / "routing.json"
    path.write_text(json.dumps(table))
    return Router(RuntimeSettings(routing_path=path, lm_api_key="sk-test", openai_api_key=None))


LIVE_AND_SHADOW = {"revisions": [
    {"name": "stable", "weight": 100, "variants": [
        {"name": "a", "weight": 60}, {"name": "b", "weight": 40},
        {"name": "s", "weight": 0, "shadow": True}]},
    {"name": "canary", "weight": 0, "shadow": True, "variants": [
        {"name": "b", "weight": 100}, {"name": "c", "weight": 0}]},
    {"name": "idle", "weight": 0, "variants": [{"name": "a", "weight": 100}]},
], "shadow": {"samplePercent": 25, "maxConcurrent": 2, "maxDailyUsd": 1.5}}  # fmt: skip


# ---- the table -----------------------------------------------------------------------------------


def test_the_table_carries_shadow_marks_and_the_policy(tmp_path):
    state = router_for(tmp_path, LIVE_AND_SHADOW).state
    assert state.table.shadow == ShadowPolicy(sample_percent=25, max_concurrent=2, max_daily_usd=1.5)
    assert [(r.name, r.shadow) for r in state.revisions] == [("stable", False), ("canary", True), ("idle", False)]
    assert [(v.revision, v.name, v.shadow) for v in state.variants if v.shadow] == [("stable", "s", True)]


def test_without_a_shadow_object_the_defaults_apply(tmp_path):
    state = router_for(tmp_path, {"variants": [{"name": "a", "weight": 1}]}).state
    assert state.table.shadow == ShadowPolicy(sample_percent=10, max_concurrent=4, max_daily_usd=None)


@pytest.mark.parametrize(("raw", "fragment"), [
    ({"variants": [{"name": "a", "weight": 100}, {"name": "s", "weight": 5, "shadow": True}]},
     "shadow variant 's' must have weight 0, not 5"),
    ({"revisions": [{"name": "r", "weight": 100, "variants": [{"name": "a", "weight": 1}]},
                    {"name": "c", "weight": 10, "shadow": True, "variants": [{"name": "a", "weight": 1}]}]},
     "shadow revision 'c' must have weight 0, not 10"),
    ({"variants": [{"name": "s", "weight": 0, "shadow": True}]}, "at least one variant needs a positive weight"),
    ({"variants": [{"name": "a", "weight": 1}], "shadow": {"samplePercent": 0}}, "shadow.samplePercent"),
    ({"variants": [{"name": "a", "weight": 1}], "shadow": {"maxConcurrent": 1001}}, "shadow.maxConcurrent"),
    ({"variants": [{"name": "a", "weight": 1}], "shadow": {"maxDailyUsd": -1}}, "shadow.maxDailyUsd"),
])  # fmt: skip
def test_bad_shadow_tables_are_refused(raw, fragment):
    with pytest.raises(RoutingError, match=fragment):
        parse_table(json.dumps(raw).encode(), RuntimeSettings(openai_api_key=None), {})


def test_a_shadow_is_never_chosen_by_weight_but_can_be_pinned(tmp_path):
    router = router_for(tmp_path, LIVE_AND_SHADOW)
    chosen = {(v.revision, v.name) for v in (router.choose(sticky_value=f"user-{i}") for i in range(500))}
    assert chosen == {("stable", "a"), ("stable", "b")}
    assert router.choose(pinned="s").name == "s"
    assert router.choose(revision="canary", pinned="c").revision == "canary"


# ---- the pure rules -------------------------------------------------------------------------------


def test_targets_are_own_shadow_variants_then_each_shadow_revisions_counterpart(tmp_path):
    targets = shadow_targets(router_for(tmp_path, LIVE_AND_SHADOW).state)
    named = {key: [(t.revision, t.name) for t in found] for key, found in targets.items()}
    assert named == {
        # no variant a in the canary: its first non-shadow variant answers
        ("stable", "a"): [("stable", "s"), ("canary", "b")],
        ("stable", "b"): [("stable", "s"), ("canary", "b")],
        # a live revision at weight 0 (served when pinned) is copied like any live one
        ("idle", "a"): [("canary", "b")],
    }, "shadow variants and shadow revisions are never sources"


def test_a_same_named_shadow_variant_of_a_shadow_revision_is_passed_over(tmp_path):
    table = {"revisions": [
        {"name": "stable", "weight": 100, "variants": [{"name": "c", "weight": 100}]},
        {"name": "canary", "weight": 0, "shadow": True, "variants": [
            {"name": "b", "weight": 100}, {"name": "c", "weight": 0, "shadow": True}]},
    ]}  # fmt: skip
    targets = shadow_targets(router_for(tmp_path, table).state)
    assert [(t.revision, t.name) for t in targets[("stable", "c")]] == [("canary", "b")]


def test_a_table_without_shadows_has_no_targets(tmp_path):
    assert shadow_targets(router_for(tmp_path, {"variants": [{"name": "a", "weight": 1}]}).state) == {}


def test_sampling_is_sticky_by_a_salted_point_and_random_without_a_sticky_value():
    assert sample_point("alice", lambda: 0.99) == sticky_point("shadow:alice")
    assert sample_point("alice", lambda: 0.99) != sticky_point("alice")  # independent of the variant choice
    assert sample_point(None, lambda: 0.42) == 0.42
    assert sample_point("", lambda: 0.42) == 0.42
    assert sampled(10, 0.0999) and not sampled(10, 0.1)
    assert all(sampled(100, p) for p in (0.0, 0.5, 0.999999))
    users = [f"user-{i}" for i in range(20_000)]
    share = sum(sampled(25, sample_point(u, lambda: 1.0)) for u in users) / len(users)
    assert abs(share - 0.25) < 0.015
    # the same user, every time
    assert {sampled(25, sample_point("bob", lambda: 0.0)) for _ in range(10)} == {sampled(25, sticky_point("shadow:bob"))}


@pytest.mark.parametrize(("live", "shadow", "agree"), [
    ({"answer": "Paris"}, {"answer": "  paris "}, True),
    ({"answer": "The  capital\nis Paris"}, {"answer": "the capital is PARIS", "reasoning": "extra"}, True),
    ({"answer": "Straße"}, {"answer": "STRASSE"}, True),  # casefold, not lower
    ({"answer": "Paris"}, {"answer": "Lyon"}, False),
    ({"answer": "Paris"}, {}, False),
    ({"answer": 8}, {"answer": 8}, True),
    ({"answer": [1, 2]}, {"answer": [2, 1]}, False),
    ({"answer": {"b": 1, "a": 2}}, {"answer": {"a": 2, "b": 1}}, True),
])  # fmt: skip
def test_agreement_compares_the_live_signatures_fields_normalized(live, shadow, agree):
    assert agrees(live, shadow, ("answer",)) is agree


def test_normalized_text():
    assert normalized("  A \t b\n\nC ") == "a b c"
    assert normalized(None) == "null"


def test_the_cap_defaults_to_a_tenth_of_the_budget():
    assert effective_cap(2.0, 50.0) == 2.0
    assert effective_cap(0.0, 50.0) == 0.0
    assert effective_cap(None, 50.0) == 5.0
    assert effective_cap(None, None) is None


@pytest.mark.parametrize(("cap", "shadow_spent", "daily", "spent", "refusal"), [
    (None, 0.0, None, 1e9, None),  # nothing limits it
    (5.0, 4.99, None, 0.0, None),
    (5.0, 5.0, None, 0.0, CAP),
    (0.0, 0.0, None, 0.0, CAP),  # maxDailyUsd 0 stops shadow calls
    # the docstring's example: budget 50, cap 5
    (5.0, 3.0, 50.0, 43.0, None),  # 7 left, the shadow may still spend 2
    (5.0, 3.0, 50.0, 48.5, BUDGET),  # 1.5 left: the shadow's allowance is not there any more
    (5.0, 0.0, 50.0, 45.0, BUDGET),  # live spend at dailyUsd - cap: stop
    (5.0, 0.0, 50.0, 44.99, None),
    (None, 0.0, 50.0, 49.99, None),  # no cap at all: only what the budget has left
    (None, 0.0, 50.0, 50.0, BUDGET),
])  # fmt: skip
def test_spend_refusal(cap, shadow_spent, daily, spent, refusal):
    assert spend_refusal(cap, shadow_spent, daily, spent) == refusal


# ---- the Shadower around a scripted prediction -------------------------------------------------------


@dataclass
class Answer:
    outputs: dict[str, Any]
    cached: bool = False
    input_tokens: int = 100
    output_tokens: int = 20
    cost_usd: float = 0.14


@dataclass
class Script:
    """What the shadow 'predicts' per question; a question in ``hold`` waits for ``release``."""

    answers: dict[str, Any]
    calls: list[tuple[str, str, str]] = field(default_factory=list)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    hold: bool = False

    async def __call__(self, live_call: Any, target: Any) -> Answer:
        question = live_call["question"]
        self.calls.append((target.revision, target.name, question))
        if self.hold:
            await self.release.wait()
        answer = self.answers[question]
        if isinstance(answer, Exception):
            raise answer
        return Answer({"answer": answer})


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


async def drain(shadower: Shadower) -> None:
    while shadower.in_flight:
        await asyncio.sleep(0)


def one_shadow_variant(tmp_path, **policy: Any) -> Router:
    return router_for(tmp_path, {"variants": [{"name": "live", "weight": 100}, {"name": "s", "weight": 0, "shadow": True}],
                                 "shadow": {"samplePercent": 100, **policy}})


async def test_copies_are_compared_counted_and_windowed(tmp_path):
    router = one_shadow_variant(tmp_path)
    state, live = router.state, router.choose()
    metrics, windows = Metrics(), Windows(lambda: 1000.0)
    script = Script({"q1": "Paris", "q2": "paris ", "q3": "Lyon", "q4": UpstreamTimeout("timed out")})
    shadower = Shadower(script, metrics=metrics, budget=Budget(None, None), spend=Budget(None, None), windows=windows)
    for question in ("q1", "q2", "q3", "q4"):
        shadower.offer(state, {"question": question}, live, Answer({"answer": "Paris"}), 0.02, None)
    await drain(shadower)

    labels = {"revision": "default", "variant": "s"}
    assert [sample(metrics, "dspy_shadow_requests_total", **labels, result=r) for r in ("agree", "disagree", "error")] \
        == [2, 1, 1]
    assert sample(metrics, "dspy_shadow_latency_seconds_count", **labels) == 4
    assert sample(metrics, "dspy_shadow_cost_usd_total", **labels) == pytest.approx(0.42)
    counts, amounts = windows.take()[1000][("default", "s")].fields()
    assert {k: v for k, v in counts.items() if not k.startswith(("shadow_lat:", "shadow_live_lat:"))} == {
        "shadow_requests": 4, "shadow_errors": 1, "shadow_class:upstream_timeout": 1, "shadow_cache_hits": 0,
        "shadow_tokens_in": 300, "shadow_tokens_out": 60, "shadow_compared": 3, "shadow_agree": 2,
    }  # fmt: skip
    assert counts["shadow_live_lat:7"] == 4  # 0.02 s: (0.01, 0.025]
    assert "requests" not in counts, "copies are no live traffic"
    assert amounts["shadow_cost_usd"] == pytest.approx(0.42)
    assert amounts["shadow_live_latency_sum"] == pytest.approx(0.08)


async def test_a_full_pod_drops_copies_instead_of_queueing_them(tmp_path):
    router = one_shadow_variant(tmp_path, maxConcurrent=1)
    state, live = router.state, router.choose()
    metrics = Metrics()
    script = Script({"q1": "Paris", "q2": "Paris", "q3": "Paris"}, hold=True)
    shadower = Shadower(script, metrics=metrics, budget=Budget(None, None), spend=Budget(None, None))
    for question in ("q1", "q2", "q3"):
        shadower.offer(state, {"question": question}, live, Answer({"answer": "Paris"}), 0.01, None)
    assert shadower.in_flight == 1
    await asyncio.sleep(0)
    assert [c[2] for c in script.calls] == ["q1"]
    script.release.set()
    await drain(shadower)
    labels = {"revision": "default", "variant": "s"}
    assert sample(metrics, "dspy_shadow_dropped_total", **labels, reason=BUSY) == 2
    assert sample(metrics, "dspy_shadow_requests_total", **labels, result="agree") == 1


async def test_the_cap_stops_copies_and_their_spend_counts_in_both_counters(tmp_path):
    router = one_shadow_variant(tmp_path, maxDailyUsd=0.35)
    state, live = router.state, router.choose()
    metrics, budget, spend = Metrics(), Budget(100.0, None), Budget(None, None)
    script = Script({f"q{i}": "Paris" for i in range(6)})
    shadower = Shadower(script, metrics=metrics, budget=budget, spend=spend)
    for i in range(6):  # one after the other: each copy's spend is known before the next check
        shadower.offer(state, {"question": f"q{i}"}, live, Answer({"answer": "Paris"}), 0.01, None)
        await drain(shadower)
    labels = {"revision": "default", "variant": "s"}
    assert sample(metrics, "dspy_shadow_requests_total", **labels, result="agree") == 3  # 0, 0.14, 0.28 < 0.35
    assert sample(metrics, "dspy_shadow_dropped_total", **labels, reason=CAP) == 3
    assert await spend.spent_today() == pytest.approx(0.42)


async def test_a_budget_that_runs_out_mid_call_drops_the_copy(tmp_path):
    router = one_shadow_variant(tmp_path)
    metrics = Metrics()
    script = Script({"q": BudgetExhausted("the daily budget of 1 USD is exhausted")})
    shadower = Shadower(script, metrics=metrics, budget=Budget(None, None), spend=Budget(None, None))
    shadower.offer(router.state, {"question": "q"}, router.choose(), Answer({"answer": "x"}), 0.01, None)
    await drain(shadower)
    labels = {"revision": "default", "variant": "s"}
    assert sample(metrics, "dspy_shadow_dropped_total", **labels, reason=BUDGET) == 1
    assert sample(metrics, "dspy_shadow_requests_total", **labels, result="error") == 0


async def test_unsampled_requests_and_variants_without_targets_make_no_copy(tmp_path):
    router = router_for(tmp_path, {"variants": [{"name": "live", "weight": 100}, {"name": "s", "weight": 0, "shadow": True}],
                                   "shadow": {"samplePercent": 10}})
    script = Script({"q": "x"})
    shadower = Shadower(script, metrics=Metrics(), budget=Budget(None, None), spend=Budget(None, None), rng=lambda: 0.5)
    shadower.offer(router.state, {"question": "q"}, router.choose(), Answer({"answer": "x"}), 0.01, None)
    shadower.offer(router.state, {"question": "q"}, router.choose(pinned="s"), Answer({"answer": "x"}), 0.01, None)
    await drain(shadower)
    assert script.calls == []


async def test_close_cancels_the_copies_in_flight(tmp_path):
    router = one_shadow_variant(tmp_path)
    script = Script({"q": "x"}, hold=True)
    shadower = Shadower(script, metrics=Metrics(), budget=Budget(None, None), spend=Budget(None, None))
    shadower.offer(router.state, {"question": "q"}, router.choose(), Answer({"answer": "x"}), 0.01, None)
    await asyncio.sleep(0)
    await shadower.close()
    await asyncio.sleep(0)
    assert shadower.in_flight == 0
