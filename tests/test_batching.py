"""Power-of-two chunking of model batches (python/posepipe/batching.py)."""
import numpy as np
import pytest

from posepipe.batching import chunk_sizes_to_warm, keypoint_batch_limit, pow2_chunks, run_chunked
from posepipe.keypoints import KeypointModel
from posepipe.models.spec import load_model_spec


@pytest.mark.parametrize("n", range(0, 70))
@pytest.mark.parametrize("max_chunk", [1, 5, 8, 32])
def test_chunks_are_powers_of_two_that_sum_to_n(n, max_chunk):
    sizes = pow2_chunks(n, max_chunk)
    assert sum(sizes) == n
    assert all(s & (s - 1) == 0 and s <= max_chunk for s in sizes)
    assert sizes == sorted(sizes, reverse=True)
    assert set(sizes) <= set(chunk_sizes_to_warm(max_chunk))


class RecordingBackend:
    """Echoes its batch as [N,2] rows plus a per-item count, like a detector."""

    input_names = ["x"]

    def __init__(self):
        self.seen = []

    def run(self, feeds):
        x = feeds["x"]
        self.seen.append(len(x))
        return [np.stack([x, x * 10], axis=1), np.ones(len(x), np.int32)]


def test_run_chunked_joins_outputs_in_order():
    backend = RecordingBackend()
    x = np.arange(13, dtype=np.float32)
    rows, counts = run_chunked(backend, {"x": x}, max_chunk=8)
    assert backend.seen == [8, 4, 1]
    np.testing.assert_array_equal(rows[:, 0], x)
    np.testing.assert_array_equal(rows[:, 1], x * 10)
    assert counts.tolist() == [1] * 13


@pytest.mark.parametrize(
    "input_wh, device_kind, expected",
    [
        ((256, 256), "cpu", 4),  # MoveNet Thunder: fastest at 4 crops per call on CPU
        ((192, 256), "cpu", 4),  # PP-TinyPose_256x192: 5 fit the budget, rounded down to a power of two
        ((96, 128), "cpu", 16),  # PP-TinyPose_128x96
        ((1024, 1024), "cpu", 1),  # never below one crop
        ((96, 128), "gpu", 32),
    ],
)
def test_keypoint_batch_limit(input_wh, device_kind, expected):
    assert keypoint_batch_limit(input_wh, device_kind) == expected


def test_keypoint_model_picks_the_limit_unless_told(shared_dir):
    class FakeBackend:
        input_names = ["image"]

    spec = load_model_spec(shared_dir / "models" / "real" / "keypoint_movenet_thunder", kind="keypoint")
    assert KeypointModel(spec, FakeBackend()).max_batch == 4
    assert KeypointModel(spec, FakeBackend(), device_kind="gpu").max_batch == 32
    assert KeypointModel(spec, FakeBackend(), max_batch=7).max_batch == 7
