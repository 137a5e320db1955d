"""How `posepipe eval` runs: each setting declared once; `evaluate(...)`
takes them as keywords and `posepipe eval` builds its flags from them."""
from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from typing import Optional, Tuple

from ..config import check_threshold
from ..errors import ConfigError
from ..flags import setting

E2E, GT_BOXES, DETECTION = "keypoints", "keypoints_gt_boxes", "detection"
MODES = (E2E, GT_BOXES, DETECTION)


def parse_modes(text: str) -> Tuple[str, ...]:
    modes = tuple(m.strip() for m in text.split(",") if m.strip())
    unknown = [m for m in modes if m not in MODES]
    if unknown or not modes:
        raise argparse.ArgumentTypeError(f"modes are a comma-separated list of {', '.join(MODES)}; got {text!r}")
    return modes


@dataclass(frozen=True)
class EvalSettings:
    det_threshold: Optional[float] = setting(
        None, help="detector score threshold of the end-to-end mode, as predict's det_threshold; none: the pipeline's"
    )
    detection_min_score: float = setting(
        0.0,
        help="lowest detector score the detection mode scores: COCO's bbox AP ranks every box (up to 100 per image), "
        "so the default keeps all the detector returns",
    )
    modes: Tuple[str, ...] = setting(
        MODES,
        help=f"which of {', '.join(MODES)} to run: end to end, the keypoint model on ground-truth boxes, the detector's person boxes",
        parse=parse_modes,
        metavar="MODE[,MODE...]",
    )
    worst: int = setting(5, help="how many of the worst images to list (and, with --save_path, draw)")

    def __post_init__(self) -> None:
        # The pipeline's own rule for det_threshold, as predict applies it.
        object.__setattr__(self, "det_threshold", check_threshold(self.det_threshold, "det_threshold"))
        value = self.detection_min_score  # a floor for the detector's boxes: no None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not (math.isfinite(value) and 0 <= value <= 1):
            raise ConfigError(f"detection_min_score must be a number between 0 and 1, got {value!r}")
        if isinstance(self.modes, (list, tuple)):
            object.__setattr__(self, "modes", tuple(self.modes))
        if not isinstance(self.modes, tuple) or not self.modes or any(m not in MODES for m in self.modes):
            raise ConfigError(f"modes must be a non-empty sequence of {', '.join(MODES)}, got {self.modes!r}")
        if len(set(self.modes)) != len(self.modes):
            raise ConfigError(f"modes lists one twice: {self.modes!r}")
        if isinstance(self.worst, bool) or not isinstance(self.worst, int) or self.worst < 0:
            raise ConfigError(f"worst must be a non-negative integer, got {self.worst!r}")
