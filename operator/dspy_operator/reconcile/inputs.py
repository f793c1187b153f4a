"""What the desired children depend on besides the spec: user ConfigMaps and Secrets.

Reading them is the only I/O before the pure builders run. Every reference is checked
here, and each problem names the field that holds the reference and the object that
is missing, so the `Degraded` condition tells the user exactly what to create or fix.

They are not watched (see `handlers.indexes` for why); `RecentReads` shares each read among
all resources that refer to the same object for up to REREAD_SECONDS, so the steady cost is
one GET per referenced object per minute, not one per resource per tick.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from cachetools import TTLCache

from dspy_operator import api
from dspy_operator.errors import SpecProblem

Read = Callable[[str, str, str], Mapping[str, Any] | None]
"""(kind, namespace, name) -> the object, or None when it does not exist."""

REREAD_SECONDS = 60.0
"""How old a remembered Secret or ConfigMap may be when a resource's spec did not change: the
delay before a changed saved program rolls out, or a deleted Secret shows as Degraded."""
MAX_REMEMBERED = 4096
"""Objects remembered at most (least recently used go first; a miss only costs a read)."""

# The DSPy modules the runtime builds from a signature. The CRD's enum says the same;
# checked here too so that an object stored under an older schema is reported, not crashed on.
KNOWN_MODULES: frozenset[str] = frozenset({"Predict", "ChainOfThought"})
DEFAULT_PROGRAM_KEY = "program.json"
DEFAULT_DEVSET_KEY = "devset.jsonl"
MAX_DEVSET_EXAMPLES = 1000
"""Examples scored at most: each costs two LM calls (canary and stable) on a cold cache."""


@dataclass(frozen=True, slots=True)
class Program:
    """A saved DSPy program read from a user ConfigMap, addressed by content."""

    content: str

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.content.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Inputs:
    """The resolved references of one spec; `problems` empty means the spec is usable."""

    programs: Mapping[str, Program] = field(default_factory=dict)
    """Saved programs by the field path of their reference (`spec.program`, `spec.variants[1].program`)."""
    devset: tuple[Mapping[str, Any], ...] | None = None
    """The evaluation gate's examples ({inputs, expected}), when spec.rollout.canary (or .blueGreen)
    .analysis.evaluation is set."""
    problems: tuple[SpecProblem, ...] = ()


def secret_refs(spec: Mapping[str, Any]) -> Iterator[tuple[str, Mapping[str, Any]]]:
    """Every Secret reference of a spec with its field path; the builders use the same walk."""
    lm = spec.get("lm") or {}
    if lm.get("apiKeySecretRef"):
        yield "spec.lm.apiKeySecretRef", lm["apiKeySecretRef"]
    for index, fallback in enumerate(lm.get("fallbacks") or []):
        if fallback.get("apiKeySecretRef"):
            yield f"spec.lm.fallbacks[{index}].apiKeySecretRef", fallback["apiKeySecretRef"]
    for index, variant in enumerate(spec.get("variants") or []):
        ref = (variant.get("lm") or {}).get("apiKeySecretRef")
        if ref:
            yield f"spec.variants[{index}].lm.apiKeySecretRef", ref
    redis = spec.get("redis") or {}
    if redis.get("mode") == "External":
        yield "spec.redis.urlSecretRef", redis.get("urlSecretRef") or {}
    cache = spec.get("cache") or {}
    if cache.get("adminTokenSecretRef"):
        yield "spec.cache.adminTokenSecretRef", cache["adminTokenSecretRef"]


def program_sections(spec: Mapping[str, Any]) -> Iterator[tuple[str, Mapping[str, Any]]]:
    """The base program and every variant's program override, with their field paths."""
    yield "spec.program", spec.get("program") or {}
    for index, variant in enumerate(spec.get("variants") or []):
        if variant.get("program"):
            yield f"spec.variants[{index}].program", variant["program"]


def static_problems(spec: Mapping[str, Any]) -> list[SpecProblem]:
    """Problems visible in the spec alone (no cluster reads): unknown modules, bad signatures."""
    problems: list[SpecProblem] = []
    for path, program in program_sections(spec):
        module = program.get("module")
        if module and module not in KNOWN_MODULES:
            problems.append(SpecProblem(
                f"{path}.module",
                f"unknown module {module!r}; expected one of {', '.join(sorted(KNOWN_MODULES))}",
            ))
        signature = program.get("signature")
        if signature and not _is_signature(signature):
            problems.append(SpecProblem(
                f"{path}.signature", f"{signature!r} is not a DSPy signature like \"question -> answer\"",
            ))
    redis = spec.get("redis") or {}
    if redis.get("mode") == "External" and not (redis.get("urlSecretRef") or {}).get("name"):
        problems.append(SpecProblem("spec.redis.urlSecretRef", "required when spec.redis.mode is External"))
    return problems


def _is_signature(text: str) -> bool:
    """DSPy's string form: input fields, `->`, output fields (types are the runtime's business)."""
    inputs, arrow, outputs = text.partition("->")
    return bool(arrow and inputs.strip() and outputs.strip() and "->" not in outputs)


class RecentReads:
    """Reads of referenced objects, remembered for REREAD_SECONDS and shared by every resource.

    `recent` answers from memory when it can, `fresh` always reads (and remembers). Only what
    `gather` needs is kept: a Secret's key names, never its values; a ConfigMap's data. A
    missing object is never remembered, so its appearance is seen by the next read. Handlers
    run in kopf's thread pool, hence the lock."""

    def __init__(self, read: Read, max_age: float = REREAD_SECONDS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._read = read
        self._cache: TTLCache[tuple[str, str, str], Mapping[str, Any]] = TTLCache(MAX_REMEMBERED, max_age, timer=clock)
        self._lock = threading.Lock()

    def recent(self, kind: str, namespace: str, name: str) -> Mapping[str, Any] | None:
        with self._lock:
            remembered = self._cache.get((kind, namespace, name))
        return remembered if remembered is not None else self.fresh(kind, namespace, name)

    def fresh(self, kind: str, namespace: str, name: str) -> Mapping[str, Any] | None:
        obj = self._read(kind, namespace, name)
        if obj is None:
            return None
        data = dict(obj.get("data") or {})
        kept = {"data": dict.fromkeys(data, "") if kind == "Secret" else data}
        with self._lock:
            self._cache[kind, namespace, name] = kept
        return kept


def resolve(reads: RecentReads, namespace: str, spec: Mapping[str, Any], fresh: bool) -> Inputs:
    """`gather` over remembered reads, or over fresh ones when the spec just changed (a user who
    edits a program and the resource together expects the new program) or when a problem turns
    up (it may be fixed by now: a problem is never reported from memory)."""
    if not fresh:
        inputs = gather(reads.recent, namespace, spec)
        if not inputs.problems:
            return inputs
    return gather(reads.fresh, namespace, spec)


def gather(read: Read, namespace: str, spec: Mapping[str, Any]) -> Inputs:
    """Read and check every object the spec refers to; collect all problems, not just the first."""
    problems = static_problems(spec)
    for path, ref in secret_refs(spec):
        if not ref.get("name"):
            continue  # reported by static_problems
        problem = _check_secret_key(read, namespace, path, ref)
        if problem:
            problems.append(problem)
    programs: dict[str, Program] = {}
    for path, program in program_sections(spec):
        ref = program.get("configMapRef")
        if not ref:
            continue
        content_or_problem = _read_configmap_key(read, namespace, f"{path}.configMapRef", ref)
        if isinstance(content_or_problem, SpecProblem):
            problems.append(content_or_problem)
        elif not _is_json_object(content_or_problem):
            problems.append(SpecProblem(f"{path}.configMapRef", f'key "{ref.get("key") or DEFAULT_PROGRAM_KEY}" of '
                                        f'ConfigMap "{ref["name"]}" is not a saved DSPy program (a JSON object)'))
        else:
            programs[path] = Program(content_or_problem)
    devset: tuple[Mapping[str, Any], ...] | None = None
    # The gate is under the strategy's own section (the CRD allows only that one).
    strategy = "blueGreen" if (spec.get("rollout") or {}).get("strategy") == "BlueGreen" else "canary"
    evaluation = ((((spec.get("rollout") or {}).get(strategy) or {}).get("analysis") or {}).get("evaluation")) or {}
    if evaluation.get("configMapRef"):
        path = f"spec.rollout.{strategy}.analysis.evaluation.configMapRef"
        ref = {"key": DEFAULT_DEVSET_KEY, **evaluation["configMapRef"]}
        text_or_problem = _read_configmap_key(read, namespace, path, ref)
        examples_or_problem = text_or_problem if isinstance(text_or_problem, SpecProblem) else parse_devset(path, text_or_problem)
        if isinstance(examples_or_problem, SpecProblem):
            problems.append(examples_or_problem)
        else:
            devset = examples_or_problem
    warmup_ref = ((spec.get("cache") or {}).get("warmup") or {}).get("configMapRef")
    if warmup_ref:
        # Only its presence: a pod cannot start without the mounted key, while the runtime skips
        # (and counts) bad lines itself.
        found = _read_configmap_key(read, namespace, "spec.cache.warmup.configMapRef",
                                    {"key": api.DEFAULT_WARMUP_KEY, **warmup_ref})
        if isinstance(found, SpecProblem):
            problems.append(found)
    return Inputs(programs=programs, devset=devset, problems=tuple(problems))


def _is_json_object(text: str) -> bool:
    try:
        return isinstance(json.loads(text), dict)
    except ValueError:
        return False


def parse_devset(path: str, text: str) -> tuple[Mapping[str, Any], ...] | SpecProblem:
    """JSON Lines of {"inputs": {...}, "expected": {...}}; blank lines are skipped. The first
    bad line is reported with its number, so the user can fix the ConfigMap."""
    examples = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            example = json.loads(line)
        except ValueError as error:
            return SpecProblem(path, f"dev set line {number} is not JSON: {error}")
        if not (isinstance(example, dict) and isinstance(example.get("inputs"), dict)
                and isinstance(example.get("expected"), dict) and example["expected"]):
            return SpecProblem(path, f'dev set line {number} needs "inputs" and "expected" objects')
        examples.append({"inputs": example["inputs"], "expected": example["expected"]})
    if not examples:
        return SpecProblem(path, "the dev set has no examples")
    if len(examples) > MAX_DEVSET_EXAMPLES:
        return SpecProblem(path, f"the dev set has {len(examples)} examples; at most {MAX_DEVSET_EXAMPLES} are scored")
    return tuple(examples)


def _check_secret_key(read: Read, namespace: str, path: str, ref: Mapping[str, Any]) -> SpecProblem | None:
    name, key = ref["name"], ref.get("key")
    secret = read("Secret", namespace, name)
    if secret is None:
        return SpecProblem(path, f'Secret "{name}" not found in namespace "{namespace}"')
    if key and key not in (secret.get("data") or {}):
        return SpecProblem(path, f'Secret "{name}" in namespace "{namespace}" has no key "{key}"')
    return None


def _read_configmap_key(read: Read, namespace: str, path: str, ref: Mapping[str, Any]) -> str | SpecProblem:
    name, key = ref.get("name"), ref.get("key") or DEFAULT_PROGRAM_KEY
    if not name:
        return SpecProblem(path, "name is required")
    configmap = read("ConfigMap", namespace, name)
    if configmap is None:
        return SpecProblem(path, f'ConfigMap "{name}" not found in namespace "{namespace}"')
    data = configmap.get("data") or {}
    if key not in data:
        return SpecProblem(path, f'ConfigMap "{name}" in namespace "{namespace}" has no key "{key}"')
    return str(data[key])
