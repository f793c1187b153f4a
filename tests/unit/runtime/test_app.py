"""The app without a network: readiness before startup, middleware, error bodies, log format."""

from __future__ import annotations

import io
import json
import logging

import httpx
import pytest
from starlette.requests import Request

from dspy_runtime.api.middleware import RequestContextMiddleware
from dspy_runtime.api.schemas import EVERY_REQUEST
from dspy_runtime.app import StartupError, build_runtime, create_app
from dspy_runtime.logs import configure_logging, request_id_var
from dspy_runtime.settings import RuntimeSettings


JSON_HEADERS = {"content-type": "application/json"}


def _client(app, headers=None) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://runtime", headers=headers)


async def test_not_ready_before_the_lifespan_ran():
    app = create_app(RuntimeSettings(routing_path=None))
    async with _client(app) as client:
        ready = await client.get("/ready")
        assert ready.status_code == 503
        assert ready.json()["error"]["type"] == "not_ready"
        assert (await client.get("/health")).json()["status"] == "starting"
        predict = await client.post("/v1/predict", json={"input": "q"})
        assert predict.status_code == 503


async def test_ready_after_startup_and_not_while_stopping():
    app = create_app(RuntimeSettings(routing_path=None, redis_url=None))
    async with app.router.lifespan_context(app), _client(app) as client:
        assert (await client.get("/ready")).status_code == 200
        app.state.runtime.ready = False  # what the lifespan does first on shutdown
        assert (await client.get("/ready")).status_code == 503
        assert (await client.get("/health")).status_code == 200


def test_startup_errors_name_the_problem(tmp_path):
    with pytest.raises(StartupError, match="unknown DSPy module"):
        build_runtime(RuntimeSettings(routing_path=None, lm_fallback_models="openai/x").model_copy(update={"dspy_module": "Nope"}))
    with pytest.raises(StartupError, match="cannot read ROUTING_PATH"):
        build_runtime(RuntimeSettings(routing_path=tmp_path / "nope.json"))


async def _echo_app(scope, receive, send):
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    if scope["path"] == "/boom":
        raise RuntimeError("secret internals")
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": str(len(body)).encode()})


async def test_body_limit_counts_streamed_bytes_and_request_context_answers_json():
    app = RequestContextMiddleware(_echo_app, max_body_bytes=10)
    async with _client(app, JSON_HEADERS) as client:
        assert (await client.post("/", content=b"12345")).text == "5"
        declared = await client.post("/", content=b"x" * 11)
        assert declared.status_code == 413 and declared.json()["error"]["type"] == "payload_too_large"

        async def stream():
            for _ in range(4):
                yield b"xxxx"

        streamed = await client.post("/", content=stream())  # no Content-Length: counted as it streams
        assert streamed.status_code == 413 and streamed.json()["error"]["type"] == "payload_too_large"
        boom = await client.post("/boom", content=b"")
        assert boom.status_code == 500
        assert boom.json()["error"] == {
            "type": "internal_error",
            "message": "internal error; see the logs for this request id",
            "request_id": boom.headers["x-request-id"],
        }
        assert "secret internals" not in boom.text


async def test_a_client_that_left_is_logged_as_499_without_a_response(caplog):
    async def leaves_early(scope, receive, send):
        await Request(scope, receive).body()  # the server reports the disconnect

    async def disconnected():
        return {"type": "http.disconnect"}

    sent = []

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/v1/predict", "headers": []}
    caplog.set_level(logging.INFO, logger="dspy_runtime.access")
    await RequestContextMiddleware(leaves_early)(scope, disconnected, send)
    assert sent == []
    records = [r for r in caplog.records if r.name == "dspy_runtime.access"]
    assert [(r.getMessage(), r.fields["status"], r.exc_info) for r in records] == [("request", 499, None)]


def test_json_log_lines_carry_fields_and_request_id_and_redact_secrets(monkeypatch):
    stream = io.StringIO()
    monkeypatch.setattr("sys.stderr", stream)
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    try:
        configure_logging("INFO", "json", ["sk-super-secret-key"])
        token = request_id_var.set("req-1")
        logging.getLogger("test").info("calling with sk-super-secret-key", extra={"fields": {"variant": "a"}})
        request_id_var.reset(token)
    finally:
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)
    line = json.loads(stream.getvalue().strip().splitlines()[-1])
    assert line["message"] == "calling with ***"
    assert line["request_id"] == "req-1" and line["variant"] == "a" and line["level"] == "info"


def test_openapi_documents_the_predict_body():
    schema = create_app(RuntimeSettings(routing_path=None)).openapi()
    operation = schema["paths"]["/v1/predict"]["post"]
    body_schema = operation["requestBody"]["content"]["application/json"]["schema"]
    assert {"inputs", "input", "request_id", "variant", "use_cache"} <= set(body_schema["properties"])


def test_openapi_documents_the_stream_and_the_batch():
    schema = create_app(RuntimeSettings(routing_path=None)).openapi()
    components = schema["components"]["schemas"]
    predict = schema["paths"]["/v1/predict"]["post"]
    assert "stream" in predict["requestBody"]["content"]["application/json"]["schema"]["properties"]
    answers = predict["responses"]["200"]["content"]
    assert answers["application/json"]["schema"] == {"$ref": "#/components/schemas/PredictResponse"}
    assert "text/event-stream" in answers
    batch = schema["paths"]["/v1/predict/batch"]["post"]
    body = batch["requestBody"]["content"]["application/json"]["schema"]
    assert body["required"] == ["items"] and body["properties"]["items"]["minItems"] == 1
    assert body["properties"]["items"]["items"]["anyOf"][0]["title"] == "PredictRequest"
    assert batch["responses"]["200"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/BatchResponse"}
    results = components["BatchResponse"]["properties"]["results"]["items"]["anyOf"]
    assert results == [{"$ref": "#/components/schemas/PredictResponse"}, {"$ref": "#/components/schemas/ErrorResponse"}]
    assert {"PredictMetadata", "ErrorDetail"} <= set(components)


def test_openapi_documents_every_response_body_and_error_status():
    schema = create_app(RuntimeSettings(routing_path=None)).openapi()
    error = {"$ref": "#/components/schemas/ErrorResponse"}
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            responses = operation["responses"]
            ok = responses["200"]["content"]
            # Not FastAPI's {"type": "string"} for a response class it does not know as JSON.
            assert ok == {"text/plain": {"schema": {"type": "string"}}} if path == "/metrics" else (
                ok["application/json"]["schema"]["$ref"].startswith("#/components/schemas/")), (path, ok)
            for status in EVERY_REQUEST:
                assert responses[str(status)]["content"] == {"application/json": {"schema": error}}, (path, status)
    predict = schema["paths"]["/v1/predict"]["post"]["responses"]
    assert sorted(map(int, predict)) == [200, 400, 403, 408, 413, 415, 422, 429, 431, 500, 502, 503, 504]
    assert set(schema["components"]["schemas"]["PredictResponse"]["required"]) == {
        "request_id", "model", "revision", "variant", "outputs", "output", "metadata",
    }


def test_openapi_documents_the_cache_invalidation_scope_and_its_token():
    schema = create_app(RuntimeSettings(routing_path=None)).openapi()
    operation = schema["paths"]["/v1/cache"]["delete"]
    assert {p["name"] for p in operation["parameters"] if p["in"] == "query"} == {"variant", "revision"}
    body = operation["requestBody"]["content"]["application/json"]["schema"]
    assert operation["requestBody"]["required"] is False
    assert set(body["properties"]) == {"revision", "variant", "inputs", "input"}
    assert {name for requirement in operation["security"] for name in requirement} == {"HTTPBearer", "APIKeyHeader"}
    assert schema["components"]["securitySchemes"]["APIKeyHeader"]["name"] == "X-Cache-Admin-Token"
    assert {"401", "403", "404", "422", "503"} <= set(operation["responses"])
