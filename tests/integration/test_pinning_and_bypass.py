"""Pinning a revision or variant and skipping the cache are the deployment's to allow, not the
caller's: by default both are refused with a 403 naming the setting, before any LM call."""

from __future__ import annotations

import json

from dspy_runtime.settings import RuntimeSettings

AB = {"variants": [{"name": "cheap", "weight": 100}, {"name": "dear", "weight": 0, "lm": {"model": "openai/fake-fallback"}}]}


def test_both_are_off_unless_the_deployment_turns_them_on():
    settings = RuntimeSettings()
    assert (settings.allow_pinning, settings.allow_cache_bypass) == (False, False)


def test_by_default_a_pinned_or_uncached_request_is_refused_and_costs_nothing(start_runtime, fake_lm, tmp_path):
    table = tmp_path / "routing.json"
    table.write_text(json.dumps(AB))
    runtime = start_runtime(routing_path=table, allow_pinning=False, allow_cache_bypass=False)
    question = {"inputs": {"question": "what is the capital of France?"}}
    assert runtime.predict(question).status_code == 200
    calls = fake_lm.calls
    for extra, field, setting in (({"variant": "dear"}, "revision, variant", "spec.routing.allowPinning"),
                                  ({"revision": "default"}, "revision, variant", "spec.routing.allowPinning"),
                                  ({"use_cache": False}, "use_cache", "spec.cache.allowBypass")):
        response = runtime.predict({**question, **extra})
        assert response.status_code == 403, response.text
        error = response.json()["error"]
        assert error["type"] == "forbidden" and error["message"].startswith(field) and setting in error["message"]
    assert fake_lm.calls == calls, "no refused request reached the LM"
    batch = runtime.client.post("/v1/predict/batch", json={"items": [question, {**question, "variant": "dear"}]})
    results = batch.json()["results"]
    assert "output" in results[0] and results[1]["error"]["type"] == "forbidden"


def test_allowed_they_work_as_before(start_runtime, fake_lm, tmp_path):
    table = tmp_path / "routing.json"
    table.write_text(json.dumps(AB))
    runtime = start_runtime(routing_path=table, allow_pinning=True, allow_cache_bypass=True)
    question = {"inputs": {"question": "what is the capital of Italy?"}}
    assert runtime.predict({**question, "variant": "dear"}).json()["variant"] == "dear"
    calls = fake_lm.calls
    assert runtime.predict({**question, "variant": "dear", "use_cache": False}).json()["metadata"]["cached"] is False
    assert fake_lm.calls == calls + 1
