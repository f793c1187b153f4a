"""``POST /v1/predict`` with ``"stream": true``: the answer as ``text/event-stream``.

The events, in order::

    event: chunk
    data: {"field": "reasoning", "text": "Let's think"}     as the LM writes each output field

    data: {<exactly the body POST /v1/predict answers>}      last, when the prediction succeeded

    event: error
    data: {"error": {"type", "message", "request_id"}}       last instead, when it failed after a chunk

The response starts at the first chunk, not before: until then a failure (rate limit,
bad input, budget, every model down, breaker open) is answered like any
``/v1/predict`` failure, a JSON error with its status and ``Retry-After``, and an LM
failure still goes through retries and the fallback chain (``service.py``). Once a
chunk is out, a failure ends the stream with the ``error`` event: never a stream that
just stops. An answer from the cache (or from another request's identical
computation it joined) has no chunks: its stream is the final event alone, at once.

The response is an ASGI callable of its own rather than a ``StreamingResponse``: the
prediction runs as a task this callable awaits to the end, so it finishes, is counted
and is cached whether the client stays or not (as a plain ``/v1/predict`` does when
its client leaves; uvicorn drops writes to a closed connection), and the task is
never left behind without an owner. Only when the server cancels the response is the
prediction cancelled with it.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import orjson
from fastapi.sse import format_sse_event
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from ..errors import ServiceError, error_body
from ..metrics import STREAM_COMPLETE, STREAM_ERROR, Metrics
from ..service import PredictCall, PredictionResult, PredictionService
from ..state import Runtime
from ..streaming import END, Chunk, ChunkSink

log = logging.getLogger(__name__)

MEDIA_TYPE = "text/event-stream"


def chunk_event(chunk: Chunk) -> bytes:
    return format_sse_event(event="chunk", data_str=orjson.dumps({"field": chunk.field, "text": chunk.text}).decode())


def final_event(result: PredictionResult) -> bytes:
    return format_sse_event(data_str=orjson.dumps(result.body(), default=str).decode())


def error_event(error_type: str, message: str, request_id: str) -> bytes:
    return format_sse_event(event="error", data_str=orjson.dumps(error_body(error_type, message, request_id)).decode())


class PredictionStream(Response):
    """One streaming prediction, run when Starlette sends the response (see the module docstring)."""

    media_type = MEDIA_TYPE

    def __init__(self, service: PredictionService, metrics: Metrics, call: PredictCall) -> None:
        # Not Response.__init__: it would render an empty body and declare Content-Length: 0.
        self.status_code = 200
        self.background = None
        self.init_headers({"cache-control": "no-cache", "x-accel-buffering": "no"})
        self._service = service
        self._metrics = metrics
        self._call = call

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        sink = ChunkSink()
        call = self._call
        call.stream = sink
        task = asyncio.create_task(self._service.predict(call))
        task.add_done_callback(lambda _: sink.close())
        try:
            chunk = await sink.get()
            if chunk is END:
                result = await task  # an error here is still a plain JSON error: nothing was sent
                await self._start(send)
                await self._finish(send, final_event(result), STREAM_COMPLETE)
                return
            await self._start(send)
            while chunk is not END:
                await send({"type": "http.response.body", "body": chunk_event(chunk), "more_body": True})
                chunk = await sink.get()
            await self._finish(send, *self._last_event(task, call.request_id))
        finally:
            if not task.done():  # the server cancelled this response (shutdown): the prediction goes with it
                task.cancel()

    @staticmethod
    def _last_event(task: asyncio.Task[PredictionResult], request_id: str) -> tuple[bytes, str]:
        """The event that ends a stream whose chunks are all sent (the task is done)."""
        exc = task.exception()
        if exc is None:
            return final_event(task.result()), STREAM_COMPLETE
        if isinstance(exc, ServiceError):
            return error_event(exc.error_type, exc.message, request_id), STREAM_ERROR
        log.error("unhandled error in a streaming prediction", exc_info=exc, extra={"fields": {"request_id": request_id}})
        return error_event("internal_error", "internal error; see the logs for this request id", request_id), STREAM_ERROR

    async def _start(self, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})

    async def _finish(self, send: Send, event: bytes, result: str) -> None:
        await send({"type": "http.response.body", "body": event, "more_body": False})
        self._metrics.bound(self._metrics.stream_responses_total, result).inc()


def respond(runtime: Runtime, call: PredictCall) -> Response:
    """The streaming answer to ``call``; the prediction starts when the response is sent."""
    return PredictionStream(runtime.service, runtime.metrics, call)


def openapi_content() -> dict[str, Any]:
    """The ``text/event-stream`` entry of ``/v1/predict``'s 200 response in the OpenAPI document."""
    return {
        MEDIA_TYPE: {
            "schema": {"type": "string"},
            "example": 'event: chunk\ndata: {"field": "answer", "text": "Par"}\n\n'
            'data: {"request_id": "...", "outputs": {"answer": "Paris"}, "metadata": {...}}\n\n',
        }
    }
