"""``FastPredict`` over real HTTP: for the same requests, a runtime with the fast path answers,
counts and logs exactly what one without it (every request through FastAPI's route) does.

Each case goes to both runtimes with the same ``X-Request-ID``; what may differ is only
what is measured (latencies, durations, timestamps), masked before the comparison.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from dspy_runtime import app as app_module

TIMED = {"latency_ms", "duration_ms", "timestamp"}
"""Measured, so different on every request: masked in bodies and log lines."""
HEADERS = ("content-type", "content-length", "x-request-id", "retry-after", "connection")


class ThroughFastAPI:
    """Stands in for ``FastPredict``: hands every request to FastAPI, as the app did before it."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.app(scope, receive, send)


def _masked(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: "<timed>" if k in TIMED else _masked(v) for k, v in value.items()}
    return value


def _body(raw: bytes) -> Any:
    if raw.startswith(b"data:") or raw.startswith(b"event:"):
        return [_masked(orjson.loads(line[5:])) if line.startswith(b"data:") else line
                for line in raw.splitlines() if line]
    return _masked(orjson.loads(raw))


def _answer(runtime: Any, case: dict[str, Any]) -> dict[str, Any]:
    response = runtime.client.request(case.get("method", "POST"), "/v1/predict", content=case["content"],
                                      headers={"Content-Type": "application/json", **case.get("headers", {})})
    headers = {name: response.headers.get(name) for name in HEADERS}
    if b"latency_ms" in response.content:
        headers["content-length"] = "<timed>"  # the figures' digits vary
    return {"status": response.status_code, "headers": headers, "body": _body(response.content)}


def _counts(runtime: Any) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every counter and count of /metrics (histogram buckets and sums hold measured times)."""
    samples = {}
    for family in text_string_to_metric_families(runtime.client.get("/metrics").text):
        for sample in family.samples:
            if not sample.name.endswith(("_bucket", "_sum", "_created")):
                samples[sample.name, tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def _lines(caplog: pytest.LogCaptureFixture, request_id: str) -> list[dict[str, Any]]:
    return [_masked(r.fields) for r in caplog.records
            if r.name == "dspy_runtime.access" and getattr(r, "fields", {}).get("request_id") == request_id]


@pytest.fixture
def both(start_runtime, monkeypatch):
    """``both(**settings)`` -> (with the fast path, without it), on the same settings."""

    def start(**settings: Any) -> tuple[Any, Any]:
        fast = start_runtime(**settings)
        with monkeypatch.context() as patch:
            patch.setattr(app_module, "FastPredict", ThroughFastAPI)
            slow = start_runtime(**settings)
        return fast, slow

    return start


def _json(body: Any) -> bytes:
    return orjson.dumps(body)


CASES = [
    {"id": "miss", "content": _json({"input": "fast or slow"})},
    {"id": "hit", "content": _json({"input": "fast or slow"})},
    {"id": "hit-by-inputs", "content": _json({"inputs": {"question": "fast  or slow"}})},
    {"id": "id-in-body", "content": _json({"input": "fast or slow", "request_id": "from-the-body"})},
    {"id": "pinned", "content": _json({"input": "fast or slow", "variant": "default", "revision": "default"})},
    {"id": "unknown-variant", "content": _json({"input": "q", "variant": "nope"})},
    {"id": "bypass", "content": _json({"input": "fast or slow", "use_cache": False})},
    {"id": "malformed", "content": b"{not json"},
    {"id": "not-an-object", "content": b"[1, 2]"},
    {"id": "unknown-field", "content": _json({"input": "q", "temperature": 2})},
    {"id": "both-inputs", "content": _json({"input": "q", "inputs": {"question": "q"}})},
    {"id": "bad-input-field", "content": _json({"inputs": {"nope": "q"}})},
    {"id": "text-plain", "content": b"{}", "headers": {"Content-Type": "text/plain"}},
    {"id": "too-large", "content": _json({"input": "x" * 5000})},
    {"id": "get", "method": "GET", "content": b""},
    {"id": "stream-hit", "content": _json({"input": "fast or slow", "stream": True})},
    {"id": "stream-miss", "content": _json({"input": "a new stream", "stream": True})},
]


def test_the_fast_path_answers_counts_and_logs_as_fastapi_does(both, caplog, poll):
    caplog.set_level(logging.INFO, logger="dspy_runtime.access")
    fast, slow = both(max_body_bytes=4096)
    for case in CASES:
        headers = {"X-Request-ID": case["id"], **case.get("headers", {})}
        answers = [_answer(runtime, {**case, "headers": headers}) for runtime in (fast, slow)]
        assert answers[0] == answers[1], case["id"]
        request_id = "from-the-body" if case["id"] == "id-in-body" else case["id"]
        lines = poll(lambda: len(found := _lines(caplog, request_id)) == 2 and found, what=f"{case['id']}'s log lines")
        assert lines[0] == lines[1], case["id"]
    assert _counts(fast) == _counts(slow)
    layers = [[m.cls for m in runtime.app.user_middleware] for runtime in (fast, slow)]
    assert app_module.FastPredict in layers[0] and app_module.FastPredict not in layers[1]


@pytest.mark.parametrize(
    ("settings", "body", "status"),
    [
        ({"rate_limit_rps": 0.001, "rate_limit_burst": 1}, {"input": "limited"}, 429),
        ({"allow_pinning": False}, {"input": "q", "variant": "default"}, 403),
        ({"allow_cache_bypass": False}, {"input": "q", "use_cache": False}, 403),
    ],
    ids=["rate-limited", "pinning-off", "bypass-off"],
)
def test_refusals_are_the_same_on_both_paths(both, settings, body, status):
    fast, slow = both(**settings)
    answers = []
    for runtime in (fast, slow):
        first = _answer(runtime, {"content": _json(body), "headers": {"X-Request-ID": "first"}})
        second = _answer(runtime, {"content": _json(body), "headers": {"X-Request-ID": "second"}})
        answers.append((first, second))
    assert answers[0] == answers[1]
    assert status in (answers[0][0]["status"], answers[0][1]["status"])
    assert _counts(fast) == _counts(slow)
