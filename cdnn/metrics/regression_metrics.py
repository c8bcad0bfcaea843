"""Regression metrics (Keras 3's ``keras/src/metrics/regression_metrics.py``): the means of
Keras' regression losses per sample, their root, the coefficient of determination."""

from __future__ import annotations

import warnings
from typing import Optional

import numpy as np

from cdnn.metrics.metric import EPSILON, Metric, as_result, squeeze_or_expand_to_same_rank
from cdnn.metrics.reduction_metrics import Mean, MeanMetricWrapper

__all__ = [
    "MeanSquaredError",
    "MeanAbsoluteError",
    "MeanAbsolutePercentageError",
    "MeanSquaredLogarithmicError",
    "RootMeanSquaredError",
    "CosineSimilarity",
    "LogCoshError",
    "R2Score",
    "mean_squared_error",
    "mean_absolute_error",
    "mean_absolute_percentage_error",
    "mean_squared_logarithmic_error",
    "cosine_similarity",
    "log_cosh",
]


def _pair(y_true, y_pred):
    y_pred = np.asarray(y_pred, dtype=np.float64)
    y_true = np.asarray(y_true, dtype=np.float64)
    return squeeze_or_expand_to_same_rank(y_true, y_pred)


def mean_squared_error(y_true, y_pred) -> np.ndarray:
    """``mean(square(y_true - y_pred), axis=-1)``."""
    y_true, y_pred = _pair(y_true, y_pred)
    return np.mean(np.square(y_true - y_pred), axis=-1)


def mean_absolute_error(y_true, y_pred) -> np.ndarray:
    """``mean(abs(y_true - y_pred), axis=-1)``."""
    y_true, y_pred = _pair(y_true, y_pred)
    return np.mean(np.abs(y_true - y_pred), axis=-1)


def mean_absolute_percentage_error(y_true, y_pred) -> np.ndarray:
    """``100 * mean(abs((y_true - y_pred) / max(abs(y_true), epsilon)), axis=-1)``."""
    y_true, y_pred = _pair(y_true, y_pred)
    return 100.0 * np.mean(np.abs((y_true - y_pred) / np.maximum(np.abs(y_true), EPSILON)), axis=-1)


def mean_squared_logarithmic_error(y_true, y_pred) -> np.ndarray:
    """``mean(square(log(max(y_pred, eps) + 1) - log(max(y_true, eps) + 1)), axis=-1)``."""
    y_true, y_pred = _pair(y_true, y_pred)
    first = np.log(np.maximum(y_pred, EPSILON) + 1.0)
    second = np.log(np.maximum(y_true, EPSILON) + 1.0)
    return np.mean(np.square(first - second), axis=-1)


def cosine_similarity(y_true, y_pred, axis: int = -1) -> np.ndarray:
    """The cosine of the angle between label and prediction along ``axis`` (L2-normalized dot product)."""
    y_true, y_pred = _pair(y_true, y_pred)
    nt = y_true / np.sqrt(np.maximum(np.sum(y_true**2, axis=axis, keepdims=True), 1e-12))
    np_ = y_pred / np.sqrt(np.maximum(np.sum(y_pred**2, axis=axis, keepdims=True), 1e-12))
    return np.sum(nt * np_, axis=axis)


def log_cosh(y_true, y_pred) -> np.ndarray:
    """``mean(log(cosh(y_pred - y_true)), axis=-1)``, computed without overflow."""
    y_true, y_pred = _pair(y_true, y_pred)
    x = y_pred - y_true
    return np.mean(x + np.logaddexp(-2.0 * x, 0.0) - np.log(2.0), axis=-1)


class MeanSquaredError(MeanMetricWrapper):
    """The mean squared error between labels and predictions."""

    _direction = "down"

    def __init__(self, name: str = "mean_squared_error", dtype: Optional[str] = None) -> None:
        super().__init__(mean_squared_error, name=name, dtype=dtype)


class MeanAbsoluteError(MeanMetricWrapper):
    """The mean absolute error between labels and predictions."""

    _direction = "down"

    def __init__(self, name: str = "mean_absolute_error", dtype: Optional[str] = None) -> None:
        super().__init__(mean_absolute_error, name=name, dtype=dtype)


class MeanAbsolutePercentageError(MeanMetricWrapper):
    """The mean absolute percentage error between labels and predictions."""

    _direction = "down"

    def __init__(self, name: str = "mean_absolute_percentage_error", dtype: Optional[str] = None) -> None:
        super().__init__(mean_absolute_percentage_error, name=name, dtype=dtype)


class MeanSquaredLogarithmicError(MeanMetricWrapper):
    """The mean squared logarithmic error between labels and predictions."""

    _direction = "down"

    def __init__(self, name: str = "mean_squared_logarithmic_error", dtype: Optional[str] = None) -> None:
        super().__init__(mean_squared_logarithmic_error, name=name, dtype=dtype)


class CosineSimilarity(MeanMetricWrapper):
    """The mean cosine similarity between labels and predictions."""

    _direction = "up"

    def __init__(self, name: str = "cosine_similarity", dtype: Optional[str] = None, axis: int = -1) -> None:
        super().__init__(cosine_similarity, name=name, dtype=dtype, axis=axis)


class LogCoshError(MeanMetricWrapper):
    """The mean of ``log(cosh(y_pred - y_true))``."""

    _direction = "down"

    def __init__(self, name: str = "logcosh", dtype: Optional[str] = None) -> None:
        super().__init__(log_cosh, name=name, dtype=dtype)


class RootMeanSquaredError(Mean):
    """``sqrt(mean(square(y_true - y_pred)))`` over everything seen (the root of the running mean)."""

    _direction = "down"

    def __init__(self, name: str = "root_mean_squared_error", dtype: Optional[str] = None) -> None:
        super().__init__(name=name, dtype=dtype)

    def update_state(self, y_true, y_pred, sample_weight=None) -> None:
        y_true, y_pred = _pair(y_true, y_pred)
        super().update_state(np.square(y_pred - y_true), sample_weight=sample_weight)

    def result(self):
        return as_result(np.sqrt(float(super().result())))


class R2Score(Metric):
    """The coefficient of determination, ``1 - SS_res / SS_tot`` per output, aggregated.

    Parameters
    ----------
    class_aggregation : {"uniform_average", "variance_weighted_average", None}
        How the outputs' scores are combined (None: one score per output).
    num_regressors : int
        With p > 0 regressors, the adjusted score ``1 - (1 - R2)(n - 1) / (n - p - 1)``.
    """

    _direction = "up"

    def __init__(
        self,
        class_aggregation: Optional[str] = "uniform_average",
        num_regressors: int = 0,
        name: str = "r2_score",
        dtype: Optional[str] = None,
    ) -> None:
        super().__init__(name=name, dtype=dtype)
        if class_aggregation not in (None, "uniform_average", "variance_weighted_average"):
            raise ValueError(
                f"Invalid value for argument `class_aggregation`: expected one of None, "
                f"'uniform_average', 'variance_weighted_average', received "
                f"class_aggregation={class_aggregation!r}"
            )
        if isinstance(num_regressors, bool) or not isinstance(num_regressors, (int, np.integer)) or num_regressors < 0:
            raise ValueError(
                f"Invalid value for argument `num_regressors`: expected a non-negative integer, "
                f"received num_regressors={num_regressors!r}"
            )
        self.class_aggregation = class_aggregation
        self.num_regressors = int(num_regressors)
        self._built = False

    def _build(self, num_outputs: int) -> None:
        for attr in ("squared_sum", "sum", "total_mse", "count"):
            setattr(self, attr, self.add_variable(shape=(num_outputs,), name=attr, dtype="float64"))
        self.num_samples = self.add_variable(shape=(), name="num_samples", dtype="int64")
        self._built = True

    def update_state(self, y_true, y_pred, sample_weight=None) -> None:
        y_true, y_pred = _pair(y_true, y_pred)
        if y_true.ndim != 2 or y_pred.shape != y_true.shape:
            raise ValueError(
                f"R2Score expects 2D inputs of the same shape (batch_size, output_dim), received "
                f"y_true.shape={y_true.shape} and y_pred.shape={y_pred.shape}"
            )
        if not self._built:
            self._build(y_true.shape[1])
        elif self.sum.shape[0] != y_true.shape[1]:
            raise ValueError(f"R2Score was built for {self.sum.shape[0]} outputs, received {y_true.shape[1]}")
        w = np.ones(()) if sample_weight is None else np.asarray(sample_weight, np.float64)
        if w.ndim == 1:
            w = w[:, None]
        w = np.broadcast_to(w, y_true.shape)
        weighted = y_true * w
        self.sum.assign_add(weighted.sum(axis=0))
        self.squared_sum.assign_add((y_true * weighted).sum(axis=0))
        self.total_mse.assign_add(((y_true - y_pred) ** 2 * w).sum(axis=0))
        self.count.assign_add(w.sum(axis=0))
        self.num_samples.assign_add(y_true.size)

    def result(self):
        if not self._built:
            return as_result(0.0)
        with np.errstate(divide="ignore", invalid="ignore"):
            mean = self.sum.value / self.count.value
            total = self.squared_sum.value - self.sum.value * mean
            raw = 1.0 - self.total_mse.value / total
        raw = np.where(np.isinf(raw), 0.0, raw)
        if self.class_aggregation == "uniform_average":
            score = np.mean(raw)
        elif self.class_aggregation == "variance_weighted_average":
            score = np.sum(total * raw) / np.sum(total)
        else:
            score = raw
        n, p = int(self.num_samples.value), self.num_regressors
        if p:
            if p > n - 1:
                warnings.warn(
                    "More independent predictors than datapoints in adjusted R2 score. Falling back to "
                    "standard R2 score.",
                    stacklevel=2,
                )
            elif p == n - 1:
                warnings.warn("Division by zero in Adjusted R2 score. Falling back to standard R2 score.", stacklevel=2)
            else:
                score = 1.0 - (1.0 - score) * (n - 1.0) / (n - p - 1.0)
        return as_result(score)

    def reset_state(self) -> None:
        super().reset_state()

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "class_aggregation": self.class_aggregation,
            "num_regressors": self.num_regressors,
        }
