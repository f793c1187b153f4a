"""The app factory: ``create_app(settings)`` wires routes, middleware and error handlers;
its lifespan builds the components (programs, Redis client, breakers, ...) and
tears them down.

Startup fails, with one log line saying why, when a program cannot be built (an
unknown module, a bad signature, a saved program that does not fit) or the
routing table is unusable. Redis being down is not a startup failure: the cache
degrades to memory and comes back when Redis does, and the pod starts on the
routing file's table while the Redis wire keeps retrying.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator

from fastapi import FastAPI, Request
from redis.asyncio import Redis
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .api import batch, cache_admin, ops, predict
from .api.middleware import RequestContextMiddleware
from .api.fastpath import FastPredict
from .api.responses import JSON, error_response
from .cache import MemoryCache, RedisCache, TieredCache, redis_client
from .cache.hot import HotKeys
from .cache.invalidation import Invalidator
from .cache.keys import DEFAULT_BASE_PREFIX, CacheNames
from .costs import CostTracker, Pricing
from .errors import HTTP_ERROR_TYPES, ServiceError, error_body
from .evaluation import build_evaluator
from .metrics import Metrics
from .program import ProgramError, build_lm, disable_dspy_caches
from .resilience import BreakerRegistry, BreakerState, Budget, GlobalRateLimiter, Limiter, RateLimiter
from .resilience.degradation import Degradation, Thresholds
from .routing import Router, RoutingError, fallback_lm_specs
from .routing_wire import RESYNC_FACTOR, RoutingWire, ServedTableReport
from .service import Endpoint, PredictionService
from .settings import RuntimeSettings
from .shadow import SPEND_KEY_PREFIX as SHADOW_SPEND_KEY_PREFIX
from .state import Runtime
from .warmup import Warmup
from .windows import WindowFlusher, Windows

log = logging.getLogger(__name__)

FLEET_REDIS_TIMEOUT_SECS = 1.0
"""Socket timeouts of the fleet client: its calls run in background tasks, never on a request."""


class StartupError(Exception):
    """The runtime cannot start with these settings; the message says why."""


class StartupFailureWithoutTraceback:
    """Reports a ``StartupError`` from the lifespan to the server without a traceback.

    Starlette answers any exception in the lifespan with ``lifespan.startup.failed``
    carrying ``traceback.format_exc()``, which uvicorn logs, and re-raises it, which
    uvicorn logs again with the traceback: a stack trace for bad input (a missing
    routing table, a program that cannot be built), after the lifespan's own clear
    ``startup failed: ...`` line. This layer holds the failure message back until
    it knows the exception: for a ``StartupError`` it reports the failure with no
    message (the ASGI spec makes it optional) and returns, so the server logs only
    its one-line "Application startup failed. Exiting."; anything else is a bug
    and keeps its traceback. HTTP requests pass straight through.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return
        held: list[Message] = []

        async def hold_startup_failure(message: Message) -> None:
            if message["type"] == "lifespan.startup.failed":
                held.append(message)
            else:
                await send(message)

        try:
            await self.app(scope, receive, hold_startup_failure)
        except StartupError:
            await send({"type": "lifespan.startup.failed", "message": ""})
        except BaseException:
            for message in held:
                await send(message)
            raise


def build_limiter(settings: RuntimeSettings, redis: Redis | None) -> Limiter:
    """The rate limiter of ``RATE_LIMIT_SCOPE``: this pod's buckets, or the fleet's in ``redis``."""
    rate, burst = settings.rate_limit_rps, settings.effective_rate_limit_burst
    total_rate, total_burst = settings.effective_rate_limit_total
    if settings.rate_limit_scope == "global" and redis is not None:
        return GlobalRateLimiter(
            redis, rate=rate, burst=burst, total_rate=total_rate, total_burst=total_burst,
            replicas=settings.runtime_replicas, key_prefix=(settings.key_prefix or "dspy:") + "ratelimit:",
        )  # fmt: skip
    return RateLimiter(rate, burst, total_rate=total_rate, total_burst=total_burst)


def build_degradation(settings: RuntimeSettings, budget: Budget) -> Degradation | None:
    """The degradation controller of ``DEGRADATION_*``, or None when it is off."""
    if not settings.degradation_enabled:
        return None
    daily = budget.daily_usd

    def budget_left() -> float | None:
        return max(0.0, 1 - budget.known_today / daily) if daily else None

    thresholds = Thresholds(
        error_rate=settings.degradation_error_rate,
        p95_secs=settings.degradation_p95_secs,
        budget_left_fraction=settings.degradation_budget_left_fraction,
        min_hold_secs=settings.degradation_min_hold_secs,
    )
    return Degradation(thresholds, window_secs=settings.degradation_window_secs,
                       max_tokens_factor=settings.degradation_max_tokens_factor, budget_left=budget_left)


def build_runtime(settings: RuntimeSettings, metrics: Metrics | None = None) -> Runtime:
    """Every component of one app. Raises ``StartupError`` for a program or table that cannot be served."""
    disable_dspy_caches()
    metrics = metrics or Metrics()
    try:
        router = Router(settings, on_error=lambda _: metrics.errors_total.labels("routing_reload").inc())
        fallbacks = tuple(Endpoint(spec, build_lm(spec)) for spec in fallback_lm_specs(settings))
    except (ProgramError, RoutingError) as exc:
        raise StartupError(str(exc)) from None

    cache = None
    redis = None
    names = CacheNames(settings.key_prefix or DEFAULT_BASE_PREFIX)
    if settings.cache_enabled:
        memory = None
        if settings.memory_cache_size > 0:
            memory = MemoryCache(settings.memory_cache_size, settings.memory_cache_ttl_secs)
        hot = None
        if settings.redis_url is not None:
            redis = RedisCache.from_url(
                settings.redis_url.get_secret_value(),
                settings.redis_cache_ttl_secs,
                settings.redis_cache_jitter_secs,
                key_prefix=names.entries,
            )
            if memory is not None and settings.memory_cache_warm_entries > 0:
                hot = HotKeys(redis.client, names, load=min(settings.memory_cache_warm_entries, settings.memory_cache_size),
                              ttl_seconds=settings.redis_cache_ttl_secs + settings.redis_cache_jitter_secs)
        stale = None
        if memory is not None and settings.cache_stale_secs > 0:
            fresh = max(settings.memory_cache_ttl_secs, settings.redis_cache_ttl_secs + settings.redis_cache_jitter_secs
                        if redis is not None else 0)
            stale = MemoryCache(settings.memory_cache_size, fresh + settings.cache_stale_secs)
        cache = TieredCache(memory, redis, metrics, hot, stale)
    elif settings.redis_url is not None and (settings.daily_budget_usd or settings.rate_limit_scope == "global"):
        # No answer cache, but the budget (and the shadow's cap) or the rate limit is still shared through Redis.
        redis = RedisCache.from_url(settings.redis_url.get_secret_value(), settings.redis_cache_ttl_secs)

    def on_transition(model: str, old: BreakerState, new: BreakerState) -> None:
        level = logging.WARNING if new is BreakerState.OPEN else logging.INFO
        log.log(level, "circuit breaker %s -> %s", old.value, new.value, extra={"fields": {"lm_model": model}})

    breakers = BreakerRegistry(
        metrics=metrics,
        on_transition=on_transition,
        failure_threshold=settings.circuit_breaker_failure_threshold,
        success_threshold=settings.circuit_breaker_success_threshold,
        open_seconds=settings.circuit_breaker_timeout_secs,
    )
    for variant in router.state.variants:
        breakers.get(variant.model)  # export every known model's state from the start
    for endpoint in fallbacks:
        breakers.get(endpoint.spec.model)

    costs = CostTracker(
        {model: Pricing(p.prompt_per_million, p.completion_per_million) for model, p in settings.lm_pricing.items()}
    )
    for model in {v.model for v in router.state.variants} | {e.spec.model for e in fallbacks}:
        costs.pricing(model)  # resolve prices now, off the request path
    if settings.daily_budget_usd:
        for variant in router.state.variants:
            # The budget counts prompt tokens; litellm loads its tokenizer (0.8 s) on first use: now.
            variant.program.prompt_tokens(dict.fromkeys(variant.program.input_fields, ""), variant.model)
    shared = redis.client if redis is not None else None
    budget = Budget(settings.daily_budget_usd, shared, replicas=settings.runtime_replicas)
    metrics.watch_budget(budget)
    shadow_spend = Budget(None, shared, key_prefix=SHADOW_SPEND_KEY_PREFIX)
    limiter = build_limiter(settings, shared)
    degradation = build_degradation(settings, budget)
    if degradation is not None:
        metrics.watch_degradation(lambda: degradation.level().level)

    # What pods and the operator exchange through the resource's Redis: the routing
    # table's fast wire, the served-table report and the windowed figures.
    fleet = wire = report = flusher = None
    prefix = settings.key_prefix
    if settings.redis_url is not None and (prefix is not None or settings.routing_redis_key is not None):
        fleet = redis_client(settings.redis_url.get_secret_value(), timeout_seconds=FLEET_REDIS_TIMEOUT_SECS)
    if fleet is not None and settings.routing_redis_key is not None:
        resync = settings.routing_reload_secs * RESYNC_FACTOR
        wire = RoutingWire(router, fleet, settings.routing_redis_key, resync_secs=resync)
    if fleet is not None and prefix is not None:
        report = ServedTableReport(router, fleet, prefix, settings.effective_pod_name,
                                   level=degradation.level if degradation is not None else None)
        flusher = WindowFlusher(Windows(), fleet, prefix, settings.window_flush_secs)

    service = PredictionService(
        settings,
        router=router,
        cache=cache,
        breakers=breakers,
        limiter=limiter,
        budget=budget,
        costs=costs,
        metrics=metrics,
        fallbacks=fallbacks,
        windows=flusher.windows if flusher is not None else None,
        shadow_spend=shadow_spend,
        degradation=degradation,
    )
    warmup = Warmup(settings, service, router, cache, names, metrics)
    if settings.cache_warmup_path is not None and cache is None:
        log.warning("CACHE_WARMUP_PATH is set, but the cache is off (CACHE_ENABLED=false): nothing to warm")
    return Runtime(
        settings=settings,
        metrics=metrics,
        router=router,
        cache=cache,
        redis=redis,
        breakers=breakers,
        budget=budget,
        limiter=limiter,
        costs=costs,
        service=service,
        fleet_redis=fleet,
        routing_wire=wire,
        pods_report=report,
        window_flusher=flusher,
        warmup=warmup,
        invalidator=Invalidator(cache, names, metrics) if cache is not None else None,
    )


def _install_error_handlers(app: FastAPI) -> None:
    def request_id(request: Request) -> str | None:
        return getattr(request.state, "request_id", None)

    @app.exception_handler(ServiceError)
    async def service_error(request: Request, exc: ServiceError) -> JSON:
        return error_response(exc, request_id(request))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSON:
        return JSON(error_body("invalid_input", "invalid request", request_id(request)), status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSON:
        error_type = HTTP_ERROR_TYPES.get(exc.status_code, "http_error")
        message = exc.detail if isinstance(exc.detail, str) else error_type.replace("_", " ")
        return JSON(error_body(error_type, message, request_id(request)), status_code=exc.status_code, headers=exc.headers)


def create_app(settings: RuntimeSettings, *, metrics: Metrics | None = None) -> FastAPI:
    """The ASGI app; components are built when it starts (lifespan), not here."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            runtime = build_runtime(settings, metrics)
        except StartupError as exc:
            log.error("startup failed: %s", exc)
            raise
        app.state.runtime = runtime
        if runtime.routing_wire is not None:
            await runtime.routing_wire.startup_sync()  # a pushed table newer than the file's, before ready
        # What exists now (DSPy, litellm, the programs: hundreds of thousands of
        # objects) lives as long as the process. Frozen, the collector stops
        # re-scanning it: a full collection took ~300 ms, a stall every request in
        # flight would wait out, and concurrent load triggers them every few seconds.
        gc.collect()
        gc.freeze()
        watcher = asyncio.create_task(runtime.router.watch(), name="routing-table-watcher")
        jobs = [asyncio.create_task(job.run(), name=name) for name, job in runtime.background_jobs()]
        evaluator = build_evaluator(runtime)  # the evaluation gate; cancelled with the other jobs
        if evaluator is not None:
            jobs.append(asyncio.create_task(evaluator.run(), name="evaluator"))
        runtime.ready = True
        variants = {v.name: {"model": v.model, "version": v.program.version} for v in runtime.router.state.variants}
        log.info("runtime ready", extra={"fields": {"variants": variants}})
        try:
            yield
        finally:
            # Uvicorn has stopped accepting and drained in-flight requests before this runs.
            runtime.ready = False
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
            for job in jobs:
                job.cancel()
            for job in jobs:
                with contextlib.suppress(asyncio.CancelledError):
                    await job
            await runtime.service.shadow.close()  # copies still in flight are not worth waiting for
            if runtime.window_flusher is not None:
                await runtime.window_flusher.flush()  # what was recorded since the last flush
            if runtime.fleet_redis is not None:
                await runtime.fleet_redis.aclose()
            if runtime.redis is not None:
                await runtime.redis.close()
            log.info("runtime stopped")

    app = FastAPI(
        title="dspy-runtime",
        summary="Serves a DSPy program behind a two-level cache, a circuit breaker, budgets and rate limits.",
        lifespan=lifespan,
        default_response_class=JSON,
        # The runtime reports through its own Prometheus metrics and JSON log lines;
        # FastAPI's native OpenTelemetry bridge, on by default, otherwise checks on
        # every request whether a global OTel provider has been configured.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.runtime = None
    _install_error_handlers(app)
    predict.add_route(app)
    batch.add_route(app)
    app.include_router(ops.router)
    app.include_router(cache_admin.router)
    app.add_middleware(FastPredict)
    app.add_middleware(RequestContextMiddleware, max_body_bytes=settings.max_body_bytes)
    app.add_middleware(StartupFailureWithoutTraceback)
    return app
