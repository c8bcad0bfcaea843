"""``TerminateOnNaN`` (Keras 3's ``keras/src/callbacks/terminate_on_nan.py``)."""

from __future__ import annotations

import numpy as np

from cdnn.callbacks.callback import Callback

__all__ = ["TerminateOnNaN"]


class TerminateOnNaN(Callback):
    """Stop training as soon as a batch's loss is NaN or infinite (after that batch's update, as Keras)."""

    _stops_on_nonfinite_loss = True

    def _on_run_end(self, first_batch: int, batch_losses: np.ndarray) -> None:
        bad = np.flatnonzero(~np.isfinite(batch_losses))
        if bad.size:
            print(f"Batch {first_batch + int(bad[0])}: Invalid loss, terminating training")
            self.model.stop_training = True
