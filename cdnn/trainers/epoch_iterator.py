"""The batches of an epoch, handed to the C core run by run (Keras 3's ``EpochIterator``).

Arrays are trained in place: a run is a slice of the epoch's permutation,
gathered by the core. A Python generator or a ``PyDataset`` gives one
batch at a time: the batches of a run (as many as the thread chooser asks,
of one size) are stacked into one array and trained in one core call, with
their sample weights when a batch ``(x, y, sample_weight)`` has some (weight 1
for the samples of the run's batches without).

As in Keras, ``steps_per_epoch`` walks on through the data from one epoch to
the next, starting a new pass (a new shuffle) only when the data is used up;
an epoch that runs out of data ends early with a warning.
"""

from __future__ import annotations

import inspect
import itertools
import warnings
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

from cdnn.trainers.py_dataset import PyDataset

__all__ = [
    "Run",
    "ArrayEpochs",
    "BatchEpochs",
    "is_batch_source",
    "check_batch_source_args",
    "refuse_sample_weight_arg",
]

#: batches of an epoch of unknown length handed to the chooser as "left" (it caps a run's length)
_UNKNOWN_LEFT = 1 << 30


def is_batch_source(x) -> bool:
    """Whether ``x`` yields batches (a generator, an iterator, a PyDataset) rather than being the data."""
    if isinstance(x, PyDataset):
        return True
    if x is None or isinstance(x, (np.ndarray, list, tuple, str, bytes, dict)):
        return False
    if hasattr(x, "__array__") or hasattr(x, "to_numpy"):  # arrays, pandas
        return False
    return inspect.isgenerator(x) or hasattr(x, "__next__") or (hasattr(x, "__iter__") and not hasattr(x, "shape"))


def _source_kind(source) -> str:
    """How Keras names a batch source in its messages."""
    return "PyDataset" if isinstance(source, PyDataset) else "generator"


def refuse_sample_weight_arg(source, sample_weight) -> None:
    """Refuse ``sample_weight=`` beside a generator or PyDataset ``x`` (Keras' words: its batches carry them)."""
    if sample_weight is not None:
        kind = _source_kind(source)
        raise ValueError(
            f"When providing `x` as a {kind}, `sample_weights` should not be passed. Instead, the sample "
            f"weights should be included as part of the {kind}."
        )


def check_batch_source_args(source, y, validation_split, sample_weight, class_weight) -> None:
    """Refuse what ``fit`` cannot take with a generator or PyDataset ``x`` (as Keras 3's data adapters:
    ``class_weight`` goes with a PyDataset only)."""
    if y is not None:
        raise ValueError(
            f"Invalid argument `y`: when `x` is a generator or a PyDataset it yields the labels, "
            f"received y of type {type(y).__name__}"
        )
    if validation_split:
        raise ValueError(
            "`validation_split` is only supported for arrays, not for a generator or a PyDataset: pass validation_data"
        )
    refuse_sample_weight_arg(source, sample_weight)
    if class_weight is not None and not isinstance(source, PyDataset):
        raise ValueError(
            f"Argument `class_weight` is not supported for Python generator inputs. Received: "
            f"class_weight={class_weight}"
        )


@dataclass
class Run:
    """One core call's work: batches ``first .. first + k`` of ``perm`` over ``xs``/``ys``."""

    xs: Any  # an array, or a graph's list of them (ys and sw per output then)
    ys: Any
    perm: np.ndarray
    first: int
    k: int
    batch_size: int
    sw: Any = None  # float32 weights of the rows of xs, or None

    def rows(self, k: int) -> np.ndarray:
        """The dataset rows of the run's first ``k`` batches (in batch order)."""
        return self.perm[self.first * self.batch_size : min(len(self.perm), (self.first + k) * self.batch_size)]

    def batch_rows(self, k: int) -> np.ndarray:
        """Rows of each of the run's first ``k`` batches."""
        starts = (self.first + np.arange(k)) * self.batch_size
        return np.minimum(self.batch_size, len(self.perm) - starts)


class ArrayEpochs:
    """Epochs over arrays (already checked and converted), shuffled per pass if ``shuffle``: ``xs`` one
    array, or a list of them (a graph's inputs, ``ys`` and ``sw`` then per output)."""

    def __init__(
        self,
        xs,
        ys,
        batch_size: int,
        shuffle: bool,
        steps_per_epoch: Optional[int],
        sw=None,
    ) -> None:
        self.xs, self.ys, self.batch_size, self.shuffle, self.sw = xs, ys, batch_size, shuffle, sw
        self.n = len(xs[0]) if isinstance(xs, list) else len(xs)
        self.num_batches = -(-self.n // batch_size)
        self.steps = steps_per_epoch or self.num_batches
        self._steps_per_epoch = steps_per_epoch
        self.perm: Optional[np.ndarray] = None
        self.pos = 0

    def begin_epoch(self, rng: np.random.Generator) -> int:
        """Start an epoch; returns the dropout seed of its steps (drawn after the permutation, if any)."""
        if self.perm is None or self.pos >= self.num_batches or not self._steps_per_epoch:
            n = self.n
            self.perm = (rng.permutation(n) if self.shuffle else np.arange(n)).astype(np.int32)
            self.pos = 0
        return int(rng.integers(0, 2**63))

    def left(self, done: int) -> int:
        return min(self.steps - done, self.num_batches - self.pos)

    def next_run(self, k: int, model) -> Optional[Run]:
        if self.pos >= self.num_batches:
            warnings.warn(
                f"Your input ran out of data; interrupting epoch. Make sure that your dataset or generator "
                f"can generate at least `steps_per_epoch * epochs` batches ({self.steps} per epoch).",
                stacklevel=4,
            )
            return None
        return Run(self.xs, self.ys, self.perm, self.pos, min(k, self.num_batches - self.pos), self.batch_size, self.sw)

    def advance(self, k: int) -> None:
        self.pos += k

    def end_epoch(self) -> None:
        pass


def _rows(a) -> int:
    """Samples of prepared data: one array, or a graph's list of them."""
    return len(a[0]) if isinstance(a, list) else len(a)


def _stack(parts: list):
    """Prepared batches as one: arrays concatenated, or a graph's lists element by element (None stays None)."""
    if len(parts) == 1:
        return parts[0]
    if isinstance(parts[0], list):
        return [None if p[0] is None else np.concatenate(p) for p in zip(*parts)]
    return np.concatenate(parts)


def _stack_weights(parts: list, rows: list):
    """Prepared sample weights of batches of ``rows`` samples as one (an array, or a graph's list by output).

    None if no batch has any; else a batch without weights (or an output without them in a batch)
    gets weights 1, as Keras computes an unweighted batch: the core's results are the same bits.
    """
    if all(p is None for p in parts):
        return None
    if len(parts) == 1:
        return parts[0]
    if any(isinstance(p, list) for p in parts):
        n_out = len(next(p for p in parts if p is not None))
        out = [_stack_weights([None if p is None else p[o] for p in parts], rows) for o in range(n_out)]
        return out if any(w is not None for w in out) else None
    return np.concatenate([np.ones(r, np.float32) if p is None else p for p, r in zip(parts, rows)])


class BatchEpochs:
    """Epochs over a generator, an iterator or a PyDataset yielding ``(x, y)`` or ``(x, y, sample_weight)``
    batches; with ``class_weight`` (a PyDataset's, as Keras) each ``(x, y)`` batch is weighted by class."""

    def __init__(
        self, source, steps_per_epoch: Optional[int], name: str = "x", class_weight=None, shuffle=False
    ) -> None:
        self.source, self.name, self.class_weight = source, name, class_weight
        self._steps_per_epoch = steps_per_epoch
        self.is_dataset = isinstance(source, PyDataset)
        self.num_batches = source.num_batches if self.is_dataset else None
        # as Keras: fit(shuffle=True) reads a finite PyDataset's batches in a new order at each pass
        self.shuffle = bool(shuffle) and self.is_dataset and self.num_batches is not None
        if shuffle and self.is_dataset and self.num_batches is None:
            warnings.warn(
                "`shuffle=True` was passed, but will be ignored since the data `x` was provided as an infinite "
                "PyDataset. The PyDataset is expected to already be shuffled.",
                stacklevel=4,
            )
        self._rng: Optional[np.random.Generator] = None
        self.steps = steps_per_epoch or self.num_batches  # None: until the generator ends
        self._iterator = None
        self._exhausted = False
        self._pending = None  # a batch read but not trained yet (of another size than its run's)
        self.batch_size = None

    def _batches(self):
        if not self.is_dataset:
            return iter(self.source)
        n = self.num_batches
        order = itertools.count() if n is None else self._rng.permutation(n) if self.shuffle else range(n)
        return (self.source[int(i)] for i in order)

    def begin_epoch(self, rng: np.random.Generator) -> int:
        self._rng = rng
        if self.is_dataset:
            self.source.on_epoch_begin()
        if self._iterator is None or (self.is_dataset and not self._steps_per_epoch):
            self._iterator = iter(self._batches())
            self._exhausted = False
        return int(rng.integers(0, 2**63))

    def left(self, done: int) -> int:
        return self.steps - done if self.steps else _UNKNOWN_LEFT

    def _next_batch(self):
        if self._pending is not None:
            batch, self._pending = self._pending, None
            return batch
        if self._exhausted:
            return None
        try:
            return next(self._iterator)
        except StopIteration:
            self._exhausted = True
            if self.is_dataset and self._steps_per_epoch:  # a PyDataset starts a new pass
                self._iterator = iter(self._batches())
            return None

    def _unpack(self, batch):
        if not isinstance(batch, (tuple, list)) or not 1 <= len(batch) <= 3:
            raise ValueError(
                f"Invalid batch from `{self.name}`: expected a tuple (x, y) or (x, y, sample_weight), "
                f"received {type(batch).__name__}"
            )
        if len(batch) == 1 or batch[1] is None:
            raise ValueError(f"Invalid batch from `{self.name}`: training and evaluation need labels, a tuple (x, y)")
        if len(batch) == 3 and self.class_weight is not None:  # as Keras, also when the weights are None
            raise ValueError(
                f"You cannot specify `class_weight` and `sample_weight` at the same time. (`{self.name}` "
                f"yielded a batch (x, y, sample_weight) and fit was given class_weight)"
            )
        return batch[0], batch[1], batch[2] if len(batch) == 3 else None

    def _prepare(self, batch, model) -> tuple:
        """A batch's ``(x, y, sample_weight)`` checked and converted by ``model`` (weights None if none)."""
        x, y, sw = self._unpack(batch)
        x = model._prepare_x(x, f"{self.name} (a batch)")
        n = _rows(x)
        y = model._prepare_y(y, n, f"y of a batch of `{self.name}`")
        if self.class_weight is not None:
            return x, y, model._class_sample_weight(self.class_weight, y)
        return x, y, model._prepare_sample_weight(sw, n, f"sample_weight of a batch of `{self.name}`")

    def next_run(self, k: int, model) -> Optional[Run]:
        """Up to ``k`` batches of one size, checked and stacked (None when the data has ended)."""
        xs, ys, sws, size = [], [], [], None
        while len(xs) < k:
            batch = self._next_batch()
            if batch is None:
                break
            x, y, sw = self._prepare(batch, model)
            if size is not None and _rows(x) != size:
                self._pending = batch  # as read: prepared again with the next run
                break
            size = _rows(x)
            xs.append(x)
            ys.append(y)
            sws.append(sw)
            if size < (self.batch_size or size):  # a short batch ends the run (the last of a pass)
                break
            self.batch_size = max(self.batch_size or 0, size)
        if not xs:
            if self.steps and self._steps_per_epoch:
                warnings.warn(
                    f"Your input ran out of data; interrupting epoch. Make sure that your dataset or "
                    f"generator can generate at least `steps_per_epoch * epochs` batches "
                    f"({self.steps} per epoch).",
                    stacklevel=4,
                )
            return None
        x, y = _stack(xs), _stack(ys)
        sw = _stack_weights(sws, [size] * len(xs))
        return Run(x, y, np.arange(_rows(x), dtype=np.int32), 0, len(xs), size, sw)

    def advance(self, k: int) -> None:
        pass

    def end_epoch(self) -> None:
        if self.is_dataset:
            self.source.on_epoch_end()


def batches_of(source, steps: Optional[int], name: str, model, with_labels: bool = True):
    """The ``(x, y, sample_weight)`` (or ``x``) batches of a generator or PyDataset for ``evaluate``/``predict``
    (``sample_weight`` None for a batch without weights)."""
    epochs = BatchEpochs(source, steps, name)
    epochs.begin_epoch(np.random.default_rng(0))
    done = 0
    while steps is None or done < steps:
        batch = epochs._next_batch()
        if batch is None:
            break
        if with_labels:
            yield epochs._prepare(batch, model)
        else:
            x = batch[0] if isinstance(batch, (tuple, list)) else batch
            yield model._prepare_x(x, f"{name} (a batch)")
        done += 1
    epochs.end_epoch()
