"""Weight initialisers by name, with Keras 3's formulas, drawn from cdnn's global seed."""
from __future__ import annotations

import math

import numpy as np

from cdnn import _loading, _random
from cdnn._errors import unknown

__all__ = ["get", "NAMES"]


def _truncated_normal(rng: np.random.Generator, shape, stddev: float) -> np.ndarray:
    """Normal draws redrawn until within two standard deviations (as Keras' truncated normal)."""
    out = rng.standard_normal(shape)
    bad = np.abs(out) > 2
    while bad.any():
        out[bad] = rng.standard_normal(int(bad.sum()))
        bad = np.abs(out) > 2
    return out * stddev


def _variance_scaling(scale: float, mode: str, distribution: str):
    def init(shape: tuple, rng: np.random.Generator) -> np.ndarray:
        fan_in, fan_out = (shape[0], shape[1]) if len(shape) == 2 else (shape[0], shape[0])
        n = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2}[mode]
        s = scale / max(1.0, n)
        if distribution == "uniform":
            limit = math.sqrt(3.0 * s)
            return rng.uniform(-limit, limit, shape)
        # Keras' truncated normal: stddev corrected by the truncation's variance (0.8796...)
        return _truncated_normal(rng, shape, math.sqrt(s) / 0.87962566103423978)

    return init


NAMES = {
    "glorot_uniform": _variance_scaling(1.0, "fan_avg", "uniform"),
    "glorot_normal": _variance_scaling(1.0, "fan_avg", "normal"),
    "he_uniform": _variance_scaling(2.0, "fan_in", "uniform"),
    "he_normal": _variance_scaling(2.0, "fan_in", "normal"),
    "lecun_uniform": _variance_scaling(1.0, "fan_in", "uniform"),
    "lecun_normal": _variance_scaling(1.0, "fan_in", "normal"),
    "zeros": lambda shape, rng: np.zeros(shape),
    "ones": lambda shape, rng: np.ones(shape),
    "random_uniform": lambda shape, rng: rng.uniform(-0.05, 0.05, shape),
    "random_normal": lambda shape, rng: rng.normal(0.0, 0.05, shape),
}


def get(identifier: str):
    """The initialiser ``f(shape) -> float32 array`` for a Keras name."""
    if not isinstance(identifier, str) or identifier not in NAMES:
        raise unknown("initializer", identifier, NAMES)
    fn = NAMES[identifier]

    def draw(shape: tuple) -> np.ndarray:
        _loading.charge(shape)  # a model file's architecture may not create more than the file holds
        return np.ascontiguousarray(fn(shape, _random.generator()), dtype=np.float32)

    return draw
