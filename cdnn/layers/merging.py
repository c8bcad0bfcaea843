"""Merge layers: ``Concatenate`` (last axis) and the element-wise ``Add``, ``Subtract``, ``Multiply``,
``Average``, ``Maximum``, ``Minimum``, ``Dot`` (two 2-D inputs), with Keras' functional forms (``layers.add([a, b])``, ...)."""

from __future__ import annotations

from typing import Optional

from cdnn._errors import invalid
from cdnn.layers.core import Layer, Shape, register

__all__ = [
    "Concatenate",
    "Add",
    "Subtract",
    "Multiply",
    "Average",
    "Maximum",
    "Minimum",
    "Dot",
    "concatenate",
    "add",
    "subtract",
    "multiply",
    "average",
    "maximum",
    "minimum",
    "dot",
]


class _Merge(Layer):
    """A layer of two or more inputs of one shape, combined element by element."""

    _takes_list = True
    _op = ""
    _exact_inputs: Optional[int] = None

    def _check_count(self, shapes) -> None:
        if not isinstance(shapes, (list, tuple)) or not shapes or not isinstance(shapes[0], tuple):
            raise ValueError(
                f"A merge layer ({type(self).__name__} {self.name!r}) should be called on a list of "
                f"inputs, received {shapes!r}"
            )
        if self._exact_inputs and len(shapes) != self._exact_inputs:
            raise ValueError(
                f"A `{type(self).__name__}` layer ({self.name!r}) should be called on exactly "
                f"{self._exact_inputs} inputs, received {len(shapes)} inputs"
            )
        if len(shapes) < 2:
            raise ValueError(
                f"A merge layer ({type(self).__name__} {self.name!r}) should be called on a list of at "
                f"least 2 inputs, received {len(shapes)} input"
            )

    def compute_output_shape(self, input_shape) -> Shape:
        self._check_count(input_shape)
        if any(s != input_shape[0] for s in input_shape):
            raise ValueError(
                f"Inputs of layer {self.name!r} ({type(self).__name__}) must have the same shape: "
                f"received input shapes {[(None, *s) for s in input_shape]} (cdnn does not broadcast "
                f"merges)"
            )
        return tuple(input_shape[0])

    def build(self, input_shape) -> None:
        self.compute_output_shape(input_shape)
        super().build(input_shape)

    def _check_call_shape(self, input_shape) -> None:
        self.compute_output_shape(input_shape)

    def _lower(self, input_shapes: list, training) -> dict:
        return {"op": self._op}


class Add(_Merge):
    """Sum of the inputs."""

    _op = "add"


class Subtract(_Merge):
    """First input minus the second."""

    _op = "subtract"
    _exact_inputs = 2


class Multiply(_Merge):
    """Element-wise product of the inputs."""

    _op = "multiply"


class Average(_Merge):
    """Element-wise mean of the inputs."""

    _op = "average"


class Maximum(_Merge):
    """Element-wise maximum of the inputs."""

    _op = "maximum"


class Minimum(_Merge):
    """Element-wise minimum of the inputs."""

    _op = "minimum"


class Concatenate(_Merge):
    """Join the inputs along the last axis (``axis=-1``; other axes are not supported yet)."""

    _op = "concatenate"

    def __init__(self, axis: int = -1, name: Optional[str] = None, **kwargs) -> None:
        super().__init__(name=name, **kwargs)
        if axis != -1:
            raise invalid("axis", axis, "-1 (cdnn concatenates along the last axis)")
        self.axis = -1

    def compute_output_shape(self, input_shape) -> Shape:
        self._check_count(input_shape)
        if any(len(s) != len(input_shape[0]) or s[:-1] != input_shape[0][:-1] for s in input_shape):
            raise ValueError(
                f"A `Concatenate` layer ({self.name!r}) requires inputs with matching shapes except for "
                f"the concatenation axis -1. Received: input_shape={[(None, *s) for s in input_shape]}"
            )
        return (*input_shape[0][:-1], sum(s[-1] for s in input_shape))

    def get_config(self) -> dict:
        return {**super().get_config(), "axis": self.axis}


class Dot(_Merge):
    """``(batch, 1)``: the dot product of two ``(batch, n)`` inputs (``normalize``: of their L2-normalized forms)."""

    _exact_inputs = 2

    def __init__(self, axes, normalize: bool = False, name: Optional[str] = None, **kwargs) -> None:
        super().__init__(name=name, **kwargs)
        pair, bad = isinstance(axes, (list, tuple)), "Invalid format for argument `axes`: "
        if not pair and type(axes) is not int:
            raise TypeError(f"Invalid type for argument `axes`: it should be a list or an int. Received: axes={axes}")
        if pair and len(axes) != 2:
            raise ValueError(f"{bad}it should contain two elements. Received: axes={axes}")
        if pair and not all(type(a) is int for a in axes):
            raise ValueError(f"{bad}list elements should be integers. Received: axes={axes}")
        self.axes, self.normalize = axes, bool(normalize)

    def compute_output_shape(self, input_shape) -> Shape:
        self._check_count(input_shape)
        s0, s1 = input_shape
        where = f"Layer {self.name!r} (Dot) on input shapes {[(None, *s) for s in input_shape]}"
        axes = self.axes if isinstance(self.axes, (list, tuple)) else [self.axes] * 2
        if len(s0) != 1 or len(s1) != 1:
            raise ValueError(f"{where}: cdnn supports Dot on two 2-D inputs (batch, features) only")
        if any(a in (0, -2) for a in axes):
            raise ValueError(f"{where}: Cannot perform batch_dot over axis 0 (axes={self.axes})")
        if any(a not in (1, -1) for a in axes):
            raise ValueError(f"{where}: axes={self.axes} is out of range for inputs of rank 2")
        if s0 != s1:
            raise ValueError(
                f"{where}: Incompatible input shapes: axis values {s0[0]} (at axis 1) != {s1[0]} (at axis 1)"
            )
        return (1,)

    def get_config(self) -> dict:
        return {**super().get_config(), "axes": self.axes, "normalize": self.normalize}

    def _lower(self, input_shapes: list, training) -> dict:
        return {"op": "dot", "epsilon": 1e-7 if self.normalize else 0.0}


def _functional(cls, inputs, kwargs):
    return cls(**kwargs)(inputs)


def concatenate(inputs, axis: int = -1, **kwargs):
    """``Concatenate(axis=axis, **kwargs)(inputs)``."""
    return Concatenate(axis=axis, **kwargs)(inputs)


def add(inputs, **kwargs):
    """``Add(**kwargs)(inputs)``."""
    return _functional(Add, inputs, kwargs)


def subtract(inputs, **kwargs):
    """``Subtract(**kwargs)(inputs)``."""
    return _functional(Subtract, inputs, kwargs)


def multiply(inputs, **kwargs):
    """``Multiply(**kwargs)(inputs)``."""
    return _functional(Multiply, inputs, kwargs)


def average(inputs, **kwargs):
    """``Average(**kwargs)(inputs)``."""
    return _functional(Average, inputs, kwargs)


def maximum(inputs, **kwargs):
    """``Maximum(**kwargs)(inputs)``."""
    return _functional(Maximum, inputs, kwargs)


def minimum(inputs, **kwargs):
    """``Minimum(**kwargs)(inputs)``."""
    return _functional(Minimum, inputs, kwargs)


def dot(inputs, axes=-1, normalize: bool = False, **kwargs):
    """``Dot(axes=axes, normalize=normalize, **kwargs)(inputs)``."""
    return Dot(axes=axes, normalize=normalize, **kwargs)(inputs)


register(Add, Subtract, Multiply, Average, Maximum, Minimum, Concatenate, Dot)
