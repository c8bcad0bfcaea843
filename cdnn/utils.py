"""Utilities: seeding, label encoding, splitting a data set, logging, and the session's name counters."""

from __future__ import annotations

import random
from typing import Optional

import numpy as np

from cdnn import _naming, _random
from cdnn._errors import invalid
from cdnn._io_utils import disable_interactive_logging, enable_interactive_logging, is_interactive_logging_enabled
from cdnn.trainers.py_dataset import PyDataset

__all__ = [
    "set_random_seed",
    "to_categorical",
    "split_dataset",
    "clear_session",
    "disable_interactive_logging",
    "enable_interactive_logging",
    "is_interactive_logging_enabled",
    "PyDataset",
]


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


def _split_size(value, name: str, total: int) -> Optional[int]:
    """``left_size``/``right_size`` as a count: a fraction in (0, 1) of ``total`` (rounded) or a count in (0, total)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(
            f"Invalid type for argument `{name}`: expected an int, a float or None, "
            f"received {name}={value!r} of type {type(value).__name__}"
        )
    if isinstance(value, (float, np.floating)):
        if not 0 < value < 1:
            raise ValueError(
                f"Invalid value for argument `{name}`: expected a fraction in (0, 1) or a number of "
                f"samples in (0, {total}), received {name}={value}"
            )
        return round(float(value) * total)
    if not 0 < value < total:
        raise ValueError(
            f"Invalid value for argument `{name}`: expected a number of samples in (0, {total}) or a "
            f"fraction in (0, 1), received {name}={value}"
        )
    return int(value)


def split_dataset(dataset, left_size=None, right_size=None, shuffle: bool = False, seed: Optional[int] = None):
    """Split arrays into a left part and a right part (e.g. training and validation), as Keras 3 does.

    Parameters
    ----------
    dataset : numpy.ndarray, or tuple or list of arrays of the same length
        The samples along the first axis, e.g. ``(x, y)``.
    left_size, right_size : int, float or None
        A float in (0, 1) is a fraction of the samples (rounded), an int a
        number of samples. Either one may be None: it is then the rest. When
        both are given and sum to less than the whole, the samples between
        the two parts are left out (the right part is always the last samples).
    shuffle : bool, default False
        Shuffle the samples (the same order for every array) before splitting.
    seed : int, optional
        Seed of the shuffle; the same seed gives the same split.

    Returns
    -------
    (left, right)
        Each of the same structure as ``dataset``: an array, or a tuple (list)
        of arrays. Keras returns ``tf.data`` or torch datasets; cdnn, whose
        ``fit`` takes arrays, returns arrays.

    Examples
    --------
    >>> (x_train, y_train), (x_val, y_val) = split_dataset((x, y), left_size=0.8, shuffle=True, seed=1)
    """
    if isinstance(dataset, np.ndarray):
        arrays, kind = [dataset], "array"
    elif isinstance(dataset, (tuple, list)):
        arrays, kind = list(dataset), type(dataset)
        if not arrays:
            raise ValueError(
                f"Invalid argument `dataset`: expected arrays of samples, received an empty {type(dataset).__name__}"
            )
        for i, a in enumerate(arrays):
            if not isinstance(a, np.ndarray):
                raise TypeError(
                    f"Invalid argument `dataset`: expected NumPy arrays, received {type(a).__name__} at index {i}"
                )
    else:
        raise TypeError(
            f"Invalid argument `dataset`: expected a NumPy array or a tuple or list of arrays, "
            f"received {type(dataset).__name__}"
        )
    if any(a.ndim == 0 for a in arrays):
        raise ValueError(
            "Invalid argument `dataset`: expected arrays with samples along the first axis, received a 0-d array"
        )
    total = len(arrays[0])
    if any(len(a) != total for a in arrays):
        raise ValueError(
            f"Invalid argument `dataset`: expected arrays of the same length, received lengths "
            f"{[len(a) for a in arrays]}"
        )
    if left_size is None and right_size is None:
        raise ValueError(
            "At least one of the `left_size` or `right_size` must be specified. "
            "Received: left_size=None and right_size=None"
        )
    if (
        isinstance(left_size, (float, np.floating))
        and isinstance(right_size, (float, np.floating))
        and left_size + right_size > 1
    ):
        raise ValueError(f"Invalid split: left_size + right_size = {left_size} + {right_size} is more than 1")
    left = _split_size(left_size, "left_size", total)
    right = _split_size(right_size, "right_size", total)
    left = total - right if left is None else left
    right = total - left if right is None else right
    if left + right > total:
        raise ValueError(
            f"Invalid split: left_size + right_size = {left} + {right} samples, more than the {total} in `dataset`"
        )
    if left == 0 or right == 0:
        raise ValueError(
            f"Invalid split: with {total} samples, left_size={left_size} and right_size={right_size} "
            f"leave the {'left' if left == 0 else 'right'} part empty"
        )
    if shuffle:
        order = np.random.default_rng(seed).permutation(total)
        parts = ([a[order[:left]] for a in arrays], [a[order[total - right :]] for a in arrays])
    else:
        parts = ([a[:left] for a in arrays], [a[total - right :] for a in arrays])
    if kind == "array":
        return parts[0][0], parts[1][0]
    return kind(parts[0]), kind(parts[1])


def clear_session() -> None:
    """Restart default names from ``dense``, ``sequential``, ... (as Keras' clear_session)."""
    _naming.reset()
