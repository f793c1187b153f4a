"""Machine-made DSPyDeployments against the real API server with the real operator running.

Each spec comes from `crdfuzz.specs()`: drawn from the CRD's own schema, and for about half of
them with one place broken (hostile strings, out-of-range and wrong-typed values, long lists,
unknown fields). Each is created with strict field validation and must end one of two ways:

- rejected by the API server, with the offending field's path (`spec....`) in the answer; or
- reconciled by the operator: status for this very generation, a known phase and conditions that
  each carry a reason and a message, and then quiet (no write loop on it).

Meanwhile a healthy resource beside them stays Healthy and still follows a spec change, and the
operator process neither exits nor logs a traceback.
"""

from __future__ import annotations

import itertools
import json
import time
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from kubernetes.client.rest import ApiException

from crdfuzz import specs
from resources import GROUP, PLURAL, VERSION, api_key_secret, apply_yaml, custom, dspy_deployment, get_dspy, patch_spec, wait_phase

pytestmark = pytest.mark.timeout(1500)

EXAMPLES = 30
PHASES = {"Pending", "Progressing", "Healthy", "Degraded", "Paused"}
QUIET_SECONDS = 4.0
MOST_WRITES_WHEN_QUIET = 3
"""A pass may still land while pods turn Ready on kwok; a loop writes on every pass, far more."""


def rejected_with_a_path(error: ApiException) -> str:
    """The API server's answer must name a field of the spec (a cause, or its message)."""
    assert error.status in (400, 422), f"{error.status}: {error.body}"
    answer = json.loads(error.body)
    causes = (answer.get("details") or {}).get("causes") or []
    text = " ".join([answer.get("message") or "", *(f"{c.get('field', '')} {c.get('message', '')}" for c in causes)])
    assert "spec" in text, f"the rejection names no field of the spec: {answer}"
    return text


def reconciled(cluster: Any, namespace: str, name: str, wait_until: Any) -> dict[str, Any]:
    def current() -> dict[str, Any] | None:
        obj = get_dspy(cluster, namespace, name)
        status = obj.get("status") or {}
        return obj if status.get("observedGeneration") == obj["metadata"]["generation"] else None

    return wait_until(current, f"{name} to be reconciled", timeout=90)


def test_machine_made_resources_are_rejected_with_a_path_or_reconciled_to_a_clear_status(
        cluster, operator, namespace, wait_until):
    apply_yaml(cluster, namespace, [api_key_secret(), dspy_deployment(name="steady")])
    wait_phase(cluster, wait_until, namespace, "steady", "Healthy")
    api = custom(cluster)
    log_start = len(operator.logs())
    counter = itertools.count()
    outcomes = {"rejected": 0, "reconciled": 0}

    @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
              phases=[Phase.explicit, Phase.generate],  # no shrinking: each try is a real round trip
              suppress_health_check=list(HealthCheck))
    @given(spec=specs())
    def one(spec: dict[str, Any]) -> None:
        name = f"fz-{next(counter)}"
        body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "DSPyDeployment", "metadata": {"name": name}, "spec": spec}
        try:
            api.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body, field_validation="Strict")
        except ApiException as error:
            rejected_with_a_path(error)
            outcomes["rejected"] += 1
            return
        try:
            obj = reconciled(cluster, namespace, name, wait_until)
            status = obj["status"]
            assert status.get("phase") in PHASES, status
            conditions = status.get("conditions") or []
            assert conditions, status
            for condition in conditions:
                assert condition.get("reason") and condition.get("message"), condition
            settled = time.monotonic()
            time.sleep(QUIET_SECONDS)
            writes = [r for r in operator.relay.writes(settled, namespace) if f"/{name}" in r.path]
            assert len(writes) <= MOST_WRITES_WHEN_QUIET, [f"{r.method} {r.path}" for r in writes]
            outcomes["reconciled"] += 1
        except AssertionError as failure:
            raise AssertionError(f"{failure}\nspec: {json.dumps(spec)[:2000]}") from None
        finally:
            api.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)

    one()
    assert outcomes["rejected"] and outcomes["reconciled"], outcomes  # both ends were exercised

    assert operator.process is not None and operator.process.poll() is None, "the operator exited"
    assert "Traceback" not in operator.logs()[log_start:], operator.logs()[log_start:][-6000:]
    steady = wait_phase(cluster, wait_until, namespace, "steady", "Healthy")
    patch_spec(cluster, namespace, "steady", {"replicas": 3})
    followed = wait_until(lambda: (obj := get_dspy(cluster, namespace, "steady"))["metadata"]["generation"]
                          > steady["metadata"]["generation"] and obj["status"].get("observedGeneration")
                          == obj["metadata"]["generation"] and obj, "the steady resource to follow a change")
    assert followed["status"]["phase"] in ("Progressing", "Healthy")
    wait_phase(cluster, wait_until, namespace, "steady", "Healthy")
    wait_until(lambda: not [item for item in api.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)["items"]
                            if item["metadata"]["name"].startswith("fz-")],
               "every fuzzed resource to be deleted (the operator's finalizer released)", timeout=120)
