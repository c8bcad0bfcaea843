"""Core layers: the ``Layer`` base class, ``Input``/``InputLayer``, ``Dense``, ``Identity``.

A layer knows its configuration (plain JSON-able data, what saving stores),
builds its weights from an input shape, and reports its output shape and
parameter count. Called on symbolic tensors (``keras.Input``) it records a
node of the model's graph; called on NumPy arrays it runs in the C core.
The arithmetic always runs in the C core, over the whole model.
"""

from __future__ import annotations

import contextvars
import math
import warnings
from typing import Optional

import numpy as np

from cdnn import _core, _naming, activations, constraints, initializers, regularizers
from cdnn._errors import invalid
from cdnn._symbolic import KerasTensor, Node, flatten, is_symbolic

__all__ = ["Layer", "InputLayer", "Input", "Dense", "Identity"]

Shape = tuple  # a shape without the batch dimension

#: the largest feature count or layer width: the C core's dimensions are 32-bit ints
MAX_DIM = 2**31 - 1


def _shape_arg(shape, name: str) -> Shape:
    if isinstance(shape, (int, np.integer)):
        shape = (int(shape),)
    if not isinstance(shape, (tuple, list)) or not all(
        isinstance(d, (int, np.integer)) and not isinstance(d, bool) for d in shape
    ):
        raise invalid(name, shape, "a tuple of positive integers, e.g. (28, 28)")
    shape = tuple(int(d) for d in shape)
    if not shape or any(d <= 0 for d in shape):
        raise invalid(name, shape, "a tuple of positive integers, e.g. (28, 28)")
    return shape


def _float_arg(value, name: str, low: float = -math.inf, high: float = math.inf, what: str = "a number") -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float, np.integer, np.floating))
        or not (low <= float(value) <= high)
        or math.isnan(float(value))
    ):
        raise invalid(name, value, what)
    return float(value)


def _refuse_unsupported(layer: str, kwargs: dict, supported: dict) -> None:
    """Refuse Keras arguments cdnn does not implement unless they have their default value."""
    for key, default in supported.items():
        if key in kwargs:
            value = kwargs.pop(key)
            if value is not None and value != default:
                raise TypeError(
                    f"{layer}: unsupported argument `{key}`={value!r}: cdnn supports only the default {default!r}"
                )


def _aligned(a: np.ndarray) -> np.ndarray:
    """A float32 copy of ``a`` whose data starts on a 64-byte boundary.

    Parameters
    ----------
    a : numpy.ndarray
        The values (a Dense layer's new kernel or bias).

    Returns
    -------
    numpy.ndarray
        A C-contiguous array of ``a``'s shape: a cache line's start, so that the GEMM's vector loads of
        a kernel's rows split no line (NumPy's own allocations are 16-byte aligned).
    """
    a = np.asarray(a, np.float32)
    buf = np.empty(a.size + 16, np.float32)
    skip = (-buf.ctypes.data % 64) // 4
    out = buf[skip : skip + a.size].reshape(a.shape)
    out[...] = a
    return out


def _activity_regularizer(identifier) -> Optional[regularizers.Regularizer]:
    """A layer's ``activity_regularizer``: an L1, L2 or L1L2 penalty on its output, which the C core adds."""
    reg = regularizers.get(identifier)
    if reg is None:
        return None
    if isinstance(reg, regularizers.OrthogonalRegularizer):
        raise ValueError(
            "Invalid value for argument `activity_regularizer`: cdnn applies L1, L2 and L1L2 penalties to a "
            "layer's output; OrthogonalRegularizer is for kernels"
        )
    reg._core()  # refuses a user subclass: the C step cannot call it
    return reg


#: set while a layer is made from its config: no warning about an ``input_shape`` the config records
_REBUILDING: contextvars.ContextVar[bool] = contextvars.ContextVar("cdnn_layer_rebuilding", default=False)


class Layer:
    """Base class: ``name``, ``trainable``, ``built``, weights, and the symbolic/eager call.

    Subclasses define ``compute_output_shape``, ``build`` (weights) and
    ``_lower`` (the C core's node for this layer). Shapes given to these
    exclude the batch dimension; layers of several inputs get a list of shapes.
    """

    #: whether the layer takes a list of tensors (merge layers)
    _takes_list = False

    def __init__(
        self, name: Optional[str] = None, input_shape=None, trainable: bool = True, dtype=None, **kwargs
    ) -> None:
        if kwargs.get("input_dim") is not None:
            input_shape = (kwargs.pop("input_dim"),)
        kwargs.pop("input_dim", None)
        if input_shape is not None and not isinstance(self, InputLayer) and not _REBUILDING.get():
            warnings.warn(  # Keras 3's words (keras/src/layers/layer.py)
                "Do not pass an `input_shape`/`input_dim` argument to a layer. When using Sequential models, "
                "prefer using an `Input(shape)` object as the first layer in the model instead.",
                UserWarning,
                stacklevel=2,
            )
        if "batch_input_shape" in kwargs:
            shape = kwargs.pop("batch_input_shape")
            input_shape = tuple(shape)[1:] if shape is not None else None
        self.activity_regularizer = _activity_regularizer(kwargs.pop("activity_regularizer", None))
        if dtype not in (None, "float32") and getattr(dtype, "name", None) != "float32":
            raise ValueError(
                f"{type(self).__name__}: argument `dtype`={dtype!r} is not supported: cdnn computes in float32"
            )
        if kwargs:
            raise TypeError(f"{type(self).__name__}: unsupported argument(s) {sorted(kwargs)}")
        if name is not None and not isinstance(name, str):
            raise invalid("name", name, "a string")
        self.name = name if name else _naming.unique_name(_naming.snake_case(type(self).__name__))
        self._input_shape = _shape_arg(input_shape, "input_shape") if input_shape is not None else None
        self.built = False
        self.output_shape_: Optional[Shape] = None
        self._build_input_shape = None
        self._inbound_nodes: list[Node] = []
        self.trainable = trainable

    @property
    def trainable(self) -> bool:
        return self._trainable

    @trainable.setter
    def trainable(self, value: bool) -> None:
        if not isinstance(value, (bool, np.bool_)):
            raise invalid("trainable", value, "True or False")
        self._trainable = bool(value)

    # ---- shapes and weights (shapes exclude the batch dimension; summary shows (None, ...)) ----
    def compute_output_shape(self, input_shape: Shape) -> Shape:
        return tuple(input_shape)

    def build(self, input_shape: Shape) -> None:
        """Create the weights for inputs of ``input_shape`` (without the batch dimension)."""
        self._build_input_shape = input_shape
        self.output_shape_ = self.compute_output_shape(input_shape)
        self.built = True

    def _check_call_shape(self, input_shape) -> None:
        """Refuse, once built, inputs the weights do not fit (a layer reused on another shape)."""

    def _incompatible(self, input_shape, expected: str) -> ValueError:
        return ValueError(
            f"Input 0 of layer {self.name!r} ({type(self).__name__}) is incompatible with the layer: "
            f"expected {expected}, but received input with shape {(None, *input_shape)}"
        )

    @property
    def weights(self) -> list[np.ndarray]:
        return []

    @property
    def trainable_weights(self) -> list[np.ndarray]:
        """The weights training updates: none when the layer is frozen (``trainable = False``)."""
        return self._trainable_weight_list() if self.trainable else []

    @property
    def non_trainable_weights(self) -> list[np.ndarray]:
        if self.trainable:
            return self._non_trainable_weight_list()
        return self._trainable_weight_list() + self._non_trainable_weight_list()

    def _trainable_weight_list(self) -> list[np.ndarray]:
        return self.weights

    def _non_trainable_weight_list(self) -> list[np.ndarray]:
        return []

    def count_params(self) -> int:
        return int(sum(w.size for w in self.weights))

    def get_weights(self) -> list[np.ndarray]:
        return [w.copy() for w in self.weights]

    def set_weights(self, weights) -> None:
        """Overwrite the weights in place from arrays of the same shapes (Keras' order, cast to float32)."""
        own = self.weights
        if isinstance(weights, (str, bytes, np.ndarray)) or not hasattr(weights, "__iter__"):
            raise TypeError(
                f"Invalid argument `weights` of set_weights: expected a list of {len(own)} arrays, "
                f"received {type(weights).__name__}"
            )
        weights = list(weights)
        if len(weights) != len(own):
            raise ValueError(
                f"set_weights: layer {self.name!r} expects a list of {len(own)} arrays, received {len(weights)}"
            )
        new = []
        for i, (w, o) in enumerate(zip(weights, own)):
            a = np.asarray(w)
            if a.dtype.kind not in "biuf":
                raise TypeError(f"set_weights: weight {i} has dtype {a.dtype}, expected real numbers")
            if a.shape != o.shape:
                raise ValueError(
                    f"set_weights: weight {i} of layer {self.name!r} has shape {a.shape}, expected {o.shape}"
                )
            with np.errstate(over="ignore"):
                a = a.astype(np.float32)
            if not np.isfinite(a).all():
                raise ValueError(f"set_weights: weight {i} contains NaN or infinity (or values beyond float32)")
            new.append(a)
        for a, o in zip(new, own):
            np.copyto(o, a)

    # ---- configuration ----------------------------------------------------------
    def get_config(self) -> dict:
        cfg = {"name": self.name}
        if not self.trainable:
            cfg["trainable"] = False
        if self._input_shape is not None:
            cfg["input_shape"] = list(self._input_shape)
        if self.activity_regularizer is not None:
            cfg["activity_regularizer"] = regularizers.serialize(self.activity_regularizer)
        return cfg

    @classmethod
    def from_config(cls, config: dict) -> Layer:
        token = _REBUILDING.set(True)  # a config's input_shape is cdnn's record, not the user's argument
        try:
            return cls(**config)
        finally:
            _REBUILDING.reset(token)

    # ---- the C core's view ----------------------------------------------------------
    def _lower(self, input_shapes: list, training: Optional[bool]) -> dict:
        """This layer as a node of ``_core.Graph`` (without inputs, shape, name): see GRAPH_SPEC."""
        raise NotImplementedError(f"Layer {type(self).__name__} has no C implementation in cdnn")

    # ---- calls -----------------------------------------------------------------------
    def __call__(self, inputs, training: Optional[bool] = None, **kwargs):
        """On ``keras.Input`` tensors: record a node of the graph. On arrays: compute in the C core."""
        if kwargs:
            raise TypeError(f"{type(self).__name__}.__call__: unsupported argument(s) {sorted(kwargs)}")
        if training is not None and not isinstance(training, (bool, np.bool_)):
            raise invalid("training", training, "None, True or False")
        if is_symbolic(inputs):
            return self._symbolic_call(inputs, training)
        return self._eager_call(inputs, training)

    def _input_shapes_of(self, tensors: list, nested: bool):
        shapes = [tuple(t.shape[1:]) for t in tensors]
        if self._takes_list:
            return shapes
        if len(shapes) != 1:
            raise ValueError(
                f"Layer {self.name!r} ({type(self).__name__}) expects 1 input, received "
                f"{len(shapes)} tensors of shapes {[(None, *s) for s in shapes]}"
            )
        return shapes[0]

    def _symbolic_call(self, inputs, training):
        tensors = flatten(inputs)
        nested = isinstance(inputs, (list, tuple, dict))
        shape = self._input_shapes_of(tensors, nested)
        if not self.built:
            self.build(shape)
        else:
            self._check_call_shape(shape)
        out_shape = self.compute_output_shape(shape)
        batches = {t.shape[0] for t in tensors}  # a batch size the inputs agree on goes through, as in Keras
        out = KerasTensor(
            (batches.pop() if len(batches) == 1 else None, *out_shape),
            name=self.name if not self._inbound_nodes else f"{self.name}_{len(self._inbound_nodes)}",
        )
        Node(self, tensors, [out], nested=nested, training=training)
        return out

    def _eager_call(self, inputs, training):
        from cdnn.models.functional import run_layer

        return run_layer(self, inputs, training)

    # ---- the graph's record (Keras' layer.input / layer.output) ----------------------
    def _single_node(self, what: str) -> Node:
        if not self._inbound_nodes:
            raise AttributeError(f"Layer {self.name!r} has never been called and thus has no defined {what}.")
        if len(self._inbound_nodes) > 1:
            raise AttributeError(
                f'Layer {self.name!r} has multiple inbound nodes, hence the notion of "layer '
                f'{what}" is ill-defined. Use `get_{what}_at(node_index)` instead.'
            )
        return self._inbound_nodes[0]

    @property
    def input(self):
        node = self._single_node("input")
        return node.input_tensors if node.nested else node.input_tensors[0]

    @property
    def output(self):
        node = self._single_node("output")
        return node.output_tensors[0] if len(node.output_tensors) == 1 else list(node.output_tensors)

    def get_input_at(self, node_index: int):
        node = self._inbound_nodes[node_index]
        return node.input_tensors if node.nested else node.input_tensors[0]

    def get_output_at(self, node_index: int):
        node = self._inbound_nodes[node_index]
        return node.output_tensors[0] if len(node.output_tensors) == 1 else list(node.output_tensors)

    @property
    def output_shape(self) -> tuple:
        if self.output_shape_ is None:
            raise AttributeError(f"The layer {self.name!r} has never been called and thus has no defined output shape.")
        return (None, *self.output_shape_)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} name={self.name}, built={self.built}>"


class InputLayer(Layer):
    """The model's input: its shape (without the batch dimension)."""

    def __init__(self, shape=None, name: Optional[str] = None, batch_size=None, **kwargs) -> None:
        if shape is None:
            shape = kwargs.pop("input_shape", None)
        if shape is None and "batch_shape" in kwargs:
            batch_shape = kwargs.pop("batch_shape")
            shape = tuple(batch_shape)[1:] if batch_shape is not None else None
        if shape is None:
            raise invalid("shape", shape, "a tuple of positive integers, e.g. (784,)")
        if kwargs.pop("sparse", None):
            raise ValueError("InputLayer: sparse inputs are not supported by cdnn")
        if batch_size is not None and (
            isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size <= 0
        ):
            raise invalid("batch_size", batch_size, "None or a positive integer")
        super().__init__(name=name or _naming.unique_name("input_layer"), input_shape=shape, **kwargs)
        self.batch_size = batch_size
        self.built = True
        self.output_shape_ = self._input_shape
        self._output_tensor = KerasTensor((batch_size, *self._input_shape), name=self.name)
        Node(self, [], [self._output_tensor])

    @property
    def shape(self) -> tuple:
        return (self.batch_size, *self._input_shape)

    def get_config(self) -> dict:
        cfg = {"name": self.name, "shape": list(self._input_shape)}
        if self.batch_size is not None:
            cfg["batch_size"] = self.batch_size
        return cfg

    def _lower(self, input_shapes: list, training) -> dict:
        return {"op": "input"}


def Input(shape=None, name: Optional[str] = None, batch_size=None, **kwargs) -> KerasTensor:
    """``keras.Input(shape=(784,))``: the symbolic input of a functional model (or a Sequential's first element)."""
    return InputLayer(shape=shape, name=name, batch_size=batch_size, **kwargs)._output_tensor


class Identity(Layer):
    """Returns its input unchanged."""

    def _lower(self, input_shapes: list, training) -> dict:
        return {"op": "reshape"}


class Dense(Layer):
    """``output = activation(input @ kernel + bias)`` on the last axis, fused in C.

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
    activity_regularizer : str or Regularizer, optional
        An L1, L2 or L1L2 penalty on the layer's output, divided by the batch size and added to
        the loss as Keras does (trained in C).
    kernel_constraint, bias_constraint : str or Constraint, optional
        MaxNorm, NonNeg, UnitNorm or MinMaxNorm, applied after each update.
    """

    def __init__(
        self,
        units: int,
        activation=None,
        use_bias: bool = True,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        kernel_regularizer=None,
        bias_regularizer=None,
        activity_regularizer=None,
        kernel_constraint=None,
        bias_constraint=None,
        name: Optional[str] = None,
        input_shape=None,
        **kwargs,
    ) -> None:
        if isinstance(units, bool) or not isinstance(units, (int, np.integer)) or units <= 0:
            raise invalid("units", units, "a positive integer")
        if units > MAX_DIM:
            raise invalid("units", units, f"a positive integer up to {MAX_DIM} (2**31 - 1)")
        _refuse_unsupported(
            "Dense",
            kwargs,
            {
                "kernel_regularizer": None,
                "bias_regularizer": None,
                "kernel_constraint": None,
                "bias_constraint": None,
                "lora_rank": None,
            },
        )
        super().__init__(name=name, input_shape=input_shape, activity_regularizer=activity_regularizer, **kwargs)
        self.units = int(units)
        self.activation = activations.get(activation)
        self.use_bias = bool(use_bias)
        initializers.get(kernel_initializer), initializers.get(bias_initializer)  # validate names now
        self.kernel_initializer = (
            kernel_initializer if isinstance(kernel_initializer, str) else initializers.get(kernel_initializer)
        )
        self.bias_initializer = (
            bias_initializer if isinstance(bias_initializer, str) else initializers.get(bias_initializer)
        )
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
        input_shape = tuple(input_shape)
        if not input_shape:
            raise ValueError(
                f"Dense layer {self.name!r} received inputs of shape (None,): expected at least one feature axis"
            )
        if not 0 < int(input_shape[-1]) <= MAX_DIM:
            raise ValueError(
                f"Dense layer {self.name!r} received {input_shape[-1]} input features (a kernel of shape "
                f"{(int(input_shape[-1]), self.units)}): expected a positive number of features, at most "
                f"{MAX_DIM} (2**31 - 1, as the C core indexes with 32-bit integers)"
            )
        self.kernel = _aligned(initializers.get(self.kernel_initializer)((int(input_shape[-1]), self.units)))
        self.bias = _aligned(initializers.get(self.bias_initializer)((self.units,))) if self.use_bias else None
        super().build(input_shape)

    def _check_call_shape(self, input_shape) -> None:
        if input_shape[-1] != self.kernel.shape[0]:
            raise self._incompatible(input_shape, f"axis -1 of input shape to have value {self.kernel.shape[0]}")

    @property
    def weights(self) -> list[np.ndarray]:
        if not self.built:
            return []
        return [self.kernel] + ([self.bias] if self.use_bias else [])

    def _core_rules(self) -> dict:
        """The regularizers and constraints as the C core reads them (``kernel_rules``/``bias_rules``)."""
        rules = {}
        for key, reg, con in (
            ("kernel_rules", self.kernel_regularizer, self.kernel_constraint),
            ("bias_rules", self.bias_regularizer, self.bias_constraint),
        ):
            r = {}
            if reg is not None:
                r.update(reg._core())
                if r.get("orth_factor") and key == "bias_rules":
                    raise ValueError(
                        "Invalid value for argument `bias_regularizer`: OrthogonalRegularizer needs "
                        "a 2-D kernel (Keras: inputs must have rank 2), a bias is 1-D"
                    )
                if r.get("orth_factor") and getattr(self, "kernel", None) is not None:
                    count = self.kernel.shape[0 if r["orth_mode"] == "rows" else 1]
                    if count < 2:
                        raise ValueError(
                            f"OrthogonalRegularizer(mode={r['orth_mode']!r}) on layer {self.name!r} "
                            f"needs at least 2 vectors, its kernel {self.kernel.shape} has {count} "
                            f"(no pair to make orthogonal; Keras divides by 0 pairs)"
                        )
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
        if self.built and self.trainable:  # Keras: the penalties of the trainable weights only
            for reg, w in ((self.kernel_regularizer, self.kernel), (self.bias_regularizer, self.bias)):
                if reg is not None and w is not None:
                    out.append(reg(w))
        return out

    def _penalty(self) -> float:
        return float(sum(self.losses))

    def get_config(self) -> dict:
        cfg = {
            **super().get_config(),
            "units": self.units,
            "activation": activations.serialize(self.activation),
            "use_bias": self.use_bias,
            "kernel_initializer": initializers.serialize(self.kernel_initializer),
            "bias_initializer": initializers.serialize(self.bias_initializer),
        }
        for key, obj, module in (
            ("kernel_regularizer", self.kernel_regularizer, regularizers),
            ("bias_regularizer", self.bias_regularizer, regularizers),
            ("kernel_constraint", self.kernel_constraint, constraints),
            ("bias_constraint", self.bias_constraint, constraints),
        ):
            if obj is not None:
                cfg[key] = module.serialize(obj)
        return cfg

    def _lower(self, input_shapes: list, training) -> dict:
        return {
            "op": "dense",
            "W": self.kernel,
            "b": self.bias,
            "activation": activations.serialize(self.activation),
            "alpha": activations.core_alpha(self.activation),
            "trainable": self.trainable,
            **self._core_rules(),
        }

    def _eager_call(self, inputs, training):
        """An array ``(n, ..., features)`` runs through the core's fused Dense as ``n * ...`` rows."""
        if isinstance(inputs, np.ndarray) and inputs.ndim >= 2 and inputs.dtype.kind in "biuf":
            x = np.ascontiguousarray(inputs, dtype=np.float32)
            if not self.built:
                self.build(x.shape[1:])
            if x.shape[-1] != self.kernel.shape[0]:
                raise ValueError(
                    f"Input 0 of layer {self.name!r} (Dense) is incompatible with the layer: expected "
                    f"axis -1 of input shape to have value {self.kernel.shape[0]}, but received input "
                    f"with shape {x.shape}"
                )
            rows = x.reshape(-1, x.shape[-1])
            out = _core.dense_forward(
                rows,
                self.kernel,
                self.bias,
                activations.serialize(self.activation),
                activations.core_alpha(self.activation),
            )[0]
            return out.reshape(*x.shape[:-1], self.units)
        return super()._eager_call(inputs, training)


#: layer classes by name, filled by each family's module (what a saved architecture may name)
_CLASSES: dict = {c.__name__: c for c in (InputLayer, Dense, Identity)}


def register(*classes) -> None:
    """Make layer classes loadable from a saved architecture."""
    for c in classes:
        _CLASSES[c.__name__] = c


def deserialize(config: dict) -> Layer:
    """Rebuild a layer from ``{"class_name": ..., "config": {...}}`` (the saved architecture)."""
    if (
        not isinstance(config, dict)
        or config.get("class_name") not in _CLASSES
        or not isinstance(config.get("config"), dict)
    ):
        raise ValueError(f"Invalid layer description in model file: {str(config)[:200]!r}")
    return _CLASSES[config["class_name"]].from_config(dict(config["config"]))
