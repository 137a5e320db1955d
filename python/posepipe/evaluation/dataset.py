"""A COCO person-keypoints dataset on disk: where its files are, and the
checked contents the evaluation reads.

Two layouts are found on their own:
* COCO: `annotations/person_keypoints_<split>.json`, images in `images/` (or,
  as COCO's own download unpacks, in `<split>/`, e.g. `val2017/`);
* PaddleX's keypoint layout: `annotations/instance_val.json` (and
  `instance_train.json`, which PaddleX trains on), images in `images/`.
The validation split is the one evaluated: a folder with train and val files
gives val. A folder where more than one file could be meant is refused;
`annotations=` picks one explicitly.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

import numpy as np

from ..errors import DatasetError

PathLike = Union[str, Path]

COCO_PREFIX = "person_keypoints_"
PADDLEX_FILES = ("instance_val.json", "instance_train.json")
# The joints posepipe's models give, in COCO's order.
COCO_KEYPOINTS = (
    "nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder",
    "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip",
    "left_knee", "right_knee", "left_ankle", "right_ankle",
)
_EXPECTED = (
    "annotations/person_keypoints_*.json with images/ (COCO), or annotations/instance_val.json with "
    "images/ (PaddleX's keypoint layout)"
)


@dataclass(frozen=True)
class DatasetFiles:
    root: Path
    annotations: Path
    images: Path  # the folder image file_names are relative to
    layout: str  # "COCO" | "PaddleX"

    def describe(self) -> str:
        return f"{self.root} ({self.layout} layout: {_rel(self.annotations, self.root)}, images in {_rel(self.images, self.root)}/)"


@dataclass(frozen=True)
class ImageEntry:
    id: int
    file_name: str
    path: Path
    width: int
    height: int


@dataclass
class KeypointDataset:
    """A checked dataset: `coco` is the annotation JSON as parsed (what the COCO
    evaluator reads), `images` the entries in file order."""

    files: DatasetFiles
    coco: Dict[str, Any]
    person_category: int
    keypoint_names: Tuple[str, ...]
    images: List[ImageEntry]
    _persons: Dict[int, List[Dict[str, Any]]] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._persons = {}
        for ann in self.coco["annotations"]:
            if ann["category_id"] == self.person_category:
                self._persons.setdefault(ann["image_id"], []).append(ann)

    def persons(self, image_id: int) -> List[Dict[str, Any]]:
        return self._persons.get(image_id, [])

    def gt_boxes(self, image_id: int) -> np.ndarray:
        """[M,4] float32 (x1, y1, x2, y2) of the image's labelled persons (not
        crowd, num_keypoints > 0): the boxes the keypoint model is scored on
        alone, as PaddleDetection's top-down COCO evaluation picks them."""
        boxes = [
            (x, y, x + w, y + h)
            for (x, y, w, h) in (p["bbox"] for p in self.persons(image_id) if p["num_keypoints"] > 0 and not p["iscrowd"])
        ]
        return np.asarray(boxes, np.float32).reshape(-1, 4)


def locate(dataset_dir: PathLike, annotations: Optional[PathLike] = None) -> DatasetFiles:
    """The dataset's annotation file and image folder, or a DatasetError that
    says what is missing or ambiguous."""
    root = Path(dataset_dir).expanduser()
    if not root.is_dir():
        raise DatasetError(str(root), f"{'not a directory' if root.exists() else 'no such directory'} (give the dataset folder: {_EXPECTED})")
    ann = _explicit(root, Path(annotations).expanduser()) if annotations is not None else _find_annotations(root)
    layout = "PaddleX" if ann.name in PADDLEX_FILES else "COCO"
    return DatasetFiles(root, ann, _image_folder(root, ann), layout)


def _explicit(root: Path, given: Path) -> Path:
    for candidate in (given, root / given, root / "annotations" / given):
        if candidate.is_file():
            return candidate
    raise DatasetError(str(given), f"annotation file not found (looked as given, in {root} and in {root / 'annotations'})")


def _find_annotations(root: Path) -> Path:
    folder = root / "annotations"
    if not folder.is_dir():
        raise DatasetError(str(root), f"no annotations/ folder (expected {_EXPECTED}; or give the file with --annotations)")
    candidates = sorted(folder.glob(f"{COCO_PREFIX}*.json")) + [folder / n for n in PADDLEX_FILES if (folder / n).is_file()]
    validation = [p for p in candidates if "val" in p.stem[len(COCO_PREFIX) :] or p.name == PADDLEX_FILES[0]]
    chosen = validation if validation else candidates
    if len(chosen) == 1:
        return chosen[0]
    if not chosen:
        present = ", ".join(sorted(p.name for p in folder.glob("*.json"))) or "no .json files"
        raise DatasetError(str(folder), f"no keypoint annotation file (found {present}; expected {_EXPECTED}; or give the file with --annotations)")
    names = ", ".join(p.name for p in chosen)
    raise DatasetError(str(folder), f"{len(chosen)} annotation files could be the one to evaluate ({names}); pick one with --annotations FILE")


def _image_folder(root: Path, ann: Path) -> Path:
    tried = [root / "images"]
    if ann.stem.startswith(COCO_PREFIX):
        tried.append(root / ann.stem[len(COCO_PREFIX) :])  # COCO's own: person_keypoints_val2017.json -> val2017/
    for folder in tried:
        if folder.is_dir():
            return folder
    raise DatasetError(str(root), f"no image folder (looked for {' and '.join(_rel(f, root) + '/' for f in tried)})")


def _rel(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)
