"""Probabilistic metrics (Keras 3's ``keras/src/metrics/probabilistic_metrics.py``): the means of the
cross-entropies, the Kullback-Leibler divergence and the Poisson loss per sample.

The per-sample values are :mod:`cdnn.losses`' functions, computed by the C core's loss code (the
same clipping, smoothing and logits handling as training's loss).
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from cdnn import losses
from cdnn.metrics.reduction_metrics import MeanMetricWrapper

__all__ = [
    "BinaryCrossentropy",
    "CategoricalCrossentropy",
    "SparseCategoricalCrossentropy",
    "KLDivergence",
    "Poisson",
]


class _LossMean(MeanMetricWrapper):
    """The mean of a loss function of :mod:`cdnn.losses` per sample; its arguments are checked
    at construction (an unsupported one is refused then, not at the first update)."""

    _direction = "down"

    def __init__(self, fn, name: Optional[str], dtype: Optional[str], **kwargs) -> None:
        super().__init__(fn, name=name, dtype=dtype, **kwargs)
        fn(np.zeros((0, 1), np.float32), np.zeros((0, 1), np.float32), **kwargs)


class BinaryCrossentropy(_LossMean):
    """The mean binary cross-entropy between 0/1 labels and predictions.

    Parameters
    ----------
    name : str
        The metric's name (``"binary_crossentropy"``).
    dtype : str, optional
        The state's dtype.
    from_logits : bool
        Whether the predictions are logits rather than probabilities.
    label_smoothing : float
        In [0, 1]: labels are squeezed towards 0.5 by half of it.
    """

    def __init__(
        self,
        name: str = "binary_crossentropy",
        dtype: Optional[str] = None,
        from_logits: bool = False,
        label_smoothing: float = 0,
    ) -> None:
        super().__init__(
            losses.binary_crossentropy, name, dtype, from_logits=from_logits, label_smoothing=label_smoothing
        )
        self.from_logits = from_logits
        self.label_smoothing = label_smoothing


class CategoricalCrossentropy(_LossMean):
    """The mean cross-entropy between one-hot (or soft) labels and predictions.

    Parameters
    ----------
    name : str
        The metric's name (``"categorical_crossentropy"``).
    dtype : str, optional
        The state's dtype.
    from_logits : bool
        Whether the predictions are logits rather than probabilities.
    label_smoothing : float
        In [0, 1]: labels are smoothed towards ``1 / classes``.
    axis : int
        The class axis: -1 (cdnn computes over the last axis and refuses another).
    """

    def __init__(
        self,
        name: str = "categorical_crossentropy",
        dtype: Optional[str] = None,
        from_logits: bool = False,
        label_smoothing: float = 0,
        axis: int = -1,
    ) -> None:
        super().__init__(
            losses.categorical_crossentropy,
            name,
            dtype,
            from_logits=from_logits,
            label_smoothing=label_smoothing,
            axis=axis,
        )
        self.from_logits = from_logits
        self.label_smoothing = label_smoothing
        self.axis = axis


class SparseCategoricalCrossentropy(_LossMean):
    """The mean cross-entropy between integer class labels and predictions.

    Parameters
    ----------
    name : str
        The metric's name (``"sparse_categorical_crossentropy"``).
    dtype : str, optional
        The state's dtype.
    from_logits : bool
        Whether the predictions are logits rather than probabilities.
    ignore_class : int, optional
        Samples of this class count 0; with sample weights, they weigh 0 (as Keras masks them).
    axis : int
        The class axis: -1 (cdnn computes over the last axis and refuses another).
    """

    def __init__(
        self,
        name: str = "sparse_categorical_crossentropy",
        dtype: Optional[str] = None,
        from_logits: bool = False,
        ignore_class: Optional[int] = None,
        axis: int = -1,
    ) -> None:
        super().__init__(
            losses.sparse_categorical_crossentropy,
            name,
            dtype,
            from_logits=from_logits,
            ignore_class=ignore_class,
            axis=axis,
        )
        self.from_logits = from_logits
        self.ignore_class = ignore_class
        self.axis = axis

    def update_state(self, y_true, y_pred, sample_weight=None) -> None:
        if self.ignore_class is not None and sample_weight is not None:
            # Keras' loss masks the ignored samples; its Mean applies the mask to sample weights only
            y_pred = np.asarray(y_pred)
            valid = np.asarray(y_true).reshape(y_pred.shape[:-1]) != self.ignore_class
            sample_weight = np.asarray(sample_weight, np.float64)
            sample_weight = sample_weight.reshape(valid.shape) if sample_weight.size == valid.size else sample_weight
            sample_weight = sample_weight * valid
        super().update_state(y_true, y_pred, sample_weight=sample_weight)


class KLDivergence(_LossMean):
    """The mean Kullback-Leibler divergence ``sum(y_true * log(y_true / y_pred))`` (both clipped to [1e-7, 1])."""

    def __init__(self, name: str = "kl_divergence", dtype: Optional[str] = None) -> None:
        super().__init__(losses.kl_divergence, name, dtype)


class Poisson(_LossMean):
    """The mean Poisson loss ``mean(y_pred - y_true * log(y_pred + 1e-7))``."""

    def __init__(self, name: str = "poisson", dtype: Optional[str] = None) -> None:
        super().__init__(losses.poisson, name, dtype)
