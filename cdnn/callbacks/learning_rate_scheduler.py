"""``LearningRateScheduler`` (Keras 3's ``keras/src/callbacks/learning_rate_scheduler.py``)."""

from __future__ import annotations

from typing import Callable

import numpy as np

from cdnn.callbacks.callback import Callback

__all__ = ["LearningRateScheduler"]


class LearningRateScheduler(Callback):
    """Set the optimizer's learning rate at each epoch from ``schedule(epoch, lr)``."""

    def __init__(self, schedule: Callable[..., float], verbose: int = 0) -> None:  # (epoch, lr) or (epoch)
        super().__init__()
        self.schedule, self.verbose = schedule, verbose

    def on_epoch_begin(self, epoch, logs=None) -> None:
        # Keras reads its float32 variable: the schedule receives (and the logs hold) that value
        current = float(np.float32(self.model.optimizer.learning_rate))
        try:
            lr = self.schedule(epoch, current)
        except TypeError:  # Keras also accepts the old one-argument schedule(epoch)
            lr = self.schedule(epoch)
        if not isinstance(lr, (float, np.float32, np.float64)):  # Keras 3's test and words
            raise ValueError(f"The output of the `schedule` function should be a float. Got: {lr}")
        self.model.optimizer.learning_rate = float(lr)
        if self.verbose > 0:
            print(f"\nEpoch {epoch + 1}: LearningRateScheduler setting learning rate to {lr}.")

    def on_epoch_end(self, epoch, logs=None) -> None:
        if logs is not None:
            logs["learning_rate"] = float(np.float32(self.model.optimizer.learning_rate))
