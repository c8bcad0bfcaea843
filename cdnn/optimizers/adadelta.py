"""Adadelta (keras/src/optimizers/adadelta.py)."""

from __future__ import annotations

from cdnn.optimizers.base_optimizer import Optimizer, _fraction, _positive


class Adadelta(Optimizer):
    """``a = rho*a + (1-rho)*g**2``; ``d = -sqrt(D + eps)*g / sqrt(a + eps)``; ``D = rho*D + (1-rho)*d**2``;
    ``w += lr*d``."""

    core_name = "adadelta"
    _own_fields = ("rho", "epsilon")

    def __init__(
        self, learning_rate=0.001, rho: float = 0.95, epsilon: float = 1e-7, name: str | None = None, **kwargs
    ) -> None:
        super().__init__(learning_rate, name=name, **kwargs)
        self.rho = _fraction(rho, "rho")
        _positive(epsilon, "epsilon", allow_zero=True)
        self.epsilon = float(epsilon)

    def _slot_specs(self, shape):
        return [(shape, 0.0), (shape, 0.0), None]
