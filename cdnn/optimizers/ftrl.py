"""Ftrl (keras/src/optimizers/ftrl.py)."""

from __future__ import annotations

from cdnn.optimizers.base_optimizer import Optimizer, _is_number


def _at_least_zero(value, name: str, what: str = "positive or zero") -> float:
    if not _is_number(value) or not value >= 0:
        raise ValueError(f"`{name}` needs to be {what}. Received: {name}={value!r}.")
    return float(value)


class Ftrl(Optimizer):
    """Follow The Regularized Leader with Keras' accumulator (starts at ``initial_accumulator_value``) and
    linear slots, L1/L2 strengths, L2 shrinkage and ``beta``."""

    core_name = "ftrl"

    def __init__(
        self,
        learning_rate=0.001,
        learning_rate_power: float = -0.5,
        initial_accumulator_value: float = 0.1,
        l1_regularization_strength: float = 0.0,
        l2_regularization_strength: float = 0.0,
        l2_shrinkage_regularization_strength: float = 0.0,
        beta: float = 0.0,
        name: str | None = None,
        **kwargs,
    ) -> None:
        super().__init__(learning_rate, name=name, **kwargs)
        self.initial_accumulator_value = _at_least_zero(initial_accumulator_value, "initial_accumulator_value")
        if not _is_number(learning_rate_power) or not learning_rate_power <= 0:
            raise ValueError(
                "`learning_rate_power` needs to be negative or zero. Received: "
                f"learning_rate_power={learning_rate_power!r}."
            )
        self.learning_rate_power = float(learning_rate_power)
        self.l1_regularization_strength = _at_least_zero(l1_regularization_strength, "l1_regularization_strength")
        self.l2_regularization_strength = _at_least_zero(l2_regularization_strength, "l2_regularization_strength")
        self.l2_shrinkage_regularization_strength = _at_least_zero(
            l2_shrinkage_regularization_strength, "l2_shrinkage_regularization_strength"
        )
        self.beta = _at_least_zero(beta, "beta")

    def _slot_specs(self, shape):
        return [(shape, self.initial_accumulator_value), (shape, 0.0), None]

    def _fields(self) -> dict:
        return {
            "learning_rate_power": self.learning_rate_power,
            "initial_accumulator_value": self.initial_accumulator_value,
            "l1_regularization_strength": self.l1_regularization_strength,
            "l2_regularization_strength": self.l2_regularization_strength,
            "l2_shrinkage_regularization_strength": self.l2_shrinkage_regularization_strength,
            "beta": self.beta,
        }

    def hyperparameters(self) -> dict:
        return {**super().hyperparameters(), **self._fields()}

    def get_config(self) -> dict:
        return {**super().get_config(), **self._fields()}
