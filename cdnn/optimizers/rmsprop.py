"""RMSprop (keras/src/optimizers/rmsprop.py)."""

from __future__ import annotations

from cdnn.optimizers.base_optimizer import Optimizer, _fraction, _positive


class RMSprop(Optimizer):
    """``v = rho*v + (1-rho)*g**2``; ``inc = lr*g / sqrt(v + epsilon)``; with momentum
    ``m = momentum*m + inc``, ``w -= m``, else ``w -= inc``. ``centered=True`` is refused."""

    core_name = "rmsprop"

    def __init__(
        self,
        learning_rate=0.001,
        rho: float = 0.9,
        momentum: float = 0.0,
        epsilon: float = 1e-7,
        centered: bool = False,
        name: str | None = None,
        **kwargs,
    ) -> None:
        super().__init__(learning_rate, name=name, **kwargs)
        if centered:
            raise ValueError(
                "Invalid value for argument `centered`: cdnn's RMSprop is uncentered; expected "
                "False, received centered=True"
            )
        self.rho = _fraction(rho, "rho")
        self.momentum = _fraction(momentum, "momentum")
        _positive(epsilon, "epsilon", allow_zero=True)
        self.epsilon = float(epsilon)
        self.centered = False

    def _slot_specs(self, shape):
        return [(shape, 0.0), (shape, 0.0) if self.momentum > 0 else None, None]

    def hyperparameters(self) -> dict:
        return {**super().hyperparameters(), "rho": self.rho, "momentum": self.momentum, "epsilon": self.epsilon}

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "rho": self.rho,
            "momentum": self.momentum,
            "epsilon": self.epsilon,
            "centered": self.centered,
        }
