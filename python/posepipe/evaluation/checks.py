"""`posepipe check-dataset`: everything a COCO person-keypoints dataset can
get wrong that would crash an evaluation or silently change its numbers,
each problem named with its file and id.

Errors make the dataset unusable (the evaluation refuses it): a missing or
undecodable image, an image whose decoded size is not the annotated one, bad
JSON, missing fields the COCO evaluator reads (`area`, `iscrowd`,
`num_keypoints`), zero-area boxes, a keypoint count other than COCO's 17,
visibility flags other than 0/1/2, ids that are not integers, are duplicated
or point nowhere.
Warnings are suspicious but evaluable: labelled keypoints or boxes outside
the image, a `num_keypoints` that disagrees with the flags, joint names other
than COCO's, the same file listed twice."""
from __future__ import annotations

import json
import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from .. import probe
from ..errors import DatasetError, InputError
from ..io import InputFailure, InputLimits, iter_frames
from .dataset import COCO_KEYPOINTS, DatasetFiles, ImageEntry, KeypointDataset, PathLike, locate

ERROR, WARNING = "error", "warning"
_VISIBILITY = (0, 1, 2)  # COCO: not labelled, labelled but hidden, visible


@dataclass(frozen=True)
class Problem:
    severity: str  # ERROR | WARNING
    file: str  # the file at fault
    where: str  # "image id 785", "annotation id 442619", or "" for the whole file
    message: str

    def __str__(self) -> str:
        return f"{self.severity}: {self.file}: {self.where + ': ' if self.where else ''}{self.message}"


@dataclass
class DatasetReport:
    files: Optional[DatasetFiles]
    images: int = 0
    persons: int = 0  # person annotations, crowd regions left out
    persons_with_keypoints: int = 0
    labelled_keypoints: int = 0  # v > 0
    visible_keypoints: int = 0  # v == 2
    problems: List[Problem] = field(default_factory=list)

    @property
    def errors(self) -> List[Problem]:
        return [p for p in self.problems if p.severity == ERROR]

    @property
    def warnings(self) -> List[Problem]:
        return [p for p in self.problems if p.severity == WARNING]

    @property
    def usable(self) -> bool:
        return not self.errors

    def counts(self) -> str:
        return (
            f"{self.images} images, {self.persons} persons ({self.persons_with_keypoints} with keypoints), "
            f"{self.labelled_keypoints} labelled keypoints ({self.visible_keypoints} visible)"
        )


def check_dataset(
    dataset_dir: PathLike, annotations: Optional[PathLike] = None, decode: bool = True, limits: InputLimits = InputLimits()
) -> DatasetReport:
    """Every problem of the dataset, with counts. `decode=False` reads only the
    image headers (fast; a truncated file then shows up only at evaluation)."""
    return inspect_dataset(dataset_dir, annotations, decode, limits)[0]


def load_dataset(dataset_dir: PathLike, annotations: Optional[PathLike] = None) -> Tuple[KeypointDataset, DatasetReport]:
    """The dataset, checked (headers only: the evaluation decodes every image
    anyway), or a DatasetError listing its first errors."""
    files = locate(dataset_dir, annotations)  # a missing folder or file: its own error, as is
    report, dataset = _inspect(files, decode=False, limits=InputLimits())
    if dataset is None:
        errors = report.errors
        shown = "; ".join(str(p) for p in errors[:3])
        more = f" (and {len(errors) - 3} more)" if len(errors) > 3 else ""
        raise DatasetError(
            str(dataset_dir), f"cannot be evaluated: {shown}{more}; `posepipe check-dataset {dataset_dir}` lists every problem"
        )
    return dataset, report


def inspect_dataset(
    dataset_dir: PathLike, annotations: Optional[PathLike], decode: bool, limits: InputLimits = InputLimits()
) -> Tuple[DatasetReport, Optional[KeypointDataset]]:
    try:
        files = locate(dataset_dir, annotations)
    except DatasetError as e:
        return DatasetReport(None, problems=[Problem(ERROR, e.source, "", e.problem)]), None
    return _inspect(files, decode, limits)


def _inspect(files: DatasetFiles, decode: bool, limits: InputLimits) -> Tuple[DatasetReport, Optional[KeypointDataset]]:
    report = DatasetReport(files)
    checker = _Checker(files, report)
    coco = checker.read_json()
    if coco is None:
        return report, None
    category, names = checker.person_category(coco["categories"])
    images = checker.images(coco["images"], decode, limits)
    if category is not None:
        checker.annotations(coco["annotations"], category, len(names), {e.id: e for e in images})
    if not report.usable or category is None:
        return report, None
    return report, KeypointDataset(files, coco, category, names, images)


class _Checker:
    def __init__(self, files: DatasetFiles, report: DatasetReport):
        self.files = files
        self.report = report
        self.ann_file = str(files.annotations)

    def problem(self, severity: str, where: str, message: str, file: Optional[str] = None) -> None:
        self.report.problems.append(Problem(severity, file or self.ann_file, where, message))

    # --- the file ------------------------------------------------------------

    def read_json(self) -> Optional[Dict[str, Any]]:
        try:
            with open(self.files.annotations, "rb") as f:
                coco = json.loads(f.read())
        except OSError as e:
            self.problem(ERROR, "", f"cannot read: {e.strerror or e}")
            return None
        except json.JSONDecodeError as e:
            self.problem(ERROR, "", f"not valid JSON: {e.msg} at line {e.lineno} column {e.colno}")
            return None
        except UnicodeDecodeError as e:
            self.problem(ERROR, "", f"not valid JSON: not UTF-8 text ({e.reason} at byte {e.start})")
            return None
        if not isinstance(coco, dict):
            self.problem(ERROR, "", f"expected a JSON object (COCO's images, annotations, categories), got a {type(coco).__name__}")
            return None
        missing = [k for k in ("images", "annotations", "categories") if not isinstance(coco.get(k), list)]
        if missing:
            self.problem(ERROR, "", f"missing the {', '.join(repr(k) for k in missing)} list{'s' if len(missing) > 1 else ''} of the COCO format")
            return None
        return coco

    # --- categories ----------------------------------------------------------

    def person_category(self, categories: List[Any]) -> Tuple[Optional[int], Tuple[str, ...]]:
        valid = []
        for index, c in enumerate(categories):
            if isinstance(c, dict) and _is_int(c.get("id")):
                valid.append(c)
            else:
                where = _where("category", "categories", c, index)
                self.problem(ERROR, where, f"expected an object with an integer id, got {c!r:.60}")
        ids = [c["id"] for c in valid]
        for dup in sorted({i for i in ids if ids.count(i) > 1}):
            self.problem(ERROR, f"category id {dup}", "duplicate category id")
        persons = [c for c in valid if c.get("name") == "person"]
        with_keypoints = [c for c in valid if isinstance(c.get("keypoints"), list)]
        if len(persons) == 1:
            person = persons[0]
        elif not persons and len(with_keypoints) == 1:
            person = with_keypoints[0]
            self.problem(WARNING, f"category id {person['id']}", f"no category is named 'person'; evaluating {person.get('name')!r}, the only one with keypoints")
        else:
            self.problem(ERROR, "", f"{'several categories are' if persons else 'no category is'} named 'person' (found {[c.get('name') for c in valid]})")
            return None, ()
        names = person.get("keypoints")
        where = f"category id {person['id']}"
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            self.problem(ERROR, where, "no 'keypoints' list of joint names: not a person-keypoints annotation file")
            return None, ()
        if len(names) != len(COCO_KEYPOINTS):
            self.problem(
                ERROR, where, f"{len(names)} keypoints per person; posepipe's models and the COCO evaluator use COCO's {len(COCO_KEYPOINTS)}"
            )
            return None, ()
        if tuple(names) != COCO_KEYPOINTS:
            self.problem(WARNING, where, f"joint names differ from COCO's ({', '.join(COCO_KEYPOINTS[:3])}, ...); joints are scored in COCO's order")
        return person["id"], tuple(names)

    # --- images --------------------------------------------------------------

    def images(self, entries: List[Any], decode: bool, limits: InputLimits) -> List[ImageEntry]:
        seen_ids, seen_files, found = set(), set(), []
        for index, img in enumerate(entries):
            where = _where("image", "images", img, index)
            if not isinstance(img, dict):
                self.problem(ERROR, where, f"expected an object, got {img!r:.60}")
                continue
            bad = [k for k in ("id", "width", "height") if not _is_int(img.get(k)) or (k != "id" and img[k] <= 0)]
            if not isinstance(img.get("file_name"), str) or not img["file_name"]:
                bad.append("file_name")
            if bad:
                self.problem(ERROR, where, f"missing or invalid {', '.join(bad)} (id: an integer; file_name: a path; width, height: positive integers)")
                continue
            if img["id"] in seen_ids:
                self.problem(ERROR, where, "duplicate image id")
                continue
            seen_ids.add(img["id"])
            if img["file_name"] in seen_files:
                self.problem(WARNING, where, f"{img['file_name']} is listed twice")
            seen_files.add(img["file_name"])
            found.append(ImageEntry(img["id"], img["file_name"], self.files.images / img["file_name"], img["width"], img["height"]))
        self.report.images = len(found)
        read = (lambda e: _decoded_size(e.path, limits)) if decode else (lambda e: _header_size(e.path, limits))
        with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
            sizes = list(pool.map(read, found))
        for entry, (size, error) in zip(found, sizes):
            where = f"image id {entry.id}"
            if error is not None:
                self.problem(ERROR, where, error, file=str(entry.path))
            elif size != (entry.width, entry.height):
                self.problem(
                    ERROR, where,
                    f"the image is {size[0]}x{size[1]} as decoded (EXIF orientation applied), the annotation says "
                    f"{entry.width}x{entry.height}: its keypoints would land in the wrong place",
                    file=str(entry.path),
                )
        return found

    # --- annotations ---------------------------------------------------------

    def annotations(self, entries: List[Any], category: int, num_joints: int, images: Dict[int, ImageEntry]) -> None:
        seen = set()
        for index, ann in enumerate(entries):
            where = _where("annotation", "annotations", ann, index)
            if not isinstance(ann, dict):
                self.problem(ERROR, where, f"expected an object, got {ann!r:.60}")
                continue
            if not _is_int(ann.get("id")):
                self.problem(ERROR, where, f"missing or invalid id (an integer), got {ann.get('id')!r:.60}")
            elif ann["id"] in seen:
                self.problem(ERROR, where, "duplicate annotation id")
            else:
                seen.add(ann["id"])
            # Integers only: True, 785.0 or "785" would hash or compare equal to
            # an id in one place (Python, the evaluator) and not in another (JSON).
            bad = [k for k in ("image_id", "category_id") if not _is_int(ann.get(k))]
            if bad:
                got = ", ".join(f"{k} {ann.get(k)!r:.60}" for k in bad)
                self.problem(ERROR, where, f"missing or invalid {' and '.join(bad)} (an integer), got {got}")
                continue
            if ann["image_id"] not in images:
                self.problem(ERROR, where, f"image_id {ann['image_id']!r} is not in the images list")
                continue
            if ann["category_id"] != category:
                continue  # other categories are not evaluated
            self.person(ann, where, num_joints, images[ann["image_id"]])

    def person(self, ann: Dict[str, Any], where: str, num_joints: int, image: ImageEntry) -> None:
        report = self.report
        crowd = ann.get("iscrowd")
        if crowd not in (0, 1) or isinstance(crowd, bool):
            self.problem(ERROR, where, f"iscrowd must be 0 or 1, got {crowd!r} (the COCO evaluator reads it)")
        if not _is_number(ann.get("area")):
            self.problem(ERROR, where, f"missing or invalid area, got {ann.get('area')!r} (OKS is scaled by it)")
        box = ann.get("bbox")
        if not (isinstance(box, list) and len(box) == 4 and all(_is_number(v) for v in box)):
            self.problem(ERROR, where, f"bbox must be 4 numbers [x, y, w, h], got {box!r:.80}")
            box = None
        elif box[2] <= 0 or box[3] <= 0:
            self.problem(ERROR, where, f"zero-area box {box} (width and height must be > 0)")
        else:
            x, y, w, h = box
            if x >= image.width or y >= image.height or x + w <= 0 or y + h <= 0:
                self.problem(ERROR, where, f"box {box} lies outside the {image.width}x{image.height} image")
            elif x < -1 or y < -1 or x + w > image.width + 1 or y + h > image.height + 1:
                self.problem(WARNING, where, f"box {box} extends outside the {image.width}x{image.height} image")
        kpts = ann.get("keypoints")
        if not isinstance(kpts, list) or len(kpts) != 3 * num_joints:
            count = f"{len(kpts)} values" if isinstance(kpts, list) else "no keypoints list"
            self.problem(ERROR, where, f"wrong keypoint count: {count}, expected {3 * num_joints} ({num_joints} keypoints x, y, v)")
            return
        if not all(_is_number(v) for v in kpts):
            self.problem(ERROR, where, "keypoints must be finite numbers")
            return
        flags = kpts[2::3]
        if any(v not in _VISIBILITY for v in flags):
            self.problem(ERROR, where, f"keypoint visibility must be 0, 1 or 2, got {sorted({v for v in flags if v not in _VISIBILITY})}")
            return
        labelled = sum(v > 0 for v in flags)
        if not _is_int(ann.get("num_keypoints")):
            self.problem(ERROR, where, f"missing or invalid num_keypoints (the COCO evaluator ignores persons with 0); {labelled} are labelled")
        elif ann["num_keypoints"] != labelled:
            self.problem(WARNING, where, f"num_keypoints is {ann['num_keypoints']} but {labelled} keypoints are labelled (v > 0)")
        if labelled and _is_number(ann.get("area")) and ann["area"] <= 0:
            self.problem(ERROR, where, f"area is {ann['area']} for a person with keypoints (OKS divides by it)")
        outside = [
            COCO_KEYPOINTS[j] if num_joints == len(COCO_KEYPOINTS) else f"#{j}"
            for j, (x, y, v) in enumerate(zip(kpts[0::3], kpts[1::3], flags))
            if v > 0 and not (0 <= x <= image.width and 0 <= y <= image.height)
        ]
        if outside:
            self.problem(WARNING, where, f"keypoints outside the {image.width}x{image.height} image: {', '.join(outside)}")
        if crowd != 1:
            report.persons += 1
            report.persons_with_keypoints += labelled > 0
            report.labelled_keypoints += labelled
            report.visible_keypoints += sum(v == 2 for v in flags)


def _decoded_size(path: Path, limits: InputLimits) -> Tuple[Optional[Tuple[int, int]], Optional[str]]:
    """(w, h) as the pipeline decodes the file, or the reason it cannot."""
    if not path.is_file():
        return None, "image file not found"
    frame = next(iter_frames(str(path), limits))
    if isinstance(frame, InputFailure):
        return None, frame.error.problem
    h, w = frame.image.shape[:2]
    return (w, h), None


def _header_size(path: Path, limits: InputLimits) -> Tuple[Optional[Tuple[int, int]], Optional[str]]:
    """(w, h) as the pipeline would decode the file (EXIF orientation applied),
    from the header alone, by the pipeline's own bounded header reader: a file
    it would refuse is refused here too."""
    if not path.is_file():
        return None, "image file not found"
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            header = probe.read_header(f, size, str(path), limits.max_pixels)
            oriented = probe.oriented_size(f, size, header)
    except InputError as e:
        return None, e.problem
    except OSError as e:
        return None, f"cannot read: {e.strerror or e}"
    return (oriented, None) if oriented is not None else _decoded_size(path, limits)


def _where(kind: str, entries: str, entry: Any, index: int) -> str:
    """"image id 785", or "images[3]" for an entry without an integer id."""
    if isinstance(entry, dict) and _is_int(entry.get("id")):
        return f"{kind} id {entry['id']}"
    return f"{entries}[{index}]"


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def format_report(report: DatasetReport, limit: Optional[int] = None) -> Sequence[str]:
    """Lines for a terminal: where the files are, the counts, every problem
    (or the first `limit`)."""
    lines = []
    if report.files is not None:
        lines += [f"dataset: {report.files.describe()}", report.counts()]
    errors, warnings = report.errors, report.warnings
    lines.append(f"{len(errors)} error{'s' * (len(errors) != 1)}, {len(warnings)} warning{'s' * (len(warnings) != 1)}")
    shown = errors + warnings
    lines += [str(p) for p in (shown if limit is None else shown[:limit])]
    if limit is not None and len(shown) > limit:
        lines.append(f"... and {len(shown) - limit} more")
    return lines
