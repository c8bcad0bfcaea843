"""Weight constraints with Keras 3's formulas (keras/src/constraints/constraints.py).

As a Dense layer's ``kernel_constraint``/``bias_constraint`` the C core
applies them to the weights right after each optimizer update (norms over
``axis`` 0, i.e. per unit, by default; epsilon 1e-7 as Keras).
"""

from __future__ import annotations

import numpy as np

from cdnn._errors import invalid, unknown

__all__ = ["Constraint", "MaxNorm", "NonNeg", "UnitNorm", "MinMaxNorm", "get", "serialize", "deserialize"]

_EPSILON = 1e-7


def _axis(axis) -> int:
    if isinstance(axis, bool) or axis not in (0, 1, -1, -2):
        raise invalid("axis", axis, "0 or 1 (a Dense kernel's axes)")
    return int(axis) % 2


class Constraint:
    """Base class: ``constraint(w)`` returns the projected weights."""

    def __call__(self, w):
        return w

    def get_config(self) -> dict:
        return {}

    @classmethod
    def from_config(cls, config: dict) -> Constraint:
        return cls(**config)

    def _core(self) -> dict:
        raise ValueError(
            f"cdnn trains in C and cannot call the constraint {type(self).__name__} inside a training "
            f"step: use keras.constraints.MaxNorm, NonNeg, UnitNorm or MinMaxNorm"
        )


def _norms(w: np.ndarray, axis: int) -> np.ndarray:
    return np.sqrt(np.sum(np.square(w), axis=axis if w.ndim > 1 else 0, keepdims=True))


class MaxNorm(Constraint):
    """Scale each unit's weights down to an L2 norm of at most ``max_value``."""

    def __init__(self, max_value: float = 2, axis: int = 0) -> None:
        self.max_value = float(max_value)
        self.axis = _axis(axis)

    def __call__(self, w):
        w = np.asarray(w, np.float32)
        n = _norms(w, self.axis)
        return w * (np.clip(n, 0, self.max_value) / (_EPSILON + n))

    def get_config(self):
        return {"max_value": self.max_value, "axis": self.axis}

    def _core(self):
        return {"constraint": "max_norm", "max_value": self.max_value, "axis": self.axis}


class NonNeg(Constraint):
    """Negative weights become 0."""

    def __call__(self, w):
        return np.maximum(np.asarray(w, np.float32), 0)

    def _core(self):
        return {"constraint": "non_neg"}


class UnitNorm(Constraint):
    """Each unit's weights scaled to an L2 norm of 1."""

    def __init__(self, axis: int = 0) -> None:
        self.axis = _axis(axis)

    def __call__(self, w):
        w = np.asarray(w, np.float32)
        return w / (_EPSILON + _norms(w, self.axis))

    def get_config(self):
        return {"axis": self.axis}

    def _core(self):
        return {"constraint": "unit_norm", "axis": self.axis}


class MinMaxNorm(Constraint):
    """Each unit's norm moved toward ``[min_value, max_value]`` by ``rate`` (1: clipped into it)."""

    def __init__(self, min_value: float = 0.0, max_value: float = 1.0, rate: float = 1.0, axis: int = 0) -> None:
        self.min_value, self.max_value, self.rate = float(min_value), float(max_value), float(rate)
        self.axis = _axis(axis)

    def __call__(self, w):
        w = np.asarray(w, np.float32)
        n = _norms(w, self.axis)
        desired = self.rate * np.clip(n, self.min_value, self.max_value) + (1 - self.rate) * n
        return w * (desired / (_EPSILON + n))

    def get_config(self):
        return {"min_value": self.min_value, "max_value": self.max_value, "rate": self.rate, "axis": self.axis}

    def _core(self):
        return {
            "constraint": "min_max_norm",
            "min_value": self.min_value,
            "max_value": self.max_value,
            "rate": self.rate,
            "axis": self.axis,
        }


_CLASSES = {c.__name__: c for c in (MaxNorm, NonNeg, UnitNorm, MinMaxNorm)}
_NAMES = {"max_norm": MaxNorm, "non_neg": NonNeg, "unit_norm": UnitNorm, "min_max_norm": MinMaxNorm}


def serialize(constraint: Constraint) -> dict:
    return {
        "module": "keras.constraints",
        "class_name": type(constraint).__name__,
        "config": constraint.get_config(),
        "registered_name": None,
    }


def deserialize(config: dict) -> Constraint:
    if not isinstance(config, dict) or config.get("class_name") not in _CLASSES:
        raise unknown("constraint", config.get("class_name") if isinstance(config, dict) else config, _NAMES)
    return _CLASSES[config["class_name"]].from_config(dict(config.get("config") or {}))


def get(identifier):
    """A constraint from None, a name (``"max_norm"``, ...), a config dict, a class or an instance."""
    if identifier is None:
        return None
    if isinstance(identifier, Constraint):
        return identifier
    if isinstance(identifier, type) and issubclass(identifier, Constraint):
        return identifier()
    if isinstance(identifier, dict):
        return deserialize(identifier)
    if isinstance(identifier, str) and (identifier in _NAMES or identifier in _CLASSES):
        return (_NAMES.get(identifier) or _CLASSES[identifier])()
    raise unknown("constraint", identifier, _NAMES)
