"""posepipe.stages.run_stages: order kept, stages overlap, queues bounded,
errors arrive in place, and an early stop stops everything."""
from __future__ import annotations

import threading
import time

import pytest

from posepipe.stages import run_stages


def test_order_is_kept_through_several_stages():
    out = list(run_stages(range(200), [lambda x: x * 2, lambda x: x + 1], queue_size=3))
    assert out == [2 * i + 1 for i in range(200)]


def test_no_stage_is_a_prefetching_iterator():
    assert list(run_stages(iter("abc"))) == ["a", "b", "c"]


def test_stages_overlap():
    # Three steps of 20 ms per item: in sequence 60 ms per item, overlapped about 20.
    def slow(x):
        time.sleep(0.02)
        return x

    def source():
        for i in range(30):
            time.sleep(0.02)
            yield i

    t0 = time.perf_counter()
    assert list(run_stages(source(), [slow, slow], queue_size=2)) == list(range(30))
    assert time.perf_counter() - t0 < 30 * 0.06 * 0.7


def test_the_source_runs_at_most_the_queues_ahead():
    produced = []

    def source():
        for i in range(100):
            produced.append(i)
            yield i

    staged = run_stages(source(), [lambda x: x], queue_size=2)
    first = next(staged)
    time.sleep(0.3)
    # One item with the caller, at most 2 per queue (2 queues), one in each thread's hands.
    assert first == 0 and len(produced) <= 1 + 2 * 2 + 2
    staged.close()


def test_an_error_arrives_after_the_items_before_it():
    def source():
        yield from range(5)
        raise ValueError("broken at 5")

    got = []
    with pytest.raises(ValueError, match="broken at 5"):
        for item in run_stages(source(), [lambda x: x * 10]):
            got.append(item)
    assert got == [0, 10, 20, 30, 40]


def test_a_stage_error_arrives_in_place():
    def stage(x):
        if x == 3:
            raise KeyError("three")
        return x

    got = []
    with pytest.raises(KeyError):
        for item in run_stages(range(10), [stage]):
            got.append(item)
    assert got == [0, 1, 2]


def test_stopping_early_closes_the_source_and_ends_the_threads():
    closed = threading.Event()

    def source():
        try:
            for i in range(10_000):
                yield i
        finally:
            closed.set()

    before = threading.active_count()
    staged = run_stages(source(), [lambda x: x, lambda x: x], queue_size=2)
    assert [next(staged) for _ in range(3)] == [0, 1, 2]
    staged.close()
    assert closed.wait(5)
    deadline = time.monotonic() + 5
    while threading.active_count() > before and time.monotonic() < deadline:
        time.sleep(0.01)
    assert threading.active_count() == before


def test_queue_size_must_be_positive():
    with pytest.raises(ValueError):
        list(run_stages([1], queue_size=0))
