"""``keras.utils.PyDataset``: a dataset of batches indexed in Python (Keras 3's
``keras/src/trainers/data_adapters/py_dataset_adapter.py``)."""

from __future__ import annotations

import warnings

__all__ = ["PyDataset"]


class PyDataset:
    """Base class of a dataset of batches: define ``__len__`` (number of batches) and
    ``__getitem__(index)`` returning ``(x, y)`` or ``(x, y, sample_weight)``; ``on_epoch_end`` runs
    after every epoch (e.g. to shuffle).

    ``workers``, ``use_multiprocessing`` and ``max_queue_size`` are accepted for Keras
    compatibility; cdnn reads the batches in order in the training thread (the C core
    trains each run of batches with every thread already).
    """

    def __init__(self, workers: int = 1, use_multiprocessing: bool = False, max_queue_size: int = 10) -> None:
        self._workers = workers
        self._use_multiprocessing = use_multiprocessing
        self._max_queue_size = max_queue_size
        if workers > 1 or use_multiprocessing:
            warnings.warn(
                "PyDataset: cdnn reads batches in the training thread; `workers` and `use_multiprocessing` are ignored",
                stacklevel=2,
            )

    @property
    def workers(self) -> int:
        return self._workers

    @property
    def use_multiprocessing(self) -> bool:
        return self._use_multiprocessing

    @property
    def max_queue_size(self) -> int:
        return self._max_queue_size

    def __getitem__(self, index: int):
        raise NotImplementedError(f"{type(self).__name__} must define __getitem__(index)")

    def __len__(self) -> int:
        raise NotImplementedError(f"{type(self).__name__} must define __len__() (or num_batches)")

    @property
    def num_batches(self):
        """Batches per epoch (``len(self)``; None for an endless dataset)."""
        if hasattr(self, "__len__"):
            return len(self)
        return None

    def on_epoch_begin(self) -> None:
        """Called before each epoch."""

    def on_epoch_end(self) -> None:
        """Called after each epoch."""
