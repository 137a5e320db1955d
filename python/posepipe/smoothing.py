"""Keypoint smoothing over time: a One-Euro filter (Casiez, Roussel and
Vogel, CHI 2012) per tracked person and joint.

The filter is a low-pass whose cutoff rises with speed: a joint that stands
still is smoothed hard (little jitter), a joint that moves is followed closely
(little lag). Speeds are measured in the person's own size (box heights per
second), so one set of parameters suits a person 60 px tall and one 600 px
tall alike; times come from the frames' timestamps, so dropped frames and
strides are accounted for."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, Iterable, Optional

import numpy as np

from .errors import ConfigError
from .flags import setting


@dataclass(frozen=True)
class OneEuroSettings:
    min_cutoff: float = setting(
        1.0,
        flag="smooth_min_cutoff",
        metavar="HZ",
        help="One-Euro cutoff frequency for still joints, in Hz: lower removes more jitter and lags more",
    )
    beta: float = setting(
        8.0,
        flag="smooth_beta",
        help="One-Euro speed coefficient: Hz of cutoff added per box height per second of joint speed; "
        "higher follows fast motion with less lag",
    )
    d_cutoff: float = setting(
        1.0, flag="smooth_d_cutoff", metavar="HZ", help="One-Euro cutoff frequency of the speed estimate, in Hz"
    )

    def __post_init__(self) -> None:
        for name in ("min_cutoff", "beta", "d_cutoff"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ConfigError(f"smoothing {name} must be a finite number, got {value!r}")
        if self.min_cutoff <= 0 or self.d_cutoff <= 0:
            raise ConfigError(f"smoothing min_cutoff and d_cutoff must be > 0 Hz, got {self.min_cutoff} and {self.d_cutoff}")
        if self.beta < 0:
            raise ConfigError(f"smoothing beta must be >= 0, got {self.beta}")

    @classmethod
    def from_argument(cls, smooth: object) -> Optional["OneEuroSettings"]:
        """predict's `smooth`: False/None (off), True (defaults), a dict of
        these fields, or an OneEuroSettings."""
        if smooth is None or smooth is False:
            return None
        if smooth is True:
            return cls()
        if isinstance(smooth, cls):
            return smooth
        if isinstance(smooth, dict):
            unknown = sorted(set(smooth) - {"min_cutoff", "beta", "d_cutoff"})
            if unknown:
                raise ConfigError(f"unknown smoothing parameter(s) {', '.join(map(str, unknown))}: use min_cutoff, beta, d_cutoff")
            return cls(**smooth)
        raise ConfigError(f"smooth must be True, False or a dict of min_cutoff, beta, d_cutoff, got {smooth!r}")


def smoothing_factor(dt: float, cutoff: np.ndarray) -> np.ndarray:
    """The exponential smoothing weight of a first-order low-pass with this
    cutoff (Hz) for a sample `dt` seconds after the previous one."""
    tau = 1.0 / (2.0 * math.pi * cutoff)
    return 1.0 / (1.0 + tau / dt)


class OneEuroFilter:
    """One-Euro filter over points: x is [..., D] (D coordinates per point);
    all coordinates of a point share the cutoff, driven by the point's speed."""

    def __init__(self, settings: OneEuroSettings):
        self.settings = settings
        self._x: Optional[np.ndarray] = None
        self._dx: Optional[np.ndarray] = None
        self._t = 0.0

    def __call__(self, x: np.ndarray, t: float, scale: float = 1.0) -> np.ndarray:
        """The filtered value of sample x taken at time t (seconds). Speed is
        divided by `scale` before it raises the cutoff."""
        x = np.asarray(x, dtype=np.float64)
        if self._x is None:
            self._x, self._dx, self._t = x.copy(), np.zeros_like(x), t
            return x.copy()
        dt = t - self._t
        if dt <= 0:  # a repeated or out-of-order timestamp: nothing new to filter
            return self._x.copy()
        s = self.settings
        a_d = smoothing_factor(dt, np.float64(s.d_cutoff))
        dx = a_d * (x - self._x) / dt + (1.0 - a_d) * self._dx
        speed = np.linalg.norm(dx, axis=-1, keepdims=True) / max(float(scale), 1e-6)
        a = smoothing_factor(dt, s.min_cutoff + s.beta * speed)
        self._x = a * x + (1.0 - a) * self._x
        self._dx, self._t = dx, t
        return self._x.copy()


class PoseSmoother:
    """One filter per track over its joints' (x, y); scores pass unchanged."""

    def __init__(self, settings: OneEuroSettings):
        self.settings = settings
        self._filters: Dict[int, OneEuroFilter] = {}

    def __call__(self, track_id: int, keypoints: np.ndarray, t: float, scale: float) -> np.ndarray:
        """keypoints [K,3] (x, y, score) of one person -> smoothed copy, float32.
        scale: the person's size in pixels (its box height)."""
        flt = self._filters.get(track_id)
        if flt is None:
            flt = self._filters[track_id] = OneEuroFilter(self.settings)
        out = np.array(keypoints, dtype=np.float32, copy=True)
        out[:, :2] = flt(out[:, :2], t, scale)
        return out

    def keep_only(self, track_ids: Iterable[int]) -> None:
        """Forget the filters of tracks that ended, so memory stays bounded."""
        alive = set(track_ids)
        for track_id in [k for k in self._filters if k not in alive]:
            del self._filters[track_id]
