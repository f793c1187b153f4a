"""``DELETE /v1/cache``: remove cached answers, on every replica, behind ``CACHE_ADMIN_TOKEN``.

What is removed, from query parameters or a JSON body (a field given in both must agree):

- nothing given: every entry of this resource (its Redis prefix, and every pod's L1);
- ``revision``: the entries of that revision's variants;
- ``variant``: the entries of the variants of that name, in ``revision`` when given, else in
  every revision served;
- ``inputs`` (or ``input``, the single-input shorthand), body only: that one input's entries,
  for the variants in scope (those whose signature it fits).

Revisions and variants are the ones the routing table serves now. Entries are keyed by what
shapes an answer (program version, model, variant; ``cache/keys.py``), not by revision name,
so two revisions serving the same program and LM share entries, and clearing one clears them.

Access: without ``CACHE_ADMIN_TOKEN`` the endpoint is off (404 ``disabled``). The token comes
as ``Authorization: Bearer <token>``, or as ``X-Cache-Admin-Token: <token>``: the Kubernetes
API server's service proxy (how ``kubectl dspy cache clear`` reaches a pod from outside the
cluster) removes ``Authorization`` after authenticating the user. No token is a 401, a wrong
one a 403; the comparison takes constant time.
"""

from __future__ import annotations

import hmac
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..cache import cache_key
from ..cache.invalidation import Invalidation
from ..cache.keys import variant_scope
from ..cache.redis import REDIS_FAILURES
from ..errors import CacheUnavailable, Disabled, Forbidden, InvalidInput, Unauthorized
from ..routing import RoutingState, Variant
from .body import json_object, validated
from .deps import RuntimeDep
from .responses import JSON
from .schemas import WITH_A_BODY, CacheClearResponse, documented

TOKEN_HEADER = "X-Cache-Admin-Token"

router = APIRouter()
_bearer = HTTPBearer(auto_error=False, description="CACHE_ADMIN_TOKEN")
_header = APIKeyHeader(name=TOKEN_HEADER, auto_error=False,
                       description="CACHE_ADMIN_TOKEN, for callers whose proxy removes Authorization")


class CacheClearRequest(BaseModel):
    """What to remove; nothing means everything."""

    model_config = ConfigDict(extra="forbid")

    revision: str | None = Field(None, min_length=1, max_length=63)
    variant: str | None = Field(None, min_length=1, max_length=63)
    inputs: dict[str, Any] | None = None
    input: Any = None

    @model_validator(mode="after")
    def _one_of_inputs(self) -> CacheClearRequest:
        if self.inputs is not None and self.input is not None:
            raise ValueError("give at most one of 'inputs' (an object of input fields) or 'input' (a single value)")
        return self


def _authorize(token: str | None, bearer: HTTPAuthorizationCredentials | None, header: str | None) -> None:
    if token is None:
        raise Disabled("cache invalidation is off: CACHE_ADMIN_TOKEN is not set")
    given = bearer.credentials if bearer is not None else header
    if not given:
        raise Unauthorized(f"send the cache admin token as 'Authorization: Bearer <token>' or '{TOKEN_HEADER}'")
    if not hmac.compare_digest(given.encode(), token.encode()):
        raise Forbidden("the cache admin token is wrong")


async def _request_of(request: Request, revision: str | None, variant: str | None) -> CacheClearRequest:
    raw = await request.body()
    data = json_object(raw) if raw.strip() else {}  # no body: the query alone says what to clear
    for name, value in (("revision", revision), ("variant", variant)):
        if value is None:
            continue
        if data.get(name, value) != value:
            raise InvalidInput(f"{name}: the query parameter and the body disagree")
        data[name] = value
    return validated(CacheClearRequest, data)


def resolve(state: RoutingState, clear: CacheClearRequest) -> Invalidation:
    """The entries ``clear`` names in the table ``state`` serves; ``InvalidInput`` for an unknown
    revision or variant, or inputs that fit none of the variants in scope."""
    if clear.revision is None and clear.variant is None and clear.inputs is None and clear.input is None:
        return Invalidation("all")
    variants: tuple[Variant, ...] = state.variants
    if clear.revision is not None:
        revision = state.by_name.get(clear.revision)
        if revision is None:
            known = ", ".join(r.name for r in state.revisions)
            raise InvalidInput(f"revision: unknown revision {clear.revision!r}; known revisions: {known}")
        variants = revision.variants
    if clear.variant is not None:
        known = ", ".join(sorted({v.name for v in variants}))
        variants = tuple(v for v in variants if v.name == clear.variant)
        if not variants:
            raise InvalidInput(f"variant: unknown variant {clear.variant!r}; known variants: {known}")
    if clear.inputs is None and clear.input is None:
        return Invalidation("scopes", frozenset(variant_scope(v) for v in variants))
    keys = set()
    first: InvalidInput | None = None
    for variant in variants:
        try:
            kwargs = variant.program.validate_inputs(clear.inputs, clear.input)
            keys.add(cache_key(variant.cache_version, variant.model, variant.name, kwargs))
        except InvalidInput as exc:
            first = first or exc
        except TypeError:
            raise InvalidInput("inputs must be JSON values") from None
    if not keys:
        assert first is not None
        raise InvalidInput(f"inputs: {first.message}")
    return Invalidation("keys", frozenset(keys))


@router.delete(
    "/v1/cache",
    summary="Remove cached answers from Redis and every replica's memory (needs CACHE_ADMIN_TOKEN)",
    responses=documented(CacheClearResponse, *WITH_A_BODY, 401, 403, 404),
    openapi_extra={
        "requestBody": {
            "required": False,
            "content": {JSON.media_type: {"schema": CacheClearRequest.model_json_schema()}},
        }
    },
)
async def clear_cache(
    request: Request,
    runtime: RuntimeDep,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    header: Annotated[str | None, Depends(_header)],
    revision: str | None = None,
    variant: str | None = None,
) -> JSON:
    token = runtime.settings.cache_admin_token
    _authorize(token.get_secret_value() if token is not None else None, bearer, header)
    if runtime.invalidator is None:
        raise Disabled("the cache is off (CACHE_ENABLED=false): nothing to clear")
    clear = await _request_of(request, revision, variant)
    what = resolve(runtime.router.state, clear)
    try:
        cleared = await runtime.invalidator.invalidate(what)
    except REDIS_FAILURES as exc:
        raise CacheUnavailable(f"Redis is unavailable ({type(exc).__name__}); nothing was removed; retry") from None
    scope = {"revision": clear.revision, "variant": clear.variant,
             "inputs": clear.inputs is not None or clear.input is not None}
    request.state.log.update(cache_cleared=cleared.redis + cleared.memory, cache_scope=what.kind)
    return JSON({**cleared.public(), "scope": scope})
