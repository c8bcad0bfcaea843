"""Adagrad (keras/src/optimizers/adagrad.py)."""

from __future__ import annotations

from cdnn.optimizers.base_optimizer import Optimizer, _positive


class Adagrad(Optimizer):
    """``a += g**2``; ``w -= lr*g / sqrt(a + epsilon)``."""

    core_name = "adagrad"
    _own_fields = ("initial_accumulator_value", "epsilon")

    def __init__(
        self,
        learning_rate=0.001,
        initial_accumulator_value: float = 0.1,
        epsilon: float = 1e-7,
        name: str | None = None,
        **kwargs,
    ) -> None:
        super().__init__(learning_rate, name=name, **kwargs)
        _positive(initial_accumulator_value, "initial_accumulator_value", allow_zero=True)
        _positive(epsilon, "epsilon", allow_zero=True)
        self.initial_accumulator_value = float(initial_accumulator_value)
        self.epsilon = float(epsilon)

    def _slot_specs(self, shape):
        return [(shape, self.initial_accumulator_value), None, None]
