"""Adam (keras/src/optimizers/adam.py)."""

from __future__ import annotations

from cdnn.optimizers.base_optimizer import Optimizer, _fraction, _positive


class Adam(Optimizer):
    """``m += (g-m)(1-beta_1)``; ``v += (g**2-v)(1-beta_2)`` (with ``amsgrad``, ``v_hat = max(v_hat, v)``
    replaces v below); ``w -= alpha*m / (sqrt(v) + epsilon)`` with ``alpha = lr*sqrt(1-beta_2**t)/(1-beta_1**t)``."""

    core_name = "adam"
    _own_fields = ("beta_1", "beta_2", "epsilon", "amsgrad")

    def __init__(
        self,
        learning_rate=0.001,
        beta_1: float = 0.9,
        beta_2: float = 0.999,
        epsilon: float = 1e-7,
        amsgrad: bool = False,
        name: str | None = None,
        **kwargs,
    ) -> None:
        super().__init__(learning_rate, name=name, **kwargs)
        self.beta_1 = _fraction(beta_1, "beta_1")
        self.beta_2 = _fraction(beta_2, "beta_2")
        _positive(epsilon, "epsilon", allow_zero=True)
        self.epsilon = float(epsilon)
        self.amsgrad = bool(amsgrad)

    def _slot_specs(self, shape):
        return [(shape, 0.0), (shape, 0.0), (shape, 0.0) if self.amsgrad else None]
