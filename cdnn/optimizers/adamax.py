"""Adamax (keras/src/optimizers/adamax.py)."""

from __future__ import annotations

from cdnn.optimizers.base_optimizer import Optimizer, _fraction, _positive


class Adamax(Optimizer):
    """``m += (g-m)(1-beta_1)``; ``u = max(beta_2*u, |g|)``; ``w -= lr*m / ((1-beta_1**t)(u + epsilon))``."""

    core_name = "adamax"
    _own_fields = ("beta_1", "beta_2", "epsilon")

    def __init__(
        self,
        learning_rate=0.001,
        beta_1: float = 0.9,
        beta_2: float = 0.999,
        epsilon: float = 1e-7,
        name: str | None = None,
        **kwargs,
    ) -> None:
        super().__init__(learning_rate, name=name, **kwargs)
        self.beta_1 = _fraction(beta_1, "beta_1")
        self.beta_2 = _fraction(beta_2, "beta_2")
        _positive(epsilon, "epsilon", allow_zero=True)
        self.epsilon = float(epsilon)

    def _slot_specs(self, shape):
        return [(shape, 0.0), (shape, 0.0), None]
