"""``ProgbarLogger`` (Keras 3's ``keras/src/callbacks/progbar_logger.py``)."""

from __future__ import annotations

from cdnn.callbacks.callback import Callback

__all__ = ["ProgbarLogger"]


class ProgbarLogger(Callback):
    """The progress bar of ``fit``, ``evaluate`` and ``predict``.

    As in Keras, the models add one when ``verbose`` is not 0 and a given one
    replaces it; cdnn's loop draws the bar between runs of batches in C (so a
    bar never makes training stop per batch), with ``verbose`` from the call.
    """

    def __init__(self) -> None:
        super().__init__()
        self.verbose = 1

    def set_params(self, params: dict) -> None:
        super().set_params(params)
        self.verbose = params.get("verbose", 1)
