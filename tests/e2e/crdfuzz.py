"""Hypothesis strategies for DSPyDeployment specs, drawn from the CRD's own schema.

`specs()` walks `crds/`'s openAPIV3Schema of `spec` and builds values that mostly obey it (types,
enums, bounds, patterns, list sizes), so most drawn resources reach the operator, and then, for
a share of them, breaks one place in the tree: a hostile string (NUL, CR/LF, quotes, template
syntax, 10 KB), a number just past a bound or far out of range, a wrong type, a long list, an
unknown field, null. The CEL rules are not modelled: whatever they refuse is a rejection the
test checks like any other.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from hypothesis import strategies as st

CRD = Path(__file__).resolve().parents[2] / "crds" / "dspy.dev_dspydeployments.yaml"

HOSTILE_STRINGS = (
    "", " ", "\x00", "a\r\nInjected-Header: 1", "'; DROP TABLE x; --", "{{ .Values }}", "${HOME}",
    "<script>alert(1)</script>", "\u202e\u0000\ufffd", "é" * 300, "x" * 10_000, "../../etc/passwd",
)
HOSTILE_VALUES: tuple[Any, ...] = (None, True, -1, 0, 2**63, -(2**63) - 1, 1e308, -0.5, [], {}, ["x"] * 1000,
                                   {"unknownField": "x"})
MAX_LIST = 3
"""Items drawn per list: enough for duplicates and orderings, small enough to stay fast."""


def spec_schema() -> dict[str, Any]:
    document = yaml.safe_load(CRD.read_text())
    version = document["spec"]["versions"][0]
    return version["schema"]["openAPIV3Schema"]["properties"]["spec"]


def specs() -> st.SearchStrategy[dict[str, Any]]:
    """A spec that obeys the schema's shape, or the same with one place broken."""
    schema = spec_schema()
    valid = _of(schema)
    return st.one_of(valid, valid.flatmap(_broken))


def _of(schema: Mapping[str, Any], depth: int = 0) -> st.SearchStrategy[Any]:
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    if schema.get("x-kubernetes-int-or-string"):
        return st.one_of(st.integers(0, 64), st.sampled_from(["100m", "1", "512Mi", "2Gi", "25%", "1.5"]))
    kind = schema.get("type")
    if kind == "object" or "properties" in schema:
        return _object(schema, depth)
    if kind == "array":
        items = _of(schema.get("items") or {"type": "string"}, depth + 1)
        return st.lists(items, min_size=schema.get("minItems", 0), max_size=max(schema.get("minItems", 0),
                                                                                  min(schema.get("maxItems", MAX_LIST), MAX_LIST)))
    if kind == "string":
        return _string(schema)
    if kind == "integer":
        return _number(schema, integer=True)
    if kind == "number":
        return _number(schema, integer=False)
    if kind == "boolean":
        return st.booleans()
    return st.just("x")


def _object(schema: Mapping[str, Any], depth: int) -> st.SearchStrategy[dict[str, Any]]:
    properties = schema.get("properties") or {}
    if not properties:
        # A free-form map (labels, annotations, preserved fields): a few short string entries.
        return st.dictionaries(st.from_regex(r"[a-z][a-z0-9]{0,8}", fullmatch=True), st.text(max_size=8), max_size=2)
    required = set(schema.get("required") or ())
    # Deep optional sections are drawn less often, so specs stay small and reach the operator.
    optional = {name: _of(sub, depth + 1) for name, sub in properties.items() if name not in required}
    if depth >= 2:
        optional = {}
    return st.fixed_dictionaries({name: _of(properties[name], depth + 1) for name in sorted(required)},
                                 optional=optional)


def _string(schema: Mapping[str, Any]) -> st.SearchStrategy[str]:
    low, high = schema.get("minLength", 0), min(schema.get("maxLength", 64), 64)
    pattern = schema.get("pattern")
    if pattern:
        return st.from_regex(pattern, fullmatch=pattern.startswith("^")).filter(lambda text: low <= len(text) <= high)
    return st.text(st.characters(codec="utf-8"), min_size=low, max_size=max(low, high))


def _number(schema: Mapping[str, Any], integer: bool) -> st.SearchStrategy[float | int]:
    low, high = schema.get("minimum"), schema.get("maximum")
    if integer:
        low = -1000 if low is None else int(low)
        high = 10**6 if high is None else int(high)
        edges = [value for value in (low, low + 1, high - 1, high) if low <= value <= high]
        return st.one_of(st.sampled_from(edges), st.integers(low, high))
    low = -1e6 if low is None else float(low)
    high = 1e6 if high is None else float(high)
    if schema.get("exclusiveMinimum"):
        low = math.nextafter(low, math.inf)
    return st.one_of(st.sampled_from([low, high]), st.floats(low, high, allow_nan=False, allow_infinity=False))


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every place in the tree (dict keys and list indexes), the root excluded."""
    found: list[tuple[Any, ...]] = []
    if isinstance(value, dict):
        for key, sub in value.items():
            found += [(*prefix, key), *_paths(sub, (*prefix, key))]
    elif isinstance(value, list):
        for index, sub in enumerate(value):
            found += [(*prefix, index), *_paths(sub, (*prefix, index))]
    return found


def _broken(spec: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    paths = _paths(spec)
    hostile = st.one_of(st.sampled_from(HOSTILE_STRINGS), st.sampled_from(HOSTILE_VALUES))
    if not paths:
        return st.builds(lambda value: {"unknownField": value}, hostile)

    def put(path: tuple[Any, ...], value: Any, unknown: bool) -> dict[str, Any]:
        copy = yaml.safe_load(yaml.safe_dump(spec))
        parent = copy
        for step in path[:-1]:
            parent = parent[step]
        if unknown and isinstance(parent, dict):
            parent[f"unknown{len(path)}"] = value
        else:
            parent[path[-1]] = value
        return copy

    return st.builds(put, st.sampled_from(paths), hostile, st.booleans())
