"""Adafactor (keras/src/optimizers/adafactor.py)."""

from __future__ import annotations

from cdnn.optimizers.base_optimizer import Optimizer, _is_number, _positive
from cdnn.optimizers.schedules import LearningRateSchedule


class Adafactor(Optimizer):
    """Factored second moments: a kernel keeps one mean per row (r) and per column (c) of the squared
    gradients, a bias the full average (v); the update ``g / sqrt(v)`` is clipped to an RMS of
    ``clip_threshold`` and scaled by ``max(epsilon_2, rms(w)) * min(lr, 1/sqrt(t))``."""

    core_name = "adafactor"

    def __init__(
        self,
        learning_rate=0.001,
        beta_2_decay: float = -0.8,
        epsilon_1: float = 1e-30,
        epsilon_2: float = 1e-3,
        clip_threshold: float = 1.0,
        relative_step: bool = True,
        name: str | None = None,
        **kwargs,
    ) -> None:
        super().__init__(learning_rate, name=name, **kwargs)
        if not _is_number(beta_2_decay):
            raise ValueError(f"Invalid value for argument `beta_2_decay`: expected a number, received {beta_2_decay!r}")
        self.beta_2_decay = float(beta_2_decay)
        _positive(epsilon_1, "epsilon_1", allow_zero=True)
        _positive(epsilon_2, "epsilon_2", allow_zero=True)
        _positive(clip_threshold, "clip_threshold")
        self.epsilon_1, self.epsilon_2 = float(epsilon_1), float(epsilon_2)
        self.clip_threshold = float(clip_threshold)
        self.relative_step = bool(relative_step)

    def _slot_specs(self, shape):
        if len(shape) >= 2:
            return [(shape[:-1], 0.0), (shape[-1:], 0.0), (shape, 0.0)]
        return [None, None, (shape, 0.0)]

    def _fields(self) -> dict:
        return {
            "beta_2_decay": self.beta_2_decay,
            "epsilon_1": self.epsilon_1,
            "epsilon_2": self.epsilon_2,
            "clip_threshold": self.clip_threshold,
            "relative_step": self.relative_step,
        }

    def hyperparameters(self) -> dict:
        h = {**super().hyperparameters(), **self._fields()}
        # Keras caps the rate at 1/sqrt(t) only for a constant learning rate
        h["relative_step"] = self.relative_step and not (
            isinstance(self._learning_rate, LearningRateSchedule) or callable(self._learning_rate)
        )
        return h

    def get_config(self) -> dict:
        return {**super().get_config(), **self._fields()}
