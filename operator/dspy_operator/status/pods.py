"""What the runtime pods say about themselves in Redis, read as facts for the status (pure).

Each pod keeps `HSET <prefix>pods <pod> "<serial> <unix time>[ <level> <cause>]"` fresh every
5 s (the runtime's `routing_wire.ServedTableReport`): the serial of the routing table it serves
and, with graceful degradation on, the level it answers at and why it went there. From those
reports the status gets `routing.servedBy` (which pods serve the current table) and
`degradation` (the level of the fleet). Only reports younger than `FRESH_SECONDS` count: a pod
that stopped reporting is gone or cut off, and its last word is no longer news.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

FRESH_SECONDS: Final = 30.0
"""A pod's report counts while younger than this (pods report every 5 s)."""
MAX_NAMED_PODS: Final = 5
"""Pods below normal that the message names; the rest are counted (a condition message stays short)."""
NORMAL: Final = "normal"
LEVELS: Final = ("normal", "cheaper_model", "shorter_answers", "cache_only")
"""The runtime's degradation levels, best first (`resilience.degradation.LEVEL_NAMES`)."""


@dataclass(frozen=True, slots=True)
class PodReport:
    serial: int
    at: float
    """Unix time of the report."""
    level: str | None = None
    """Its degradation level's name; None when the pod's degradation is off."""
    cause: str = ""


def parse_report(text: str) -> PodReport | None:
    """One pod's report; None when it does not read as one (such a pod counts as not reporting).

    A level the operator does not know (a newer runtime's) is kept as it is, ranked below
    every known one: the status then shows it rather than hide a pod in trouble."""
    serial, _, rest = text.partition(" ")
    moment, _, degradation = rest.partition(" ")
    level, _, cause = degradation.partition(" ")
    try:
        return PodReport(int(serial), float(moment), level or None, cause)
    except ValueError:
        return None


def fresh(reports: Mapping[str, PodReport], now: float) -> dict[str, PodReport]:
    return {pod: report for pod, report in reports.items() if now - report.at <= FRESH_SECONDS}


def served_by(reports: Mapping[str, PodReport], serial: int, now: float) -> str:
    """`3/3`: pods serving `serial` (or newer) over the pods that reported lately."""
    recent = fresh(reports, now).values()
    return f"{sum(report.serial >= serial for report in recent)}/{len(recent)}"


def _rank(level: str) -> int:
    return LEVELS.index(level) if level in LEVELS else len(LEVELS)


def degradation_status(reports: Mapping[str, PodReport], now: float) -> dict[str, Any] | None:
    """`status.degradation`: the worst level a fresh report names, pods per level, and a message
    naming the pods below normal and why; None when no fresh report carries a level.

    The block holds no time and no measured value that moves between passes (a level's cause is
    fixed when the level is entered), so a steady fleet writes its status once."""
    levels = {pod: report for pod, report in fresh(reports, now).items() if report.level is not None}
    if not levels:
        return None
    counts: dict[str, int] = {}
    for report in levels.values():
        assert report.level is not None
        counts[report.level] = counts.get(report.level, 0) + 1
    worst = max(counts, key=_rank)
    below = sorted((pod for pod, report in levels.items() if report.level != NORMAL),
                   key=lambda pod: (-_rank(str(levels[pod].level)), pod))
    parts = [f"{pod} at {levels[pod].level}" + (f" ({levels[pod].cause})" if levels[pod].cause else "")
             for pod in below[:MAX_NAMED_PODS]]
    if len(below) > MAX_NAMED_PODS:
        parts.append(f"{len(below) - MAX_NAMED_PODS} more")
    message = (f"{len(below)}/{len(levels)} pods answer below normal: " + "; ".join(parts)) if below else \
        f"all {len(levels)} pods answer normally"
    return {"level": worst, "pods": dict(sorted(counts.items(), key=lambda item: _rank(item[0]))),
            "message": message}


def degraded_message(block: Mapping[str, Any] | None) -> str | None:
    """The Degraded condition's message while any pod answers below normal; None otherwise."""
    if not block or block.get("level") == NORMAL:
        return None
    return f"{block.get('message')}; see status.degradation and the pods' /health"

