"""Losses by name, function or object, as Keras 3's ``keras.losses``.

Training computes them in C, fused with the output layer. The functions here
(``cdnn.losses.mae(y_true, y_pred)``) and the classes' ``__call__`` run the
same C code on NumPy arrays and return float32 values as Keras does: the
functions one value per sample, ``__call__`` the reduction of them
(``"sum_over_batch_size"`` by default: the weighted sum over the number of
values). A loss written in Python cannot run inside the C training loop:
``compile`` refuses it and lists the built-in ones.
"""

from __future__ import annotations

import math
from typing import Callable, Optional, Union

import numpy as np

from cdnn import _core
from cdnn._errors import invalid, unknown

__all__ = [
    "Loss",
    "MeanSquaredError",
    "MeanAbsoluteError",
    "MeanAbsolutePercentageError",
    "MeanSquaredLogarithmicError",
    "Huber",
    "LogCosh",
    "BinaryCrossentropy",
    "BinaryFocalCrossentropy",
    "CategoricalCrossentropy",
    "SparseCategoricalCrossentropy",
    "KLDivergence",
    "Poisson",
    "Hinge",
    "SquaredHinge",
    "CategoricalHinge",
    "CosineSimilarity",
    "mean_squared_error",
    "mean_absolute_error",
    "mean_absolute_percentage_error",
    "mean_squared_logarithmic_error",
    "huber",
    "log_cosh",
    "binary_crossentropy",
    "binary_focal_crossentropy",
    "categorical_crossentropy",
    "sparse_categorical_crossentropy",
    "kl_divergence",
    "poisson",
    "hinge",
    "squared_hinge",
    "categorical_hinge",
    "cosine_similarity",
    "mse",
    "mae",
    "mape",
    "msle",
    "kld",
    "bce",
    "MSE",
    "MAE",
    "MAPE",
    "MSLE",
    "KLD",
    "BCE",
    "get",
    "serialize",
    "deserialize",
]

_REDUCTIONS = ("sum_over_batch_size", "sum", None, "none", "mean", "mean_with_sample_weight")
#: the reductions the C training loop applies (Keras' default, and "mean", the same)
_TRAINABLE_REDUCTIONS = ("sum_over_batch_size", "mean")


def _as_pred(y_pred) -> np.ndarray:
    p = np.asarray(y_pred)
    if p.dtype.kind not in "biuf":
        raise TypeError(f"Invalid dtype for argument `y_pred`: expected real numbers, received {p.dtype}")
    if p.ndim == 0:
        raise ValueError("Invalid shape for argument `y_pred`: expected at least one dimension, received a scalar")
    return p.astype(np.float32)


def _same_rank(y_true: np.ndarray, shape: tuple) -> np.ndarray:
    """y_true reshaped to y_pred's shape where Keras squeezes or expands a last axis of 1."""
    if y_true.shape == shape:
        return y_true
    if (
        y_true.size == math.prod(shape)
        and abs(y_true.ndim - len(shape)) == 1
        and ((y_true.ndim > len(shape) and y_true.shape[-1] == 1) or (len(shape) > y_true.ndim and shape[-1] == 1))
    ):
        return y_true.reshape(shape)
    raise ValueError(f"Invalid shapes: `y_true` has shape {y_true.shape}, expected {shape} to match `y_pred`")


def _per_sample(core_name: str, y_true, y_pred, from_logits: bool = False, **options) -> np.ndarray:
    """One loss value per sample (y_pred's shape without its last axis), by the C core."""
    p = _as_pred(y_pred)
    shape = p.shape[:-1]
    cols = p.shape[-1]
    out2 = np.ascontiguousarray(p.reshape(-1, cols))
    rows = out2.shape[0]
    t = np.asarray(y_true)
    if core_name == "sparse_categorical_crossentropy":
        if t.shape != shape and t.shape == (*shape, 1):
            t = t.reshape(shape)
        if t.shape != shape:
            raise ValueError(
                f"Invalid shapes: `y_true` has shape {t.shape}, expected {shape} (class indices) "
                f"to match `y_pred` of shape {p.shape}"
            )
        if t.dtype.kind == "f" and not np.array_equal(t, np.round(t)):
            raise ValueError("Invalid labels in `y_true`: expected integer class indices")
        labels = np.ascontiguousarray(t.reshape(rows), dtype=np.int32)
    else:
        if t.dtype.kind not in "biuf":
            raise TypeError(f"Invalid dtype for argument `y_true`: expected real numbers, received {t.dtype}")
        labels = np.ascontiguousarray(_same_rank(t, p.shape).reshape(rows, cols), dtype=np.float32)
    opts = {k: v for k, v in options.items() if v is not None and v != _core.LOSS_OPTIONS[k]}
    if rows == 0:
        return np.zeros(shape, np.float32)
    row_loss, _, _ = _core.loss_forward_backward(
        core_name, out2, out2, labels, activation="linear", from_logits=from_logits, options=opts, need_grad=False
    )
    return row_loss.astype(np.float32).reshape(shape)


# ---- functions: one value per sample, as keras.losses.<name>(y_true, y_pred) ------------------


def mean_squared_error(y_true, y_pred) -> np.ndarray:
    """``mean(square(y_true - y_pred), axis=-1)``."""
    return _per_sample("mean_squared_error", y_true, y_pred)


def mean_absolute_error(y_true, y_pred) -> np.ndarray:
    """``mean(abs(y_true - y_pred), axis=-1)``."""
    return _per_sample("mean_absolute_error", y_true, y_pred)


def mean_absolute_percentage_error(y_true, y_pred) -> np.ndarray:
    """``100 * mean(abs((y_true - y_pred) / max(abs(y_true), 1e-7)), axis=-1)``."""
    return _per_sample("mean_absolute_percentage_error", y_true, y_pred)


def mean_squared_logarithmic_error(y_true, y_pred) -> np.ndarray:
    """``mean(square(log(max(y_pred, 1e-7) + 1) - log(max(y_true, 1e-7) + 1)), axis=-1)``."""
    return _per_sample("mean_squared_logarithmic_error", y_true, y_pred)


def huber(y_true, y_pred, delta: float = 1.0) -> np.ndarray:
    """Mean over the last axis of ``0.5 e^2`` where ``|e| <= delta``, else ``delta |e| - 0.5 delta^2``."""
    return _per_sample("huber", y_true, y_pred, delta=_positive(delta, "delta"))


def log_cosh(y_true, y_pred) -> np.ndarray:
    """``mean(log(cosh(y_pred - y_true)), axis=-1)``, computed without overflow."""
    return _per_sample("log_cosh", y_true, y_pred)


def binary_crossentropy(
    y_true, y_pred, from_logits: bool = False, label_smoothing: float = 0.0, axis: int = -1
) -> np.ndarray:
    """Binary cross-entropy, the mean over the last axis (probabilities clipped to [1e-7, 1 - 1e-7])."""
    _axis(axis)
    return _per_sample(
        "binary_crossentropy", y_true, y_pred, bool(from_logits), label_smoothing=_smoothing(label_smoothing)
    )


def binary_focal_crossentropy(
    y_true,
    y_pred,
    apply_class_balancing: bool = False,
    alpha: float = 0.25,
    gamma: float = 2.0,
    from_logits: bool = False,
    label_smoothing: float = 0.0,
    axis: int = -1,
) -> np.ndarray:
    """Binary cross-entropy times ``(1 - p_t) ** gamma`` (and ``alpha`` by class with class balancing)."""
    _axis(axis)
    return _per_sample(
        "binary_focal_crossentropy",
        y_true,
        y_pred,
        bool(from_logits),
        label_smoothing=_smoothing(label_smoothing),
        gamma=_finite(gamma, "gamma", 0.0),
        alpha=_finite(alpha, "alpha"),
        apply_class_balancing=bool(apply_class_balancing),
    )


def categorical_crossentropy(
    y_true, y_pred, from_logits: bool = False, label_smoothing: float = 0.0, axis: int = -1
) -> np.ndarray:
    """Cross-entropy against one-hot (or soft) labels, smoothed towards ``1 / classes``."""
    _axis(axis)
    return _per_sample(
        "categorical_crossentropy", y_true, y_pred, bool(from_logits), label_smoothing=_smoothing(label_smoothing)
    )


def sparse_categorical_crossentropy(
    y_true, y_pred, from_logits: bool = False, ignore_class: Optional[int] = None, axis: int = -1
) -> np.ndarray:
    """Cross-entropy against integer class labels; samples of ``ignore_class`` get 0."""
    _axis(axis)
    return _per_sample(
        "sparse_categorical_crossentropy", y_true, y_pred, bool(from_logits), ignore_class=_ignore(ignore_class)
    )


def kl_divergence(y_true, y_pred) -> np.ndarray:
    """``sum(y_true * log(y_true / y_pred), axis=-1)``, both clipped to [1e-7, 1]."""
    return _per_sample("kl_divergence", y_true, y_pred)


def poisson(y_true, y_pred) -> np.ndarray:
    """``mean(y_pred - y_true * log(y_pred + 1e-7), axis=-1)``."""
    return _per_sample("poisson", y_true, y_pred)


def hinge(y_true, y_pred) -> np.ndarray:
    """``mean(maximum(1 - y_true * y_pred, 0), axis=-1)``; labels that are all 0 or 1 are read as -1 and 1."""
    return _per_sample("hinge", y_true, y_pred)


def squared_hinge(y_true, y_pred) -> np.ndarray:
    """``mean(square(maximum(1 - y_true * y_pred, 0)), axis=-1)``; 0/1 labels read as -1/1."""
    return _per_sample("squared_hinge", y_true, y_pred)


def categorical_hinge(y_true, y_pred) -> np.ndarray:
    """``maximum(neg - pos + 1, 0)`` with ``pos = sum(y_true * y_pred)``, ``neg = max((1 - y_true) * y_pred)``."""
    return _per_sample("categorical_hinge", y_true, y_pred)


def cosine_similarity(y_true, y_pred, axis: int = -1) -> np.ndarray:
    """``-sum(l2_normalize(y_true) * l2_normalize(y_pred), axis=-1)``: -1 for the same direction."""
    _axis(axis)
    return _per_sample("cosine_similarity", y_true, y_pred)


# Keras' short names
mse = MSE = mean_squared_error
mae = MAE = mean_absolute_error
mape = MAPE = mean_absolute_percentage_error
msle = MSLE = mean_squared_logarithmic_error
kld = KLD = kl_divergence
bce = BCE = binary_crossentropy


def _axis(axis) -> None:
    if axis != -1 or isinstance(axis, bool):
        raise invalid("axis", axis, "-1 (cdnn computes losses over the last axis)")


def _finite(value, name: str, low: Optional[float] = None) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float, np.integer, np.floating))
        or not math.isfinite(value)
        or (low is not None and value < low)
    ):
        raise invalid(name, value, "a finite number" + (f" >= {low}" if low is not None else ""))
    return float(value)


def _positive(value, name: str) -> float:
    v = _finite(value, name)
    if v <= 0:
        raise invalid(name, value, "a positive number")
    return v


def _smoothing(value) -> float:
    v = _finite(value, "label_smoothing")
    if not 0 <= v <= 1:
        raise invalid("label_smoothing", value, "a number in [0, 1]")
    return v


def _ignore(value) -> Optional[int]:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not -(2**31) <= value < 2**31:
        raise invalid("ignore_class", value, "None or an integer class index")
    return int(value)


# ---- classes ------------------------------------------------------------------------------------


class Loss:
    """Base class of losses, as ``keras.losses.Loss``.

    ``__call__(y_true, y_pred, sample_weight=None)`` returns the ``reduction`` of
    :meth:`call`'s per-sample values. A subclass that writes its own ``call`` in
    Python works standalone, but cdnn cannot train with it (``compile`` says so).
    """

    #: the C core's loss this class computes ("" for a user-written loss)
    core_name = ""

    def __init__(
        self, name: Optional[str] = None, reduction: Optional[str] = "sum_over_batch_size", dtype=None
    ) -> None:
        if reduction not in _REDUCTIONS:
            raise ValueError(
                f"Invalid value for argument `reduction`. Expected one of {set(_REDUCTIONS)}. "
                f"Received: reduction={reduction!r}"
            )
        if dtype not in (None, "float32", np.float32):
            raise invalid("dtype", dtype, "None or 'float32' (cdnn computes in float32)")
        self.name = name if name is not None else type(self).__name__.lower()
        self.reduction = reduction
        self.dtype = "float32"

    def call(self, y_true, y_pred) -> np.ndarray:
        """One loss value per sample."""
        raise NotImplementedError

    def _mask(self, y_true) -> Optional[np.ndarray]:
        return None

    def __call__(self, y_true, y_pred, sample_weight=None):
        """The loss of ``y_pred`` against ``y_true``, reduced as ``self.reduction`` says."""
        # as Keras: both become float32 tensors (arrays here) before call()
        y_true, y_pred = np.asarray(y_true, dtype=np.float32), np.asarray(y_pred, dtype=np.float32)
        values = np.asarray(self.call(y_true, y_pred), dtype=np.float32)
        mask = self._mask(y_true)
        weight = None
        if sample_weight is not None:
            weight = np.asarray(sample_weight, dtype=np.float32)
            if weight.shape != values.shape:
                weight = _same_rank(weight, values.shape) if weight.ndim else np.broadcast_to(weight, values.shape)
        if mask is not None:
            mask = mask.reshape(values.shape)
            if self.reduction in ("mean", "sum_over_batch_size"):
                # Keras: valid entries weigh total / valid, so that the mean is over the valid ones
                valid = int(mask.sum())
                scale = values.size / valid if valid else 0.0
                m = np.where(mask, np.float32(scale), np.float32(0))
            else:
                m = mask.astype(np.float32)
            weight = m if weight is None else weight * m
        if weight is not None:
            values = values * weight
        if self.reduction in (None, "none") or values.ndim == 0 or values.size == 0:
            return values
        total = np.float32(values.sum(dtype=np.float64))
        if self.reduction == "sum":
            return total
        if self.reduction == "mean_with_sample_weight" and weight is not None:
            divisor = float(weight.sum(dtype=np.float64))
        else:
            divisor = float(values.size)
        return np.float32(total / divisor) if divisor else np.float32(0.0)

    def get_config(self) -> dict:
        """Keras' config: ``name``, ``reduction`` and the loss's own arguments."""
        return {"name": self.name, "reduction": self.reduction}

    @classmethod
    def from_config(cls, config: dict) -> Loss:
        return cls(**config)

    def _core_options(self) -> dict:
        """The options the C core takes, by Keras' names."""
        return {}

    def __repr__(self) -> str:
        return f"<{type(self).__name__} name={self.name!r}>"


class _BuiltinLoss(Loss):
    """A loss the C core computes: ``call`` is the module function of the same name."""

    #: argument names (beyond name, reduction, dtype) in get_config, with Keras' defaults
    _args: dict = {}
    _default_name = ""

    def __init__(
        self, reduction: Optional[str] = "sum_over_batch_size", name: Optional[str] = None, dtype=None, **kwargs
    ) -> None:
        unknown_args = set(kwargs) - set(self._args)
        if unknown_args:
            raise TypeError(f"{type(self).__name__}: unexpected argument(s) {sorted(unknown_args)}")
        super().__init__(name=name or self._default_name, reduction=reduction, dtype=dtype)
        for k, default in self._args.items():
            setattr(self, k, kwargs.get(k, default))
        self._kwargs = {k: getattr(self, k) for k in self._args}
        # validated now, as Keras does at construction: the function checks its arguments on no data
        _FUNCTIONS[self.core_name](
            np.zeros((0, 1), np.float32), np.zeros((0, 1), np.float32), **self._function_kwargs()
        )

    #: whether outputs are logits (an argument of the cross-entropies)
    from_logits = False

    def _function_kwargs(self) -> dict:
        return dict(self._kwargs)

    def call(self, y_true, y_pred) -> np.ndarray:
        return _FUNCTIONS[self.core_name](y_true, y_pred, **self._function_kwargs())

    def _mask(self, y_true) -> Optional[np.ndarray]:
        # Keras masks the samples of ignore_class out of the reduction
        ignore = self._kwargs.get("ignore_class")
        if ignore is None:
            return None
        t = np.asarray(y_true)
        return t != ignore

    def get_config(self) -> dict:
        return {**super().get_config(), **self._kwargs}

    def _core_options(self) -> dict:
        kw = self._function_kwargs()
        kw.pop("from_logits", None)
        kw.pop("axis", None)
        return {k: v for k, v in kw.items() if k in _core.LOSS_OPTIONS}


def _make(class_name: str, core_name: str, default_name: str, args: dict, doc: str) -> type:
    """A Keras loss class: its arguments (in Keras' order, with Keras' defaults), then reduction, name, dtype."""
    base = _BuiltinLoss
    order = list(args)

    def __init__(self, *positional, reduction="sum_over_batch_size", name=default_name, dtype=None, **kwargs):
        if len(positional) > len(order):
            raise TypeError(f"{class_name} takes at most {len(order)} positional argument(s)")
        for k, v in zip(order, positional):
            if k in kwargs:
                raise TypeError(f"{class_name}: got multiple values for argument {k!r}")
            kwargs[k] = v
        base.__init__(self, reduction=reduction, name=name, dtype=dtype, **kwargs)

    return type(
        class_name,
        (base,),
        {
            "core_name": core_name,
            "_default_name": default_name,
            "_args": dict(args),
            "__init__": __init__,
            "__doc__": doc,
            "__module__": __name__,
        },
    )


MeanSquaredError = _make(
    "MeanSquaredError", "mean_squared_error", "mean_squared_error", {}, "Mean of squared errors over the last axis."
)
MeanAbsoluteError = _make(
    "MeanAbsoluteError", "mean_absolute_error", "mean_absolute_error", {}, "Mean of absolute errors over the last axis."
)
MeanAbsolutePercentageError = _make(
    "MeanAbsolutePercentageError",
    "mean_absolute_percentage_error",
    "mean_absolute_percentage_error",
    {},
    "100 times the mean absolute error relative to |y_true| (at least 1e-7).",
)
MeanSquaredLogarithmicError = _make(
    "MeanSquaredLogarithmicError",
    "mean_squared_logarithmic_error",
    "mean_squared_logarithmic_error",
    {},
    "Mean squared error of log(1 + max(y, 1e-7)).",
)
Huber = _make(
    "Huber", "huber", "huber_loss", {"delta": 1.0}, "Quadratic within ``delta`` of the target, linear beyond."
)
LogCosh = _make("LogCosh", "log_cosh", "log_cosh", {}, "Mean of log(cosh(error)) over the last axis.")
BinaryCrossentropy = _make(
    "BinaryCrossentropy",
    "binary_crossentropy",
    "binary_crossentropy",
    {"from_logits": False, "label_smoothing": 0.0, "axis": -1},
    "Binary cross-entropy, averaged over the last axis.",
)
BinaryFocalCrossentropy = _make(
    "BinaryFocalCrossentropy",
    "binary_focal_crossentropy",
    "binary_focal_crossentropy",
    {
        "apply_class_balancing": False,
        "alpha": 0.25,
        "gamma": 2.0,
        "from_logits": False,
        "label_smoothing": 0.0,
        "axis": -1,
    },
    "Binary cross-entropy down-weighting easy examples by (1 - p_t) ** gamma.",
)
CategoricalCrossentropy = _make(
    "CategoricalCrossentropy",
    "categorical_crossentropy",
    "categorical_crossentropy",
    {"from_logits": False, "label_smoothing": 0.0, "axis": -1},
    "Cross-entropy against one-hot (or soft) labels.",
)
SparseCategoricalCrossentropy = _make(
    "SparseCategoricalCrossentropy",
    "sparse_categorical_crossentropy",
    "sparse_categorical_crossentropy",
    {"from_logits": False, "ignore_class": None},
    "Cross-entropy against integer class labels.",
)
KLDivergence = _make(
    "KLDivergence", "kl_divergence", "kl_divergence", {}, "Kullback-Leibler divergence of y_pred from y_true."
)
Poisson = _make("Poisson", "poisson", "poisson", {}, "Poisson loss: mean(y_pred - y_true * log(y_pred + 1e-7)).")
Hinge = _make("Hinge", "hinge", "hinge", {}, "Hinge loss for labels -1/1 (or 0/1).")
SquaredHinge = _make(
    "SquaredHinge", "squared_hinge", "squared_hinge", {}, "Squared hinge loss for labels -1/1 (or 0/1)."
)
CategoricalHinge = _make(
    "CategoricalHinge", "categorical_hinge", "categorical_hinge", {}, "Categorical hinge loss for one-hot labels."
)
CosineSimilarity = _make(
    "CosineSimilarity",
    "cosine_similarity",
    "cosine_similarity",
    {"axis": -1},
    "Negative cosine similarity of y_true and y_pred over the last axis.",
)

_FUNCTIONS: dict[str, Callable] = {
    "mean_squared_error": mean_squared_error,
    "mean_absolute_error": mean_absolute_error,
    "mean_absolute_percentage_error": mean_absolute_percentage_error,
    "mean_squared_logarithmic_error": mean_squared_logarithmic_error,
    "huber": huber,
    "log_cosh": log_cosh,
    "binary_crossentropy": binary_crossentropy,
    "binary_focal_crossentropy": binary_focal_crossentropy,
    "categorical_crossentropy": categorical_crossentropy,
    "sparse_categorical_crossentropy": sparse_categorical_crossentropy,
    "kl_divergence": kl_divergence,
    "poisson": poisson,
    "hinge": hinge,
    "squared_hinge": squared_hinge,
    "categorical_hinge": categorical_hinge,
    "cosine_similarity": cosine_similarity,
}
_CLASSES: dict[str, type] = {
    c.__name__: c
    for c in (
        MeanSquaredError,
        MeanAbsoluteError,
        MeanAbsolutePercentageError,
        MeanSquaredLogarithmicError,
        Huber,
        LogCosh,
        BinaryCrossentropy,
        BinaryFocalCrossentropy,
        CategoricalCrossentropy,
        SparseCategoricalCrossentropy,
        KLDivergence,
        Poisson,
        Hinge,
        SquaredHinge,
        CategoricalHinge,
        CosineSimilarity,
    )
}
_CLASS_OF_CORE = {c.core_name: c for c in _CLASSES.values()}
#: every name ``get`` and ``compile`` accept: functions (and Keras' short names) and classes
_NAMES: dict[str, Union[Callable, type]] = {
    **_FUNCTIONS,
    **_CLASSES,
    "mse": mse,
    "MSE": mse,
    "mae": mae,
    "MAE": mae,
    "mape": mape,
    "MAPE": mape,
    "msle": msle,
    "MSLE": msle,
    "kld": kld,
    "KLD": kld,
    "bce": bce,
    "BCE": bce,
}


def _builtin_list() -> str:
    return ", ".join(sorted(_FUNCTIONS))


def serialize(loss) -> Union[dict, str]:
    """Keras' serialized form: ``{"class_name": ..., "config": {...}}`` for a class, the name of a function."""
    if isinstance(loss, Loss):
        return {"class_name": type(loss).__name__, "config": loss.get_config()}
    if callable(loss) and _FUNCTIONS.get(getattr(loss, "__name__", "")) is loss:
        return loss.__name__
    raise ValueError(f"Cannot serialize loss {loss!r}: expected a cdnn loss")


def deserialize(config, custom_objects=None) -> Union[Loss, Callable]:
    """The loss of :func:`serialize`'s form (or cdnn's older flat form ``{"class_name": ..., **config}``)."""
    if isinstance(config, str):
        return get(config)
    if not isinstance(config, dict) or config.get("class_name") not in _CLASSES:
        raise unknown("loss", config, _NAMES)
    cls = _CLASSES[config["class_name"]]
    if isinstance(config.get("config"), dict):
        return cls.from_config(config["config"])
    flat = {k: v for k, v in config.items() if k != "class_name"}
    return cls.from_config(flat)


def get(identifier) -> Union[Loss, Callable, None]:
    """A loss from a name, a function, a class, an instance or a config dict, as ``keras.losses.get``.

    Function names (``"mse"``, ``"huber"``) give the function, class names an instance.
    """
    if identifier is None:
        return None
    if isinstance(identifier, dict):
        return deserialize(identifier)
    if isinstance(identifier, str):
        obj = _NAMES.get(identifier)
        if obj is None:
            raise unknown("loss", identifier, _NAMES)
        return obj() if isinstance(obj, type) else obj
    if isinstance(identifier, type) and issubclass(identifier, Loss):
        return identifier()
    if isinstance(identifier, Loss) or callable(identifier):
        return identifier
    raise ValueError(f"Could not interpret loss identifier: {identifier!r}")


def resolve(identifier) -> Loss:
    """The :class:`Loss` instance ``compile`` trains with: built-in losses only.

    A name or a built-in function becomes its class with Keras' defaults (named as given, as
    Keras names the loss after the string); a user-written loss is refused.
    """
    obj = get(identifier)
    if isinstance(obj, _BuiltinLoss):
        if obj.reduction not in _TRAINABLE_REDUCTIONS:
            raise ValueError(
                f"Invalid value for argument `loss`: cdnn trains with the reduction "
                f"'sum_over_batch_size' (Keras' default), received {type(obj).__name__}"
                f"(reduction={obj.reduction!r}); other reductions work in direct calls"
            )
        return obj
    if callable(obj) and not isinstance(obj, Loss) and _FUNCTIONS.get(getattr(obj, "__name__", "")) is obj:
        loss = _CLASS_OF_CORE[obj.__name__]()
        loss.name = identifier if isinstance(identifier, str) else obj.__name__
        return loss
    what = type(obj).__name__ if isinstance(obj, Loss) else getattr(obj, "__name__", repr(obj))
    raise ValueError(
        f"Invalid value for argument `loss`: {what!r} is a loss written in Python, which cdnn cannot "
        f"run: it computes the loss and its gradient inside its C training loop. Use one of the "
        f"built-in losses (as a name, function or class): {_builtin_list()}"
    )
