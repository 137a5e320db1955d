"""The errors the server answers on purpose, and the JSON envelope of every
error reply: `{"logId", "errorCode": <HTTP status>, "errorMsg"}` (PaddleX's).

Status codes (README "HTTP serving" has the same table):
  400  the image cannot be used: bad base64, not an image, truncated or corrupt,
       a URL that is refused (private address, scheme) or cannot be fetched
  404  unknown path;  405  wrong method
  408  the request headers or body did not arrive within their timeout
  413  request body, encoded image or decoded pixel count over its limit
  415  a compressed request body (Content-Encoding)
  422  the body is not the documented JSON (PaddleX's errorMsg: a JSON list of
       {type, loc, msg}), detThreshold outside 0..1 included
  500  a bug: the pipeline failed on a decoded image ("Internal server error")
  503  overloaded (queue, keypoint work or downloads full), models not ready
       within ready_wait_s, or shutting down; with Retry-After
  504  a URL download did not finish within the timeout
Logs and metrics only: 499, the client left before its reply.
"""
from __future__ import annotations

import uuid
from typing import Any, Dict, Mapping, Optional

from starlette.responses import Response

try:
    from pydantic_core import to_json as _to_json
except ImportError:  # pragma: no cover - pydantic 2 always has pydantic_core
    import json

    def _to_json(obj: Any, **_: Any) -> bytes:
        return json.dumps(obj).encode()


class ApiError(Exception):
    """An error reply: `status` and `message` go into the envelope."""

    def __init__(self, status: int, message: str, headers: Optional[Mapping[str, str]] = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = dict(headers or {})


def new_log_id() -> str:
    return str(uuid.uuid4())


def envelope(log_id: str, code: int, message: str) -> Dict[str, Any]:
    return {"logId": log_id, "errorCode": code, "errorMsg": message}


def error_response(log_id: str, status: int, message: str, headers: Optional[Mapping[str, str]] = None) -> Response:
    return Response(
        _to_json(envelope(log_id, status, message)),
        status_code=status,
        media_type="application/json",
        headers=dict(headers or {}),
    )


def dumps(obj: Any) -> bytes:
    """JSON bytes; NaN and infinities become null (as pydantic's responses do)."""
    return _to_json(obj, inf_nan_mode="null")
