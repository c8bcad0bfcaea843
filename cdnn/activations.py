"""Activation functions by name, as Keras 3's ``keras.activations``.

The C core applies them fused with the Dense layer's product. Direct calls
such as ``cdnn.activations.elu(x)`` run the same vectorized C code on a
float32 copy (the first seven, older, in NumPy, except ``relu`` with Keras'
``negative_slope``/``max_value``/``threshold``, which runs in C as the
``ReLU`` layer does). A Dense layer takes activations by name, with their
defaults.
"""

from __future__ import annotations

import math
from typing import Callable, Optional, Union

import numpy as np

from cdnn import _core
from cdnn._errors import unknown

__all__ = [
    "linear",
    "relu",
    "sigmoid",
    "tanh",
    "softmax",
    "leaky_relu",
    "gelu",
    "elu",
    "selu",
    "silu",
    "swish",
    "softplus",
    "softsign",
    "hard_sigmoid",
    "hard_silu",
    "hard_swish",
    "mish",
    "relu6",
    "exponential",
    "log_softmax",
    "get",
    "serialize",
]


def linear(x: np.ndarray) -> np.ndarray:
    """Identity."""
    return np.asarray(x)


def relu(
    x: np.ndarray, negative_slope: float = 0.0, max_value: Optional[float] = None, threshold: float = 0.0
) -> np.ndarray:
    """``max(x, 0)``; with Keras' options: ``x`` above ``threshold`` (clipped to ``[0, max_value]``),
    minus ``negative_slope * (threshold - x)`` below it. With options it runs in the core (float32)."""
    if negative_slope == 0.0 and max_value is None and threshold == 0.0:
        return np.maximum(x, 0)
    if max_value is not None and max_value < 0:
        raise ValueError(
            f"Invalid value for argument `max_value`: expected a number >= 0, received max_value={max_value}"
        )
    if negative_slope < 0:
        raise ValueError(
            f"Invalid value for argument `negative_slope`: expected a number >= 0, "
            f"received negative_slope={negative_slope}"
        )
    spec = core_relu(negative_slope, max_value, threshold)
    name = spec.pop("activation")
    return _core_act(name, x, **spec)


def core_relu(negative_slope: float, max_value: Optional[float], threshold: float) -> dict:
    """The core's activation for Keras' ``relu(x, negative_slope, max_value, threshold)``.

    Returns ``activation`` (a core name) and its ``alpha``, ``max_value`` and ``threshold``:
    as Keras dispatches, plain ``relu``, ``relu6`` (``max_value == 6``, no threshold, no
    slope), ``leaky_relu`` (a slope alone), else the general ``relu_args``.
    """
    if threshold == 0 and max_value is None:
        if negative_slope == 0:
            return {"activation": "relu", "alpha": 0.0}
        return {"activation": "leaky_relu", "alpha": float(negative_slope)}
    if threshold == 0 and negative_slope == 0 and max_value == 6:
        return {"activation": "relu6", "alpha": 0.0}
    return {
        "activation": "relu_args",
        "alpha": float(negative_slope),
        "max_value": None if max_value is None else float(max_value),
        "threshold": float(threshold),
    }


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


def _core_act(name: str, x, alpha: float = 0.2, **relu_args) -> np.ndarray:
    a = np.asarray(x)
    if a.dtype.kind not in "biuf":
        raise TypeError(f"Invalid dtype for argument `x`: expected real numbers, received {a.dtype}")
    return _core.activation_forward(name, np.ascontiguousarray(a, dtype=np.float32), alpha, **relu_args)


def elu(x: np.ndarray, alpha: float = 1.0) -> np.ndarray:
    """``x`` for ``x > 0``, else ``alpha * (exp(x) - 1)``."""
    return _core_act("elu", x, alpha)


def selu(x: np.ndarray) -> np.ndarray:
    """``scale * elu(x, alpha)`` with Keras' constants (1.0507..., 1.6732...); use ``lecun_normal`` weights."""
    return _core_act("selu", x)


def silu(x: np.ndarray) -> np.ndarray:
    """``x * sigmoid(x)`` (swish)."""
    return _core_act("silu", x)


swish = silu


def softplus(x: np.ndarray) -> np.ndarray:
    """``log(exp(x) + 1)``, without overflow."""
    return _core_act("softplus", x)


def softsign(x: np.ndarray) -> np.ndarray:
    """``x / (abs(x) + 1)``."""
    return _core_act("softsign", x)


def hard_sigmoid(x: np.ndarray) -> np.ndarray:
    """Keras 3's ``relu6(x + 3) / 6``: 0 below -3, 1 above 3, linear between."""
    return _core_act("hard_sigmoid", x)


def hard_silu(x: np.ndarray) -> np.ndarray:
    """``x * hard_sigmoid(x)`` (hard swish)."""
    return _core_act("hard_silu", x)


hard_swish = hard_silu


def mish(x: np.ndarray) -> np.ndarray:
    """``x * tanh(softplus(x))``."""
    return _core_act("mish", x)


def relu6(x: np.ndarray) -> np.ndarray:
    """``min(max(x, 0), 6)``."""
    return _core_act("relu6", x)


def exponential(x: np.ndarray) -> np.ndarray:
    """``exp(x)``."""
    return _core_act("exponential", x)


def log_softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """``x - log(sum(exp(x)))`` over the last axis, stable."""
    if axis != -1:
        raise ValueError(
            f"Invalid value for argument `axis`: cdnn computes log_softmax over the last axis (-1), "
            f"received axis={axis}"
        )
    return _core_act("log_softmax", x)


_BY_NAME: dict[str, Callable] = {
    "linear": linear,
    "relu": relu,
    "sigmoid": sigmoid,
    "tanh": tanh,
    "softmax": softmax,
    "leaky_relu": leaky_relu,
    "gelu": gelu,
    "elu": elu,
    "selu": selu,
    "silu": silu,
    "swish": silu,
    "softplus": softplus,
    "softsign": softsign,
    "hard_sigmoid": hard_sigmoid,
    "hard_silu": hard_silu,
    "hard_swish": hard_silu,
    "mish": mish,
    "relu6": relu6,
    "exponential": exponential,
    "log_softmax": log_softmax,
}
#: the parameter the core takes with each activation (leaky_relu's slope, elu's alpha), as Keras' defaults
_CORE_ALPHA = {"leaky_relu": 0.2, "elu": 1.0}


def core_alpha(fn: Callable) -> float:
    """The core's ``alpha`` for an activation function of this module (its Keras default)."""
    return _CORE_ALPHA.get(fn.__name__, 0.2)


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
