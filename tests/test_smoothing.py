"""posepipe.smoothing: the One-Euro filter against the paper's algorithm,
and what it does to jitter and lag on synthetic tracks."""
from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest

from posepipe.errors import ConfigError
from posepipe.smoothing import OneEuroFilter, OneEuroSettings, PoseSmoother

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
from video_metrics import jitter, lag_frames  # noqa: E402  (the benchmark's measures)


class PaperOneEuro:
    """Casiez et al.'s One-Euro filter for one scalar, written as in the
    paper's pseudo-code (a low-pass on the value, one on its derivative)."""

    def __init__(self, min_cutoff, beta, d_cutoff):
        self.min_cutoff, self.beta, self.d_cutoff = min_cutoff, beta, d_cutoff
        self.x_prev = self.dx_prev = self.t_prev = None

    @staticmethod
    def alpha(rate, cutoff):
        tau = 1.0 / (2 * math.pi * cutoff)
        te = 1.0 / rate
        return 1.0 / (1.0 + tau / te)

    def __call__(self, x, t):
        if self.x_prev is None:
            self.x_prev, self.dx_prev, self.t_prev = x, 0.0, t
            return x
        rate = 1.0 / (t - self.t_prev)
        dx = (x - self.x_prev) * rate
        a_d = self.alpha(rate, self.d_cutoff)
        edx = a_d * dx + (1 - a_d) * self.dx_prev
        cutoff = self.min_cutoff + self.beta * abs(edx)
        a = self.alpha(rate, cutoff)
        x_hat = a * x + (1 - a) * self.x_prev
        self.x_prev, self.dx_prev, self.t_prev = x_hat, edx, t
        return x_hat


def test_matches_the_papers_algorithm_on_one_value():
    rng = np.random.default_rng(1)
    settings = OneEuroSettings(min_cutoff=0.7, beta=0.3, d_cutoff=1.3)
    ours, paper = OneEuroFilter(settings), PaperOneEuro(0.7, 0.3, 1.3)
    t = 0.0
    for i in range(300):
        t += rng.uniform(0.02, 0.12)  # irregular frame times, as with dropped frames
        x = 50 * math.sin(i / 20) + rng.normal(0, 2)
        assert ours(np.array([x]), t)[0] == pytest.approx(paper(x, t), rel=1e-12, abs=1e-9)


def test_a_point_shares_one_cutoff_driven_by_its_speed():
    # Two coordinates moving apart: each is filtered with the cutoff of the point's 2-D speed.
    flt = OneEuroFilter(OneEuroSettings(min_cutoff=1.0, beta=1.0, d_cutoff=1.0))
    flt(np.array([[0.0, 0.0]]), 0.0)
    out = flt(np.array([[3.0, 4.0]]), 0.1)
    a_d = 1 / (1 + (1 / (2 * math.pi)) / 0.1)
    speed = a_d * 50.0  # |(3, 4)| / 0.1 s, low-passed
    a = 1 / (1 + (1 / (2 * math.pi * (1 + speed))) / 0.1)
    assert out == pytest.approx(np.array([[3 * a, 4 * a]]))


@pytest.mark.parametrize("fps", [10, 30])
def test_default_settings_halve_the_jitter_of_a_still_person(fps):
    # A person 200 px tall standing still; the keypoint model's jitter is about 1% of the height.
    rng = np.random.default_rng(7)
    height, frames = 200.0, 300
    truth = rng.uniform(100, 300, (17, 2))
    raw = truth + rng.normal(0, 0.01 * height, (frames, 17, 2))
    smoother = PoseSmoother(OneEuroSettings())
    scores = np.full((17, 1), 0.9)
    out = np.stack([smoother(1, np.concatenate([raw[i], scores], 1), i / fps, height)[:, :2] for i in range(frames)])
    assert jitter(out[10:]) <= 0.5 * jitter(raw[10:])
    assert np.abs(out[50:] - truth).mean() < np.abs(raw[50:] - truth).mean()  # and closer to the truth


@pytest.mark.parametrize("fps", [10, 30])
def test_default_settings_lag_at_most_one_frame_on_a_walking_person(fps):
    # The same person walking slowly, half a body height per second, with the same jitter.
    rng = np.random.default_rng(8)
    height, frames = 200.0, 200
    t = np.arange(frames) / fps
    path = np.stack([100 + height * 0.5 * t, 300 + 0 * t], 1)
    raw = path[:, None, :] + rng.normal(0, 0.01 * height, (frames, 17, 2))
    smoother = PoseSmoother(OneEuroSettings())
    scores = np.full((17, 1), 0.9)
    out = np.stack([smoother(1, np.concatenate([raw[i], scores], 1), t[i], height)[:, :2] for i in range(frames)])
    lag = lag_frames(raw.mean(axis=1), out.mean(axis=1), skip=20)
    assert lag <= 1.0


def test_pose_smoother_keeps_scores_and_forgets_ended_tracks():
    smoother = PoseSmoother(OneEuroSettings())
    kpts = np.concatenate([np.zeros((17, 2)), np.linspace(0, 1, 17)[:, None]], 1).astype(np.float32)
    out = smoother(4, kpts, 0.0, 100)
    assert out.dtype == np.float32 and np.array_equal(out[:, 2], kpts[:, 2])
    smoother(5, kpts, 0.0, 100)
    smoother.keep_only([5])
    moved = kpts.copy()
    moved[:, :2] += 10
    assert np.array_equal(smoother(4, moved, 0.1, 100), moved)  # track 4 starts over: its first sample passes as is
    assert not np.array_equal(smoother(5, moved, 0.1, 100), moved)


def test_repeated_timestamp_returns_the_last_value():
    flt = OneEuroFilter(OneEuroSettings())
    first = flt(np.array([[1.0, 1.0]]), 1.0)
    assert np.array_equal(flt(np.array([[9.0, 9.0]]), 1.0), first)


def test_settings_from_predicts_argument():
    assert OneEuroSettings.from_argument(False) is None and OneEuroSettings.from_argument(None) is None
    assert OneEuroSettings.from_argument(True) == OneEuroSettings()
    assert OneEuroSettings.from_argument({"beta": 2.0}) == OneEuroSettings(beta=2.0)
    custom = OneEuroSettings(min_cutoff=0.5)
    assert OneEuroSettings.from_argument(custom) is custom
    with pytest.raises(ConfigError, match="unknown smoothing parameter"):
        OneEuroSettings.from_argument({"mincutoff": 1})
    with pytest.raises(ConfigError, match="smooth must be"):
        OneEuroSettings.from_argument("yes")
    for bad in ({"min_cutoff": 0}, {"d_cutoff": -1}, {"beta": -0.1}, {"beta": float("nan")}, {"beta": True}):
        with pytest.raises(ConfigError):
            OneEuroSettings(**bad)
