"""POST /v1/predict/batch over real HTTP against the fake LM: each item on /v1/predict's own path."""

from __future__ import annotations

import threading
from typing import Any

import httpx
import pytest

from dspy_runtime.api.schemas import BatchResponse


def batch(runtime, items: Any, **kwargs: Any) -> httpx.Response:
    return runtime.client.post("/v1/predict/batch", json={"items": items}, **kwargs)


def test_one_result_per_item_in_order_each_what_predict_would_answer(start_runtime, fake_lm):
    runtime = start_runtime(dspy_signature="question, context -> answer")
    items = [
        {"inputs": {"question": "q1", "context": "c"}},
        {"inputs": {"question": "q1"}},  # a missing input field
        "not an object",
        {"inputs": {"question": "q2", "context": "c"}, "request_id": "mine.2"},
        {"inputs": {"question": "q3", "context": "c"}, "variant": "nope"},
        {"inputs": {"question": "q3", "context": "c"}, "stream": True},
    ]
    response = batch(runtime, items, headers={"X-Request-ID": "batch-1"})
    assert response.status_code == 200
    results = response.json()["results"]
    BatchResponse.model_validate(response.json())
    assert len(results) == len(items)
    ok = [i for i, r in enumerate(results) if "error" not in r]
    assert ok == [0, 3]
    assert "q1" in results[0]["output"] and "q2" in results[3]["output"]
    assert [results[i]["request_id"] for i in ok] == ["batch-1-0", "mine.2"]
    assert results[0]["metadata"]["cost_usd"] > 0 and results[0]["metadata"]["cached"] is False
    # A failed item carries the error body /v1/predict answers for the same body.
    for index in (1, 4):
        alone = runtime.client.post("/v1/predict", json=items[index]).json()["error"]
        assert {k: results[index]["error"][k] for k in ("type", "message")} == {k: alone[k] for k in ("type", "message")}
    assert results[2]["error"]["type"] == "invalid_input" and "an item (a /v1/predict body) must be a JSON object" in results[2]["error"]["message"]
    assert [results[i]["error"]["request_id"] for i in (1, 2, 4, 5)] == [f"batch-1-{i}" for i in (1, 2, 4, 5)]
    assert results[5]["error"]["type"] == "invalid_input" and "stream" in results[5]["error"]["message"]
    assert fake_lm.calls == 2
    metrics = runtime.client.get("/metrics").text
    assert "dspy_batch_items_count 1.0" in metrics and "dspy_batch_items_sum 6.0" in metrics
    # Items that reached the service are counted like predictions (the ok ones and the two bad inputs).
    assert 'status="ok",variant="default"} 2.0' in metrics
    assert 'dspy_predictions_total{model="openai/fake-model",revision="default",status="invalid_input",variant="default"} 2.0' in metrics


@pytest.mark.parametrize(("use_cache", "lm_calls"), [(True, 3), (False, 12)])
def test_duplicates_in_one_batch_cost_one_lm_call(start_runtime, fake_lm, use_cache, lm_calls):
    runtime = start_runtime(batch_concurrency=4)
    items = [{"input": "same", "use_cache": use_cache}] * 10 + [{"input": "other"}, {"input": "third"}]
    results = batch(runtime, items).json()["results"]
    assert fake_lm.calls == lm_calls  # use_cache: false (nothing to share) shows what would happen otherwise
    same = [r["metadata"] for r in results[:10]]
    assert len({r["output"] for r in results[:10]}) == 1
    if use_cache:
        assert sum(1 for m in same if not m["cached"]) == 1
        assert {m["cache_level"] for m in same if m["cached"]} <= {"inflight", "memory"}
        assert sum(m["cost_usd"] for m in same) == pytest.approx(0.14)


def test_items_run_concurrently_under_the_bound(start_runtime, fake_lm, poll):
    fake_lm.configure(hold_models=["fake-model"])
    runtime = start_runtime(batch_concurrency=3)
    responses: list[httpx.Response] = []
    thread = threading.Thread(target=lambda: responses.append(batch(runtime, [{"input": f"q{i}"} for i in range(7)])))
    thread.start()

    def active() -> str:
        return next(line for line in runtime.client.get("/metrics").text.splitlines()
                    if line.startswith("dspy_active_predictions "))

    for answered in (0, 3, 6):  # three at a time are at the LM, and no more are in progress
        at_lm = min(3, 7 - answered)
        poll(lambda: (fake_lm.stats()["held"], fake_lm.calls) == (at_lm, answered + at_lm),
             what=f"{at_lm} calls held after {answered} answers")
        assert active() == f"dspy_active_predictions {float(at_lm)}"
        fake_lm.release()
    thread.join(60)
    results = responses[0].json()["results"]
    assert [f"'q{i}'" in r["output"] for i, r in enumerate(results)] == [True] * 7


def test_each_item_takes_a_rate_limit_token(start_runtime, fake_lm):
    runtime = start_runtime(rate_limit_rps=0.001, rate_limit_burst=2, batch_concurrency=1)
    results = batch(runtime, [{"input": f"q{i}"} for i in range(4)]).json()["results"]
    assert ["error" in r for r in results] == [False, False, True, True]
    assert {r["error"]["type"] for r in results[2:]} == {"rate_limited"}
    assert fake_lm.calls == 2
    assert runtime.predict({"input": "one more"}).status_code == 429  # the batch spent the bucket


def test_items_share_the_budget_and_the_breaker(start_runtime, fake_lm):
    # Completion tokens only (20 a call): a call costs 0.14 and reserves 2 x 0.14 first. The first
    # item fits (0 + 0.28 <= 0.3), the next do not (0.14 + 0.28); the whole budget is never passed.
    pricing = '{"openai/fake-model": {"promptPerMillion": 0, "completionPerMillion": 7000}}'
    runtime = start_runtime(daily_budget_usd=0.3, lm_max_tokens=20, lm_pricing=pricing, batch_concurrency=1)
    results = batch(runtime, [{"input": f"q{i}"} for i in range(3)]).json()["results"]
    assert ["error" not in results[0], *(r["error"]["type"] for r in results[1:])] == [
        True, "budget_exhausted", "budget_exhausted"]
    assert fake_lm.calls == 1

    fake_lm.reset(failure_rate=1.0)
    runtime = start_runtime(circuit_breaker_failure_threshold=1, lm_max_retries=0, batch_concurrency=1)
    results = batch(runtime, [{"input": f"q{i}"} for i in range(3)]).json()["results"]
    assert [r["error"]["type"] for r in results] == ["upstream_error", "circuit_open", "circuit_open"]
    assert fake_lm.calls == 1


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        ({"items": []}, 422, "items: List should have at least 1 item"),
        ({"items": {"input": "q"}}, 422, "items: Input should be a valid list"),
        ({}, 422, "items: Field required"),
        ({"items": [{"input": "q"}], "extra": 1}, 422, "extra: Extra inputs are not permitted"),
        ({"items": [{"input": "q"}] * 4}, 413, "4 items is over the limit of 3 per batch (MAX_BATCH_ITEMS)"),
        (None, 400, "not valid JSON"),
    ],
)
def test_a_malformed_or_oversized_batch_is_a_json_error_naming_the_field(start_runtime, fake_lm, body, status, fragment):
    runtime = start_runtime(max_batch_items=3)
    if body is None:
        response = runtime.client.post("/v1/predict/batch", content=b"{nope", headers={"content-type": "application/json"})
    else:
        response = runtime.client.post("/v1/predict/batch", json=body)
    assert response.status_code == status
    assert fragment in response.json()["error"]["message"]
    assert fake_lm.calls == 0
