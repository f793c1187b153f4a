"""Shadow traffic: copies of live requests answered by a variant or revision nobody sees.

A variant with ``shadow: true`` (weight 0) gets copies of the requests the live variants of
its revision serve; a revision with ``shadow: true`` (weight 0: a canary before its first
traffic step) gets copies of the requests the non-shadow revisions serve, answered by its
variant of the same name (else its first non-shadow variant). The shadow's answers are
compared with what the user got and discarded. The rules, and why:

- Never in the user's way. A copy is made after the live answer is computed, in a task of
  its own the request never awaits; the live result is not touched, and a shadow failure is
  only counted. The live request's latency cannot include a shadow call.
- Sampled (``samplePercent``, 10 by default), once per live request for all its targets, so
  every target sees the same requests and their figures compare. With the sticky header the
  point is ``xxh3_64("shadow:" + value) / 2**64``, salted like the revision's, so a user is
  shadowed always or never and a conversation is never half copied; else a random draw.
- Bounded (``maxConcurrent`` shadow calls in flight per pod, 4 by default): a copy that finds
  no free slot is dropped and counted (``busy``), never queued. A queue behind a slow shadow
  would grow without bound and hold the pod's memory and event loop; a drop costs nothing
  and the drop count says how much of the sample was lost.
- Paid for apart from live traffic. Shadow calls count in the daily budget like any spend,
  and under their own cap per UTC day: ``maxDailyUsd``, or 10% of ``DAILY_BUDGET_USD`` when
  that is set and the table names none (no budget and no cap: no limit). The cap is one
  counter for the fleet in Redis (``dspy:budget:shadow:<day>``, the same mechanism as the
  budget's), per pod without Redis. A copy is made only while (a) the day's shadow spend is
  below the cap, and (b) the budget left (``dailyUsd`` minus everything spent today) is more
  than what the shadow may still spend under its cap. (b) reserves the shadow's whole
  allowance out of the budget before the shadow spends any of it: the shadow stops as soon
  as live spend reaches ``dailyUsd - cap``, so it never spends money live traffic needs. A
  refused copy is dropped (``cap`` or ``budget``). The checks come before each call, so calls
  already in flight may pass the cap by at most ``maxConcurrent`` calls' cost per pod.
- A shadow call is the normal prediction path with its revision and variant pinned: cached
  (a question the shadow answered before costs nothing again, and gets the same answer), not
  rate limited (the live request already passed the limiter; copies must not take live
  traffic's tokens), without the pod's fallback models (a fallback's answer is not the
  shadow's, and would be compared as if it were), not counted as a prediction in
  ``dspy_predictions_total`` nor in the live window figures (a canary in shadow is not
  judged on copies), and counted in the budget.
- Agreement: every output field of the live variant's signature equal after strip, casefold
  and collapsing whitespace (non-text values as canonical JSON). A failed shadow call is an
  error, not a disagreement: a shadow that times out says nothing about its answers.

Figures: ``dspy_shadow_requests_total{revision,variant,result}`` (agree | disagree | error),
``dspy_shadow_latency_seconds``, ``dspy_shadow_dropped_total{reason}`` (busy | cap | budget),
``dspy_shadow_cost_usd_total``, and the ``shadow_*`` window figures (``windows.py``) the
operator turns into ``status.shadow``; labels name the shadow target.

Pure parts (unit-tested): ``sample_point``/``sampled``, ``shadow_targets``, ``agrees``,
``effective_cap`` and ``spend_refusal``. ``Shadower`` is the I/O around them.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Protocol

import orjson

from .errors import BudgetExhausted, ServiceError
from .logs import ProblemLog
from .metrics import Metrics
from .resilience import Budget
from .routing import Revision, RoutingState, ShadowPolicy, Variant, sticky_point
from .windows import Windows

log = logging.getLogger(__name__)

AGREE, DISAGREE, ERROR = "agree", "disagree", "error"
"""``result`` of ``dspy_shadow_requests_total``."""
BUSY, CAP, BUDGET = "busy", "cap", "budget"
"""``reason`` of ``dspy_shadow_dropped_total`` and of the ``shadow_dropped:<reason>`` figure."""
DEFAULT_CAP_SHARE = 0.1
"""Without ``maxDailyUsd``, the shadow may spend this share of ``DAILY_BUDGET_USD`` a day."""
SPEND_KEY_PREFIX = "dspy:budget:shadow"
"""The fleet's shadow spend per UTC day: ``<prefix>:<YYYY-MM-DD>`` (beside the budget's ``dspy:budget:``)."""

TargetKey = tuple[str, str]
"""(revision, variant) of a live variant."""

# ---- the pure rules -----------------------------------------------------------------------------


def sample_point(sticky_value: str | None, rng: Callable[[], float]) -> float:
    """The request's point in [0, 1): by the sticky value (salted), else a random draw."""
    return sticky_point("shadow:" + sticky_value) if sticky_value else rng()


def sampled(sample_percent: int, point: float) -> bool:
    """Copied when the point falls in the first ``sample_percent`` percent of [0, 1)."""
    return point < sample_percent / 100


def _counterpart(revision: Revision, name: str) -> Variant | None:
    """A shadow revision's answer to a live variant: the variant of the same name, else its
    first non-shadow variant (shadow variants of a shadow revision get no copies)."""
    same = revision.by_name.get(name)
    if same is not None and not same.shadow:
        return same
    return next((variant for variant in revision.variants if not variant.shadow), None)


def shadow_targets(state: RoutingState) -> dict[TargetKey, tuple[Variant, ...]]:
    """For every live variant (not shadow, in a revision that is not shadow) that has any, its
    shadow targets: the shadow variants of its revision, then each shadow revision's counterpart,
    in table order. A request served by a shadow variant or revision (pinned) is copied nowhere."""
    shadow_revisions = [revision for revision in state.revisions if revision.shadow]
    targets: dict[TargetKey, tuple[Variant, ...]] = {}
    for revision in state.revisions:
        if revision.shadow:
            continue
        own = [variant for variant in revision.variants if variant.shadow]
        for variant in revision.variants:
            if variant.shadow:
                continue
            found = own + [t for r in shadow_revisions if (t := _counterpart(r, variant.name)) is not None]
            if found:
                targets[(revision.name, variant.name)] = tuple(found)
    return targets


def normalized(value: Any) -> str:
    """The text compared: stripped, whitespace runs collapsed to one space, casefolded."""
    text = value if isinstance(value, str) else orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()
    return " ".join(text.split()).casefold()


def agrees(live: Mapping[str, Any], shadow: Mapping[str, Any], fields: Sequence[str]) -> bool:
    """Every one of ``fields`` (the live signature's outputs) equal once normalized; a field the
    shadow did not answer disagrees."""
    return all(name in shadow and normalized(live.get(name)) == normalized(shadow[name]) for name in fields)


def effective_cap(max_daily_usd: float | None, daily_budget_usd: float | None) -> float | None:
    """The shadow's daily cap: the table's, else ``DEFAULT_CAP_SHARE`` of the budget, else none."""
    if max_daily_usd is not None:
        return max_daily_usd
    return daily_budget_usd * DEFAULT_CAP_SHARE if daily_budget_usd else None


def spend_refusal(cap: float | None, shadow_spent: float, daily_usd: float | None, spent_today: float) -> str | None:
    """Why a copy may not be made now (``CAP`` or ``BUDGET``), or None: the rule of the module
    docstring. ``spent_today`` is everything spent today, shadow included.

    Worked example: budget 50, cap 5. After 3 of shadow and 40 of live spend, 7 is left and the
    shadow may still spend 2: allowed. At 45.5 of live spend, 1.5 is left: refused (budget)."""
    if cap is not None and shadow_spent >= cap:
        return CAP
    if daily_usd is not None:
        still_allowed = max(cap - shadow_spent, 0.0) if cap is not None else 0.0
        if daily_usd - spent_today <= still_allowed:
            return BUDGET
    return None


# ---- making the copies --------------------------------------------------------------------------


class Answered(Protocol):
    """What a shadow call returns (``service.PredictionResult``)."""

    outputs: dict[str, Any]
    cached: bool
    input_tokens: int
    output_tokens: int
    cost_usd: float


Run = Callable[[Any, Variant], Awaitable[Answered]]
"""Runs the live call's inputs with ``target`` pinned (``PredictionService.run_shadow``)."""


class Shadower:
    """Makes, bounds, pays for and compares the shadow copies of one pod (event loop only)."""

    def __init__(
        self,
        run: Run,
        *,
        metrics: Metrics,
        budget: Budget,
        spend: Budget,
        windows: Windows | None = None,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self._run = run
        self._metrics = metrics
        self._budget = budget
        self._spend = spend
        self._windows = windows
        self._rng = rng
        self._tasks: set[asyncio.Task[None]] = set()
        """The shadow calls in flight: a slot each."""
        self._state: RoutingState | None = None
        self._targets: dict[TargetKey, tuple[Variant, ...]] = {}
        self._problems = ProblemLog(log)

    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    def cap(self, policy: ShadowPolicy) -> float | None:
        """The shadow's daily cap under ``policy`` and this pod's budget."""
        return effective_cap(policy.max_daily_usd, self._budget.daily_usd)

    async def spent_today(self) -> float:
        """What shadow calls spent today (the fleet's, with Redis)."""
        return await self._spend.spent_today()

    def offer(self, state: RoutingState, live_call: Any, served: Variant, answer: Answered, live_latency_s: float,
              sticky_value: str | None) -> None:
        """After a live answer: start the sampled copies; returns at once (nothing awaited).

        A request whose variant has no shadow target costs one dict look-up."""
        if state is not self._state:  # a new table: targets computed once per table
            self._state, self._targets = state, shadow_targets(state)
        targets = self._targets.get((served.revision, served.name))
        if not targets:
            return
        policy = state.table.shadow
        if not sampled(policy.sample_percent, sample_point(sticky_value, self._rng)):
            return
        fields = served.program.output_fields
        for target in targets:
            if len(self._tasks) >= policy.max_concurrent:
                self._dropped(target, BUSY)
                continue
            task = asyncio.create_task(self._shadow(policy, live_call, target, answer.outputs, fields, live_latency_s),
                                       name=f"shadow-{target.revision}-{target.name}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        """Cancel the calls in flight (shutdown: nobody waits for a shadow's answer)."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _refusal(self, policy: ShadowPolicy) -> str | None:
        daily = self._budget.daily_usd
        cap = self.cap(policy)
        if cap is None and daily is None:
            return None
        shadow_spent = await self._spend.spent_today() if cap is not None else 0.0
        spent = await self._budget.spent_today() if daily is not None else 0.0
        return spend_refusal(cap, shadow_spent, daily, spent)

    async def _shadow(self, policy: ShadowPolicy, live_call: Any, target: Variant, live: Mapping[str, Any],
                      fields: Sequence[str], live_latency_s: float) -> None:
        refusal = await self._refusal(policy)  # the budgets never raise
        if refusal is not None:
            self._dropped(target, refusal)
            return
        started = time.perf_counter()
        try:
            answer = await self._run(live_call, target)
        except BudgetExhausted:  # the budget ran out between the check and the call
            self._dropped(target, BUDGET)
            return
        except ServiceError as exc:
            self._record(target, time.perf_counter() - started, live_latency_s, None, exc.error_type)
            return
        except Exception as exc:  # a bug: counted and logged once, never raised into the loop
            self._problems.report(f"shadow call to {target.revision}/{target.name} failed unexpectedly: {exc!r}")
            self._record(target, time.perf_counter() - started, live_latency_s, None, ServiceError.error_type)
            return
        latency = time.perf_counter() - started
        if answer.cost_usd > 0:
            await self._spend.spend(answer.cost_usd)
        self._record(target, latency, live_latency_s, answer, None, agreed=agrees(live, answer.outputs, fields))

    def _record(self, target: Variant, latency_s: float, live_latency_s: float, answer: Answered | None,
                error_type: str | None, *, agreed: bool | None = None) -> None:
        m = self._metrics
        result = ERROR if answer is None else AGREE if agreed else DISAGREE
        m.bound(m.shadow_requests_total, target.revision, target.name, result).inc()
        m.bound(m.shadow_latency_seconds, target.revision, target.name).observe(latency_s)
        cost = answer.cost_usd if answer is not None else 0.0
        if cost > 0:
            m.bound(m.shadow_cost_usd_total, target.revision, target.name).inc(cost)
        if self._windows is not None:
            self._windows.record_shadow(
                target.revision,
                target.name,
                latency_s=latency_s,
                live_latency_s=live_latency_s,
                agreed=agreed if answer is not None else None,
                error_type=error_type,
                cached=answer.cached if answer is not None else False,
                tokens_in=answer.input_tokens if answer is not None else 0,
                tokens_out=answer.output_tokens if answer is not None else 0,
                cost_usd=cost,
            )

    def _dropped(self, target: Variant, reason: str) -> None:
        m = self._metrics
        m.bound(m.shadow_dropped_total, target.revision, target.name, reason).inc()
        if self._windows is not None:
            self._windows.record_shadow_drop(target.revision, target.name, reason)
