"""Power-of-two chunking of model batches: the one splitter every backend
is called through (python/posepipe/batching.py)."""
import numpy as np
import pytest

from posepipe.batching import chunk_sizes_to_warm, pow2_chunks, run_split


@pytest.mark.parametrize("n", range(0, 70))
@pytest.mark.parametrize("max_chunk", [1, 5, 8, 32])
def test_chunks_are_powers_of_two_that_sum_to_n(n, max_chunk):
    sizes = pow2_chunks(n, max_chunk)
    assert sum(sizes) == n
    assert all(s & (s - 1) == 0 and s <= max_chunk for s in sizes)
    assert sizes == sorted(sizes, reverse=True)
    assert set(sizes) <= set(chunk_sizes_to_warm(RecordingBackend(), max_chunk))


class RecordingBackend:
    """Echoes its batch as [N,2] rows plus a per-item count, like a detector."""

    input_names = ["x"]

    def __init__(self, max_batch=None):
        self.seen = []
        self.max_batch = max_batch

    def run(self, feeds):
        x = feeds["x"]
        self.seen.append(len(x))
        return [np.stack([x, x * 10], axis=1), np.ones(len(x), np.int32)]


def test_run_split_joins_outputs_in_order():
    backend = RecordingBackend()
    x = np.arange(13, dtype=np.float32)
    rows, counts = run_split(backend, {"x": x}, max_chunk=8)
    assert backend.seen == [8, 4, 1]
    np.testing.assert_array_equal(rows[:, 0], x)
    np.testing.assert_array_equal(rows[:, 1], x * 10)
    assert counts.tolist() == [1] * 13


@pytest.mark.parametrize(
    "backend_max, caller_max, n, calls",
    [
        (None, None, 13, [13]),  # no limit anywhere: one call, whatever the size
        (1, None, 3, [1, 1, 1]),  # a graph exported for one image
        (1, 8, 3, [1, 1, 1]),  # the backend's limit wins over a larger caller limit
        (32, 4, 9, [4, 4, 1]),  # the caller's limit wins over a larger backend limit
        (32, None, 40, [32, 8]),  # a TensorRT profile's top
    ],
)
def test_the_smaller_of_backend_and_caller_limit_applies(backend_max, caller_max, n, calls):
    backend = RecordingBackend(max_batch=backend_max)
    rows, _ = run_split(backend, {"x": np.arange(n, dtype=np.float32)}, max_chunk=caller_max)
    assert backend.seen == calls
    np.testing.assert_array_equal(rows[:, 0], np.arange(n))
    if backend_max or caller_max:  # every shape a limited backend sees is warmed up at start
        assert set(calls) <= set(chunk_sizes_to_warm(backend, caller_max))
