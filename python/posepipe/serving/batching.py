"""The inference queue: admission, dynamic batching, and a scheduler that
interleaves the two stages of many requests on one pipeline thread.

Admission. A request first reserves a place (`try_reserve`; refused at once
when `max_queue` requests are already waiting, or when the persons found and
waiting for their keypoints exceed `max_queue_persons`, so overload is a fast
503, not a growing queue), then `submit`s its decoded frame.

Detection batches. The oldest waiting frame leads; others with the same
detThreshold join it (in arrival order) until the batch holds `max_batch` or
the leader has waited `max_wait`. A frame that waited through the previous
step is already past its wait, so under load batches leave back to back and
grow with the load. Frames with another threshold wait for a later batch (the
oldest always leads, so none starves).

Keypoint steps. A frame's persons (the `max_persons` best-scoring ones) wait in
a second queue; each step takes up to `max_batch_persons` of them, shared out
across the waiting frames (one each in turn, oldest first). Steps and
detection batches alternate while both have work, so an image with a hundred
persons (a low detThreshold on noise finds one in every box the detector
keeps) cannot hold up the images that came after it for more than a step or two.

Everything runs on a single dedicated thread (the pipeline is not
re-entrant, and Paddle predictors stay on the thread that made them); the
event loop never blocks on inference. A frame whose request is gone (its
future cancelled) is dropped before its next step. If a batch or step fails,
its frames are re-run one by one so that one bad image cannot fail the
requests it was batched with."""
from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Deque, Dict, List, Optional, Sequence

import numpy as np

from .stage_calls import Stages, best, finish, isolated

log = logging.getLogger("posepipe.serving")


class QueueFull(Exception):
    """No room: `what` ran out ("requests", "pixels" or "persons")."""

    def __init__(self, what: str):
        super().__init__(what)
        self.what = what


class Closed(Exception):
    pass


@dataclass(eq=False)
class _Job:
    frame: Any
    threshold: Optional[float]
    future: "asyncio.Future[Any]"
    pixels: int = 0
    enqueued: float = field(default_factory=time.monotonic)
    boxes: Optional[np.ndarray] = None  # the detector's, once detected
    keypoints: List[np.ndarray] = field(default_factory=list)  # per keypoint step
    estimated: int = 0  # persons with keypoints so far

    @property
    def waiting_persons(self) -> int:
        return 0 if self.boxes is None else len(self.boxes) - self.estimated


class Batcher:
    def __init__(
        self,
        stages: Stages,
        executor: ThreadPoolExecutor,
        *,
        max_batch: int,
        max_wait_s: float,
        max_queue: int,
        max_queue_pixels: Optional[int] = None,
        max_persons: Optional[int] = None,
        max_batch_persons: int = 32,
        max_queue_persons: Optional[int] = None,
        on_batch: Optional[Callable[[int, float, List[float]], None]] = None,
        on_keypoint_step: Optional[Callable[[int, float], None]] = None,
        on_depth: Optional[Callable[[int], None]] = None,
    ):
        self._stages = stages
        self._executor = executor
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.max_queue = max_queue
        self.max_queue_pixels = max_queue_pixels
        self.max_persons = max_persons
        self.max_batch_persons = max_batch_persons
        self.max_queue_persons = max_queue_persons
        self.queued_pixels = 0  # decoded pixels waiting for detection (memory held by frames)
        self.queued_persons = 0  # persons found and waiting for their keypoints
        self._on_batch = on_batch
        self._on_keypoint_step = on_keypoint_step
        self._on_depth = on_depth
        self._to_detect: Deque[_Job] = deque()
        self._to_estimate: Deque[_Job] = deque()
        self._reserved = 0  # admitted and not yet detected (incl. queued jobs)
        self._wakeup = asyncio.Event()
        self._keypoints_next = False  # whose turn it is when both stages have work
        self._closing = False
        self._task: Optional[asyncio.Task] = None

    # --- admission ----------------------------------------------------------

    @property
    def depth(self) -> int:
        return self._reserved

    def try_reserve(self) -> None:
        if self._closing:
            raise Closed()
        if self._reserved >= self.max_queue:
            raise QueueFull("requests")
        if self.max_queue_persons is not None and self.queued_persons >= self.max_queue_persons:
            raise QueueFull("persons")
        self._reserved += 1
        self._depth_changed()

    def release(self, count: int = 1) -> None:
        self._reserved -= count
        self._depth_changed()

    def _depth_changed(self) -> None:
        if self._on_depth is not None:
            self._on_depth(self._reserved)

    # --- the queues ------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._schedule(), name="posepipe-batcher")

    async def submit(self, frame: Any, threshold: Optional[float], pixels: int = 0) -> Any:
        """Run one (reserved) frame through both stages; the reservation ends
        when its detection batch starts. QueueFull("pixels") (and the
        reservation released) when the decoded frames already waiting hold
        `max_queue_pixels`: the queue is bounded in memory too. A frame alone in
        the queue is always taken. Cancelling the caller drops the frame."""
        if self._closing and (self._task is None or self._task.done()):
            self.release()
            raise Closed()  # nothing would run it any more
        if self.max_queue_pixels is not None and self._to_detect and self.queued_pixels + pixels > self.max_queue_pixels:
            self.release()
            raise QueueFull("pixels")
        job = _Job(frame, threshold, asyncio.get_running_loop().create_future(), pixels)
        self.queued_pixels += pixels
        self._to_detect.append(job)
        self._wakeup.set()
        return await job.future

    async def close(self) -> None:
        """Finish what is queued, then stop."""
        self._closing = True
        self._wakeup.set()
        if self._task is not None:
            await self._task

    async def _schedule(self) -> None:
        while True:
            self._drop_cancelled()
            if not self._to_detect and not self._to_estimate:
                if self._closing:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            wait = self._detection_wait()
            if self._to_estimate and (wait > 0 or self._keypoints_next):
                await self._keypoint_step()
                self._keypoints_next = False
            elif wait <= 0:
                await self._detect_batch(self._to_detect[0].threshold)
                self._keypoints_next = True
            else:  # only frames to detect, and their batch may still grow
                self._wakeup.clear()
                try:
                    await asyncio.wait_for(self._wakeup.wait(), wait)
                except asyncio.TimeoutError:
                    pass

    def _detection_wait(self) -> float:
        """Seconds the next detection batch may still wait for frames to join (0: go; inf: nothing to detect)."""
        if not self._to_detect:
            return float("inf")
        leader = self._to_detect[0]
        if self._closing or sum(1 for j in self._to_detect if j.threshold == leader.threshold) >= self.max_batch:
            return 0.0
        return max(0.0, leader.enqueued + self.max_wait_s - time.monotonic())

    def _drop_cancelled(self) -> None:
        for queue in (self._to_detect, self._to_estimate):
            gone = [job for job in queue if job.future.done()]
            for job in gone:
                queue.remove(job)
                if job.boxes is None:  # still reserved and holding its pixels
                    self.queued_pixels -= job.pixels
                    self.release()
                else:
                    self.queued_persons -= job.waiting_persons

    async def _detect_batch(self, threshold: Optional[float]) -> None:
        batch: List[_Job] = []
        kept: Deque[_Job] = deque()
        while self._to_detect:
            job = self._to_detect.popleft()
            if len(batch) < self.max_batch and job.threshold == threshold:
                batch.append(job)
            else:
                kept.append(job)
        self._to_detect = kept
        self.queued_pixels -= sum(job.pixels for job in batch)
        self.release(len(batch))
        started = time.monotonic()
        waits = [started - job.enqueued for job in batch]
        outcomes = await self._run_isolated(
            lambda jobs: self._stages.predict_boxes([j.frame for j in jobs], threshold), batch
        )
        if self._on_batch is not None:
            _observe(self._on_batch, len(batch), time.monotonic() - started, waits)
        for job, boxes in zip(batch, outcomes):
            if isinstance(boxes, BaseException):
                _settle(job, boxes)
                continue
            job.boxes = best(np.asarray(boxes), self.max_persons)
            if len(job.boxes):
                self._to_estimate.append(job)
                self.queued_persons += len(job.boxes)
            else:
                self._finish(job)

    async def _keypoint_step(self) -> None:
        picks = [(job, job.estimated, job.estimated + take) for job, take in self._shares().items()]
        started = time.monotonic()
        outcomes = await self._run_isolated(
            lambda part: self._stages.estimate_keypoints([j.frame for j, _, _ in part], [j.boxes[a:b] for j, a, b in part]),
            picks,
        )
        persons = sum(b - a for _, a, b in picks)
        self.queued_persons -= persons
        if self._on_keypoint_step is not None:
            _observe(self._on_keypoint_step, persons, time.monotonic() - started)
        for (job, start, end), keypoints in zip(picks, outcomes):
            if isinstance(keypoints, BaseException):
                self._to_estimate.remove(job)
                self.queued_persons -= job.waiting_persons - (end - start)
                _settle(job, keypoints)
                continue
            job.keypoints.append(np.asarray(keypoints))
            job.estimated = end
            if job.waiting_persons == 0:
                self._to_estimate.remove(job)
                self._finish(job)

    def _shares(self) -> Dict[_Job, int]:
        """Persons per waiting frame for the next step: the budget dealt out one
        at a time, oldest frame first, so every frame gets a share of every step
        (up to max_batch_persons frames) and a frame with few persons is done in one."""
        shares = {job: 0 for job in self._to_estimate}
        budget = self.max_batch_persons
        while budget > 0:
            dealt = False
            for job in shares:
                if budget > 0 and shares[job] < job.waiting_persons:
                    shares[job] += 1
                    budget -= 1
                    dealt = True
            if not dealt:
                break
        return {job: take for job, take in shares.items() if take}

    def _finish(self, job: _Job) -> None:
        if job.future.done():
            return
        _settle(job, finish(self._stages, job.frame, job.boxes, job.keypoints))

    async def _run_isolated(self, call: Callable[[list], Sequence[Any]], items: list) -> List[Any]:
        """stages.isolated(call, items) on the pipeline thread."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, isolated, call, items)


def _settle(job: _Job, outcome: Any) -> None:
    if job.future.done():  # the request was cancelled
        return
    if isinstance(outcome, BaseException):
        job.future.set_exception(outcome)
    else:
        job.future.set_result(outcome)


def _observe(callback: Callable[..., None], *args: Any) -> None:
    try:
        callback(*args)
    except Exception:  # noqa: BLE001 - metrics must not lose the results
        log.exception("batch metrics failed")
