"""``Sum``, ``Mean`` and ``MeanMetricWrapper`` (Keras 3's ``keras/src/metrics/reduction_metrics.py``)."""

from __future__ import annotations

from typing import Callable, Optional

import numpy as np

from cdnn.metrics.metric import Metric, as_result, squeeze_or_expand_to_same_rank

__all__ = ["Sum", "Mean", "MeanMetricWrapper"]


def reduce_to_samplewise_values(values, sample_weight, reduce_fn, dtype="float32"):
    """Per-sample values (reduced over the non-batch axes) and weights, as Keras weighs them."""
    values = np.asarray(values, dtype=np.float64)
    if sample_weight is not None:
        sample_weight = np.asarray(sample_weight, dtype=np.float64)
        values, sample_weight = squeeze_or_expand_to_same_rank(values, sample_weight)
        if values.ndim > sample_weight.ndim:
            values = reduce_fn(values, axis=tuple(range(sample_weight.ndim, values.ndim)))
        sample_weight = np.broadcast_to(sample_weight, values.shape)
        values = values * sample_weight
        if sample_weight.ndim > 1:
            sample_weight = reduce_fn(sample_weight, axis=tuple(range(1, sample_weight.ndim)))
    if values.ndim > 1:
        values = reduce_fn(values, axis=tuple(range(1, values.ndim)))
    return values, sample_weight


class Sum(Metric):
    """The (weighted) sum of the values: ``[1, 3, 5, 7]`` gives 16."""

    def __init__(self, name: str = "sum", dtype: Optional[str] = None) -> None:
        super().__init__(name=name, dtype=dtype)
        self.total = self.add_variable(shape=(), initializer="zeros", name="total", dtype="float64")

    def update_state(self, values, sample_weight=None) -> None:
        values, _ = reduce_to_samplewise_values(values, sample_weight, np.sum)
        self.total.assign_add(np.sum(values))

    def result(self):
        return as_result(self.total.value)


class Mean(Metric):
    """The (weighted) mean of the values: ``[1, 3, 5, 7]`` gives 4; with weights ``[1, 1, 0, 0]``, 2."""

    def __init__(self, name: str = "mean", dtype: Optional[str] = None) -> None:
        super().__init__(name=name, dtype=dtype)
        # float64 state: cdnn sums whole runs of batches at once, and an epoch's count passes 2**24
        self.total = self.add_variable(shape=(), initializer="zeros", name="total", dtype="float64")
        self.count = self.add_variable(shape=(), initializer="zeros", name="count", dtype="float64")

    def update_state(self, values, sample_weight=None) -> None:
        values, sample_weight = reduce_to_samplewise_values(values, sample_weight, np.mean)
        self.total.assign_add(np.sum(values))
        if sample_weight is not None:
            self.count.assign_add(np.sum(sample_weight))
        else:
            self.count.assign_add(values.shape[0] if values.ndim >= 1 else 1)

    def _add_sums(self, total: float, count: float) -> None:
        """Add a sum and a count computed elsewhere (the C core's loss and accuracy sums)."""
        self.total.assign_add(total)
        self.count.assign_add(count)

    def result(self):
        count = float(self.count.value)
        return as_result(float(self.total.value) / count if count else 0.0)


class MeanMetricWrapper(Mean):
    """The mean of ``fn(y_true, y_pred, **kwargs)``'s per-sample values.

    Parameters
    ----------
    fn : callable
        ``fn(y_true, y_pred)`` returning one value per sample (or per element).
    name : str, optional
        The metric's name.
    **kwargs
        Passed to ``fn`` at every call.
    """

    def __init__(self, fn: Callable, name: Optional[str] = None, dtype: Optional[str] = None, **kwargs) -> None:
        if not callable(fn):
            raise TypeError(
                f"Invalid argument `fn` of MeanMetricWrapper: expected a function (y_true, y_pred), "
                f"received {type(fn).__name__}"
            )
        super().__init__(name=name if name is not None else getattr(fn, "__name__", "mean_metric_wrapper"), dtype=dtype)
        self._fn = fn
        self._fn_kwargs = kwargs

    def update_state(self, y_true, y_pred, sample_weight=None) -> None:
        values = self._fn(np.asarray(y_true), np.asarray(y_pred), **self._fn_kwargs)
        super().update_state(values, sample_weight=sample_weight)

    def get_config(self) -> dict:
        config = {**super().get_config(), **self._fn_kwargs}
        if type(self) is MeanMetricWrapper:  # a subclass fixes fn itself
            config["fn"] = getattr(self._fn, "__name__", repr(self._fn))
        return config

    @classmethod
    def from_config(cls, config: dict) -> MeanMetricWrapper:
        config = dict(config)
        if cls is MeanMetricWrapper:
            from cdnn import metrics

            fn = config.pop("fn")
            config["fn"] = metrics._FUNCTIONS[fn] if isinstance(fn, str) else fn
        return cls(**config)
