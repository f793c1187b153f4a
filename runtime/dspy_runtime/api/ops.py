"""Operational endpoints: health, readiness, metrics, costs and the effective config."""

from __future__ import annotations

import dataclasses
from typing import Any

from fastapi import APIRouter, Request, Response

from ..errors import NotReady, server_error_types
from ..resilience import BreakerState
from ..resilience.global_ratelimit import FALLBACK
from .deps import MaybeRuntimeDep, RuntimeDep
from .responses import JSON
from .schemas import ConfigResponse, CostsResponse, HealthResponse, ReadyResponse, documented

router = APIRouter()

SERVER_ERROR_TYPES = server_error_types()


@router.get("/health", summary="Liveness: 200 while the process serves; says ok or degraded",
            responses=documented(HealthResponse))
async def health(runtime: MaybeRuntimeDep) -> JSON:
    if runtime is None:
        return JSON({"status": "starting", "components": {"program": "loading"}})
    components: dict[str, Any] = {"program": "loaded" if runtime.ready else "stopping"}
    if runtime.cache is not None:
        components.update(await runtime.cache.health())
    else:
        components.update(memory="disabled", redis="disabled")
    if runtime.warmup is not None:
        components["warmup"] = runtime.warmup.progress.public()
    breakers = {model: state.value for model, state in runtime.breakers.states().items()}
    components["breakers"] = breakers
    components["budget_store"] = "ok" if runtime.budget.healthy else "down"
    components["rate_limit"] = runtime.limiter.mode
    degradation = runtime.service.degradation
    components["degradation"] = "disabled" if degradation is None else degradation.public()
    degraded = (
        (degradation is not None and degradation.current.level > 0)
        or components.get("redis") == "down"
        or components["budget_store"] == "down"
        or components["rate_limit"] == FALLBACK
        or any(state != BreakerState.CLOSED.value for state in breakers.values())
    )
    return JSON({"status": "degraded" if degraded else "ok", "components": components})


@router.get("/ready", summary="Readiness: 503 until the program is loaded and the cache warmed, and while stopping",
            responses=documented(ReadyResponse))
async def ready(request: Request) -> JSON:
    runtime = getattr(request.app.state, "runtime", None)
    if runtime is None or not runtime.ready:
        raise NotReady("the program is not loaded yet")
    warmup = runtime.warmup
    if warmup is not None and not warmup.ready:
        progress = warmup.progress
        raise NotReady(f"warming the cache: {progress.entries - progress.pending} of {progress.entries} entries done")
    return JSON({"status": "ready", "variants": [v.name for v in runtime.router.state.variants]})


# response_class=Response: the route sets its own media type, so FastAPI adds no JSON one to the 200.
@router.get("/metrics", summary="Prometheus metrics", response_class=Response, responses=documented(
    {"description": "The Prometheus text format.", "content": {"text/plain": {"schema": {"type": "string"}}}}))
async def metrics(runtime: RuntimeDep) -> Response:
    # Shadow variants answer copies, counted as shadow requests rather than as predictions.
    served = ((v.model, v.revision, v.name) for v in runtime.router.state.variants if not v.shadow)
    runtime.metrics.declare_variants(served, SERVER_ERROR_TYPES)
    body, content_type = runtime.metrics.render()
    return Response(body, media_type=content_type)


@router.get("/costs", summary="Token usage and spend since start, and today's budget",
            responses=documented(CostsResponse))
async def costs(runtime: RuntimeDep) -> JSON:
    budget = runtime.budget
    snapshot = runtime.costs.snapshot()
    spent = await budget.spent_today()
    snapshot["budget"] = {
        "daily_usd": budget.daily_usd,
        "spent_today_usd": round(spent, 9),
        "reserved_usd": round(budget.reserved_today, 9),
        "exhausted": budget.daily_usd is not None and (spent >= budget.daily_usd or budget.refusing),
    }
    shadow = runtime.service.shadow
    snapshot["shadow"] = {
        "cap_usd": shadow.cap(runtime.router.state.table.shadow),
        "spent_today_usd": round(await shadow.spent_today(), 9),
    }
    return JSON(snapshot)


@router.get("/config", summary="The effective settings and routing table (no secrets)",
            responses=documented(ConfigResponse))
async def config(runtime: RuntimeDep) -> JSON:
    state = runtime.router.state
    return JSON(
        {
            "settings": runtime.settings.public_dict(),
            "routing": {
                "serial": state.serial,
                "table_hash": state.source_hash,
                "source": state.source,
                "sticky_header": state.table.sticky_header,
                "shadow": dataclasses.asdict(state.table.shadow),
                "revisions": [r.public() for r in state.revisions],
                "variants": [v.public() for v in state.variants],
            },
            "fallback_models": list(runtime.settings.lm_fallback_models),
            "fallbacks": [endpoint.spec.public() for endpoint in runtime.service.fallbacks],
        }
    )
