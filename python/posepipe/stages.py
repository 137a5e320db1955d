"""A stage runner: the items of a source pass through a chain of stages, each
on its own thread, with a bounded queue between neighbours, and come out in
order.

    for out in run_stages(frames, [detect], queue_size=2): ...

The source is iterated on one thread (decoding), every stage function maps one
item to one item on the next, and the caller's loop is the last stage. So
decoding frame t+2, running stage 1 on frame t+1 and the caller's work on
frame t overlap, while no more than `queue_size` items wait between any two
steps (memory stays bounded whatever the source's length).

An exception in the source or a stage reaches the caller in its place: the
outputs of the items before it come out first, then it is raised. When the
caller stops early (break, an exception, generator close), the threads stop at
their next item and the source iterator is closed on its own thread."""
from __future__ import annotations

import queue
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Iterable, Iterator, List, Sequence, TypeVar

_Batch = TypeVar("_Batch")
_Read = TypeVar("_Read")

_POLL_S = 0.05  # how often a blocked thread looks whether the run was stopped
_JOIN_S = 30.0  # longest wait for a thread to finish its current item at the end of a run


class _End:
    pass


class _Failure:
    def __init__(self, error: BaseException):
        self.error = error


def run_stages(
    source: Iterable[Any], stages: Sequence[Callable[[Any], Any]] = (), queue_size: int = 2, name: str = "posepipe"
) -> Iterator[Any]:
    if queue_size < 1:
        raise ValueError(f"queue_size must be >= 1, got {queue_size}")
    stop = threading.Event()
    queues: List["queue.Queue[Any]"] = [queue.Queue(maxsize=queue_size) for _ in range(len(stages) + 1)]
    threads = [threading.Thread(target=_feed, args=(source, queues[0], stop), name=f"{name}-source", daemon=True)]
    for i, stage in enumerate(stages):
        threads.append(
            threading.Thread(
                target=_work, args=(stage, queues[i], queues[i + 1], stop), name=f"{name}-stage{i + 1}", daemon=True
            )
        )
    for thread in threads:
        thread.start()
    try:
        while True:
            item = _get(queues[-1], stop)
            if isinstance(item, _End):
                return
            if isinstance(item, _Failure):
                raise item.error
            yield item
    finally:
        stop.set()
        for thread in threads:
            thread.join(_JOIN_S)


def read_ahead(batches: Sequence[_Batch], read: Callable[[_Batch], _Read], name: str) -> Iterator[_Read]:
    """read(batch) for each batch, in order, the next batch read on a thread
    of its own while the caller works on this one: one batch ahead, no more."""
    if not batches:
        return
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix=name) as pool:
        pending = pool.submit(read, batches[0])
        for i in range(len(batches)):
            done = pending.result()
            if i + 1 < len(batches):
                pending = pool.submit(read, batches[i + 1])
            yield done


def _put(q: "queue.Queue[Any]", item: Any, stop: threading.Event) -> bool:
    """Put, unless the run stops first (then False)."""
    while not stop.is_set():
        try:
            q.put(item, timeout=_POLL_S)
            return True
        except queue.Full:
            continue
    return False


def _get(q: "queue.Queue[Any]", stop: threading.Event) -> Any:
    """Get, or an _End when the run stops first."""
    while True:
        try:
            return q.get(timeout=_POLL_S)
        except queue.Empty:
            if stop.is_set():
                return _End()


def _feed(source: Iterable[Any], out: "queue.Queue[Any]", stop: threading.Event) -> None:
    iterator = iter(source)
    try:
        while not stop.is_set():
            try:
                item = next(iterator)
            except StopIteration:
                _put(out, _End(), stop)
                return
            except BaseException as e:  # noqa: BLE001 - handed to the caller in order
                _put(out, _Failure(e), stop)
                return
            if not _put(out, item, stop):
                return
    finally:
        close = getattr(iterator, "close", None)
        if close is not None:
            close()  # a generator's own cleanup (open files, threads) runs here, on its thread


def _work(stage: Callable[[Any], Any], inbox: "queue.Queue[Any]", out: "queue.Queue[Any]", stop: threading.Event) -> None:
    while not stop.is_set():
        item = _get(inbox, stop)
        if isinstance(item, (_End, _Failure)):
            _put(out, item, stop)
            return
        try:
            result = stage(item)
        except BaseException as e:  # noqa: BLE001 - handed to the caller in order
            _put(out, _Failure(e), stop)
            return
        if not _put(out, result, stop):
            return
