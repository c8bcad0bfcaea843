"""Weight regularizers with Keras 3's formulas (keras/src/regularizers/regularizers.py).

As a Dense layer's ``kernel_regularizer``/``bias_regularizer`` the penalty's
gradient joins the loss's in the C training step, and the penalty at the
weights before the step is added to the batch's loss as Keras reports it
(``loss`` in the logs and the progress bar includes ``sum(model.losses)``).
"""

from __future__ import annotations

import math

import numpy as np

from cdnn._errors import unknown

__all__ = [
    "Regularizer",
    "L1",
    "L2",
    "L1L2",
    "OrthogonalRegularizer",
    "l1",
    "l2",
    "l1_l2",
    "orthogonal_regularizer",
    "get",
    "serialize",
    "deserialize",
]


def _penalty_arg(value, name: str) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, (float, int, np.floating, np.integer))
        or not math.isfinite(value)
        or value < 0
    ):
        raise ValueError(f"Invalid value for argument {name}: expected a non-negative float. Received: {name}={value}")
    return float(value)


class Regularizer:
    """Base class: ``regularizer(w)`` is the penalty of weights ``w``."""

    def __call__(self, x) -> float:
        return 0.0

    def get_config(self) -> dict:
        raise NotImplementedError(f"{type(self).__name__} does not implement get_config()")

    @classmethod
    def from_config(cls, config: dict) -> Regularizer:
        return cls(**config)

    def _core(self) -> dict:
        """The L1/L2 strengths the C core applies (a user subclass cannot run inside the C step)."""
        raise ValueError(
            f"cdnn trains in C and cannot call the regularizer {type(self).__name__} inside a "
            f"training step: use keras.regularizers.L1, L2, L1L2 or OrthogonalRegularizer"
        )


class L1L2(Regularizer):
    """``l1 * sum(|w|) + l2 * sum(w**2)``."""

    def __init__(self, l1: float = 0.0, l2: float = 0.0) -> None:
        self.l1 = _penalty_arg(0.0 if l1 is None else l1, "l1")
        self.l2 = _penalty_arg(0.0 if l2 is None else l2, "l2")

    def __call__(self, x) -> float:
        x = np.asarray(x, np.float64)
        return float(self.l1 * np.abs(x).sum() + self.l2 * np.square(x).sum())

    def get_config(self) -> dict:
        return {"l1": self.l1, "l2": self.l2}

    def _core(self) -> dict:
        return {"l1": self.l1, "l2": self.l2}


class L1(L1L2):
    """``l1 * sum(|w|)``."""

    def __init__(self, l1: float = 0.01) -> None:
        super().__init__(l1=l1)

    def get_config(self) -> dict:
        return {"l1": self.l1}


class L2(L1L2):
    """``l2 * sum(w**2)``."""

    def __init__(self, l2: float = 0.01) -> None:
        super().__init__(l2=l2)

    def get_config(self) -> dict:
        return {"l2": self.l2}


class OrthogonalRegularizer(Regularizer):
    """``factor * 0.5 * sum(|off-diagonal of N N^T|) / (size (size - 1) / 2)``, N the L2-normalized rows
    (``mode="rows"``) or columns of the kernel.

    As a Dense ``kernel_regularizer`` its gradient is computed in C (serially per kernel: O(s**2 d) for s
    vectors of d weights each step). A bias, being 1-D, cannot take it (Keras raises too)."""

    def __init__(self, factor: float = 0.01, mode: str = "rows") -> None:
        self.factor = _penalty_arg(factor, "factor")
        if mode not in ("rows", "columns"):
            raise ValueError(
                f'Invalid value for argument `mode`. Expected one of {{"rows", "columns"}}. Received: mode={mode}'
            )
        self.mode = mode

    def __call__(self, x) -> float:
        x = np.asarray(x, np.float64)
        if x.ndim != 2:
            raise ValueError(f"Inputs to OrthogonalRegularizer must have rank 2. Received: inputs.shape={x.shape}")
        a = x if self.mode == "rows" else x.T
        # keras.ops.normalize: x * rsqrt(max(|x|^2, epsilon^2)), epsilon = 1e-7
        n = a / np.sqrt(np.maximum((a * a).sum(axis=1, keepdims=True), 1e-14))
        prod = n @ n.T
        size = a.shape[0]
        off = prod * (1.0 - np.eye(size))
        return float(self.factor * 0.5 * np.abs(off).sum() / (size * (size - 1.0) / 2.0))

    def get_config(self) -> dict:
        return {"factor": self.factor, "mode": self.mode}

    def _core(self) -> dict:
        return {"orth_factor": self.factor, "orth_mode": self.mode}


_CLASSES = {c.__name__: c for c in (L1, L2, L1L2, OrthogonalRegularizer)}
#: Keras' names (its snake_case of the class names) and tf.keras' "l1_l2"
_NAMES = {"l1": L1, "l2": L2, "l1l2": L1L2, "l1_l2": L1L2, "orthogonal_regularizer": OrthogonalRegularizer}


def serialize(regularizer: Regularizer) -> dict:
    return {
        "module": "keras.regularizers",
        "class_name": type(regularizer).__name__,
        "config": regularizer.get_config(),
        "registered_name": None,
    }


def deserialize(config: dict) -> Regularizer:
    if not isinstance(config, dict) or config.get("class_name") not in _CLASSES:
        raise unknown("regularizer", config.get("class_name") if isinstance(config, dict) else config, _NAMES)
    return _CLASSES[config["class_name"]].from_config(dict(config.get("config") or {}))


def get(identifier):
    """A regularizer from None, a name (``"l1"``, ``"l2"``, ``"l1_l2"``), a config dict, a class or an instance."""
    if identifier is None:
        return None
    if isinstance(identifier, Regularizer):
        return identifier
    if isinstance(identifier, type) and issubclass(identifier, Regularizer):
        return identifier()
    if isinstance(identifier, dict):
        return deserialize(identifier)
    if isinstance(identifier, str) and (identifier in _NAMES or identifier in _CLASSES):
        return (_NAMES.get(identifier) or _CLASSES[identifier])()
    raise unknown("regularizer", identifier, _NAMES)


#: Keras 3's lower-case aliases of the classes (keras.regularizers.l1 is keras.regularizers.L1, ...)
l1 = L1
l2 = L2
l1_l2 = L1L2
orthogonal_regularizer = OrthogonalRegularizer
