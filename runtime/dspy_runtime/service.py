"""One prediction, start to finish; the HTTP route only translates to and from JSON.

Order of the guards, cheapest and most protective first:

1. revision, then variant choice (each pinned, sticky or by weight) - an unknown pinned
   revision or variant is a 422;
2. rate limit (``RATE_LIMIT_SCOPE``: per pod or one for the fleet through Redis; per client key
   from ``RATE_LIMIT_KEY_HEADER``, behind an overall bucket) - 429 + Retry-After;
3. input validation against the variant's signature - 422 naming the fields;
4. the two-level cache with single-flight (``TieredCache.get_or_compute``); on a miss:
5. the daily budget - 429 "daily budget exhausted", and no LM call. On a miss only (answers
   already cached keep being served for free), the call's worst-case cost is reserved
   (``Budget.reserve``: the prompt's tokens as litellm counts them plus ``max_tokens``, for every
   LM call the program may make, at the dearest model of the chain); a reservation that does
   not fit is the 429. After the call the reservation is settled to the real cost (0 when the
   call failed), so concurrent calls on any number of replicas cannot overshoot the budget;
6. the LM call: per model, the breaker decides (open: skip to the next model of
   ``LM_FALLBACK_MODELS``), the call runs under ``LM_TIMEOUT_SECS`` and is retried
   with jittered back-off on transient errors only (timeouts, 429, 5xx, network:
   ``dspy.utils.exceptions.is_retryable_lm_error`` - in DSPy 3.4 the LM layer raises
   DSPy's own ``LM*Error`` classes, not litellm's); a fallback's answer is served but
   not cached;
7. accounting: tokens from ``prediction.get_lm_usage()`` (every LM call the module
   made) times the model's price -> ``CostTracker``, ``Budget``, metrics.

Requests that joined another request's in-flight computation (single-flight) or hit
the cache report ``cached: true`` and zero tokens and cost: only the request that
called the LM spent anything.

Streaming (``call.stream``, ``POST /v1/predict`` with ``"stream": true``): the same
path, with step 6 writing each output field's text to the call's ``ChunkSink`` as the
LM writes it (``streaming.py``). Until the first chunk is written, retries and the
fallback chain work as for any call; after it, a failure ends the call with the
error (no retry, no next model: the client has part of this answer already). The
answer is cached and accounted like any other; a hit or a single-flight join writes
no chunks.

Every prediction that got as far as a variant is counted once, success or failure,
in the metrics and in the windowed figures the canary analysis reads (``windows.py``),
with its latency: a canary that times out must not look fast.

Graceful degradation (``DEGRADATION_ENABLED``, ``resilience/degradation.py``) acts on live
computes only (never on a hit, a shadow copy or a warm-up): at ``cheaper_model`` the next
cheaper model of the chain goes first, at ``shorter_answers`` every model gets a scaled
``max_tokens``, at ``cache_only`` no LM is called. Each computed outcome (its latency, an
upstream failure or not) feeds the controller. With ``CACHE_STALE_SECS``, a compute that fails
upstream (every model failed or open), or is refused at ``cache_only``, is answered by the last
stored answer within its stale grace, marked ``stale`` in the metadata and never cached again.

After a live answer, the shadow targets of its variant get their sampled copies
(``shadow.py``): started in the background once the answer is computed, never awaited by
the request. A copy runs ``run_shadow``: steps 3 to 7 with the target pinned, no rate
limit and no fallback model, counted by the shadow module instead of as a prediction.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import dspy
import orjson
from dspy.utils.exceptions import (
    AdapterParseError,
    ContextWindowExceededError,
    LMAuthError,
    LMBillingError,
    LMError,
    LMTimeoutError,
    is_retryable_lm_error,
)
from pydantic import BaseModel

from .cache import TieredCache, cache_key
from .clock import IsoTimestamps
from .costs import CostTracker, Pricing
from .errors import (
    BudgetExhausted,
    CircuitOpen,
    InvalidInput,
    RateLimited,
    ServiceError,
    UpstreamError,
    UpstreamTimeout,
)
from .metrics import Metrics
from .program import LMSpec, Program, build_lm
from .resilience import BreakerRegistry, Budget, Hold, Limiter, call_with_retries
from .resilience.degradation import CACHE_ONLY, CHEAPER_MODEL, NORMAL, SHORTER_ANSWERS, Degradation
from .routing import Router, Variant
from .settings import RuntimeSettings
from .shadow import SPEND_KEY_PREFIX, Shadower
from .streaming import ChunkSink, acall_streaming
from .windows import Windows

log = logging.getLogger(__name__)

HOLD_SLACK_SECONDS = 60.0
"""A budget reservation outlives the longest its call may take by this much (a busy loop, a slow settle)."""


@dataclass(frozen=True)
class Endpoint:
    """An LM the service may call: the primary of a variant, or a pod-wide fallback."""

    spec: LMSpec
    lm: dspy.LM


@dataclass(frozen=True)
class PredictionResult:
    request_id: str
    model: str
    revision: str
    variant: str
    outputs: dict[str, Any]
    output: Any
    latency_ms: float
    cached: bool
    cache_level: str | None
    input_tokens: int
    output_tokens: int
    cost_usd: float
    timestamp: str
    stale: bool = False
    degradation_level: int | None = None
    """This pod's degradation level when DEGRADATION_ENABLED; None (and absent from the body) otherwise."""

    def body(self) -> dict[str, Any]:
        """The response body of ``POST /v1/predict`` (DESIGN.md)."""
        body = {
            "request_id": self.request_id,
            "model": self.model,
            "revision": self.revision,
            "variant": self.variant,
            "outputs": self.outputs,
            "output": self.output,
            "metadata": {
                "latency_ms": self.latency_ms,
                "cached": self.cached,
                "cache_level": self.cache_level,
                "input_tokens": self.input_tokens,
                "output_tokens": self.output_tokens,
                "cost_usd": self.cost_usd,
                "timestamp": self.timestamp,
            },
        }
        if self.stale:
            body["metadata"]["stale"] = True
        if self.degradation_level is not None:
            body["metadata"]["degradation_level"] = self.degradation_level
        return body


@dataclass
class PredictCall:
    """One request's parameters; ``log`` collects the fields of its log line as they become known."""

    request_id: str
    inputs: Mapping[str, Any] | None = None
    single_input: Any = None
    revision: str | None = None
    variant: str | None = None
    use_cache: bool = True
    sticky_value: str | None = None
    client_key: str | None = None
    analyzed: bool = True
    """Counted in the windowed figures the canary analysis judges, and copied to shadow targets;
    the evaluation gate's own predictions are not user traffic and would skew the first interval."""
    shadow: bool = False
    """A shadow copy (``run_shadow``): not rate limited (the live request was), no fallback models
    (a fallback's answer is not the shadow's)."""
    stream: ChunkSink | None = None
    """Where a streaming request's chunks go while the LM writes them (see the module docstring)."""
    log: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class _Answer:
    model: str
    outputs: dict[str, Any]
    input_tokens: int
    output_tokens: int
    fallback: bool


def _jsonable(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    return str(value)


def _seconds_to_utc_midnight(now: datetime) -> float:
    tomorrow = (now + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return (tomorrow - now).total_seconds()


def is_transient(exc: BaseException) -> bool:
    """Worth retrying: our own timeout, or DSPy's retryable LM errors (timeout, 429, 5xx, network)."""
    return isinstance(exc, TimeoutError) or is_retryable_lm_error(exc)  # type: ignore[arg-type]


def _hurts_breaker(exc: BaseException) -> bool:
    """Failures that say the model is unusable right now (the breaker counts them)."""
    return is_transient(exc) or isinstance(exc, (LMAuthError, LMBillingError))


def _describe(exc: BaseException) -> str:
    """A caller-safe description: DSPy's error code and HTTP status, never the provider's text."""
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, LMError):
        status = f", HTTP {exc.status}" if exc.status else ""
        return f"{exc.code or 'error'}{status}"
    return type(exc).__name__


class PredictionService:
    def __init__(
        self,
        settings: RuntimeSettings,
        *,
        router: Router,
        cache: TieredCache | None,
        breakers: BreakerRegistry,
        limiter: Limiter,
        budget: Budget,
        costs: CostTracker,
        metrics: Metrics,
        fallbacks: Sequence[Endpoint] = (),
        windows: Windows | None = None,
        shadow_spend: Budget | None = None,
        degradation: Degradation | None = None,
    ) -> None:
        self._settings = settings
        self.router = router
        self._cache = cache
        self._breakers = breakers
        self._limiter = limiter
        self._budget = budget
        self._costs = costs
        self._metrics = metrics
        self.fallbacks = tuple(fallbacks)
        self._windows = windows
        self.degradation = degradation
        self._short_lms: dict[tuple[str, int], dspy.LM] = {}
        """At ``shorter_answers``: each endpoint's LM rebuilt with the scaled max_tokens, once."""
        self._timestamp = IsoTimestamps()
        # The shadow's own daily counter (its cap), on the budget's Redis when there is one.
        spend = shadow_spend if shadow_spend is not None else Budget(None, None, key_prefix=SPEND_KEY_PREFIX)
        self.shadow = Shadower(self.run_shadow, metrics=metrics, budget=budget, spend=spend, windows=windows)

    async def predict(self, call: PredictCall) -> PredictionResult:
        started = time.perf_counter()
        state = self.router.state  # the table this request is served and copied by
        variant = self.router.choose(revision=call.revision, pinned=call.variant, sticky_value=call.sticky_value)
        call.log.update(revision=variant.revision, variant=variant.name, model=variant.model)
        self._metrics.active_predictions.inc()
        try:
            result = await self._predict(call, variant, started)
        except ServiceError as exc:
            self._count_failure(variant, exc.error_type, exc.status_code, started, call)
            raise
        except Exception:
            self._count_failure(variant, ServiceError.error_type, ServiceError.status_code, started, call)
            raise
        finally:
            self._metrics.active_predictions.dec()
        m = self._metrics
        latency = result.latency_ms / 1000
        cached = "true" if result.cached else "false"
        m.bound(m.predictions_total, result.model, variant.revision, variant.name, "ok").inc()
        m.bound(m.prediction_duration_seconds, result.model, variant.revision, variant.name, cached).observe(latency)
        self._record_window(call, variant, latency, None, 200, result)
        call.log.update(
            model=result.model,
            cached=result.cached,
            cache_level=result.cache_level,
            latency_ms=result.latency_ms,
            input_tokens=result.input_tokens,
            output_tokens=result.output_tokens,
            cost_usd=result.cost_usd,
        )
        if call.analyzed:
            self.shadow.offer(state, call, variant, result, latency, call.sticky_value)
        return result

    async def run_shadow(self, live: PredictCall, target: Variant) -> PredictionResult:
        """A shadow copy of ``live``'s inputs, answered by ``target`` (see the module docstring)."""
        call = PredictCall(
            request_id=live.request_id, inputs=live.inputs, single_input=live.single_input,
            revision=target.revision, variant=target.name, analyzed=False, shadow=True,
        )
        return await self._predict(call, target, time.perf_counter())

    async def warm(self, request_id: str, target: Variant, inputs: Mapping[str, Any]) -> PredictionResult:
        """Cache warm-up (``warmup.py``): ``target`` answers ``inputs`` through steps 3 to 7, treated
        like a shadow copy: no rate limit, no fallback model (a fallback's answer is not cached, so
        it would warm nothing), not counted as a prediction."""
        call = PredictCall(request_id=request_id, inputs=inputs, revision=target.revision, variant=target.name,
                           analyzed=False, shadow=True)
        return await self._predict(call, target, time.perf_counter())

    def _record_window(self, call: PredictCall, variant: Variant, latency: float, error_type: str | None,
                       http_status: int, result: PredictionResult | None) -> None:
        """One prediction into the windowed figures (a failure has no result: nothing cached or spent)."""
        if self._windows is None or not call.analyzed:
            return
        self._windows.record(
            variant.revision,
            variant.name,
            latency_s=latency,
            error_type=error_type,
            http_status=http_status,
            cached=result.cached if result else False,
            tokens_in=result.input_tokens if result else 0,
            tokens_out=result.output_tokens if result else 0,
            cost_usd=result.cost_usd if result else 0.0,
        )

    def _count_failure(
        self, variant: Variant, error_type: str, http_status: int, started: float, call: PredictCall
    ) -> None:
        latency = time.perf_counter() - started
        m = self._metrics
        m.bound(m.predictions_total, variant.model, variant.revision, variant.name, error_type).inc()
        m.bound(m.prediction_duration_seconds, variant.model, variant.revision, variant.name, "false").observe(latency)
        m.bound(m.errors_total, error_type).inc()
        self._record_window(call, variant, latency, error_type, http_status, None)
        call.log["error_type"] = error_type

    async def _predict(self, call: PredictCall, variant: Variant, started: float) -> PredictionResult:
        wait = 0.0 if call.shadow else await self._limiter.check(call.client_key or "")
        if wait > 0:
            raise RateLimited("rate limit exceeded; retry later", retry_after=wait)
        program = variant.program
        kwargs = program.validate_inputs(call.inputs, call.single_input)
        if self._settings.log_inputs:
            call.log["inputs"] = kwargs

        computed = False
        key = ""
        degradation = None if call.shadow else self.degradation

        async def compute() -> tuple[bytes, bool]:
            nonlocal computed
            computed = True
            level = degradation.level().level if degradation is not None else NORMAL
            if level >= CACHE_ONLY:
                return self._stale_or_raise(key, CircuitOpen(
                    "degraded to cache only: no cached answer for these inputs",
                    retry_after=degradation.thresholds.min_hold_secs if degradation else None,
                ))
            endpoints = self._endpoints(variant, fallbacks=not call.shadow, level=level)
            hold = await self._reserve(variant, kwargs, endpoints)
            cost = 0.0
            began = time.perf_counter()
            try:
                answer = await self._compute(variant, kwargs, endpoints, stream=call.stream)
                cost = self._account(answer, variant)
            except (UpstreamError, UpstreamTimeout, CircuitOpen) as exc:
                if degradation is not None:
                    degradation.record(time.perf_counter() - began, error=True)
                return self._stale_or_raise(key, exc)
            finally:
                await self._budget.settle(hold, cost)
            if degradation is not None:
                degradation.record(time.perf_counter() - began, error=False)
            payload = {
                "model": answer.model,
                "outputs": answer.outputs,
                "input_tokens": answer.input_tokens,
                "output_tokens": answer.output_tokens,
                "cost_usd": cost,
            }
            return orjson.dumps(payload, default=_jsonable), not answer.fallback

        if self._cache is None:
            value, level = (await compute())[0], None
        else:
            try:
                key = cache_key(variant.cache_version, variant.model, variant.name, kwargs)
            except TypeError:
                raise InvalidInput("inputs must be JSON values") from None
            value, level = await self._cache.get_or_compute(key, compute, read=call.use_cache)

        payload = orjson.loads(value)
        stale = payload.get("stale", False)
        mine = computed and not stale  # this request called the LM (joiners, hits and stale answers did not)
        outputs = payload["outputs"]
        return PredictionResult(
            request_id=call.request_id,
            model=payload["model"],
            revision=variant.revision,
            variant=variant.name,
            outputs=outputs,
            output=outputs.get(program.output_fields[0]),
            latency_ms=round((time.perf_counter() - started) * 1000, 3),
            cached=not mine,
            cache_level="stale" if stale else None if mine else level,
            input_tokens=payload["input_tokens"] if mine else 0,
            output_tokens=payload["output_tokens"] if mine else 0,
            cost_usd=round(payload["cost_usd"], 10) if mine else 0.0,
            timestamp=self._timestamp(time.time()),
            stale=stale,
            degradation_level=None if self.degradation is None else self.degradation.current.level,
        )

    def _stale_or_raise(self, key: str, exc: ServiceError) -> tuple[bytes, bool]:
        """Stale-if-error: the last answer kept for ``key`` (see the module docstring), else ``exc``."""
        kept = self._cache.stale_get(key) if self._cache is not None and key else None
        if kept is None:
            raise exc
        payload = orjson.loads(kept)
        payload.update(stale=True, input_tokens=0, output_tokens=0, cost_usd=0.0)
        return orjson.dumps(payload), False

    def _endpoints(self, variant: Variant, *, fallbacks: bool, level: int = NORMAL) -> list[Endpoint]:
        """The models a call may go to, in order: the variant's, then the pod's fallbacks.

        From ``cheaper_model`` on, the dearest fallback cheaper than the variant's model goes first
        (the rest keep their order); from ``shorter_answers`` on, each gets the scaled max_tokens.
        """
        endpoints = [Endpoint(variant.spec.lm, variant.lm)]
        if fallbacks:
            endpoints += [e for e in self.fallbacks if e.spec.model != variant.model]
        if level >= CHEAPER_MODEL:
            price = self._price_per_million(variant, endpoints[0].spec.model)
            cheaper = [e for e in endpoints[1:] if self._price_per_million(variant, e.spec.model) < price]
            if cheaper:
                first = max(cheaper, key=lambda e: self._price_per_million(variant, e.spec.model))
                endpoints.remove(first)
                endpoints.insert(0, first)
        if level >= SHORTER_ANSWERS and self.degradation is not None:
            endpoints = [self._shortened(e, self.degradation.max_tokens(e.spec.max_tokens)) for e in endpoints]
        return endpoints

    def _price_per_million(self, variant: Variant, model: str) -> float:
        """A million prompt plus a million completion tokens of ``model``; unpriced models count as
        infinitely dear, so an unknown price is never taken for a cheaper one."""
        price = self._pricing(variant, model) or self._costs.pricing(model)
        return math.inf if price is None else price.prompt_per_million + price.completion_per_million

    def _shortened(self, endpoint: Endpoint, max_tokens: int) -> Endpoint:
        spec = dataclasses.replace(endpoint.spec, max_tokens=max_tokens)
        lm = self._short_lms.get((spec.model, max_tokens))
        if lm is None:
            lm = self._short_lms[(spec.model, max_tokens)] = build_lm(spec)
        return Endpoint(spec, lm)

    async def _reserve(self, variant: Variant, kwargs: dict[str, Any], endpoints: Sequence[Endpoint]) -> Hold:
        """The budget's reservation for one prediction's worst case; ``BudgetExhausted`` when it does not fit.

        Held at most as long as the call may take (every endpoint's attempts, timeouts and
        back-offs) plus ``HOLD_SLACK_SECONDS``; a pod that dies meanwhile leaves a hold that lapses.
        """
        worst = 0.0
        if self._budget.daily_usd is not None:  # unlimited: nothing to count
            program = variant.program
            prompt = program.prompt_tokens(kwargs, variant.model)
            worst = program.max_lm_calls * max(
                self._costs.cost(e.spec.model, prompt, e.spec.max_tokens, self._pricing(variant, e.spec.model))
                for e in endpoints
            )
        s = self._settings
        attempts = s.lm_max_retries + 1
        hold_seconds = HOLD_SLACK_SECONDS + sum(
            attempts * (e.spec.timeout_secs + s.lm_retry_max_delay_secs) for e in endpoints
        )
        hold = await self._budget.reserve(worst, hold_seconds)
        if hold is None:
            raise BudgetExhausted(
                f"the daily budget of {self._budget.daily_usd} USD is exhausted; predictions resume at 00:00 UTC",
                retry_after=_seconds_to_utc_midnight(datetime.now(UTC)),
            )
        return hold

    async def _compute(
        self, variant: Variant, kwargs: dict[str, Any], endpoints: Sequence[Endpoint], *, stream: ChunkSink | None = None
    ) -> _Answer:
        skipped: list[tuple[str, float]] = []
        failures: list[tuple[str, BaseException]] = []

        def retryable(exc: BaseException) -> bool:
            # Once chunks are out, a retry would send the start of the answer twice.
            return is_transient(exc) and (stream is None or not stream.started)

        for index, endpoint in enumerate(endpoints):
            model = endpoint.spec.model
            breaker = self._breakers.get(model)
            if not breaker.allow():
                skipped.append((model, breaker.retry_after()))
                continue
            try:
                prediction = await call_with_retries(
                    lambda endpoint=endpoint: self._call_once(variant.program, endpoint, kwargs, stream),
                    is_transient=retryable,
                    attempts=self._settings.lm_max_retries + 1,
                    base_delay=self._settings.lm_retry_base_delay_secs,
                    max_delay=self._settings.lm_retry_max_delay_secs,
                )
            except (AdapterParseError, ContextWindowExceededError) as exc:
                breaker.record_success()  # the provider answered; the answer or the input is the problem
                if isinstance(exc, ContextWindowExceededError):
                    raise InvalidInput(f"the inputs exceed the context window of {model}") from None
                raise UpstreamError(f"the answer of {model} could not be parsed into the signature's fields") from None
            except (LMError, TimeoutError) as exc:
                if _hurts_breaker(exc):
                    breaker.record_failure()
                failures.append((model, exc))
                log.warning("LM call failed", extra={"fields": {"lm_model": model, "error": _describe(exc)}})
                if stream is not None and stream.started:
                    break  # another model's answer cannot continue the chunks already sent
                continue
            breaker.record_success()
            return self._answer(prediction, model, fallback=index > 0)
        if not failures:
            retry_after = min(seconds for _, seconds in skipped)
            names = ", ".join(model for model, _ in skipped)
            raise CircuitOpen(
                f"circuit breaker open for {names} and no fallback model is available", retry_after=retry_after
            )
        model, exc = failures[-1]
        tried = "; ".join(f"{m}: {_describe(e)}" for m, e in failures)
        if isinstance(exc, (TimeoutError, LMTimeoutError)):
            raise UpstreamTimeout(f"the LM did not answer in time ({tried})")
        raise UpstreamError(f"the LM call failed ({tried})")

    async def _call_once(
        self, program: Program, endpoint: Endpoint, kwargs: dict[str, Any], stream: ChunkSink | None = None
    ) -> dspy.Prediction:
        # dspy.context scopes the LM and usage tracking to this task (no global dspy.configure).
        with dspy.context(lm=endpoint.lm, track_usage=True):
            async with asyncio.timeout(endpoint.spec.timeout_secs):
                if stream is None:
                    return await program.module.acall(**kwargs)
                return await acall_streaming(program.module, kwargs, stream)

    @staticmethod
    def _answer(prediction: dspy.Prediction, model: str, *, fallback: bool) -> _Answer:
        usage = prediction.get_lm_usage() or {}
        input_tokens = sum(int(u.get("prompt_tokens") or 0) for u in usage.values())
        output_tokens = sum(int(u.get("completion_tokens") or 0) for u in usage.values())
        return _Answer(model, dict(prediction.items()), input_tokens, output_tokens, fallback)

    @staticmethod
    def _pricing(variant: Variant, model: str) -> Pricing | None:
        """The variant's own price is for its model; a fallback's answer costs the fallback's price."""
        return variant.spec.pricing if model == variant.model else None

    def _account(self, answer: _Answer, variant: Variant) -> float:
        pricing = self._pricing(variant, answer.model)
        cost = self._costs.record(answer.model, variant.name, answer.input_tokens, answer.output_tokens, pricing)
        m = self._metrics
        m.bound(m.token_usage_total, answer.model, "input").inc(answer.input_tokens)
        m.bound(m.token_usage_total, answer.model, "output").inc(answer.output_tokens)
        if cost > 0:
            m.bound(m.cost_usd_total, answer.model, variant.revision, variant.name).inc(cost)
        return cost
