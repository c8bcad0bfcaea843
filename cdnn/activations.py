"""Activation functions by name, as Keras 3's ``keras.activations``.

The C core applies them fused with the Dense layer's product; the NumPy
functions here serve direct calls such as ``cdnn.activations.relu(x)``.
"""
from __future__ import annotations

import math
from typing import Callable, Union

import numpy as np

from cdnn._errors import unknown

__all__ = ["linear", "relu", "sigmoid", "tanh", "softmax", "leaky_relu", "gelu", "get", "serialize"]


def linear(x: np.ndarray) -> np.ndarray:
    """Identity."""
    return np.asarray(x)


def relu(x: np.ndarray) -> np.ndarray:
    """``max(x, 0)``."""
    return np.maximum(x, 0)


def sigmoid(x: np.ndarray) -> np.ndarray:
    """``1 / (1 + exp(-x))``, stable for large |x|."""
    x = np.asarray(x)
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e))


def tanh(x: np.ndarray) -> np.ndarray:
    """Hyperbolic tangent."""
    return np.tanh(x)


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """``exp(x) / sum(exp(x))`` along ``axis``, stable."""
    e = np.exp(x - np.max(x, axis=axis, keepdims=True))
    return e / np.sum(e, axis=axis, keepdims=True)


def leaky_relu(x: np.ndarray, negative_slope: float = 0.2) -> np.ndarray:
    """``x`` where ``x >= 0``, else ``negative_slope * x`` (Keras 3's default slope is 0.2)."""
    return np.where(np.asarray(x) >= 0, x, negative_slope * np.asarray(x))


def gelu(x: np.ndarray, approximate: bool = False) -> np.ndarray:
    """Gaussian error linear unit, exact (erf) form as Keras 3's default."""
    x = np.asarray(x, dtype=np.float64)
    if approximate:
        return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))
    # 1 + erf(x/sqrt 2) as erfc(-x/sqrt 2): keeps its relative precision for x << 0
    return 0.5 * x * np.vectorize(math.erfc, otypes=[np.float64])(-x / math.sqrt(2))


_BY_NAME: dict[str, Callable] = {
    "linear": linear, "relu": relu, "sigmoid": sigmoid, "tanh": tanh,
    "softmax": softmax, "leaky_relu": leaky_relu, "gelu": gelu,
}

Activation = Union[str, Callable, None]


def get(identifier: Activation) -> Callable:
    """The activation function for a name, one of this module's functions, or None (linear)."""
    if identifier is None:
        return linear
    if isinstance(identifier, str):
        try:
            return _BY_NAME[identifier]
        except KeyError:
            raise unknown("activation function", identifier, _BY_NAME) from None
    if callable(identifier) and _BY_NAME.get(getattr(identifier, "__name__", "")) is identifier:
        return identifier
    raise ValueError(
        f"Could not interpret activation function identifier: {identifier!r}. cdnn runs activations in C: "
        f"expected one of the names {', '.join(sorted(_BY_NAME))} or the matching cdnn.activations function"
    )


def serialize(fn: Callable) -> str:
    """The name of an activation function."""
    return fn.__name__
