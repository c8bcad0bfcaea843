"""Learning-rate schedules with Keras 3's formulas (keras/src/optimizers/schedules/learning_rate_schedule.py).

A schedule maps the optimizer's step count (``iterations`` before the step)
to that step's learning rate. ``fit`` evaluates it for every step of a run
before handing the run to the C core (:meth:`LearningRateSchedule._rates`):
the built-in schedules vectorised in float32 as Keras computes them, a user
subclass by calling it once per step.
"""

from __future__ import annotations

import math

import numpy as np

from cdnn._errors import invalid

__all__ = [
    "LearningRateSchedule",
    "ExponentialDecay",
    "PiecewiseConstantDecay",
    "PolynomialDecay",
    "InverseTimeDecay",
    "CosineDecay",
    "CosineDecayRestarts",
    "serialize",
    "deserialize",
]

_F = np.float32


def _positive_steps(value, name: str):
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float, np.integer, np.floating))
        or not value > 0
        or not math.isfinite(value)
    ):
        raise ValueError(f"Argument `{name}` must be > 0. Received: {name}={value!r}")
    return value


def _number(value, name: str):
    if isinstance(value, np.ndarray) and value.size == 1 and value.ndim <= 1 and value.dtype.kind in "iuf":
        # Keras computes with a 1-element array as with its number (its rate broadcasts over each variable)
        value = value.item()
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float, np.integer, np.floating))
        or not math.isfinite(value)
    ):
        raise invalid(name, value, "a finite number")
    return value


class LearningRateSchedule:
    """Base class: subclasses implement ``__call__(step)`` (and ``get_config`` to be saved)."""

    def __call__(self, step):
        raise NotImplementedError(
            f"Learning rate schedule '{self.__class__.__name__}' must override `__call__(self, step)`."
        )

    def get_config(self) -> dict:
        raise NotImplementedError(
            f"Learning rate schedule '{self.__class__.__name__}' must override `get_config()` "
            f"in order to be serializable."
        )

    @classmethod
    def from_config(cls, config: dict):
        """Instantiates a schedule from its config."""
        return cls(**config)

    def _vector(self, steps: np.ndarray) -> np.ndarray | None:
        """The rates at int64 ``steps`` in float32 at once, or None (then ``__call__`` per step)."""
        return None

    def _rates(self, first: int, count: int) -> np.ndarray:
        """The learning rates of steps ``first .. first + count - 1`` (iteration counts), float32,
        checked: a NaN, infinite or negative rate is a ValueError naming the step."""
        steps = np.arange(first, first + count, dtype=np.int64)
        out = self._vector(steps)
        if out is None:
            out = np.empty(count, _F)
            for i, s in enumerate(steps):
                v = self(int(s))
                try:
                    out[i] = float(np.asarray(v))
                except (TypeError, ValueError):
                    raise TypeError(
                        f"Invalid learning rate: the schedule {type(self).__name__} returned {v!r} at "
                        f"step {int(s)}, expected a number"
                    ) from None
        out = np.ascontiguousarray(out, _F)
        bad = ~np.isfinite(out) | (out < 0)
        if bad.any():
            i = int(np.argmax(bad))
            raise ValueError(
                f"Invalid learning rate: the schedule {type(self).__name__} returned {float(out[i])!r} at step "
                f"{first + i}, expected a finite non-negative number"
            )
        return out


class _BuiltinSchedule(LearningRateSchedule):
    """A built-in schedule: ``__call__`` through the vectorised form, the config from ``_config_keys``
    (attribute names, or ``(key, attribute)`` pairs where Keras' key differs from the attribute)."""

    _config_keys: tuple = ()

    def __call__(self, step):
        return self._vector(np.asarray([step], np.int64))[0]

    def get_config(self) -> dict:
        keys = [(k, k) if isinstance(k, str) else k for k in self._config_keys]
        return {key: getattr(self, attr) for key, attr in keys}


class ExponentialDecay(_BuiltinSchedule):
    """``initial_learning_rate * decay_rate ** (step / decay_steps)`` (the exponent floored with ``staircase``)."""

    _config_keys = ("initial_learning_rate", "decay_steps", "decay_rate", "staircase", "name")

    def __init__(self, initial_learning_rate, decay_steps, decay_rate, staircase=False, name="ExponentialDecay"):
        self.initial_learning_rate = _number(initial_learning_rate, "initial_learning_rate")
        self.decay_steps = _positive_steps(decay_steps, "decay_steps")
        self.decay_rate = _number(decay_rate, "decay_rate")
        self.staircase = staircase
        self.name = name

    def _vector(self, steps):
        p = steps.astype(_F) / _F(self.decay_steps)
        if self.staircase:
            p = np.floor(p)
        return _F(self.initial_learning_rate) * np.power(_F(self.decay_rate), p)


class PiecewiseConstantDecay(_BuiltinSchedule):
    """``values[0]`` while ``step <= boundaries[0]``, ``values[i]`` on ``(boundaries[i-1], boundaries[i]]``,
    ``values[-1]`` beyond the last boundary."""

    _config_keys = ("boundaries", "values", "name")

    def __init__(self, boundaries, values, name="PiecewiseConstant"):
        if len(boundaries) != len(values) - 1:
            raise ValueError(
                "The length of boundaries should be 1 less than the length of values. Received: "
                f"boundaries={boundaries} of length {len(boundaries)}, and values={values} "
                f"of length {len(values)}."
            )
        if any(b2 <= b1 for b1, b2 in zip(boundaries, boundaries[1:])):
            raise invalid("boundaries", boundaries, "strictly increasing numbers")
        for v in values:
            _number(v, "values")
        self.boundaries = list(boundaries)
        self.values = list(values)
        self.name = name

    def _vector(self, steps):
        b = np.asarray(self.boundaries, np.float64)
        idx = np.searchsorted(b, steps.astype(np.float64), side="left")  # step <= b[i] -> i
        return np.asarray(self.values, _F)[idx]


class PolynomialDecay(_BuiltinSchedule):
    """``(initial - end) * (1 - step / decay_steps) ** power + end``, the step held at ``decay_steps``
    (or, with ``cycle``, ``decay_steps`` times the first multiple beyond the step)."""

    _config_keys = ("initial_learning_rate", "decay_steps", "end_learning_rate", "power", "cycle", "name")

    def __init__(
        self,
        initial_learning_rate,
        decay_steps,
        end_learning_rate=0.0001,
        power=1.0,
        cycle=False,
        name="PolynomialDecay",
    ):
        self.initial_learning_rate = _number(initial_learning_rate, "initial_learning_rate")
        self.decay_steps = _positive_steps(decay_steps, "decay_steps")
        self.end_learning_rate = _number(end_learning_rate, "end_learning_rate")
        self.power = _number(power, "power")
        self.cycle = cycle
        self.name = name

    def _vector(self, steps):
        s = steps.astype(_F)
        d = _F(self.decay_steps)
        if self.cycle:
            mult = np.where(s == 0, _F(1), np.ceil(s / d)).astype(_F)
            d = d * mult
        else:
            s = np.minimum(s, d)
        p = s / d
        return (_F(self.initial_learning_rate) - _F(self.end_learning_rate)) * np.power(_F(1) - p, _F(self.power)) + _F(
            self.end_learning_rate
        )


class InverseTimeDecay(_BuiltinSchedule):
    """``initial_learning_rate / (1 + decay_rate * step / decay_steps)`` (the ratio floored with ``staircase``)."""

    _config_keys = ("initial_learning_rate", "decay_steps", "decay_rate", "staircase", "name")

    def __init__(self, initial_learning_rate, decay_steps, decay_rate, staircase=False, name="InverseTimeDecay"):
        self.initial_learning_rate = _number(initial_learning_rate, "initial_learning_rate")
        self.decay_steps = _positive_steps(decay_steps, "decay_steps")
        self.decay_rate = _number(decay_rate, "decay_rate")
        self.staircase = staircase
        self.name = name

    def _vector(self, steps):
        p = steps.astype(_F) / _F(self.decay_steps)
        if self.staircase:
            p = np.floor(p)
        return _F(self.initial_learning_rate) / (_F(1) + _F(self.decay_rate) * p)


class CosineDecay(_BuiltinSchedule):
    """Optional linear warmup from ``initial_learning_rate`` to ``warmup_target`` over ``warmup_steps``, then
    ``lr0 * ((1 - alpha) * 0.5 * (1 + cos(pi * step / decay_steps)) + alpha)``, the step held at
    ``decay_steps`` (lr0: ``warmup_target``, or ``initial_learning_rate`` without warmup)."""

    _config_keys = ("initial_learning_rate", "decay_steps", "alpha", "name", "warmup_target", "warmup_steps")

    def __init__(
        self, initial_learning_rate, decay_steps, alpha=0.0, name="CosineDecay", warmup_target=None, warmup_steps=0
    ):
        self.initial_learning_rate = _number(initial_learning_rate, "initial_learning_rate")
        self.decay_steps = _positive_steps(decay_steps, "decay_steps")
        self.alpha = _number(alpha, "alpha")
        self.name = name
        self.warmup_steps = warmup_steps
        self.warmup_target = None if warmup_target is None else _number(warmup_target, "warmup_target")
        if warmup_target is not None:
            _positive_steps(warmup_steps, "warmup_steps")

    def _decay(self, s, lr0):
        frac = s / _F(self.decay_steps)
        cos = _F(0.5) * (_F(1) + np.cos(_F(math.pi) * frac))
        return lr0 * ((_F(1) - _F(self.alpha)) * cos + _F(self.alpha))

    def _vector(self, steps):
        s = steps.astype(_F)
        lr0 = _F(self.initial_learning_rate)
        if self.warmup_target is None:
            return self._decay(np.minimum(s, _F(self.decay_steps)), lr0)
        target, ws = _F(self.warmup_target), _F(self.warmup_steps)
        s = np.minimum(s, _F(self.decay_steps) + ws)
        warm = (target - lr0) * (s / ws) + lr0
        return np.where(s < ws, warm, self._decay(s - ws, target)).astype(_F)


class CosineDecayRestarts(_BuiltinSchedule):
    """Cosine decay from 1 to ``alpha`` over ``first_decay_steps``, then warm restarts, each ``t_mul`` times
    longer and starting from ``m_mul`` times the previous start (SGDR)."""

    _config_keys = (
        "initial_learning_rate",
        "first_decay_steps",
        ("t_mul", "_t_mul"),
        ("m_mul", "_m_mul"),
        "alpha",
        "name",
    )

    def __init__(self, initial_learning_rate, first_decay_steps, t_mul=2.0, m_mul=1.0, alpha=0.0, name="SGDRDecay"):
        self.initial_learning_rate = _number(initial_learning_rate, "initial_learning_rate")
        self.first_decay_steps = _positive_steps(first_decay_steps, "first_decay_steps")
        self._t_mul = _positive_steps(t_mul, "t_mul")
        self._m_mul = _number(m_mul, "m_mul")
        self.alpha = _number(alpha, "alpha")
        self.name = name

    def _vector(self, steps):
        frac = steps.astype(_F) / _F(self.first_decay_steps)
        t_mul = _F(self._t_mul)
        if t_mul == 1:
            i = np.floor(frac)
            frac = frac - i
        else:
            i = np.floor(np.log(_F(1) - frac * (_F(1) - t_mul)) / np.log(t_mul))
            sum_r = (_F(1) - np.power(t_mul, i)) / (_F(1) - t_mul)
            frac = (frac - sum_r) / np.power(t_mul, i)
        m_fac = np.power(_F(self._m_mul), i)
        cos = _F(0.5) * m_fac * (_F(1) + np.cos(_F(math.pi) * frac))
        decayed = (_F(1) - _F(self.alpha)) * cos + _F(self.alpha)
        return (_F(self.initial_learning_rate) * decayed).astype(_F)


_BUILTIN = {
    c.__name__: c
    for c in (
        ExponentialDecay,
        PiecewiseConstantDecay,
        PolynomialDecay,
        InverseTimeDecay,
        CosineDecay,
        CosineDecayRestarts,
    )
}


def serialize(learning_rate_schedule: LearningRateSchedule) -> dict:
    """A JSON-able dict as Keras writes it: ``{"module", "class_name", "config", "registered_name"}``."""
    return {
        "module": "keras.optimizers.schedules",
        "class_name": type(learning_rate_schedule).__name__,
        "config": learning_rate_schedule.get_config(),
        "registered_name": None,
    }


def deserialize(config: dict, custom_objects: dict | None = None) -> LearningRateSchedule:
    """A schedule from :func:`serialize`'s dict (user subclasses through ``custom_objects``)."""
    known = {**_BUILTIN, **(custom_objects or {})}
    if not isinstance(config, dict) or config.get("class_name") not in known:
        name = config.get("class_name") if isinstance(config, dict) else config
        raise ValueError(
            f"Unknown learning rate schedule: {name!r}. Known: {sorted(_BUILTIN)} (pass a subclass "
            f"of your own through custom_objects)"
        )
    return known[config["class_name"]].from_config(dict(config.get("config") or {}))
