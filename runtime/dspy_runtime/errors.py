"""Every error the API returns, in one place.

Each class fixes an HTTP status and a stable ``type``; the body is always
``{"error": {"type": ..., "message": ..., "request_id": ...}}``. Messages are
written for the caller and never carry a stack trace, a secret or raw inputs.

    ServiceError                     500 internal_error   (unexpected: generic message)
    ├── BadRequest                   400 malformed_json
    ├── InvalidInput                 422 invalid_input     (unknown variant, missing fields, ...)
    ├── PayloadTooLarge              413 payload_too_large
    ├── RateLimited                  429 rate_limited      (Retry-After)
    ├── BudgetExhausted              429 budget_exhausted  (Retry-After: next UTC midnight)
    ├── CircuitOpen                  503 circuit_open      (every model's breaker open; Retry-After)
    ├── NotReady                     503 not_ready
    ├── UpstreamTimeout              504 upstream_timeout  (the LM did not answer in LM_TIMEOUT_SECS)
    └── UpstreamError                502 upstream_error    (the LM failed, or answered unparsably)

Plain HTTP errors (404, 405) use the same body with types ``not_found`` and
``method_not_allowed``.
"""

from __future__ import annotations

import math
from typing import Any

from pydantic import ValidationError


class ServiceError(Exception):
    status_code = 500
    error_type = "internal_error"

    def __init__(self, message: str = "internal error", *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after

    def headers(self) -> dict[str, str]:
        if self.retry_after is None:
            return {}
        # Retry-After takes whole seconds; never 0, which clients read as "now".
        return {"Retry-After": str(max(1, math.ceil(self.retry_after)))}


class BadRequest(ServiceError):
    status_code = 400
    error_type = "malformed_json"


class InvalidInput(ServiceError):
    status_code = 422
    error_type = "invalid_input"


class PayloadTooLarge(ServiceError):
    status_code = 413
    error_type = "payload_too_large"


class RateLimited(ServiceError):
    status_code = 429
    error_type = "rate_limited"


class BudgetExhausted(ServiceError):
    status_code = 429
    error_type = "budget_exhausted"


class CircuitOpen(ServiceError):
    status_code = 503
    error_type = "circuit_open"


class NotReady(ServiceError):
    status_code = 503
    error_type = "not_ready"


class UpstreamTimeout(ServiceError):
    status_code = 504
    error_type = "upstream_timeout"


class UpstreamError(ServiceError):
    status_code = 502
    error_type = "upstream_error"


def server_error_types() -> tuple[str, ...]:
    """The ``type`` of every service error answered with a 5xx, sorted: the failures a bad
    revision causes (the analysis's error rate), as ``dspy_predictions_total{status}`` values."""
    found: set[str] = set()
    pending = list(ServiceError.__subclasses__())
    while pending:
        error = pending.pop()
        pending.extend(error.__subclasses__())
        if error.status_code >= 500:
            found.add(error.error_type)
    if ServiceError.status_code >= 500:
        found.add(ServiceError.error_type)
    return tuple(sorted(found))


HTTP_ERROR_TYPES: dict[int, str] = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


def error_body(error_type: str, message: str, request_id: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"type": error_type, "message": message}
    if request_id:
        body["request_id"] = request_id
    return {"error": body}


def validation_problems(exc: ValidationError, *, upper: bool = False) -> list[str]:
    """``"where: what"`` for each error of a pydantic validation, never the offending value.

    ``upper`` names fields as environment variables (``LM_MODEL``) for settings errors.
    """
    problems = []
    for error in exc.errors(include_url=False, include_input=False):
        where = ".".join(str(part) for part in error["loc"])
        where = where.upper() if upper else where
        problems.append(f"{where}: {error['msg']}" if where else error["msg"])
    return problems
