"""The real ``dspy-runtime`` process: SIGTERM drain, exit codes, and what it prints."""

from __future__ import annotations

import json
import signal
import threading

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
