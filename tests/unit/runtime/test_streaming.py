"""The streaming bridge's pure parts: which fields stream, and the sink's order and state."""

from __future__ import annotations

import dspy

from dspy_runtime.streaming import END, Chunk, ChunkSink, streamed_fields


def test_every_output_field_of_the_module_streams_reasoning_included():
    assert streamed_fields(dspy.Predict("question -> answer, score: float")) == ["answer", "score"]
    assert streamed_fields(dspy.ChainOfThought("question -> answer")) == ["reasoning", "answer"]


async def test_the_sink_keeps_order_says_when_it_started_and_ends_after_close():
    sink = ChunkSink()
    assert not sink.started
    sink.put(Chunk("answer", "Par"))
    sink.put(Chunk("answer", "is"))
    assert sink.started
    sink.close()
    assert [await sink.get() for _ in range(3)] == [Chunk("answer", "Par"), Chunk("answer", "is"), END]
