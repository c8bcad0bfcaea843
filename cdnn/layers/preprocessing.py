"""Preprocessing layers: ``Rescaling`` and ``Normalization`` (an affine map ``x * scale + offset`` in C)."""

from __future__ import annotations

from typing import Optional

import numpy as np

from cdnn._errors import invalid
from cdnn.layers.core import Layer, Shape, _float_arg, register

__all__ = ["Rescaling", "Normalization"]

#: Keras' backend.epsilon(): the smallest standard deviation Normalization divides by
_EPSILON = 1e-7


class Rescaling(Layer):
    """``x * scale + offset`` (e.g. ``Rescaling(1 / 255)`` for pixel values)."""

    def __init__(self, scale, offset=0.0, name: Optional[str] = None, **kwargs) -> None:
        super().__init__(name=name, **kwargs)
        self.scale = _float_arg(scale, "scale")
        self.offset = _float_arg(offset, "offset")

    def get_config(self) -> dict:
        return {**super().get_config(), "scale": self.scale, "offset": self.offset}

    def _lower(self, input_shapes: list, training) -> dict:
        return {
            "op": "affine",
            "scale": np.array([self.scale], np.float32),
            "offset": np.array([self.offset], np.float32),
        }


class Normalization(Layer):
    """``(x - mean) / max(sqrt(variance), 1e-7)`` per feature of the last axis; ``invert=True`` undoes it.

    ``mean``/``variance`` given, or learnt from data by :meth:`adapt`
    (then stored as the layer's non-trainable weights mean, variance, count, as Keras).
    """

    def __init__(
        self, axis=-1, mean=None, variance=None, invert: bool = False, name: Optional[str] = None, **kwargs
    ) -> None:
        super().__init__(name=name, **kwargs)
        if axis not in (-1, (-1,), [-1]):
            raise invalid("axis", axis, "-1 (cdnn's Normalization works per feature of the last axis)")
        if (mean is None) != (variance is None):
            raise ValueError(
                f"Normalization: set both `mean` and `variance`, or neither; received mean={mean!r}, "
                f"variance={variance!r}"
            )
        self.axis = -1
        self.invert = bool(invert)
        self.input_mean = None if mean is None else np.asarray(mean, np.float32).reshape(-1)
        self.input_variance = None if variance is None else np.asarray(variance, np.float32).reshape(-1)
        if self.input_mean is not None and (
            self.input_mean.shape != self.input_variance.shape
            or not np.isfinite(self.input_mean).all()
            or not np.isfinite(self.input_variance).all()
            or (self.input_variance < 0).any()
        ):
            raise ValueError(
                f"Normalization: `mean` and `variance` must be finite, of the same length, variance >= 0;"
                f" received mean={mean!r}, variance={variance!r}"
            )
        self.adapt_mean = self.adapt_variance = self.count = None

    def build(self, input_shape: Shape) -> None:
        width = int(input_shape[-1])
        if self.input_mean is not None:
            if self.input_mean.size not in (1, width):
                raise ValueError(
                    f"Normalization layer {self.name!r}: `mean` has {self.input_mean.size} values, "
                    f"expected 1 or {width} (the last axis of inputs of shape {(None, *input_shape)})"
                )
        else:
            self.adapt_mean = np.zeros(width, np.float32)
            self.adapt_variance = np.ones(width, np.float32)
            self.count = np.zeros((), np.float32)
        super().build(input_shape)

    def _check_call_shape(self, input_shape) -> None:
        width = self._build_input_shape[-1]
        if input_shape[-1] != width:
            raise self._incompatible(input_shape, f"axis -1 of input shape to have value {width}")

    def adapt(self, data) -> None:
        """Compute the mean and variance of each feature (the last axis) of ``data``."""
        a = np.asarray(data)
        if a.dtype.kind not in "biuf" or a.ndim < 1 or a.size == 0:
            raise invalid("data", type(data).__name__, "a non-empty array of numbers")
        a = a.reshape(a.shape[0], -1) if a.ndim == 1 else a
        if not self.built:
            self.build(a.shape[1:])
        elif self.input_mean is not None:
            raise ValueError(
                f"Normalization layer {self.name!r} was given `mean` and `variance`: adapt() would overwrite them"
            )
        rows = a.reshape(-1, a.shape[-1]).astype(np.float64)
        if not np.isfinite(rows).all():
            raise ValueError("Invalid values in `data` of adapt(): it contains NaN or infinity")
        if rows.shape[1] != self.adapt_mean.shape[0]:
            raise self._incompatible(a.shape[1:], f"axis -1 of input shape to have value {self.adapt_mean.shape[0]}")
        self.adapt_mean[...] = rows.mean(axis=0)
        self.adapt_variance[...] = rows.var(axis=0)
        self.count[...] = rows.shape[0]

    @property
    def weights(self) -> list[np.ndarray]:
        return [self.adapt_mean, self.adapt_variance, self.count] if self.adapt_mean is not None else []

    def _trainable_weight_list(self) -> list[np.ndarray]:
        return []

    def _non_trainable_weight_list(self) -> list[np.ndarray]:
        return self.weights

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "axis": self.axis,
            "invert": self.invert,
            "mean": None if self.input_mean is None else self.input_mean.tolist(),
            "variance": None if self.input_variance is None else self.input_variance.tolist(),
        }

    def _scale_offset(self) -> tuple:
        mean = self.input_mean if self.input_mean is not None else self.adapt_mean
        var = self.input_variance if self.input_variance is not None else self.adapt_variance
        std = np.maximum(np.sqrt(var.astype(np.float64)), _EPSILON)
        if self.invert:
            return std.astype(np.float32), mean.astype(np.float32)
        return (1.0 / std).astype(np.float32), (-mean / std).astype(np.float32)

    def _lower(self, input_shapes: list, training) -> dict:
        scale, offset = self._scale_offset()
        return {"op": "affine", "scale": scale, "offset": offset}


register(Rescaling, Normalization)
