"""A small OpenAI-compatible LM server for tests, benchmarks and the demo.

``python -m dspy_runtime.fakelm --port 8999 --latency-ms 20 --failure-rate 0.1``

It answers ``POST /v1/chat/completions`` (and ``/chat/completions``) in the format
DSPy's ``ChatAdapter`` asks for: one ``[[ ## field ## ]]`` section per output field
named in the prompt (``reasoning`` included for ChainOfThought), then
``[[ ## completed ## ]]``, so DSPy's real formatting, HTTP and parsing code runs.
When the request asks for a JSON response (``response_format``, DSPy's JSONAdapter)
it answers a JSON object with the same fields instead. Answers are deterministic:
the same question always gets the same answer.

Knobs (command line, or at runtime through ``POST /admin/config``):
latency, failure rate and failure status (5xx or 429), the models that fail
(all when empty), and the token usage reported (estimated from text length when
not set). ``GET /stats`` counts calls; ``POST /admin/reset`` zeroes the counters.
For tests that need more than a fixed latency: ``scripted`` answers (model ->
question -> {field: value}, over the derived ones) and ``hold_models``, whose calls
are received and counted, then wait (``held`` in the stats) until ``POST
/admin/release`` or a reset lets them answer.

A request with ``"stream": true`` is answered the way OpenAI streams (what litellm
parses): ``text/event-stream`` of ``chat.completion.chunk`` events, the content cut
into ``stream_chunk_chars`` pieces ``stream_chunk_delay_ms`` apart, a usage chunk
when ``stream_options.include_usage`` asks for one, then ``data: [DONE]``. With
``stream_fail_after_chunks`` set, the stream breaks after that many content chunks:
by ``stream_failure`` ``drop`` the connection is closed, as when a provider dies
mid-answer (litellm sees an incomplete response); ``stall`` stops sending and waits
like a held call (counted in ``held``) until a release or a reset, as a provider
that hangs mid-answer.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import re
import time
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import orjson
import xxhash
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

# "Respond with the corresponding output fields, starting with the field `[[ ## reasoning ## ]]`,
#  then `[[ ## answer ## ]]` (must be formatted as a valid Python int), and then ending with ..."
_REQUIREMENT_FIELD = re.compile(r"`\[\[ ## (\w+) ## \]\]`(?: \(must be formatted as a valid Python ([\w\[\], .|]+)\))?")
# System message: "Your output fields are:\n1. `answer` (int): ..."
_DESCRIBED_FIELD = re.compile(r"^\d+\. `(\w+)` \(([^)]*)\)", re.MULTILINE)
_INPUT_SECTION = re.compile(r"\[\[ ## (\w+) ## \]\]\n(.*?)(?=\n\n\[\[ ## |\n\nRespond with|\Z)", re.DOTALL)


@dataclass
class FakeLMConfig:
    latency_ms: float = 0.0
    failure_rate: float = 0.0
    failure_status: int = 500
    failing_models: list[str] = field(default_factory=list)  # empty: every model may fail
    prompt_tokens: int | None = None  # None: estimated from the prompt's length
    completion_tokens: int | None = None
    scripted: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    """model -> question text -> {output field: value}: these answers instead of the derived ones."""
    hold_models: list[str] = field(default_factory=list)
    """Calls for these models wait for ``POST /admin/release`` (at most HOLD_LIMIT_SECS)."""
    stream_chunk_chars: int = 8
    stream_chunk_delay_ms: float = 0.0
    stream_fail_after_chunks: int | None = None
    stream_failure: Literal["drop", "stall"] = "drop"


HOLD_LIMIT_SECS = 300.0
"""A held call answers after this long anyway: a test that forgot to release leaks nothing."""


@dataclass
class FakeLMStats:
    calls: int = 0
    failures: int = 0
    models: dict[str, int] = field(default_factory=dict)
    held: int = 0
    """Calls received and waiting for a release right now."""
    max_tokens: dict[str, int] = field(default_factory=dict)
    """Each model's last ``max_completion_tokens`` (or ``max_tokens``); absent when a request had none."""


class StreamBroken(Exception):
    """Raised inside a streamed answer to drop the connection (``stream_fail_after_chunks``)."""


def _json(body: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


def _message_text(message: dict[str, Any]) -> str:
    content = message.get("content") or ""
    if isinstance(content, list):  # content parts
        return "\n".join(part.get("text", "") for part in content if isinstance(part, dict))
    return str(content)


def output_fields(messages: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """The (name, type) of each output field the prompt asks for, in order."""
    users = [_message_text(m) for m in messages if m.get("role") == "user"]
    last_user = users[-1] if users else ""
    marker = last_user.rfind("Respond with the corresponding output fields")
    if marker >= 0:
        fields = [(name, kind or "str") for name, kind in _REQUIREMENT_FIELD.findall(last_user[marker:])]
        return [(name, kind) for name, kind in fields if name != "completed"]
    system = "\n".join(_message_text(m) for m in messages if m.get("role") == "system")
    _, _, outputs = system.partition("Your output fields are:")
    found = _DESCRIBED_FIELD.findall(outputs.split("\n\n")[0]) if outputs else []
    return found or [("answer", "str")]


def question_text(messages: list[dict[str, Any]]) -> str:
    """The input values of the last user message, joined: what the answer derives from."""
    users = [_message_text(m) for m in messages if m.get("role") == "user"]
    last_user = users[-1] if users else ""
    sections = _INPUT_SECTION.findall(last_user)
    return " | ".join(value.strip() for _, value in sections) if sections else last_user.strip()


def field_value(name: str, kind: str, question: str) -> Any:
    """A deterministic value of the right type for one output field."""
    digest = xxhash.xxh64_intdigest(f"{name}\0{question}".encode())
    kind = kind.lower()
    if kind.startswith("int"):
        return digest % 1000
    if kind.startswith("float"):
        return round((digest % 10_000) / 100, 2)
    if kind.startswith("bool"):
        return digest % 2 == 0
    if kind.startswith("list"):
        return [f"{name}-{digest % 97}", f"{name}-{digest % 89}"]
    if kind.startswith("dict"):
        return {"value": f"{name}-{digest % 97}"}
    short = question if len(question) <= 80 else question[:77] + "..."
    if name == "reasoning":
        return f"Let's think step by step about: {short}"
    return f"{name} to '{short}' is #{digest % 10_000:04d}"


def _chat_adapter_text(values: dict[str, Any]) -> str:
    parts = []
    for name, value in values.items():
        rendered = value if isinstance(value, str) else orjson.dumps(value).decode()
        parts.append(f"[[ ## {name} ## ]]\n{rendered}")
    parts.append("[[ ## completed ## ]]")
    return "\n\n".join(parts)


def _estimate_tokens(text: str) -> int:
    return max(1, len(text) // 4)


class FakeLM:
    """The server's state; ``app()`` builds the Starlette app around it."""

    def __init__(self, config: FakeLMConfig | None = None, seed: int = 0) -> None:
        self.config = config or FakeLMConfig()
        self.stats = FakeLMStats()
        self._rng = random.Random(seed)
        self._started = time.time()
        self._release = asyncio.Event()

    def _should_fail(self, model: str) -> bool:
        cfg = self.config
        if cfg.failing_models and model not in cfg.failing_models:
            return False
        return cfg.failure_rate > 0 and self._rng.random() < cfg.failure_rate

    async def chat_completions(self, request: Request) -> Response:
        try:
            body = orjson.loads(await request.body())
            messages = body["messages"]
            model = str(body.get("model", "fake-model"))
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return _json({"error": {"message": "expected a JSON body with messages", "type": "invalid_request_error"}}, 400)
        self.stats.calls += 1
        self.stats.models[model] = self.stats.models.get(model, 0) + 1
        limit = body.get("max_completion_tokens", body.get("max_tokens"))  # DSPy 3.4 sends the first
        if isinstance(limit, int):
            self.stats.max_tokens[model] = limit
        if self.config.latency_ms > 0:
            await asyncio.sleep(self.config.latency_ms / 1000)
        if model in self.config.hold_models:
            await self._hold()
        if self._should_fail(model):
            self.stats.failures += 1
            status = self.config.failure_status
            kind = "rate_limit_error" if status == 429 else "server_error"
            return _json({"error": {"message": f"fake LM injected failure ({status})", "type": kind}}, status)

        question = question_text(messages)
        script = self.config.scripted.get(model, {}).get(question, {})
        values = {name: script.get(name, field_value(name, kind, question)) for name, kind in output_fields(messages)}
        if body.get("response_format"):
            content = orjson.dumps(values).decode()
        else:
            content = _chat_adapter_text(values)
        prompt_text = "\n".join(_message_text(m) for m in messages)
        prompt_tokens = self.config.prompt_tokens or _estimate_tokens(prompt_text)
        completion_tokens = self.config.completion_tokens or _estimate_tokens(content)
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        }
        head = {"id": f"chatcmpl-fake-{self.stats.calls}", "created": int(time.time()), "model": model}
        if body.get("stream"):
            stream_options = body.get("stream_options") or {}
            include_usage = isinstance(stream_options, dict) and bool(stream_options.get("include_usage"))
            return StreamingResponse(
                self._chunks(head, content, usage if include_usage else None, self.config),
                media_type="text/event-stream",
            )
        return _json(
            {
                **head,
                "object": "chat.completion",
                "choices": [
                    {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}
                ],
                "usage": usage,
            }
        )

    async def _chunks(
        self, head: dict[str, Any], content: str, usage: dict[str, int] | None, cfg: FakeLMConfig
    ) -> AsyncIterator[bytes]:
        """The SSE events of one streamed answer (see the module docstring)."""

        def event(delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
            chunk = {**head, "object": "chat.completion.chunk",
                     "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}]}
            return b"data: " + orjson.dumps(chunk) + b"\n\n"

        yield event({"role": "assistant", "content": ""})
        size = max(1, cfg.stream_chunk_chars)
        for sent, start in enumerate(range(0, len(content), size)):
            if cfg.stream_fail_after_chunks is not None and sent >= cfg.stream_fail_after_chunks:
                self.stats.failures += 1
                if cfg.stream_failure == "stall":
                    await self._hold()
                raise StreamBroken(f"fake LM broke the stream after {sent} chunks")
            if cfg.stream_chunk_delay_ms > 0:
                await asyncio.sleep(cfg.stream_chunk_delay_ms / 1000)
            yield event({"content": content[start : start + size]})
        yield event({}, "stop")
        if usage is not None:
            yield b"data: " + orjson.dumps({**head, "object": "chat.completion.chunk", "choices": [], "usage": usage}) + b"\n\n"
        yield b"data: [DONE]\n\n"

    async def _hold(self) -> None:
        release, stats = self._release, self.stats
        stats.held += 1
        try:
            await asyncio.wait_for(release.wait(), HOLD_LIMIT_SECS)
        except TimeoutError:
            pass
        finally:
            stats.held -= 1

    def _release_held(self) -> None:
        self._release.set()
        self._release = asyncio.Event()  # calls arriving from now on are held again

    async def release(self, request: Request) -> Response:
        """Let every held call answer."""
        held = self.stats.held
        self._release_held()
        return _json({"released": held})

    async def get_stats(self, request: Request) -> Response:
        return _json({**asdict(self.stats), "config": asdict(self.config)})

    async def set_config(self, request: Request) -> Response:
        try:
            changes = orjson.loads(await request.body() or b"{}")
            self.config = FakeLMConfig(**{**asdict(self.config), **changes})
        except (orjson.JSONDecodeError, TypeError) as exc:
            return _json({"error": {"message": f"bad config: {exc}", "type": "invalid_request_error"}}, 400)
        return _json(asdict(self.config))

    async def reset(self, request: Request) -> Response:
        """Zero the counters and restore the default config (or the one in the body); held
        calls answer."""
        try:
            self.config = FakeLMConfig(**orjson.loads(await request.body() or b"{}"))
        except (orjson.JSONDecodeError, TypeError) as exc:
            return _json({"error": {"message": f"bad config: {exc}", "type": "invalid_request_error"}}, 400)
        self._release_held()
        self.stats = FakeLMStats()
        return _json({"ok": True})

    async def models(self, request: Request) -> Response:
        return _json({"object": "list", "data": [{"id": "fake-model", "object": "model", "owned_by": "fakelm"}]})

    async def health(self, request: Request) -> Response:
        return _json({"status": "ok"})

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/v1/chat/completions", self.chat_completions, methods=["POST"]),
                Route("/chat/completions", self.chat_completions, methods=["POST"]),
                Route("/v1/models", self.models, methods=["GET"]),
                Route("/stats", self.get_stats, methods=["GET"]),
                Route("/admin/config", self.set_config, methods=["POST"]),
                Route("/admin/reset", self.reset, methods=["POST"]),
                Route("/admin/release", self.release, methods=["POST"]),
                Route("/health", self.health, methods=["GET"]),
            ]
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m dspy_runtime.fakelm", description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8999)
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--failure-rate", type=float, default=0.0)
    parser.add_argument("--failure-status", type=int, default=500)
    parser.add_argument("--prompt-tokens", type=int, default=None)
    parser.add_argument("--completion-tokens", type=int, default=None)
    parser.add_argument("--stream-chunk-chars", type=int, default=8)
    parser.add_argument("--stream-chunk-delay-ms", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    config = FakeLMConfig(
        latency_ms=args.latency_ms,
        failure_rate=args.failure_rate,
        failure_status=args.failure_status,
        prompt_tokens=args.prompt_tokens,
        completion_tokens=args.completion_tokens,
        stream_chunk_chars=args.stream_chunk_chars,
        stream_chunk_delay_ms=args.stream_chunk_delay_ms,
    )
    import uvicorn

    uvicorn.run(FakeLM(config, seed=args.seed).app(), host=args.host, port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
