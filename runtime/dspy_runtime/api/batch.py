"""``POST /v1/predict/batch``: ``{items: [<a /v1/predict body>, ...]}`` -> ``{results: [...]}``.

Each item is a ``/v1/predict`` of its own on the service's one call path: its body is
validated like one, and it passes the same rate limit (one token per item), input
validation, cache with single-flight, breaker, fallback chain and budget, and is
counted in the same metrics and windowed figures. Its result is the body
``/v1/predict`` would answer, or that request's error body: an item that fails does
not fail the batch. Results keep the items' order.

Items run ``BATCH_CONCURRENCY`` at a time. Identical items cost one LM call: the ones
running together join one computation (single-flight), later ones hit the cache it
filled, and report ``cached: true`` with zero tokens and cost like any hit. (With
``CACHE_ENABLED=false`` or ``use_cache: false`` there is nothing to share, as on
``/v1/predict``.)

The batch itself is a 422 when ``items`` is missing, not a list or empty, and a 413
past ``MAX_BATCH_ITEMS``; the body limit (``MAX_BODY_BYTES``) holds for the whole
batch. An item's request id is its own ``request_id``, else ``<batch id>-<index>``.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from fastapi import FastAPI, Request
from pydantic import BaseModel, ConfigDict, Field

from ..errors import InvalidInput, PayloadTooLarge, ServiceError, error_body
from ..logs import request_id_var
from ..state import Runtime
from .body import json_object, object_of, validated
from .deps import runtime_of
from .predict import RequestRoute, predict_call
from .responses import JSON
from .schemas import WITH_A_BODY, BatchResponse, PredictRequest, documented

log = logging.getLogger(__name__)

PATH = "/v1/predict/batch"


class BatchRequest(BaseModel):
    """The batch body; each item is checked as a ``PredictRequest`` on its own (see the module docstring)."""

    model_config = ConfigDict(extra="forbid")

    items: list[Any] = Field(min_length=1)


def add_route(app: FastAPI) -> None:
    app.router.add_api_route(
        PATH,
        predict_batch,
        route_class_override=RequestRoute,
        methods=["POST"],
        summary="Run the program on several sets of inputs; one result (or error) per item, in order",
        responses=documented({"model": BatchResponse, "description": "One result per item, in the items' order"},
                             *WITH_A_BODY),
        openapi_extra={"requestBody": {"required": True, "content": {JSON.media_type: {"schema": request_schema()}}}},
    )


def request_schema() -> dict[str, Any]:
    """``BatchRequest`` with its items documented as ``/v1/predict`` bodies. Any other value is
    documented too, since it is accepted: it gets its own error among the results (the other
    items are still answered), so a client need not pre-validate a batch."""
    schema = BatchRequest.model_json_schema()
    schema["properties"]["items"]["items"] = {"anyOf": [
        PredictRequest.model_json_schema(),
        {"description": "anything else: answered with this item's invalid_input error in results"},
    ]}
    return schema


async def predict_batch(request: Request) -> JSON:
    runtime = runtime_of(request)
    items = validated(BatchRequest, json_object(await request.body())).items
    limit = runtime.settings.max_batch_items
    if len(items) > limit:
        raise PayloadTooLarge(f"items: {len(items)} items is over the limit of {limit} per batch (MAX_BATCH_ITEMS)")
    runtime.metrics.batch_items.observe(len(items))

    batch_id = request.state.request_id
    results: list[dict[str, Any]] = [{} for _ in items]
    pending = iter(enumerate(items))

    async def worker() -> None:
        for index, item in pending:  # one shared iterator: each item is taken once
            results[index] = await _predict_item(runtime, request, item, f"{batch_id}-{index}")

    async with asyncio.TaskGroup() as group:
        for _ in range(min(runtime.settings.batch_concurrency, len(items))):
            group.create_task(worker())
    request.state.log.update(_summary(results))
    return JSON({"results": results})


async def _predict_item(runtime: Runtime, request: Request, item: Any, default_id: str) -> dict[str, Any]:
    """One item's result body, or its error body (never raises)."""
    request_id = default_id
    try:
        body = validated(PredictRequest, object_of(item, "an item (a /v1/predict body)"))
        if body.request_id:
            request_id = body.request_id
        request_id_var.set(request_id)  # this worker task's own context: the item's log lines carry its id
        if body.stream:
            raise InvalidInput("stream: a batch item cannot stream; send it to /v1/predict")
        result = await runtime.service.predict(predict_call(runtime, request.headers.get, body, request_id, {}))
    except ServiceError as exc:
        return error_body(exc.error_type, exc.message, request_id)
    except Exception:
        log.exception("unhandled error in a batch item", extra={"fields": {"request_id": request_id}})
        return error_body("internal_error", "internal error; see the logs for this request id", request_id)
    return result.body()


def _summary(results: list[dict[str, Any]]) -> dict[str, Any]:
    """The batch's fields of the request log line (each item's own fields are not logged)."""
    answers = [r["metadata"] for r in results if "metadata" in r]
    return {
        "batch_items": len(results),
        "batch_failed": len(results) - len(answers),
        "batch_cached": sum(1 for m in answers if m["cached"]),
        "input_tokens": sum(m["input_tokens"] for m in answers),
        "output_tokens": sum(m["output_tokens"] for m in answers),
        "cost_usd": round(sum(m["cost_usd"] for m in answers), 10),
    }
