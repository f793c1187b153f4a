"""Shadow figures: the runtime pods' `shadow_*` window figures summed into `status.shadow` (pure).

A shadow target (a variant with `shadow: true`, or a revision in shadow) gets copies of live
requests; the pods count its calls under its own `<revision>|<variant>|` fields, every figure
prefixed `shadow_` (the runtime's `windows.py` lists them). The shadow calls' figures mirror the
live ones and the live side's latency is a histogram of the same buckets, so both are read by
`analysis.windows_from_buckets` once their prefix is taken off (`_view`): one parser, one p95 and
one cost rule for live, canary and shadow figures alike.

    buckets --_view("shadow_")-->      windows_from_buckets --> the shadow calls' Window
                                       _comparisons         --> compared, agree, dropped
            --_view("shadow_live_")--> windows_from_buckets --> the live requests' latency Window

Per target: `requests` are the copies answered and compared with the live answer;
`agreementRate` = agree / requests with its 95% Wilson interval; `errorRate` = failed shadow
calls / all shadow calls (a failed call is an error, never a disagreement); p95 latency of the
shadow calls and of the live requests they copied; cost per computed shadow call; `dropped`: the
copies not made (busy, cap or budget), all reasons together. A figure with no data is left out,
as in `status.experiment` (null deletes in a merge patch); figures are rounded so an idle
recomputation yields the same block.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any, Final

from dspy_operator.rollout.analysis import (
    EMPTY, Raw, Window, WindowKey, bucket_starts, round_figure, windows_from_buckets,
)
from dspy_operator.rollout.experiment import wilson_interval

SHADOW_PREFIX: Final = "shadow_"
LIVE_PREFIX: Final = "shadow_live_"
COMPARED: Final = "compared"
AGREE: Final = "agree"
DROPPED: Final = "dropped:"
"""Figures of the `shadow_` view (`shadow_compared`, ... in the buckets) that no Window holds."""

Buckets = Mapping[int, Mapping[Raw, Raw]]


def _view(buckets: Buckets, prefix: str) -> dict[int, dict[str, str]]:
    """The buckets' `<revision>|<variant>|<prefix><figure>` fields as `<revision>|<variant>|<figure>`
    (decoded); every other field left out."""
    viewed: dict[int, dict[str, str]] = {}
    for start, fields in buckets.items():
        picked = {}
        for raw_field, raw_value in fields.items():
            field = raw_field.decode() if isinstance(raw_field, bytes) else raw_field
            revision, _, rest = field.partition("|")
            variant, _, figure = rest.partition("|")
            if figure.startswith(prefix):
                value = raw_value.decode() if isinstance(raw_value, bytes) else raw_value
                picked[f"{revision}|{variant}|{figure.removeprefix(prefix)}"] = value
        viewed[start] = picked
    return viewed


@dataclass(frozen=True, slots=True)
class Comparisons:
    """A target's comparison counts over a window."""

    compared: int = 0
    agree: int = 0
    dropped: int = 0

    def __add__(self, other: Comparisons) -> Comparisons:
        return Comparisons(self.compared + other.compared, self.agree + other.agree, self.dropped + other.dropped)


def _comparisons(shadow: Mapping[int, Mapping[str, str]], start: float, end: float) -> dict[WindowKey, Comparisons]:
    """compared, agree and dropped (every reason) per target, over the buckets inside [start, end)
    of the `shadow_` view. Values that do not parse are skipped, as `windows_from_buckets` does."""
    wanted = bucket_starts(start, end)
    totals: dict[WindowKey, Comparisons] = {}
    for bucket, fields in shadow.items():
        if bucket not in wanted:
            continue
        for field, value in fields.items():
            revision, variant, figure = field.split("|", 2)
            try:
                count = int(value)
            except ValueError:
                continue
            if figure == COMPARED:
                found = Comparisons(compared=count)
            elif figure == AGREE:
                found = Comparisons(agree=count)
            elif figure.startswith(DROPPED):
                found = Comparisons(dropped=count)
            else:
                continue
            totals[(revision, variant)] = totals.get((revision, variant), Comparisons()) + found
    return totals


def shadow_status(buckets: Buckets, start: float, end: float, revisions: Collection[str], *, window: str,
                  updated: str) -> dict[str, Any]:
    """The `status.shadow` block: every target of `revisions` (the served ones) with shadow figures
    in [start, end), sorted by revision and variant. `window` names the span (`30m`), `updated` is
    when the figures were computed."""
    shadow = _view(buckets, SHADOW_PREFIX)
    calls = windows_from_buckets(shadow, start, end)
    live = windows_from_buckets(_view(buckets, LIVE_PREFIX), start, end)
    counts = _comparisons(shadow, start, end)
    keys = sorted(key for key in {*calls, *counts} if key[0] in revisions)
    targets = [_target(key, calls.get(key, EMPTY), live.get(key, EMPTY), counts.get(key, Comparisons())) for key in keys]
    return {"window": window, "updated": updated, "targets": targets}


def _target(key: WindowKey, calls: Window, live: Window, counts: Comparisons) -> dict[str, Any]:
    revision, variant = key
    compared = counts.compared
    figures = {
        "agreementRate": counts.agree / compared if compared else None,
        "errorRate": calls.errors / calls.requests if calls.requests else None,
        "p95LatencySeconds": calls.p95_latency_seconds,
        "liveP95LatencySeconds": live.p95_latency_seconds,
        "costPerRequestUsd": calls.cost_per_computed_request,
    }
    target: dict[str, Any] = {"revision": revision, "variant": variant, "requests": compared}
    target.update((name, round_figure(value)) for name, value in figures.items() if value is not None)
    interval = wilson_interval(counts.agree, compared)
    if interval is not None:
        target["agreementCI"] = [round_figure(bound) for bound in interval]
    target["dropped"] = counts.dropped
    return target
