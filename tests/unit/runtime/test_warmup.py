"""Reading the warm-up file: bad lines reported with their numbers, entries per fitting variant."""

from __future__ import annotations

import json

from dspy_runtime.routing import Router
from dspy_runtime.settings import RuntimeSettings
from dspy_runtime.warmup import entries_of, lock_ttl_secs, read_lines

TABLE = {"revisions": [{"name": "r1", "weight": 100, "variants": [
    {"name": "a", "weight": 50},
    {"name": "b", "weight": 50, "program": {"signature": "context, question -> answer"}},
]}]}


def test_bad_lines_are_numbered_and_blank_ones_ignored(tmp_path):
    path = tmp_path / "warmup.jsonl"
    path.write_bytes(b'{"question": "a"}\n\n   \nnot json\n[1]\n{}\n\xff\xfe\n{"question": "b"}\n')
    objects, problems = read_lines(path)
    assert objects == [(1, {"question": "a"}), (8, {"question": "b"})]
    assert [number for number, _ in problems] == [4, 5, 6, 7]
    assert "not JSON" in problems[0][1] and "not a JSON object" in problems[1][1]


def test_entries_are_distinct_per_variant_they_fit(tmp_path):
    path = tmp_path / "routing.json"
    path.write_text(json.dumps(TABLE))
    variants = Router(RuntimeSettings(routing_path=path)).state.variants
    objects = [(1, {"question": "q"}), (2, {"question": " q  "}), (3, {"context": "c", "question": "q"}),
               (4, {"query": "q"})]
    entries, unfit = entries_of(objects, variants)
    assert [(e.line, e.variant.name) for e in entries] == [(1, "a"), (3, "b")], "line 2 is line 1 normalized"
    assert unfit == [(4, "missing input field(s): question; unknown input field(s): query (expected: question)")]


def test_the_lock_outlives_the_slowest_lm_call_with_its_retries():
    settings = RuntimeSettings(lm_timeout_secs=10, lm_max_retries=2, lm_retry_max_delay_secs=3)
    assert lock_ttl_secs(settings) > 10 * 3 + 3 * 2
