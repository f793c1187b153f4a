"""What the rollout hands the reconcile, for the tests of the children (core, desired)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

from dspy_operator.reconcile.core import Served
from dspy_operator.reconcile.inputs import Inputs
from dspy_operator.reconcile.layout import layout, tables_of
from dspy_operator.reconcile.revisions import Revision, revision_of
from dspy_operator.reconcile.routing import table_text
from dspy_operator.rollout.canary import Observations
from dspy_operator.rollout.state import Plan, RolloutState


def settled(body: Mapping[str, Any], *revisions: Revision, serial: int = 1) -> Served:
    """A rollout settled on `revisions` (default: the spec's, alone; a second one is a canary at
    weight 0), laid out as the pass would."""
    spec = body["spec"]
    chosen = revisions or (revision_of(spec, Inputs()),)
    state = RolloutState(stable=chosen[0].name, canary=chosen[1].name if len(chosen) > 1 else "")
    placed = layout(Plan.from_spec(spec), state, Observations(desired=chosen[0].name, now=datetime.now(timezone.utc)))
    texts = {color: table_text(table, serial)
             for color, table in tables_of(spec, placed, {revision.name: revision for revision in chosen}).items()}
    return Served(chosen, placed, texts)
