"""POST /v1/predict with "stream": true: server-sent events over real HTTP from a real uvicorn
runtime, with the fake LM streaming its answer through litellm and DSPy's stream listeners."""

from __future__ import annotations

import threading
from typing import Any

import httpx
import orjson

from dspy_runtime.api.response_schemas import ErrorResponse, PredictResponse

Event = tuple[str, Any]
"""(event name, decoded data); the name is "message" for an event without one (the SSE default)."""


def read_events(response: httpx.Response, on_event: Any = None) -> list[Event]:
    """Parse a text/event-stream body as it arrives; ``on_event(event)`` sees each one on arrival."""
    events: list[Event] = []
    name, data = "message", []
    for line in response.iter_lines():
        if line.startswith("event: "):
            name = line.removeprefix("event: ")
        elif line.startswith("data: "):
            data.append(line.removeprefix("data: "))
        elif line == "" and data:
            event = (name, orjson.loads("\n".join(data)))
            events.append(event)
            if on_event is not None:
                on_event(event)
            name, data = "message", []
    return events


def stream(runtime, body: dict[str, Any], on_event: Any = None) -> tuple[httpx.Response, list[Event]]:
    with runtime.client.stream("POST", "/v1/predict", json={**body, "stream": True}) as response:
        if response.headers["content-type"].startswith("application/json"):
            response.read()
            return response, []
        return response, read_events(response, on_event)


def chunks_by_field(events: list[Event]) -> dict[str, str]:
    joined: dict[str, str] = {}
    for name, data in events:
        if name == "chunk":
            joined[data["field"]] = joined.get(data["field"], "") + data["text"]
    return joined


def test_chunks_arrive_in_order_then_the_normal_body(start_runtime, fake_lm):
    fake_lm.configure(stream_chunk_chars=4, stream_chunk_delay_ms=2)
    runtime = start_runtime(dspy_module="ChainOfThought")
    response, events = stream(runtime, {"input": "What is the capital of France?"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    *chunks, (last_name, body) = events
    assert last_name == "message" and len(chunks) > 10
    assert {name for name, _ in chunks} == {"chunk"}
    # Each field's chunks, joined in arrival order, are the field DSPy parsed; reasoning comes first.
    assert chunks_by_field(chunks) == body["outputs"]
    fields = [data["field"] for _, data in chunks]
    assert fields == sorted(fields, key=["reasoning", "answer"].index)
    # The last event is exactly what /v1/predict answers: same shape, tokens, cost and request id.
    PredictResponse.model_validate(body)
    assert body["request_id"] == response.headers["x-request-id"]
    meta = body["metadata"]
    assert (meta["cached"], meta["input_tokens"], meta["output_tokens"]) == (False, 100, 20)
    assert abs(meta["cost_usd"] - 0.14) < 1e-9
    assert fake_lm.calls == 1
    plain = runtime.predict({"input": "What is the capital of France?"}).json()
    assert plain["outputs"] == body["outputs"] and plain["metadata"]["cached"] is True  # and it was cached
    assert set(plain) == set(body) and set(plain["metadata"]) == set(meta)
    assert fake_lm.calls == 1
    metrics = runtime.client.get("/metrics").text
    assert 'dspy_stream_responses_total{result="complete"} 1.0' in metrics
    assert 'dspy_predictions_total{model="openai/fake-model",revision="default",status="ok",variant="default"} 2.0' in metrics


def test_a_cached_answer_streams_the_final_event_alone(start_runtime, fake_lm):
    runtime = start_runtime()
    first = runtime.predict({"input": "asked before"}).json()
    response, events = stream(runtime, {"input": "asked before"})
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
    assert len(events) == 1
    (name, body), = events
    assert name == "message" and body["outputs"] == first["outputs"]
    assert (body["metadata"]["cached"], body["metadata"]["cache_level"]) == (True, "memory")
    assert fake_lm.calls == 1


def test_a_stream_joining_an_identical_computation_gets_its_final_event(start_runtime, fake_lm, poll):
    fake_lm.configure(hold_models=["fake-model"])
    runtime = start_runtime()
    plain: list[httpx.Response] = []
    thread = threading.Thread(target=lambda: plain.append(runtime.predict({"input": "shared"})))
    thread.start()
    poll(lambda: fake_lm.stats()["held"] == 1, what="the first call to reach the LM")
    joined: list[tuple[httpx.Response, list[Event]]] = []
    streamer = threading.Thread(target=lambda: joined.append(stream(runtime, {"input": "shared"})))
    streamer.start()
    poll(lambda: 'dspy_active_predictions 2.0' in runtime.client.get("/metrics").text, what="the stream to join")
    fake_lm.release()
    thread.join(60)
    streamer.join(60)
    (response, events), = joined
    assert [name for name, _ in events] == ["message"]
    assert events[0][1]["metadata"]["cache_level"] == "inflight"
    assert events[0][1]["outputs"] == plain[0].json()["outputs"]
    assert fake_lm.calls == 1


def test_a_failure_mid_stream_ends_with_an_error_event_and_no_retry_or_fallback(start_runtime, fake_lm):
    fake_lm.configure(stream_chunk_chars=4, stream_fail_after_chunks=12)
    runtime = start_runtime(dspy_module="ChainOfThought", lm_fallback_models="openai/fake-fallback", lm_max_retries=2)
    response, events = stream(runtime, {"input": "breaks halfway"})
    assert response.status_code == 200
    *chunks, (last_name, last) = events
    assert chunks and {name for name, _ in chunks} == {"chunk"}
    assert last_name == "error"
    ErrorResponse.model_validate(last)
    assert last["error"]["type"] == "upstream_error" and "openai/fake-model" in last["error"]["message"]
    assert last["error"]["request_id"] == response.headers["x-request-id"]
    # The client had part of an answer: neither a retry nor the fallback model may continue it.
    assert fake_lm.stats()["models"] == {"fake-model": 1}
    metrics = runtime.client.get("/metrics").text
    assert 'dspy_stream_responses_total{result="error"} 1.0' in metrics
    assert 'status="upstream_error"' in metrics
    # Nothing was cached: the next (whole) answer calls the LM again.
    fake_lm.configure(stream_fail_after_chunks=None)
    assert runtime.predict({"input": "breaks halfway"}).json()["metadata"]["cached"] is False


def test_an_lm_that_hangs_mid_stream_ends_with_a_timeout_event(start_runtime, fake_lm):
    fake_lm.configure(stream_chunk_chars=4, stream_fail_after_chunks=10, stream_failure="stall")
    runtime = start_runtime(lm_timeout_secs=2.0, lm_max_retries=2)
    response, events = stream(runtime, {"input": "hangs halfway"})
    assert [name for name, _ in events[:-1]] == ["chunk"] * (len(events) - 1) and len(events) > 1
    name, last = events[-1]
    assert name == "error" and last["error"]["type"] == "upstream_timeout"
    assert fake_lm.calls == 1


def test_a_failure_before_the_first_chunk_falls_back_like_a_normal_call(start_runtime, fake_lm):
    fake_lm.configure(failure_rate=1.0, failing_models=["fake-model"])
    runtime = start_runtime(lm_fallback_models="openai/fake-fallback", lm_max_retries=1)
    response, events = stream(runtime, {"input": "primary is down"})
    assert response.status_code == 200
    *chunks, (name, body) = events
    assert chunks and name == "message"
    assert body["model"] == "openai/fake-fallback"
    assert chunks_by_field(chunks) == body["outputs"]
    assert fake_lm.stats()["models"] == {"fake-model": 2, "fake-fallback": 1}  # one retry, then the fallback


def test_failures_before_any_chunk_are_plain_json_errors(start_runtime, fake_lm):
    fake_lm.configure(failure_rate=1.0)
    runtime = start_runtime(lm_max_retries=1, circuit_breaker_failure_threshold=1)
    response, events = stream(runtime, {"input": "everything is down"})
    assert response.status_code == 502 and events == []
    assert response.headers["content-type"] == "application/json"
    assert response.json()["error"]["type"] == "upstream_error"
    assert fake_lm.calls == 2  # retried, as a normal call is
    # That failure opened the breaker: the same request is now refused before any LM call.
    response, _ = stream(runtime, {"input": "everything is down"})
    assert response.status_code == 503 and response.json()["error"]["type"] == "circuit_open"
    assert "retry-after" in response.headers
    response, _ = stream(runtime, {"inputs": {"nope": 1}})
    assert response.status_code == 422 and "missing input field(s): question" in response.json()["error"]["message"]
    assert fake_lm.calls == 2


def test_two_concurrent_streams_never_mix_chunks(start_runtime, fake_lm, poll):
    # Both calls are held at the LM until both have arrived, then stream side by side, 4
    # characters every 15 ms: their chunks reach the runtime interleaved.
    fake_lm.configure(hold_models=["fake-model"], stream_chunk_chars=4, stream_chunk_delay_ms=15)
    runtime = start_runtime(dspy_module="ChainOfThought")
    arrivals: list[str] = []
    lock = threading.Lock()
    results: dict[str, list[Event]] = {}

    def run(question: str) -> None:
        def arrived(event: Event) -> None:
            with lock:
                arrivals.append(question)

        results[question] = stream(runtime, {"input": question}, arrived)[1]

    questions = ("alpha: why is the sky blue?", "beta: how do magnets work?")
    threads = [threading.Thread(target=run, args=(q,)) for q in questions]
    for thread in threads:
        thread.start()
    poll(lambda: fake_lm.stats()["held"] == 2, what="both calls to reach the LM")
    fake_lm.release()
    for thread in threads:
        thread.join(60)
    for question, other in (questions, questions[::-1]):
        *chunks, (_, body) = results[question]
        assert chunks_by_field(chunks) == body["outputs"]
        assert question in body["outputs"]["reasoning"] and other not in "".join(chunks_by_field(chunks).values())
    # The streams did overlap: the arrival order switches between them more than once.
    switches = sum(1 for a, b in zip(arrivals, arrivals[1:]) if a != b)
    assert switches >= 2, arrivals
