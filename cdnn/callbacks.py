"""Callbacks with Keras 3's hooks and semantics.

Epoch hooks run between epochs. Batch hooks are honoured only for callbacks
that define them: such a callback makes ``fit`` return to Python after every
batch (slower); without one, runs of batches stay in C.
"""
from __future__ import annotations

import math
import os
import warnings
from typing import Callable, Optional

import numpy as np

__all__ = ["Callback", "History", "EarlyStopping", "ModelCheckpoint", "TerminateOnNaN",
           "LearningRateScheduler", "LambdaCallback"]

_BATCH_HOOKS = ("on_batch_begin", "on_batch_end", "on_train_batch_begin", "on_train_batch_end")
_TEST_BATCH_HOOKS = ("on_test_batch_begin", "on_test_batch_end")
_PREDICT_BATCH_HOOKS = ("on_predict_batch_begin", "on_predict_batch_end")


class Callback:
    """Base class. Override any of the ``on_*`` hooks; ``self.model`` is the model being trained."""

    def __init__(self) -> None:
        self.model = None
        self.params: dict = {}

    def set_model(self, model) -> None:
        self.model = model

    def set_params(self, params: dict) -> None:
        self.params = params

    def on_train_begin(self, logs: Optional[dict] = None) -> None: ...
    def on_train_end(self, logs: Optional[dict] = None) -> None: ...
    def on_epoch_begin(self, epoch: int, logs: Optional[dict] = None) -> None: ...
    def on_epoch_end(self, epoch: int, logs: Optional[dict] = None) -> None: ...
    def on_batch_begin(self, batch: int, logs: Optional[dict] = None) -> None: ...
    def on_batch_end(self, batch: int, logs: Optional[dict] = None) -> None: ...
    def on_train_batch_begin(self, batch: int, logs: Optional[dict] = None) -> None:
        self.on_batch_begin(batch, logs)

    def on_train_batch_end(self, batch: int, logs: Optional[dict] = None) -> None:
        self.on_batch_end(batch, logs)

    def on_test_begin(self, logs: Optional[dict] = None) -> None: ...
    def on_test_end(self, logs: Optional[dict] = None) -> None: ...
    def on_test_batch_begin(self, batch: int, logs: Optional[dict] = None) -> None: ...
    def on_test_batch_end(self, batch: int, logs: Optional[dict] = None) -> None: ...
    def on_predict_begin(self, logs: Optional[dict] = None) -> None: ...
    def on_predict_end(self, logs: Optional[dict] = None) -> None: ...
    def on_predict_batch_begin(self, batch: int, logs: Optional[dict] = None) -> None: ...
    def on_predict_batch_end(self, batch: int, logs: Optional[dict] = None) -> None: ...

    def _on_run_end(self, first_batch: int, batch_losses: np.ndarray) -> None:
        """cdnn's hook after each run of batches in C (their mean losses); no-op by default."""

    #: the core ends a run right after a batch whose loss is NaN or infinite (then _on_run_end)
    _stops_on_nonfinite_loss = False

    def _overrides(self, hooks) -> bool:
        cls = type(self)
        return any(getattr(cls, h) is not getattr(Callback, h) or h in self.__dict__ for h in hooks)

    @property
    def _needs_batches(self) -> bool:
        return self._overrides(_BATCH_HOOKS)

    @property
    def _needs_test_batches(self) -> bool:
        """Whether ``evaluate`` (and validation in ``fit``) must stop after every batch for this callback."""
        return self._overrides(_TEST_BATCH_HOOKS)

    @property
    def _needs_predict_batches(self) -> bool:
        return self._overrides(_PREDICT_BATCH_HOOKS)


class History(Callback):
    """Records the epoch logs: ``history.history["loss"]`` etc.; ``fit`` returns it."""

    def __init__(self) -> None:
        super().__init__()
        self.history: dict[str, list[float]] = {}
        self.epoch: list[int] = []

    def on_train_begin(self, logs=None) -> None:
        self.epoch = []

    def on_epoch_end(self, epoch, logs=None) -> None:
        self.epoch.append(epoch)
        for k, v in (logs or {}).items():
            self.history.setdefault(k, []).append(v)


def _monitor_op(monitor: str, mode: str):
    if mode not in ("auto", "min", "max"):
        raise ValueError(f"Invalid value for argument `mode`: expected 'auto', 'min' or 'max', received mode={mode!r}")
    if mode == "auto":
        mode = "max" if ("acc" in monitor or "auc" in monitor) and "loss" not in monitor else "min"
    return (np.greater if mode == "max" else np.less), mode


class EarlyStopping(Callback):
    """Stop when ``monitor`` has not improved by ``min_delta`` for ``patience`` epochs (Keras 3 rules)."""

    def __init__(self, monitor: str = "val_loss", min_delta: float = 0.0, patience: int = 0, verbose: int = 0,
                 mode: str = "auto", baseline: Optional[float] = None, restore_best_weights: bool = False,
                 start_from_epoch: int = 0) -> None:
        super().__init__()
        self.monitor, self.patience, self.verbose = monitor, int(patience), verbose
        self.baseline, self.restore_best_weights = baseline, restore_best_weights
        self.start_from_epoch = start_from_epoch
        self.monitor_op, self.mode = _monitor_op(monitor, mode)
        self.min_delta = abs(min_delta) if self.mode == "max" else -abs(min_delta)

    def on_train_begin(self, logs=None) -> None:
        self.wait = 0
        self.stopped_epoch = 0
        self.best = None
        self.best_weights = None
        self.best_epoch = 0

    def _is_improvement(self, value, reference) -> bool:
        return reference is None or bool(self.monitor_op(value - self.min_delta, reference))

    def on_epoch_end(self, epoch, logs=None) -> None:
        current = (logs or {}).get(self.monitor)
        if current is None:
            warnings.warn(f"Early stopping conditioned on metric `{self.monitor}` which is not available. "
                          f"Available metrics are: {','.join(logs or {})}", stacklevel=2)
            return
        if epoch < self.start_from_epoch:
            return
        if self.restore_best_weights and self.best_weights is None:
            self.best_weights = self.model.get_weights()
        self.wait += 1
        if self._is_improvement(current, self.best):
            self.best = current
            self.best_epoch = epoch
            if self.restore_best_weights:
                self.best_weights = self.model.get_weights()
            if self.baseline is None or self._is_improvement(current, self.baseline):
                self.wait = 0
            return
        if self.wait >= self.patience and epoch > 0:
            self.stopped_epoch = epoch
            self.model.stop_training = True

    def on_train_end(self, logs=None) -> None:
        if self.stopped_epoch > 0 and self.verbose > 0:
            print(f"Epoch {self.stopped_epoch + 1}: early stopping")
        if self.restore_best_weights and self.best_weights is not None:
            if self.verbose > 0:
                print(f"Restoring model weights from the end of the best epoch: {self.best_epoch + 1}.")
            self.model.set_weights(self.best_weights)


class ModelCheckpoint(Callback):
    """Save the model (or its weights) after every epoch, or only when ``monitor`` improves.

    ``filepath`` may hold Keras' format fields, e.g. ``"ckpt-{epoch:02d}-{val_loss:.2f}.keras"``.
    """

    def __init__(self, filepath: str, monitor: str = "val_loss", verbose: int = 0, save_best_only: bool = False,
                 save_weights_only: bool = False, mode: str = "auto", save_freq="epoch",
                 initial_value_threshold: Optional[float] = None) -> None:
        super().__init__()
        if save_freq != "epoch":
            raise ValueError(f"Invalid value for argument `save_freq`: cdnn supports 'epoch', received {save_freq!r}")
        self.filepath = os.fspath(filepath)
        self.monitor, self.verbose = monitor, verbose
        self.save_best_only, self.save_weights_only = save_best_only, save_weights_only
        self.monitor_op, self.mode = _monitor_op(monitor, mode)
        self.best = initial_value_threshold if initial_value_threshold is not None else (
            -math.inf if self.mode == "max" else math.inf)

    def on_train_begin(self, logs=None) -> None:
        # a .keras or .h5 checkpoint needs h5py: say so now, not after the first epoch's training
        if self.filepath.lower().endswith((".keras", ".h5", ".hdf5")):
            from cdnn.saving import keras_format

            keras_format.h5py()

    def _path(self, epoch: int, logs: dict) -> str:
        try:
            return self.filepath.format(epoch=epoch + 1, **logs)
        except KeyError as exc:
            raise KeyError(f"ModelCheckpoint: the filepath {self.filepath!r} names {exc}, which is not in the "
                           f"logs (available: {', '.join(logs)})") from None

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
                print(f"\nEpoch {epoch + 1}: {self.monitor} improved from {self.best:.5f} to {current:.5f}, "
                      f"saving model to {path}")
            self.best = current
        elif self.verbose > 0:
            print(f"\nEpoch {epoch + 1}: saving model to {path}")
        if self.save_weights_only:
            self.model.save_weights(path)
        else:
            self.model.save(path)


class TerminateOnNaN(Callback):
    """Stop training as soon as a batch's loss is NaN or infinite (after that batch's update, as Keras)."""

    _stops_on_nonfinite_loss = True

    def _on_run_end(self, first_batch: int, batch_losses: np.ndarray) -> None:
        bad = np.flatnonzero(~np.isfinite(batch_losses))
        if bad.size:
            print(f"Batch {first_batch + int(bad[0])}: Invalid loss, terminating training")
            self.model.stop_training = True


class LearningRateScheduler(Callback):
    """Set the optimizer's learning rate at each epoch from ``schedule(epoch, lr)``."""

    def __init__(self, schedule: Callable[..., float], verbose: int = 0) -> None:  # (epoch, lr) or (epoch)
        super().__init__()
        self.schedule, self.verbose = schedule, verbose

    def on_epoch_begin(self, epoch, logs=None) -> None:
        try:
            lr = self.schedule(epoch, self.model.optimizer.learning_rate)
        except TypeError:  # Keras also accepts the old one-argument schedule(epoch)
            lr = self.schedule(epoch)
        if isinstance(lr, bool) or not isinstance(lr, (int, float, np.floating, np.integer)):
            raise ValueError(f"The output of the `schedule` function should be a float, received {lr!r} "
                             f"at epoch {epoch}")
        lr = float(lr)
        self.model.optimizer.learning_rate = lr
        if self.verbose > 0:
            print(f"\nEpoch {epoch + 1}: LearningRateScheduler setting learning rate to {lr}.")

    def on_epoch_end(self, epoch, logs=None) -> None:
        if logs is not None:
            logs["learning_rate"] = float(self.model.optimizer.learning_rate)


class LambdaCallback(Callback):
    """A callback from plain functions: ``LambdaCallback(on_epoch_end=lambda epoch, logs: ...)``."""

    def __init__(self, on_epoch_begin=None, on_epoch_end=None, on_train_begin=None, on_train_end=None,
                 on_train_batch_begin=None, on_train_batch_end=None, **kwargs) -> None:
        super().__init__()
        hooks = dict(on_epoch_begin=on_epoch_begin, on_epoch_end=on_epoch_end, on_train_begin=on_train_begin,
                     on_train_end=on_train_end, on_train_batch_begin=on_train_batch_begin,
                     on_train_batch_end=on_train_batch_end)
        for name, fn in kwargs.items():  # as Keras 3: any other hook, e.g. on_test_end=...
            if not (name.startswith("on_") and callable(getattr(Callback, name, None))):
                raise TypeError(f"LambdaCallback: unknown hook {name!r}")
            hooks[name] = fn
        for hook, fn in hooks.items():
            if fn is not None:
                setattr(self, hook, fn)
