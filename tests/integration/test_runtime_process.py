"""The real ``dspy-runtime`` process: SIGTERM drain, exit codes, and what it prints."""

from __future__ import annotations

import json
import signal
import threading
from urllib.parse import quote, unquote

import httpx


def test_sigterm_drains_in_flight_requests_and_exits_zero(spawn_runtime, fake_lm, poll):
    process = spawn_runtime()
    process.wait_ready()
    fake_lm.configure(latency_ms=2000)
    result: dict[str, httpx.Response] = {}

    def slow_request() -> None:
        result["response"] = httpx.post(f"{process.url}/v1/predict", json={"input": "slow"}, timeout=60)

    worker = threading.Thread(target=slow_request)
    worker.start()
    poll(lambda: fake_lm.calls == 1, what="the slow request to reach the LM")
    process.process.send_signal(signal.SIGTERM)
    assert process.wait() == 0
    worker.join(timeout=60)
    assert result["response"].status_code == 200
    assert result["response"].json()["output"]
    output = process.output()
    assert "Waiting for connections to close" in output or "Shutting down" in output
    # New connections are refused once it stopped.
    try:
        httpx.get(f"{process.url}/health", timeout=2)
        refused = False
    except httpx.ConnectError:
        refused = True
    assert refused


def test_api_key_never_appears_in_output_or_responses(spawn_runtime, fake_lm, test_api_key, redis_url):
    process = spawn_runtime(LOG_LEVEL="DEBUG", REDIS_URL=redis_url, LM_FALLBACK_MODELS="openai/fake-fallback")
    process.wait_ready()
    bodies = []
    with httpx.Client(base_url=process.url, timeout=60) as client:
        bodies.append(client.post("/v1/predict", json={"input": "hello"}).text)
        bodies.append(client.post("/v1/predict", content=b"{broken", headers={"content-type": "application/json"}).text)
        bodies.append(client.post("/v1/predict", json={"inputs": {"nope": 1}}).text)
        fake_lm.configure(failure_rate=1.0)
        bodies.append(client.post("/v1/predict", json={"input": "provider down"}).text)
        fake_lm.configure(failure_rate=1.0, failure_status=401)
        bodies.append(client.post("/v1/predict", json={"input": "unauthorized"}).text)
        for path in ("/config", "/health", "/costs", "/metrics", "/ready", "/openapi.json", "/nope"):
            bodies.append(client.get(path).text)
    process.process.send_signal(signal.SIGTERM)
    assert process.wait() == 0
    output = process.output()
    for text in (*bodies, output):
        assert test_api_key not in text
    assert "Traceback" not in "".join(bodies)
    # The JSON log has one line per predict request, with the fields of the contract.
    lines = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    requests = [line for line in lines if line.get("message") == "request" and line.get("path") == "/v1/predict"]
    assert len(requests) == 5
    ok = requests[0]
    for field in ("request_id", "variant", "model", "cached", "cache_level", "latency_ms", "input_tokens", "output_tokens", "cost_usd", "status"):
        assert field in ok, field
    assert "hello" not in json.dumps(ok)  # raw inputs are not logged by default


def spellings(secret: str) -> set[str]:
    """How a secret could show in output: as is, percent-encoded or decoded, JSON-escaped."""
    forms = {secret, quote(secret, safe=""), unquote(secret)}
    return forms | {json.dumps(form)[1:-1] for form in forms}


def test_every_secret_the_process_holds_is_redacted_from_all_its_output(spawn_runtime, fake_lm, password_redis,
                                                                         test_api_key, tmp_path):
    """A runtime holding every kind of secret (the primary's, a variant's, a fallback's and a
    provider's keys, a key a routing table names by another variable, the Redis password inside
    REDIS_URL and beside it), logging at DEBUG with LOG_INPUTS on, is sent each secret as input,
    calls a variant's key, meets an LM error and a bad request, and stops: its stdout and stderr
    hold none of them in any spelling. (Before, only LM_API_KEY, OPENAI_API_KEY, the fallbacks'
    keys and the whole REDIS_URL were redacted.)"""
    table = tmp_path / "routing.json"
    table.write_text(json.dumps({"variants": [
        {"name": "baseline", "weight": 100},
        {"name": "canary", "weight": 0, "lm": {"apiKeyEnv": "CANARY_LM"}},
    ]}))
    secrets = {
        "LM_API_KEY": test_api_key,
        "LM_API_KEY_CANARY": "sk-variant-canary-NEVER-IN-OUTPUT",
        "CANARY_LM": "sk-named-by-apiKeyEnv-NEVER-IN-OUTPUT",
        "OPENAI_API_KEY": "sk-openai-NEVER-IN-OUTPUT",
        "ANTHROPIC_API_KEY": 'sk-ant-with\\back"slash-NEVER-IN-OUTPUT',
        "LM_FALLBACK_API_KEY_0": "sk-fallback-NEVER-IN-OUTPUT",
        "REDIS_PASSWORD": password_redis.password,
    }
    redis_url = f"redis://:{quote(password_redis.password, safe='')}@127.0.0.1:{password_redis.port}/0"
    process = spawn_runtime(
        LOG_LEVEL="DEBUG", LOG_INPUTS="true", ROUTING_PATH=str(table), REDIS_URL=redis_url,
        LM_FALLBACK_MODELS="openai/fake-fallback", **secrets,
    )
    process.wait_ready()
    with httpx.Client(base_url=process.url, timeout=60) as client:
        assert client.get("/health").json()["components"]["redis"] == "ok", "the password in REDIS_URL works"
        for secret in (*secrets.values(), redis_url):
            for form in spellings(secret):
                assert client.post("/v1/predict", json={"input": f"my key is {form}"}).status_code == 200
        assert client.post("/v1/predict", json={"input": "canary", "variant": "canary"}).status_code == 200
        client.post("/v1/predict", content=b"{broken")
        fake_lm.configure(failure_rate=1.0, failure_status=401)
        assert client.post("/v1/predict", json={"input": "unauthorized"}).status_code >= 500
    process.process.send_signal(signal.SIGTERM)
    assert process.wait() == 0
    output = process.output()
    assert '"inputs"' in output and "***" in output, "the inputs were logged, redacted"
    leaks = {name: form for name, secret in {**secrets, "REDIS_URL": redis_url}.items()
             for form in spellings(secret) if form in output}
    assert leaks == {}


def test_unknown_module_is_a_clear_startup_error(spawn_runtime):
    process = spawn_runtime(DSPY_MODULE="Telepathy")
    assert process.wait() == 2
    output = process.output()
    assert "DSPY_MODULE" in output and "unknown DSPy module 'Telepathy'" in output
    assert "Traceback" not in output


def test_unusable_program_fails_startup_with_exit_3(spawn_runtime, tmp_path):
    saved = tmp_path / "program.json"
    saved.write_text(json.dumps({"predict": {"signature": {"fields": []}, "demos": []}}))
    process = spawn_runtime(PROGRAM_PATH=str(saved), DSPY_MODULE="Predict")
    assert process.wait() == 3
    assert "startup failed" in process.output()
    assert str(saved) in process.output()


def test_missing_routing_table_fails_startup_without_a_traceback(spawn_runtime, tmp_path):
    missing = tmp_path / "no-such-routing.json"
    process = spawn_runtime(ROUTING_PATH=str(missing))
    assert process.wait() == 3
    output = process.output()
    assert "startup failed" in output
    assert "ROUTING_PATH" in output and str(missing) in output
    assert "Traceback" not in output


def test_a_malformed_redis_url_is_one_line_naming_the_setting(spawn_runtime):
    process = spawn_runtime(REDIS_URL="redis://user:hunter2-password")  # no '@': the password reads as a port
    assert process.wait() == 2
    output = process.output()
    assert output.splitlines()[0] == "dspy-runtime: invalid settings:"
    assert output.splitlines()[1].startswith("  REDIS_URL: ") and len(output.splitlines()) == 2
    assert "Traceback" not in output and "hunter2" not in output
