"""A stand-in pipeline for testing HTTP clients and the server itself without
models: `FakePipeline` has the real pipeline's stage methods (`predict_boxes`,
`estimate_keypoints`, `build_result`, `warmup`) and returns results shaped
like `KeypointResult` (`boxes`, `.img["res"]`), computed deterministically
from the pixels, after configurable "inference" delays.

    from posepipe.serving import serve, ServingSettings
    from posepipe.serving.testing import FakePipeline
    serve(FakePipeline(batch_delay_ms=20), ServingSettings(port=8080))
"""
from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence

import numpy as np


class FakeResult(dict):
    @property
    def img(self) -> Dict[str, Any]:
        from PIL import Image

        return {"res": Image.fromarray(np.ascontiguousarray(self["input_img"][..., ::-1]))}


class FakePipeline:
    """One "person" per image whose box spans the image, with det_score the
    mean brightness (0..1) and 17 keypoints placed from the column means; an
    image darker than det_threshold has no person. With det_threshold 0, as
    a detector finds noise everywhere, an image has `noise_persons` persons
    (when set) scoring from 0.99 down to 0.01. Detection sleeps `batch_delay_ms +
    image_delay_ms` per image, keypoints `person_delay_ms` per person;
    `warmup` sleeps `first_call_delay_ms` and warns `warning`, if given."""

    def __init__(
        self,
        batch_delay_ms: float = 0.0,
        image_delay_ms: float = 0.0,
        fail_widths: Sequence[int] = (),
        first_call_delay_ms: float = 0.0,
        person_delay_ms: float = 0.0,
        noise_persons: int = 0,
        warning: str = "",
        mark_dir: Optional[str] = None,
    ):
        self.first_call_delay_s = first_call_delay_ms / 1000.0
        self.batch_delay_s = batch_delay_ms / 1000.0
        self.image_delay_s = image_delay_ms / 1000.0
        self.person_delay_s = person_delay_ms / 1000.0
        self.noise_persons = noise_persons
        self.warning = warning
        # Images of these widths raise (to test how a failing batch is isolated).
        self.fail_widths = set(fail_widths)
        # A file per process that has started detecting, so that a test can
        # tell which Ray replicas hold requests (the file's name is the pid).
        self.mark_dir = mark_dir
        self._busy = threading.Lock()

    def __getstate__(self) -> Dict[str, Any]:
        # Picklable (a Ray Serve replica gets a copy), each copy with a lock of its own.
        return {k: v for k, v in self.__dict__.items() if k != "_busy"}

    def __setstate__(self, state: Dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._busy = threading.Lock()

    def warmup(self) -> None:
        if self.warning:
            warnings.warn(self.warning, UserWarning)
        time.sleep(self.first_call_delay_s)

    def predict_boxes(self, frames: Sequence[Any], det_threshold: Optional[float] = None) -> List[np.ndarray]:
        if self.mark_dir is not None:
            open(os.path.join(self.mark_dir, str(os.getpid())), "a").close()
        with self._serial():
            time.sleep(self.batch_delay_s + self.image_delay_s * len(frames))
            return [self._boxes(frame.image, det_threshold) for frame in frames]

    def estimate_keypoints(self, frames: Sequence[Any], boxes: Sequence[np.ndarray]) -> List[np.ndarray]:
        with self._serial():
            time.sleep(self.person_delay_s * sum(len(b) for b in boxes))
            return [self._keypoints(frame.image, b) for frame, b in zip(frames, boxes)]

    def build_result(self, frame: Any, boxes: np.ndarray, keypoints: np.ndarray) -> FakeResult:
        persons = [
            {"coordinate": [float(v) for v in box[:4]], "det_score": float(box[4]), "keypoints": kpts,
             "kpt_score": float(kpts[:, 2].mean())}
            for box, kpts in zip(boxes, keypoints)
        ]
        return FakeResult(input_path=frame.input_path, input_img=frame.image, boxes=persons)

    @contextlib.contextmanager
    def _serial(self) -> Iterator[None]:
        if not self._busy.acquire(blocking=False):
            raise RuntimeError("FakePipeline: called concurrently (the server must serialize pipeline calls)")
        try:
            yield
        finally:
            self._busy.release()

    def _boxes(self, image: np.ndarray, det_threshold: Optional[float]) -> np.ndarray:
        h, w = image.shape[:2]
        if w in self.fail_widths:
            raise ValueError(f"FakePipeline: refusing an image of width {w}")
        if det_threshold == 0 and self.noise_persons:
            scores = np.linspace(0.99, 0.01, self.noise_persons)
        else:
            score = float(image.mean()) / 255.0
            scores = np.array([score] if det_threshold is None or score >= det_threshold else [])
        boxes = np.zeros((len(scores), 5), np.float32)
        boxes[:, 2:4] = (w, h)
        boxes[:, 4] = scores
        return boxes

    @staticmethod
    def _keypoints(image: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        h, w = image.shape[:2]
        columns = image.mean(axis=(0, 2)) / 255.0
        xs = np.linspace(0, w - 1, 17, dtype=np.float32)
        ys = (columns[xs.astype(int)] * (h - 1)).astype(np.float32)
        return np.stack(
            [np.stack([xs, ys, np.full(17, box[4], np.float32)], axis=1) for box in boxes]
        ).astype(np.float32).reshape(-1, 17, 3)


# --- a server in a subprocess, for tests ------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """A posepipe server in a child process on 127.0.0.1, its log in a file.

        with ServerProcess.fake(tmp_path, {"max_batch": 4}, {"batch_delay_ms": 5}) as server:
            httpx.get(server.url + "/health")
    """

    def __init__(self, argv: List[str], log_path: Path, port: int, env: Optional[Dict[str, str]] = None):
        self.argv = argv
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = Path(log_path)
        self._env = env
        self.process: Optional[subprocess.Popen] = None

    @classmethod
    def fake(cls, log_dir: Path, settings: Optional[Dict[str, Any]] = None, fake: Optional[Dict[str, Any]] = None,
             name: str = "fake") -> "ServerProcess":
        """Serve a FakePipeline(**fake) with ServingSettings(**settings)."""
        port = free_port()
        merged = {"host": "127.0.0.1", "port": port, **(settings or {})}
        argv = [sys.executable, "-m", "posepipe.serving.testing", json.dumps(merged), json.dumps(fake or {})]
        return cls(argv, Path(log_dir) / f"{name}-{port}.log", port)

    @classmethod
    def cli(cls, log_dir: Path, args: Sequence[str], name: str = "cli") -> "ServerProcess":
        """`python -m posepipe serve ARGS --host 127.0.0.1 --port <free>`."""
        port = free_port()
        argv = [sys.executable, "-m", "posepipe", "serve", *args, "--host", "127.0.0.1", "--port", str(port)]
        return cls(argv, Path(log_dir) / f"{name}-{port}.log", port)

    def start(self, wait: str = "ready", timeout: float = 60.0) -> "ServerProcess":
        """Start; wait until /health (wait="health") or /ready (wait="ready") says 200."""
        import httpx

        env = dict(os.environ if self._env is None else self._env)
        # The child imports the same posepipe as this process (source tree or installed).
        import posepipe

        package_root = str(Path(posepipe.__file__).absolute().parents[1])
        env["PYTHONPATH"] = os.pathsep.join([package_root, *filter(None, [env.get("PYTHONPATH")])])
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log_file = open(self.log_path, "wb")
        self.process = subprocess.Popen(self.argv, stdout=self._log_file, stderr=subprocess.STDOUT, env=env)
        path = "/ready" if wait == "ready" else "/health"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self.stop()
                raise RuntimeError(f"server exited with {self.process.returncode}:\n{self.log_text()[-4000:]}")
            try:
                if httpx.get(self.url + path, timeout=2.0).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        self.stop(signal.SIGKILL)
        raise TimeoutError(f"server not up on {path} after {timeout} s:\n{self.log_text()[-4000:]}")

    def rss_bytes(self) -> int:
        assert self.process is not None
        with open(f"/proc/{self.process.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        raise RuntimeError("no VmRSS")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> Optional[int]:
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if not self._log_file.closed:
            self._log_file.close()
        return self.process.returncode

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""

    def log_records(self) -> List[Dict[str, Any]]:
        """The JSON log lines (other lines skipped)."""
        records = []
        for line in self.log_text().splitlines():
            if line.startswith("{"):
                try:
                    records.append(json.loads(line))
                except ValueError:
                    pass
        return records

    def __enter__(self) -> "ServerProcess":
        return self.start() if self.process is None else self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def _main(argv: List[str]) -> int:
    from .server import serve
    from .settings import ServingSettings

    settings = ServingSettings(**json.loads(argv[0])) if argv else ServingSettings()
    fake = FakePipeline(**json.loads(argv[1])) if len(argv) > 1 else FakePipeline()
    return serve(fake, settings)


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
