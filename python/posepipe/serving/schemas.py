"""The wire format of PaddleX 3.7.2's `human_keypoint_detection` basic serving:
the request and response bodies, field for field, so one client talks to both.

Validation is pydantic's default (lax) mode, as in PaddleX: `"detThreshold":
"0.5"` is accepted as 0.5, unknown fields are ignored, a missing or non-string
`image` is a 422. posepipe additionally refuses a detThreshold outside 0..1,
a boolean one, and a non-finite one.

`parse_request` turns the raw body into an InferRequest the way FastAPI would
(same JSON parser, same error list), so the server can read the body only
after it has admitted the request."""
from __future__ import annotations

import email.message
import json
from typing import Any, List, Literal, Optional, Tuple

from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .errors import ApiError

INFER_ENDPOINT = "/human-keypoint-detection"

BoundingBox = Tuple[float, float, float, float]
KeyPoint = Tuple[float, float, float]


# An 8x8 grey PNG: the documented example request (also what schema-driven
# fuzzers start from).
_EXAMPLE_IMAGE = (
    "iVBORw0KGgoAAAANSUhEUgAAAAgAAAAICAIAAABLbSncAAAAFElEQVR4nGNsaGhgwAaYsIoOWgkAMBcBkGHHl6YAAAAASUVORK5CYII="
)


def _request_schema(schema: dict) -> None:
    # Extra fields are kept (to echo a client's `logId` in error replies, as
    # PaddleX does) but are not part of the documented request.
    schema.pop("additionalProperties", None)
    schema["examples"] = [{"image": _EXAMPLE_IMAGE, "detThreshold": 0.5, "visualize": False}]


class InferRequest(BaseModel):
    model_config = ConfigDict(extra="allow", json_schema_extra=_request_schema)

    image: str = Field(
        description="The image: an http(s) URL the server can reach, or the base64 of the image file "
        "(JPEG, PNG, BMP, WebP, TIFF, PNM, Sun raster).",
    )
    detThreshold: Optional[float] = Field(
        default=None,
        allow_inf_nan=False,
        ge=0.0,
        le=1.0,
        description="Score threshold of the person detector, 0..1; null: the pipeline config's.",
    )
    visualize: Optional[bool] = Field(
        default=None,
        description="Return the image with the skeletons drawn (base64 JPEG); null: the server default "
        "(the pipeline YAML's Serving.visualize, else true).",
    )


    @field_validator("detThreshold", mode="before")
    @classmethod
    def _not_a_boolean(cls, value: Any) -> Any:
        # Lax mode would read true as 1.0.
        if isinstance(value, bool):
            raise ValueError("a boolean is not a threshold; give a number from 0 to 1")
        return value


class Person(BaseModel):
    bbox: BoundingBox = Field(description="[x1, y1, x2, y2] in image pixels.")
    kpts: List[KeyPoint] = Field(description="17 COCO keypoints, each [x, y, score].")
    detScore: float
    kptScore: float


class InferResult(BaseModel):
    persons: List[Person]
    image: Optional[str] = Field(
        default=None, description="Base64 JPEG of the visualization; absent when not requested."
    )


class InferResponse(BaseModel):
    logId: str
    result: InferResult
    errorCode: Literal[0] = 0
    errorMsg: Literal["Success"] = "Success"


class ErrorResponse(BaseModel):
    """Every non-200 answer (and /health, /ready) has this shape."""

    logId: str
    errorCode: int = Field(description="The HTTP status code (0 for /health and /ready when OK).")
    errorMsg: str


def parse_request(raw: bytes, content_type: Optional[str]) -> InferRequest:
    """The request body -> InferRequest. RequestValidationError (422) for
    what FastAPI reports so (missing body, JSON syntax, schema); ApiError 400
    when the JSON parser gives up otherwise (FastAPI's "error parsing the body",
    e.g. nesting too deep)."""
    if not raw:
        raise RequestValidationError([{"type": "missing", "loc": ("body",), "msg": "Field required"}])
    body: Any = raw
    if content_type is None or _is_json(content_type):
        try:
            body = json.loads(raw)
        except json.JSONDecodeError as e:
            raise RequestValidationError(
                [{"type": "json_invalid", "loc": ("body", e.pos), "msg": "JSON decode error"}]
            ) from None
        except Exception:  # noqa: BLE001 - RecursionError and the like: FastAPI's 400
            raise ApiError(400, "There was an error parsing the body") from None
    try:
        return InferRequest.model_validate(body)
    except ValidationError as e:
        errors = [{"type": err["type"], "loc": ("body", *err["loc"]), "msg": err["msg"]} for err in e.errors()]
        raise RequestValidationError(errors, body=body) from None


def _is_json(content_type: str) -> bool:
    message = email.message.Message()
    message["content-type"] = content_type
    subtype = message.get_content_subtype()
    return message.get_content_maintype() == "application" and (subtype == "json" or subtype.endswith("+json"))
