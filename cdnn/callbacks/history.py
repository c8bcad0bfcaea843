"""``History``: the epoch logs of ``fit`` (Keras 3's ``keras/src/callbacks/history.py``)."""

from __future__ import annotations

from cdnn.callbacks.callback import Callback

__all__ = ["History"]


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
