"""Request bodies read by hand (routes that skip FastAPI's body parsing): JSON, then a model.

Errors are the API's own: 400 ``malformed_json`` for bytes that are not JSON, 422
``invalid_input`` for another JSON value than an object and for fields the model refuses,
each field named (``validation_problems``), never the offending value.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

import orjson
from pydantic import BaseModel, ValidationError

from ..errors import BadRequest, InvalidInput, validation_problems

M = TypeVar("M", bound=BaseModel)


def json_object(raw: bytes) -> dict[str, Any]:
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise BadRequest("the request body is not valid JSON") from None
    return object_of(data)


def object_of(data: Any, what: str = "the request body") -> dict[str, Any]:
    """``data`` if it is a JSON object (a body, or a batch's item); else 422 naming ``what``."""
    if not isinstance(data, dict):
        raise InvalidInput(f"{what} must be a JSON object")
    return data


def validated(model: type[M], data: Mapping[str, Any]) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise InvalidInput("; ".join(validation_problems(exc))) from None
