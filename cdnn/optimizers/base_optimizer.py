"""The optimizer base class: Keras 3's shared options (keras/src/optimizers/base_optimizer.py), the step
count, the slots, and the parameters the C core reads.

The update itself runs in C: fused into the backward pass (each gradient
tile updates its weights while it is in cache) for element-wise options, or
after the whole gradient of a step is complete for the options that read a
whole variable (``clipnorm``, ``global_clipnorm``, ``use_ema``,
``gradient_accumulation_steps``, ``amsgrad``, Adafactor, and a model's
regularizers and constraints).
"""

from __future__ import annotations

import warnings
import weakref
from typing import Callable, Union

import numpy as np

from cdnn import _core
from cdnn._errors import invalid
from cdnn.optimizers.schedules import learning_rate_schedule as _schedules

__all__ = ["Optimizer"]

_FLOAT32_MAX = float(np.finfo(np.float32).max)


def _is_number(value) -> bool:
    return isinstance(value, (int, float, np.floating, np.integer)) and not isinstance(value, bool)


def _positive(value, name: str, allow_zero: bool = False) -> None:
    ok = _is_number(value)
    if not ok or not np.isfinite(value) or value < 0 or (value == 0 and not allow_zero) or value > _FLOAT32_MAX:
        raise invalid(
            name,
            value,
            ("a non-negative" if allow_zero else "a positive") + " number within float32's range (<= 3.4e38)",
        )


def _fraction(value, name: str) -> float:
    if not isinstance(value, (int, float, np.floating)) or isinstance(value, bool) or not 0 <= value <= 1:
        raise invalid(name, value, "a number in [0, 1]")
    return float(value)


def _optional_positive(value, name: str):
    if value is None:
        return None
    _positive(value, name)
    return float(value)


class _LearningRate(float):
    """The learning rate as Keras' variable reads: a float with ``assign``, ``numpy`` and ``value``."""

    def __new__(cls, value: float, owner: Optimizer):
        obj = super().__new__(cls, value)
        obj._owner = owner
        return obj

    def assign(self, value) -> None:
        """Set the optimizer's learning rate (as ``optimizer.learning_rate = value``)."""
        self._owner.learning_rate = value

    def numpy(self) -> np.float32:
        return np.float32(self)

    @property
    def value(self) -> float:
        return float(self)


class _Iterations(int):
    """The step count as Keras' variable reads: an int with ``assign``, ``assign_add`` and ``numpy``."""

    def __new__(cls, value: int, owner: Optimizer):
        obj = super().__new__(cls, value)
        obj._owner = owner
        return obj

    def assign(self, value) -> None:
        self._owner.iterations = int(value)

    def assign_add(self, value) -> None:
        self._owner.iterations = int(self._owner._iterations) + int(value)

    def numpy(self) -> np.int64:
        return np.int64(self)

    @property
    def value(self) -> int:
        return int(self)


class Optimizer:
    """Base class: the options every Keras 3 optimizer takes, ``iterations`` and per-parameter slots.

    Parameters
    ----------
    learning_rate : float, LearningRateSchedule or callable
        A number, a schedule of the step count, or a function of no argument.
    weight_decay : float, optional
        Decoupled weight decay: ``w -= w * weight_decay * lr`` before each update.
    clipnorm, clipvalue, global_clipnorm : float, optional
        Gradient clipping (at most one): each gradient's norm, each element, all gradients' norm.
    use_ema, ema_momentum, ema_overwrite_frequency
        Keep an exponential moving average of the weights (``ema_momentum``), copied into the
        weights every ``ema_overwrite_frequency`` steps and at the end of ``fit``.
    gradient_accumulation_steps : int, optional
        Update every this many steps (>= 2) with the mean of their gradients.
    loss_scale_factor : None
        Loss scaling is for mixed precision; cdnn trains in float32 and refuses a value.
    name : str, optional
    """

    #: the C core's optimizer name
    core_name = ""
    #: the subclass's own arguments, in Keras' config order: in both get_config and hyperparameters
    _own_fields: tuple[str, ...] = ()

    def __init__(
        self,
        learning_rate,
        weight_decay=None,
        clipnorm=None,
        clipvalue=None,
        global_clipnorm=None,
        use_ema: bool = False,
        ema_momentum: float = 0.99,
        ema_overwrite_frequency=None,
        loss_scale_factor=None,
        gradient_accumulation_steps=None,
        name: str | None = None,
        **kwargs,
    ) -> None:
        if kwargs.pop("decay", None) is not None:
            warnings.warn("Argument `decay` is no longer supported and will be ignored.", stacklevel=2)
        if kwargs:
            raise ValueError(f"Argument(s) not recognized: {kwargs}")
        self.name = name or self.core_name
        if weight_decay is not None:
            _positive(weight_decay, "weight_decay", allow_zero=True)
            weight_decay = float(weight_decay)
        self.weight_decay = weight_decay
        self.clipnorm = _optional_positive(clipnorm, "clipnorm")
        self.clipvalue = _optional_positive(clipvalue, "clipvalue")
        self.global_clipnorm = _optional_positive(global_clipnorm, "global_clipnorm")
        if sum(a is not None for a in (clipnorm, clipvalue, global_clipnorm)) > 1:
            raise ValueError(
                "Only one of `clipnorm`, `clipvalue` and `global_clipnorm` can be set. Received: "
                f"clipnorm={clipnorm}, clipvalue={clipvalue}, global_clipnorm={global_clipnorm}"
            )
        self.use_ema = bool(use_ema)
        if not _is_number(ema_momentum) or not 0 <= ema_momentum <= 1:
            raise ValueError(f"`ema_momentum` must be in the range [0, 1]. Received: ema_momentum={ema_momentum!r}")
        self.ema_momentum = float(ema_momentum)
        if ema_overwrite_frequency is not None and (
            isinstance(ema_overwrite_frequency, bool)
            or not isinstance(ema_overwrite_frequency, (int, np.integer))
            or ema_overwrite_frequency < 1
        ):
            raise ValueError(
                "`ema_overwrite_frequency` must be an integer >= 1 or None. Received: "
                f"ema_overwrite_frequency={ema_overwrite_frequency!r}"
            )
        self.ema_overwrite_frequency = None if ema_overwrite_frequency is None else int(ema_overwrite_frequency)
        if loss_scale_factor is not None:
            raise ValueError(
                f"Invalid value for argument `loss_scale_factor`: cdnn trains in float32 and does "
                f"not scale the loss (that is for mixed precision); expected None, received "
                f"loss_scale_factor={loss_scale_factor!r}"
            )
        self.loss_scale_factor = None
        if gradient_accumulation_steps is not None and (
            isinstance(gradient_accumulation_steps, bool)
            or not isinstance(gradient_accumulation_steps, (int, np.integer))
            or gradient_accumulation_steps < 2
        ):
            raise ValueError(
                "`gradient_accumulation_steps` must be an integer >= 2. Received: "
                f"gradient_accumulation_steps={gradient_accumulation_steps!r}"
            )
        self.gradient_accumulation_steps = (
            None if gradient_accumulation_steps is None else int(gradient_accumulation_steps)
        )
        if not (
            isinstance(learning_rate, (float, _schedules.LearningRateSchedule))
            or (callable(learning_rate) and not _is_number(learning_rate))
        ):
            # Keras 3 refuses any other learning rate here (an int, np.float32, an array); assigning
            # one later (optimizer.learning_rate = 1) is accepted as Keras' variable assigns it
            raise ValueError(
                "Argument `learning_rate` should be float, or an instance of LearningRateSchedule, or a "
                "callable (that takes in the current iteration value and returns the corresponding "
                f"learning rate value). Received instead: learning_rate={learning_rate}"
            )
        self._learning_rate: Union[float, _schedules.LearningRateSchedule, Callable] = 0.0
        self.learning_rate = learning_rate
        self._iterations = 0
        self._slots: list[list[np.ndarray | None]] = []
        self._variables: list | None = None  # weak references to the arrays the slots were built for

    # -- learning rate and step count -------------------------------------
    @property
    def learning_rate(self) -> _LearningRate:
        """The learning rate of the next step (a schedule's value at ``iterations``)."""
        return _LearningRate(self._current_learning_rate(self._iterations), self)

    @learning_rate.setter
    def learning_rate(self, value) -> None:
        if isinstance(value, _schedules.LearningRateSchedule) or (callable(value) and not _is_number(value)):
            self._learning_rate = value
            return
        if isinstance(self._learning_rate, _schedules.LearningRateSchedule):
            raise TypeError(
                "This optimizer was created with a `LearningRateSchedule` object as its "
                "`learning_rate` constructor argument, hence its learning rate is not settable. If "
                "you need the learning rate to be settable, you should instantiate the optimizer "
                "with a float `learning_rate` argument."
            )
        if isinstance(value, np.ndarray) and value.shape == ():
            value = value.item()
        _positive(value, "learning_rate", allow_zero=True)
        self._learning_rate = float(value)

    def _current_learning_rate(self, step: int) -> float:
        lr = self._learning_rate
        if isinstance(lr, _schedules.LearningRateSchedule):
            return float(lr._rates(step, 1)[0])
        if callable(lr):
            return float(self._callable_rates(step, 1)[0])
        return lr

    def _callable_rates(self, step0: int, count: int) -> np.ndarray:
        """A learning-rate function's rates for steps ``step0 .. step0 + count - 1``: called once a step
        with ``iterations`` at that step, as Keras calls it at each step."""
        out = np.empty(count, np.float32)
        saved = self._iterations
        try:
            values = []
            for i in range(count):
                self._iterations = step0 + i
                values.append(self._learning_rate())
        finally:
            self._iterations = saved
        for i, v in enumerate(values):
            if not _is_number(v) and not (isinstance(v, np.ndarray) and v.shape == ()):
                raise TypeError(
                    f"Invalid learning rate: the function {self._learning_rate!r} returned {v!r}, expected a number"
                )
            out[i] = float(v)
        if not (np.isfinite(out) & (out >= 0)).all():
            raise ValueError(
                f"Invalid learning rate: the function {self._learning_rate!r} returned "
                f"{out[~(np.isfinite(out) & (out >= 0))][0]!r}, expected a finite non-negative number"
            )
        return out

    @property
    def iterations(self) -> _Iterations:
        """Steps applied so far (Keras' ``optimizer.iterations``)."""
        return _Iterations(self._iterations, self)

    @iterations.setter
    def iterations(self, value) -> None:
        self._iterations = int(value)

    # -- what the C core reads ----------------------------------------------
    def hyperparameters(self) -> dict:
        """The hyper-parameters the C core reads (``name`` + Keras' names; the learning rate of the next step)."""
        return {
            "name": self.core_name,
            "learning_rate": self._current_learning_rate(self._iterations),
            "weight_decay": self.weight_decay,
            "clipnorm": self.clipnorm,
            "clipvalue": self.clipvalue,
            "global_clipnorm": self.global_clipnorm,
            "use_ema": self.use_ema,
            "ema_momentum": self.ema_momentum,
            "ema_overwrite_frequency": self.ema_overwrite_frequency,
            "gradient_accumulation_steps": self.gradient_accumulation_steps,
            **self._own_config(),
        }

    def _own_config(self) -> dict:
        return {k: getattr(self, k) for k in self._own_fields}

    def _run_hyperparameters(self, step0: int, count: int) -> dict:
        """``hyperparameters()`` for a run of ``count`` steps after ``step0`` applied ones, with the per-step
        learning rates of a schedule (checked: NaN or negative rates raise before the run)."""
        h = self.hyperparameters()
        count = max(int(count), 1)
        if isinstance(self._learning_rate, _schedules.LearningRateSchedule):
            h["step_lr"] = self._learning_rate._rates(step0, count)
        elif callable(self._learning_rate):
            h["step_lr"] = self._callable_rates(step0, count)
        h["step_base"] = step0
        return h

    # -- config -----------------------------------------------------------------
    def get_config(self) -> dict:
        """Keras' config: the constructor's arguments as plain data (a schedule serialized)."""
        lr = self._learning_rate
        if isinstance(lr, _schedules.LearningRateSchedule):
            lr = _schedules.serialize(lr)
        elif callable(lr):
            raise ValueError(
                f"Cannot serialize optimizer {self.name!r}: its learning rate is a Python "
                f"function ({lr!r}); use a LearningRateSchedule subclass with get_config"
            )
        return {
            "name": self.name,
            "learning_rate": lr,
            "weight_decay": self.weight_decay,
            "clipnorm": self.clipnorm,
            "global_clipnorm": self.global_clipnorm,
            "clipvalue": self.clipvalue,
            "use_ema": self.use_ema,
            "ema_momentum": self.ema_momentum,
            "ema_overwrite_frequency": self.ema_overwrite_frequency,
            "loss_scale_factor": self.loss_scale_factor,
            "gradient_accumulation_steps": self.gradient_accumulation_steps,
            **self._own_config(),
        }

    @classmethod
    def from_config(cls, config: dict, custom_objects: dict | None = None) -> Optimizer:
        """An optimizer from :meth:`get_config`'s dict."""
        config = dict(config)
        config.pop("class_name", None)
        if isinstance(config.get("learning_rate"), dict):
            config["learning_rate"] = _schedules.deserialize(config["learning_rate"], custom_objects)
        return cls(**config)

    # -- state ------------------------------------------------------------
    def _slot_specs(self, shape: tuple) -> list:
        """Slots 1..3 of a parameter of ``shape``: ``(shape, initial value)`` or None each."""
        return [None, None, None]

    def build(self, params: list[np.ndarray]) -> None:
        """Create the slot arrays for ``params`` (and the moving averages and accumulators of the options)."""
        self._slots = []
        for p in params:
            specs = self._slot_specs(tuple(p.shape))
            row = [np.full(s[0], s[1], np.float32) if s is not None else None for s in specs]
            row.append(np.zeros(p.shape, np.float32) if self.use_ema else None)
            row.append(np.zeros(p.shape, np.float32) if self.gradient_accumulation_steps else None)
            self._slots.append(row)
        self._variables = [weakref.ref(p) for p in params]
        self._iterations = 0

    def __getstate__(self) -> dict:
        # weak references do not pickle: the arrays themselves do, and pickling the model with its
        # optimizer keeps them the same objects as the model's weights
        state = dict(self.__dict__)
        if state.get("_variables") is not None:
            state["_variables"] = [r() for r in state["_variables"]]
        return state

    def __setstate__(self, state: dict) -> None:
        variables = state.get("_variables")
        if variables is not None:
            state["_variables"] = [weakref.ref(v) if v is not None else (lambda: None) for v in variables]
        self.__dict__.update(state)

    def _built_for(self, params: list[np.ndarray]) -> bool:
        """Whether the slots were built for exactly ``params`` with these settings (False: not built yet).

        As Keras 3, an optimizer serves the variables it was built with only:
        one optimizer object in two models would mix their slots and step
        counts, so it is refused with Keras' message.
        """
        if self._variables is None:
            return False
        if len(params) == len(self._variables) and all(r() is p for r, p in zip(self._variables, params)):
            return self._slots_fit(params)
        known = {id(r()) for r in self._variables if r() is not None}
        unknown = next((p for p in params if id(p) not in known), params[0] if params else None)
        shape = getattr(unknown, "shape", None)
        raise ValueError(
            f"Unknown variable: array of shape {shape}. This optimizer can only be called for the "
            f"variables it was originally built with. When working with a new set of variables, "
            f"you should recreate a new optimizer instance."
        )

    def _slots_fit(self, params: list[np.ndarray]) -> bool:
        """Whether the slots were built for these parameters with these settings."""
        if len(self._slots) != len(params):
            return False
        for row, p in zip(self._slots, params):
            specs = self._slot_specs(tuple(p.shape))
            specs = specs + [
                (p.shape, 0.0) if self.use_ema else None,
                (p.shape, 0.0) if self.gradient_accumulation_steps else None,
            ]
            for s, spec in zip(row, specs):
                if (s is None) != (spec is None) or (s is not None and s.shape != tuple(spec[0])):
                    return False
        return True

    @property
    def variables(self) -> list[np.ndarray]:
        """The slot arrays, in parameter order."""
        return [s for row in self._slots for s in row if s is not None]

    def apply_gradients(self, grads_and_vars) -> None:
        """Apply one update to float32 C-contiguous arrays in place, as Keras' ``apply_gradients``."""
        pairs = list(grads_and_vars)
        self.apply([g for g, _ in pairs], [v for _, v in pairs])

    def apply(self, grads, trainable_variables=None) -> None:
        """Apply one update (``grads`` in the order of ``trainable_variables``), as Keras' ``apply``."""
        grads = list(grads)
        if trainable_variables is None:
            raise ValueError("cdnn's optimizers keep no variables of their own: pass `trainable_variables`")
        variables = list(trainable_variables)
        if len(grads) != len(variables):
            raise ValueError(
                f"Expected one gradient per variable, received {len(grads)} gradients for {len(variables)} variables"
            )
        if not self._built_for(variables):
            it = self._iterations
            self.build(variables)
            self._iterations = it
        gs = [np.array(g, dtype=np.float32, order="C", copy=True) for g in grads]
        h = self._run_hyperparameters(self._iterations, 1)
        _core.optimizer_apply(h, variables, gs, self._slots, self._iterations + 1)
        self._iterations += 1

    def finalize_variable_values(self, var_list) -> None:
        """With ``use_ema``, copy the moving averages into the variables (Keras does this at the end of ``fit``)."""
        if self.use_ema and len(self._slots) == len(var_list):
            for v, row in zip(var_list, self._slots):
                if row[3] is not None:
                    np.copyto(v, row[3])

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.get_config()}>"
