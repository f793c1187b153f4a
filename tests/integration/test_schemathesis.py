"""schemathesis against the runtime's own OpenAPI document, over real HTTP to the real
``dspy-runtime`` process and the fake LM.

Every operation the document lists, in all three of schemathesis's pytest phases (the
document's examples, fuzzing with valid and invalid data, and the coverage phase's
boundary cases and undocumented methods), every response through every built-in check:
no 5xx, every status documented, every body matching its status's schema, the right
media type and headers, invalid data refused, 405 with ``Allow`` for undocumented methods.
Every POST operation (``/v1/predict``, and the batch endpoint where it is served) gets at
least ``MIN_POST_CASES`` cases. Seeded and derandomized: the same cases on every run.

The document is built in-process from the app (schemathesis's pytest plugin needs it at
collection time; its fixture-based loader does not run on this pytest) and checked equal to
the one the process serves, which every case is sent to.
"""

from __future__ import annotations

from collections import Counter

import httpx
import pytest
import schemathesis

from dspy_runtime.app import create_app
from dspy_runtime.settings import RuntimeSettings

MIN_POST_CASES = 500
ADMIN_TOKEN = "schemathesis-cache-admin-token"
"""Set, so that DELETE /v1/cache is on and its valid requests succeed (without it: 404 disabled)."""
DOCUMENT = create_app(RuntimeSettings(routing_path=None, redis_url=None)).openapi()
CONFIG = schemathesis.Config.from_dict(
    {
        "seed": 14,
        # The document's own security schemes for DELETE /v1/cache; schemathesis also sends
        # requests without them and with wrong ones, which must get 401 and 403.
        "auth": {"openapi": {"HTTPBearer": {"bearer": ADMIN_TOKEN}, "APIKeyHeader": {"api_key": ADMIN_TOKEN}}},
        "generation": {"mode": "all", "deterministic": True, "database": "none", "max-examples": 60},
        "operations": [{"include-method": "POST", "generation": {"max-examples": 700}}],
        "checks": {
            # A body valid by the schema can still name what only the live runtime can judge:
            # a revision or variant absent from the routing table served now, input fields the
            # served signature does not have, a list of non-strings for a text field. The
            # runtime answers those 422 naming the field: accepted here, as rejecting them is
            # right. Every other status of valid data (400, 413, 415, 5xx...) still fails.
            "positive_data_acceptance": {"expected-statuses": ["2xx", "422"]},
        },
    }
)


@pytest.fixture(scope="module")
def runtime(spawn_module_runtime, fake_lm_server):
    fake_lm_server.reset()  # a healthy LM, whatever an earlier test left configured (held, failing)
    process = spawn_module_runtime(CACHE_ADMIN_TOKEN=ADMIN_TOKEN)
    process.wait_ready()
    assert httpx.get(f"{process.url}/openapi.json", timeout=30).json() == DOCUMENT
    return process


@pytest.fixture(scope="module")
def case_counts(runtime):
    """Cases sent per operation; after the run, every POST operation must have had enough."""
    counts: Counter[str] = Counter()
    yield counts
    posts = {label: counts[label] for label in counts if label.startswith("POST ")}
    assert "POST /v1/predict" in posts, counts
    assert all(n >= MIN_POST_CASES for n in posts.values()), posts


schema = schemathesis.openapi.from_dict(DOCUMENT, config=CONFIG)


@schema.parametrize()
def test_the_runtime_keeps_to_its_openapi_document(case, runtime, case_counts):
    case.call_and_validate(base_url=runtime.url, timeout=60)
    case_counts[case.operation.label] += 1
