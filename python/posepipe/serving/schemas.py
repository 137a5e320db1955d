"""The wire format of PaddleX 3.7.2's `human_keypoint_detection` basic serving:
the request and response bodies, field for field, so one client talks to both.

Validation is pydantic's default (lax) mode, as in PaddleX: `"detThreshold":
"0.5"` is accepted as 0.5, unknown fields are ignored, a missing or non-string
`image` is a 422. posepipe additionally refuses a non-finite detThreshold."""
from __future__ import annotations

from typing import List, Literal, Optional, Tuple

from pydantic import BaseModel, ConfigDict, Field

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
        description="Score threshold of the person detector; null: the pipeline config's.",
    )
    visualize: Optional[bool] = Field(
        default=None,
        description="Return the image with the skeletons drawn (base64 JPEG); null: the server default "
        "(the pipeline YAML's Serving.visualize, else true).",
    )


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
