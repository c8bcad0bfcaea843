"""SGD (keras/src/optimizers/sgd.py)."""

from __future__ import annotations

from cdnn.optimizers.base_optimizer import Optimizer, _fraction


class SGD(Optimizer):
    """Gradient descent with optional (Nesterov) momentum.

    ``m = momentum*m - lr*g``; ``w += m`` (Nesterov: ``w += momentum*m - lr*g``);
    without momentum ``w -= lr*g``.
    """

    core_name = "sgd"
    _own_fields = ("momentum", "nesterov")

    def __init__(
        self, learning_rate=0.01, momentum: float = 0.0, nesterov: bool = False, name: str | None = None, **kwargs
    ) -> None:
        super().__init__(learning_rate, name=name, **kwargs)
        self.momentum = _fraction(momentum, "momentum")
        self.nesterov = bool(nesterov)

    def _slot_specs(self, shape):
        return [(shape, 0.0) if self.momentum != 0 else None, None, None]
