"""The routing table: which revisions every runtime pod serves, with what share (pure).

The table reaches running pods without a restart by two wires: a push through the
resource's Redis (key and channel `dspy:{<ns>/<name>}:routing`; pods switch within a
second) and the routing ConfigMap, mounted at ROUTING_PATH (the kubelet refreshes the
file within its sync period, about a minute: the path for Redis-less resources and the
table a new pod starts from). The table is never part of the pod template: a weight
change restarts nothing and no L1 cache goes cold.

Every table carries a `serial` that only grows; a pod adopts a table only when its
serial is newer than the one it serves, so the slow file never undoes a newer push. The
serial lives in `status.routing`, written before the table is (see the rollout handler):
a crash between the two leaves a status that the next pass re-publishes.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from dspy_operator import api
from dspy_operator.reconcile.common import Obj, Owner, canonical_hash, metadata, section
from dspy_operator.reconcile.revisions import Revision

TABLE_HASH_LENGTH = 16


def routing_table(spec: Mapping[str, Any], served: Sequence[tuple[Revision, int]]) -> Obj:
    """The table for `served` (revision, percent) pairs, without its serial."""
    table: Obj = {
        "revisions": [
            {"name": revision.name, "weight": weight, "variants": list(revision.variants)}
            for revision, weight in served
        ],
    }
    sticky = section(spec, "routing").get("stickyHeader")
    if sticky:
        table["stickyHeader"] = sticky
    return table


def table_hash(table: Mapping[str, Any]) -> str:
    return canonical_hash(table)[:TABLE_HASH_LENGTH]


def next_serial(previous: int, now_ms: int) -> int:
    """Strictly greater than `previous`; close to the wall clock so a table written after
    the resource was deleted and recreated (status lost) still wins over an older one."""
    return max(previous + 1, now_ms)


def table_text(table: Mapping[str, Any], serial: int) -> str:
    return json.dumps({**table, "serial": serial}, sort_keys=True, separators=(",", ":"))


def routing_configmap(owner: Owner, text: str) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata(owner, api.routing_name(owner.name), api.COMPONENT_ROUTING),
        "data": {api.ROUTING_FILE: text},
    }
