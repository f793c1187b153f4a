"""Building and loading programs; input validation; versions."""

from __future__ import annotations

import json
import re

import dspy
import pytest

from dspy_runtime.cache import cache_key
from dspy_runtime.errors import InvalidInput
from dspy_runtime.program import MAX_INPUT_DEPTH, LMSpec, ProgramError, ProgramSpec, build_lm, load_program


def test_builds_predict_and_chain_of_thought():
    plain = load_program(ProgramSpec("question -> answer", "Predict"))
    cot = load_program(ProgramSpec("question -> answer", "ChainOfThought"))
    assert isinstance(plain.module, dspy.Predict)
    assert isinstance(cot.module, dspy.ChainOfThought)
    assert plain.input_fields == ("question",) and cot.output_fields == ("answer",)
    assert plain.version != cot.version


def test_version_is_a_content_hash():
    a = load_program(ProgramSpec("question -> answer", "Predict"))
    b = load_program(ProgramSpec("question -> answer", "Predict"))
    c = load_program(ProgramSpec("question -> reply", "Predict"))
    assert a.version == b.version != c.version
    assert len(a.version) == 16


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        (ProgramSpec("question -> answer", "ReAct"), "unknown DSPy module 'ReAct'"),
        (ProgramSpec("no arrow here", "Predict"), "invalid DSPy signature"),
        (ProgramSpec("question -> answer: NotAType", "Predict"), "invalid DSPy signature"),
    ],
)
def test_bad_programs_are_clear_errors(spec, fragment):
    with pytest.raises(ProgramError, match=fragment):
        load_program(spec)


def _saved(tmp_path, module, name="program.json"):
    path = tmp_path / name
    module.save(str(path))
    return path


def test_saved_program_state_is_loaded_and_versioned(tmp_path):
    tuned = dspy.ChainOfThought("question -> answer")
    tuned.predict.demos = [dspy.Example(question="1+1?", reasoning="add", answer="2")]
    tuned.predict.signature = tuned.predict.signature.with_instructions("Be terse.")
    path = _saved(tmp_path, tuned)
    program = load_program(ProgramSpec("question -> answer", "ChainOfThought", path))
    assert program.module.predict.signature.instructions == "Be terse."
    assert len(program.module.predict.demos) == 1
    assert program.version != load_program(ProgramSpec("question -> answer", "ChainOfThought")).version


def test_saved_lm_is_ignored(tmp_path):
    tuned = dspy.Predict("question -> answer")
    tuned.lm = dspy.LM("openai/gpt-4o-mini", cache=False)
    path = _saved(tmp_path, tuned)
    assert json.loads(path.read_text())["lm"] is not None
    program = load_program(ProgramSpec("question -> answer", "Predict", path))
    assert program.module.lm is None


@pytest.mark.parametrize(
    ("saved_from", "load_as", "fragment"),
    [
        (("question -> answer", dspy.ChainOfThought), ("question -> answer", "Predict"), "no saved signature"),
        (("question -> answer", dspy.Predict), ("question -> answer", "ChainOfThought"), "holds predictors"),
        (("question -> answer", dspy.Predict), ("question, context -> answer", "Predict"), "saved with 2 fields"),
    ],
)
def test_saved_program_that_does_not_fit_is_refused(tmp_path, saved_from, load_as, fragment):
    signature, module = saved_from
    path = _saved(tmp_path, module(signature))
    with pytest.raises(ProgramError, match=fragment):
        load_program(ProgramSpec(load_as[0], load_as[1], path))


def test_unreadable_or_non_json_saved_program(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{nope")
    with pytest.raises(ProgramError, match="is not JSON"):
        load_program(ProgramSpec("question -> answer", "Predict", bad))
    with pytest.raises(ProgramError, match="cannot read saved program"):
        load_program(ProgramSpec("question -> answer", "Predict", tmp_path / "missing.json"))


def test_validate_inputs():
    program = load_program(ProgramSpec("question, context -> answer", "Predict"))
    assert program.validate_inputs({"question": "q", "context": "c"}) == {"question": "q", "context": "c"}
    with pytest.raises(InvalidInput, match="missing input field\\(s\\): context"):
        program.validate_inputs({"question": "q"})
    with pytest.raises(InvalidInput, match="unknown input field\\(s\\): zzz"):
        program.validate_inputs({"question": "q", "context": "c", "zzz": 1})
    with pytest.raises(InvalidInput, match="single-input"):
        program.validate_inputs(None, "shorthand")
    single = load_program(ProgramSpec("question -> answer", "Predict"))
    assert single.validate_inputs(None, "shorthand") == {"question": "shorthand"}


def test_lm_is_built_without_dspy_cache_or_retries():
    lm = build_lm(LMSpec("openai/fake", api_base="http://127.0.0.1:1/v1", temperature=0.3, max_tokens=64, timeout_secs=5))
    assert lm.cache is False and lm.num_retries == 0
    assert lm.kwargs["temperature"] == 0.3 and lm.kwargs["timeout"] == 5
    with pytest.raises(ProgramError, match="cannot configure LM"):
        build_lm(LMSpec("openai/"))


def test_lm_fingerprint_ignores_key_and_timeout():
    from pydantic import SecretStr

    a = LMSpec("m", api_key=SecretStr("k1"), timeout_secs=1)
    b = LMSpec("m", api_key=SecretStr("k2"), timeout_secs=9)
    assert a.fingerprint() == b.fingerprint() != LMSpec("m", temperature=0.5).fingerprint()
    assert "k1" not in repr(a) and a.public()["api_key"] == "set"


def test_inline_state_loads_like_the_file_and_its_bytes_make_the_version(tmp_path):
    tuned = dspy.Predict("question -> answer")
    tuned.demos = [dspy.Example(question="1+1?", answer="2")]
    tuned.signature = tuned.signature.with_instructions("Be terse.")
    path = _saved(tmp_path, tuned)
    from_file = load_program(ProgramSpec("question -> answer", "Predict", path))
    inline = load_program(ProgramSpec("question -> answer", "Predict", state=path.read_bytes()))
    assert inline.module.signature.instructions == "Be terse." and len(inline.module.demos) == 1
    # The same bytes hash alike, whichever way they came; other bytes version differently.
    assert inline.version == from_file.version
    other = json.loads(path.read_text()) | {"demos": []}
    assert load_program(ProgramSpec("question -> answer", "Predict", state=json.dumps(other).encode())).version != inline.version
    assert inline.public()["inline_state"] is True and inline.public()["path"] is None


@pytest.mark.parametrize(
    ("state", "fragment"),
    [(b"{nope", "inline saved program is not JSON"), (b"[]", "inline saved program is not a JSON object")],
)
def test_bad_inline_state_is_a_clear_error(state, fragment):
    with pytest.raises(ProgramError, match=fragment):
        load_program(ProgramSpec("question -> answer", "Predict", state=state))


def test_a_list_for_a_text_field_must_hold_strings():
    program = load_program(ProgramSpec("question, context: list[int] -> answer", "Predict"))
    assert program.text_fields == {"question"}
    assert program.validate_inputs({"question": ["a", "b"], "context": [1, 2]})["question"] == ["a", "b"]
    for value, where in (([1, "a"], "inputs.question[0]"), (["a", None], "inputs.question[1]"), (["a", ["b"]], "inputs.question[1]")):
        with pytest.raises(InvalidInput, match=re.escape(where) + ": must be a string"):
            program.validate_inputs({"question": value, "context": []})
    single = load_program(ProgramSpec("question -> answer", "Predict"))
    with pytest.raises(InvalidInput, match=re.escape("input[0]: must be a string")):
        single.validate_inputs(None, [1])
    # Objects and scalars are sent as JSON or text, as DSPy formats them: not refused.
    assert single.validate_inputs(None, {"a": [1, None]}) == {"question": {"a": [1, None]}}
    assert single.validate_inputs(None, 3) == {"question": 3}


def _nested(depth: int) -> object:
    value: object = "leaf"
    for level in range(depth):
        value = [value] if level % 2 else {"k": value}
    return value


def test_inputs_nest_at_most_max_input_depth_levels():
    program = load_program(ProgramSpec("question: dict -> answer", "Predict"))
    assert program.validate_inputs({"question": _nested(MAX_INPUT_DEPTH)})
    for depth in (MAX_INPUT_DEPTH + 1, 1000):
        with pytest.raises(InvalidInput, match=f"inputs.question: lists and objects nest deeper than {MAX_INPUT_DEPTH} levels"):
            program.validate_inputs({"question": _nested(depth)})
    # Deep inside a wide value, and through the single-input shorthand.
    with pytest.raises(InvalidInput, match="^input: lists"):
        program.validate_inputs(None, ["a", {"b": 1}, _nested(MAX_INPUT_DEPTH)])
    # The bound is below what the cache key's encoder can take, so both paths refuse alike.
    cache_key("v", "m", "default", {"question": _nested(MAX_INPUT_DEPTH)})


def test_the_prompt_estimate_counts_inputs_instructions_and_demos(tmp_path):
    """What the budget reserves for the prompt: the formatted prompt's tokens, so longer inputs
    and a saved program's demos cost more; two LM calls a predictor (the JSON retry)."""
    plain = load_program(ProgramSpec("question -> answer", "Predict"))
    short = plain.prompt_tokens({"question": "hi"}, "openai/gpt-4o-mini")
    long = plain.prompt_tokens({"question": "hi " * 500}, "openai/gpt-4o-mini")
    assert 20 < short < long and long - short >= 400
    demos = tmp_path / "demos.json"
    saved = plain.module.dump_state()
    saved["demos"] = [{"question": f"example question {i} " * 20, "answer": "an answer"} for i in range(3)]
    demos.write_text(json.dumps(saved))
    with_demos = load_program(ProgramSpec("question -> answer", "Predict", demos))
    assert with_demos.prompt_tokens({"question": "hi"}, "openai/gpt-4o-mini") > short + 150
    assert plain.max_lm_calls == 2
    assert load_program(ProgramSpec("question -> answer", "ChainOfThought")).max_lm_calls == 2
