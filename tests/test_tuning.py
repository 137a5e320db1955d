"""Settings measured on the machine at hand (runtime/tuning.py, runtime/cpu.py,
runtime/decisions.py): the processor's description, the thread count and
the crops per keypoint call, their cache, and the refusal to cache what was
measured on a busy machine. Fake backends whose run time is known make the
measured choice checkable; the real models check the pipeline's wiring."""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np
import pytest

import posepipe
from posepipe.models.spec import load_model_spec
from posepipe.runtime import RuntimeOptions, timing
from posepipe.runtime.base import Backend
from posepipe.runtime.cpu import cpu_info
from posepipe.runtime.tuning import (
    CLOSE_ENOUGH,
    sweep_batches,
    thread_counts,
    tuned_keypoint_batch,
    with_tuned_threads,
)


class SleepBackend(Backend):
    """A backend whose call takes `fixed_ms + per_item_ms(batch) * batch`."""

    name = "sleep"

    def __init__(self, per_item_ms, fixed_ms=0.0, max_batch=None, threads=1):
        self.input_names, self.output_names = ["image"], ["heatmaps"]
        self.per_item_ms, self.fixed_ms, self.max_batch, self.threads = per_item_ms, fixed_ms, max_batch, threads
        self.calls = []

    def run(self, inputs):
        n = len(inputs["image"])
        self.calls.append(n)
        time.sleep((self.fixed_ms + self.per_item_ms(n) * n) / 1000)
        return [np.zeros((n, 17, 4, 4), np.float32)]

    def describe(self):
        return {"backend": self.name, "cpu_threads": self.threads}


@pytest.fixture(scope="module")
def movenet(shared_dir):
    return load_model_spec(shared_dir / "models" / "real" / "keypoint_movenet_thunder")


def test_cpu_info_reads_model_flags_and_cores(tmp_path):
    fake = tmp_path / "cpuinfo"
    fake.write_text(
        "processor\t: 0\nmodel name\t: Some Xeon(R) CPU\nflags\t\t: fpu sse2 avx2 avx512f avx512_vnni amx_bf16 amx_int8 amx_tile\n"
        "processor\t: 1\nmodel name\t: Some Xeon(R) CPU\nflags\t\t: fpu sse2 avx2 avx512f avx512_vnni amx_bf16 amx_int8 amx_tile\n"
    )
    info = cpu_info(str(fake))
    assert info.model == "Some Xeon(R) CPU" and info.has_bf16_units and info.has_int8_units
    assert info.isa()["avx2"] and info.isa()["amx_bf16"] and not info.isa()["avx512_bf16"]
    assert info.summary().startswith("Some Xeon(R) CPU (avx2, avx512f, avx512_vnni, amx_bf16, amx_int8), ")
    fake.write_text("model name\t: Old CPU\nflags\t\t: fpu sse2 avx2\n")
    old = cpu_info(str(fake))
    assert not old.has_bf16_units and not old.has_int8_units
    assert cpu_info(str(tmp_path / "missing")).model  # no /proc: still a name


@pytest.mark.parametrize("cores, expected", [(1, [1]), (2, [2, 1]), (4, [4, 2, 1]), (64, [64, 32, 16])])
def test_thread_counts_tried(cores, expected):
    assert thread_counts(cores) == expected


def _fake_cores(monkeypatch, cores):
    from posepipe.runtime import cpu, tuning

    real = cpu.cpu_info()
    monkeypatch.setattr(tuning, "cpu_info", lambda: cpu.CpuInfo(real.model, real.flags, cores))


@pytest.mark.parametrize("ms_by_threads, expected", [
    ({4: 30.0, 2: 15.0, 1: 40.0}, 2),  # clearly faster with fewer threads: taken
    ({4: 30.0, 2: 29.0, 1: 40.0}, 4),  # a few percent is not enough to give cores away
])
def test_threads_are_measured_and_cached(ms_by_threads, expected, movenet, tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("POSEPIPE_HOME", str(tmp_path))
    _fake_cores(monkeypatch, 4)
    built = []

    def build(options):
        built.append(options.cpu_threads)
        return SleepBackend(lambda n: 0.0, fixed_ms=ms_by_threads[options.cpu_threads], threads=options.cpu_threads)

    with caplog.at_level(logging.INFO, logger="posepipe"):
        backend, info = with_tuned_threads(movenet, RuntimeOptions(cpu_threads=4), "sleep", build)
    assert sorted(built) == [1, 2, 4] and backend.threads == expected
    assert info["decision"] == "measured" and info["threads"] == expected
    assert set(info["ms"]) == {"1", "2", "4"} and info["ms"][str(expected)] >= ms_by_threads[expected]
    assert f"PP-TinyPose_256x192 on sleep -> {expected} threads" in caplog.text
    saved = json.loads(Path(info["cache_file"]).read_text())
    assert saved["threads"] == expected and saved["backend"] == "sleep"
    built.clear()
    again, info = with_tuned_threads(movenet, RuntimeOptions(cpu_threads=4), "sleep", build)
    assert built == [expected] and info["decision"] == "cache" and again.threads == expected


def test_a_decision_measured_on_a_busy_machine_is_not_cached(movenet, tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("POSEPIPE_HOME", str(tmp_path))
    monkeypatch.setattr(timing, "BUSY_SHARE", 0.25)
    monkeypatch.setattr(timing.OthersCpu, "share", lambda self: 0.6)
    _fake_cores(monkeypatch, 2)
    build = lambda o: SleepBackend(lambda n: 0.0, fixed_ms=5.0 * o.cpu_threads, threads=o.cpu_threads)  # noqa: E731
    with caplog.at_level(logging.INFO, logger="posepipe"):
        _, info = with_tuned_threads(movenet, RuntimeOptions(cpu_threads=2), "sleep", build)
    assert info["decision"] == "measured" and info["cache_file"] is None
    assert "other processes used 60 % of the CPU while" in caplog.text
    assert not (tmp_path / "tuning").exists()
    _, info = with_tuned_threads(movenet, RuntimeOptions(cpu_threads=2), "sleep", build)
    assert info["decision"] == "measured"  # measured again, not read


def test_the_batch_sweep_finds_the_knee(movenet):
    """ms per crop falls to batch 4, then rises: 4 is chosen, and the sweep stops
    at the first size that no longer pays (8), never timing 16 or 32."""
    per_item = {1: 12.0, 2: 8.0, 4: 5.0, 8: 5.5, 16: 9.0, 32: 9.0}
    backend = SleepBackend(lambda n: per_item[n])
    per_crop = sweep_batches(movenet, backend, 32)
    assert set(per_crop) == {1, 2, 4, 8} and 16 not in backend.calls
    best = min(per_crop.values())
    assert min(b for b, v in per_crop.items() if v <= CLOSE_ENOUGH * best) == 4


def test_the_batch_is_measured_once_and_respects_the_backend_limit(movenet, tmp_path, monkeypatch):
    monkeypatch.setenv("POSEPIPE_HOME", str(tmp_path))
    flat = SleepBackend(lambda n: 3.0, fixed_ms=6.0, max_batch=4)  # a fixed cost per call: bigger is better
    batch, info = tuned_keypoint_batch(movenet, flat, "sleep", RuntimeOptions(cpu_threads=1))
    assert batch == 4 and max(flat.calls) == 4 and info["decision"] == "measured"
    assert set(info["ms_per_crop"]) == {"1", "2", "4"}
    flat.calls.clear()
    batch, info = tuned_keypoint_batch(movenet, flat, "sleep", RuntimeOptions(cpu_threads=1))
    assert batch == 4 and flat.calls == [] and info["decision"] == "cache"
    single = SleepBackend(lambda n: 3.0, max_batch=1)
    assert tuned_keypoint_batch(movenet, single, "sleep1", RuntimeOptions(cpu_threads=1))[0] == 1 and single.calls == []


def test_the_pipeline_measures_its_settings_and_a_cap_overrides_the_batch(real_config, tmp_path, monkeypatch):
    monkeypatch.setenv("POSEPIPE_HOME", str(tmp_path))
    pipeline = posepipe.create_pipeline(config=real_config, device="cpu")
    tuning = pipeline.metadata["tuning"]
    assert tuning["cpu"] == cpu_info().summary()
    cores = cpu_info().cores
    for role in ("detector_threads", "keypoint_threads"):
        assert tuning[role]["threads"] in thread_counts(cores)
        assert tuning[role]["decision"] == ("all cores" if cores == 1 else "measured")
    assert tuning["kpt_batch_size"]["decision"] == "measured"
    assert pipeline.keypoints.max_batch == tuning["kpt_batch_size"]["batch"] == pipeline.metadata["kpt_batch_size"]
    assert pipeline.metadata["keypoints"]["cpu_threads"] == tuning["keypoint_threads"]["threads"]
    # KeypointDetection.batch_size above 1 is the user's cap: nothing measured for it.
    config = json.loads(json.dumps(real_config))
    config["SubModules"]["KeypointDetection"]["batch_size"] = 3
    capped = posepipe.create_pipeline(config=config, device="cpu", cpu_threads=1)
    assert capped.keypoints.max_batch == 3
    assert capped.metadata["tuning"]["kpt_batch_size"] == {"batch": 3, "decision": "KeypointDetection.batch_size"}
    assert capped.metadata["tuning"]["keypoint_threads"] == {"threads": 1, "decision": "set"}
