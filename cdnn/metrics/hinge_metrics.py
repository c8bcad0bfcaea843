"""Hinge metrics (Keras 3's ``keras/src/metrics/hinge_metrics.py``): the means of the hinge losses
per sample, computed by :mod:`cdnn.losses`' functions (0/1 labels are read as -1/1, as Keras does)."""

from __future__ import annotations

from typing import Optional

from cdnn import losses
from cdnn.metrics.probabilistic_metrics import _LossMean

__all__ = ["Hinge", "SquaredHinge", "CategoricalHinge"]


class Hinge(_LossMean):
    """The mean hinge loss ``mean(maximum(1 - y_true * y_pred, 0))`` of -1/1 (or 0/1) labels."""

    def __init__(self, name: str = "hinge", dtype: Optional[str] = None) -> None:
        super().__init__(losses.hinge, name, dtype)


class SquaredHinge(_LossMean):
    """The mean squared hinge loss ``mean(square(maximum(1 - y_true * y_pred, 0)))`` of -1/1 (or 0/1) labels."""

    def __init__(self, name: str = "squared_hinge", dtype: Optional[str] = None) -> None:
        super().__init__(losses.squared_hinge, name, dtype)


class CategoricalHinge(_LossMean):
    """The mean categorical hinge loss ``maximum(neg - pos + 1, 0)`` of one-hot labels."""

    def __init__(self, name: str = "categorical_hinge", dtype: Optional[str] = None) -> None:
        super().__init__(losses.categorical_hinge, name, dtype)
