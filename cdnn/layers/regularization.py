"""Regularization layers: ``Dropout`` and ``GaussianNoise`` (active in training only)."""

from __future__ import annotations

from typing import Optional

import numpy as np

from cdnn._errors import invalid
from cdnn.layers.core import Layer, _float_arg, register

__all__ = ["Dropout", "GaussianNoise"]


class Dropout(Layer):
    """Zero a fraction ``rate`` of the inputs while training, scaling the rest by ``1/(1-rate)``."""

    def __init__(self, rate: float, noise_shape=None, seed=None, name: Optional[str] = None, **kwargs) -> None:
        if isinstance(rate, bool) or not isinstance(rate, (int, float, np.floating)) or not 0 <= rate < 1:
            raise invalid("rate", rate, "a number in [0, 1)")
        if noise_shape is not None:
            raise ValueError("Invalid value for argument `noise_shape`: cdnn's Dropout supports only None")
        super().__init__(name=name, **kwargs)
        self.rate = float(rate)
        self.seed = seed

    def get_config(self) -> dict:
        return {**super().get_config(), "rate": self.rate}

    def _lower(self, input_shapes: list, training) -> dict:
        if not training or self.rate == 0:
            return {"op": "reshape"}  # Keras: dropout(x, training=False) is the identity
        return {"op": "dropout", "rate": self.rate}


class GaussianNoise(Layer):
    """Add zero-mean Gaussian noise of standard deviation ``stddev`` while training."""

    def __init__(self, stddev: float, seed=None, name: Optional[str] = None, **kwargs) -> None:
        super().__init__(name=name, **kwargs)
        self.stddev = _float_arg(stddev, "stddev", 0.0, np.inf, "a non-negative number")
        self.seed = seed

    def get_config(self) -> dict:
        return {**super().get_config(), "stddev": self.stddev, "seed": self.seed}

    def _lower(self, input_shapes: list, training) -> dict:
        if not training or self.stddev == 0:
            return {"op": "reshape"}
        return {"op": "gaussian_noise", "stddev": self.stddev}


register(Dropout, GaussianNoise)
