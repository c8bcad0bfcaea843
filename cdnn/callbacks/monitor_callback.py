"""Which way a monitored quantity improves (Keras 3's ``keras/src/callbacks/monitor_callback.py``)."""

from __future__ import annotations

import warnings

import numpy as np

from cdnn.callbacks.callback import Callback

__all__ = ["MonitorCallback"]


def _monitor_op(monitor: str, mode: str):
    if mode not in ("auto", "min", "max"):
        raise ValueError(f"Invalid value for argument `mode`: expected 'auto', 'min' or 'max', received mode={mode!r}")
    if mode == "auto":
        mode = "max" if ("acc" in monitor or "auc" in monitor) and "loss" not in monitor else "min"
    return (np.greater if mode == "max" else np.less), mode


class MonitorCallback(Callback):
    """Base of callbacks that watch a logged quantity: ``mode`` "min", "max", or "auto" (the loss
    decreases; a compiled metric goes the way it declares, e.g. AUC up, mae down)."""

    def __init__(self, monitor: str = "val_loss", mode: str = "auto", baseline=None, min_delta: float = 0) -> None:
        super().__init__()
        if mode not in ("auto", "min", "max"):
            warnings.warn(f"{type(self).__name__} mode '{mode}' is unknown, fallback to auto mode.", stacklevel=2)
            mode = "auto"
        self.monitor, self.mode, self.best = monitor, mode, baseline
        self.min_delta = abs(min_delta)
        self.monitor_op = None

    def _set_monitor_op(self) -> None:
        if self.mode == "min":
            self.monitor_op = np.less
        elif self.mode == "max":
            self.monitor_op = np.greater
        else:
            name = self.monitor.removeprefix("val_")
            if name == "loss":
                self.monitor_op = np.less
            compiled = getattr(self.model, "_compile_metrics", None)
            for m in compiled.metrics if compiled is not None else []:
                direction = getattr(m, "_direction", None)
                if m.name == name and direction is not None:
                    self.monitor_op = np.greater if direction == "up" else np.less
            if self.monitor_op is None:
                raise ValueError(
                    f"{type(self).__name__} callback received monitor={self.monitor}, but cdnn isn't able "
                    f"to automatically determine whether that metric should be maximized or minimized. "
                    f"Pass `mode='max'` in order to monitor based on the highest metric value, or pass "
                    f"`mode='min'` in order to use the lowest value."
                )
        if self.monitor_op is np.less:
            self.min_delta *= -1

    def _is_improvement(self, value, reference) -> bool:
        return reference is None or bool(self.monitor_op(value - self.min_delta, reference))
