"""POST /v1/predict and the operational endpoints, over real HTTP against the fake LM."""

from __future__ import annotations

import logging

import httpx


def test_predict_answers_in_the_contract_shape(start_runtime, fake_lm):
    runtime = start_runtime(dspy_module="ChainOfThought")
    response = runtime.predict({"inputs": {"question": "What is the capital of France?"}})
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"request_id", "model", "revision", "variant", "outputs", "output", "metadata"}
    assert body["model"] == "openai/fake-model"
    assert body["revision"] == "default" and body["variant"] == "default"
    # DSPy's ChainOfThought parsed both sections the fake LM wrote.
    assert set(body["outputs"]) == {"reasoning", "answer"}
    assert body["output"] == body["outputs"]["answer"]
    assert "What is the capital of France?" in body["output"]
    meta = body["metadata"]
    assert set(meta) == {"latency_ms", "cached", "cache_level", "input_tokens", "output_tokens", "cost_usd", "timestamp"}
    assert meta["cached"] is False and meta["cache_level"] is None
    assert (meta["input_tokens"], meta["output_tokens"]) == (100, 20)
    # 100 * 1000 / 1e6 + 20 * 2000 / 1e6
    assert abs(meta["cost_usd"] - 0.14) < 1e-9
    assert response.headers["x-request-id"] == body["request_id"]
    assert fake_lm.calls == 1


def test_second_identical_request_is_a_memory_hit_without_an_lm_call(start_runtime, fake_lm):
    runtime = start_runtime()
    first = runtime.predict({"input": "  same   question "}).json()
    second = runtime.predict({"inputs": {"question": "same question"}}).json()
    assert second["outputs"] == first["outputs"]
    assert second["metadata"]["cached"] is True
    assert second["metadata"]["cache_level"] == "memory"
    assert second["metadata"]["cost_usd"] == 0.0 and second["metadata"]["input_tokens"] == 0
    assert fake_lm.calls == 1


def test_use_cache_false_calls_the_lm_again(start_runtime, fake_lm):
    runtime = start_runtime()
    runtime.predict({"input": "fresh please"})
    again = runtime.predict({"input": "fresh please", "use_cache": False}).json()
    assert again["metadata"]["cached"] is False
    assert fake_lm.calls == 2


def test_request_id_from_header_or_body_is_echoed(start_runtime):
    runtime = start_runtime()
    by_header = runtime.predict({"input": "q"}, headers={"X-Request-ID": "abc-123"})
    assert by_header.headers["x-request-id"] == "abc-123"
    assert by_header.json()["request_id"] == "abc-123"
    by_body = runtime.predict({"input": "q", "request_id": "from-body.1"})
    assert by_body.headers["x-request-id"] == "from-body.1"
    assert by_body.json()["request_id"] == "from-body.1"
    # An id that could forge log lines or headers is replaced, not echoed.
    unsafe = runtime.predict({"input": "q"}, headers={"X-Request-ID": "bad id\twith tab"})
    assert unsafe.headers["x-request-id"] != "bad id\twith tab"
    assert len(unsafe.headers["x-request-id"]) == 32


def test_costs_endpoint_totals_computed_predictions(start_runtime):
    runtime = start_runtime()
    for question in ("one", "two", "one"):
        assert runtime.predict({"input": question}).status_code == 200
    costs = runtime.client.get("/costs").json()
    assert costs["total"]["requests"] == 2  # the cached third one cost nothing
    assert costs["total"]["input_tokens"] == 200 and costs["total"]["output_tokens"] == 40
    assert abs(costs["total"]["cost_usd"] - 0.28) < 1e-9
    assert costs["models"]["openai/fake-model"]["priced"] is True
    assert costs["variants"]["default"]["requests"] == 2
    assert abs(costs["budget"]["spent_today_usd"] - 0.28) < 1e-9


def test_metrics_expose_the_contract_names(start_runtime):
    runtime = start_runtime()
    runtime.predict({"input": "metrics"})
    runtime.predict({"input": "metrics"})
    text = runtime.client.get("/metrics").text
    for name in (
        'dspy_predictions_total{model="openai/fake-model",revision="default",status="ok",variant="default"} 2.0',
        'dspy_prediction_duration_seconds_count{cached="true",model="openai/fake-model",revision="default",variant="default"} 1.0',
        'dspy_cache_operations_total{level="memory",operation="hit"} 1.0',
        'dspy_circuit_breaker_state{model="openai/fake-model"} 0.0',
        'dspy_token_usage_total{model="openai/fake-model",type="input"} 100.0',
        'dspy_cost_usd_total{model="openai/fake-model",revision="default",variant="default"}',
        "dspy_active_predictions 0.0",
    ):
        assert name in text, name


def test_health_ready_and_config(start_runtime, test_api_key):
    runtime = start_runtime(dspy_module="ChainOfThought", lm_fallback_models="openai/fake-fallback")
    health = runtime.client.get("/health")
    assert health.status_code == 200
    assert health.json()["status"] == "ok"
    assert health.json()["components"]["redis"] == "disabled"
    assert runtime.client.get("/ready").status_code == 200
    config = runtime.client.get("/config")
    assert config.status_code == 200
    body = config.json()
    assert body["settings"]["dspy_module"] == "ChainOfThought"
    assert body["settings"]["lm_api_key"] == "set"
    assert body["fallback_models"] == ["openai/fake-fallback"]
    variant = body["routing"]["variants"][0]
    assert variant["program"]["output_fields"] == ["answer"]
    assert len(variant["program"]["version"]) == 16
    for path in ("/config", "/health", "/costs", "/metrics", "/ready", "/openapi.json"):
        assert test_api_key not in runtime.client.get(path).text, path


def test_input_errors_are_json_4xx(start_runtime, fake_lm):
    runtime = start_runtime(dspy_signature="question, context -> answer")
    cases = [
        ({"inputs": {"question": "q"}}, 422, "missing input field(s): context"),
        ({"inputs": {"question": "q", "context": "c", "extra": 1}}, 422, "unknown input field(s): extra"),
        ({"input": "q"}, 422, "single-input"),
        ({"inputs": {"question": "q", "context": "c"}, "colour": "red"}, 422, "colour"),
        ({}, 422, "exactly one of"),
        ([1, 2], 422, "JSON object"),
        ({"inputs": {"question": "q", "context": "c"}, "variant": "nope"}, 422, "known variants: default"),
    ]
    for body, status, fragment in cases:
        response = runtime.client.post("/v1/predict", json=body)
        assert response.status_code == status, (body, response.text)
        error = response.json()["error"]
        assert error["type"] == "invalid_input"
        assert fragment in error["message"], (fragment, error)
    malformed = runtime.client.post("/v1/predict", content=b'{"input": "unterminated', headers={"content-type": "application/json"})
    assert malformed.status_code == 400
    assert malformed.json()["error"]["type"] == "malformed_json"
    not_utf8 = runtime.client.post("/v1/predict", content=b"\xff\xfe\x00", headers={"content-type": "application/json"})
    assert not_utf8.status_code == 400
    assert fake_lm.calls == 0


def test_http_errors_are_json(start_runtime):
    runtime = start_runtime()
    missing = runtime.client.get("/nope")
    assert missing.status_code == 404
    assert missing.json()["error"]["type"] == "not_found"
    wrong_method = runtime.client.get("/v1/predict")
    assert wrong_method.status_code == 405
    assert wrong_method.json()["error"]["type"] == "method_not_allowed"


def test_oversized_bodies_get_413(start_runtime, fake_lm):
    runtime = start_runtime(max_body_bytes=2048)
    big = {"input": "x" * 4096}
    declared = runtime.predict(big)
    assert declared.status_code == 413
    assert declared.json()["error"]["type"] == "payload_too_large"

    def chunks():  # no Content-Length: the limit counts streamed bytes
        yield b'{"input": "'
        for _ in range(8):
            yield b"y" * 512
        yield b'"}'

    streamed = runtime.client.post("/v1/predict", content=chunks(), headers={"content-type": "application/json"})
    assert streamed.status_code == 413
    assert streamed.json()["error"]["type"] == "payload_too_large"
    assert runtime.predict({"input": "small"}).status_code == 200
    assert fake_lm.calls == 1


def test_typed_outputs_and_multiple_inputs(start_runtime):
    runtime = start_runtime(dspy_signature="question, context: list[str] -> answer, confidence: float")
    response = runtime.predict({"inputs": {"question": "q", "context": ["a", "b"]}})
    assert response.status_code == 200, response.text
    outputs = response.json()["outputs"]
    assert isinstance(outputs["confidence"], float)
    assert response.json()["output"] == outputs["answer"]


def test_concurrent_identical_requests_make_one_lm_call(start_runtime, fake_lm):
    fake_lm.configure(latency_ms=300)  # long enough for all twenty to arrive while the first computes
    runtime = start_runtime()
    import asyncio

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=runtime.url, timeout=60) as client:
            return await asyncio.gather(
                *(client.post("/v1/predict", json={"input": "the same new question"}) for _ in range(20))
            )

    responses = asyncio.run(burst())
    assert [r.status_code for r in responses] == [200] * 20
    assert len({r.json()["output"] for r in responses}) == 1
    assert fake_lm.calls == 1
    computed = [r.json() for r in responses if not r.json()["metadata"]["cached"]]
    assert len(computed) == 1  # the others joined it (or hit the cache) and report no cost
    assert sum(r.json()["metadata"]["cost_usd"] for r in responses) == computed[0]["metadata"]["cost_usd"]


def test_cache_disabled_calls_the_lm_every_time(start_runtime, fake_lm):
    runtime = start_runtime(cache_enabled=False)
    for _ in range(3):
        assert runtime.predict({"input": "no cache"}).json()["metadata"]["cached"] is False
    assert fake_lm.calls == 3
    assert runtime.client.get("/health").json()["components"]["memory"] == "disabled"


def test_log_inputs_is_opt_in(start_runtime, caplog, poll):
    caplog.set_level(logging.INFO, logger="dspy_runtime.access")
    quiet = start_runtime()
    quiet.predict({"input": "private text 1"})
    loud = start_runtime(log_inputs=True)
    loud.predict({"input": "private text 2"})

    def access_fields():
        # The line is written just after the response is sent: wait for both.
        fields = [getattr(r, "fields", {}) for r in caplog.records if r.name == "dspy_runtime.access"]
        return len([f for f in fields if f.get("path") == "/v1/predict"]) == 2 and fields

    fields = poll(access_fields, what="both access log lines")
    assert not any("private text 1" in str(f) for f in fields)
    assert any(f.get("inputs") == {"question": "private text 2"} for f in fields)
