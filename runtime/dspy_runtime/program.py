"""The DSPy program a variant serves, and the LM it calls.

A program is built from a signature and a module name (``Predict``, ``ChainOfThought``),
then, when there is a saved program (what ``dspy.Module.save("x.json")`` writes:
per-predictor instructions and demos), that state is loaded into it. The saved JSON
comes from a file (``PROGRAM_PATH``, a routing table's ``program.path``) or inline
(a routing table's ``program.state``, how the operator ships a revision's program).
It is checked against the module first, because DSPy's own ``load_state`` matches
fields by position and would silently load an optimized program into the wrong
signature.

The program's *version* is a content hash of signature, module and the saved JSON's
bytes, whichever way they came. It is part of every cache key, so a new optimized
program never serves answers cached for the old one.

This module is the only place (with ``service.py`` using what it returns) that
touches DSPy. The runtime owns caching and retries, so every ``dspy.LM`` is built
with ``cache=False, num_retries=0`` and DSPy's own caches are switched off.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dspy
import litellm
import orjson
from pydantic import SecretStr

from .errors import InvalidInput
from .settings import KNOWN_MODULES

log = logging.getLogger(__name__)

MODULES: dict[str, type[dspy.Module]] = {"Predict": dspy.Predict, "ChainOfThought": dspy.ChainOfThought}
assert set(MODULES) == set(KNOWN_MODULES)

MAX_INPUT_DEPTH = 32
"""How deeply lists and objects may nest in one input value (``"q"`` is 0, ``["q"]`` is 1).

Everything downstream of the parser recurses over inputs with its own limit: the
cache key's encoder (orjson) at 255 levels, DSPy's formatting at Python's recursion
limit (a RecursionError, 500, with the cache off). One bound well below all of them,
checked before any of them runs, gives the same 422 on every path; no LM prompt
needs more."""

LM_CALLS_PER_PREDICTOR = 2
"""At most this many LM calls per predictor and prediction: DSPy's ``ChatAdapter`` asks again
through ``JSONAdapter`` when it cannot parse the first answer, and both calls are billed."""


class ProgramError(Exception):
    """A program that cannot be built or loaded: a startup error, or a rejected routing table."""


def disable_dspy_caches() -> None:
    """Turn off DSPy's memory and disk caches: the runtime caches answers itself, and pods write no files."""
    dspy.configure_cache(enable_disk_cache=False, enable_memory_cache=False)


@dataclass(frozen=True)
class ProgramSpec:
    """What to build: a signature, a module, and optionally a saved program: a JSON file
    (``path``) or the JSON itself (``state``, bytes); the routing table refuses both at once."""

    signature: str
    module: str
    path: Path | None = None
    state: bytes | None = field(default=None, repr=False)

    @property
    def saved_name(self) -> str:
        """How messages name the saved program."""
        return f"saved program {self.path}" if self.path is not None else "inline saved program"

    def saved_bytes(self) -> bytes | None:
        """The saved program's JSON (read from the file if it is one), or None without one."""
        if self.state is not None:
            return self.state
        if self.path is None:
            return None
        try:
            return self.path.read_bytes()
        except OSError as exc:
            raise ProgramError(f"cannot read {self.saved_name}: {exc.strerror}") from None


@dataclass(frozen=True)
class LMSpec:
    """One LM endpoint; ``api_key`` stays a ``SecretStr`` until the ``dspy.LM`` is built."""

    model: str
    api_base: str | None = None
    api_key: SecretStr | None = field(default=None, repr=False)
    temperature: float = 0.0
    max_tokens: int = 512
    timeout_secs: float = 30.0

    def fingerprint(self) -> str:
        """What changes answers (not the key, not the timeout): part of the cache key version."""
        raw = orjson.dumps([self.model, self.api_base, self.temperature, self.max_tokens])
        return hashlib.sha256(raw).hexdigest()[:8]

    def public(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "api_base": self.api_base,
            "api_key": "set" if self.api_key is not None else None,
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
            "timeout_secs": self.timeout_secs,
        }


def build_lm(spec: LMSpec) -> dspy.LM:
    """A ``dspy.LM`` without DSPy's cache and retries (the runtime owns both)."""
    kwargs: dict[str, Any] = {"timeout": spec.timeout_secs}
    if spec.api_base:
        kwargs["api_base"] = spec.api_base
    if spec.api_key is not None:
        kwargs["api_key"] = spec.api_key.get_secret_value()
    try:
        return dspy.LM(
            spec.model,
            temperature=spec.temperature,
            max_tokens=spec.max_tokens,
            cache=False,
            num_retries=0,
            **kwargs,
        )
    except (ValueError, TypeError, dspy.LMError) as exc:  # message names the model, never the key
        raise ProgramError(f"cannot configure LM {spec.model!r}: {exc}") from None


@dataclass(frozen=True)
class Program:
    """A built DSPy module and what the API needs to know about it."""

    spec: ProgramSpec
    module: dspy.Module
    version: str
    input_fields: tuple[str, ...]
    output_fields: tuple[str, ...]
    """The signature's own output fields; the module may add more (``reasoning``)."""
    text_fields: frozenset[str]
    """Input fields typed ``str`` (the default): DSPy formats a list given for one as numbered
    passages, and raises a TypeError on any item that is not a string."""

    def validate_inputs(self, inputs: Mapping[str, Any] | None, single: Any = None) -> dict[str, Any]:
        """The keyword arguments for the module, or ``InvalidInput`` naming the field at fault:
        missing and unknown fields, values nested deeper than ``MAX_INPUT_DEPTH``, a list for a
        text field with an item that is not a string (``inputs.question[0]``).

        ``single`` is the API's ``input: "..."`` shorthand, allowed for one-input signatures.
        """
        if single is not None:
            if len(self.input_fields) != 1:
                raise InvalidInput(
                    f"'input' is shorthand for a single-input signature; this one takes "
                    f"{', '.join(self.input_fields)}: send 'inputs' with those fields"
                )
            name = self.input_fields[0]
            if type(single) is not str:  # the usual case needs no walk
                self._check_value(name, single, "input")
            return {name: single}
        given = dict(inputs or {})
        if len(given) == len(self.input_fields) and all(name in given for name in self.input_fields):
            for name, value in given.items():
                if type(value) is not str:
                    self._check_value(name, value, f"inputs.{name}")
            return given  # the usual case: exactly the signature's fields
        missing = [name for name in self.input_fields if name not in given]
        unknown = sorted(name for name in given if name not in self.input_fields)
        problems = []
        if missing:
            problems.append(f"missing input field(s): {', '.join(missing)}")
        if unknown:
            problems.append(f"unknown input field(s): {', '.join(unknown)}")
        if problems:
            raise InvalidInput(f"{'; '.join(problems)} (expected: {', '.join(self.input_fields)})")
        return given

    def _check_value(self, name: str, value: Any, where: str) -> None:
        if isinstance(value, (list, dict)) and _nests_deeper(value, MAX_INPUT_DEPTH):
            raise InvalidInput(f"{where}: lists and objects nest deeper than {MAX_INPUT_DEPTH} levels")
        if name in self.text_fields and isinstance(value, list):
            for index, item in enumerate(value):
                if not isinstance(item, str):
                    raise InvalidInput(
                        f"{where}[{index}]: must be a string (a list for a text field is sent as passages of text)"
                    )

    @property
    def max_lm_calls(self) -> int:
        """The most LM calls one prediction of this program can make (see ``LM_CALLS_PER_PREDICTOR``)."""
        return len(self.module.predictors()) * LM_CALLS_PER_PREDICTOR

    def prompt_tokens(self, kwargs: Mapping[str, Any], model: str) -> int:
        """The tokens of the prompt each predictor sends for ``kwargs``, as litellm counts them for
        ``model`` (its tokenizer, else a GPT one): what the budget reserves for the prompt.

        The prompt is formatted the way ``ChatAdapter`` formats it for the LM (instructions,
        field descriptions, demos, inputs), so a saved program's demos count too. The most of
        any predictor is returned: every predictor of the known modules gets the same inputs.
        About 0.2 ms, paid only on the way to the LM.
        """
        adapter = dspy.ChatAdapter()
        return max(
            litellm.token_counter(model=model, messages=adapter.format(p.signature, p.demos, dict(kwargs)))
            for p in self.module.predictors()
        )

    def public(self) -> dict[str, Any]:
        return {
            "signature": self.spec.signature,
            "module": self.spec.module,
            "path": str(self.spec.path) if self.spec.path else None,
            "inline_state": self.spec.state is not None,
            "version": self.version,
            "input_fields": list(self.input_fields),
            "output_fields": list(self.output_fields),
        }


def _nests_deeper(container: list[Any] | dict[str, Any], levels: int) -> bool:
    """Whether ``container`` holds lists or objects more than ``levels`` deep (itself is level 1).

    Recursion stops at ``levels``, so a hostile value nested a thousand deep costs ``levels`` frames."""
    if levels == 0:
        return True
    children = container.values() if isinstance(container, dict) else container
    return any(isinstance(child, (list, dict)) and _nests_deeper(child, levels - 1) for child in children)


def _signature(text: str) -> type[dspy.Signature]:
    try:
        signature = dspy.Signature(text)
    except (ValueError, TypeError, SyntaxError) as exc:
        raise ProgramError(f"invalid DSPy signature {text!r}: {exc}") from None
    if not signature.input_fields or not signature.output_fields:
        raise ProgramError(f"DSPy signature {text!r} needs at least one input and one output field")
    return signature


def _check_saved_state(module: dspy.Module, state: Mapping[str, Any], spec: ProgramSpec) -> None:
    """Refuse saved state that does not fit ``module`` (DSPy would load it by field position)."""
    where = spec.saved_name
    predictors = module.named_predictors()
    if [name for name, _ in predictors] == ["self"]:  # a bare Predict saves its state unnested
        pairs = [("self", predictor, state) for _, predictor in predictors]
    else:
        expected = sorted(name for name, _ in predictors)
        saved = sorted(key for key in state if key != "metadata")
        if saved != expected:
            raise ProgramError(
                f"{where} holds predictors {saved}, but {spec.module}({spec.signature!r}) has {expected}: "
                "it was saved from a different module or program"
            )
        pairs = [(name, predictor, state[name]) for name, predictor in predictors]
    for name, predictor, saved_state in pairs:
        if not isinstance(saved_state, Mapping) or "signature" not in saved_state:
            raise ProgramError(f"{where}: predictor {name!r} has no saved signature; was it saved from {spec.module}?")
        saved_fields = saved_state["signature"].get("fields", [])
        fields = list(predictor.signature.fields)
        if len(saved_fields) != len(fields):
            raise ProgramError(
                f"{where}: predictor {name!r} was saved with {len(saved_fields)} fields, "
                f"but {spec.module}({spec.signature!r}) has {len(fields)} ({', '.join(fields)})"
            )
        for demo in saved_state.get("demos", []):
            stray = sorted(set(demo) - set(fields) - {"augmented"}) if isinstance(demo, Mapping) else []
            if stray:
                raise ProgramError(f"{where}: a demo of predictor {name!r} has fields {stray} not in the signature")


def load_program(spec: ProgramSpec) -> Program:
    """Build the module, load the saved state if any, and compute the version."""
    if spec.module not in MODULES:
        raise ProgramError(f"unknown DSPy module {spec.module!r}; known modules: {', '.join(MODULES)}")
    signature = _signature(spec.signature)
    module = MODULES[spec.module](signature)
    saved = spec.saved_bytes()
    if saved is not None:
        try:
            state = orjson.loads(saved)
        except orjson.JSONDecodeError as exc:
            raise ProgramError(f"{spec.saved_name} is not JSON: {exc}") from None
        if not isinstance(state, Mapping):
            raise ProgramError(f"{spec.saved_name} is not a JSON object")
        _check_saved_state(module, state, spec)
        try:
            module.load_state(state)
        except (KeyError, ValueError, TypeError) as exc:
            raise ProgramError(f"cannot load {spec.saved_name}: {type(exc).__name__}: {exc}") from None
        for name, predictor in module.named_predictors():
            if predictor.lm is not None:
                # A saved LM would bypass the runtime's LM settings, key and breaker.
                log.warning("ignoring the LM saved with predictor %r of the %s", name, spec.saved_name)
                predictor.lm = None
    digest = hashlib.sha256()
    for part in (spec.signature.encode(), spec.module.encode(), saved or b""):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return Program(
        spec=spec,
        module=module,
        version=digest.hexdigest()[:16],
        input_fields=tuple(signature.input_fields),
        output_fields=tuple(signature.output_fields),
        text_fields=frozenset(name for name, info in signature.input_fields.items() if info.annotation is str),
    )
