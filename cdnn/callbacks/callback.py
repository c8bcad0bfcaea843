"""The ``Callback`` base class: Keras 3's hooks, and which of them make ``fit`` stop per batch.

Epoch hooks run between epochs. Batch hooks are honoured only for callbacks
that define them: such a callback makes ``fit`` return to Python after every
batch (slower); without one, runs of batches stay in C.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

__all__ = ["Callback"]

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
