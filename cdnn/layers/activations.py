"""Activation layers: ``Activation``, ``ReLU``, ``LeakyReLU``, ``Softmax`` (one C pass each)."""

from __future__ import annotations

from typing import Optional

from cdnn import activations as activations_module
from cdnn._errors import invalid
from cdnn.layers.core import Layer, _float_arg, register

__all__ = ["Activation", "ReLU", "LeakyReLU", "Softmax"]


class Activation(Layer):
    """Apply an activation function by name (``"relu"``, ``"softmax"``, ...)."""

    def __init__(self, activation, name: Optional[str] = None, **kwargs) -> None:
        super().__init__(name=name, **kwargs)
        self.activation = activations_module.get(activation)

    def get_config(self) -> dict:
        return {**super().get_config(), "activation": activations_module.serialize(self.activation)}

    def _lower(self, input_shapes: list, training) -> dict:
        return {
            "op": "activation",
            "activation": activations_module.serialize(self.activation),
            "alpha": activations_module.core_alpha(self.activation),
        }


class ReLU(Layer):
    """Keras' ``relu``: ``x`` above ``threshold``, clipped at ``max_value``, ``negative_slope * (x - threshold)``
    below ``threshold`` (all ``>= 0``; ``max_value=None``: no clipping)."""

    def __init__(
        self, max_value=None, negative_slope: float = 0.0, threshold: float = 0.0, name: Optional[str] = None, **kwargs
    ) -> None:
        super().__init__(name=name, **kwargs)
        inf = float("inf")
        self.max_value = None if max_value is None else _float_arg(max_value, "max_value", 0.0, inf, "None or >= 0")
        self.negative_slope = _float_arg(negative_slope, "negative_slope", 0.0, inf, "a non-negative number")
        self.threshold = _float_arg(threshold, "threshold", 0.0, inf, "a non-negative number")

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "max_value": self.max_value,
            "negative_slope": self.negative_slope,
            "threshold": self.threshold,
        }

    def _lower(self, input_shapes: list, training) -> dict:
        return {"op": "activation", **activations_module.core_relu(self.negative_slope, self.max_value, self.threshold)}


class LeakyReLU(Layer):
    """``x`` above zero, ``negative_slope * x`` below (Keras 3's default slope: 0.3)."""

    def __init__(self, negative_slope: float = 0.3, name: Optional[str] = None, **kwargs) -> None:
        if "alpha" in kwargs:  # Keras 2's name, which Keras 3 still accepts with a warning
            negative_slope = kwargs.pop("alpha")
        super().__init__(name=name, **kwargs)
        self.negative_slope = _float_arg(negative_slope, "negative_slope", 0.0, float("inf"), "a non-negative number")

    def get_config(self) -> dict:
        return {**super().get_config(), "negative_slope": self.negative_slope}

    def _lower(self, input_shapes: list, training) -> dict:
        return {"op": "activation", "activation": "leaky_relu", "alpha": self.negative_slope}


class Softmax(Layer):
    """Softmax over the last axis."""

    def __init__(self, axis: int = -1, name: Optional[str] = None, **kwargs) -> None:
        super().__init__(name=name, **kwargs)
        if axis != -1:
            raise invalid("axis", axis, "-1 (cdnn's Softmax works on the last axis)")
        self.axis = -1

    def get_config(self) -> dict:
        return {**super().get_config(), "axis": self.axis}

    def _lower(self, input_shapes: list, training) -> dict:
        return {"op": "activation", "activation": "softmax", "alpha": 0.0}


register(Activation, ReLU, LeakyReLU, Softmax)
