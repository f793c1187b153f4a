"""A prediction's output fields as the LM writes them: DSPy's ``streamify`` with one
``StreamListener`` per output field, into a ``ChunkSink`` the HTTP layer drains.

The LM streams through litellm (``stream=True``; with usage tracking on DSPy asks for
the usage chunk too, so tokens and cost are those of a normal call); DSPy's listeners
cut the field markers of its adapter out of the raw tokens and yield
``StreamResponse(signature_field_name, chunk)``; the final ``Prediction`` is the same
as ``acall`` returns, so the service caches and accounts it like any other.

Listeners hold per-stream state, so each call builds its own (and its own
``streamify`` wrapper, which binds listeners to predictors): a few microseconds on a
path that waits for an LM.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import dspy
from dspy.streaming import StreamListener, StreamResponse


@dataclass(frozen=True, slots=True)
class Chunk:
    """A piece of one output field's text, in the order the LM wrote it."""

    field: str
    text: str


END = None
"""What ``ChunkSink.get`` returns once the sink is closed and drained."""


class ChunkSink:
    """The chunks of one streaming request, written by the LM call, read by the response.

    Unbounded: the writer is the LM call, which must never wait for a slow reader (its
    answer may be shared by single-flight joiners), and what it writes is bounded by
    the LM's ``max_tokens``. ``started`` says a chunk has been written: from then on
    a failure cannot be hidden by a retry or another model, since the client has seen
    part of this answer.
    """

    def __init__(self) -> None:
        self._queue: asyncio.Queue[Chunk | None] = asyncio.Queue()
        self.started = False

    def put(self, chunk: Chunk) -> None:
        self.started = True
        self._queue.put_nowait(chunk)

    def close(self) -> None:
        """No more chunks: the prediction has finished, well or not."""
        self._queue.put_nowait(END)

    async def get(self) -> Chunk | None:
        """The next chunk, or ``END`` after ``close``."""
        return await self._queue.get()


def streamed_fields(module: dspy.Module) -> list[str]:
    """Every output field of the module's predictors (``reasoning`` too, for ChainOfThought)."""
    return [name for _, predictor in module.named_predictors() for name in predictor.signature.output_fields]


async def acall_streaming(module: dspy.Module, kwargs: Mapping[str, Any], sink: ChunkSink) -> dspy.Prediction:
    """``await module.acall(**kwargs)``, writing each field's text to ``sink`` as it arrives.

    Runs under the caller's ``dspy.context`` (LM, usage tracking). The LM's errors
    propagate as ``acall``'s would (``streamify`` unwraps its task group's).
    """
    listeners = [StreamListener(signature_field_name=name) for name in streamed_fields(module)]
    program = dspy.streamify(module, stream_listeners=listeners, is_async_program=True)
    prediction: dspy.Prediction | None = None
    async for value in program(**kwargs):
        if isinstance(value, StreamResponse):
            if value.chunk:
                sink.put(Chunk(value.signature_field_name, value.chunk))
        elif isinstance(value, dspy.Prediction):
            prediction = value
    if prediction is None:  # streamify always ends with the prediction; a change of DSPy would land here
        raise RuntimeError("dspy.streamify ended without a prediction")
    return prediction
