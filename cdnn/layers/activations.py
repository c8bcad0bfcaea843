"""Activation layers: ``Activation``, ``ReLU``, ``LeakyReLU``, ``Softmax``, ``ELU``, ``PReLU`` (one C pass each)."""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

from cdnn import activations as activations_module
from cdnn import constraints, initializers, regularizers
from cdnn._errors import invalid
from cdnn._naming import snake_case
from cdnn.layers.core import Layer, Shape, _aligned, _float_arg, register

__all__ = ["Activation", "ReLU", "LeakyReLU", "Softmax", "ELU", "PReLU"]


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


class ELU(Layer):
    """``x`` above zero, ``alpha * (exp(x) - 1)`` below (Keras' default ``alpha=1.0``)."""

    def __init__(self, alpha: float = 1.0, name: Optional[str] = None, **kwargs) -> None:
        super().__init__(name=name, **kwargs)
        self.alpha = _float_arg(alpha, "alpha")

    def get_config(self) -> dict:
        return {**super().get_config(), "alpha": self.alpha}

    def _lower(self, input_shapes: list, training) -> dict:
        return {"op": "activation", "activation": "elu", "alpha": self.alpha}


class PReLU(Layer):
    """``x`` above zero, ``alpha * x`` below, with a trained ``alpha`` per value of a sample (one per
    unit on 2-D input), shared over the axes ``shared_axes`` (1-based, as Keras)."""

    def __init__(
        self,
        alpha_initializer="Zeros",
        alpha_regularizer=None,
        alpha_constraint=None,
        shared_axes=None,
        name: Optional[str] = None,
        **kwargs,
    ) -> None:
        super().__init__(name=name, **kwargs)
        initializers.get(alpha_initializer)
        self.alpha_initializer = (
            snake_case(alpha_initializer) if isinstance(alpha_initializer, str) else alpha_initializer
        )
        self.alpha_regularizer = regularizers.get(alpha_regularizer)
        self.alpha_constraint = constraints.get(alpha_constraint)
        axes = (
            None
            if shared_axes is None
            else list(shared_axes)
            if isinstance(shared_axes, (list, tuple))
            else [shared_axes]
        )
        if axes is not None and not all(isinstance(a, (int, np.integer)) and not isinstance(a, bool) for a in axes):
            raise invalid("shared_axes", shared_axes, "None or a list of axis numbers (1 = the first after the batch)")
        self.shared_axes = None if axes is None else [int(a) for a in axes]
        self.alpha: Any = None
        self._rules()

    def _alpha_shape(self, input_shape: Shape) -> tuple:
        shape = [int(d) for d in input_shape]
        for a in self.shared_axes or []:
            if not 1 <= a <= len(shape):
                raise ValueError(f"PReLU {self.name!r}: shared axis {a} is not an axis of inputs {(None, *shape)}")
            shape[a - 1] = 1
        middle, full = shape[:-1], [int(d) for d in input_shape[:-1]]
        if any(d != 1 for d in middle) and middle != full:
            raise NotImplementedError(
                f"PReLU {self.name!r}: shared_axes={self.shared_axes} on inputs {(None, *input_shape)}: cdnn shares "
                f"alpha over all the axes between the batch and the last one, or none of them"
            )
        return tuple(shape)

    def build(self, input_shape: Shape) -> None:
        shape = self._alpha_shape(input_shape)
        self.alpha = _aligned(initializers.get(self.alpha_initializer)(shape))
        if self.alpha.ndim > 2 and self._rules().get("axis") is not None:
            raise NotImplementedError(f"PReLU {self.name!r}: a norm constraint on an alpha of shape {shape}")
        super().build(input_shape)

    def _check_call_shape(self, input_shape) -> None:
        built: Any = self._build_input_shape
        if len(input_shape) != len(built) or self._alpha_shape(input_shape) != self.alpha.shape:
            raise self._incompatible(input_shape, f"inputs like {(None, *built)} (alpha has shape {self.alpha.shape})")

    @property
    def weights(self) -> list[np.ndarray]:
        return [self.alpha] if self.built else []

    def _rules(self) -> dict:
        r: dict = {}
        if self.alpha_regularizer is not None:
            r.update(self.alpha_regularizer._core())
            if r.get("orth_factor"):
                raise invalid("alpha_regularizer", "OrthogonalRegularizer", "L1, L2 or L1L2 (alpha is not a kernel)")
        if self.alpha_constraint is not None:
            r.update(self.alpha_constraint._core())
            if "axis" in r and (self.alpha is None or self.alpha.ndim == 1):
                r["axis"] = 0  # one vector: its norm is over all of it
        return r

    @property
    def losses(self) -> list[float]:
        """The regularization penalty at the current alpha (Keras' ``layer.losses``)."""
        ok = self.built and self.trainable and self.alpha_regularizer is not None
        return [self.alpha_regularizer(self.alpha)] if ok else []

    def _penalty(self) -> float:
        return float(sum(self.losses))

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "alpha_initializer": self.alpha_initializer,
            "alpha_regularizer": regularizers.serialize(self.alpha_regularizer) if self.alpha_regularizer else None,
            "alpha_constraint": constraints.serialize(self.alpha_constraint) if self.alpha_constraint else None,
            "shared_axes": self.shared_axes,
        }

    def _lower(self, input_shapes: list, training) -> dict:
        a = self.alpha.shape
        return {
            "op": "prelu",
            "gamma": self.alpha,
            "beta": None,
            "alpha_shape": (int(np.prod(a[:-1], dtype=np.int64)), a[-1]),
            "trainable": self.trainable,
            "gamma_rules": self._rules(),
        }


register(Activation, ReLU, LeakyReLU, Softmax, ELU, PReLU)
