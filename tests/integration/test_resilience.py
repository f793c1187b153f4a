"""Breaker, fallback, retries, rate limits and the budget, against the fake LM over HTTP."""

from __future__ import annotations

import pytest


def _breaker_state(runtime, model="openai/fake-model"):
    return runtime.client.get("/health").json()["components"]["breakers"][model]


def test_transient_errors_are_retried_then_reported_as_502(start_runtime, fake_lm):
    fake_lm.configure(failure_rate=1.0, failure_status=503)
    runtime = start_runtime(lm_max_retries=2, circuit_breaker_failure_threshold=100)
    response = runtime.predict({"input": "will fail"})
    assert response.status_code == 502
    error = response.json()["error"]
    assert error["type"] == "upstream_error"
    assert "openai/fake-model" in error["message"] and "503" in error["message"]
    assert fake_lm.calls == 3  # one attempt and two retries
    # Failures are not cached: the LM is asked again once it recovers.
    fake_lm.configure(failure_rate=0.0)
    assert runtime.predict({"input": "will fail"}).status_code == 200


def test_provider_429_is_retried(start_runtime, fake_lm):
    fake_lm.configure(failure_rate=1.0, failure_status=429)
    runtime = start_runtime(lm_max_retries=1, circuit_breaker_failure_threshold=100)
    assert runtime.predict({"input": "rate limited upstream"}).status_code == 502
    assert fake_lm.calls == 2


def test_breaker_opens_fails_fast_and_recovers_through_half_open(start_runtime, fake_lm, poll):
    runtime = start_runtime(
        lm_max_retries=0,
        circuit_breaker_failure_threshold=3,
        circuit_breaker_success_threshold=1,
        circuit_breaker_timeout_secs=1,
    )
    fake_lm.configure(failure_rate=1.0)
    for i in range(3):
        assert runtime.predict({"input": f"q{i}"}).status_code == 502
    assert _breaker_state(runtime) == "open"
    assert runtime.client.get("/health").json()["status"] == "degraded"
    calls = fake_lm.calls
    assert calls == 3
    fast = runtime.predict({"input": "while open"})
    assert fast.status_code == 503
    assert fast.json()["error"]["type"] == "circuit_open"
    assert int(fast.headers["retry-after"]) >= 1
    assert fake_lm.calls == calls  # failed fast: no LM call

    fake_lm.configure(failure_rate=0.0)

    def recovered():
        response = runtime.predict({"input": "after recovery", "use_cache": False})
        return response.status_code == 200

    poll(recovered, timeout=60, interval=0.2, what="the breaker to let a probe through")
    assert _breaker_state(runtime) == "closed"
    assert runtime.client.get("/health").json()["status"] == "ok"
    metrics = runtime.client.get("/metrics").text
    assert 'dspy_circuit_breaker_state{model="openai/fake-model"} 0.0' in metrics
    assert 'dspy_errors_total{type="circuit_open"}' in metrics


def test_open_breaker_falls_back_to_the_next_model_uncached(start_runtime, fake_lm):
    runtime = start_runtime(
        lm_max_retries=0,
        lm_fallback_models="openai/fake-fallback",
        circuit_breaker_failure_threshold=2,
        circuit_breaker_timeout_secs=600,
    )
    fake_lm.configure(failure_rate=1.0, failing_models=["fake-model"])
    # Failing primary: each request fails over to the fallback right away.
    first = runtime.predict({"input": "fallback please"})
    assert first.status_code == 200, first.text
    assert first.json()["model"] == "openai/fake-fallback"
    runtime.predict({"input": "another"})
    assert _breaker_state(runtime) == "open"
    stats = fake_lm.stats()["models"]
    primary_calls = stats["fake-model"]
    assert primary_calls == 2
    # Open breaker: straight to the fallback, and its answers are not cached.
    for _ in range(3):
        response = runtime.predict({"input": "fallback please"})
        assert response.status_code == 200
        assert response.json()["model"] == "openai/fake-fallback"
        assert response.json()["metadata"]["cached"] is False
    stats = fake_lm.stats()["models"]
    assert stats["fake-model"] == primary_calls
    assert stats["fake-fallback"] == 5
    costs = runtime.client.get("/costs").json()
    assert costs["models"]["openai/fake-fallback"]["requests"] == 5


def test_a_fallback_on_its_own_endpoint_answers_while_the_primary_breaker_is_open(
    start_runtime, fake_lm, second_fake_lm
):
    runtime = start_runtime(
        lm_max_retries=0,
        lm_fallback_models="openai/fake-fallback",
        lm_fallback_api_bases={0: second_fake_lm.api_base},
        lm_fallback_api_keys={0: "sk-fallback-only-key"},
        circuit_breaker_failure_threshold=1,
        circuit_breaker_timeout_secs=600,
    )
    fake_lm.configure(failure_rate=1.0)  # the primary's endpoint fails whatever it is asked
    first = runtime.predict({"input": "primary is down"})
    assert first.status_code == 200, first.text
    assert first.json()["model"] == "openai/fake-fallback"
    assert _breaker_state(runtime) == "open"
    for i in range(3):
        response = runtime.predict({"input": f"breaker open {i}"})
        assert response.status_code == 200, response.text
        assert response.json()["model"] == "openai/fake-fallback"
    # Only the primary went to the first endpoint, once; every fallback call to the second.
    assert fake_lm.stats()["models"] == {"fake-model": 1}
    assert second_fake_lm.stats()["models"] == {"fake-fallback": 4}
    config = runtime.client.get("/config").json()
    assert config["fallbacks"][0]["api_base"] == second_fake_lm.api_base
    assert config["fallbacks"][0]["api_key"] == "set"
    assert "sk-fallback-only-key" not in runtime.client.get("/config").text


def test_rate_limit_returns_429_with_retry_after(start_runtime, fake_lm):
    runtime = start_runtime(rate_limit_rps=0.01, rate_limit_burst=2)
    statuses = [runtime.predict({"input": f"r{i}"}).status_code for i in range(4)]
    assert statuses == [200, 200, 429, 429]
    limited = runtime.predict({"input": "r9"})
    assert limited.json()["error"]["type"] == "rate_limited"
    assert int(limited.headers["retry-after"]) >= 1
    assert fake_lm.calls == 2


def test_rate_limit_per_client_key(start_runtime):
    runtime = start_runtime(rate_limit_rps=0.01, rate_limit_burst=1, rate_limit_key_header="X-API-Key")
    alice = {"X-API-Key": "alice"}
    bob = {"X-API-Key": "bob"}
    assert runtime.predict({"input": "a"}, headers=alice).status_code == 200
    assert runtime.predict({"input": "b"}, headers=alice).status_code == 429
    assert runtime.predict({"input": "c"}, headers=bob).status_code == 200


BUDGET_PRICING = '{"openai/fake-model": {"promptPerMillion": 0, "completionPerMillion": 7000}}'
"""Completion tokens only: a call (20 reported) costs 0.14 USD, and with LM_MAX_TOKENS=20 its
reservation is 2 calls x 20 tokens = 0.28 USD, whatever the tokenizer counts for the prompt."""


def budget_runtime(start_runtime, limit: float, **settings):
    return start_runtime(daily_budget_usd=limit, lm_pricing=BUDGET_PRICING, lm_max_tokens=20, **settings)


def test_spent_budget_gives_429_and_no_more_lm_calls(start_runtime, fake_lm, redis_url):
    runtime = budget_runtime(start_runtime, 0.6, redis_url=redis_url)
    # Before each call: spent + 0.28 reserved <= 0.6 for 0, 0.14 and 0.28 spent.
    assert runtime.predict({"input": "b1"}).status_code == 200
    assert runtime.predict({"input": "b2"}).status_code == 200
    assert runtime.predict({"input": "b3"}).status_code == 200
    calls = fake_lm.calls
    # 0.42 spent is below the limit, but a call that may cost 0.28 no longer fits in it
    # (the check-then-charge budget let it through and ended at 0.56).
    refused = runtime.predict({"input": "b4"})
    assert refused.status_code == 429
    error = refused.json()["error"]
    assert error["type"] == "budget_exhausted"
    assert "daily budget" in error["message"]
    assert int(refused.headers["retry-after"]) >= 1
    assert runtime.predict({"input": "b5"}).status_code == 429
    assert fake_lm.calls == calls
    # Cached answers cost nothing and are still served.
    assert runtime.predict({"input": "b1"}).status_code == 200
    budget = runtime.client.get("/costs").json()["budget"]
    assert budget["exhausted"] is True
    assert budget["spent_today_usd"] == pytest.approx(0.42) and budget["reserved_usd"] == 0


def test_budget_is_shared_across_replicas_through_redis(start_runtime, fake_lm, redis_url):
    first = budget_runtime(start_runtime, 0.45, redis_url=redis_url)
    second = budget_runtime(start_runtime, 0.45, redis_url=redis_url)
    assert first.predict({"input": "spend here"}).status_code == 200
    assert first.predict({"input": "and here"}).status_code == 200  # 0.14 + 0.28 reserved <= 0.45
    assert second.predict({"input": "new question on the other replica"}).status_code == 429  # 0.28 + 0.28


def test_the_reservation_counts_the_prompt_tokens(start_runtime, fake_lm):
    """With the prompt priced (the fixtures' 1000 USD per million), a long question reserves more
    than a short one: a budget with room for a short question's worst case refuses a long one
    before any LM call (the check-then-charge budget called the LM, 0 being below the limit)."""
    runtime = start_runtime(daily_budget_usd=1.0, lm_max_tokens=20)
    # About 140 prompt tokens: 2 calls x (0.14 + 20 x 0.002) = 0.36 reserved.
    assert runtime.predict({"input": "short"}).status_code == 200
    # About 700 prompt tokens: 2 x (0.7 + 0.04) = 1.48 > 1.0 - 0.14.
    long = runtime.predict({"input": "why is the sky blue? " * 120})
    assert long.status_code == 429 and long.json()["error"]["type"] == "budget_exhausted"
    assert fake_lm.calls == 1


def test_slow_lm_times_out_with_504_after_retries(start_runtime, fake_lm):
    fake_lm.configure(latency_ms=3000)
    runtime = start_runtime(lm_timeout_secs=0.2, lm_max_retries=1, circuit_breaker_failure_threshold=100)
    response = runtime.predict({"input": "too slow"})
    assert response.status_code == 504
    assert response.json()["error"]["type"] == "upstream_timeout"
    assert fake_lm.calls == 2  # timeouts are transient: retried once
