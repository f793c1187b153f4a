"""How the evaluation gate scores one prediction against a dev-set example (pure).

The contract's three metrics, compared field by field: exact match (stripped,
casefolded equality), contains (the expected text appears in the output) and F1
(SQuAD-style token overlap over runs of Unicode letters and digits). Non-string
values are compared by their JSON text with sorted keys, so two equal objects match
whatever key order the model used.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any, Literal

import orjson


Metric = Callable[[Any, Any], float]
"""``metric(output, expected) -> score in [0, 1]`` for one field."""

_TOKEN = re.compile(r"[^\W_]+")  # runs of Unicode letters and digits


def _text(value: Any) -> str:
    """Strings as they are; anything else as its JSON text (``42``, ``true``, ``["a"]``), keys sorted
    so two equal objects compare equal whatever order the LM wrote their keys in."""
    if isinstance(value, str):
        return value
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS, default=str).decode()


def _normal(value: Any) -> str:
    return _text(value).strip().casefold()


def exact_match(output: Any, expected: Any) -> float:
    """1.0 when equal after strip and casefold (``" Paris "`` = ``"paris"``; ``"Paris."`` is not)."""
    return float(_normal(output) == _normal(expected))


def contains(output: Any, expected: Any) -> float:
    """1.0 when ``expected``, stripped and casefolded, is a substring of the casefolded output.

    An empty expected value is in every output, so it scores 1.0.
    """
    return float(_normal(expected) in _text(output).casefold())


def tokens(value: Any) -> list[str]:
    """The casefolded runs of letters and digits: ``"The U.S.-born"`` -> ``["the", "u", "s", "born"]``."""
    return _TOKEN.findall(_text(value).casefold())


def f1(output: Any, expected: Any) -> float:
    """SQuAD-style token F1: the harmonic mean of token precision and recall (tokens counted
    with multiplicity). The contract defines the tokens (letters and digits, casefolded), so,
    unlike SQuAD's English-only normalizer, articles are not dropped. When either side has no
    tokens the score is 1.0 if both have none, else 0.0 (as SQuAD v2's evaluator does)."""
    predicted, gold = tokens(output), tokens(expected)
    if not predicted or not gold:
        return float(predicted == gold)
    remaining: dict[str, int] = {}
    for token in gold:
        remaining[token] = remaining.get(token, 0) + 1
    common = 0
    for token in predicted:
        if remaining.get(token, 0) > 0:
            remaining[token] -= 1
            common += 1
    if common == 0:
        return 0.0
    precision, recall = common / len(predicted), common / len(gold)
    return 2 * precision * recall / (precision + recall)


MetricName = Literal["exact_match", "contains", "f1"]
METRICS: Mapping[str, Metric] = {"exact_match": exact_match, "contains": contains, "f1": f1}


def score_example(outputs: Mapping[str, Any], expected: Mapping[str, Any], metric: Metric) -> float:
    """The metric averaged over the expected fields; an expected field the outputs lack scores 0."""
    if not expected:
        raise ValueError("an example needs at least one expected field")
    total = sum(metric(outputs[name], value) if name in outputs else 0.0 for name, value in expected.items())
    return total / len(expected)
