"""The runtime's pure ASGI middleware: request id, body media type, size limit and
deadline, log line, last-resort 500, and a JSON 503 for requests cut off by shutdown.

Pure ASGI rather than ``BaseHTTPMiddleware``: no extra task per request, and the
body limit can count streamed bytes without buffering the body.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
import time
from typing import Any

import orjson
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..errors import PayloadTooLarge, RequestTimeout, ShuttingDown, UnsupportedMediaType, error_body
from ..logs import log_fields, request_id_var

log = logging.getLogger("dspy_runtime.access")

REQUEST_ID_HEADER = "x-request-id"
_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
# Probes and scrapes: logged only when they fail, or they drown the useful lines.
QUIET_PATHS = frozenset({"/health", "/ready", "/metrics"})
CLIENT_CLOSED_REQUEST = 499
"""The status logged for a request whose client disconnected first (nginx's convention)."""
BODY_TIMED_OUT = "dspy_runtime.body_timed_out"
"""Set in ``scope["state"]`` by the HTTP server (``server.py``) when the body is late: the next
read of it raises ``RequestTimeout``. The server keeps the clock, once a second for every
connection, so the hot path pays no timer per request."""
JSON_MEDIA_TYPE = b"application/json"
_CONNECTION_CLOSE = (b"connection", b"close")


def new_request_id() -> str:
    """32 random hex digits, like ``uuid4().hex``.

    From the process's seeded Mersenne Twister rather than ``os.urandom``: an id
    needs to be unique, not unguessable, and this saves a system call per request.
    """
    return f"{random.getrandbits(128):032x}"


def _headers_of_interest(scope: Scope) -> tuple[str | None, str | None, bytes | None, bool]:
    """``X-Request-ID``, ``Content-Length``, ``Content-Type`` and whether a ``Transfer-Encoding``
    is given, from one pass over the request headers."""
    request_id = declared = content_type = None
    encoded = False
    for key, value in scope["headers"]:
        if key == b"x-request-id":
            request_id = value.decode("latin-1")
        elif key == b"content-length":
            declared = value.decode("latin-1")
        elif key == b"content-type":
            content_type = value
        elif key == b"transfer-encoding":
            encoded = True
    return request_id, declared, content_type, encoded


def is_json_media_type(content_type: bytes | None) -> bool:
    """``application/json``, any case, with no parameter but an optional UTF-8 ``charset``
    (RFC 8259: JSON between systems is UTF-8)."""
    if content_type == JSON_MEDIA_TYPE:
        return True  # what nearly every client sends: one comparison
    if content_type is None:
        return False
    media_type, _, parameters = content_type.partition(b";")
    if media_type.strip().lower() != JSON_MEDIA_TYPE:
        return False
    for parameter in filter(None, (p.strip() for p in parameters.split(b";"))):
        name, _, value = parameter.partition(b"=")
        if name.strip().lower() != b"charset" or value.strip().strip(b'"').lower() not in (b"utf-8", b"utf8"):
            return False
    return True


async def send_json_error(send: Send, status: int, error_type: str, message: str, request_id: str | None) -> None:
    body = orjson.dumps(error_body(error_type, message, request_id))
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


class RequestContextMiddleware:
    """The runtime's one ASGI layer around the app, for every HTTP request:

    - an id (``X-Request-ID`` when valid, else generated), echoed in the response header;
      an id with anything but ``[A-Za-z0-9._:-]`` (a CR or LF to forge a header or a log
      line) is never echoed, nor logged: it is replaced;
    - a request with a body must send it as ``application/json`` (``is_json_media_type``),
      else 415 before it is read: a cross-site page can send ``text/plain`` without a CORS
      preflight, and would otherwise spend the user's LM budget;
    - the body size limit: bodies over ``max_body_bytes`` are refused with 413 without
      being read whole. A declared ``Content-Length`` over the limit is refused before
      reading anything; a chunked or lying body is counted as it streams, and the read
      that crosses the limit raises ``PayloadTooLarge`` into the app (the predict route
      reads the body itself, so the app's error handler answers 413; one that escapes
      is answered 413 here). Nothing past the limit is buffered;
    - the body deadline: a read after the server marked the body late (``BODY_TIMED_OUT``)
      raises ``RequestTimeout`` into the app, answered 408 like the 413;
    - any response sent before the body was read in full says ``Connection: close``, so
      the server drops the connection instead of reading (or waiting for) the rest;
    - one log line per request with what the route added to ``scope["state"]["log"]``;
    - an unhandled exception becomes a generic JSON 500 (logged with its traceback and
      the request id, never sent to the client);
    - a request the server cancels at the end of ``SHUTDOWN_TIMEOUT_SECS`` is answered a
      JSON 503 ``shutting_down`` and logged in its one line, without a traceback.

    One layer rather than one per concern: each pure ASGI layer costs a call and a
    wrapped ``send`` per request, and all of these need the same request id and
    response status.
    """

    def __init__(self, app: ASGIApp, max_body_bytes: int | None = None) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        supplied, declared, content_type, encoded = _headers_of_interest(scope)
        request_id = supplied if supplied and _VALID_REQUEST_ID.match(supplied) else new_request_id()
        state: dict[str, Any] = scope.setdefault("state", {})
        state["request_id"] = request_id
        fields: dict[str, Any] = {}
        state["log"] = fields
        token = request_id_var.set(request_id)
        started = time.perf_counter()
        # "body_done": no body (no Transfer-Encoding, a Content-Length of 0 or none), or the
        # app has read all of it (see _guarded).
        no_body = not encoded and (declared is None or not declared.strip().lstrip("0"))
        response: dict[str, Any] = {"status": 500, "started": False, "body_done": no_body}

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                response["started"] = True
                response["status"] = message["status"]
                # The route may have replaced the id with the body's request_id. Appended
                # to a new list: no response of the app sets this header itself, and the
                # message's list may belong to a reused Response.
                headers = [*message.get("headers", ()), (b"x-request-id", state["request_id"].encode())]
                if not response["body_done"]:
                    headers.append(_CONNECTION_CLOSE)
                message["headers"] = headers
            await send(message)

        try:
            refusal = self._refuse_declared_length(declared)
            if refusal is None and not response["body_done"] and not is_json_media_type(content_type):
                refusal = 415, UnsupportedMediaType.error_type, _not_json(content_type)
            if refusal is not None:
                await send_json_error(send_with_id, *refusal, request_id)
            else:
                await self.app(scope, self._guarded(receive, state, response), send_with_id)
        except ClientDisconnect:
            # The client left before its body arrived (it timed out, or a load test
            # ended): nobody to answer, and no server error. Logged as nginx's 499,
            # without a traceback, which under overload would only add to the load.
            response["status"] = CLIENT_CLOSED_REQUEST
        except (PayloadTooLarge, RequestTimeout) as exc:
            # An app that let it escape (the predict route answers it itself).
            if response["started"]:
                raise
            await send_json_error(send_with_id, exc.status_code, exc.error_type, exc.message, state["request_id"])
        except asyncio.CancelledError:
            # Only the server cancels a request task: uvicorn, when SHUTDOWN_TIMEOUT_SECS ran out
            # with this request still running. Answered here instead of re-raised, which would
            # make uvicorn log a CancelledError traceback and send a plain-text 500; the task
            # then ends as the server asked. A response already started cannot change: the
            # connection is closed unfinished, which the client sees as a cut-off response.
            # (Uvicorn marked the connection not to be kept alive when the shutdown began.)
            fields["error_type"] = ShuttingDown.error_type
            if not response["started"]:
                message = "the server stopped before this request finished; retry it"
                await send_json_error(send_with_id, 503, ShuttingDown.error_type, message, state["request_id"])
        except Exception:
            log.exception("unhandled error", extra={"fields": {"request_id": state["request_id"]}})
            if response["started"]:
                raise
            await send_json_error(
                send_with_id, 500, "internal_error", "internal error; see the logs for this request id", state["request_id"]
            )
        finally:
            status = response["status"]
            path = scope.get("path", "")
            if path not in QUIET_PATHS or status >= 500:
                line = {
                    "request_id": state["request_id"],
                    "method": scope.get("method"),
                    "path": path,
                    "status": status,
                    "duration_ms": round((time.perf_counter() - started) * 1000, 3),
                    **fields,
                }
                log_fields(log, logging.WARNING if status >= 500 else logging.INFO, "request", line)
            request_id_var.reset(token)

    def _refuse_declared_length(self, declared: str | None) -> tuple[int, str, str] | None:
        """(status, error type, message) when the declared ``Content-Length`` is unusable or over the limit."""
        if declared is None:
            return None
        if not declared.strip().isdigit():
            return 400, "bad_request", "invalid Content-Length"
        if self.max_body_bytes is not None and int(declared) > self.max_body_bytes:
            return 413, "payload_too_large", self._too_large()
        return None

    def _guarded(self, receive: Receive, state: dict[str, Any], response: dict[str, Any]) -> Receive:
        """``receive`` that raises ``PayloadTooLarge`` once the body crosses the limit and
        ``RequestTimeout`` once the server marked it late, and notes when it is all read."""
        limit = self.max_body_bytes
        received = 0

        async def guarded_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if limit is not None and received > limit:
                    raise PayloadTooLarge(self._too_large())
                if not message.get("more_body", False):
                    response["body_done"] = True
                elif state.get(BODY_TIMED_OUT):
                    raise RequestTimeout("the request body did not arrive in time")
            return message

        return guarded_receive

    def _too_large(self) -> str:
        return f"request body over the limit of {self.max_body_bytes} bytes"


def _not_json(content_type: bytes | None) -> str:
    given = content_type.decode("latin-1")[:100] if content_type is not None else "none"
    return f"the request body must be sent as Content-Type: application/json (given: {given})"
