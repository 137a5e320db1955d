"""What is measured: the model sets in ../shared, their photos, and the
pipeline configs both sides get (PaddleX's schema, the same for both)."""
from __future__ import annotations

import copy
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

REPO_ROOT = Path(__file__).resolve().parent.parent

PHOTOS = ["hrnet_demo.jpg", "000000087038.jpg", "000000570688.jpg", "000000014439.jpg"]
# The photo whose detections are swept by threshold for the cost-growth curve.
GROWTH_PHOTO = "000000014439.jpg"

# Paddle 3.3.1 + oneDNN cannot run the interpolate ops of PIR programs (Paddle
# issue #79749), so PaddleX's default CPU run (oneDNN for PP-YOLOE-S_human)
# crashes on the official graphs. The workaround from models/official_arch/README.md:
# keep oneDNN but delete the pass that places interpolation on it.
ONEDNN_WORKAROUND = {"delete_pass": ["onednn_placement_pass"]}


@dataclass
class Suite:
    name: str
    detector: str  # model_name, model_dir relative to ../shared
    detector_dir: str
    keypoints: str
    keypoints_dir: str
    peer_detector_engine: Optional[Dict[str, Any]] = None
    peer_note: str = "PaddleX defaults"
    photos: List[str] = field(default_factory=lambda: list(PHOTOS))

    def config(self, shared: Path, det_batch_size: int = 1) -> Dict[str, Any]:
        """The pipeline config both sides run, in PaddleX's schema."""
        return {
            "pipeline_name": "human_keypoint_detection",
            "SubModules": {
                "ObjectDetection": {
                    "module_name": "object_detection",
                    "model_name": self.detector,
                    "model_dir": str(shared / "models" / self.detector_dir),
                    "batch_size": det_batch_size,
                    "threshold": None,
                    "img_size": None,
                },
                "KeypointDetection": {
                    "module_name": "keypoint_detection",
                    "model_name": self.keypoints,
                    "model_dir": str(shared / "models" / self.keypoints_dir),
                    "batch_size": 1,
                    "flip": False,
                    "use_udp": None,
                },
            },
        }

    def peer_config(self, shared: Path, cpu_threads: Optional[int] = None) -> Dict[str, Any]:
        """The config for PaddleX: the same, plus this suite's engine workaround,
        plus `cpu_threads` on both models when asked (None: PaddleX's default)."""
        config = copy.deepcopy(self.config(shared))
        modules = config["SubModules"]
        engines = {"ObjectDetection": dict(self.peer_detector_engine or {}), "KeypointDetection": {}}
        for key, engine in engines.items():
            if cpu_threads is not None:
                engine["cpu_threads"] = cpu_threads
            if engine:
                modules[key]["engine_config"] = engine
        return config


SUITES = {
    "real": Suite(
        name="real",
        detector="PP-YOLOE-S_human",
        detector_dir="real/person_detector_nanodet",
        keypoints="PP-TinyPose_256x192",
        keypoints_dir="real/keypoint_movenet_thunder",
    ),
    "official_arch": Suite(
        name="official_arch",
        detector="PP-YOLOE-S_human",
        detector_dir="official_arch/PP-YOLOE-S_human",
        keypoints="PP-TinyPose_128x96",
        keypoints_dir="official_arch/PP-TinyPose_128x96",
        peer_detector_engine=ONEDNN_WORKAROUND,
        peer_note=(
            "PaddleX defaults, except the detector's engine_config delete_pass=[onednn_placement_pass] "
            "(its default oneDNN run crashes on this graph, Paddle issue #79749)"
        ),
    ),
}


def find_shared() -> Path:
    """../shared next to the repository root, or a clear exit."""
    shared = REPO_ROOT.parent / "shared"
    missing = [p for p in ("models/real", "models/official_arch", "photos") if not (shared / p).is_dir()]
    if missing:
        raise SystemExit(
            f"benchmarks: the test assets are missing: {shared} must hold {', '.join(missing)} "
            "(the shared models and photos sit at ../shared, next to the repository)"
        )
    return shared


def default_peer_python() -> str:
    """PaddleX's interpreter: $POSEPIPE_PEER_PYTHON, else ../venv-paddlex next to the repository."""
    return os.environ.get("POSEPIPE_PEER_PYTHON") or str(REPO_ROOT.parent / "venv-paddlex" / "bin" / "python")
