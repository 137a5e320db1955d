"""KeypointResult: PaddleX's pipeline result, field for field, with its
print / json / img / save_to_* methods and their file naming.

The dict holds what PaddleX's holds: `input_path`, `input_img` (the BGR image;
left out of print and json, as PaddleX does) and `boxes`, each box
{coordinate, det_score, keypoints [17,3] float32, kpt_score}. A page of a
multi-page file also has `page_index` (after `input_path`, as in PaddleX's
results that carry pages), a failed input `error` and no boxes.

File names: PaddleX's `{stem}_res.json` / `{stem}_res{suffix}`, and
`{stem}_{page}_res...` for a page, `{stem}_{frame:06d}_res...` for a video's
frame. SaveNames keeps the results of one run (one predict call) from
sharing a name."""
from __future__ import annotations

import io
import json
import logging
import os
import mimetypes
import random
import re
import sys
import threading
import time
import urllib.parse
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

import cv2
import numpy as np
from PIL import Image

from .draw import draw_keypoints

PathLike = Union[str, os.PathLike]

log = logging.getLogger("posepipe")


class KeypointResult(dict):
    def __init__(
        self,
        input_path: Optional[str],
        input_img: Optional[np.ndarray],
        boxes: List[Dict[str, Any]],
        error: Optional[str] = None,
        page_index: Optional[int] = None,
    ):
        super().__init__(input_path=input_path)
        if page_index is not None:
            self["page_index"] = page_index
        self.update(input_img=input_img, boxes=boxes)
        if error is not None:
            self["error"] = error
        # Backends, timings and the like: for the caller, never in print or json.
        self.metadata: Dict[str, Any] = {}
        self._random_name: Optional[str] = None
        # Set by SaveNames: the stem this result's files take in its run (a
        # video's frames share their video's).
        self._claim: Optional[StemClaim] = None

    @classmethod
    def from_arrays(
        cls,
        input_path: Optional[str],
        image: np.ndarray,
        rows: np.ndarray,
        keypoints: np.ndarray,
        page_index: Optional[int] = None,
    ) -> "KeypointResult":
        """rows: the detector's [M, 6] (class, score, x1, y1, x2, y2) in image
        pixels; keypoints: [M, K, 3] (x, y, score) for the same persons."""
        height, width = image.shape[:2]
        keypoints = np.asarray(keypoints, dtype=np.float32)
        boxes = []
        for row, kpts in zip(np.asarray(rows, dtype=np.float32), keypoints):
            x1, y1, x2, y2 = (float(v) for v in row[2:6])
            boxes.append(
                {
                    # PaddleX clips with max(0, x1) and min(w, x2), which leaves
                    # the int 0 / w / h where a box touches the border (json
                    # writes `480`, not `480.0`); the same rule here.
                    "coordinate": [
                        x1 if x1 > 0 else 0,
                        y1 if y1 > 0 else 0,
                        x2 if x2 < width else width,
                        y2 if y2 < height else height,
                    ],
                    "det_score": float(row[1]),
                    "keypoints": kpts,
                    # PaddleX's mean of the joint scores, in float32.
                    "kpt_score": float(kpts[:, 2].mean()),
                }
            )
        return cls(input_path, image, boxes, page_index=page_index)

    @classmethod
    def failed(cls, input_path: Optional[str], error: str, page_index: Optional[int] = None) -> "KeypointResult":
        return cls(input_path, None, [], error=error, page_index=page_index)

    @property
    def error(self) -> Optional[str]:
        return self.get("error")

    # --- text ----------------------------------------------------------------

    def _public(self) -> Dict[str, Any]:
        """The fields print and json show: all but the image."""
        return {k: v for k, v in self.items() if k != "input_img"}

    @property
    def str(self) -> Dict[str, Any]:
        return {"res": self._public()}

    def to_text(self, json_format: bool = False, indent: int = 4, ensure_ascii: bool = False) -> str:
        if json_format:
            return json.dumps(self.json, indent=indent, ensure_ascii=ensure_ascii)
        # PaddleX shortens arrays this way (it sets numpy's print options globally; here only for this call).
        with np.printoptions(threshold=1, edgeitems=1):
            return str(self.str)

    def print(self, json_format: bool = False, indent: int = 4, ensure_ascii: bool = False) -> None:
        """Write the result to stderr as PaddleX's print does: `{'res': {...}}`,
        or JSON with json_format=True."""
        sys.stderr.write(colour(self.to_text(json_format, indent, ensure_ascii), sys.stderr) + "\n")

    @property
    def json(self) -> Dict[str, Any]:
        return {"res": to_jsonable(self._public())}

    def save_to_json(self, save_path: PathLike, indent: int = 4, ensure_ascii: bool = False) -> Path:
        """To `save_path` if it names a .json file, else to `{save_path}/{stem}_res.json`."""
        target = Path(save_path)
        if mimetypes.guess_type(str(target))[0] != "application/json":
            target = target / self.saved_names()[0]
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(target, "w", encoding="utf-8") as f:
            f.write(self.json_text(indent, ensure_ascii))
        return target

    def json_text(self, indent: int = 4, ensure_ascii: bool = False) -> str:
        """What save_to_json writes."""
        return json.dumps(self.json["res"], indent=indent, ensure_ascii=ensure_ascii)

    # --- image ---------------------------------------------------------------

    @property
    def img(self) -> Dict[str, Image.Image]:
        """{"res": the image with the skeletons drawn}; {} for a failed input."""
        image = self.get("input_img")
        if image is None:
            return {}
        boxes = self["boxes"]
        if boxes:
            image = draw_keypoints(image, np.stack([b["keypoints"] for b in boxes]))
        return {"res": Image.fromarray(cv2.cvtColor(image, cv2.COLOR_BGR2RGB))}

    def save_to_img(self, save_path: PathLike) -> Optional[Path]:
        """To `save_path` if it names an image file, else to
        `{save_path}/{stem}_res{suffix}`, the suffix the input's (".png" for
        arrays and non-image names), as PaddleX. Nothing for a failed input."""
        target = Path(save_path)
        if not _is_image_name(target):
            target = target / self.saved_names()[1]
        data = self.encoded_image(target.suffix)
        if data is None:
            return None
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        return target

    def encoded_image(self, suffix: str) -> Optional[bytes]:
        """The drawn image as a file of type `suffix` (what save_to_img writes); None for a failed input."""
        images = self.img
        if not images:
            return None
        image_format = Image.registered_extensions().get(suffix.lower())
        if image_format is None:
            raise ValueError(f"unknown file extension: {suffix}")  # Pillow's own words on save
        with io.BytesIO() as buffer:
            images["res"].save(buffer, format=image_format)
            return buffer.getvalue()

    def saved_names(self, warn: bool = True) -> Tuple[str, str]:
        """The names save_to_json and save_to_img give this result's files in a
        folder: `{stem}_res.json` and `{stem}_res{suffix}` (the input's image
        suffix, else .png). `warn`: say, once, when SaveNames renamed it."""
        stem = self._save_stem(warn)
        name = Path(self._input_name())
        suffix = name.suffix if _is_image_name(name) else ".png"
        return f"{stem}_res.json", f"{stem}_res{suffix}"

    def save_all(self, save_path: PathLike) -> None:
        """save_to_json and save_to_img, as PaddleX's save_all."""
        self.save_to_json(save_path)
        self.save_to_img(save_path)

    def _save_stem(self, warn: bool = True) -> str:
        """The stem of this result's files: its run's (SaveNames), else PaddleX's;
        a video's frame adds its index to its video's (clip_000042)."""
        frame = self.get("frame_index")
        if self._claim is None:
            return self._natural_stem()
        stem = self._claim.use() if warn else self._claim.stem
        return stem if frame is None else frame_stem(stem, frame)

    @property
    def named_by_run(self) -> bool:
        """Whether a run's SaveNames chose this result's stem."""
        return self._claim is not None

    def video_stem(self, warn: bool = True) -> Optional[str]:
        """For a video's frame: the stem of its video's files (`{stem}_res.mp4`),
        its run's (SaveNames) else the video's own; None for other results."""
        stream = self.metadata.get("video")
        if stream is None:
            return None
        if self._claim is None:
            return stream.video.stem
        return self._claim.use() if warn else self._claim.stem

    def _natural_stem(self) -> str:
        """PaddleX's stem: the input's, with `_{page}` for a page (BaseCVResult._get_input_fn);
        a video's frame: its video's stem and its index."""
        stream = self.metadata.get("video")
        if stream is not None and self.get("frame_index") is not None:
            return frame_stem(stream.video.stem, self["frame_index"])
        stem = Path(self._input_name()).stem
        page = self.get("page_index")
        return stem if page is None else f"{stem}_{page}"

    def _label(self) -> str:
        """The input, as a log line names it."""
        path = self.get("input_path") or f"array input {self._natural_stem()}"
        page = self.get("page_index")
        return str(path) if page is None else f"{path} (page {page})"

    def _input_name(self) -> str:
        """The file name saved files are named after."""
        path = self.get("input_path")
        if isinstance(path, str) and path.lower().startswith(("http://", "https://")):
            # The URL's own file name, without query or fragment.
            path = urllib.parse.urlsplit(path).path
        name = Path(path).name if path else ""
        if name and self.get("frame_index") is not None:
            # A video's frames each get their own files: clip_000042_res.json ("camera:0" -> camera0_...).
            name = frame_stem(Path(name).stem.replace(":", ""), self["frame_index"]) + Path(name).suffix
        if not name:
            # PaddleX's name for inputs without a file name: time and a random number,
            # drawn once per result so its json and image share it.
            if self._random_name is None:
                self._random_name = f"{int(time.time())}_{random.randint(1000, 9999)}"
            name = self._random_name
        return name


def frame_stem(video_stem: str, frame_index: int) -> str:
    """The stem of one frame's files: clip_000042."""
    return f"{video_stem}_{int(frame_index):06d}"


_FRAME_STEM = re.compile(r"(.+)_\d{6,}")


class StemClaim:
    """A stem SaveNames gave out: to one image's result, or to a video, whose
    frames all share it."""

    def __init__(self, stem: str, label: str, files: str, taken_by: Optional[Tuple[str, str]]):
        self.stem = stem
        self._label = label  # the input, as the warning names it
        self._files = files  # what the warning calls its files: "_res.*" (an image), "_*" (a video)
        self._taken_by = taken_by  # (stem, input) of the earlier result that has the natural stem
        self._lock = threading.Lock()  # a video's frames may be saved from several threads

    def __getstate__(self) -> dict:
        # Results travel between processes (pools, Ray): a lock does not.
        return {k: v for k, v in self.__dict__.items() if k != "_lock"}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def use(self) -> str:
        """The stem, saying once that it is not the natural one."""
        with self._lock:
            taken_by, self._taken_by = self._taken_by, None
        if taken_by is not None:
            files = self._files
            log.warning("%s: saved as %s%s since %s%s is %s's in this run", self._label, self.stem, files, taken_by[0], files, taken_by[1])
        return self.stem


class SaveNames:
    """The file stems of one run's results (one predict call, one CLI run):
    PaddleX's stem when no earlier result of the run has it, compared without
    case (macOS and Windows folders ignore it), else the stem with `-2`, `-3`,
    ... appended, the first number free. A video claims its stem once, for
    all its frames (`{stem}_{frame:06d}_res.*`) and its video files
    (`{stem}_res.mp4`), and no image takes a name its frames may have.
    Deterministic: it depends only on the inputs and their order, not on
    which of them fail."""

    def __init__(self) -> None:
        self._owners: Dict[str, Tuple[str, str]] = {}  # casefolded stem -> (stem, input) of the result that has it
        self._video_stems: set = set()  # casefolded stems claimed by videos
        self._video: Optional[Tuple[Any, StemClaim]] = None  # the last video's stream and claim

    def claim(self, result: KeypointResult) -> KeypointResult:
        stream = result.metadata.get("video")
        if stream is None and self._video is not None and result.error is not None:
            if result.get("input_path") == self._video[0].video.input_path:
                # A video that fails after frames: its failed result is the same input.
                result._claim = self._video[1]
                return result
        if stream is None:
            result._claim = self._claim(result._natural_stem(), result._label(), video=False)
        else:
            if self._video is None or self._video[0] is not stream:
                self._video = (stream, self._claim(stream.video.stem, stream.video.input_path, video=True))
            result._claim = self._video[1]
        return result

    def _claim(self, natural: str, label: str, video: bool) -> StemClaim:
        stem, number = natural, 1
        while self._taken(stem, video):
            number += 1
            stem = f"{natural}-{number}"
        taken_by = None
        if stem != natural:
            taken_by = self._owners.get(natural.casefold()) or self._frame_owner(natural, video)
        self._owners[stem.casefold()] = (stem, label)
        if video:
            self._video_stems.add(stem.casefold())
        return StemClaim(stem, label, "_*" if video else "_res.*", taken_by)

    def _taken(self, stem: str, video: bool) -> bool:
        return stem.casefold() in self._owners or self._frame_owner(stem, video) is not None

    def _frame_owner(self, stem: str, video: bool) -> Optional[Tuple[str, str]]:
        """The owner of a name that a video's frames and an image would share:
        for an image stem, the video whose frame it names; for a video stem,
        an image named like one of its frames."""
        if not video:
            match = _FRAME_STEM.fullmatch(stem)
            if match is None or match.group(1).casefold() not in self._video_stems:
                return None
            return self._owners[match.group(1).casefold()]
        prefix = stem.casefold() + "_"
        for key, owner in self._owners.items():
            if key.startswith(prefix) and _FRAME_STEM.fullmatch(key) and key[len(prefix):].isdigit():
                return owner
        return None


def _is_image_name(path: Path) -> bool:
    mime = mimetypes.guess_type(str(path))[0]
    return mime is not None and mime.startswith("image/")


def to_jsonable(obj: Any) -> Any:
    """numpy scalars and arrays to Python numbers and lists, recursively."""
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, Path):
        return obj.as_posix()
    if isinstance(obj, dict):
        return {k: to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    return obj


def colour(text: str, stream: Any) -> str:
    """PaddleX prints results in green; here only when the stream is a terminal,
    so files and pipes get plain text."""
    isatty = getattr(stream, "isatty", None)
    return f"\x1b[32m{text}\x1b[0m" if isatty is not None and isatty() else text
