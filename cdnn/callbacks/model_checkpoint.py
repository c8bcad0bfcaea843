"""``ModelCheckpoint`` (Keras 3's ``keras/src/callbacks/model_checkpoint.py``)."""

from __future__ import annotations

import math
import os
import warnings
from typing import Optional

from cdnn.callbacks.callback import Callback
from cdnn.callbacks.monitor_callback import _monitor_op

__all__ = ["ModelCheckpoint"]


class ModelCheckpoint(Callback):
    """Save the model (or its weights) after every epoch, or only when ``monitor`` improves.

    ``filepath`` may hold Keras' format fields, e.g. ``"ckpt-{epoch:02d}-{val_loss:.2f}.keras"``.
    """

    def __init__(
        self,
        filepath: str,
        monitor: str = "val_loss",
        verbose: int = 0,
        save_best_only: bool = False,
        save_weights_only: bool = False,
        mode: str = "auto",
        save_freq="epoch",
        initial_value_threshold: Optional[float] = None,
    ) -> None:
        super().__init__()
        if save_freq != "epoch":
            raise ValueError(f"Invalid value for argument `save_freq`: cdnn supports 'epoch', received {save_freq!r}")
        self.filepath = os.fspath(filepath)
        self.monitor, self.verbose = monitor, verbose
        self.save_best_only, self.save_weights_only = save_best_only, save_weights_only
        self.monitor_op, self.mode = _monitor_op(monitor, mode)
        self.best = (
            initial_value_threshold
            if initial_value_threshold is not None
            else (-math.inf if self.mode == "max" else math.inf)
        )

    def on_train_begin(self, logs=None) -> None:
        # a .keras or .h5 checkpoint needs h5py: say so now, not after the first epoch's training
        if self.filepath.lower().endswith((".keras", ".h5", ".hdf5")):
            from cdnn.saving import keras_format

            keras_format.h5py()

    def _path(self, epoch: int, logs: dict) -> str:
        try:
            return self.filepath.format(epoch=epoch + 1, **logs)
        except KeyError as exc:
            raise KeyError(
                f"ModelCheckpoint: the filepath {self.filepath!r} names {exc}, which is not in the "
                f"logs (available: {', '.join(logs)})"
            ) from None

    def on_epoch_end(self, epoch, logs=None) -> None:
        logs = logs or {}
        path = self._path(epoch, logs)
        directory = os.path.dirname(path)
        if directory:  # as Keras: a checkpoint's folder is made if missing ("training_1/cp.weights.h5")
            os.makedirs(directory, exist_ok=True)
        if self.save_best_only:
            current = logs.get(self.monitor)
            if current is None:
                warnings.warn(f"Can save best model only with {self.monitor} available, skipping.", stacklevel=2)
                return
            if not self.monitor_op(current, self.best):
                if self.verbose > 0:
                    print(f"\nEpoch {epoch + 1}: {self.monitor} did not improve from {self.best:.5f}")
                return
            if self.verbose > 0:
                print(
                    f"\nEpoch {epoch + 1}: {self.monitor} improved from {self.best:.5f} to {current:.5f}, "
                    f"saving model to {path}"
                )
            self.best = current
        elif self.verbose > 0:
            print(f"\nEpoch {epoch + 1}: saving model to {path}")
        if self.save_weights_only:
            self.model.save_weights(path)
        else:
            self.model.save(path)
