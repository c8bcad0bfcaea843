"""Core layers of a model: Input, Flatten, Dense, Dropout (Keras 3's subset).

A layer knows its configuration (plain JSON-able data, what saving stores),
builds its weights from an input shape, and reports its output shape and
parameter count. The arithmetic runs in the C core, over the whole model.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import numpy as np

from cdnn import _core, _naming, activations, constraints, initializers, regularizers
from cdnn._errors import invalid

__all__ = ["Layer", "InputLayer", "Input", "Flatten", "Dense", "Dropout", "deserialize"]

Shape = tuple  # a shape without the batch dimension

#: the largest feature count or layer width: the C core's dimensions are 32-bit ints
MAX_DIM = 2**31 - 1


def _shape_arg(shape, name: str) -> Shape:
    if isinstance(shape, (int, np.integer)):
        shape = (int(shape),)
    if not isinstance(shape, (tuple, list)) or not all(
            isinstance(d, (int, np.integer)) and not isinstance(d, bool) for d in shape):
        raise invalid(name, shape, "a tuple of positive integers, e.g. (28, 28)")
    shape = tuple(int(d) for d in shape)
    if not shape or any(d <= 0 for d in shape):
        raise invalid(name, shape, "a tuple of positive integers, e.g. (28, 28)")
    return shape


class Layer:
    """Base class: ``name``, ``built``, ``input_shape`` and weights."""

    def __init__(self, name: Optional[str] = None, input_shape=None, **kwargs) -> None:
        if "input_dim" in kwargs:
            input_shape = (kwargs.pop("input_dim"),)
        kwargs.pop("trainable", None)
        kwargs.pop("dtype", None)
        if kwargs:
            raise TypeError(f"{type(self).__name__}: unsupported argument(s) {sorted(kwargs)}")
        if name is not None and not isinstance(name, str):
            raise invalid("name", name, "a string")
        self.name = name if name else _naming.unique_name(_naming.snake_case(type(self).__name__))
        self._input_shape = _shape_arg(input_shape, "input_shape") if input_shape is not None else None
        self.built = False
        self.output_shape_: Optional[Shape] = None

    # shapes exclude the batch dimension; summary shows them as (None, ...)
    def compute_output_shape(self, input_shape: Shape) -> Shape:
        return tuple(input_shape)

    def build(self, input_shape: Shape) -> None:
        """Create the weights for inputs of ``input_shape`` (without the batch dimension)."""
        self.output_shape_ = self.compute_output_shape(tuple(input_shape))
        self.built = True

    @property
    def weights(self) -> list[np.ndarray]:
        return []

    def count_params(self) -> int:
        return int(sum(w.size for w in self.weights))

    def get_config(self) -> dict:
        cfg = {"name": self.name}
        if self._input_shape is not None:
            cfg["input_shape"] = list(self._input_shape)
        return cfg

    def get_weights(self) -> list[np.ndarray]:
        return [w.copy() for w in self.weights]

    def __repr__(self) -> str:
        return f"<{type(self).__name__} name={self.name!r}, built={self.built}>"


class InputLayer(Layer):
    """The model's input: its shape (without the batch dimension)."""

    def __init__(self, shape=None, name: Optional[str] = None, batch_size=None, **kwargs) -> None:
        if shape is None:
            shape = kwargs.pop("input_shape", None)
        if shape is None:
            raise invalid("shape", shape, "a tuple of positive integers, e.g. (784,)")
        super().__init__(name=name or _naming.unique_name("input_layer"), input_shape=shape, **kwargs)

    @property
    def shape(self) -> tuple:
        return (None, *self._input_shape)

    def get_config(self) -> dict:
        return {"name": self.name, "shape": list(self._input_shape)}


def Input(shape=None, name: Optional[str] = None, batch_size=None, **kwargs) -> InputLayer:
    """``keras.layers.Input(shape=(784,))``: the first element of a Sequential model."""
    return InputLayer(shape=shape, name=name, batch_size=batch_size, **kwargs)


class Flatten(Layer):
    """Reshape each sample to one dimension: ``(None, 28, 28)`` -> ``(None, 784)``."""

    def compute_output_shape(self, input_shape: Shape) -> Shape:
        return (int(math.prod(input_shape)),)


class Dense(Layer):
    """``output = activation(input @ kernel + bias)``, fused in C.

    Parameters
    ----------
    units : int
        Output width.
    activation : str, function or None
        A name or function of :mod:`cdnn.activations` (``"relu"``, ``"softmax"``, ``"elu"``,
        ``"swish"``, ...; None is linear), with Keras' default parameters.
    use_bias : bool
        Whether to add a bias vector.
    kernel_initializer, bias_initializer : str or Initializer
        Keras names or objects (default ``"glorot_uniform"`` and ``"zeros"``).
    kernel_regularizer, bias_regularizer : str or Regularizer, optional
        L1, L2 or L1L2 penalties, trained in C and added to the loss as Keras reports it.
    activity_regularizer : None
        Refused: a penalty on the outputs is not in cdnn's C training step.
    kernel_constraint, bias_constraint : str or Constraint, optional
        MaxNorm, NonNeg, UnitNorm or MinMaxNorm, applied after each update.
    """

    def __init__(self, units: int, activation=None, use_bias: bool = True,
                 kernel_initializer="glorot_uniform", bias_initializer="zeros",
                 kernel_regularizer=None, bias_regularizer=None, activity_regularizer=None,
                 kernel_constraint=None, bias_constraint=None,
                 name: Optional[str] = None, input_shape=None, **kwargs) -> None:
        if isinstance(units, bool) or not isinstance(units, (int, np.integer)) or units <= 0:
            raise invalid("units", units, "a positive integer")
        if units > MAX_DIM:
            raise invalid("units", units, f"a positive integer up to {MAX_DIM} (2**31 - 1)")
        super().__init__(name=name, input_shape=input_shape, **kwargs)
        self.units = int(units)
        self.activation = activations.get(activation)
        self.use_bias = bool(use_bias)
        initializers.get(kernel_initializer), initializers.get(bias_initializer)  # validate names now
        self.kernel_initializer = kernel_initializer if isinstance(kernel_initializer, str) else \
            initializers.get(kernel_initializer)
        self.bias_initializer = bias_initializer if isinstance(bias_initializer, str) else \
            initializers.get(bias_initializer)
        if activity_regularizer is not None:
            raise ValueError(f"Invalid value for argument `activity_regularizer`: cdnn's C training step has no "
                             f"penalty on a layer's outputs yet; expected None, received {activity_regularizer!r}")
        self.activity_regularizer = None
        self.kernel_regularizer = regularizers.get(kernel_regularizer)
        self.bias_regularizer = regularizers.get(bias_regularizer)
        self.kernel_constraint = constraints.get(kernel_constraint)
        self.bias_constraint = constraints.get(bias_constraint)
        self._core_rules()  # refuse what the C core cannot apply, now
        self.kernel: Optional[np.ndarray] = None
        self.bias: Optional[np.ndarray] = None

    def compute_output_shape(self, input_shape: Shape) -> Shape:
        return (*input_shape[:-1], self.units)

    def build(self, input_shape: Shape) -> None:
        if len(input_shape) != 1:
            raise ValueError(
                f"Dense layer {self.name!r} received inputs of shape {(None, *input_shape)}: cdnn's Dense works on "
                f"2-D inputs (batch, features). Add a Flatten() layer before it."
            )
        if not 0 < int(input_shape[0]) <= MAX_DIM:
            raise ValueError(f"Dense layer {self.name!r} received {input_shape[0]} input features (a kernel of shape "
                             f"{(int(input_shape[0]), self.units)}): expected a positive number of features, at most "
                             f"{MAX_DIM} (2**31 - 1, as the C core indexes with 32-bit integers)")
        self.kernel = initializers.get(self.kernel_initializer)((int(input_shape[0]), self.units))
        self.bias = initializers.get(self.bias_initializer)((self.units,)) if self.use_bias else None
        super().build(input_shape)

    @property
    def weights(self) -> list[np.ndarray]:
        if not self.built:
            return []
        return [self.kernel] + ([self.bias] if self.use_bias else [])

    def _core_rules(self) -> dict:
        """The regularizers and constraints as the C core reads them (``kernel_rules``/``bias_rules``)."""
        rules = {}
        for key, reg, con in (("kernel_rules", self.kernel_regularizer, self.kernel_constraint),
                              ("bias_rules", self.bias_regularizer, self.bias_constraint)):
            r = {}
            if reg is not None:
                r.update(reg._core())
                if r.get("orth_factor") and key == "bias_rules":
                    raise ValueError("Invalid value for argument `bias_regularizer`: OrthogonalRegularizer needs "
                                     "a 2-D kernel (Keras: inputs must have rank 2), a bias is 1-D")
                if r.get("orth_factor") and getattr(self, "kernel", None) is not None:
                    count = self.kernel.shape[0 if r["orth_mode"] == "rows" else 1]
                    if count < 2:
                        raise ValueError(f"OrthogonalRegularizer(mode={r['orth_mode']!r}) on layer {self.name!r} "
                                         f"needs at least 2 vectors, its kernel {self.kernel.shape} has {count} "
                                         f"(no pair to make orthogonal; Keras divides by 0 pairs)")
                    # C's scratch: the normalized vectors, their gradients and the inverse norms
                    r["orth_scratch"] = np.empty(2 * self.kernel.size + max(self.kernel.shape), np.float32)
            if con is not None:
                r.update(con._core())
                if key == "bias_rules":
                    r["axis"] = 0  # a bias is one vector: its norm is over all of it
            rules[key] = r
        return rules

    @property
    def losses(self) -> list[float]:
        """The regularization penalties at the current weights (Keras' ``layer.losses``)."""
        out = []
        if self.built:
            for reg, w in ((self.kernel_regularizer, self.kernel), (self.bias_regularizer, self.bias)):
                if reg is not None and w is not None:
                    out.append(reg(w))
        return out

    def _penalty(self) -> float:
        return float(sum(self.losses))

    def get_config(self) -> dict:
        cfg = {**super().get_config(), "units": self.units,
               "activation": activations.serialize(self.activation), "use_bias": self.use_bias,
               "kernel_initializer": initializers.serialize(self.kernel_initializer),
               "bias_initializer": initializers.serialize(self.bias_initializer)}
        for key, obj, module in (("kernel_regularizer", self.kernel_regularizer, regularizers),
                                 ("bias_regularizer", self.bias_regularizer, regularizers),
                                 ("kernel_constraint", self.kernel_constraint, constraints),
                                 ("bias_constraint", self.bias_constraint, constraints)):
            if obj is not None:
                cfg[key] = module.serialize(obj)
        return cfg

    def __call__(self, x) -> np.ndarray:
        """Apply the layer to a NumPy batch ``(n, features)`` (builds it on first use)."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        if not self.built:
            self.build(x.shape[1:])
        return _core.dense_forward(x, self.kernel, self.bias, activations.serialize(self.activation),
                                   activations.core_alpha(self.activation))[0]


class Dropout(Layer):
    """Zero a fraction ``rate`` of the inputs while training, scaling the rest by ``1/(1-rate)``."""

    def __init__(self, rate: float, noise_shape=None, seed=None, name: Optional[str] = None, **kwargs) -> None:
        if isinstance(rate, bool) or not isinstance(rate, (int, float, np.floating)) or not 0 <= rate < 1:
            raise invalid("rate", rate, "a number in [0, 1)")
        if noise_shape is not None:
            raise ValueError("Invalid value for argument `noise_shape`: cdnn's Dropout supports only None")
        super().__init__(name=name, **kwargs)
        self.rate = float(rate)
        self.seed = seed

    def get_config(self) -> dict:
        return {**super().get_config(), "rate": self.rate}


_CLASSES = {c.__name__: c for c in (InputLayer, Flatten, Dense, Dropout)}


def deserialize(config: dict) -> Layer:
    """Rebuild a layer from ``{"class_name": ..., "config": {...}}`` (the saved architecture)."""
    if not isinstance(config, dict) or config.get("class_name") not in _CLASSES or not isinstance(
            config.get("config"), dict):
        raise ValueError(f"Invalid layer description in model file: {str(config)[:200]!r}")
    return _CLASSES[config["class_name"]](**config["config"])
