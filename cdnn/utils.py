"""Utilities: seeding, label encoding, and the session's name counters."""
from __future__ import annotations

import random

import numpy as np

from cdnn import _naming, _random
from cdnn._errors import invalid
from cdnn.trainers.py_dataset import PyDataset

__all__ = ["set_random_seed", "to_categorical", "clear_session", "PyDataset"]


def set_random_seed(seed: int) -> None:
    """Seed everything random in cdnn (and Python's and NumPy's global generators, as Keras does).

    With the same seed, initial weights, shuffling and dropout repeat exactly,
    so training is bit-for-bit reproducible, whatever the number of threads.
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise invalid("seed", seed, "a non-negative integer")
    random.seed(int(seed))
    np.random.seed(int(seed) % 2**32)
    _random.seed(int(seed))


def to_categorical(x, num_classes: int | None = None) -> np.ndarray:
    """One-hot encode integer class labels: shape ``(n,)`` -> ``(n, num_classes)`` float32."""
    y = np.asarray(x)
    if y.dtype.kind not in "iub" and not (y.dtype.kind == "f" and np.array_equal(y, np.round(y))):
        raise TypeError(f"to_categorical expects integer class labels, received dtype {y.dtype}")
    y = y.astype(np.int64)
    if y.ndim > 1 and y.shape[-1] == 1:
        y = y[..., 0]
    if y.size and y.min() < 0:
        raise ValueError(f"to_categorical expects non-negative labels, received {y.min()}")
    n = int(num_classes) if num_classes is not None else (int(y.max()) + 1 if y.size else 0)
    if y.size and y.max() >= n:
        raise ValueError(f"Label {y.max()} is out of range for num_classes={n}")
    out = np.zeros((*y.shape, n), dtype=np.float32)
    np.put_along_axis(out, y[..., None], 1.0, axis=-1)
    return out


def clear_session() -> None:
    """Restart default names from ``dense``, ``sequential``, ... (as Keras' clear_session)."""
    _naming.reset()
