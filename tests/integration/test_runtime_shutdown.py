"""SIGTERM with requests still running when ``SHUTDOWN_TIMEOUT_SECS`` ends: the real process."""

from __future__ import annotations

import json
import signal
import threading

import httpx


def test_requests_cut_off_by_the_shutdown_timeout_get_a_json_503_and_one_log_line_each(spawn_runtime, fake_lm, poll):
    process = spawn_runtime(SHUTDOWN_TIMEOUT_SECS="1", LM_TIMEOUT_SECS="300")
    process.wait_ready()
    fake_lm.configure(hold_models=["fake-model"])  # every LM call waits: longer than the shutdown allows
    responses: list[httpx.Response] = []

    def predict(question: str) -> None:
        responses.append(httpx.post(f"{process.url}/v1/predict", json={"input": question}, timeout=120))

    workers = [threading.Thread(target=predict, args=(f"slow question {i}",)) for i in range(3)]
    for worker in workers:
        worker.start()
    poll(lambda: fake_lm.stats()["held"] == 3, what="three requests waiting on the LM")
    process.process.send_signal(signal.SIGTERM)
    assert process.wait() == 0
    for worker in workers:
        worker.join(timeout=60)
    fake_lm.release()

    assert [r.status_code for r in responses] == [503, 503, 503]
    for response in responses:
        assert response.headers["content-type"] == "application/json"
        error = response.json()["error"]
        assert error["type"] == "shutting_down" and error["request_id"] == response.headers["x-request-id"]
    output = process.output()
    assert "Traceback" not in output and "CancelledError" not in output
    lines = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    cut_off = [line for line in lines if line.get("path") == "/v1/predict"]
    assert [(line["message"], line["status"], line["error_type"]) for line in cut_off] == [
        ("request", 503, "shutting_down")
    ] * 3
    assert sorted(line["request_id"] for line in cut_off) == sorted(r.headers["x-request-id"] for r in responses)
