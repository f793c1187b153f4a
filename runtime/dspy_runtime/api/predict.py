"""``POST /v1/predict``: parse, hand to the service, serialize.

This is the hot route. Its steps after the body is read (``read_body``, then ``respond``)
are the one list both ways in take: ``fastpath.FastPredict`` runs them in front of FastAPI
for every non-streaming request, and this module's FastAPI route for the streaming ones
(and keeps the OpenAPI declaration and the 405 for other methods). A new per-request check
goes into ``respond`` once and holds for both.

``add_route`` puts the route on the app itself rather than on an ``APIRouter`` (since
FastAPI 0.137 ``include_router`` keeps the included router as a node that every request
is matched through), and as a ``RequestRoute``.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, MutableMapping
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.routing import APIRoute

from ..errors import Forbidden
from ..logs import request_id_var
from ..service import PredictCall
from ..state import Runtime
from . import stream
from .body import json_object, validated
from .deps import runtime_of
from .responses import JSON
from .schemas import WITH_A_BODY, PredictRequest, PredictResponse, documented


class RequestRoute(APIRoute):
    """An ``APIRoute`` whose endpoint takes the ``Request`` and returns a ``Response``.

    FastAPI's own handler solves dependencies, reads and validates a body model and
    serializes the return value on every request, and the predict endpoint uses none
    of that (it reads its own body, see RequestContextMiddleware), so the endpoint is the
    handler. Matching, OpenAPI and the app's exception handlers stay APIRoute's. A
    custom ``get_route_handler`` is FastAPI's documented extension point for this.
    """

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        return self.endpoint  # type: ignore[no-any-return]


def add_route(app: FastAPI) -> None:
    """Adds the route first in the match order.

    The router tries routes in order, and FastAPI has already added its docs
    routes (``/openapi.json``, ``/docs``, ``/docs/oauth2-redirect``, ``/redoc``):
    behind them every predict request paid four failed path matches (~4 µs each).
    The paths are distinct, so the order changes no answer.
    """
    routes = app.router.routes
    app.router.add_api_route(
        "/v1/predict",
        predict,
        route_class_override=RequestRoute,
        methods=["POST"],
        summary="Run the program on one set of inputs; with stream: true, as server-sent events",
        responses=documented({"model": PredictResponse, "content": stream.openapi_content()},
                             *WITH_A_BODY, 403, 429, 502, 504),
        # The route reads the body itself (see RequestContextMiddleware), so the schema is declared here.
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {JSON.media_type: {"schema": PredictRequest.model_json_schema()}},
            }
        },
    )
    routes.insert(0, routes.pop())


Header = Callable[[str], str | None]
"""A request header by its lower-case name (the first one given), None when absent."""


async def predict(request: Request) -> Response:
    runtime = runtime_of(request)  # no dependencies on this route (RequestRoute)
    body = read_body(await request.body())
    result = await respond(runtime, body, request.headers.get, request.scope["state"])
    return result if isinstance(result, Response) else JSON(result)


def read_body(raw: bytes) -> PredictRequest:
    """The predict body of ``raw``: 400 for bytes that are not JSON, 422 naming the fields refused."""
    return validated(PredictRequest, json_object(raw))


async def respond(
    runtime: Runtime, body: PredictRequest, header: Header, state: MutableMapping[str, Any]
) -> dict[str, Any] | Response:
    """Every step of one prediction after its body is read: the response body of a plain
    request, the streaming response of ``"stream": true``. ``state`` is the request's
    ``scope["state"]`` (its request id and log fields, see ``RequestContextMiddleware``)."""
    if body.request_id:
        state["request_id"] = body.request_id
        request_id_var.set(body.request_id)
    call = predict_call(runtime, header, body, state["request_id"], state["log"])
    if body.stream:
        return stream.respond(runtime, call)  # the prediction runs as the response is sent
    result = await runtime.service.predict(call)
    return result.body()


def predict_call(
    runtime: Runtime, header: Header, body: PredictRequest, request_id: str, log: dict[str, Any]
) -> PredictCall:
    """The service call for one predict body (a request's, or a batch item's); the routing and
    rate-limit keys come from the request's ``header``s. Pinning and cache bypass are the caller's
    only if the deployment allows them: both let any client force LM spend."""
    settings = runtime.settings
    if (body.revision is not None or body.variant is not None) and not settings.allow_pinning:
        raise Forbidden("revision, variant: choosing them per request is off for this deployment "
                        "(spec.routing.allowPinning, ALLOW_PINNING)")
    if not body.use_cache and not settings.allow_cache_bypass:
        raise Forbidden("use_cache: skipping the cache is off for this deployment (spec.cache.allowBypass, "
                        "ALLOW_CACHE_BYPASS)")
    sticky_header = runtime.router.sticky_header
    key_header = settings.rate_limit_key_header
    return PredictCall(
        request_id=request_id,
        inputs=body.inputs,
        single_input=body.input,
        revision=body.revision,
        variant=body.variant,
        use_cache=body.use_cache,
        sticky_value=header(sticky_header.lower()) if sticky_header else None,
        client_key=header(key_header.lower()) if key_header else None,
        log=log,
    )
