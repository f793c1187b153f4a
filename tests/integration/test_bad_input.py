"""Bad input over real HTTP, with the cache on and off: 4xx JSON naming the field, never a
500, never an LM call. Each case here answered 500 with a traceback (or was served) before."""

from __future__ import annotations

import json
import logging

import pytest

from dspy_runtime.program import MAX_INPUT_DEPTH

JSON_TYPE = {"content-type": "application/json"}


def _nested_body(depth: int) -> bytes:
    """``{"input": [[...["leaf"]...]]}`` with ``depth`` lists, written by hand: the stdlib
    encoder (httpx's ``json=``) cannot encode a thousand levels itself."""
    return b'{"input": ' + b"[" * depth + b'"leaf"' + b"]" * depth + b"}"


@pytest.mark.parametrize("cache_enabled", [True, False])
def test_a_list_for_a_text_field_with_other_than_strings_is_422_naming_the_item(start_runtime, fake_lm, caplog, cache_enabled):
    caplog.set_level(logging.INFO)
    runtime = start_runtime(cache_enabled=cache_enabled)
    cases = [
        ({"input": [1]}, "input[0]: must be a string"),
        ({"input": [None]}, "input[0]: must be a string"),
        ({"inputs": {"question": [1, "a"]}}, "inputs.question[0]: must be a string"),
        ({"inputs": {"question": ["a", {"b": 1}]}}, "inputs.question[1]: must be a string"),
    ]
    for body, fragment in cases:
        response = runtime.predict(body)
        assert response.status_code == 422, (body, response.text)
        error = response.json()["error"]
        assert error["type"] == "invalid_input" and fragment in error["message"], error
    assert fake_lm.calls == 0
    assert runtime.predict({"input": ["first passage", "second passage"]}).status_code == 200
    assert not [r for r in caplog.records if r.exc_info], "a traceback was logged"


@pytest.mark.parametrize("cache_enabled", [True, False])
def test_inputs_nested_too_deep_are_the_same_422_with_the_cache_on_or_off(start_runtime, fake_lm, cache_enabled):
    runtime = start_runtime(cache_enabled=cache_enabled)
    # 33 is just past the bound; 255 is where the cache key's encoder gave up (a 422 with the
    # cache only); 1000 was a RecursionError (500) without it.
    for depth in (MAX_INPUT_DEPTH + 1, 255, 1000):
        response = runtime.client.post("/v1/predict", content=_nested_body(depth), headers=JSON_TYPE)
        assert response.status_code == 422, (depth, response.text[:300])
        assert response.json()["error"]["message"] == f"input: lists and objects nest deeper than {MAX_INPUT_DEPTH} levels"
    # Past what the JSON parser takes (1,024 levels): not JSON, 400.
    too_deep_to_parse = runtime.client.post("/v1/predict", content=_nested_body(100_000), headers=JSON_TYPE)
    assert too_deep_to_parse.status_code == 400
    assert too_deep_to_parse.json()["error"]["type"] == "malformed_json"
    assert fake_lm.calls == 0
    # At the bound, a value is served (DSPy sends an object for a text field as JSON).
    at_the_bound = {"input": {"k": json.loads(_nested_body(MAX_INPUT_DEPTH - 1))["input"]}}
    assert runtime.predict(at_the_bound).status_code == 200


def test_a_body_not_sent_as_json_is_415_and_calls_no_lm(start_runtime, fake_lm):
    runtime = start_runtime()
    body = b'{"input": "spend the budget of whoever opens this page"}'
    # What an HTML form or a "simple" cross-site fetch can send without a CORS preflight.
    for content_type in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", None):
        headers = {"content-type": content_type} if content_type else {}
        response = runtime.client.post("/v1/predict", content=body, headers=headers)
        assert response.status_code == 415, (content_type, response.text)
        assert response.json()["error"]["type"] == "unsupported_media_type"
    assert fake_lm.calls == 0
    for content_type in ("application/json", "application/json; charset=utf-8"):
        assert runtime.client.post("/v1/predict", content=body, headers={"content-type": content_type}).status_code == 200
