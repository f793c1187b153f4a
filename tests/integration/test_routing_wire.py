"""Canary plumbing on a real Redis over real HTTP: the routing table's fast wire, the serial
rule, Redis outages, the served-table report and the windowed figures."""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import pytest
import redis

RESOURCE = "demo/qa"
PREFIX = "dspy:{demo/qa}:"
KEY = PREFIX + "routing"
POD = "qa-runtime-0"


def write_table(path: Path, table: dict[str, Any]) -> None:
    """Replace the file atomically, as a ConfigMap update does."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(table))
    os.replace(tmp, path)


def push(client: redis.Redis, table: dict[str, Any]) -> None:
    """What the operator does: the table and the announcement of its serial, in one MULTI."""
    pipe = client.pipeline(transaction=True)
    pipe.set(KEY, json.dumps(table))
    pipe.publish(KEY, str(table.get("serial", 0)))
    pipe.execute()


def two_revisions(serial: int, canary_weight: int = 0) -> dict[str, Any]:
    return {
        "serial": serial,
        "revisions": [
            {"name": "stable", "weight": 100 - canary_weight, "variants": [{"name": "baseline", "weight": 100}]},
            {"name": "canary", "weight": canary_weight,
             "variants": [{"name": "baseline", "weight": 100, "program": {"module": "ChainOfThought"}}]},
        ],
    }  # fmt: skip


@pytest.fixture
def client(redis_url: str):
    c = redis.Redis.from_url(redis_url, socket_timeout=5)
    try:
        yield c
    finally:
        c.close()


@pytest.fixture
def start(start_runtime, redis_url, tmp_path):
    """A runtime of resource demo/qa on the file table ``serial`` 1 and the test's Redis."""
    table = tmp_path / "routing.json"
    write_table(table, {"serial": 1, "variants": [{"name": "baseline", "weight": 100}]})

    def run(**overrides: Any) -> Any:
        settings = {
            "routing_path": table, "redis_url": redis_url, "routing_redis_key": KEY, "dspy_resource": RESOURCE,
            "hostname": POD, **overrides,
        }  # fmt: skip
        runtime = start_runtime(**settings)
        runtime.table_path = table
        return runtime

    return run


def served(runtime: Any) -> dict[str, Any]:
    return runtime.client.get("/config").json()["routing"]


def test_a_pushed_table_is_served_at_once_and_a_stale_one_is_ignored(start, client, poll, caplog):
    caplog.set_level(logging.INFO)
    # File poll and safety-net GET far apart: within the poll below, only pub/sub can deliver.
    runtime = start(routing_reload_secs=60)
    assert (served(runtime)["serial"], served(runtime)["source"]) == (1, "file")

    push(client, two_revisions(serial=2, canary_weight=0))
    routing = poll(lambda: (r := served(runtime))["serial"] == 2 and r, timeout=30, what="the pushed table")
    assert routing["source"] == "redis"
    assert [(r["name"], r["weight"]) for r in routing["revisions"]] == [("stable", 100), ("canary", 0)]
    assert [(v["revision"], v["name"]) for v in routing["variants"]] == [("stable", "baseline"), ("canary", "baseline")]
    assert routing["revisions"][1]["variants"][0]["program"]["module"] == "ChainOfThought"

    body = runtime.predict({"input": "q"}).json()
    assert (body["revision"], body["variant"]) == ("stable", "baseline")
    pinned = runtime.predict({"input": "q", "revision": "canary"}).json()
    assert pinned["revision"] == "canary" and "reasoning" in pinned["outputs"]  # weight 0, servable when pinned
    unknown = runtime.predict({"input": "q", "revision": "nope"})
    assert unknown.status_code == 422
    assert unknown.json()["error"]["message"] == "unknown revision 'nope'; known revisions: stable, canary"

    def access_revisions() -> list[Any]:
        lines = [getattr(r, "fields", {}) for r in caplog.records if r.name == "dspy_runtime.access"]
        return [f.get("revision") for f in lines if f.get("path") == "/v1/predict" and f.get("status") == 200]

    assert poll(lambda: len(access_revisions()) >= 2 and access_revisions(), what="the access lines") == ["stable", "canary"]

    push(client, {"serial": 1, "variants": [{"name": "stale", "weight": 100}]})
    poll(
        lambda: any("not newer" in r.getMessage() and r.fields["source"] == "redis" for r in caplog.records),
        timeout=30,
        what="the stale table to be considered",
    )
    assert served(runtime)["serial"] == 2
    assert runtime.predict({"input": "q"}).json()["revision"] == "stable"


def test_a_newer_table_in_redis_is_taken_before_ready(start, client):
    client.set(KEY, json.dumps(two_revisions(serial=5)))  # set while no pod listened: no announcement heard
    runtime = start()
    assert (served(runtime)["serial"], served(runtime)["source"]) == (5, "redis")


def test_redis_down_keeps_serving_and_the_file_path_still_works(start, client, redis_server, poll):
    runtime = start(routing_reload_secs=0.2)
    push(client, two_revisions(serial=2))
    poll(lambda: served(runtime)["serial"] == 2, what="the pushed table")

    redis_server.stop()
    for i in range(10):
        response = runtime.predict({"input": f"while Redis is down {i}"})
        assert response.status_code == 200 and response.json()["revision"] == "stable"
    write_table(runtime.table_path, {"serial": 3, "variants": [{"name": "from-file", "weight": 100}]})
    poll(lambda: served(runtime)["serial"] == 3, what="the file's newer table")
    assert served(runtime)["source"] == "file"
    assert runtime.predict({"input": "q"}).json()["variant"] == "from-file"

    redis_server.start()  # empty: no persistence
    redis_client = redis.Redis.from_url(redis_server.url, socket_timeout=5)
    try:
        push(redis_client, two_revisions(serial=4, canary_weight=100))
        # Heard after the reconnection, or read by its GET: either way, served.
        poll(lambda: served(runtime)["serial"] == 4, timeout=60, what="the push after Redis came back")
    finally:
        redis_client.close()
    assert runtime.predict({"input": "q"}).json()["revision"] == "canary"


def test_a_pod_started_while_redis_is_down_joins_the_wire_later(start, redis_server, poll):
    redis_server.stop()
    runtime = start(routing_reload_secs=0.2)
    assert runtime.predict({"input": "q"}).status_code == 200
    redis_server.start()
    redis_client = redis.Redis.from_url(redis_server.url, socket_timeout=5)
    try:
        push(redis_client, two_revisions(serial=7))
        poll(lambda: served(runtime)["serial"] == 7, timeout=60, what="the first push")
    finally:
        redis_client.close()


def test_the_pod_reports_the_serial_it_serves(start, client, poll):
    runtime = start()
    report = poll(lambda: client.hget(PREFIX + "pods", POD), what="the first report")
    serial, moment = report.decode().split(" ")
    assert serial == "1" and abs(int(moment) - time.time()) < 30
    assert 0 < client.ttl(PREFIX + "pods") <= 60
    push(client, two_revisions(serial=9))
    poll(lambda: client.hget(PREFIX + "pods", POD).split(b" ")[0] == b"9", timeout=30, what="the report of serial 9")
    assert served(runtime)["serial"] == 9


def window_fields(client: redis.Redis) -> tuple[dict[str, float], list[int]]:
    """Every ``P win:*`` hash summed by field, and the keys' TTLs."""
    totals: dict[str, float] = {}
    ttls = []
    for key in client.scan_iter(PREFIX + "win:*"):
        ttls.append(client.ttl(key))
        for field, value in client.hgetall(key).items():
            totals[field.decode()] = totals.get(field.decode(), 0.0) + float(value)
    return totals, ttls


def test_windows_land_in_redis_with_the_contract_fields(start, client, fake_lm, poll):
    runtime = start(window_flush_secs=0.2, lm_max_retries=0)
    for question in ("one", "two", "three", "one", "two"):  # 3 computed, 2 cache hits
        assert runtime.predict({"input": question}).status_code == 200
    fake_lm.configure(failure_rate=1.0)
    for question in ("fails 1", "fails 2"):
        assert runtime.predict({"input": question}).status_code == 502
    assert runtime.predict({"inputs": {"nope": "x"}}).status_code == 422  # chosen, then refused: counted
    bad_json = runtime.client.post("/v1/predict", content=b"{nope", headers={"content-type": "application/json"})
    assert bad_json.status_code == 400  # refused before any choice: not counted

    fields, ttls = poll(
        lambda: (w := window_fields(client))[0].get("default|baseline|requests") == 8 and w,
        what="eight requests in the windows",
    )
    assert all(0 < ttl <= 3600 for ttl in ttls)
    figure = {name.removeprefix("default|baseline|"): value for name, value in fields.items()}
    assert figure["errors"] == 2  # the 5xx only
    assert (figure["class:upstream_error"], figure["class:invalid_input"]) == (2, 1)
    assert figure["cache_hits"] == 2
    assert (figure["tokens_in"], figure["tokens_out"]) == (300, 60)
    assert figure["cost_usd"] == pytest.approx(0.42)
    assert sum(v for k, v in figure.items() if k.startswith("lat:")) == 8
    assert figure["latency_sum"] > 0

    metrics = runtime.client.get("/metrics").text
    labels = 'model="openai/fake-model",revision="default",variant="baseline"'
    # Failures are in the duration histogram too, as cached="false": 3 computed + 3 failed.
    assert f'dspy_prediction_duration_seconds_count{{cached="false",{labels}}} 6.0' in metrics
    assert 'dspy_predictions_total{model="openai/fake-model",revision="default",status="upstream_error",variant="baseline"} 2.0' in metrics


def test_the_last_figures_are_flushed_on_shutdown(start, client):
    runtime = start(window_flush_secs=3600)  # no periodic flush within the test
    assert runtime.predict({"input": "last words"}).status_code == 200
    assert window_fields(client)[0] == {}
    runtime.stop()
    assert window_fields(client)[0]["default|baseline|requests"] == 1
