"""Regularization layers: ``Dropout``, ``GaussianNoise``, ``GaussianDropout``, ``AlphaDropout`` (active in
training only) and ``ActivityRegularization``."""

from __future__ import annotations

from typing import Optional

import numpy as np

from cdnn import regularizers
from cdnn._errors import invalid
from cdnn.layers.core import Layer, _float_arg, register

__all__ = ["Dropout", "GaussianNoise", "GaussianDropout", "AlphaDropout", "ActivityRegularization"]


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


class _RateNoise(Layer):
    """A noise layer of a ``rate`` in [0, 1) and a ``seed``."""

    def __init__(self, rate: float, seed=None, name: Optional[str] = None, **kwargs) -> None:
        super().__init__(name=name, **kwargs)
        self.rate = _float_arg(rate, "rate", 0.0, 1.0, "a number in [0, 1)")
        if self.rate == 1:  # Keras: a standard deviation of infinity, every output NaN
            raise invalid("rate", rate, "a number in [0, 1)")
        self.seed = seed

    def get_config(self) -> dict:
        return {**super().get_config(), "rate": self.rate, "seed": self.seed}


class GaussianDropout(_RateNoise):
    """Multiply the inputs by noise from N(1, rate / (1 - rate)) while training."""

    def _lower(self, input_shapes: list, training) -> dict:
        if training is False or self.rate == 0:
            return {"op": "reshape"}
        return {"op": "gaussian_dropout", "stddev": float(np.sqrt(self.rate / (1.0 - self.rate)))}


class AlphaDropout(_RateNoise):
    """Keras' alpha dropout while training: a fraction ``rate`` set to SELU's negative saturation, then an
    affine map that keeps the mean and variance (for SELU networks)."""

    def __init__(self, rate: float, noise_shape=None, seed=None, name: Optional[str] = None, **kwargs) -> None:
        if noise_shape is not None:
            raise ValueError("Invalid value for argument `noise_shape`: cdnn's AlphaDropout supports only None")
        super().__init__(rate, seed=seed, name=name, **kwargs)

    def get_config(self) -> dict:
        return {**super().get_config(), "noise_shape": None}

    def _lower(self, input_shapes: list, training) -> dict:
        if training is False or self.rate == 0:
            return {"op": "reshape"}
        return {"op": "alpha_dropout", "rate": self.rate}


class ActivityRegularization(Layer):
    """The identity, adding ``l1 * sum(|x|) + l2 * sum(x**2)`` (divided by the batch size) to the loss."""

    def __init__(self, l1: float = 0.0, l2: float = 0.0, name: Optional[str] = None, **kwargs) -> None:
        self.l1 = _float_arg(l1, "l1", 0.0, np.inf, "a non-negative number")
        self.l2 = _float_arg(l2, "l2", 0.0, np.inf, "a non-negative number")
        kwargs["activity_regularizer"] = regularizers.L1L2(l1=self.l1, l2=self.l2)
        super().__init__(name=name, **kwargs)

    def get_config(self) -> dict:
        cfg = super().get_config()
        cfg.pop("activity_regularizer", None)
        return {**cfg, "l1": self.l1, "l2": self.l2}

    def _lower(self, input_shapes: list, training) -> dict:
        return {"op": "reshape"}


register(Dropout, GaussianNoise, GaussianDropout, AlphaDropout, ActivityRegularization)
