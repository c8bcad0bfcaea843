"""Losses by name or object, as Keras 3's ``keras.losses`` (the supported subset).

Training computes them in C, fused with the output layer; ``__call__`` here
evaluates a loss in NumPy for direct use.
"""
from __future__ import annotations

from typing import Union

import numpy as np

from cdnn._errors import unknown

__all__ = ["Loss", "SparseCategoricalCrossentropy", "CategoricalCrossentropy", "BinaryCrossentropy",
           "MeanSquaredError", "get"]

_EPS = 1e-7


class Loss:
    """A loss: ``name`` is Keras' name, ``from_logits`` says whether outputs are logits."""

    name = "loss"
    #: the name of the C core's loss
    core_name = ""

    def __init__(self, from_logits: bool = False, name: str | None = None) -> None:
        self.from_logits = bool(from_logits)
        if name is not None:
            self.name = name

    def get_config(self) -> dict:
        """Plain data that :func:`get` turns back into this loss."""
        return {"class_name": type(self).__name__, "from_logits": self.from_logits, "name": self.name}

    def __call__(self, y_true, y_pred) -> float:
        """The batch-mean loss of ``y_pred`` against ``y_true``."""
        return float(np.mean(self._per_sample(np.asarray(y_true), np.asarray(y_pred, dtype=np.float64))))

    def _per_sample(self, y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<{type(self).__name__} name={self.name!r} from_logits={self.from_logits}>"


def _log_probs(y_pred: np.ndarray, from_logits: bool) -> np.ndarray:
    if from_logits:
        m = y_pred.max(axis=-1, keepdims=True)
        return y_pred - m - np.log(np.exp(y_pred - m).sum(axis=-1, keepdims=True))
    p = y_pred / y_pred.sum(axis=-1, keepdims=True)
    return np.log(np.clip(p, _EPS, 1 - _EPS))


class SparseCategoricalCrossentropy(Loss):
    """Cross-entropy against integer class labels."""

    name = "sparse_categorical_crossentropy"
    core_name = "sparse_categorical_crossentropy"

    def _per_sample(self, y_true, y_pred):
        lp = _log_probs(y_pred, self.from_logits)
        return -np.take_along_axis(lp, y_true.astype(np.int64).reshape(-1, 1), axis=-1)[:, 0]


class CategoricalCrossentropy(Loss):
    """Cross-entropy against one-hot (or soft) labels."""

    name = "categorical_crossentropy"
    core_name = "categorical_crossentropy"

    def _per_sample(self, y_true, y_pred):
        return -(y_true * _log_probs(y_pred, self.from_logits)).sum(axis=-1)


class BinaryCrossentropy(Loss):
    """Binary cross-entropy, averaged over the last axis."""

    name = "binary_crossentropy"
    core_name = "binary_crossentropy"

    def _per_sample(self, y_true, y_pred):
        y_true = y_true.reshape(y_pred.shape)
        if self.from_logits:
            x = y_pred
            return np.mean(np.maximum(x, 0) - x * y_true + np.log1p(np.exp(-np.abs(x))), axis=-1)
        p = np.clip(y_pred, _EPS, 1 - _EPS)
        return -np.mean(y_true * np.log(p) + (1 - y_true) * np.log(1 - p), axis=-1)


class MeanSquaredError(Loss):
    """Mean of squared errors over the last axis."""

    name = "mean_squared_error"
    core_name = "mean_squared_error"

    def __init__(self, name: str | None = None) -> None:
        super().__init__(False, name)

    def get_config(self) -> dict:
        return {"class_name": "MeanSquaredError", "name": self.name}

    def _per_sample(self, y_true, y_pred):
        return np.mean((y_pred - y_true.reshape(y_pred.shape)) ** 2, axis=-1)


_CLASSES = {c.__name__: c for c in (SparseCategoricalCrossentropy, CategoricalCrossentropy,
                                    BinaryCrossentropy, MeanSquaredError)}
_NAMES = {
    "sparse_categorical_crossentropy": SparseCategoricalCrossentropy,
    "categorical_crossentropy": CategoricalCrossentropy,
    "binary_crossentropy": BinaryCrossentropy,
    "mean_squared_error": MeanSquaredError,
    "mse": MeanSquaredError,
    "MSE": MeanSquaredError,
}


def get(identifier: Union[str, Loss, dict]) -> Loss:
    """A :class:`Loss` from a Keras name, an instance, or a config dict."""
    if isinstance(identifier, Loss):
        return identifier
    if isinstance(identifier, dict) and identifier.get("class_name") in _CLASSES:
        cfg = dict(identifier)
        return _CLASSES[cfg.pop("class_name")](**cfg)
    if isinstance(identifier, str) and identifier in _NAMES:
        loss = _NAMES[identifier]()
        loss.name = identifier if identifier not in ("MSE",) else "mean_squared_error"
        return loss
    raise unknown("loss", identifier, _NAMES)
