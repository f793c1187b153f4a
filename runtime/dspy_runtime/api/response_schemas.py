"""Response bodies, as models for the OpenAPI document only.

The routes build their bodies without these (``PredictionResult.body``, ``error_body``:
no model validation on the hot path); tests check that what they build validates
against these models, so the document cannot drift from the answers.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict


class PredictMetadata(BaseModel):
    model_config = ConfigDict(extra="forbid")

    latency_ms: float
    cached: bool
    cache_level: str | None
    """``memory``, ``redis`` or ``inflight`` (joined an identical computation); null when computed."""
    input_tokens: int
    output_tokens: int
    cost_usd: float
    timestamp: str


class PredictResponse(BaseModel):
    """``POST /v1/predict``'s answer; also the last event of a stream and a batch's result."""

    model_config = ConfigDict(extra="forbid")

    request_id: str
    model: str
    revision: str
    variant: str
    outputs: dict[str, Any]
    output: Any
    metadata: PredictMetadata


class ErrorDetail(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: str
    message: str
    request_id: str | None = None


class ErrorResponse(BaseModel):
    """Every error: ``{"error": {type, message, request_id}}`` (``errors.py``)."""

    model_config = ConfigDict(extra="forbid")

    error: ErrorDetail


class BatchResponse(BaseModel):
    """``POST /v1/predict/batch``'s answer: one result per item, in the items' order."""

    model_config = ConfigDict(extra="forbid")

    results: list[PredictResponse | ErrorResponse]
