"""The bodies of the API: the request models the predict route validates, and the shapes of
the responses, which the OpenAPI document publishes.

The response models document; they do not serialize (the service builds its bodies as
dicts, and the routes send them with orjson). What keeps them true is the schemathesis
suite (``tests/integration/test_schemathesis.py``): every response of a fuzzed run must
match its status's schema here, and every status sent must be documented.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

REQUEST_ID_PATTERN = r"^[A-Za-z0-9._:\-]{1,128}$"


class PredictRequest(BaseModel):
    """``POST /v1/predict``: ``inputs`` by field name, or ``input`` for a single-input signature."""

    model_config = ConfigDict(extra="forbid")

    request_id: str | None = Field(None, pattern=REQUEST_ID_PATTERN)
    revision: str | None = Field(None, min_length=1, max_length=63)
    """Pin a revision of the routing table (a weight-0 one too); ``variant`` then picks inside it."""
    variant: str | None = Field(None, min_length=1, max_length=63)
    inputs: dict[str, Any] | None = None
    input: Any = None
    use_cache: bool = True
    stream: bool = False
    """Answer as ``text/event-stream``: the output fields' chunks as the LM writes them, then this body."""

    @model_validator(mode="after")
    def _one_of_inputs(self) -> PredictRequest:
        if (self.inputs is None) == (self.input is None):
            raise ValueError("give exactly one of 'inputs' (an object of input fields) or 'input' (a single value)")
        return self


class _Body(BaseModel):
    """A response body: the fields listed are always there; routes may add more over time."""

    model_config = ConfigDict(extra="allow")


class ErrorDetail(_Body):
    type: str = Field(description="Stable error type, e.g. invalid_input, rate_limited, circuit_open.")
    message: str = Field(description="What went wrong, for the caller: never a stack trace, a secret or the inputs.")
    request_id: str | None = Field(None, description="The request's id, when it got one (absent for refusals by the HTTP server).")


class ErrorResponse(_Body):
    """Every error: ``{"error": {"type", "message", "request_id"}}``."""

    error: ErrorDetail


class PredictMetadata(_Body):
    latency_ms: float
    cached: bool = Field(description="Answered without an LM call by this request (a cache hit, or joined another's call).")
    cache_level: str | None = Field(description="memory, redis or inflight when cached, stale for an expired answer served "
                                    "because none could be computed; null when this request called the LM.")
    input_tokens: int
    output_tokens: int
    cost_usd: float = Field(description="What this request spent: 0 when cached.")
    timestamp: str
    stale: bool | None = Field(None, description="true for an expired answer served instead of an error (CACHE_STALE_SECS).")
    degradation_level: int | None = Field(None, description="This pod's degradation level (0-3) with DEGRADATION_ENABLED.")


class PredictResponse(_Body):
    request_id: str
    model: str = Field(description="The model that answered (a fallback's name when it did).")
    revision: str
    variant: str
    outputs: dict[str, Any] = Field(description="Every output field of the module (ChainOfThought adds reasoning).")
    output: Any = Field(description="The signature's first output field.")
    metadata: PredictMetadata


class BatchResponse(_Body):
    """``POST /v1/predict/batch``'s answer: one result per item, in the items' order."""

    results: list[PredictResponse | ErrorResponse]


class CacheClearResponse(_Body):
    """``DELETE /v1/cache``'s answer."""

    removed: dict[str, int] = Field(description="Entries removed: redis (shared) and memory (this pod's).")
    replicas_notified: int = Field(description="Runtime pods that received the invalidation (Redis pub/sub).")
    scope: dict[str, Any] = Field(description="revision, variant (null: all), inputs (whether one input was named).")


class HealthResponse(_Body):
    status: Literal["ok", "degraded", "starting"]
    components: dict[str, Any] = Field(description="program, memory, redis, breakers (per model), budget_store, rate_limit, degradation.")


class ReadyResponse(_Body):
    status: Literal["ready"]
    variants: list[str]


class Usage(_Body):
    requests: int
    input_tokens: int
    output_tokens: int
    cost_usd: float


class CostsResponse(_Body):
    currency: Literal["USD"]
    total: Usage
    models: dict[str, dict[str, Any]] = Field(description="Per model: its usage, whether it is priced, its pricing.")
    variants: dict[str, Usage]
    unpriced_models: list[str]
    budget: dict[str, Any] = Field(description="daily_usd (null: unlimited), spent_today_usd, exhausted.")
    shadow: dict[str, Any] = Field(description="cap_usd and spent_today_usd of shadow traffic.")


class ConfigResponse(_Body):
    settings: dict[str, Any] = Field(description="The effective settings, secrets shown only as set or not.")
    routing: dict[str, Any] = Field(description="serial, table_hash, source, sticky_header, shadow, revisions, variants.")
    fallback_models: list[str]
    fallbacks: list[dict[str, Any]]


ERROR_STATUSES: dict[int, str] = {
    400: "Malformed: the body is not JSON, an invalid Content-Length, or unparsable HTTP.",
    401: "No or malformed credentials.",
    403: "Credentials not accepted, or a choice the deployment does not allow (pinning, cache bypass).",
    404: "Not found, or an endpoint its setting turns off (disabled: DELETE /v1/cache without CACHE_ADMIN_TOKEN).",
    408: "The request head did not arrive in HEADER_TIMEOUT_SECS, or its body in BODY_TIMEOUT_SECS.",
    413: "The body is over MAX_BODY_BYTES (refused before it is read whole).",
    415: "A body not sent as Content-Type: application/json.",
    422: "Invalid input, naming the field: missing or unknown fields, a bad value, an unknown revision or variant.",
    429: "Rate limited, or the daily budget is exhausted (with Retry-After).",
    431: "The request head is over MAX_HEADER_BYTES.",
    500: "A bug: a generic message; the log has the details under the request id.",
    502: "The LM failed, or its answer did not fit the signature.",
    503: "Not ready, shutting down, or every model's circuit breaker is open (with Retry-After).",
    504: "The LM did not answer in LM_TIMEOUT_SECS.",
}

EVERY_REQUEST = (400, 408, 431, 500, 503)
"""What any request can get: from the HTTP server (400, 408, 431), a bug (500), and the shutdown (503)."""
WITH_A_BODY = (413, 415, 422)
"""What a request with a JSON body can also get."""


def documented(ok: type[BaseModel] | dict[str, Any], *statuses: int) -> dict[int | str, dict[str, Any]]:
    """A route's ``responses=``: its 200 (a model, or a whole response object) and, with the
    error body, ``statuses`` plus ``EVERY_REQUEST``."""
    responses: dict[int | str, dict[str, Any]] = {200: {"model": ok} if isinstance(ok, type) else ok}
    for status in sorted({*statuses, *EVERY_REQUEST}):
        responses[status] = {"model": ErrorResponse, "description": ERROR_STATUSES[status]}
    return responses
