"""Graceful degradation on a real runtime (uvicorn) against the fake LM over HTTP."""

from __future__ import annotations

from typing import Any

FALLBACK = "openai/fake-fallback"
PRIMARY = "openai/fake-model"


def _drive_to_cache_only(runtime: Any, poll: Any) -> None:
    """New questions (each a computed prediction, failing while the LM fails) until the level is 3."""
    asked = iter(range(10_000))

    def cache_only() -> bool:
        runtime.predict({"input": f"new question {next(asked)}"})
        return _degradation(runtime)["level"] == 3

    poll(cache_only, timeout=60, interval=0.05, what="the level to reach cache_only")


def _degradation(runtime: Any) -> dict[str, Any]:
    return runtime.client.get("/health").json()["components"]["degradation"]


def test_failing_lm_drives_the_level_to_cache_only_serving_an_expired_answer_then_recovers(start_runtime, fake_lm, poll):
    runtime = start_runtime(
        degradation_enabled=True, degradation_window_secs=5, degradation_min_hold_secs=0.3,
        degradation_error_rate=0.5, memory_cache_ttl_secs=0.5, cache_stale_secs=600,
        lm_max_retries=0, circuit_breaker_failure_threshold=1000,
    )  # fmt: skip
    kept = runtime.predict({"input": "asked while healthy"})
    assert kept.status_code == 200 and kept.json()["metadata"]["degradation_level"] == 0
    assert _degradation(runtime)["name"] == "normal"
    fake_lm.configure(failure_rate=1.0, failure_status=503)

    _drive_to_cache_only(runtime, poll)
    health = runtime.client.get("/health").json()
    assert health["status"] == "degraded"
    assert health["components"]["degradation"]["name"] == "cache_only"
    assert health["components"]["degradation"]["cause"].startswith("error_rate 1 (threshold 0.5)")
    assert runtime.metric("dspy_degradation_level") == 3

    calls = fake_lm.calls
    # Three holds of 0.3 s have passed since it was stored: the entry (0.5 s TTL) has expired.
    stale = runtime.predict({"input": "asked while healthy"})
    assert stale.status_code == 200
    body = stale.json()
    assert body["output"] == kept.json()["output"]
    meta = body["metadata"]
    assert (meta["stale"], meta["cache_level"], meta["degradation_level"], meta["cost_usd"]) == (True, "stale", 3, 0.0)
    never = runtime.predict({"input": "never answered before"})
    assert never.status_code == 503 and never.json()["error"]["type"] == "circuit_open"
    assert fake_lm.calls == calls  # cache only: no LM call

    fake_lm.configure(failure_rate=0.0)
    healed = iter(range(10_000))

    def normal() -> bool:
        runtime.predict({"input": f"after healing {next(healed)}"})
        return _degradation(runtime)["level"] == 0

    poll(normal, timeout=60, interval=0.05, what="the level to recover to normal")
    assert runtime.metric("dspy_degradation_level") == 0
    assert runtime.client.get("/health").json()["status"] == "ok"
    fresh = runtime.predict({"input": "asked while healthy"})
    assert fresh.status_code == 200 and "stale" not in fresh.json()["metadata"]


def test_without_stale_entries_an_expired_answer_is_an_error(start_runtime, fake_lm, poll):
    """The guard of the test above: with CACHE_STALE_SECS=0 the same expired entry is a 503."""
    runtime = start_runtime(
        degradation_enabled=True, degradation_window_secs=5, degradation_min_hold_secs=0.3,
        memory_cache_ttl_secs=0.5, lm_max_retries=0, circuit_breaker_failure_threshold=1000,
    )  # fmt: skip
    assert runtime.predict({"input": "asked while healthy"}).status_code == 200
    fake_lm.configure(failure_rate=1.0, failure_status=503)
    _drive_to_cache_only(runtime, poll)
    assert runtime.predict({"input": "asked while healthy"}).status_code == 503


def test_levels_call_the_cheaper_fallback_then_with_shorter_max_tokens(start_runtime, fake_lm):
    """The budget signal (any spend leaves less than 0.999999 of it) steps down on every hold."""
    runtime = start_runtime(
        degradation_enabled=True, degradation_min_hold_secs=0.2, degradation_budget_left_fraction=0.999999,
        degradation_max_tokens_factor=0.25, daily_budget_usd=1000, lm_max_tokens=512,
        lm_fallback_models=FALLBACK,
    )  # fmt: skip
    seen: dict[int, tuple[str, int]] = {}  # level -> (model that answered, the max_tokens the LM got)
    for i in range(10_000):
        response = runtime.predict({"input": f"question {i}"})
        if response.status_code == 503:
            break
        assert response.status_code == 200, response.text
        body = response.json()
        level = body["metadata"]["degradation_level"]
        served_as = body["model"].partition("/")[2]  # litellm sends the name without its provider
        seen.setdefault(level, (body["model"], fake_lm.stats()["max_tokens"][served_as]))
    assert seen == {0: (PRIMARY, 512), 1: (FALLBACK, 512), 2: (FALLBACK, 128)}
    assert _degradation(runtime)["cause"].startswith("budget_left_fraction")
    models = fake_lm.stats()["models"]
    assert models["fake-fallback"] >= 2 and models["fake-model"] >= 1


def test_disabled_by_default_no_level_in_responses(start_runtime):
    runtime = start_runtime()
    assert "degradation_level" not in runtime.predict({"input": "plain"}).json()["metadata"]
    assert _degradation(runtime) == "disabled"
    assert runtime.metric("dspy_degradation_level") == 0


def test_stale_if_error_without_degradation_and_never_an_invalidated_answer(start_runtime, fake_lm):
    token = "stale-test-admin-token"
    runtime = start_runtime(cache_stale_secs=600, cache_admin_token=token, lm_max_retries=0)
    for question in ("forgotten", "kept"):
        assert runtime.predict({"input": question}).status_code == 200
    cleared = runtime.client.request("DELETE", "/v1/cache", json={"input": "forgotten"},
                                     headers={"Authorization": f"Bearer {token}"})
    assert cleared.status_code == 200, cleared.text
    fake_lm.configure(failure_rate=1.0, failure_status=503)
    assert runtime.predict({"input": "forgotten"}).status_code == 502  # invalidated: not kept stale either
    stale = runtime.predict({"input": "kept", "use_cache": False})  # skips the fresh entry: the LM fails
    assert stale.status_code == 200
    assert stale.json()["metadata"]["stale"] is True and "degradation_level" not in stale.json()["metadata"]


def test_the_level_reaches_the_operator_through_the_pods_report(start_runtime, fake_lm, redis_url, poll):
    """The runtime's served-table report carries its level and cause, and the operator's own reader
    of that hash turns it into the status block: the wire between the two, both sides real. A level
    holds 8 s here, longer than the 5 s between two reports, so one report must see it."""
    from dspy_operator.api import redis_prefix
    from dspy_operator.runtimebus import RuntimeBus
    from dspy_operator.status.pods import degradation_status

    runtime = start_runtime(
        redis_url=redis_url, dspy_resource="demo/qa", hostname="qa-7d9-abc",
        degradation_enabled=True, degradation_window_secs=30, degradation_min_hold_secs=8,
        degradation_error_rate=0.5, lm_max_retries=0, circuit_breaker_failure_threshold=1000,
    )  # fmt: skip
    bus = RuntimeBus.from_url(redis_url)
    prefix = redis_prefix("demo", "qa")
    try:
        reported = poll(lambda: bus.served_tables(prefix).get("qa-7d9-abc"), timeout=30, what="the pod's first report")
        assert (reported.level, reported.cause) == ("normal", "started")
        fake_lm.configure(failure_rate=1.0, failure_status=503)
        asked = iter(range(10_000))

        def stepped_down() -> bool:
            runtime.predict({"input": f"new question {next(asked)}"})
            return _degradation(runtime)["level"] == 1

        poll(stepped_down, timeout=60, interval=0.05, what="the level to step down once")

        def below_normal() -> dict[str, Any] | None:
            report = bus.served_tables(prefix)["qa-7d9-abc"]
            return degradation_status({"qa-7d9-abc": report}, report.at) if report.level != "normal" else None

        block = poll(below_normal, timeout=30, what="a report below normal")
        assert block["level"] == "cheaper_model" and block["pods"] == {"cheaper_model": 1}
        assert block["message"] == "1/1 pods answer below normal: qa-7d9-abc at cheaper_model (" \
            f"{_degradation(runtime)['cause']})"
        assert block["message"].endswith("(threshold 0.5))")
        assert bus.served_tables(prefix)["qa-7d9-abc"].serial == runtime.client.get("/config").json()["routing"]["serial"]
    finally:
        bus.close()
