"""Accuracy metrics (Keras 3's ``keras/src/metrics/accuracy_metrics.py``).

Each is the mean of a per-sample match: exact equality, a threshold (binary),
argmax (categorical, sparse) or membership of the top ``k`` scores.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from cdnn.metrics.metric import squeeze_or_expand_to_same_rank
from cdnn.metrics.reduction_metrics import MeanMetricWrapper

__all__ = [
    "Accuracy",
    "BinaryAccuracy",
    "CategoricalAccuracy",
    "SparseCategoricalAccuracy",
    "TopKCategoricalAccuracy",
    "SparseTopKCategoricalAccuracy",
    "accuracy",
    "binary_accuracy",
    "categorical_accuracy",
    "sparse_categorical_accuracy",
    "top_k_categorical_accuracy",
    "sparse_top_k_categorical_accuracy",
]


def accuracy(y_true, y_pred) -> np.ndarray:
    """1.0 where the prediction equals the label exactly, else 0.0."""
    y_true, y_pred = squeeze_or_expand_to_same_rank(np.asarray(y_true), np.asarray(y_pred))
    return (y_true == y_pred).astype(np.float32)


def binary_accuracy(y_true, y_pred, threshold: float = 0.5) -> np.ndarray:
    """1.0 where ``y_pred > threshold`` equals the 0/1 label."""
    y_true, y_pred = squeeze_or_expand_to_same_rank(np.asarray(y_true), np.asarray(y_pred))
    return (y_true == (y_pred > threshold)).astype(np.float32)


def categorical_accuracy(y_true, y_pred) -> np.ndarray:
    """1.0 where the argmax of the prediction is the argmax of the one-hot label."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    return (np.argmax(y_true, axis=-1) == np.argmax(y_pred, axis=-1)).astype(np.float32)


def _sparse_labels(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    if y_true.ndim == y_pred.ndim and y_true.shape[-1] == 1:
        y_true = y_true[..., 0]
    return y_true


def sparse_categorical_accuracy(y_true, y_pred) -> np.ndarray:
    """1.0 where the argmax of the prediction is the integer label."""
    y_pred = np.asarray(y_pred)
    y_true = _sparse_labels(np.asarray(y_true), y_pred)
    return (y_true == np.argmax(y_pred, axis=-1)).astype(np.float32)


def _in_top_k(targets: np.ndarray, scores: np.ndarray, k: int) -> np.ndarray:
    """Whether each row's target class is among its ``k`` highest scores (ties at the boundary count in,
    as TensorFlow's ``in_top_k``)."""
    scores = scores.reshape(-1, scores.shape[-1])
    targets = targets.reshape(-1).astype(np.int64)
    target_score = np.take_along_axis(scores, targets[:, None], axis=1)
    return (scores > target_score).sum(axis=1) < k


def top_k_categorical_accuracy(y_true, y_pred, k: int = 5) -> np.ndarray:
    """1.0 where the one-hot label's class is among the ``k`` highest predictions."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    labels = np.argmax(y_true, axis=-1)
    return _in_top_k(labels, y_pred, k).astype(np.float32).reshape(labels.shape)


def sparse_top_k_categorical_accuracy(y_true, y_pred, k: int = 5, from_sorted_ids: bool = False) -> np.ndarray:
    """1.0 where the integer label is among the ``k`` highest predictions (or, with
    ``from_sorted_ids``, among the first ``k`` ids of ``y_pred``)."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    shape = y_true.shape
    if from_sorted_ids:
        matches = np.any(y_true.reshape(-1, 1) == y_pred.reshape(-1, y_pred.shape[-1])[:, :k], axis=1)
    else:
        matches = _in_top_k(y_true, y_pred, k)
    return matches.astype(np.float32).reshape(shape)


class Accuracy(MeanMetricWrapper):
    """How often predictions equal labels exactly (``metrics=["accuracy"]`` is resolved by
    ``compile`` to the binary, categorical or sparse accuracy instead, as in Keras)."""

    _direction = "up"

    def __init__(self, name: str = "accuracy", dtype: Optional[str] = None) -> None:
        super().__init__(accuracy, name=name, dtype=dtype)


class BinaryAccuracy(MeanMetricWrapper):
    """How often ``y_pred > threshold`` matches the 0/1 label."""

    _direction = "up"

    def __init__(self, name: str = "binary_accuracy", dtype: Optional[str] = None, threshold: float = 0.5) -> None:
        super().__init__(binary_accuracy, name=name, dtype=dtype, threshold=threshold)
        self.threshold = threshold


class CategoricalAccuracy(MeanMetricWrapper):
    """How often the argmax of the prediction is that of the one-hot label."""

    _direction = "up"

    def __init__(self, name: str = "categorical_accuracy", dtype: Optional[str] = None) -> None:
        super().__init__(categorical_accuracy, name=name, dtype=dtype)


class SparseCategoricalAccuracy(MeanMetricWrapper):
    """How often the argmax of the prediction is the integer label."""

    _direction = "up"

    def __init__(self, name: str = "sparse_categorical_accuracy", dtype: Optional[str] = None) -> None:
        super().__init__(sparse_categorical_accuracy, name=name, dtype=dtype)


def _check_k(k) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"Invalid value for argument `k`: expected a positive integer, received k={k!r}")
    return int(k)


class TopKCategoricalAccuracy(MeanMetricWrapper):
    """How often the one-hot label's class is among the ``k`` highest predictions."""

    _direction = "up"

    def __init__(self, k: int = 5, name: str = "top_k_categorical_accuracy", dtype: Optional[str] = None) -> None:
        super().__init__(top_k_categorical_accuracy, name=name, dtype=dtype, k=_check_k(k))
        self.k = int(k)


class SparseTopKCategoricalAccuracy(MeanMetricWrapper):
    """How often the integer label is among the ``k`` highest predictions."""

    _direction = "up"

    def __init__(
        self,
        k: int = 5,
        name: str = "sparse_top_k_categorical_accuracy",
        dtype: Optional[str] = None,
        from_sorted_ids: bool = False,
    ) -> None:
        super().__init__(
            sparse_top_k_categorical_accuracy, name=name, dtype=dtype, k=_check_k(k), from_sorted_ids=from_sorted_ids
        )
        self.k = int(k)
        self.from_sorted_ids = from_sorted_ids
