"""The runtime's HTTP server without a network: the head size check and the deadlines of
``BoundedHttpProtocol`` on an in-memory transport, and the settings ``build_server`` passes."""

from __future__ import annotations

import asyncio
import functools

import orjson
import pytest
from uvicorn.server import ServerState

from dspy_runtime.api.middleware import BODY_TIMED_OUT
from dspy_runtime.server import BoundedHttpProtocol, ConnectionLimits, build_server
from dspy_runtime.settings import RuntimeSettings

LIMITS = ConnectionLimits(header_timeout_secs=1.0, body_timeout_secs=2.0, max_header_bytes=1024)


class MemoryTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written = b""
        self.closed = False

    def get_extra_info(self, name, default=None):
        return {"peername": ("127.0.0.1", 5000), "sockname": ("127.0.0.1", 8080)}.get(name, default)

    def write(self, data) -> None:
        self.written += bytes(data)

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def _app(scope, receive, send):  # reads the body, like the predict route
    more = True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        more = message.get("more_body", False)
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok"})


@pytest.fixture
async def connect():
    """``connect()`` -> (a protocol on a fresh in-memory connection, its transport)."""
    config = build_server(_app, RuntimeSettings(routing_path=None, redis_url=None)).config
    config.load()
    loop = asyncio.get_running_loop()

    def open_connection() -> tuple[BoundedHttpProtocol, MemoryTransport]:
        protocol = BoundedHttpProtocol(config=config, server_state=ServerState(), app_state={}, _loop=loop, limits=LIMITS)
        transport = MemoryTransport()
        protocol.connection_made(transport)
        return protocol, transport

    return open_connection


def _status(transport: MemoryTransport) -> tuple[int, dict]:
    head, _, body = transport.written.partition(b"\r\n\r\n")
    return int(head.split()[1]), orjson.loads(body)


async def test_a_head_over_the_limit_is_431_across_reads_and_a_big_body_after_a_small_head_is_not(connect):
    protocol, transport = connect()
    protocol.data_received(b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 600)
    assert not transport.closed
    protocol.data_received(b"a" * 600)  # the head is still not over, and now over the limit
    assert transport.closed and _status(transport) == (431, {"error": {
        "type": "headers_too_large", "message": "the request head is over the limit of 1024 bytes"}})

    protocol, transport = connect()
    body = b"x" * 4000  # in the same read as its head: over the head limit, but it is the body
    protocol.data_received(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4000\r\n\r\n" + body)
    await asyncio.sleep(0)  # the app's task runs
    assert not transport.closed and transport.written.startswith(b"HTTP/1.1 200")


async def test_deadlines_close_idle_and_answer_slow_heads(connect):
    protocol, transport = connect()
    now = asyncio.get_running_loop().time()
    protocol.enforce_deadlines(now + 0.5)
    assert not transport.closed
    protocol.enforce_deadlines(now + 1.5)  # not a byte came: closed without an answer
    assert transport.closed and transport.written == b""

    slow, slow_transport = connect()
    slow.data_received(b"GET /hea")
    slow.enforce_deadlines(asyncio.get_running_loop().time() + 1.5)
    assert slow_transport.closed and _status(slow_transport)[0] == 408


async def test_a_late_body_is_marked_for_the_app_then_closed(connect):
    protocol, transport = connect()
    protocol.data_received(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n{")
    await asyncio.sleep(0)  # the app waits for the rest of the body
    cycle = protocol.cycle
    later = asyncio.get_running_loop().time() + 2.5
    protocol.enforce_deadlines(later)
    assert cycle.scope["state"][BODY_TIMED_OUT] is True and cycle.message_event.is_set()
    assert not transport.closed  # the app answers (408, through the middleware) first
    protocol.enforce_deadlines(later + 1)  # one sweep later, still no answer: closed
    assert transport.closed


def test_build_server_passes_the_connection_settings():
    settings = RuntimeSettings(routing_path=None, redis_url=None, keep_alive_timeout_secs=7, header_timeout_secs=3,
                               body_timeout_secs=4, max_header_bytes=2048, shutdown_timeout_secs=9)
    config = build_server(_app, settings).config
    assert (config.timeout_keep_alive, config.timeout_graceful_shutdown, config.server_header) == (7, 9, False)
    assert isinstance(config.http, functools.partial) and config.http.func is BoundedHttpProtocol
    assert config.http.keywords["limits"] == ConnectionLimits(3, 4, 2048)
