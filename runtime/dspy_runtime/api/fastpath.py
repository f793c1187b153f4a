"""``POST /v1/predict`` in front of FastAPI: the hot route without the framework's per-request layers.

FastAPI's way to an endpoint (its exception middleware, the exit stack, the router's
match, ``request_response`` with its ``Request`` and ``Response`` objects) was about a
quarter of the CPU a cached prediction cost in-process (22 of 88 µs), about as much as the
runtime's own work on a hit.
``FastPredict`` sits right inside ``RequestContextMiddleware`` (which keeps doing, for
this route as for every other, the request id, the 415, the body's size limit and
deadline, the log line, the last-resort 500 and the shutdown 503) and answers a
non-streaming ``POST /v1/predict`` itself, hit or miss, through the very steps the
FastAPI route runs (``predict.read_body`` and ``predict.respond``): there is one list of
per-request checks, and a check added there holds on both ways in.

What it does differently is only how bytes are moved: the body is read straight from
``receive``, the answer is encoded once and sent as two ASGI messages with the headers
a ``JSON`` response has (``Content-Length``, ``Content-Type``), and a ``ServiceError`` is
answered by ``responses.error_response``, as the app's exception handler answers it.

Everything else goes to the FastAPI app unchanged: other paths and methods, and
``"stream": true`` (its body, already read, is handed on as if unread), so the route's
streaming response, OpenAPI and 405 stay FastAPI's.
"""

from __future__ import annotations

from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..errors import ServiceError
from . import predict
from .deps import running
from .responses import JSON, encode, error_response

PATH = "/v1/predict"
_CONTENT_TYPE = (b"content-type", JSON.media_type.encode())


async def read_all(receive: Receive) -> bytes:
    """The whole request body, as ``Request.body`` reads it (``ClientDisconnect`` when the client left)."""
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def replay(body: bytes, receive: Receive) -> Receive:
    """``receive`` for an app that reads ``body`` again: it first, then what ``receive`` says."""
    pending = [{"type": "http.request", "body": body, "more_body": False}]

    async def replayed() -> Message:
        return pending.pop() if pending else await receive()

    return replayed


def header_of(scope: Scope) -> predict.Header:
    """Request headers by lower-case name, the first of each, as Starlette's ``Headers.get``."""

    def header(name: str) -> str | None:
        wanted = name.encode("latin-1")
        for key, value in scope["headers"]:
            if key == wanted:
                return value.decode("latin-1")  # type: ignore[no-any-return]
        return None

    return header


class FastPredict:
    """The ASGI layer of the module docstring."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != PATH or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        state = scope["state"]
        try:
            runtime = running(scope["app"])  # before the body, as the route: a 503 reads nothing
            raw = await read_all(receive)
            body = predict.read_body(raw)
            if body.stream:
                await self.app(scope, replay(raw, receive), send)
                return
            answer = encode(await predict.respond(runtime, body, header_of(scope), state))
        except ServiceError as exc:
            await error_response(exc, state.get("request_id"))(scope, receive, send)
            return
        await send({"type": "http.response.start", "status": 200,
                    "headers": ((b"content-length", str(len(answer)).encode()), _CONTENT_TYPE)})
        await send({"type": "http.response.body", "body": answer})
