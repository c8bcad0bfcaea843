"""Reshaping layers: ``Flatten`` and ``Reshape`` (memory no-ops in the C core)."""

from __future__ import annotations

import math
from typing import Optional

from cdnn._errors import invalid
from cdnn.layers.core import Layer, Shape, register

__all__ = ["Flatten", "Reshape"]


class Flatten(Layer):
    """Reshape each sample to one dimension: ``(None, 28, 28)`` -> ``(None, 784)``."""

    def __init__(self, data_format=None, **kwargs) -> None:
        if data_format not in (None, "channels_last"):
            raise ValueError(
                f"Flatten: argument `data_format`={data_format!r} is not supported by cdnn (only 'channels_last')"
            )
        super().__init__(**kwargs)

    def compute_output_shape(self, input_shape: Shape) -> Shape:
        return (int(math.prod(input_shape)),)

    def _lower(self, input_shapes: list, training) -> dict:
        return {"op": "reshape"}


class Reshape(Layer):
    """Reshape each sample to ``target_shape`` (one entry may be -1: inferred)."""

    def __init__(self, target_shape, name: Optional[str] = None, **kwargs) -> None:
        if isinstance(target_shape, int):
            target_shape = (target_shape,)
        if (
            not isinstance(target_shape, (tuple, list))
            or not target_shape
            or not all(isinstance(d, int) and not isinstance(d, bool) and (d > 0 or d == -1) for d in target_shape)
            or list(target_shape).count(-1) > 1
        ):
            raise invalid("target_shape", target_shape, "a tuple of positive integers, at most one of them -1")
        super().__init__(name=name, **kwargs)
        self.target_shape = tuple(target_shape)

    def compute_output_shape(self, input_shape: Shape) -> Shape:
        total = math.prod(input_shape)
        known = math.prod(d for d in self.target_shape if d != -1)
        if -1 in self.target_shape:
            if total % known:
                raise ValueError(
                    f"Reshape layer {self.name!r}: cannot reshape inputs of shape {(None, *input_shape)} "
                    f"into {(None, *self.target_shape)}: {total} is not a multiple of {known}"
                )
            return tuple(total // known if d == -1 else d for d in self.target_shape)
        if known != total:
            raise ValueError(
                f"Reshape layer {self.name!r}: total size of the new array must be unchanged, "
                f"input_shape = {list(input_shape)}, output_shape = {list(self.target_shape)}"
            )
        return self.target_shape

    def get_config(self) -> dict:
        return {**super().get_config(), "target_shape": list(self.target_shape)}

    def _lower(self, input_shapes: list, training) -> dict:
        return {"op": "reshape"}


register(Flatten, Reshape)
