"""The routing table: which revisions every runtime pod serves, with what share (pure).

The table reaches running pods without a restart by two wires: a push through the
resource's Redis (key and channel `dspy:{<ns>/<name>}:routing`; pods switch within a
second) and the routing ConfigMap, mounted at ROUTING_PATH (the kubelet refreshes the
file within its sync period, about a minute: the path for Redis-less resources and the
table a new pod starts from). The table is never part of the pod template: a weight
change restarts nothing and no L1 cache goes cold.

Shadow traffic: a revision named in `shadow_revisions` that the table serves at weight 0 is
marked `"shadow": true` (it gets copies of the requests the other revisions serve; at a positive
weight it is live and the mark is left off, so a canary in shadow stops being one at its first
traffic step), and shadow variants are marked in their revision's entries (`revisions.py`).
When any shadow target is in the table, the table carries `shadow` from spec.shadow, with
`maxDailyUsd` resolved: spec.shadow.maxDailyUsd, else 10% of spec.budget.dailyUsd, else none.

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
SHADOW_DEFAULTS: Mapping[str, int] = {"samplePercent": 10, "maxConcurrent": 4}
"""spec.shadow's defaults in the CRD, for a spec stored before the schema had them."""
SHADOW_BUDGET_SHARE = 0.1
"""Without spec.shadow.maxDailyUsd, the shadow may spend this share of spec.budget.dailyUsd a day."""


def routing_table(spec: Mapping[str, Any], served: Sequence[tuple[Revision, int]],
                  shadow_revisions: frozenset[str] = frozenset()) -> Obj:
    """The table for `served` (revision, percent) pairs, without its serial; `shadow_revisions`
    are served in shadow while their weight is 0 (see the module docstring)."""
    revisions = []
    for revision, weight in served:
        entry: Obj = {"name": revision.name, "weight": weight, "variants": list(revision.variants)}
        if revision.name in shadow_revisions and weight == 0:
            entry["shadow"] = True
        revisions.append(entry)
    table: Obj = {"revisions": revisions}
    sticky = section(spec, "routing").get("stickyHeader")
    if sticky:
        table["stickyHeader"] = sticky
    if any(entry.get("shadow") or any(v.get("shadow") for v in entry["variants"]) for entry in revisions):
        table["shadow"] = shadow_settings(spec)
    return table


def shadow_settings(spec: Mapping[str, Any]) -> Obj:
    """The table's `shadow` object: spec.shadow with its defaults, the cap resolved."""
    shadow = section(spec, "shadow")
    settings: Obj = {key: int(shadow.get(key, default)) for key, default in SHADOW_DEFAULTS.items()}
    cap = shadow.get("maxDailyUsd")
    if cap is None and section(spec, "budget").get("dailyUsd") is not None:
        cap = round(float(section(spec, "budget")["dailyUsd"]) * SHADOW_BUDGET_SHARE, 10)
    if cap is not None:
        settings["maxDailyUsd"] = cap
    return settings


def table_hash(table: Mapping[str, Any]) -> str:
    return canonical_hash(table)[:TABLE_HASH_LENGTH]


def next_serial(previous: int, now_ms: int) -> int:
    """Strictly greater than `previous`; close to the wall clock so a table written after
    the resource was deleted and recreated (status lost) still wins over an older one."""
    return max(previous + 1, now_ms)


def table_text(table: Mapping[str, Any], serial: int) -> str:
    return json.dumps({**table, "serial": serial}, sort_keys=True, separators=(",", ":"))


def routing_configmap(owner: Owner, text: str, color: str = api.SINGLE) -> Obj:
    """The table one color's pods mount (SINGLE: the one Deployment's)."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata(owner, api.routing_name(owner.name, color), api.COMPONENT_ROUTING),
        "data": {api.ROUTING_FILE: text},
    }
