"""Weight initializers with Keras 3's formulas (keras/src/initializers/), as objects or by name.

Keras' formulas, not Keras' random streams: an initializer with an integer
``seed`` draws the same values at every call (as Keras does), from NumPy's
generator seeded with it; without a seed it draws from cdnn's global
generator (:func:`cdnn.utils.set_random_seed`). The values therefore differ
from those Keras draws for the same seed.
"""

from __future__ import annotations

import math

import numpy as np

from cdnn import _loading, _random
from cdnn._errors import invalid, unknown

__all__ = [
    "Initializer",
    "Constant",
    "Zeros",
    "Ones",
    "Identity",
    "RandomNormal",
    "RandomUniform",
    "TruncatedNormal",
    "VarianceScaling",
    "GlorotUniform",
    "GlorotNormal",
    "HeNormal",
    "HeUniform",
    "LecunNormal",
    "LecunUniform",
    "Orthogonal",
    "get",
    "serialize",
    "deserialize",
    "NAMES",
]


def _truncated_normal(rng: np.random.Generator, shape, stddev: float) -> np.ndarray:
    """Normal draws redrawn until within two standard deviations (as Keras' truncated normal)."""
    out = rng.standard_normal(shape)
    bad = np.abs(out) > 2
    while bad.any():
        out[bad] = rng.standard_normal(int(bad.sum()))
        bad = np.abs(out) > 2
    return out * stddev


def _fans(shape: tuple) -> tuple[float, float]:
    """Keras' compute_fans: a kernel (in, out); a vector's fans are its length."""
    if len(shape) == 0:
        return 1.0, 1.0
    if len(shape) == 1:
        return float(shape[0]), float(shape[0])
    if len(shape) == 2:
        return float(shape[0]), float(shape[1])
    receptive = math.prod(shape[:-2])
    return float(shape[-2] * receptive), float(shape[-1] * receptive)


class Initializer:
    """Base class: ``initializer(shape, dtype=None)`` returns a float32 array of ``shape``."""

    def __call__(self, shape, dtype=None) -> np.ndarray:
        shape = tuple(int(d) for d in shape)
        _loading.charge(shape)  # a model file's architecture may not create more than the file holds
        out = self._draw(shape)
        return np.ascontiguousarray(out, dtype=np.float32)

    def _draw(self, shape: tuple) -> np.ndarray:
        raise NotImplementedError

    def get_config(self) -> dict:
        return {}

    @classmethod
    def from_config(cls, config: dict) -> Initializer:
        return cls(**config)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.get_config()}>"


class _Seeded(Initializer):
    def __init__(self, seed=None) -> None:
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer))):
            raise ValueError(
                "`seed` argument should be an instance of `keras.random.SeedGenerator()` or an "
                f"integer. Received: seed={seed!r}"
            )
        self.seed = None if seed is None else int(seed)

    def _rng(self) -> np.random.Generator:
        return np.random.default_rng(self.seed) if self.seed is not None else _random.generator()

    def get_config(self) -> dict:
        return {"seed": self.seed}


class Constant(Initializer):
    """Every value ``value``."""

    def __init__(self, value: float = 0.0) -> None:
        self.value = float(value)

    def _draw(self, shape):
        return np.full(shape, self.value)

    def get_config(self):
        return {"value": self.value}


class Zeros(Initializer):
    """All zeros."""

    def _draw(self, shape):
        return np.zeros(shape)


class Ones(Initializer):
    """All ones."""

    def _draw(self, shape):
        return np.ones(shape)


class Identity(Initializer):
    """``gain`` times the identity matrix (2-D shapes only)."""

    def __init__(self, gain: float = 1.0) -> None:
        self.gain = float(gain)

    def _draw(self, shape):
        if len(shape) != 2:
            raise ValueError(
                f"Identity matrix initializer can only be used for 2D matrices. Received: "
                f"shape={shape} of rank {len(shape)}."
            )
        return self.gain * np.eye(*shape)

    def get_config(self):
        return {"gain": self.gain}


class RandomNormal(_Seeded):
    """Normal draws of ``mean`` and ``stddev``."""

    def __init__(self, mean: float = 0.0, stddev: float = 0.05, seed=None) -> None:
        super().__init__(seed)
        self.mean, self.stddev = float(mean), float(stddev)

    def _draw(self, shape):
        return self._rng().normal(self.mean, self.stddev, shape)

    def get_config(self):
        return {"mean": self.mean, "stddev": self.stddev, **super().get_config()}


class TruncatedNormal(_Seeded):
    """Normal draws of ``mean`` and ``stddev``, redrawn beyond two standard deviations."""

    def __init__(self, mean: float = 0.0, stddev: float = 0.05, seed=None) -> None:
        super().__init__(seed)
        self.mean, self.stddev = float(mean), float(stddev)

    def _draw(self, shape):
        return self.mean + _truncated_normal(self._rng(), shape, self.stddev)

    def get_config(self):
        return {"mean": self.mean, "stddev": self.stddev, **super().get_config()}


class RandomUniform(_Seeded):
    """Uniform draws in ``[minval, maxval)``."""

    def __init__(self, minval: float = -0.05, maxval: float = 0.05, seed=None) -> None:
        super().__init__(seed)
        self.minval, self.maxval = float(minval), float(maxval)

    def _draw(self, shape):
        return self._rng().uniform(self.minval, self.maxval, shape)

    def get_config(self):
        return {"minval": self.minval, "maxval": self.maxval, **super().get_config()}


class VarianceScaling(_Seeded):
    """``scale / n`` variance, n the fan in, out or their mean: truncated normal (its standard deviation
    corrected by 0.8796...), untruncated normal, or uniform in ``+-sqrt(3 * scale / n)``."""

    def __init__(
        self, scale: float = 1.0, mode: str = "fan_in", distribution: str = "truncated_normal", seed=None
    ) -> None:
        if not isinstance(scale, (int, float, np.floating)) or isinstance(scale, bool) or not scale > 0:
            raise ValueError(f"Argument `scale` must be positive float. Received: scale={scale!r}")
        if mode not in ("fan_in", "fan_out", "fan_avg"):
            raise ValueError(f"Invalid `mode` argument: {mode!r}. Please use one of {{'fan_in', 'fan_out', 'fan_avg'}}")
        distribution = str(distribution).lower()
        if distribution == "normal":
            distribution = "truncated_normal"
        if distribution not in ("uniform", "truncated_normal", "untruncated_normal"):
            raise ValueError(
                f"Invalid `distribution` argument: {distribution!r}. Please use one of "
                f"{{'uniform', 'truncated_normal', 'untruncated_normal'}}"
            )
        super().__init__(seed)
        self.scale, self.mode, self.distribution = float(scale), mode, distribution

    def _draw(self, shape):
        fan_in, fan_out = _fans(shape)
        n = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2.0}[self.mode]
        s = self.scale / max(1.0, n)
        rng = self._rng()
        if self.distribution == "truncated_normal":
            return _truncated_normal(rng, shape, math.sqrt(s) / 0.87962566103423978)
        if self.distribution == "untruncated_normal":
            return rng.normal(0.0, math.sqrt(s), shape)
        limit = math.sqrt(3.0 * s)
        return rng.uniform(-limit, limit, shape)

    def get_config(self):
        return {**super().get_config(), "scale": self.scale, "mode": self.mode, "distribution": self.distribution}


def _preset(name: str, scale: float, mode: str, distribution: str, doc: str):
    def __init__(self, seed=None) -> None:
        VarianceScaling.__init__(self, scale=scale, mode=mode, distribution=distribution, seed=seed)

    def get_config(self) -> dict:
        return {"seed": self.seed}

    return type(
        name,
        (VarianceScaling,),
        {"__init__": __init__, "get_config": get_config, "__doc__": doc, "__module__": __name__},
    )


GlorotUniform = _preset("GlorotUniform", 1.0, "fan_avg", "uniform", "Uniform in +-sqrt(6 / (fan_in + fan_out)).")
GlorotNormal = _preset(
    "GlorotNormal", 1.0, "fan_avg", "truncated_normal", "Truncated normal of variance 2 / (fan_in + fan_out)."
)
HeNormal = _preset("HeNormal", 2.0, "fan_in", "truncated_normal", "Truncated normal of variance 2 / fan_in.")
HeUniform = _preset("HeUniform", 2.0, "fan_in", "uniform", "Uniform in +-sqrt(6 / fan_in).")
LecunNormal = _preset("LecunNormal", 1.0, "fan_in", "truncated_normal", "Truncated normal of variance 1 / fan_in.")
LecunUniform = _preset("LecunUniform", 1.0, "fan_in", "uniform", "Uniform in +-sqrt(3 / fan_in).")


class Orthogonal(_Seeded):
    """``gain`` times an orthogonal matrix: Q of the QR factorization of a normal matrix, signs fixed by R's
    diagonal (rows of Q transposed when the kernel is wider than tall)."""

    def __init__(self, gain: float = 1.0, seed=None) -> None:
        super().__init__(seed)
        self.gain = float(gain)

    def _draw(self, shape):
        if len(shape) < 2:
            raise ValueError(
                f"The tensor to initialize must be at least two-dimensional. Received: shape={shape} "
                f"of rank {len(shape)}."
            )
        rows, cols = int(math.prod(shape[:-1])), int(shape[-1])
        a = self._rng().standard_normal((max(rows, cols), min(rows, cols)))
        q, r = np.linalg.qr(a)
        q = q * np.sign(np.diag(r))
        if rows < cols:
            q = q.T
        return self.gain * q.reshape(shape)

    def get_config(self):
        return {**super().get_config(), "gain": self.gain}


_CLASSES = {
    c.__name__: c
    for c in (
        Constant,
        Zeros,
        Ones,
        Identity,
        RandomNormal,
        RandomUniform,
        TruncatedNormal,
        VarianceScaling,
        GlorotUniform,
        GlorotNormal,
        HeNormal,
        HeUniform,
        LecunNormal,
        LecunUniform,
        Orthogonal,
    )
}

#: Keras' string names and their classes
NAMES = {
    "glorot_uniform": GlorotUniform,
    "glorot_normal": GlorotNormal,
    "he_uniform": HeUniform,
    "he_normal": HeNormal,
    "lecun_uniform": LecunUniform,
    "lecun_normal": LecunNormal,
    "zeros": Zeros,
    "ones": Ones,
    "constant": Constant,
    "identity": Identity,
    "random_uniform": RandomUniform,
    "random_normal": RandomNormal,
    "truncated_normal": TruncatedNormal,
    "variance_scaling": VarianceScaling,
    "orthogonal": Orthogonal,
}


def serialize(initializer) -> str | dict:
    """A string stays a string; an object becomes Keras' ``{"module", "class_name", "config", ...}``."""
    if isinstance(initializer, str):
        return initializer
    return {
        "module": "keras.initializers",
        "class_name": type(initializer).__name__,
        "config": initializer.get_config(),
        "registered_name": None,
    }


def deserialize(config: dict) -> Initializer:
    """An initializer from :func:`serialize`'s dict."""
    if not isinstance(config, dict) or config.get("class_name") not in _CLASSES:
        raise unknown("initializer", config.get("class_name") if isinstance(config, dict) else config, NAMES)
    inner = config.get("config") or {}
    if not isinstance(inner, dict):
        raise invalid("config", inner, "a dict of the initializer's arguments")
    return _CLASSES[config["class_name"]].from_config(inner)


def get(identifier) -> Initializer:
    """An initializer from a Keras name, a class name, a config dict, a class or an instance."""
    if isinstance(identifier, Initializer):
        return identifier
    if isinstance(identifier, type) and issubclass(identifier, Initializer):
        return identifier()
    if isinstance(identifier, dict):
        return deserialize(identifier)
    if isinstance(identifier, str):
        cls = NAMES.get(identifier) or _CLASSES.get(identifier)
        if cls is not None:
            return cls()
    raise unknown("initializer", identifier, NAMES)
