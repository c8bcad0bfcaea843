"""Accuracy metrics, as Keras 3's ``keras.metrics`` (the supported subset).

``"accuracy"`` (or ``"acc"``) becomes the accuracy that fits the loss and
output, as Keras decides: binary when the output has one unit, sparse when
labels are integers, else categorical.
"""
from __future__ import annotations

from typing import Union

from cdnn._errors import unknown

__all__ = ["Metric", "Accuracy", "SparseCategoricalAccuracy", "CategoricalAccuracy", "BinaryAccuracy", "get"]


class Metric:
    """A metric computed by the C core; ``kind`` is None until resolved against the loss."""

    kind: str | None = None

    def __init__(self, name: str = "accuracy") -> None:
        self.name = name

    def get_config(self) -> dict:
        return {"class_name": type(self).__name__, "name": self.name}

    def __repr__(self) -> str:
        return f"<{type(self).__name__} name={self.name!r}>"


class Accuracy(Metric):
    """Keras' ``"accuracy"``: resolved to sparse, categorical or binary at compile time."""


class SparseCategoricalAccuracy(Metric):
    """Argmax of the output equals the integer label."""

    kind = "sparse"

    def __init__(self, name: str = "sparse_categorical_accuracy") -> None:
        super().__init__(name)


class CategoricalAccuracy(Metric):
    """Argmax of the output equals the argmax of the one-hot label."""

    kind = "categorical"

    def __init__(self, name: str = "categorical_accuracy") -> None:
        super().__init__(name)


class BinaryAccuracy(Metric):
    """Output thresholded at 0.5 equals the 0/1 label (mean over the last axis)."""

    kind = "binary"

    def __init__(self, name: str = "binary_accuracy") -> None:
        super().__init__(name)


_NAMES = {
    "accuracy": Accuracy, "acc": Accuracy,
    "sparse_categorical_accuracy": SparseCategoricalAccuracy,
    "categorical_accuracy": CategoricalAccuracy,
    "binary_accuracy": BinaryAccuracy,
}
_CLASSES = {c.__name__: c for c in (Accuracy, SparseCategoricalAccuracy, CategoricalAccuracy, BinaryAccuracy)}


def get(identifier: Union[str, Metric, dict]) -> Metric:
    """A :class:`Metric` from a name, an instance, or a config dict."""
    if isinstance(identifier, Metric):
        return identifier
    if isinstance(identifier, dict) and identifier.get("class_name") in _CLASSES:
        return _CLASSES[identifier["class_name"]](name=identifier.get("name", "accuracy"))
    if isinstance(identifier, str) and identifier in _NAMES:
        cls = _NAMES[identifier]
        return cls(name=identifier) if cls is Accuracy else cls()
    raise unknown("metric", identifier, _NAMES)


def resolve(metric: Metric, loss_name: str, units: int) -> str:
    """The core's accuracy kind for ``metric`` given the loss and the output width.

    As Keras 3's ``compile_utils.get_metric``: binary for a one-unit output,
    sparse for integer labels, else categorical (also for multi-label binary
    cross-entropy).
    """
    if metric.kind is not None:
        return metric.kind
    if units == 1:
        return "binary"
    if loss_name == "sparse_categorical_crossentropy":
        return "sparse"
    return "categorical"
