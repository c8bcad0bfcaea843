"""Lion (keras/src/optimizers/lion.py)."""

from __future__ import annotations

from cdnn.optimizers.base_optimizer import Optimizer, _fraction


class Lion(Optimizer):
    """``w -= lr * sign(beta_1*m + (1-beta_1)*g)``; then ``m = beta_2*m + (1-beta_2)*g``."""

    core_name = "lion"
    _own_fields = ("beta_1", "beta_2")

    def __init__(
        self, learning_rate=0.001, beta_1: float = 0.9, beta_2: float = 0.99, name: str | None = None, **kwargs
    ) -> None:
        super().__init__(learning_rate, name=name, **kwargs)
        if isinstance(beta_1, bool) or not isinstance(beta_1, (int, float)) or beta_1 <= 0 or beta_1 > 1:
            raise ValueError(
                "Argument `beta_1` must be in the [0, 1] range. Otherwise, the optimizer degenerates "
                f"to SignSGD. Received: beta_1={beta_1}."
            )
        self.beta_1 = float(beta_1)
        self.beta_2 = _fraction(beta_2, "beta_2")

    def _slot_specs(self, shape):
        return [(shape, 0.0), None, None]
