"""Optimizers with Keras 3's defaults and update formulas.

The update itself runs in C, fused into the backward pass (each gradient
tile updates its weights while it is in cache). An optimizer object holds
the hyper-parameters, the step count ``iterations`` and the slot arrays.
"""
from __future__ import annotations

import weakref
from typing import Union

import numpy as np

from cdnn import _core
from cdnn._errors import invalid, unknown

__all__ = ["Optimizer", "SGD", "Adagrad", "RMSprop", "Adam", "get"]


class Optimizer:
    """Base class: hyper-parameters, ``iterations`` and per-parameter slots."""

    #: the C core's optimizer name
    core_name = ""
    #: how many slot arrays each parameter needs, as a function of the hyper-parameters
    _n_slots = 0

    def __init__(self, learning_rate: float, name: str | None = None) -> None:
        self.learning_rate = learning_rate
        self.name = name or self.core_name
        self.iterations = 0
        self._slots: list[list[np.ndarray | None]] = []
        self._variables: list[weakref.ref] | None = None  # the arrays the slots were built for

    # -- hyper-parameters -------------------------------------------------
    @property
    def learning_rate(self) -> float:
        return self._learning_rate

    @learning_rate.setter
    def learning_rate(self, value: float) -> None:
        _positive(value, "learning_rate", allow_zero=True)
        self._learning_rate = float(value)

    def hyperparameters(self) -> dict:
        """The hyper-parameters the C core reads (``name`` + Keras' names)."""
        return {"name": self.core_name, "learning_rate": self.learning_rate}

    def get_config(self) -> dict:
        """Plain data from which :func:`get` rebuilds this optimizer."""
        cfg = {k: v for k, v in self.hyperparameters().items() if k != "name"}
        return {"class_name": type(self).__name__, "name": self.name, **cfg}

    # -- state ------------------------------------------------------------
    def _initial_slot(self, index: int) -> float:
        return 0.0

    def build(self, params: list[np.ndarray]) -> None:
        """Create the slot arrays for ``params`` (zeros, Adagrad's accumulator at its initial value)."""
        n = self._slot_count()
        self._slots = [[np.full(p.shape, self._initial_slot(i), np.float32) if i < n else None
                        for i in range(2)] for p in params]
        self._variables = [weakref.ref(p) for p in params]
        self.iterations = 0

    def __getstate__(self) -> dict:
        # weak references do not pickle: the arrays themselves do, and pickling the model with its
        # optimizer keeps them the same objects as the model's weights
        state = dict(self.__dict__)
        if self._variables is not None:
            state["_variables"] = [r() for r in self._variables]
        return state

    def __setstate__(self, state: dict) -> None:
        variables = state.get("_variables")
        if variables is not None:
            state["_variables"] = [weakref.ref(v) if v is not None else (lambda: None) for v in variables]
        self.__dict__.update(state)

    def _built_for(self, params: list[np.ndarray]) -> bool:
        """Whether the slots were built for exactly ``params`` (False: not built yet).

        As Keras 3, an optimizer serves the variables it was built with only:
        one optimizer object in two models would mix their slots and step
        counts, so it is refused with Keras' message.
        """
        if self._variables is None:
            return False
        if len(params) == len(self._variables) and all(r() is p for r, p in zip(self._variables, params)):
            return True
        known = {id(r()) for r in self._variables if r() is not None}
        unknown = next((p for p in params if id(p) not in known), params[0] if params else None)
        shape = getattr(unknown, "shape", None)
        raise ValueError(f"Unknown variable: array of shape {shape}. This optimizer can only be called for the "
                         f"variables it was originally built with. When working with a new set of variables, "
                         f"you should recreate a new optimizer instance.")

    def _slot_count(self) -> int:
        return self._n_slots

    @property
    def variables(self) -> list[np.ndarray]:
        """The slot arrays, in parameter order."""
        return [s for pair in self._slots for s in pair if s is not None]

    def apply_gradients(self, grads_and_vars) -> None:
        """Apply one update to float32 C-contiguous arrays in place, as Keras' ``apply_gradients``."""
        pairs = list(grads_and_vars)
        if not self._built_for([v for _, v in pairs]):
            self.build([v for _, v in pairs])
        self.iterations += 1
        for (g, v), (s1, s2) in zip(pairs, self._slots):
            _core.optimizer_update(self.hyperparameters(), v, np.ascontiguousarray(g, np.float32), s1, s2,
                                   self.iterations)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.get_config()}>"


_FLOAT32_MAX = float(np.finfo(np.float32).max)


def _positive(value, name: str, allow_zero: bool = False) -> None:
    ok = isinstance(value, (int, float, np.floating, np.integer)) and not isinstance(value, bool)
    if not ok or not np.isfinite(value) or value < 0 or (value == 0 and not allow_zero) or value > _FLOAT32_MAX:
        raise invalid(name, value, ("a non-negative" if allow_zero else "a positive") +
                      " number within float32's range (<= 3.4e38)")


def _fraction(value, name: str) -> float:
    if not isinstance(value, (int, float, np.floating)) or not 0 <= value <= 1:
        raise invalid(name, value, "a number in [0, 1]")
    return float(value)


class SGD(Optimizer):
    """Gradient descent with optional (Nesterov) momentum.

    ``m = momentum*m - lr*g``; ``w += m`` (Nesterov: ``w += momentum*m - lr*g``);
    without momentum ``w -= lr*g``.
    """

    core_name = "sgd"

    def __init__(self, learning_rate: float = 0.01, momentum: float = 0.0, nesterov: bool = False,
                 name: str | None = None) -> None:
        super().__init__(learning_rate, name)
        self.momentum = _fraction(momentum, "momentum")
        self.nesterov = bool(nesterov)

    def _slot_count(self) -> int:
        return 1 if self.momentum != 0 else 0

    def hyperparameters(self) -> dict:
        return {**super().hyperparameters(), "momentum": self.momentum, "nesterov": self.nesterov}


class Adagrad(Optimizer):
    """``a += g**2``; ``w -= lr*g / sqrt(a + epsilon)``."""

    core_name = "adagrad"
    _n_slots = 1

    def __init__(self, learning_rate: float = 0.001, initial_accumulator_value: float = 0.1,
                 epsilon: float = 1e-7, name: str | None = None) -> None:
        super().__init__(learning_rate, name)
        _positive(initial_accumulator_value, "initial_accumulator_value", allow_zero=True)
        _positive(epsilon, "epsilon", allow_zero=True)
        self.initial_accumulator_value = float(initial_accumulator_value)
        self.epsilon = float(epsilon)

    def _initial_slot(self, index: int) -> float:
        return self.initial_accumulator_value

    def hyperparameters(self) -> dict:
        return {**super().hyperparameters(), "initial_accumulator_value": self.initial_accumulator_value,
                "epsilon": self.epsilon}


class RMSprop(Optimizer):
    """``v = rho*v + (1-rho)*g**2``; ``inc = lr*g / sqrt(v + epsilon)``; with momentum
    ``m = momentum*m + inc``, ``w -= m``, else ``w -= inc``."""

    core_name = "rmsprop"

    def __init__(self, learning_rate: float = 0.001, rho: float = 0.9, momentum: float = 0.0,
                 epsilon: float = 1e-7, name: str | None = None) -> None:
        super().__init__(learning_rate, name)
        self.rho = _fraction(rho, "rho")
        self.momentum = _fraction(momentum, "momentum")
        _positive(epsilon, "epsilon", allow_zero=True)
        self.epsilon = float(epsilon)

    def _slot_count(self) -> int:
        return 2 if self.momentum > 0 else 1

    def hyperparameters(self) -> dict:
        return {**super().hyperparameters(), "rho": self.rho, "momentum": self.momentum, "epsilon": self.epsilon}


class Adam(Optimizer):
    """``m += (g-m)(1-beta_1)``; ``v += (g**2-v)(1-beta_2)``;
    ``w -= alpha*m / (sqrt(v) + epsilon)`` with ``alpha = lr*sqrt(1-beta_2**t)/(1-beta_1**t)``."""

    core_name = "adam"
    _n_slots = 2

    def __init__(self, learning_rate: float = 0.001, beta_1: float = 0.9, beta_2: float = 0.999,
                 epsilon: float = 1e-7, name: str | None = None) -> None:
        super().__init__(learning_rate, name)
        self.beta_1 = _fraction(beta_1, "beta_1")
        self.beta_2 = _fraction(beta_2, "beta_2")
        _positive(epsilon, "epsilon", allow_zero=True)
        self.epsilon = float(epsilon)

    def hyperparameters(self) -> dict:
        return {**super().hyperparameters(), "beta_1": self.beta_1, "beta_2": self.beta_2, "epsilon": self.epsilon}


_NAMES = {"sgd": SGD, "adagrad": Adagrad, "rmsprop": RMSprop, "adam": Adam}
_CLASSES = {c.__name__: c for c in _NAMES.values()}


def get(identifier: Union[str, Optimizer, dict]) -> Optimizer:
    """An optimizer from a name (any case), an instance, or a config dict."""
    if isinstance(identifier, Optimizer):
        return identifier
    if isinstance(identifier, dict) and identifier.get("class_name") in _CLASSES:
        cfg = dict(identifier)
        return _CLASSES[cfg.pop("class_name")](**cfg)
    if isinstance(identifier, str) and identifier.lower() in _NAMES:
        return _NAMES[identifier.lower()]()
    raise unknown("optimizer", identifier, _NAMES)
