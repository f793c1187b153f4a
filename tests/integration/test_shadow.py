"""Shadow traffic on real parts: the runtime app under uvicorn, the fake LM process (a shadow
model that can be held or scripted), a real redis-server for the budget and the window buckets,
and the operator's status block computed from those buckets."""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import redis

from dspy_operator.rollout.experiment import wilson_interval
from dspy_operator.rollout.shadow import shadow_status
from dspy_runtime.fakelm import field_value
from dspy_runtime.shadow import sample_point, sampled

REV, CANARY = "5ab1e0000001", "ca4a40000002"
PREFIX = "dspy:{default/qa}:"
SHADOW_MODEL, SHADOW_BODY_MODEL = "openai/fake-shadow", "fake-shadow"
PRICED = {"promptPerMillion": 1000, "completionPerMillion": 2000}
"""The fake model's price: 100 prompt and 20 completion tokens per call cost 0.14 USD."""
CALL_USD = 0.14


def shadow_variant(**extra: Any) -> dict[str, Any]:
    return {"name": "candidate", "weight": 0, "shadow": True, "lm": {"model": SHADOW_MODEL, "pricing": PRICED}, **extra}


def write_table(tmp_path: Path, name: str, *, shadow: bool = True, policy: dict[str, Any] | None = None,
                revisions: list[dict[str, Any]] | None = None) -> Path:
    variants = [{"name": "baseline", "weight": 100}] + ([shadow_variant()] if shadow else [])
    table: dict[str, Any] = {"stickyHeader": "X-User-ID",
                             "revisions": revisions or [{"name": REV, "weight": 100, "variants": variants}]}
    if policy is not None:
        table["shadow"] = policy
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(table))
    return path


def metric(runtime: Any, name: str, **labels: str) -> float:
    """The sum of `name`'s samples whose labels include `labels`, from GET /metrics."""
    return float(runtime.metric(name, **labels))


def shadow_outcomes(runtime: Any) -> dict[str, float]:
    results = {r: metric(runtime, "dspy_shadow_requests_total", result=r) for r in ("agree", "disagree", "error")}
    dropped = {r: metric(runtime, "dspy_shadow_dropped_total", reason=r) for r in ("busy", "cap", "budget")}
    return {**results, **{f"dropped_{r}": n for r, n in dropped.items()}}


def settled(runtime: Any) -> float:
    """Shadow copies that reached an end (answered, failed or dropped)."""
    return sum(shadow_outcomes(runtime).values())


def read_buckets(url: str) -> dict[int, dict[str, str]]:
    client = redis.Redis.from_url(url, decode_responses=True, socket_timeout=5)
    try:
        return {int(key.rsplit(":", 1)[1]): client.hgetall(key) for key in client.scan_iter(f"{PREFIX}win:*")}
    finally:
        client.close()


def figure_total(buckets: dict[int, dict[str, str]], field: str) -> float:
    return sum(float(fields.get(field, 0)) for fields in buckets.values())


def fleet(redis_url: str, **overrides: Any) -> dict[str, Any]:
    """Runtime settings of a pod of resource default/qa on the test Redis, flushing often."""
    return {"redis_url": redis_url, "dspy_resource": "default/qa", "window_flush_secs": 0.1,
            "hostname": "pod-shadow", **overrides}


# ---- (1) no latency ------------------------------------------------------------------------------


def test_a_slow_shadow_adds_no_latency_to_live_requests(start_runtime, fake_lm, tmp_path, poll, capsys):
    """Causal: the shadow model holds every call until released, and the live answers are in hand
    before the release, so no live answer waited for a shadow one. The latencies of the same live
    requests with and without a (held) shadow are reported as a ratio, not judged by a number."""
    policy = {"samplePercent": 100, "maxConcurrent": 1000}
    plain = start_runtime(routing_path=write_table(tmp_path, "plain", shadow=False))
    shadowed = start_runtime(routing_path=write_table(tmp_path, "shadowed", policy=policy))
    fake_lm.configure(hold_models=[SHADOW_BODY_MODEL])

    first = shadowed.predict({"input": "the first question"})
    assert first.status_code == 200, first.text
    assert first.json()["variant"] == "baseline"
    # The live answer is in hand while its copy is in flight (started before the answer was sent,
    # unable to end before the release below); the copy reaches the shadow model, which holds it.
    assert shadowed.runtime.service.shadow.in_flight == 1
    poll(lambda: fake_lm.stats()["held"] == 1, what="the shadow call to reach the shadow model")
    assert fake_lm.stats()["models"] == {"fake-model": 1, SHADOW_BODY_MODEL: 1}
    assert settled(shadowed) == 0

    rounds = 30
    without, with_shadow = [], []
    for i in range(rounds):  # interleaved, each first in turn, so drift and order hit both alike
        pair = ((plain, without), (shadowed, with_shadow))
        for runtime, latencies in pair if i % 2 else reversed(pair):
            started = time.perf_counter()
            response = runtime.predict({"input": f"question {i}"})
            latencies.append(time.perf_counter() - started)
            assert response.status_code == 200 and response.json()["metadata"]["cached"] is False
    poll(lambda: fake_lm.stats()["held"] == rounds + 1, what="every copy to be held by the shadow model")
    assert settled(shadowed) == 0, "every live answer came back while all its copies were still unanswered"

    assert fake_lm.release() == rounds + 1
    poll(lambda: shadow_outcomes(shadowed)["agree"] == rounds + 1, what="the released copies to be compared")
    assert metric(plain, "dspy_shadow_requests_total") == 0
    assert metric(shadowed, "dspy_shadow_latency_seconds_count") == rounds + 1
    ratio = statistics.median(with_shadow) / statistics.median(without)
    with capsys.disabled():
        print(f"\nlive latency with a held shadow vs without (median of {rounds}): "
              f"{statistics.median(with_shadow) * 1000:.1f} ms vs {statistics.median(without) * 1000:.1f} ms, "
              f"ratio {ratio:.2f}")


# ---- (2) agreement ---------------------------------------------------------------------------------


def test_agreement_is_exact_in_the_metrics_the_window_buckets_and_the_status_block(
        start_runtime, fake_lm, redis_url, tmp_path, poll):
    questions = [f"question number {i}" for i in range(10)]
    differ = questions[:3]  # k = 3 of n = 10
    scripted = {q: {"answer": "something else entirely"} for q in differ}
    for q in questions[3:5]:  # the same answer in another case and spacing: agrees
        live = field_value("answer", "str", q)
        scripted[q] = {"answer": "  " + live.upper().replace(" ", "   \t ") + "  "}
    fake_lm.configure(scripted={SHADOW_BODY_MODEL: scripted})
    runtime = start_runtime(routing_path=write_table(tmp_path, "agree", policy={"samplePercent": 100}), **fleet(redis_url))

    for q in questions:
        response = runtime.predict({"input": q})
        assert response.status_code == 200 and response.json()["output"] == field_value("answer", "str", q)
    poll(lambda: settled(runtime) == 10, what="ten copies compared")
    assert shadow_outcomes(runtime) == {"agree": 7, "disagree": 3, "error": 0,
                                        "dropped_busy": 0, "dropped_cap": 0, "dropped_budget": 0}
    assert metric(runtime, "dspy_shadow_cost_usd_total", revision=REV, variant="candidate") == pytest.approx(10 * CALL_USD)

    buckets = poll(lambda: (b := read_buckets(redis_url)) and figure_total(b, f"{REV}|candidate|shadow_compared") == 10
                   and b, what="the shadow figures in the window buckets")
    assert figure_total(buckets, f"{REV}|candidate|shadow_agree") == 7
    assert figure_total(buckets, f"{REV}|baseline|requests") == 10
    assert not any("|candidate|requests" in field for fields in buckets.values() for field in fields), \
        "copies are no live traffic"

    start, end = min(buckets), max(buckets) + 5
    block = shadow_status(buckets, start, end, {REV}, window="30m", updated="2026-01-01T00:00:00Z")
    (target,) = block["targets"]
    low, high = wilson_interval(7, 10)
    assert {k: v for k, v in target.items() if "Latency" not in k} == {
        "revision": REV, "variant": "candidate", "requests": 10, "agreementRate": 0.7,
        "agreementCI": [pytest.approx(low, rel=1e-5), pytest.approx(high, rel=1e-5)], "errorRate": 0.0,
        "costPerRequestUsd": pytest.approx(CALL_USD), "dropped": 0,
    }
    assert target["p95LatencySeconds"] > 0 and target["liveP95LatencySeconds"] > 0


def test_a_revision_in_shadow_gets_copies_and_no_live_figures(start_runtime, fake_lm, redis_url, tmp_path, poll):
    revisions = [
        {"name": REV, "weight": 100, "variants": [{"name": "baseline", "weight": 100}]},
        {"name": CANARY, "weight": 0, "shadow": True,
         "variants": [{"name": "baseline", "weight": 100, "lm": {"model": SHADOW_MODEL, "pricing": PRICED}}]},
    ]
    path = write_table(tmp_path, "revision", revisions=revisions, policy={"samplePercent": 100})
    runtime = start_runtime(routing_path=path, **fleet(redis_url))
    for i in range(4):
        assert runtime.predict({"input": f"q{i}"}).json()["revision"] == REV
    poll(lambda: metric(runtime, "dspy_shadow_requests_total", revision=CANARY, variant="baseline",
                        result="agree") == 4, what="four copies answered by the canary")
    buckets = poll(lambda: (b := read_buckets(redis_url)) and figure_total(b, f"{CANARY}|baseline|shadow_compared") == 4
                   and b, what="the canary's shadow figures")
    assert not any(field.startswith(f"{CANARY}|baseline|") and not field.split("|")[2].startswith("shadow_")
                   for fields in buckets.values() for field in fields), "the canary would be judged on copies"
    assert metric(runtime, "dspy_predictions_total", revision=CANARY) == 0


# ---- (3) the cap and the budget --------------------------------------------------------------------


def one_by_one(runtime: Any, count: int, poll: Callable[..., Any], prefix: str = "q") -> list[int]:
    """Live requests one after the other, each one's copy settled before the next: statuses."""
    statuses = []
    for i in range(count):
        before = settled(runtime)
        statuses.append(runtime.predict({"input": f"{prefix}{i}"}).status_code)
        poll(lambda: settled(runtime) == before + 1, what=f"the copy of request {i} to settle")
    return statuses


def test_the_shadow_cap_holds_and_the_budget_counts_shadow_spend(start_runtime, fake_lm, redis_url, tmp_path, poll):
    policy = {"samplePercent": 100, "maxDailyUsd": 0.35}
    runtime = start_runtime(routing_path=write_table(tmp_path, "cap", policy=policy),
                            **fleet(redis_url, daily_budget_usd=100.0))
    assert one_by_one(runtime, 6, poll) == [200] * 6, "live requests keep being served"
    # Spent before each check: 0, 0.14, 0.28 (< 0.35: made), then 0.42 (dropped, reason cap).
    assert shadow_outcomes(runtime) == {"agree": 3, "disagree": 0, "error": 0,
                                        "dropped_busy": 0, "dropped_cap": 3, "dropped_budget": 0}
    day = datetime.now(UTC).strftime("%Y-%m-%d")
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        assert float(client.get(f"dspy:budget:shadow:{day}")) == pytest.approx(3 * CALL_USD)
        assert float(client.get(f"dspy:budget:{day}")) == pytest.approx(9 * CALL_USD), "6 live + 3 shadow calls"
    finally:
        client.close()
    costs = runtime.client.get("/costs").json()
    assert costs["budget"]["spent_today_usd"] == pytest.approx(9 * CALL_USD)
    assert costs["shadow"] == {"cap_usd": 0.35, "spent_today_usd": pytest.approx(3 * CALL_USD)}
    assert costs["variants"]["candidate"]["cost_usd"] == pytest.approx(3 * CALL_USD)
    assert fake_lm.stats()["models"] == {"fake-model": 6, SHADOW_BODY_MODEL: 3}


def test_shadow_calls_stop_while_the_live_budget_still_has_their_allowance_left(
        start_runtime, fake_lm, redis_url, tmp_path, poll):
    # Completion tokens only, 20 of them at most: every call costs 0.14 and reserves 2 x 0.14 (its
    # worst case, whatever the prompt), so the arithmetic below does not hang on a tokenizer.
    completion_priced = {"promptPerMillion": 0, "completionPerMillion": 7000}
    variants = [{"name": "baseline", "weight": 100},
                shadow_variant(lm={"model": SHADOW_MODEL, "pricing": completion_priced})]
    table = write_table(tmp_path, "budget", policy={"samplePercent": 100, "maxDailyUsd": 0.75},
                        revisions=[{"name": REV, "weight": 100, "variants": variants}])
    runtime = start_runtime(routing_path=table, lm_max_tokens=20,
                            lm_pricing=json.dumps({"openai/fake-model": completion_priced}),
                            **fleet(redis_url, daily_budget_usd=1.3))
    # (live, shadow) spend before each copy's check: (0.14, 0) (0.28, 0.14) (0.42, 0.28): the budget
    # left is more than the 0.75 - shadow the shadow may still spend; then (0.56, 0.42): 0.32 left
    # < 0.33, and (0.70, 0.42). Each live call fits with its 0.28 reserved (the last: 0.98 + 0.28).
    assert one_by_one(runtime, 5, poll) == [200] * 5
    assert shadow_outcomes(runtime) == {"agree": 3, "disagree": 0, "error": 0,
                                        "dropped_busy": 0, "dropped_cap": 0, "dropped_budget": 2}
    assert fake_lm.stats()["models"] == {"fake-model": 5, SHADOW_BODY_MODEL: 3}


# ---- sampling and concurrency -------------------------------------------------------------------------


def test_a_sticky_user_is_always_or_never_shadowed(start_runtime, fake_lm, tmp_path, poll):
    runtime = start_runtime(routing_path=write_table(tmp_path, "sticky", policy={"samplePercent": 50}))
    users = [f"user-{i}" for i in range(24)]
    shadowed = [u for u in users if sampled(50, sample_point(u, lambda: 0.0))]
    assert 0 < len(shadowed) < len(users)
    for round_ in range(2):
        for user in users:
            assert runtime.predict({"input": f"{user} asks {round_}"}, headers={"X-User-ID": user}).status_code == 200
        poll(lambda: settled(runtime) == len(shadowed) * (round_ + 1), what="the sampled users' copies")
    assert fake_lm.stats()["models"][SHADOW_BODY_MODEL] == 2 * len(shadowed)


def test_a_pod_with_no_free_slot_drops_the_copy(start_runtime, fake_lm, tmp_path, poll):
    runtime = start_runtime(routing_path=write_table(tmp_path, "busy", policy={"samplePercent": 100, "maxConcurrent": 1}))
    fake_lm.configure(hold_models=[SHADOW_BODY_MODEL])
    assert runtime.predict({"input": "first"}).status_code == 200
    poll(lambda: fake_lm.stats()["held"] == 1, what="the first copy to be in flight")
    for question in ("second", "third"):
        assert runtime.predict({"input": question}).status_code == 200
    assert shadow_outcomes(runtime)["dropped_busy"] == 2, "dropped, not queued"
    assert fake_lm.release() == 1
    poll(lambda: shadow_outcomes(runtime)["agree"] == 1, what="the one copy in flight to be compared")
    assert fake_lm.stats()["models"][SHADOW_BODY_MODEL] == 1


def test_a_failing_shadow_is_an_error_and_never_answered_by_a_fallback(start_runtime, fake_lm, tmp_path, poll):
    runtime = start_runtime(routing_path=write_table(tmp_path, "failing", policy={"samplePercent": 100}),
                            lm_fallback_models="openai/fake-fallback", lm_max_retries=0)
    fake_lm.configure(failure_rate=1.0, failing_models=[SHADOW_BODY_MODEL])
    for i in range(3):
        assert runtime.predict({"input": f"q{i}"}).status_code == 200
    poll(lambda: shadow_outcomes(runtime)["error"] == 3, what="three failed copies")
    assert shadow_outcomes(runtime)["disagree"] == 0, "a failure is no disagreement"
    assert "fake-fallback" not in fake_lm.stats()["models"]
    assert metric(runtime, "dspy_errors_total") == 0, "a shadow's failure is not the user's"
