"""The ``Metric`` base class and its state variables, as Keras 3's ``keras.metrics.Metric``.

A metric keeps running state (sums and counts) in :class:`Variable` objects:
``update_state`` adds a batch to it, ``result`` reads the value, ``reset_state``
zeroes it. cdnn evaluates metrics in NumPy on the outputs the C core produces
(training's forward outputs per run of batches, or inference's), so a metric
also works on plain arrays, standalone.
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np
from numpy.lib.mixins import NDArrayOperatorsMixin

__all__ = ["Metric", "Variable"]

#: Keras' backend.epsilon(), the fuzz factor of its formulas
EPSILON = 1e-7


class Variable(NDArrayOperatorsMixin):
    """A metric's state: an array with Keras' ``assign``/``assign_add``/``numpy()``.

    Arithmetic and NumPy functions see its value (``v + 1``, ``np.sum(v)``).
    """

    def __init__(self, value, name: str = "variable", dtype: str = "float32") -> None:
        self.name = name
        self._value = np.array(value, dtype=dtype)
        self._initial = self._value.copy()

    @property
    def value(self) -> np.ndarray:
        return self._value

    @property
    def shape(self) -> tuple:
        return self._value.shape

    @property
    def dtype(self) -> str:
        return self._value.dtype.name

    def numpy(self) -> np.ndarray:
        return self._value.copy()

    def assign(self, value) -> Variable:
        self._value[...] = np.asarray(value, dtype=self._value.dtype)
        return self

    def assign_add(self, value) -> Variable:
        return self.assign(self._value + np.asarray(value, dtype=self._value.dtype))

    def assign_sub(self, value) -> Variable:
        return self.assign(self._value - np.asarray(value, dtype=self._value.dtype))

    def _reset(self) -> None:
        self._value[...] = self._initial

    def __array__(self, dtype=None, copy=None):
        return np.asarray(self._value, dtype=dtype)

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        args = [i._value if isinstance(i, Variable) else i for i in inputs]
        return getattr(ufunc, method)(*args, **kwargs)

    def __float__(self) -> float:
        return float(self._value)

    def __int__(self) -> int:
        return int(self._value)

    def __getitem__(self, key):
        return self._value[key]

    def __len__(self) -> int:
        return len(self._value)

    def __repr__(self) -> str:
        return f"<Variable name={self.name!r} shape={self.shape} value={self._value!r}>"


class Tensor(np.ndarray):
    """A result: a NumPy array that also has Keras tensors' ``.numpy()``."""

    def numpy(self) -> np.ndarray:
        return np.asarray(self)


def as_result(value) -> Tensor:
    """``value`` as a :class:`Tensor` (what ``result()`` returns), in float64: Keras keeps its state
    in float32, cdnn sums whole runs of batches and keeps the digits."""
    return np.asarray(value, dtype=np.float64).view(Tensor)


def _initial_value(initializer, shape, dtype):
    if callable(initializer) and not isinstance(initializer, str):
        return initializer(shape, dtype=dtype)
    if initializer in (None, "zeros", "Zeros"):
        return np.zeros(shape, dtype)
    if initializer in ("ones", "Ones"):
        return np.ones(shape, dtype)
    if isinstance(initializer, (int, float, np.ndarray, list)):
        return np.broadcast_to(np.asarray(initializer, dtype), shape).copy()
    raise ValueError(
        f"Invalid value for argument `initializer`: expected 'zeros', 'ones', a number or a callable "
        f"(shape, dtype), received {initializer!r}"
    )


class Metric:
    """Base class of every metric: subclass it and define ``update_state`` and ``result``.

    Parameters
    ----------
    name : str, optional
        The key under which ``fit`` logs it (Keras: the snake-case class name by default).
    dtype : str, optional
        The state's dtype (float32).

    Examples
    --------
    >>> class BatchCount(Metric):
    ...     def __init__(self, name="batch_count", **kwargs):
    ...         super().__init__(name=name, **kwargs)
    ...         self.count = self.add_variable(shape=(), initializer="zeros", name="count")
    ...     def update_state(self, y_true, y_pred, sample_weight=None):
    ...         self.count.assign_add(1)
    ...     def result(self):
    ...         return self.count.numpy()
    """

    def __init__(self, name: Optional[str] = None, dtype: Optional[str] = None) -> None:
        self.name = name if name is not None else _snake_case(type(self).__name__)
        self._dtype = dtype or "float32"
        self._variables: list[Variable] = []

    # ---- state ---------------------------------------------------------------
    def add_variable(self, shape=(), initializer="zeros", dtype=None, aggregation="sum", name=None) -> Variable:
        """A new state variable of ``shape`` (Keras 3's ``Metric.add_variable``)."""
        dtype = dtype or self._dtype
        shape = tuple(shape) if shape is not None else ()
        var = Variable(_initial_value(initializer, shape, dtype), name=name or "variable", dtype=dtype)
        if not hasattr(self, "_variables"):
            raise RuntimeError(f"{type(self).__name__}: call super().__init__() before add_variable")
        self._variables.append(var)
        return var

    def add_weight(self, shape=(), initializer="zeros", dtype=None, name=None) -> Variable:
        """Alias of :meth:`add_variable` (tf.keras' name)."""
        return self.add_variable(shape=shape, initializer=initializer, dtype=dtype, name=name)

    @property
    def variables(self) -> list[Variable]:
        return list(self._variables)

    @property
    def dtype(self) -> str:
        return self._dtype

    def reset_state(self) -> None:
        """Every state variable back to its initial value (zeros)."""
        for v in self._variables:
            v._reset()

    def update_state(self, *args, **kwargs) -> None:
        raise NotImplementedError(f"{type(self).__name__} must define update_state()")

    def result(self):
        raise NotImplementedError(f"{type(self).__name__} must define result()")

    def __call__(self, *args, **kwargs):
        """``update_state`` with these arguments, then ``result()``."""
        self.update_state(*args, **kwargs)
        return self.result()

    # ---- config ---------------------------------------------------------------
    def get_config(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self._dtype}

    @classmethod
    def from_config(cls, config: dict) -> Metric:
        return cls(**config)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} name={self.name}>"

    def __str__(self) -> str:
        return self.__repr__()


def _snake_case(name: str) -> str:
    import re

    s = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub(r"([a-z])([A-Z])", r"\1_\2", s).lower()


def squeeze_or_expand_to_same_rank(x1: np.ndarray, x2: np.ndarray, expand_rank_1: bool = True):
    """Keras' rule for labels against predictions: a trailing axis of 1 is squeezed
    (or a rank-1 array expanded) so that both have the same rank."""
    r1, r2 = x1.ndim, x2.ndim
    if r1 == r2 + 1 and x1.shape[-1] == 1:
        if r2 == 1 and expand_rank_1:
            x2 = x2[..., None]
        else:
            x1 = x1[..., 0]
    elif r2 == r1 + 1 and x2.shape[-1] == 1:
        if r1 == 1 and expand_rank_1:
            x1 = x1[..., None]
        else:
            x2 = x2[..., 0]
    return x1, x2
