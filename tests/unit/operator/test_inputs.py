"""Spec problems name the field and the missing object; programs are read by reference; reads
are remembered for a while, Secret values never."""

from __future__ import annotations

import json
from typing import Any

import pytest

from dspy_operator.errors import SpecProblem
from dspy_operator.reconcile.inputs import MAX_DEVSET_EXAMPLES, RecentReads, gather, parse_devset, resolve, static_problems


class FakeKube:
    """Only `get` is needed: gather() reads, it never writes. Counts the reads."""

    def __init__(self, objects: dict[tuple[str, str], dict[str, Any]]) -> None:
        self.objects = objects
        self.reads = 0

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        self.reads += 1
        return self.objects.get((kind, name))


def test_missing_secret_names_field_object_and_namespace(body):
    inputs = gather(FakeKube({}).get, "demo", body()["spec"])  # type: ignore[arg-type]
    assert [str(problem) for problem in inputs.problems] == [
        'spec.lm.apiKeySecretRef: Secret "openai" not found in namespace "demo"',
    ]


def test_missing_key_and_configmap_are_reported_together(body):
    spec = body({"program": {"signature": "q -> a", "configMapRef": {"name": "prog", "key": "program.json"}}})["spec"]
    kube = FakeKube({("Secret", "openai"): {"data": {"other": "eA=="}}})
    problems = [str(problem) for problem in gather(kube.get, "demo", spec).problems]  # type: ignore[arg-type]
    assert problems == [
        'spec.lm.apiKeySecretRef: Secret "openai" in namespace "demo" has no key "api-key"',
        'spec.program.configMapRef: ConfigMap "prog" not found in namespace "demo"',
    ]


def test_programs_are_read_when_everything_exists(body):
    spec = body({
        "program": {"signature": "q -> a", "configMapRef": {"name": "prog", "key": "program.json"}},
        "variants": [{"name": "a", "weight": 50}, {"name": "b", "weight": 50, "program": {"configMapRef": {"name": "opt"}}}],
    })["spec"]
    kube = FakeKube({
        ("Secret", "openai"): {"data": {"api-key": "eA=="}},
        ("ConfigMap", "prog"): {"data": {"program.json": "{}"}},
        ("ConfigMap", "opt"): {"data": {"program.json": "{\"b\": 1}"}},
    })
    inputs = gather(kube.get, "demo", spec)  # type: ignore[arg-type]
    assert inputs.problems == ()
    assert inputs.programs["spec.program"].content == "{}"
    assert inputs.programs["spec.variants[1].program"].content == '{"b": 1}'


def test_unknown_module_and_bad_signature(body):
    problems = static_problems({
        "program": {"signature": "no arrow here", "module": "Telepathy"},
        "lm": {"model": "m"},
    })
    assert [problem.field for problem in problems] == ["spec.program.module", "spec.program.signature"]


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_recent_reads_are_shared_until_they_are_a_minute_old_and_keep_no_secret_values(body):
    kube = FakeKube({("Secret", "openai"): {"metadata": {"name": "openai"}, "data": {"api-key": "c2stMTIz"}}})
    clock = Clock()
    reads = RecentReads(kube.get, max_age=60, clock=clock)
    spec = body()["spec"]
    for _ in range(3):  # three resources, or three ticks of one
        assert resolve(reads, "demo", spec, fresh=False).problems == ()
    assert kube.reads == 1
    assert reads.recent("Secret", "demo", "openai") == {"data": {"api-key": ""}}
    resolve(reads, "demo", spec, fresh=True)
    assert kube.reads == 2, "a changed spec reads again"
    clock.now = 61
    resolve(reads, "demo", spec, fresh=False)
    assert kube.reads == 3, "a minute later, too"


def test_a_problem_is_never_reported_from_memory(body):
    kube = FakeKube({("Secret", "openai"): {"data": {"other": "eA=="}}})
    reads = RecentReads(kube.get, max_age=60, clock=Clock())
    spec = body()["spec"]
    assert resolve(reads, "demo", spec, fresh=False).problems
    kube.objects[("Secret", "openai")] = {"data": {"api-key": "eA=="}}
    assert resolve(reads, "demo", spec, fresh=False).problems == ()


OPENAI = {("Secret", "openai"): {"data": {"api-key": "eA=="}}}


@pytest.mark.parametrize("content", ["not json", "[1, 2]", '"a string"', ""])
def test_a_saved_program_must_be_a_json_object(body, content):
    spec = body({"program": {"signature": "q -> a", "configMapRef": {"name": "prog"}}})["spec"]
    kube = FakeKube({**OPENAI, ("ConfigMap", "prog"): {"data": {"program.json": content}}})
    inputs = gather(kube.get, "demo", spec)  # type: ignore[arg-type]
    assert [str(problem) for problem in inputs.problems] == [
        'spec.program.configMapRef: key "program.json" of ConfigMap "prog" is not a saved DSPy program (a JSON object)']
    assert inputs.programs == {}


DEVSET_PATH = "spec.rollout.canary.analysis.evaluation.configMapRef"


def gated(body, ref: dict[str, Any]) -> dict[str, Any]:
    return body({"rollout": {"strategy": "Canary", "canary": {"steps": [{"setWeight": 10}], "analysis": {
        "evaluation": {"configMapRef": ref, "metric": "ExactMatch"}}}}})["spec"]


def lines(*examples: Any) -> str:
    return "\n".join(example if isinstance(example, str) else json.dumps(example) for example in examples)


EXAMPLE = {"inputs": {"question": "2+2?"}, "expected": {"answer": "4"}}


def test_the_dev_set_is_read_from_its_default_key_and_validated(body):
    text = lines(EXAMPLE, "", {**EXAMPLE, "note": "extra keys are dropped"})
    kube = FakeKube({**OPENAI, ("ConfigMap", "devset"): {"data": {"devset.jsonl": text}}})
    inputs = gather(kube.get, "demo", gated(body, {"name": "devset"}))  # type: ignore[arg-type]
    assert inputs.problems == ()
    assert inputs.devset == (EXAMPLE, EXAMPLE)


def test_without_an_evaluation_there_is_no_dev_set(body):
    inputs = gather(FakeKube(OPENAI).get, "demo", body()["spec"])  # type: ignore[arg-type]
    assert inputs.devset is None and inputs.problems == ()


def test_a_missing_dev_set_or_key_names_the_field(body):
    problems = gather(FakeKube(OPENAI).get, "demo", gated(body, {"name": "devset"})).problems  # type: ignore[arg-type]
    assert [str(problem) for problem in problems] == [f'{DEVSET_PATH}: ConfigMap "devset" not found in namespace "demo"']
    kube = FakeKube({**OPENAI, ("ConfigMap", "devset"): {"data": {"devset.jsonl": lines(EXAMPLE)}}})
    problems = gather(kube.get, "demo", gated(body, {"name": "devset", "key": "other.jsonl"})).problems  # type: ignore[arg-type]
    assert [str(problem) for problem in problems] == [
        f'{DEVSET_PATH}: ConfigMap "devset" in namespace "demo" has no key "other.jsonl"']


@pytest.mark.parametrize(("text", "message"), [
    (lines(EXAMPLE, "{not json"), "dev set line 2 is not JSON"),
    (lines(EXAMPLE, {"inputs": {"q": 1}}), 'dev set line 2 needs "inputs" and "expected" objects'),
    (lines({"inputs": {"q": 1}, "expected": {}}), 'dev set line 1 needs "inputs" and "expected" objects'),
    (lines({"inputs": "q", "expected": {"a": 1}}), 'dev set line 1 needs "inputs" and "expected" objects'),
    (lines([1, 2]), 'dev set line 1 needs "inputs" and "expected" objects'),
    ("\n\n", "the dev set has no examples"),
    (lines(*[EXAMPLE] * (MAX_DEVSET_EXAMPLES + 1)), f"at most {MAX_DEVSET_EXAMPLES} are scored"),
])
def test_a_bad_dev_set_is_reported_with_the_first_bad_line(text, message):
    problem = parse_devset(DEVSET_PATH, text)
    assert isinstance(problem, SpecProblem) and problem.field == DEVSET_PATH
    assert message in problem.message


def test_a_blue_green_gate_reads_its_dev_set_from_its_own_section(body):
    spec = body({"rollout": {"strategy": "BlueGreen", "blueGreen": {"analysis": {
        "evaluation": {"configMapRef": {"name": "devset"}, "metric": "ExactMatch"}}}}})["spec"]
    kube = FakeKube({**OPENAI, ("ConfigMap", "devset"): {"data": {"devset.jsonl": lines(EXAMPLE)}}})
    assert gather(kube.get, "demo", spec).devset == (EXAMPLE,)  # type: ignore[arg-type]
    missing = gather(FakeKube(OPENAI).get, "demo", spec)  # type: ignore[arg-type]
    assert [problem.field for problem in missing.problems] == ["spec.rollout.blueGreen.analysis.evaluation.configMapRef"]


def test_the_cache_warmup_configmap_and_admin_token_secret_must_exist(body):
    spec = body({"cache": {"warmup": {"configMapRef": {"name": "warm"}},
                           "adminTokenSecretRef": {"name": "cache-admin", "key": "token"}}})["spec"]
    kube = FakeKube({("Secret", "openai"): {"data": {"api-key": "eA=="}}})
    assert [str(p) for p in gather(kube.get, "demo", spec).problems] == [  # type: ignore[arg-type]
        'spec.cache.adminTokenSecretRef: Secret "cache-admin" not found in namespace "demo"',
        'spec.cache.warmup.configMapRef: ConfigMap "warm" not found in namespace "demo"',
    ]
    kube.objects[("Secret", "cache-admin")] = {"data": {"token": "eA=="}}
    kube.objects[("ConfigMap", "warm")] = {"data": {"other.jsonl": ""}}
    assert [str(p) for p in gather(kube.get, "demo", spec).problems] == [  # type: ignore[arg-type]
        'spec.cache.warmup.configMapRef: ConfigMap "warm" in namespace "demo" has no key "warmup.jsonl"',
    ]
    kube.objects[("ConfigMap", "warm")] = {"data": {"warmup.jsonl": "not even json\n"}}
    assert gather(kube.get, "demo", spec).problems == (), "bad lines are the runtime's to skip and count"  # type: ignore[arg-type]
