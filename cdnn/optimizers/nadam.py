"""Nadam (keras/src/optimizers/nadam.py)."""

from __future__ import annotations

import numpy as np

from cdnn.optimizers.base_optimizer import Optimizer, _fraction, _positive


class Nadam(Optimizer):
    """Adam with Nesterov momentum: ``u_t = beta_1 (1 - 0.5 * 0.96**t)``, ``u_product`` the product of the
    applied steps' ``u_t``; ``m_hat = u_{t+1} m / (1 - u_product u_{t+1}) + (1 - u_t) g / (1 - u_product)``;
    ``w -= lr m_hat / (sqrt(v / (1 - beta_2**t)) + epsilon)``."""

    core_name = "nadam"
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
        self._u_cache = (0, np.float32(1.0))

    def _slot_specs(self, shape):
        return [(shape, 0.0), (shape, 0.0), None]

    def _u_products(self, step0: int, count: int) -> np.ndarray:
        """``u_product`` after each of steps step0 + 1 .. step0 + count, in float32 as Keras multiplies it
        (only update steps multiply it under gradient accumulation)."""
        f = np.float32
        at, u = self._u_cache
        if at > step0:
            at, u = 0, f(1.0)
        acc = self.gradient_accumulation_steps or 1
        b1 = f(self.beta_1)
        out = np.empty(count, f)
        for t in range(at + 1, step0 + count + 1):
            if t % acc == 0:
                u = f(f(u * b1) * f(f(1.0) - f(f(0.5) * f(f(0.96) ** f(t)))))
            if t == step0:
                self._u_cache = (t, u)
            if t > step0:
                out[t - step0 - 1] = u
        return out

    def _run_hyperparameters(self, step0: int, count: int) -> dict:
        h = super()._run_hyperparameters(step0, count)
        h["step_aux"] = self._u_products(step0, max(int(count), 1))
        return h
