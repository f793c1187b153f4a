"""FastPredict at the ASGI level: what it answers itself and what it hands to FastAPI untouched."""

from __future__ import annotations

from types import SimpleNamespace

import orjson
import pytest
from starlette.requests import ClientDisconnect

from dspy_runtime.api.fastpath import FastPredict, header_of


class Inner:
    """The FastAPI app behind the fast path: records what reached it and the body it read."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, bytes]] = []

    async def __call__(self, scope, receive, send):
        body, more = b"", True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        self.calls.append((scope["method"], scope["path"], body))
        self.after = await receive()  # what the app sees once the body is read: the original receive's
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})


def _scope(runtime, method="POST", path="/v1/predict"):
    return {"type": "http", "method": method, "path": path, "headers": [(b"x-user", b"a"), (b"x-user", b"b")],
            "state": {"request_id": "rid", "log": {}}, "app": SimpleNamespace(state=SimpleNamespace(runtime=runtime))}


def _receiver(*messages):
    queue = list(messages)
    reads = []

    async def receive():
        reads.append(1)
        return queue.pop(0) if queue else {"type": "http.disconnect"}

    receive.reads = reads
    return receive


async def _run(app, scope, receive):
    sent = []

    async def send(message):
        sent.append(message)

    await app(scope, receive, send)
    return sent


READY = SimpleNamespace(ready=True)


@pytest.mark.parametrize(("method", "path"), [("GET", "/v1/predict"), ("POST", "/v1/predict/batch"), ("POST", "/health")])
async def test_other_routes_and_methods_go_to_fastapi_untouched(method, path):
    inner = Inner()
    body = {"type": "http.request", "body": b'{"input": "q"}', "more_body": False}
    sent = await _run(FastPredict(inner), _scope(READY, method, path), _receiver(body))
    assert inner.calls == [(method, path, b'{"input": "q"}')]
    assert sent[0]["status"] == 204


async def test_a_streaming_request_reaches_fastapi_with_its_body_as_if_unread():
    inner = Inner()
    raw = orjson.dumps({"input": "q", "stream": True})
    receive = _receiver({"type": "http.request", "body": raw[:5], "more_body": True},
                        {"type": "http.request", "body": raw[5:], "more_body": False})
    await _run(FastPredict(inner), _scope(READY), receive)
    assert inner.calls == [("POST", "/v1/predict", raw)]
    assert inner.after == {"type": "http.disconnect"}  # then the client's own messages, as before


async def test_not_ready_is_answered_here_before_the_body_is_read():
    inner = Inner()
    receive = _receiver({"type": "http.request", "body": b'{"input": "q"}', "more_body": False})
    sent = await _run(FastPredict(inner), _scope(SimpleNamespace(ready=False)), receive)
    assert inner.calls == [] and receive.reads == []
    assert sent[0]["status"] == 503
    assert orjson.loads(sent[1]["body"])["error"] == {
        "type": "not_ready", "message": "the runtime is starting or stopping", "request_id": "rid"}


@pytest.mark.parametrize(("raw", "status", "error_type"), [
    (b"{nope", 400, "malformed_json"), (b"[]", 422, "invalid_input"), (b'{"input": "q", "x": 1}', 422, "invalid_input"),
])
async def test_a_bad_body_is_the_json_error_of_the_route(raw, status, error_type):
    inner = Inner()
    sent = await _run(FastPredict(inner), _scope(READY), _receiver({"type": "http.request", "body": raw}))
    assert inner.calls == []
    assert sent[0]["status"] == status
    assert orjson.loads(sent[1]["body"])["error"]["type"] == error_type


async def test_a_client_gone_mid_body_is_a_client_disconnect():
    receive = _receiver({"type": "http.request", "body": b'{"inp', "more_body": True})  # then a disconnect
    with pytest.raises(ClientDisconnect):
        await _run(FastPredict(Inner()), _scope(READY), receive)


def test_headers_are_read_like_starlettes_first_of_each_name():
    header = header_of(_scope(READY))
    assert header("x-user") == "a"
    assert header("x-other") is None
