"""In-memory indexes of what the operator owns, so a reconcile observes without reading the API.

- `dspy_children`: every child the operator manages (the watches are filtered server-side to
  `app.kubernetes.io/managed-by=dspy-operator`, see startup), keyed by (namespace, owner name),
  each as its body without `managedFields` (and a Secret without its data, but for the managed
  Redis password: the operator connects to that Redis too). Drift checks, rollout progress and pruning
  read from here instead of 4 GETs and 7 LISTs per pass. Cost: the children's bodies, about
  40 kB of Python objects per resource with 4 children (the runtime Deployment is 26 kB of
  it; sys.getsizeof summed over one bench resource's children), so 8 MB for 200 resources,
  plus the copies of saved programs.
- `dspy_owners`: the DSPyDeployments by (namespace, name), for the child watchers to find the
  owner of a deleted or hand-edited child without a GET.

The user's Secrets and ConfigMaps that specs refer to are deliberately not indexed: kopf
watches a kind with one label selector, so indexing them means receiving every Secret and
ConfigMap of the cluster (Helm release Secrets included) into the operator's memory, where
it receives only its own. They are read by GET instead (`inputs.RecentReads`): on a spec
change, while a problem is open, and otherwise once a minute per referenced object.

kopf fills every index from its initial listing before any resource handler or timer runs
(kopf 1.45: resource processing waits on `operator_indexed` until every indexed kind has been
listed, `_core/reactor/processing.py`), so a restart never sees an empty index as "children
missing". After that, an index trails our own writes by a
watch event: the writer uses its apply answers within a pass, and a stale entry at worst costs
one idempotent re-apply.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import kopf

from dspy_operator import api
from dspy_operator.handlers.startup import CHILD_RESOURCES

_MANAGED = {api.LABEL_MANAGED_BY: api.MANAGED_BY}
Key = tuple[str, str]
"""(namespace, DSPyDeployment name)."""


def controller_name(body: Mapping[str, Any]) -> str | None:
    """The name of the DSPyDeployment that controls this object, if any."""
    for ref in (body.get("metadata") or {}).get("ownerReferences") or []:
        if ref.get("controller") and ref.get("kind") == api.KIND and str(ref.get("apiVersion", "")).startswith(f"{api.GROUP}/"):
            return str(ref["name"])
    return None


def child_view(body: Mapping[str, Any], kind: str) -> dict[str, Any]:
    """What the index keeps of a child: the body with `kind` set, without managedFields
    (a third of a typical body, needed by nobody reading the index) and without Secret data,
    except the managed Redis password's: the operator connects to that Redis itself (routing
    pushes, analysis), and keeping it here saves a read a minute per resource."""
    metadata = {key: value for key, value in (body.get("metadata") or {}).items() if key != "managedFields"}
    view = {key: value for key, value in body.items() if key not in ("metadata", "data", "stringData")}
    component = (metadata.get("labels") or {}).get(api.LABEL_COMPONENT)
    if "data" in body and (kind != "Secret" or component == api.COMPONENT_REDIS):
        view["data"] = body["data"]
    return {**view, "kind": kind, "metadata": metadata}


def children_of(index: kopf.Index[Key, dict[str, Any]], namespace: str, name: str) -> dict[str, dict[str, Any]]:
    """The indexed children of one resource by `Kind/name`: a snapshot, so the caller's writes
    and kopf's concurrent index updates never see each other half-way."""
    try:
        # list() of the store copies it in one step (C-level iteration under the GIL); kopf
        # updates the index from the event loop while sync handlers run in threads.
        bodies = list(index[namespace, name])
    except KeyError:
        return {}
    return {f"{body['kind']}/{body['metadata']['name']}": body for body in bodies}


async def index_child(body: kopf.Body, resource: kopf.Resource, **_: Any) -> dict[Key, dict[str, Any]]:
    """Async on purpose, like `dspy_owners`: kopf runs sync handlers in its thread pool, where
    index updates would queue behind blocking reconciles and trail the writes by seconds."""
    owner = controller_name(body)
    if owner is None:
        return {}  # not (or no longer) ours: an empty result drops it from the index
    return {(body["metadata"]["namespace"], owner): child_view(body, resource.kind)}


@kopf.index(api.GROUP, api.VERSION, api.PLURAL)
async def dspy_owners(body: kopf.Body, **_: Any) -> dict[Key, dict[str, Any]]:
    """With status: a child watcher's pass decides the rollout from it like any other pass."""
    return {(body["metadata"]["namespace"], body["metadata"]["name"]): {
        "apiVersion": body.get("apiVersion", api.API_VERSION), "kind": api.KIND,
        "metadata": {key: value for key, value in body["metadata"].items() if key != "managedFields"},
        "spec": dict(body.get("spec") or {}),
        "status": dict(body.get("status") or {}),
    }}


def owner_of(index: kopf.Index[Key, dict[str, Any]], namespace: str, name: str) -> dict[str, Any] | None:
    try:
        return next(iter(list(index[namespace, name])), None)
    except KeyError:
        return None


def _register() -> None:
    """One index for all child kinds: kopf keys an index by handler id, so the same id shares it."""
    for group_version, plural in CHILD_RESOURCES:
        kopf.index(group_version, plural, labels=_MANAGED, id="dspy_children")(index_child)


_register()
