"""A pipeline result -> the `result` object of PaddleX's reply, and the reply's
JSON body. Split in two so that a Ray Serve replica can make the (small)
payload next to the pipeline, JPEG included, and the HTTP side only wraps it."""
from __future__ import annotations

import base64
import io
from typing import Any, Dict

import numpy as np

from .errors import dumps

# JPEG's largest side (libjpeg's JPEG_MAX_DIMENSION); larger visualizations are scaled down to fit.
JPEG_MAX_SIDE = 65500


def result_payload(result: Any, visualize: bool) -> Dict[str, Any]:
    """`{"persons": [...], "image": <base64 JPEG>}` (image only when visualize) for a
    KeypointResult-shaped result (`boxes`, `.img["res"]`)."""
    persons = []
    for box in result["boxes"]:
        persons.append(
            {
                "bbox": [float(v) for v in box["coordinate"]],
                "kpts": np.asarray(box["keypoints"], dtype=np.float32).tolist(),
                "detScore": float(box["det_score"]),
                "kptScore": float(box["kpt_score"]),
            }
        )
    payload: Dict[str, Any] = {"persons": persons}
    if visualize:
        drawn = result.img.get("res")
        if drawn is not None:
            payload["image"] = base64.b64encode(jpeg(drawn)).decode("ascii")
    return payload


def success_body(log_id: str, payload: Dict[str, Any]) -> bytes:
    return dumps({"logId": log_id, "result": payload, "errorCode": 0, "errorMsg": "Success"})


def jpeg(image: Any) -> bytes:
    """The visualization as JPEG; a side longer than JPEG allows is scaled down
    to JPEG_MAX_SIDE, keeping the aspect ratio (the persons' coordinates in
    the reply stay in input pixels)."""
    image = image.convert("RGB")
    longest = max(image.size)
    if longest > JPEG_MAX_SIDE:
        scale = JPEG_MAX_SIDE / longest
        image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))))
    with io.BytesIO() as buffer:
        image.save(buffer, format="JPEG")
        return buffer.getvalue()
