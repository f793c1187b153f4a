"""Request bodies of the API (responses are built by the service: ``PredictionResult.body``)."""

from __future__ import annotations

from typing import Any

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
