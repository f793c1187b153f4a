"""RequestContextMiddleware at the ASGI level: the body's media type, its deadline, closing
connections whose body was not read, and requests cut off by the server's shutdown."""

from __future__ import annotations

import asyncio
import logging

import orjson
import pytest

from dspy_runtime.api.middleware import BODY_TIMED_OUT, RequestContextMiddleware, is_json_media_type
from dspy_runtime.app import create_app
from dspy_runtime.settings import RuntimeSettings


def _scope(method: str = "POST", path: str = "/", headers=(), state=None) -> dict:
    scope = {"type": "http", "method": method, "path": path, "headers": [(k.encode(), v.encode()) for k, v in headers]}
    if state is not None:
        scope["state"] = state
    return scope


def _receiver(*messages):
    queue = list(messages)

    async def receive():
        return queue.pop(0) if queue else {"type": "http.disconnect"}

    return receive


async def _call(app, scope, receive=None):
    """Runs ``app`` once; returns (status, headers as a dict, body)."""
    sent = []

    async def send(message):
        sent.append(message)

    await app(scope, receive or _receiver({"type": "http.request", "body": b"{}", "more_body": False}), send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], {k.decode(): v.decode() for k, v in start["headers"]}, body


async def _reads_the_body(scope, receive, send):
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


async def _never_reads(scope, receive, send):
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


@pytest.mark.parametrize(
    ("content_type", "accepted"),
    [
        ("application/json", True),
        ("Application/JSON", True),
        ("application/json; charset=utf-8", True),
        ('application/json;charset="UTF-8"', True),
        (None, False),
        ("text/plain", False),  # what a cross-site page can send without a CORS preflight
        ("text/plain; charset=utf-8", False),
        ("application/x-www-form-urlencoded", False),
        ("multipart/form-data; boundary=x", False),
        ("application/json; charset=iso-8859-1", False),
        ("application/json; profile=x", False),
        ("application/jsonp", False),
    ],
)
async def test_a_body_must_be_sent_as_application_json(content_type, accepted):
    assert is_json_media_type(content_type.encode() if content_type else None) is accepted
    called = []

    async def app(scope, receive, send):
        called.append(True)
        await _reads_the_body(scope, receive, send)

    headers = [("content-length", "2")] + ([("content-type", content_type)] if content_type else [])
    status, response_headers, body = await _call(RequestContextMiddleware(app), _scope(headers=headers))
    if accepted:
        assert (status, body, called) == (200, b"ok", [True])
        assert "connection" not in response_headers
    else:
        error = orjson.loads(body)["error"]
        assert status == 415 and error["type"] == "unsupported_media_type" and called == []
        assert "application/json" in error["message"]
        assert response_headers["connection"] == "close"  # the unread body is not waited for


async def test_a_request_without_a_body_needs_no_content_type():
    for headers in ([], [("content-length", "0")]):
        status, response_headers, _ = await _call(RequestContextMiddleware(_never_reads), _scope("GET", headers=headers))
        assert status == 200 and "connection" not in response_headers
    # A chunked body is a body, with or without a length.
    chunked = _scope(headers=[("transfer-encoding", "chunked")])
    assert (await _call(RequestContextMiddleware(_never_reads), chunked))[0] == 415


async def test_a_response_sent_before_the_body_was_read_closes_the_connection():
    json_body = [("content-type", "application/json"), ("content-length", "2")]
    _, unread, _ = await _call(RequestContextMiddleware(_never_reads), _scope(headers=json_body))
    assert unread["connection"] == "close"
    _, read, _ = await _call(RequestContextMiddleware(_reads_the_body), _scope(headers=json_body))
    assert "connection" not in read


async def test_a_body_the_server_marked_late_is_answered_408_by_the_predict_route():
    app = create_app(RuntimeSettings(routing_path=None, redis_url=None))
    scope = _scope(path="/v1/predict", headers=[("content-type", "application/json"), ("transfer-encoding", "chunked")],
                   state={BODY_TIMED_OUT: True})
    scope.update(query_string=b"", root_path="", scheme="http", server=("runtime", 80), client=("client", 1))
    # The server woke the read with what had arrived so far: part of the body, more to come.
    receive = _receiver({"type": "http.request", "body": b'{"input": "sl', "more_body": True})
    async with app.router.lifespan_context(app):
        status, headers, body = await _call(app, scope, receive)
    assert status == 408 and orjson.loads(body)["error"]["type"] == "request_timeout"
    assert headers["connection"] == "close"


async def test_a_request_cancelled_by_the_shutdown_gets_a_json_503_and_one_log_line(caplog):
    entered = asyncio.Event()

    async def slow(scope, receive, send):
        entered.set()
        await asyncio.sleep(3600)  # an LM call longer than SHUTDOWN_TIMEOUT_SECS

    sent = []

    async def send(message):
        sent.append(message)

    caplog.set_level(logging.INFO)
    task = asyncio.create_task(RequestContextMiddleware(slow)(_scope("GET", path="/v1/predict"), _receiver(), send))
    await entered.wait()
    task.cancel()  # what uvicorn does to each request still running when the timeout ends
    await task
    assert not task.cancelled()  # answered, not re-raised into uvicorn (its plain-text 500 and traceback)
    assert sent[0]["status"] == 503
    assert orjson.loads(sent[1]["body"])["error"]["type"] == "shutting_down"
    assert [(r.getMessage(), r.fields["status"], r.fields["error_type"], r.exc_info) for r in caplog.records] == [
        ("request", 503, "shutting_down", None)
    ]
