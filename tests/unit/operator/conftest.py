"""Shared builders of DSPyDeployment bodies, and a fake world for the resource pass.

The world (`world` fixture) is what `handlers.sync.sync` talks to, faked at its edges: an API
server (`FakeKube`: records every call, keeps objects with a resourceVersion, applies status
merge patches as RFC 7386 says and refuses a stale resourceVersion with 409), the runtime pods'
Redis (`FakeBus`: in memory, the method names of `runtimebus.RuntimeBus`), kopf's child index
(filled from what the fake API server holds, through `indexes.child_view` like kopf's watch
would), a clock, and the Events kopf would post.
"""

from __future__ import annotations

import base64
import copy
import json
import logging
import sys
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import kopf
import pytest

# Test modules import `served.py` by name; importlib mode does not put this directory on sys.path.
if str(Path(__file__).resolve().parent) not in sys.path:
    sys.path.append(str(Path(__file__).resolve().parent))  # last: never in front of another level's helpers

from dspy_operator import api  # noqa: E402
from dspy_operator.errors import KubeApiError
from dspy_operator.handlers import sync as sync_module
from dspy_operator.handlers.context import Context
from dspy_operator.handlers.indexes import child_view, controller_name
from dspy_operator.handlers.serialize import Serializer
from dspy_operator.observe import EXPERIMENT_REFRESH_SECONDS, RedisAddresses, Throttle
from dspy_operator.reconcile.core import Result
from dspy_operator.reconcile.inputs import RecentReads
from dspy_operator.runtimebus import BusUnavailable
from dspy_operator.settings import OperatorSettings
from dspy_operator.status.pods import PodReport

BASE_SPEC: dict[str, Any] = {
    "program": {"signature": "question -> answer", "module": "ChainOfThought"},
    "lm": {
        "model": "openai/gpt-4o-mini",
        "apiKeySecretRef": {"name": "openai", "key": "api-key"},
        "temperature": 0.0,
        "maxTokens": 512,
        "timeoutSeconds": 30,
    },
    "replicas": 2,
    "redis": {"mode": "Managed"},
}

T0 = datetime(2026, 12, 1, 12, 0, 0, tzinfo=timezone.utc)
EXTERNAL_URL = "redis://redis.example:6379/0"
EXTERNAL_REDIS = {"mode": "External", "urlSecretRef": {"name": "redis-url"}}
LOGGER = logging.getLogger("test")


def make_body(spec_overrides: dict[str, Any] | None = None, name: str = "qa", namespace: str = "demo") -> dict[str, Any]:
    spec = copy.deepcopy(BASE_SPEC)
    spec.update(copy.deepcopy(spec_overrides or {}))
    return {
        "apiVersion": "dspy.dev/v1alpha1",
        "kind": "DSPyDeployment",
        "metadata": {"name": name, "namespace": namespace, "uid": "uid-1234", "generation": 3},
        "spec": spec,
    }


@pytest.fixture
def body() -> Callable[..., dict[str, Any]]:
    """`body(spec_overrides)`: a DSPyDeployment dict with the base spec, overrides on top."""
    return make_body


# --- the fake world -----------------------------------------------------------------------------


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386, as the API server applies application/merge-patch+json: objects merge key by
    key, null deletes, anything else (lists included) replaces."""
    if not isinstance(patch, Mapping):
        return copy.deepcopy(patch)
    merged = dict(target) if isinstance(target, Mapping) else {}
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = merge_patch(merged.get(key), value)
    return merged


def key_of(obj: Mapping[str, Any]) -> str:
    return f"{obj['kind']}/{obj['metadata']['name']}"


class FakeKube:
    """An API server holding one namespace: objects by `Kind/name`, every call recorded in order.

    `calls` holds `get Kind/name`, `apply Kind/name`, `create Kind/name`, `delete Kind/name` and
    `patch status` (`patch status@<rv>` with a resourceVersion precondition); `status_patches`
    the patches themselves. `conflicts` forces that many 409s on precondition writes (a writer
    that always gets there first)."""

    def __init__(self) -> None:
        self.objects: dict[str, dict[str, Any]] = {}
        self.calls: list[str] = []
        self.status_patches: list[dict[str, Any]] = []
        self.conflicts = 0
        self._version = 0

    @property
    def writes(self) -> list[str]:
        return [call for call in self.calls if not call.startswith("get ")]

    def put(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Store `obj` as the server would (uid, a new resourceVersion) without recording a call."""
        stored = copy.deepcopy(obj)
        metadata = stored["metadata"]
        metadata.setdefault("uid", f"uid-{metadata['name']}")
        metadata["resourceVersion"] = self._next_version()
        self.objects[key_of(stored)] = stored
        return copy.deepcopy(stored)

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        self.calls.append(f"get {kind}/{name}")
        found = self.objects.get(f"{kind}/{name}")
        return copy.deepcopy(found) if found is not None else None

    def apply(self, obj: dict[str, Any], field_manager: str) -> dict[str, Any]:
        self.calls.append(f"apply {key_of(obj)}")
        live = self.objects.get(key_of(obj))
        return self.put({**obj, "status": live["status"]} if live and "status" in live else obj)

    def create(self, obj: dict[str, Any], field_manager: str) -> dict[str, Any]:
        self.calls.append(f"create {key_of(obj)}")
        if key_of(obj) in self.objects:
            raise KubeApiError(409, "AlreadyExists", f"{key_of(obj)} already exists")
        return self.put(obj)

    def delete(self, kind: str, namespace: str, name: str) -> None:
        self.calls.append(f"delete {kind}/{name}")
        self.objects.pop(f"{kind}/{name}", None)

    def patch_status(self, namespace: str, name: str, status: dict[str, Any],
                     resource_version: str | None = None) -> dict[str, Any]:
        self.calls.append("patch status" if resource_version is None else f"patch status@{resource_version}")
        self.status_patches.append(copy.deepcopy(status))
        resource = self.objects[f"{api.KIND}/{name}"]
        if resource_version is not None:
            if self.conflicts > 0:
                self.conflicts -= 1
                raise KubeApiError(409, "Conflict", "the object has been modified")
            if resource_version != resource["metadata"]["resourceVersion"]:
                raise KubeApiError(409, "Conflict", "the object has been modified")
        resource["status"] = merge_patch(resource.get("status") or {}, status)
        resource["metadata"]["resourceVersion"] = self._next_version()
        return copy.deepcopy(resource)

    def _next_version(self) -> str:
        self._version += 1
        return str(self._version)


class FakeBus:
    """The runtime pods' Redis, in memory, with the method names of `runtimebus.RuntimeBus`.

    `down = True` makes every call raise `BusUnavailable`, as the real one does when Redis is
    unreachable. `published` lists (prefix, table, serial) in push order."""

    def __init__(self) -> None:
        self.down = False
        self.published: list[tuple[str, dict[str, Any], int]] = []
        self.serials: dict[str, int] = {}
        self.buckets: dict[str, dict[int, dict[str, str]]] = {}
        self.pods: dict[str, dict[str, PodReport]] = {}
        self.evaluations: dict[str, dict[str, Any]] = {}
        self.results: dict[str, dict[str, Any]] = {}
        self.runners: dict[str, str] = {}

    def _reach(self, action: str) -> None:
        if self.down:
            raise BusUnavailable(f"cannot {action}: Error 111 connecting to redis.example:6379. Connection refused.")

    def publish_table(self, key: str, table_json: str, serial: int) -> None:
        self._reach("publish the routing table")
        self.published.append((key, json.loads(table_json), serial))
        self.serials[key] = serial

    def table_serial(self, key: str) -> int | None:
        self._reach("read the routing serial")
        return self.serials.get(key)

    def read_buckets(self, prefix: str, start: float, end: float) -> dict[int, dict[str, str]]:
        self._reach("read the window buckets")
        return {start_: fields for start_, fields in self.buckets.get(prefix, {}).items() if start <= start_ < end}

    def served_tables(self, prefix: str) -> dict[str, PodReport]:
        self._reach("read the pods' served tables")
        return dict(self.pods.get(prefix, {}))

    def request_evaluation(self, prefix: str, request: Mapping[str, Any]) -> None:
        self._reach("post the evaluation request")
        self.evaluations.setdefault(str(request["id"]), dict(request))

    def evaluation_result(self, prefix: str, evaluation_id: str) -> dict[str, Any] | None:
        self._reach("read the evaluation result")
        return self.results.get(evaluation_id)

    def evaluation_runner(self, prefix: str, evaluation_id: str) -> str | None:
        self._reach("read the evaluation lock")
        return self.runners.get(evaluation_id)

    def close(self) -> None:
        pass


class FakeBuses:
    """`runtimebus.RuntimeBuses` handing out the one fake bus; remembers the URLs asked for."""

    def __init__(self, bus: FakeBus) -> None:
        self.bus = bus
        self.urls: list[str] = []

    def for_url(self, url: str) -> FakeBus:
        self.urls.append(url)
        return self.bus

    def close(self) -> None:
        pass


class World:
    """One DSPyDeployment in a fake cluster, and the pass that every handler runs."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.kube = FakeKube()
        self.bus = FakeBus()
        self.buses = FakeBuses(self.bus)
        self.index: dict[tuple[str, str], list[dict[str, Any]]] = {}
        self.events: list[tuple[str, str, str]] = []
        self.now = T0
        self.context = Context(
            settings=OperatorSettings(), kube=self.kube, references=RecentReads(self.kube.get),  # type: ignore[arg-type]
            redis=RedisAddresses(self.kube.get), buses=self.buses, serializer=Serializer(),  # type: ignore[arg-type]
            experiments=Throttle(EXPERIMENT_REFRESH_SECONDS, clock=lambda: self.now.timestamp()),
            shadows=Throttle(EXPERIMENT_REFRESH_SECONDS, clock=lambda: self.now.timestamp()),
        )
        self.kube.put({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "openai", "namespace": "demo"},
                       "data": {"api-key": base64.b64encode(b"sk-test").decode()}})
        self.kube.put({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "redis-url", "namespace": "demo"},
                       "data": {"url": base64.b64encode(EXTERNAL_URL.encode()).decode()}})
        world = self

        class Clock(datetime):
            @classmethod
            def now(cls, tz: Any = None) -> datetime:  # type: ignore[override]
                return world.now

        monkeypatch.setattr(sync_module, "datetime", Clock)
        monkeypatch.setattr(sync_module, "time", SimpleNamespace(time=lambda: world.now.timestamp()))
        for verb in ("info", "warn"):
            monkeypatch.setattr(kopf, verb, lambda obj, *, reason, message, _verb=verb:
                                self.events.append((_verb, reason, message)))

    def create(self, spec_overrides: dict[str, Any] | None = None) -> dict[str, Any]:
        """The resource as `kubectl apply` leaves it, and as kopf delivers it."""
        return self.kube.put(make_body(spec_overrides))

    def resource(self) -> dict[str, Any]:
        """The resource as the API server holds it now (kopf's next delivery)."""
        return copy.deepcopy(self.kube.objects[f"{api.KIND}/qa"])

    def edit_spec(self, **changes: Any) -> dict[str, Any]:
        """A spec change by the user: a new generation, status untouched."""
        stored = self.kube.objects[f"{api.KIND}/qa"]
        stored["spec"] = merge_patch(stored["spec"], changes)
        stored["metadata"]["generation"] += 1
        stored["metadata"]["resourceVersion"] = self.kube._next_version()
        return self.resource()

    def annotate(self, key: str, value: str) -> dict[str, Any]:
        stored = self.kube.objects[f"{api.KIND}/qa"]
        stored["metadata"].setdefault("annotations", {})[key] = value
        stored["metadata"]["resourceVersion"] = self.kube._next_version()
        return self.resource()

    def settle(self) -> None:
        """kopf's watch catches up: the index holds every child as the API server has it."""
        index: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for obj in self.kube.objects.values():
            owner = controller_name(obj)
            if owner is not None:
                index.setdefault((obj["metadata"]["namespace"], owner), []).append(child_view(obj, obj["kind"]))
        self.index = index

    def children(self) -> dict[str, dict[str, Any]]:
        return {key: obj for key, obj in self.kube.objects.items() if controller_name(obj) is not None}

    def sync(self, body: Mapping[str, Any] | None = None, *, fresh: bool = True, after: float = 0) -> Result:
        """One pass `after` seconds past the world's clock; records only this pass's calls and Events."""
        self.now += timedelta(seconds=after)
        self.kube.calls.clear()
        self.kube.status_patches.clear()
        self.events.clear()
        return sync_module.sync(body if body is not None else self.resource(), self.context, self.index,  # type: ignore[arg-type]
                                LOGGER, fresh=fresh, retry=0)

    def status(self) -> dict[str, Any]:
        return self.resource().get("status") or {}

    def reasons(self) -> list[str]:
        return [reason for _, reason, _ in self.events]


@pytest.fixture
def world(monkeypatch: pytest.MonkeyPatch) -> World:
    return World(monkeypatch)

