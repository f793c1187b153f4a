"""The evaluation gate's request to the runtime pods (pure).

The operator carries no dspy, so it cannot score a dev set itself: it hands the examples
to the runtime through Redis (see `runtimebus.RuntimeBus.request_evaluation`), one pod
scores both revisions, and the result comes back the same way. The request's id is a
content hash, so asking twice (a retried pass, a restarted operator) is asking once, and
a changed dev set or metric is a new evaluation.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from dspy_operator.reconcile.common import canonical_hash

METRICS: Mapping[str, str] = {"ExactMatch": "exact_match", "Contains": "contains", "F1": "f1"}
"""The CRD's metric names -> the runtime's."""
ID_LENGTH = 16


def evaluation_request(stable: str, canary: str, metric: str, examples: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    body = {"revisions": [stable, canary], "metric": METRICS[metric], "examples": [dict(example) for example in examples]}
    return {"id": canonical_hash(body)[:ID_LENGTH], **body}
