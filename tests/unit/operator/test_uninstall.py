"""The chart's pre-delete hook (`python -m dspy_operator.uninstall`): what it deletes, when it refuses,
and what it says when the operator does not let the resources go."""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from dspy_operator.uninstall import Options, parse, run


def dspy(namespace: str, name: str, finalizers: Sequence[str] = ("dspy.dev/finalizer",)) -> dict[str, Any]:
    return {"metadata": {"namespace": namespace, "name": name, "finalizers": list(finalizers)}}


class FakeCluster:
    """DSPyDeployments by (namespace, name); a deleted one disappears after `linger` more lists
    (the operator dropping its finalizer), or never when `operator_gone`."""

    def __init__(self, objects: Sequence[dict[str, Any]], available: int | None = 1, linger: int = 2,
                 operator_gone: bool = False) -> None:
        self.objects = {(o["metadata"]["namespace"], o["metadata"]["name"]): o for o in objects}
        self.available = available
        self.linger = linger
        self.operator_gone = operator_gone
        self.calls: list[str] = []
        self._deleted: dict[tuple[str, str], int] = {}

    def list(self, namespaces: Sequence[str]) -> list[Mapping[str, Any]]:
        self.calls.append(f"list {','.join(namespaces) or '*'}")
        for key in list(self._deleted):
            self._deleted[key] -= 1
            if self._deleted[key] < 0 and not self.operator_gone:
                del self.objects[key], self._deleted[key]
        return [o for (namespace, _), o in sorted(self.objects.items()) if not namespaces or namespace in namespaces]

    def delete(self, namespace: str, name: str) -> None:
        self.calls.append(f"delete {namespace}/{name}")
        self._deleted.setdefault((namespace, name), self.linger)

    def available_replicas(self, namespace: str, name: str) -> int | None:
        self.calls.append(f"get deployment {namespace}/{name}")
        return self.available


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


OPERATOR = ("dspy-system", "dspy-operator")


def hook(cluster: FakeCluster, namespaces: Sequence[str] = (), timeout: float = 30) -> tuple[int, str]:
    out, clock = io.StringIO(), FakeClock()
    code = run(cluster, Options(namespaces=tuple(namespaces), operator=OPERATOR, timeout=timeout, interval=1.0),
               out=out, clock=clock, sleep=clock.sleep)
    return code, out.getvalue()


def test_it_deletes_every_resource_in_scope_and_waits_until_the_operator_let_them_go():
    cluster = FakeCluster([dspy("a", "qa"), dspy("b", "qa"), dspy("c", "other")])
    code, out = hook(cluster, namespaces=("a", "b"))
    assert code == 0
    assert cluster.calls[:4] == ["list a,b", "get deployment dspy-system/dspy-operator", "delete a/qa", "delete b/qa"]
    assert set(cluster.calls[4:]) == {"list a,b"} and len(cluster.calls[4:]) == 3
    assert ("c", "other") in cluster.objects, "a namespace the operator does not serve is left alone"
    assert "all 2 DSPyDeployment(s) in a, b are gone" in out


def test_nothing_in_scope_is_done_at_once_even_without_an_operator():
    cluster = FakeCluster([], available=None)
    assert hook(cluster) == (0, "no DSPyDeployment in all namespaces: nothing to delete\n")
    assert cluster.calls == ["list *"]


@pytest.mark.parametrize(("available", "state"), [(0, "has no available replica"), (None, "does not exist")])
def test_it_refuses_to_delete_anything_while_no_operator_runs(available, state):
    cluster = FakeCluster([dspy("a", "qa")], available=available)
    code, out = hook(cluster)
    assert code == 1
    assert not [call for call in cluster.calls if call.startswith("delete")]
    assert f"the operator Deployment dspy-system/dspy-operator {state}" in out
    assert "kubectl -n dspy-system scale deployment dspy-operator --replicas 1" in out
    assert "helm uninstall --no-hooks" in out


def test_a_timeout_names_what_is_left_with_its_finalizers_and_the_way_out():
    cluster = FakeCluster([dspy("a", "qa"), dspy("a", "free", finalizers=())], operator_gone=True)
    code, out = hook(cluster, timeout=5)
    assert code == 1
    assert "timed out after 5s: 2 DSPyDeployment(s) still there" in out
    assert "  a/qa (finalizers: dspy.dev/finalizer)" in out and "  a/free (finalizers: none)" in out
    assert """patch dspydeployment <name> --type=merge -p '{"metadata":{"finalizers":null}}'""" in out
    assert len([call for call in cluster.calls if call.startswith("list")]) == 7, "one list a second, then the last"


def test_options_come_from_the_operators_environment_and_the_flags():
    options = parse(["--operator-deployment", "ops/dspy", "--timeout", "60"], {"DSPY_OPERATOR_NAMESPACES": "a, b"})
    assert options == Options(namespaces=("a", "b"), operator=("ops", "dspy"), timeout=60.0)
    assert parse([], {}).operator is None and parse([], {}).namespaces == ()
    with pytest.raises(SystemExit):
        parse(["--operator-deployment", "no-slash"], {})
