"""The fake LM answers in the format DSPy's adapters parse, deterministically."""

from __future__ import annotations

import json

import dspy
import httpx
import pytest

from dspy_runtime.fakelm import FakeLM, FakeLMConfig, StreamBroken, field_value, output_fields, question_text


def _messages(signature: str, module=dspy.Predict, **inputs):
    adapter = dspy.ChatAdapter()
    predictor = module(signature)
    sig = predictor.predict.signature if isinstance(predictor, dspy.ChainOfThought) else predictor.signature
    return sig, adapter, adapter.format(sig, demos=[], inputs=inputs)


@pytest.mark.parametrize(
    ("signature", "module", "expected"),
    [
        ("question -> answer", dspy.Predict, [("answer", "str")]),
        ("question -> answer", dspy.ChainOfThought, [("reasoning", "str"), ("answer", "str")]),
        ("question, context -> answer, score: float, ok: bool", dspy.Predict, [("answer", "str"), ("score", "float"), ("ok", "bool")]),
    ],
)
def test_output_fields_are_read_from_the_prompt(signature, module, expected):
    inputs = {"question": "q"} | ({"context": "c"} if "context" in signature else {})
    _, _, messages = _messages(signature, module, **inputs)
    assert output_fields(messages) == expected


def test_answers_parse_with_dspy_and_are_deterministic():
    sig, adapter, messages = _messages("question -> answer, score: int, tags: list[str]", question="Why?")
    assert question_text(messages) == "Why?"
    values = {name: field_value(name, kind, question_text(messages)) for name, kind in output_fields(messages)}
    text = "\n\n".join(f"[[ ## {k} ## ]]\n{v}" for k, v in values.items()) + "\n\n[[ ## completed ## ]]"
    parsed = adapter.parse(sig, text.replace("'", '"'))
    assert isinstance(parsed["score"], int) and isinstance(parsed["tags"], list)
    assert field_value("answer", "str", "Why?") == field_value("answer", "str", "Why?")
    assert field_value("answer", "str", "Why?") != field_value("answer", "str", "Why not?")


async def test_http_endpoints_count_fail_and_reset():
    fake = FakeLM(FakeLMConfig(prompt_tokens=7, completion_tokens=3))
    _, _, messages = _messages("question -> answer", question="hi")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=fake.app()), base_url="http://fake") as client:
        ok = await client.post("/v1/chat/completions", json={"model": "m", "messages": messages})
        assert ok.status_code == 200
        body = ok.json()
        assert body["usage"] == {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}
        assert body["choices"][0]["message"]["content"].endswith("[[ ## completed ## ]]")
        json_mode = await client.post("/chat/completions", json={"model": "m", "messages": messages, "response_format": {"type": "json_object"}})
        assert set(json.loads(json_mode.json()["choices"][0]["message"]["content"])) == {"answer"}
        await client.post("/admin/config", json={"failure_rate": 1.0, "failure_status": 503, "failing_models": ["m"]})
        assert (await client.post("/v1/chat/completions", json={"model": "m", "messages": messages})).status_code == 503
        assert (await client.post("/v1/chat/completions", json={"model": "other", "messages": messages})).status_code == 200
        stats = (await client.get("/stats")).json()
        assert (stats["calls"], stats["failures"], stats["models"]) == (4, 1, {"m": 3, "other": 1})
        assert (await client.post("/admin/config", json={"nonsense": 1})).status_code == 400
        await client.post("/admin/reset")
        stats = (await client.get("/stats")).json()
        assert stats["calls"] == 0 and stats["config"]["failure_rate"] == 0.0
        assert (await client.post("/v1/chat/completions", content=b"nope")).status_code == 400


def _sse_chunks(text: str) -> list[dict]:
    events = [line.removeprefix("data: ") for line in text.split("\n\n") if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    return [json.loads(event) for event in events[:-1]]


async def test_a_streamed_answer_is_the_same_content_in_openai_chunks():
    fake = FakeLM(FakeLMConfig(prompt_tokens=7, completion_tokens=3, stream_chunk_chars=5))
    _, _, messages = _messages("question -> answer", question="hi")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=fake.app()), base_url="http://fake") as client:
        whole = (await client.post("/v1/chat/completions", json={"model": "m", "messages": messages})).json()
        streamed = await client.post(
            "/v1/chat/completions",
            json={"model": "m", "messages": messages, "stream": True, "stream_options": {"include_usage": True}},
        )
        assert streamed.headers["content-type"].startswith("text/event-stream")
        chunks = _sse_chunks(streamed.text)
        assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
        content = [c["choices"][0]["delta"].get("content") for c in chunks if c["choices"]]
        assert all(len(piece) <= 5 for piece in content if piece)
        assert "".join(piece or "" for piece in content) == whole["choices"][0]["message"]["content"]
        assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
        assert chunks[-1]["usage"] == whole["usage"] and chunks[-1]["choices"] == []
        # Without include_usage there is no usage chunk (as OpenAI does).
        plain = await client.post("/v1/chat/completions", json={"model": "m", "messages": messages, "stream": True})
        assert all("usage" not in c for c in _sse_chunks(plain.text))


async def test_a_stream_can_be_made_to_break_after_some_chunks():
    # httpx's ASGI transport reads the whole body, so the break shows as the app's exception here;
    # over HTTP it is a dropped connection (tests/integration/test_stream_api.py).
    fake = FakeLM(FakeLMConfig(stream_chunk_chars=5, stream_fail_after_chunks=2))
    _, _, messages = _messages("question -> answer", question="hi")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=fake.app()), base_url="http://fake") as client:
        body = {"model": "m", "messages": messages, "stream": True}
        with pytest.raises(StreamBroken, match="broke the stream after 2 chunks"):
            await client.post("/v1/chat/completions", json=body)
    assert fake.stats.failures == 1
