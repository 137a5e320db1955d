"""Dynamic batching: concurrent requests share one pipeline call.

A request first reserves a place (`try_reserve`; refused at once when
`max_queue` requests are already waiting, so overload is a fast 503, not a
growing queue), decodes its image, then `submit`s the frame. One collector task
forms batches: the oldest waiting request leads; others with the same
detThreshold join it (in arrival order) until the batch holds `max_batch` or the
leader has waited `max_wait`. A request that waited through the previous batch
is already past its wait, so under load batches leave back to back and grow
with the load. Requests with another threshold wait for a later batch (the
oldest always leads, so none starves).

Batches run one at a time on a single dedicated thread (the pipeline is not
re-entrant, and Paddle predictors stay on the thread that made them); the
event loop never blocks on inference. If a batch fails, its frames are re-run
one by one so that one bad image cannot fail the requests it was batched with."""
from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Deque, List, Optional, Sequence

log = logging.getLogger("posepipe.serving")

RunBatch = Callable[[List[Any], Optional[float]], Sequence[Any]]


class QueueFull(Exception):
    pass


class Closed(Exception):
    pass


@dataclass
class _Item:
    frame: Any
    threshold: Optional[float]
    future: "asyncio.Future[Any]"
    pixels: int = 0
    enqueued: float = field(default_factory=time.monotonic)


class Batcher:
    def __init__(
        self,
        run_batch: RunBatch,
        executor: ThreadPoolExecutor,
        *,
        max_batch: int,
        max_wait_s: float,
        max_queue: int,
        max_queue_pixels: Optional[int] = None,
        on_batch: Optional[Callable[[int, float, List[float]], None]] = None,
        on_depth: Optional[Callable[[int], None]] = None,
    ):
        self._run_batch = run_batch
        self._executor = executor
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.max_queue = max_queue
        self.max_queue_pixels = max_queue_pixels
        self.queued_pixels = 0  # decoded pixels waiting in the queue (memory held by frames)
        self._on_batch = on_batch
        self._on_depth = on_depth
        self._items: Deque[_Item] = deque()
        self._reserved = 0  # admitted and not yet handed to the pipeline (incl. queued items)
        self._wakeup = asyncio.Event()
        self._closing = False
        self._task: Optional[asyncio.Task] = None
        self.running = 0  # frames in the batch on the pipeline thread now

    # --- admission ----------------------------------------------------------

    @property
    def depth(self) -> int:
        return self._reserved

    def try_reserve(self) -> None:
        if self._closing:
            raise Closed()
        if self._reserved >= self.max_queue:
            raise QueueFull()
        self._reserved += 1
        self._depth_changed()

    def release(self, count: int = 1) -> None:
        self._reserved -= count
        self._depth_changed()

    def _depth_changed(self) -> None:
        if self._on_depth is not None:
            self._on_depth(self._reserved)

    # --- the queue ------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._collect(), name="posepipe-batcher")

    async def submit(self, frame: Any, threshold: Optional[float], pixels: int = 0) -> Any:
        """Run one (reserved) frame; the reservation ends when its batch starts.
        QueueFull (and the reservation released) when the decoded frames already
        waiting hold `max_queue_pixels`: the queue is bounded in memory too. A
        frame alone in the queue is always taken."""
        if self._closing and (self._task is None or self._task.done()):
            self.release()
            raise Closed()  # nothing would run it any more
        if self.max_queue_pixels is not None and self._items and self.queued_pixels + pixels > self.max_queue_pixels:
            self.release()
            raise QueueFull()
        future = asyncio.get_running_loop().create_future()
        self.queued_pixels += pixels
        self._items.append(_Item(frame, threshold, future, pixels))
        self._wakeup.set()
        return await future

    async def close(self) -> None:
        """Finish what is queued, then stop."""
        self._closing = True
        self._wakeup.set()
        if self._task is not None:
            await self._task

    async def _collect(self) -> None:
        while True:
            if not self._items:
                if self._closing:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            leader = self._items[0]
            deadline = leader.enqueued + self.max_wait_s
            while not self._closing and self._count(leader.threshold) < self.max_batch:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._wakeup.clear()
                try:
                    await asyncio.wait_for(self._wakeup.wait(), remaining)
                except asyncio.TimeoutError:
                    break
            batch = self._take(leader.threshold)
            self.queued_pixels -= sum(item.pixels for item in batch)
            self.release(len(batch))
            await self._run(batch, leader.threshold)

    def _count(self, threshold: Optional[float]) -> int:
        return sum(1 for item in self._items if item.threshold == threshold)

    def _take(self, threshold: Optional[float]) -> List[_Item]:
        batch: List[_Item] = []
        kept: Deque[_Item] = deque()
        while self._items:
            item = self._items.popleft()
            if len(batch) < self.max_batch and item.threshold == threshold:
                batch.append(item)
            else:
                kept.append(item)
        self._items = kept
        return batch

    async def _run(self, batch: List[_Item], threshold: Optional[float]) -> None:
        loop = asyncio.get_running_loop()
        started = time.monotonic()
        waits = [started - item.enqueued for item in batch]
        frames = [item.frame for item in batch]
        self.running = len(batch)
        try:
            results = await loop.run_in_executor(self._executor, self._call, frames, threshold)
        except asyncio.CancelledError:
            for item in batch:
                item.future.cancel()
            raise
        except Exception as batch_error:  # noqa: BLE001 - isolated below
            if len(batch) == 1:
                results = [batch_error]
            else:
                log.warning("a batch of %d failed (%s); re-running its images one by one", len(batch), batch_error)
                results = []
                for frame in frames:
                    try:
                        results.append((await loop.run_in_executor(self._executor, self._call, [frame], threshold))[0])
                    except Exception as e:  # noqa: BLE001
                        results.append(e)
        finally:
            self.running = 0
        if self._on_batch is not None:
            try:
                self._on_batch(len(batch), time.monotonic() - started, waits)
            except Exception:  # noqa: BLE001 - metrics must not lose the results
                log.exception("batch metrics failed")
        for item, result in zip(batch, results):
            if item.future.done():  # the request was cancelled
                continue
            if isinstance(result, BaseException):
                item.future.set_exception(result)
            else:
                item.future.set_result(result)

    def _call(self, frames: List[Any], threshold: Optional[float]) -> List[Any]:
        results = list(self._run_batch(frames, threshold))
        if len(results) != len(frames):
            raise RuntimeError(f"the pipeline returned {len(results)} results for {len(frames)} images")
        return results
