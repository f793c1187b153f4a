"""The evaluation gate's pure parts: metrics, example scoring, request parsing, the result
document, scoring with bounded concurrency, and the adapter to the prediction service."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from pydantic import ValidationError

from dspy_runtime.errors import RateLimited, UpstreamError
from dspy_runtime.evaluation import (
    EvalKeys,
    EvalPrediction,
    EvaluationRequestError,
    Evaluator,
    RevisionTally,
    failed_document,
    make_predict,
    parse_request,
    result_document,
    score_request,
)
from dspy_runtime.logs import request_id_var
from dspy_runtime.scoring import contains, exact_match, f1, score_example, tokens
from dspy_runtime.service import PredictCall
from dspy_runtime.settings import RuntimeSettings

FINISHED = datetime(2026, 12, 1, 21, 30, 5, 250_000, tzinfo=UTC)

# ---- metrics -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("output", "expected", "score"),
    [
        ("Paris", "paris", 1.0),
        ("  Paris\n", "PARIS ", 1.0),  # strip both sides
        ("Paris.", "Paris", 0.0),  # punctuation counts: exact means exact
        ("Paris", "Pariss", 0.0),
        ("", "", 1.0),
        ("   ", "", 1.0),
        ("", "x", 0.0),
        ("STRASSE", "straße", 1.0),  # casefold, not just lower()
        ("ÉCOLE", "école", 1.0),
        (42, "42", 1.0),  # non-strings compare by their JSON text
        ("42", 42, 1.0),
        (42.0, 42, 0.0),  # "42.0" is not "42"
        (True, "true", 1.0),
        (None, "null", 1.0),
        (["a", "b"], ["a", "b"], 1.0),
        (["a", "b"], ["b", "a"], 0.0),  # list order matters
        ({"b": 2, "a": 1}, {"a": 1, "b": 2}, 1.0),  # key order does not
    ],
)
def test_exact_match(output: Any, expected: Any, score: float) -> None:
    assert exact_match(output, expected) == score


@pytest.mark.parametrize(
    ("output", "expected", "score"),
    [
        ("The capital is Paris.", " paris ", 1.0),
        ("Par", "Paris", 0.0),
        ("anything", "", 1.0),  # the empty string is in every output
        ("", "", 1.0),
        ("", "x", 0.0),
        ("Ich wohne in der STRASSE", "Straße", 1.0),
        ("Le mot est ÉCOLE", "école", 1.0),
        ("It is 42 years old", 42, 1.0),
        ([1, 2, 3], 2, 1.0),  # "[1,2,3]" holds "2"
        ("paris", "The capital is Paris", 0.0),  # expected in output, not the reverse
    ],
)
def test_contains(output: Any, expected: Any, score: float) -> None:
    assert contains(output, expected) == score


def test_tokens_are_casefolded_runs_of_letters_and_digits() -> None:
    assert tokens("The U.S.-born, 2nd") == ["the", "u", "s", "born", "2nd"]
    assert tokens("snake_case café ÉCOLE") == ["snake", "case", "café", "école"]
    assert tokens("...!?") == []
    assert tokens(3.5) == ["3", "5"]


@pytest.mark.parametrize(
    ("output", "expected", "score"),
    [
        ("Paris", "paris", 1.0),
        ("Paris!", "paris.", 1.0),  # punctuation is not a token
        ("the cat sat", "cat", 0.5),  # precision 1/3, recall 1
        ("cat", "the cat sat", 0.5),  # precision 1, recall 1/3
        ("a a a", "a", 0.5),  # tokens count with multiplicity
        ("a b", "b a", 1.0),  # order does not matter
        ("dog", "cat", 0.0),
        ("", "", 1.0),  # no tokens on either side
        ("...", "", 1.0),
        ("", "cat", 0.0),
        ("cat", "", 0.0),
        ("Café au lait", "CAFÉ", 0.5),
        (42, "42", 1.0),
        ("The answer is 42", 42, 0.4),  # precision 1/4, recall 1
    ],
)
def test_f1(output: Any, expected: Any, score: float) -> None:
    assert f1(output, expected) == pytest.approx(score)


def test_f1_is_symmetric_and_bounded() -> None:
    pairs = [("the big red dog", "a red dog barks"), ("x y z", "x"), ("", "q")]
    for a, b in pairs:
        assert f1(a, b) == pytest.approx(f1(b, a))
        assert 0.0 <= f1(a, b) <= 1.0


# ---- scoring one example -------------------------------------------------------------------------


def test_score_example_averages_over_the_expected_fields() -> None:
    outputs = {"answer": "Paris", "city": "Lyon", "extra": "ignored"}
    assert score_example(outputs, {"answer": "paris"}, exact_match) == 1.0
    assert score_example(outputs, {"answer": "paris", "city": "Nice"}, exact_match) == 0.5
    assert score_example(outputs, {"answer": "paris", "city": "lyon"}, exact_match) == 1.0


def test_a_missing_output_field_scores_zero() -> None:
    assert score_example({"answer": "Paris"}, {"answer": "Paris", "country": "France"}, exact_match) == 0.5
    assert score_example({}, {"answer": "Paris"}, contains) == 0.0


def test_score_example_uses_the_metric_per_field() -> None:
    outputs = {"answer": "the cat sat", "n": 3}
    assert score_example(outputs, {"answer": "cat", "n": 3}, f1) == pytest.approx((0.5 + 1.0) / 2)


def test_score_example_refuses_an_example_with_no_expected_field() -> None:
    with pytest.raises(ValueError, match="at least one expected field"):
        score_example({"answer": "x"}, {}, exact_match)


# ---- request parsing ------------------------------------------------------------------------------

EVAL_ID = "0123456789abcdef"


def request_json(**changes: Any) -> bytes:
    body: dict[str, Any] = {
        "id": EVAL_ID,
        "revisions": ["3f9a0c1d2e4b", "77aa01bc9e0f"],
        "metric": "exact_match",
        "examples": [{"inputs": {"question": "2+2?"}, "expected": {"answer": "4"}}],
    }
    body.update(changes)
    return json.dumps({k: v for k, v in body.items() if v is not ...}).encode()


def test_a_valid_request_parses() -> None:
    request = parse_request(request_json(future_field={"x": 1}), EVAL_ID)  # unknown fields are ignored
    assert request.revisions == ["3f9a0c1d2e4b", "77aa01bc9e0f"]
    assert request.metric == "exact_match"
    assert request.examples[0].inputs == {"question": "2+2?"}
    assert request.examples[0].expected == {"answer": "4"}
    assert parse_request(request_json().decode(), EVAL_ID) == request  # str works as bytes do


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"{not json", "not JSON"),
        (b"[1, 2]", "must be a JSON object"),
        (request_json(metric="bleu"), "metric: Input should be 'exact_match', 'contains' or 'f1'"),
        (request_json(metric=...), "metric: Field required"),
        (request_json(revisions=[]), "revisions: List should have at least 1 item"),
        (request_json(revisions=["a", "a"]), "duplicate revisions: a"),
        (request_json(revisions=["a", " "]), "revision names must not be empty"),
        (request_json(examples=[]), "examples: List should have at least 1 item"),
        (request_json(examples=[{"inputs": {"q": 1}, "expected": {}}]), "examples.0.expected: Dictionary should have at least 1 item"),
        (request_json(examples=[{"inputs": {"q": 1}}]), "examples.0.expected: Field required"),
        (request_json(examples=[{"inputs": "q", "expected": {"a": 1}}]), "examples.0.inputs: Input should be a valid dictionary"),
        (request_json(id="ab:lock"), "id: String should match pattern"),
        (request_json(id="fedcba9876543210"), "its id 'fedcba9876543210' is not the id of its key"),
    ],
)  # fmt: skip
def test_invalid_requests_say_what_is_wrong(raw: bytes, message: str) -> None:
    with pytest.raises(EvaluationRequestError) as caught:
        parse_request(raw, EVAL_ID)
    assert str(caught.value).startswith("invalid evaluation request: ")
    assert message in str(caught.value)


def test_parse_errors_do_not_echo_the_values() -> None:
    with pytest.raises(EvaluationRequestError) as caught:
        parse_request(request_json(metric="SECRET-LOOKING-VALUE"), EVAL_ID)
    assert "SECRET-LOOKING-VALUE" not in str(caught.value)


# ---- the result document --------------------------------------------------------------------------


def test_result_document_has_the_contract_shape() -> None:
    four = [{"inputs": {"q": i}, "expected": {"a": i}} for i in range(4)]
    request = parse_request(request_json(examples=four), EVAL_ID)
    stable, canary = RevisionTally(), RevisionTally()
    for _ in range(4):
        stable.scored(1.0, 0.0001)
    canary.scored(1.0, 0.0002)
    canary.scored(0.5, 0.0002)
    canary.failed("upstream_error: the LM call failed")
    canary.failed("upstream_timeout: the LM did not answer in time")
    document = result_document(request, {"3f9a0c1d2e4b": stable, "77aa01bc9e0f": canary}, FINISHED)
    assert document == {
        "id": EVAL_ID,
        "state": "Succeeded",
        "message": "4 example(s) x 2 revision(s) scored by exact_match; "
        "77aa01bc9e0f: 2 of 4 predictions failed (first: upstream_error: the LM call failed)",
        "scores": {
            "3f9a0c1d2e4b": {"score": 1.0, "examples": 4, "errors": 0, "costUsd": 0.0004},
            "77aa01bc9e0f": {"score": 0.375, "examples": 4, "errors": 2, "costUsd": 0.0004},
        },
        "finishedAt": "2026-12-01T21:30:05Z",
    }
    json.dumps(document)  # plain JSON values only


def test_failed_document_and_rfc3339_in_utc() -> None:
    local = FINISHED.astimezone(timezone(timedelta(hours=2)))
    assert failed_document("x", "invalid evaluation request: ...", local) == {
        "id": "x",
        "state": "Failed",
        "message": "invalid evaluation request: ...",
        "scores": {},
        "finishedAt": "2026-12-01T21:30:05Z",
    }


def test_an_empty_tally_scores_zero() -> None:
    assert RevisionTally().public() == {"score": 0.0, "examples": 0, "errors": 0, "costUsd": 0.0}


def test_keys_live_under_the_resource_prefix() -> None:
    keys = EvalKeys("dspy:{ns/qa}:")
    assert keys.channel == "dspy:{ns/qa}:eval"
    assert keys.pending == "dspy:{ns/qa}:eval:pending"
    assert keys.request("abc") == "dspy:{ns/qa}:eval:abc"
    assert keys.lock("abc") == "dspy:{ns/qa}:eval:abc:lock"
    assert keys.result("abc") == "dspy:{ns/qa}:eval:abc:result"


def test_evaluator_refuses_nonsense_limits() -> None:
    async def predict(eval_id: str, revision: str, inputs: dict[str, Any], index: int) -> EvalPrediction:
        return EvalPrediction({})

    class NoRedis:
        def register_script(self, text: str) -> None:
            return None

    with pytest.raises(ValueError, match="concurrency"):
        Evaluator(NoRedis(), "dspy:{ns/qa}:", "pod-0", predict, concurrency=0)  # type: ignore[arg-type]


# ---- scoring a request ----------------------------------------------------------------------------


class RecordingPredict:
    """Answers right for revision ``good``, wrong for ``bad``, fails for ``broken``; tracks concurrency."""

    def __init__(self, delay: float = 0.0) -> None:
        self.calls: list[tuple[str, int]] = []
        self.in_flight = 0
        self.most_in_flight = 0
        self._delay = delay

    async def __call__(self, eval_id: str, revision: str, inputs: dict[str, Any], index: int) -> EvalPrediction:
        self.calls.append((revision, index))
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await asyncio.sleep(self._delay)
        finally:
            self.in_flight -= 1
        if revision == "broken":
            raise UpstreamError("the LM call failed (openai/x: error, HTTP 500)")
        if revision == "crashing":
            raise KeyError("secret-ish detail")
        answer = f" ANSWER {inputs['q']} " if revision == "good" else "wrong"
        return EvalPrediction({"answer": answer}, cost_usd=0.001)


def examples(n: int) -> list[dict[str, Any]]:
    return [{"inputs": {"q": i}, "expected": {"answer": f"answer {i}"}} for i in range(n)]


async def test_score_request_scores_each_revision_and_bounds_concurrency() -> None:
    request = parse_request(request_json(revisions=["good", "bad", "broken"], examples=examples(10)), EVAL_ID)
    predict = RecordingPredict(delay=0.01)
    tallies = await score_request(request, predict, concurrency=4)
    assert predict.most_in_flight == 4
    assert len(predict.calls) == 30
    # Example by example, each through every revision in turn.
    assert predict.calls[:6] == [("good", 0), ("bad", 0), ("broken", 0), ("good", 1), ("bad", 1), ("broken", 1)]
    assert tallies["good"].public() == {"score": 1.0, "examples": 10, "errors": 0, "costUsd": 0.01}
    assert tallies["bad"].public() == {"score": 0.0, "examples": 10, "errors": 0, "costUsd": 0.01}
    assert tallies["broken"].public() == {"score": 0.0, "examples": 10, "errors": 10, "costUsd": 0.0}
    assert tallies["broken"].first_error == "upstream_error: the LM call failed (openai/x: error, HTTP 500)"


async def test_unexpected_exceptions_count_as_errors_with_only_their_class_name() -> None:
    request = parse_request(request_json(revisions=["crashing"], examples=examples(2)), EVAL_ID)
    tallies = await score_request(request, RecordingPredict(), concurrency=8)
    assert tallies["crashing"].errors == 2
    assert tallies["crashing"].first_error == "KeyError"


async def test_fewer_pairs_than_concurrency_start_fewer_workers() -> None:
    request = parse_request(request_json(revisions=["good"], examples=examples(1)), EVAL_ID)
    predict = RecordingPredict(delay=0.01)
    tallies = await score_request(request, predict, concurrency=64)
    assert predict.calls == [("good", 0)] and tallies["good"].examples == 1


# ---- the adapter to the prediction service --------------------------------------------------------


@dataclasses.dataclass
class FakeResult:
    outputs: dict[str, Any]
    cost_usd: float


class FakeService:
    def __init__(self, refusals: int = 0) -> None:
        self.calls: list[PredictCall] = []
        self.request_ids: list[str | None] = []
        self._refusals = refusals

    async def predict(self, call: PredictCall) -> FakeResult:
        self.calls.append(call)
        self.request_ids.append(request_id_var.get())
        if len(self.calls) <= self._refusals:
            raise RateLimited("rate limit exceeded; retry later", retry_after=0.001)
        return FakeResult({"answer": "4"}, 0.002)


async def test_make_predict_pins_the_revision_and_keys_the_variant_by_index() -> None:
    service = FakeService()
    predict = make_predict(service)  # type: ignore[arg-type]
    prediction = await predict("abc", "3f9a0c1d2e4b", {"question": "2+2?"}, 7)
    assert prediction == EvalPrediction({"answer": "4"}, 0.002)
    (call,) = service.calls
    assert call.request_id == "eval-abc-7"
    assert call.revision == "3f9a0c1d2e4b"
    assert call.sticky_value == "eval-7"
    assert call.inputs == {"question": "2+2?"}
    assert call.variant is None and call.use_cache
    assert call.analyzed is False, "the gate's own predictions stay out of the analysis windows"
    assert service.request_ids == ["eval-abc-7"]  # log lines of the service name the prediction
    assert request_id_var.get() is None


async def test_make_predict_waits_out_rate_limits() -> None:
    service = FakeService(refusals=2)
    prediction = await make_predict(service)("abc", "r", {"q": 1}, 0)  # type: ignore[arg-type]
    assert prediction.outputs == {"answer": "4"} and len(service.calls) == 3


async def test_make_predict_gives_up_after_many_rate_limits(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("dspy_runtime.evaluation.RATE_LIMIT_WAITS", 2)
    service = FakeService(refusals=100)
    with pytest.raises(RateLimited):
        await make_predict(service)("abc", "r", {"q": 1}, 0)  # type: ignore[arg-type]
    assert len(service.calls) == 3


# ---- the setting ----------------------------------------------------------------------------------


def test_eval_concurrency_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    assert RuntimeSettings().eval_concurrency == 4
    monkeypatch.setenv("EVAL_CONCURRENCY", "16")
    assert RuntimeSettings().eval_concurrency == 16
    for bad in ("0", "65"):
        monkeypatch.setenv("EVAL_CONCURRENCY", bad)
        with pytest.raises(ValidationError, match="eval_concurrency"):
            RuntimeSettings()
