"""Sample and class weights, checked and turned into the per-row float32 weights the C loop gathers.

As Keras 3 (``keras/src/trainers/data_adapters/data_adapter_utils.py``): a class weight
becomes the sample weight of every sample of that class, the class of a sample being its
integer label, the argmax of a one-hot label, or a one-unit label rounded. Unlike Keras 3,
which gives classes missing from ``class_weight`` the weight 1, cdnn refuses them: a
dictionary that leaves out a class present in the labels is usually a mistake.
"""

from __future__ import annotations

import math
from typing import Optional

import numpy as np

__all__ = ["as_sample_weights", "class_weights_to_sample_weights"]

#: losses whose labels name classes (class_weight applies)
_CLASSIFICATION = (
    "sparse_categorical_crossentropy",
    "categorical_crossentropy",
    "binary_crossentropy",
    "binary_focal_crossentropy",
    "categorical_hinge",
    "hinge",
    "squared_hinge",
)
#: of those, the losses whose output may have one unit per label (binary): class from the rounded label
_BINARY = ("binary_crossentropy", "binary_focal_crossentropy", "hinge", "squared_hinge")


def as_sample_weights(sample_weight, n: int, name: str = "sample_weight") -> Optional[np.ndarray]:
    """``sample_weight`` as C-contiguous float32 of shape (n,), or None; finite and not negative."""
    if sample_weight is None:
        return None
    w = np.asarray(sample_weight)
    if w.dtype.kind not in "biuf":
        raise TypeError(f"Invalid dtype for argument `{name}`: expected real numbers, received {w.dtype}")
    if w.ndim == 2 and w.shape[1] == 1:
        w = w[:, 0]
    if w.shape != (n,):
        raise ValueError(
            f"Invalid shape for argument `{name}`: expected one weight per sample, shape ({n},), received {w.shape}"
        )
    with np.errstate(over="ignore"):
        out = np.ascontiguousarray(w, dtype=np.float32)
    if not np.isfinite(out).all():
        bad = int(np.flatnonzero(~np.isfinite(out))[0])
        raise ValueError(f"Invalid values in `{name}`: expected finite weights, received {w[bad]!r} at sample {bad}")
    if n and out.min() < 0:
        bad = int(np.argmin(out))
        raise ValueError(f"Invalid values in `{name}`: expected weights >= 0, received {w[bad]!r} at sample {bad}")
    return out


def _classes(y: np.ndarray, loss_name: str, units: int) -> np.ndarray:
    """Each sample's class as Keras finds it for class weights."""
    if y.ndim == 1:
        return y.astype(np.int64)
    if y.shape[1] != 1:
        return np.argmax(y, axis=1)
    return np.round(y[:, 0]).astype(np.int64)


def class_weights_to_sample_weights(
    class_weight, y: np.ndarray, loss_name: str, units: int, ignore_class: Optional[int] = None
) -> np.ndarray:
    """Per-sample weights from ``{class: weight}`` for the prepared labels ``y`` of ``loss_name``.

    Samples of ``ignore_class`` (which the loss leaves out) need no weight: they get 1.
    """
    if not hasattr(class_weight, "items") or not hasattr(class_weight, "get"):
        raise ValueError(
            f"Invalid value for argument `class_weight`: expected a dict mapping class indices to "
            f"weights, received {type(class_weight).__name__}"
        )
    if loss_name not in _CLASSIFICATION:
        raise ValueError(
            f"Invalid argument `class_weight`: the loss {loss_name} does not classify (class weights "
            f"go with {', '.join(_CLASSIFICATION)}); pass `sample_weight` instead"
        )
    if loss_name in _BINARY and units != 1 and y.ndim == 2:
        raise ValueError(
            f"Invalid argument `class_weight`: with {loss_name} on an output of {units} units each "
            f"sample has {units} independent labels, not one class; pass `sample_weight` instead"
        )
    weights = {}
    for key, value in class_weight.items():
        try:
            k = int(key)
            if k != key:
                raise ValueError
        except (TypeError, ValueError):
            raise ValueError(
                f"Invalid key in `class_weight`: expected integer class indices, received {key!r}"
            ) from None
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float, np.integer, np.floating))
            or not math.isfinite(value)
            or value < 0
        ):
            raise ValueError(
                f"Invalid value in `class_weight`: expected a finite weight >= 0 for class {k}, received {value!r}"
            )
        weights[k] = float(value)
    classes = _classes(y, loss_name, units)
    if ignore_class is not None:
        weights.setdefault(int(ignore_class), 1.0)
    present = np.unique(classes)
    missing = [int(c) for c in present if int(c) not in weights]
    if missing:
        shown = ", ".join(map(str, missing[:10])) + (", ..." if len(missing) > 10 else "")
        raise ValueError(
            f"Invalid argument `class_weight`: it has no weight for class(es) {shown} found in `y` "
            f"(received weights for {sorted(weights)})"
        )
    table = np.zeros(int(present.max()) - int(min(present.min(), 0)) + 1, np.float32)
    lo = int(min(present.min(), 0))
    for c in present:
        table[int(c) - lo] = weights[int(c)]
    return np.ascontiguousarray(table[classes - lo], dtype=np.float32)
