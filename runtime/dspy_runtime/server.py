"""The HTTP server the runtime runs under: uvicorn, with the bounds it lacks on slow and idle clients.

Uvicorn closes a connection left idle after a response (``timeout_keep_alive``), but puts
no bound on the time to receive a request: a connection that sends nothing, a request head
sent a byte at a time, or a body that never ends is held open for ever, and a few hundred
such sockets exhaust a pod (slowloris). Its httptools parser puts no bound on the size of a
request head either (100 KB of headers were served). ``BoundedHttpProtocol`` is uvicorn's
httptools protocol (the one it picks when httptools is installed) with those bounds:

- a request head (from the connection's start, or from a request's first byte, to the end
  of its headers) must arrive within ``HEADER_TIMEOUT_SECS``: else 408, or nothing when
  not a byte came, and the connection closes;
- it may be at most ``MAX_HEADER_BYTES`` long, checked before each read of it reaches the
  parser: else 431 and the connection closes;
- the body must arrive within ``BODY_TIMEOUT_SECS`` of the head: else the app's next read
  of it raises ``RequestTimeout`` (``api.middleware.BODY_TIMED_OUT``), answered 408 with
  ``Connection: close``, and a request still unfinished at the next sweep is closed;
- unparsable HTTP (a CR in a header, ...) is answered 400 in the runtime's JSON error body
  instead of uvicorn's plain text.

The clock is a sweep, not a timer per request: ``BoundedServer`` checks every connection
once a second from uvicorn's own 0.1 s tick (``on_tick``). A timer armed and cancelled per
request costs 2.4 µs (``asyncio.timeout`` around a read: 6 µs) on a path whose whole
runtime overhead is about 50 µs; the sweep costs a request three ``loop.time()`` reads. A
deadline is therefore enforced within a second after it passes.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from dataclasses import dataclass
from typing import Any

import orjson
import uvicorn
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from .api.middleware import BODY_TIMED_OUT
from .errors import HTTP_ERROR_TYPES, error_body
from .settings import RuntimeSettings

log = logging.getLogger("dspy_runtime.access")

SWEEP_TICKS = 10
"""Uvicorn ticks (0.1 s each) between two sweeps of the connections' deadlines."""


@dataclass(frozen=True)
class ConnectionLimits:
    header_timeout_secs: float
    body_timeout_secs: float
    max_header_bytes: int


class BoundedHttpProtocol(HttpToolsProtocol):
    """One HTTP/1.1 connection, with the deadlines and the head size limit of the module docstring."""

    def __init__(self, *args: Any, limits: ConnectionLimits, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.limits = limits
        self._head_since: float | None = None
        """Waiting for a request head since then (None: a head is not awaited, or it came)."""
        self._head_begun = False
        self._head_bytes = 0
        self._body_since: float | None = None
        """Receiving a body since the end of its head (None: no body is awaited)."""
        self._body_late = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._head_since = self.loop.time()

    def data_received(self, data: bytes) -> None:
        if self._head_since is not None:
            seen = self._head_bytes + len(data)
            limit = self.limits.max_header_bytes
            if seen > limit:
                # Over, unless the head ends in this read and the rest is its body (or the next request).
                end = data.find(b"\r\n\r\n")
                if end < 0 or self._head_bytes + end + 4 > limit:
                    self._refuse(431, f"the request head is over the limit of {limit} bytes")
                    return
            self._head_bytes = seen
        super().data_received(data)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_begun = True
        if self._head_since is None:
            self._head_since = self.loop.time()

    def on_headers_complete(self) -> None:
        self._head_since = None
        self._head_begun = False
        self._head_bytes = 0
        self._body_since = self.loop.time()
        self._body_late = False
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._body_since = None
        super().on_message_complete()

    def send_400_response(self, msg: str) -> None:
        self._refuse(400, "the request is not valid HTTP/1.1")

    def enforce_deadlines(self, now: float) -> None:
        """Close, or answer and close, a connection whose head or body is late (called by the sweep)."""
        if self.transport is None or self.transport.is_closing():
            return
        limits = self.limits
        if self._head_since is not None and now - self._head_since > limits.header_timeout_secs:
            if self._head_begun or self._head_bytes:
                self._refuse(408, f"the request head did not arrive in {limits.header_timeout_secs:g} s")
            else:
                self.transport.close()  # not a byte: nobody to answer (a preconnect, a port scan)
        elif self._body_since is not None and now - self._body_since > limits.body_timeout_secs:
            cycle = self.cycle
            if self._body_late or cycle is None or cycle.response_started:
                self.transport.close()  # told at the last sweep, or already answering: no more waiting
            else:
                # Wake the app's read of the body: it finds the mark and answers 408.
                self._body_late = True
                cycle.scope["state"][BODY_TIMED_OUT] = True
                cycle.message_event.set()

    def _refuse(self, status: int, message: str) -> None:
        """Answer ``status`` in the JSON error body and close: no request reached the app."""
        if self.transport.is_closing():
            return
        body = orjson.dumps(error_body(HTTP_ERROR_TYPES[status], message))
        head = [STATUS_LINE[status]]
        for name, value in self.server_state.default_headers:
            head += [name, b": ", value, b"\r\n"]
        head += [
            b"content-type: application/json\r\ncontent-length: ", str(len(body)).encode(),
            b"\r\nconnection: close\r\n\r\n", body,
        ]  # fmt: skip
        self.transport.write(b"".join(head))
        self.transport.close()
        if status != 400:  # uvicorn logs its own warning for unparsable requests
            client = "%s:%d" % self.client if self.client else None
            log.info("request refused", extra={"fields": {"status": status, "client": client, "reason": message}})


class BoundedServer(uvicorn.Server):
    """Uvicorn's server, sweeping its connections' deadlines once a second."""

    async def on_tick(self, counter: int) -> bool:
        if counter % SWEEP_TICKS == 0:
            now = asyncio.get_running_loop().time()
            for connection in list(self.server_state.connections):
                if isinstance(connection, BoundedHttpProtocol):
                    connection.enforce_deadlines(now)
        return await super().on_tick(counter)


def build_server(app: Any, settings: RuntimeSettings) -> BoundedServer:
    """The server of one runtime pod.

    One worker (Kubernetes scales pods, and the in-process cache and single-flight work
    best in one process), uvloop when installed, uvicorn's access log off (the runtime
    logs one JSON line per request itself), no ``Server`` header.
    """
    limits = ConnectionLimits(settings.header_timeout_secs, settings.body_timeout_secs, settings.max_header_bytes)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        workers=1,
        loop="auto",
        http=functools.partial(BoundedHttpProtocol, limits=limits),  # type: ignore[arg-type]
        lifespan="on",
        access_log=False,
        log_config=None,  # keep the handlers configure_logging installed
        log_level=settings.log_level.lower(),
        server_header=False,
        timeout_keep_alive=settings.keep_alive_timeout_secs,
        timeout_graceful_shutdown=settings.shutdown_timeout_secs,  # type: ignore[arg-type]
    )
    return BoundedServer(config)
