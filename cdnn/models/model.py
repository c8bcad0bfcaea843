"""``keras.Model``: the model API shared by functional, subclassed and Sequential models.

``Model(inputs, outputs)`` makes a :class:`~cdnn.models.functional.Functional`;
a subclass with layers in ``__init__`` and a ``call(inputs, training=None)`` is
traced once on symbolic inputs into the same graph (``call`` with
``training=True`` for fit, ``training=False`` for inference, as Keras passes
it). The graph is lowered to the C core's ``_core.Graph``, which trains it
with the GIL released; this module prepares the data (one float32 array per
input, one label array per output), resolves per-output losses, metrics and
loss weights, and turns the core's sums into Keras' logs.
"""

from __future__ import annotations

import math
from typing import Optional

import numpy as np

from cdnn import _core
from cdnn import callbacks as callbacks_module
from cdnn import losses as losses_module
from cdnn import metrics as metrics_module
from cdnn import optimizers as optimizers_module
from cdnn._core_checks import _check_label_range
from cdnn._errors import invalid
from cdnn._summary import format_summary
from cdnn._symbolic import KerasTensor, Node, flatten, is_symbolic
from cdnn.layers.core import InputLayer, Layer

__all__ = ["Model", "prepare_labels", "as_inputs", "as_float32", "all_finite", "lean_input"]

#: rows per C inference batch (results do not depend on it)
PREDICT_ROWS = 512
#: rows per block when scanning inputs for NaN/inf (bounds the scan's temporary memory)
_FINITE_BLOCK = 4096


# ---- data checks shared by every model ------------------------------------------------------------


def as_inputs(x, name: str = "x") -> np.ndarray:
    """A real-valued, non-empty array with a batch dimension."""
    if x is None:
        raise invalid(name, None, "an array of inputs")
    a = np.asarray(x)
    if a.dtype.kind not in "biuf":
        raise TypeError(
            f"Invalid dtype for argument `{name}`: expected real numbers (float or integer), received dtype {a.dtype}"
        )
    if a.ndim < 2:
        raise ValueError(f"Invalid shape for argument `{name}`: expected (samples, features...), received {a.shape}")
    if a.shape[0] == 0:
        raise ValueError(
            f"Invalid argument `{name}`: expected at least one sample, received an empty array of shape {a.shape}"
        )
    return a


_FLOAT32 = np.dtype(np.float32)


def lean_input(x, shape: tuple) -> Optional[np.ndarray]:
    """``x`` as the core reads it, ``(n, prod(shape))``, if it already is what :func:`as_inputs` and
    :func:`as_float32` would make of it (a non-empty, C-contiguous, finite float32 array of shape
    ``(n, *shape)``): no copy, no conversion. Else None: the general checks convert it or say what is wrong."""
    if (
        type(x) is np.ndarray
        and x.dtype is _FLOAT32
        and x.shape[1:] == shape
        and x.shape[0] > 0
        and x.flags.c_contiguous
        and _core.all_finite(x)
    ):
        return x if x.ndim == 2 else x.reshape(x.shape[0], -1)
    return None


def all_finite(a: np.ndarray) -> bool:
    """Whether every value is finite: float32 in the core (one parallel pass, no mask
    allocated), anything else with NumPy in blocks so no full-size mask is allocated."""
    if a.dtype == np.float32 and a.flags.c_contiguous:
        return _core.all_finite(a)
    return all(np.isfinite(a[i : i + _FINITE_BLOCK]).all() for i in range(0, len(a), _FINITE_BLOCK))


def as_float32(a: np.ndarray, name: str, check_float32: bool = True) -> np.ndarray:
    """``a`` as C-contiguous float32, refusing NaN and infinity (also float64 values beyond float32's range)."""
    with np.errstate(over="ignore"):
        out = np.ascontiguousarray(a, dtype=np.float32)
    if a.dtype.kind == "f" and (check_float32 or a.dtype != np.float32) and not all_finite(out):
        beyond = " or values beyond float32's range (3.4e38)" if all_finite(a) else ""
        raise ValueError(f"Invalid values in `{name}`: it contains NaN or infinity{beyond}")
    return out


def prepare_labels(y, n: int, units: int, loss: losses_module.Loss, name: str = "y") -> np.ndarray:
    """Labels for one output of ``units`` values trained with ``loss``: int32 classes or float32 targets."""
    if y is None:
        raise invalid(name, None, "an array of labels")
    a = np.asarray(y)
    core = loss.core_name
    if a.dtype.kind not in "biuf":
        raise TypeError(f"Invalid dtype for argument `{name}`: expected numeric labels, received {a.dtype}")
    if a.shape[0] != n if a.ndim else True:
        raise ValueError(
            f"Invalid shape for argument `{name}`: expected {n} labels to match the {n} inputs, "
            f"received shape {a.shape}"
        )
    if a.dtype.kind == "f" and not all_finite(a):
        raise ValueError(f"Invalid values in `{name}`: it contains NaN or infinity")
    if core == "sparse_categorical_crossentropy":
        if a.ndim == 2 and a.shape[1] == 1:
            a = a[:, 0]
        if a.ndim != 1:
            raise ValueError(
                f"Invalid shape for argument `{name}`: sparse_categorical_crossentropy expects "
                f"integer class labels of shape ({n},), received {a.shape} (one-hot labels go "
                f"with categorical_crossentropy)"
            )
        if a.dtype.kind == "f" and not np.array_equal(a, np.round(a)):
            raise ValueError(
                f"Invalid labels in `{name}`: expected integer class indices, received "
                f"non-integer values such as {float(a[a != np.round(a)][0])}"
            )
        _check_label_range(a, name, units, getattr(loss, "ignore_class", None))
        return np.ascontiguousarray(a, dtype=np.int32)
    if a.ndim == 1 and units == 1:
        a = a.reshape(n, 1)
    if a.ndim != 2 or a.shape[1] != units:
        hint = " (integer labels go with sparse_categorical_crossentropy)" if a.ndim == 1 else ""
        raise ValueError(
            f"Invalid shape for argument `{name}`: {loss.name} expects labels of shape "
            f"({n}, {units}) to match the output, received {a.shape}{hint}"
        )
    return as_float32(a, name)


def _nd_labels(y, n: int, shape: tuple, loss: losses_module.Loss, name: str) -> np.ndarray:
    """Labels of an N-D output ``(batch, *rows, width)``: the loss applies to the last axis of each row."""
    a = np.asarray(y) if y is not None else None
    sparse = loss.core_name == "sparse_categorical_crossentropy"
    expected = (n, *shape[:-1]) if sparse else (n, *shape)
    if a is None or a.shape not in (expected, (*expected, 1) if sparse else expected):
        raise ValueError(
            f"Invalid shape for argument `{name}`: the output has shape {(None, *shape)}, so "
            f"{loss.name} expects labels of shape {expected} (a loss per row of the last axis), "
            f"received {None if a is None else a.shape}. To classify whole samples, add a Flatten "
            f"layer before the last Dense layer"
        )
    rows = int(math.prod(shape[:-1]))
    flat = a.reshape(n * rows, *([] if sparse else [shape[-1]]))
    out = prepare_labels(flat, n * rows, shape[-1], loss, name)
    return np.ascontiguousarray(out.reshape(n, -1))


def _verbose(verbose) -> int:
    if verbose == "auto":
        return 1
    if verbose not in (0, 1, 2) or isinstance(verbose, bool):
        raise invalid("verbose", verbose, "'auto', 0, 1 or 2")
    return int(verbose)


def _batch_size(batch_size) -> int:
    if batch_size is None:
        return 32
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size <= 0:
        raise invalid("batch_size", batch_size, "a positive integer")
    return int(batch_size)


def _compile_options(kwargs: dict) -> None:
    """Check and remove Keras' execution options of ``compile`` from ``kwargs``.

    Every step runs in compiled C whatever they say: ``jit_compile`` (any of
    Keras' values) and ``auto_scale_loss`` (it applies to a mixed-float16
    policy, which cdnn does not have: it trains in float32) change nothing.
    ``run_eagerly=True`` and ``steps_per_execution > 1`` ask for behaviour cdnn
    does not have and are refused.
    """
    run_eagerly = kwargs.pop("run_eagerly", False)
    if not isinstance(run_eagerly, (bool, np.bool_)):
        raise invalid("run_eagerly", run_eagerly, "True or False")
    if run_eagerly:
        raise ValueError(
            "compile: `run_eagerly=True` is not supported by cdnn: there is no Python-level training "
            "step to run eagerly (every step runs in compiled C, with the same results); leave "
            "`run_eagerly=False`"
        )
    jit_compile = kwargs.pop("jit_compile", "auto")
    if jit_compile != "auto" and not isinstance(jit_compile, (bool, np.bool_)):
        raise invalid("jit_compile", jit_compile, "True, False or 'auto'")
    steps = kwargs.pop("steps_per_execution", 1)
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1:
        raise invalid("steps_per_execution", steps, "a positive integer")
    if steps != 1:
        raise ValueError(
            f"compile: `steps_per_execution={steps}` is not supported by cdnn: it makes Keras call the "
            f"batch-level callbacks (`on_train_batch_begin`/`end`, ...) only every {steps} batches, while "
            f"cdnn calls them after every batch (the weights are the same); leave `steps_per_execution=1`"
        )
    auto_scale_loss = kwargs.pop("auto_scale_loss", True)
    if not isinstance(auto_scale_loss, (bool, np.bool_)):
        raise invalid("auto_scale_loss", auto_scale_loss, "True or False")


def _per_output(value, names: list, what: str, default=None) -> list:
    """A compile argument given once, as a list (one per output) or a dict (by output name), per output."""
    if value is None:
        return [default] * len(names)
    if isinstance(value, dict):
        unknown = [k for k in value if k not in names]
        if unknown:
            raise ValueError(
                f"Invalid `{what}`: keys {unknown} are not output names of the model; the outputs are {names}"
            )
        return [value.get(n, default) for n in names]
    if isinstance(value, (list, tuple)) and what != "metrics":
        if len(value) != len(names):
            raise ValueError(
                f"Invalid `{what}`: the model has {len(names)} output(s) {names}, received a list of {len(value)}"
            )
        return list(value)
    return [value] * len(names)


def _metric_items(entry) -> list:
    """The metrics of one output, as given (one identifier or a list of them)."""
    if entry is None:
        return []
    return [entry] if isinstance(entry, (str, metrics_module.Metric)) or callable(entry) else list(entry)


def _metrics_per_output(metrics, names: list, argument: str) -> list:
    """``compile(metrics=...)`` (or ``weighted_metrics``) per output: a list for every output of a model of one,
    a list of lists or a dict by output name for a model of several (Keras 3's flat cases)."""
    if isinstance(metrics, dict):
        return _per_output(metrics, names, argument)
    if (
        len(names) > 1
        and isinstance(metrics, (list, tuple))
        and metrics
        and all(m is None or isinstance(m, (list, tuple)) for m in metrics)
    ):
        if len(metrics) != len(names):
            raise ValueError(
                f"For a model with multiple outputs, when providing the `{argument}` argument as a "
                f"list, it should have as many entries as the model has outputs. Received:\n"
                f"{argument}={metrics}\nof length {len(metrics)} whereas the model has "
                f"{len(names)} outputs."
            )
        return list(metrics)
    if len(names) > 1 and metrics not in (None, []):
        raise ValueError(
            f"For a model with multiple outputs, give `{argument}` per output: a list of lists (one per "
            f"output) or a dict keyed by output name {names}. Received: {argument}={metrics!r}"
        )
    return [metrics] * len(names)


class Model(Layer):
    """A model: layers and how they connect, with compile / fit / evaluate / predict.

    ``keras.Model(inputs, outputs, name=...)`` builds a functional model;
    subclass it with layers in ``__init__`` and a ``call(self, inputs,
    training=None)`` for a subclassed one.
    """

    def __new__(cls, *args, **kwargs):
        if cls is Model and (args or "inputs" in kwargs or "outputs" in kwargs):
            from cdnn.models.functional import Functional

            return Layer.__new__(Functional)
        return Layer.__new__(cls)

    def __init__(self, *args, name: Optional[str] = None, trainable: bool = True, **kwargs) -> None:
        if args:
            raise TypeError(
                f"{type(self).__name__}.__init__: unexpected positional arguments {args!r} (a "
                f"functional model takes `inputs` and `outputs`; a subclass calls super().__init__())"
            )
        Layer.__init__(self, name=name, trainable=trainable, **kwargs)
        self._init_model_state()

    def _init_model_state(self) -> None:
        self.optimizer: Optional[optimizers_module.Optimizer] = None
        self.loss = None
        self._metric = None
        self._compile_args: Optional[dict] = None
        self.compiled = False
        self.stop_training = False
        self.stop_evaluating = False  # Keras 3: set by a callback, evaluate / predict stop after the batch
        self.stop_predicting = False
        self.history: Optional[callbacks_module.History] = None
        self._core = {}
        self._traced: dict = {}
        self._input_struct = None
        self._specs: dict = {}

    # ---- structure ---------------------------------------------------------------------------
    @property
    def layers(self) -> list[Layer]:
        """A subclassed model's layers: those assigned as its attributes, in order."""
        found: list[Layer] = []

        def add(v):
            if isinstance(v, Layer) and all(v is not l for l in found):
                found.append(v)
            elif isinstance(v, (list, tuple)):
                for item in v:
                    add(item)
            elif isinstance(v, dict):
                for item in v.values():
                    add(item)

        for key, value in vars(self).items():
            if not key.startswith("_"):
                add(value)
        return found

    def get_layer(self, name: Optional[str] = None, index: Optional[int] = None) -> Layer:
        """The layer called ``name``, or the one at position ``index`` of :attr:`layers`."""
        layers = self.layers
        if index is not None and name is not None:
            raise ValueError(f"Provide only a layer name or a layer index. Received: index={index}, name={name}.")
        if index is not None:
            if isinstance(index, bool) or not isinstance(index, (int, np.integer)):
                raise invalid("index", index, "an integer")
            if not -len(layers) <= index < len(layers):
                raise ValueError(
                    f"Was asked to retrieve layer at index {index} but model only has {len(layers)} layers."
                )
            return layers[index]
        if isinstance(name, (int, np.integer)) and not isinstance(name, bool):
            return self.get_layer(index=int(name))
        if name is not None:
            for layer in layers:
                if layer.name == name:
                    return layer
            raise ValueError(f"No such layer: {name}. Existing layers are: {[l.name for l in layers]}.")
        raise ValueError("Provide either a layer name or layer index at `get_layer`.")

    @property
    def trainable(self) -> bool:
        return self._trainable

    @trainable.setter
    def trainable(self, value: bool) -> None:
        """As Keras: setting it on a model sets it on every layer inside (takes effect at ``compile``)."""
        Layer.trainable.fset(self, value)
        if "_layers" in vars(self) or type(self).layers is not Model.layers or vars(self).get("_traced") is not None:
            for layer in self._all_layers():
                layer.trainable = value

    def _penalty(self) -> float:
        """The weight regularization penalties of the trainable weights (Keras adds them to every batch's loss)."""
        if not self.trainable:
            return 0.0
        return float(sum(l._penalty() for l in self._all_layers() if hasattr(l, "_penalty")))

    def _all_layers(self) -> list[Layer]:
        try:
            return [l for l in self.layers if not isinstance(l, InputLayer)]
        except AttributeError:  # still in __init__
            return []

    @property
    def weights(self) -> list[np.ndarray]:
        """Every weight, layer by layer, each layer's in Keras' order."""
        return [w for l in self._all_layers() for w in l.weights]

    @property
    def trainable_weights(self) -> list[np.ndarray]:
        if not self.trainable:
            return []
        return [w for l in self._all_layers() for w in l.trainable_weights]

    @property
    def non_trainable_weights(self) -> list[np.ndarray]:
        if not self.trainable:
            return self.weights
        return [w for l in self._all_layers() for w in l.non_trainable_weights]

    def count_params(self) -> int:
        return int(sum(w.size for w in self.weights))

    def get_weights(self) -> list[np.ndarray]:
        """Copies of the weights (layer by layer, Keras' order within each layer)."""
        return [w.copy() for w in self.weights]

    def set_weights(self, weights) -> None:
        """Overwrite every weight in place from arrays of the same shapes."""
        if not self.built or not self.weights:
            raise ValueError(
                f"Model {self.name!r} has no weights yet: build it (give an input shape or call fit) before set_weights"
            )
        Layer.set_weights(self, weights)

    # ---- the graph -----------------------------------------------------------------------------
    def call(self, inputs, training=None):
        raise NotImplementedError(
            f"Model {type(self).__name__} has no call(): subclass keras.Model and define "
            f"call(self, inputs, training=None), or use keras.Model(inputs, outputs)"
        )

    def build(self, input_shape) -> None:
        """Trace ``call`` on symbolic inputs of ``input_shape`` (with the batch dimension, or a list/dict of them)."""

        def strip(s):
            s = tuple(s)
            return tuple(int(d) for d in (s[1:] if s and s[0] is None else s))

        if isinstance(input_shape, dict):
            struct = {k: strip(v) for k, v in input_shape.items()}
        elif isinstance(input_shape, list) and input_shape and isinstance(input_shape[0], (tuple, list)):
            struct = [strip(s) for s in input_shape]
        else:
            struct = strip(input_shape)
        self._input_struct = struct
        self._traced = {}
        self._graph_model()
        self.built = True

    def _set_inputs_from_data(self, x) -> None:
        """A subclassed model learns its input shapes from the first data it sees (as Keras builds on first call)."""
        if self._input_struct is not None:
            return
        if isinstance(x, dict):
            self.build({k: (None, *np.shape(v)[1:]) for k, v in x.items()})
        elif isinstance(x, (list, tuple)) and len(x) and not np.isscalar(x[0]) and np.ndim(x[0]) >= 2:
            self.build([(None, *np.shape(v)[1:]) for v in x])
        else:
            self.build((None, *np.shape(x)[1:]))

    def _graph_model(self, training: bool = True):
        """The traced graph (``call(..., training=True)``): what fit trains."""
        from cdnn.models.functional import trace

        if self._input_struct is None:
            raise ValueError(
                f"Model '{self.name}' has not been built yet: call it on data (fit, predict, model(x)) "
                f"or call model.build(input_shape) first"
            )
        key = bool(training)
        if key not in self._traced:
            self._traced[key] = trace(self, self._input_struct, training=key)
            # a trace records layers' calls; the weights they made are this model's
            self.built = True
        return self._traced[key]

    def _inference_model(self):
        """The graph traced with ``training=False``: what predict and evaluate run."""
        return self._graph_model(training=False)

    def _symbolic_call(self, inputs, training):
        """A model used as a layer: one node whose outputs mirror the model's outputs."""
        tensors = flatten(inputs)
        if self._input_struct is None and not hasattr(self, "inputs"):
            self.build(
                type(inputs)(t.shape for t in tensors)
                if isinstance(inputs, (list, tuple))
                else ({k: v.shape for k, v in inputs.items()} if isinstance(inputs, dict) else inputs.shape)
            )
        graph = self._graph_model()
        if len(tensors) != len(graph.inputs):
            raise ValueError(f"Model '{self.name}' expects {len(graph.inputs)} input(s), received {len(tensors)}")
        for t, ref in zip(tensors, graph.inputs):
            if tuple(t.shape[1:]) != tuple(ref.shape[1:]):
                raise ValueError(
                    f"{type(self).__name__} '{self.name}' was passed incompatible inputs. For input "
                    f"'{ref.name}', expected shape {ref.shape}, but received instead a tensor with "
                    f"shape {t.shape}."
                )
        suffix = f"_{len(self._inbound_nodes)}" if self._inbound_nodes else ""
        outs = [
            KerasTensor(t.shape, name=f"{self.name}{suffix}_{i}" if len(graph.outputs) > 1 else f"{self.name}{suffix}")
            for i, t in enumerate(graph.outputs)
        ]
        Node(self, tensors, outs, nested=isinstance(inputs, (list, tuple, dict)), training=training)
        if len(outs) == 1:
            self.output_shape_ = tuple(outs[0].shape[1:])
        struct = graph._outputs_struct
        if isinstance(struct, dict):
            return dict(zip(struct, outs))
        if isinstance(struct, (list, tuple)):
            return list(outs)
        return outs[0]

    def __call__(self, inputs, training: Optional[bool] = None, **kwargs):
        """On symbolic tensors: the model as a layer. On arrays: its outputs, computed in C (no progress bar)."""
        if kwargs:
            raise TypeError(f"{type(self).__name__}.__call__: unsupported argument(s) {sorted(kwargs)}")
        if is_symbolic(inputs):
            return self._symbolic_call(inputs, training)
        from cdnn.models.functional import Functional

        # as Keras: training=None runs a functional model's calls in their recorded mode (dropout(x,
        # training=True) stays on); True runs every call in training mode, as one batch
        if training is None and not isinstance(self, Functional):
            training = False
        if training is False and type(self).predict is not Model.predict:
            return self.predict(inputs, verbose=0)  # Sequential: no recorded mode
        if training is not True:
            out = self._lean_graph_predict(inputs, None if training is False else "None")
            if out is not None:
                return out
        from cdnn.trainers.loop import predict_graph

        return predict_graph(
            self, inputs, None, 0, None, None, call=str(bool(training) if training is not None else None)
        )

    # ---- compile --------------------------------------------------------------------------------
    def compile(self, optimizer="rmsprop", loss=None, metrics=None, loss_weights=None, **kwargs) -> None:
        """Choose the optimizer, and per output the loss, metrics and loss weight (lists or dicts by output name)."""
        weighted_metrics = kwargs.pop("weighted_metrics", None)
        _compile_options(kwargs)
        if kwargs:
            raise TypeError(f"compile: unsupported argument(s) {sorted(kwargs)}")
        self.optimizer = optimizers_module.get(optimizer)
        self._compile_args = {
            "loss": loss,
            "metrics": metrics,
            "loss_weights": loss_weights,
            "weighted_metrics": weighted_metrics,
        }
        self.loss = loss
        self.compiled = True
        self._core = {}
        self._specs = {}
        if hasattr(self, "outputs"):  # a functional model: check the per-output arguments now
            self._output_specs(self)

    def _output_specs(self, graph) -> list[dict]:
        """Per output: name, loss (or None: not trained on), weight, width, shape, its metrics and weighted
        metrics (:class:`CompileMetrics`, built, or None) and the accuracy the core counts; made once per
        compile (the metric objects keep their state between calls, as Keras')."""
        from cdnn.trainers.compile_utils import CompileMetrics

        names = graph.output_names
        cache = vars(self).setdefault("_specs", {})
        if tuple(names) in cache:
            return cache[tuple(names)]
        args = self._compile_args or {}
        losses = _per_output(args.get("loss"), names, "loss")
        weights = _per_output(args.get("loss_weights"), names, "loss_weights", default=1.0)
        per_metrics = _metrics_per_output(args.get("metrics"), names, "metrics")
        per_weighted = _metrics_per_output(args.get("weighted_metrics"), names, "weighted_metrics")
        specs = []
        for name, t, loss, weight, metric, weighted in zip(
            names, graph.outputs, losses, weights, per_metrics, per_weighted
        ):
            units = int(t.shape[-1])
            loss_obj = losses_module.resolve(loss) if loss is not None else None
            if (
                isinstance(weight, bool)
                or not isinstance(weight, (int, float, np.integer, np.floating))
                or not math.isfinite(weight)
                or weight < 0
            ):
                raise invalid("loss_weights", weight, "non-negative numbers (one per output)")
            layer = t._keras_history[0]
            activation = getattr(getattr(layer, "activation", None), "__name__", "")
            made = []
            for items, is_weighted in ((_metric_items(metric), False), (_metric_items(weighted), True)):
                if not items:
                    made.append(None)
                    continue
                if loss_obj is None:
                    raise ValueError(
                        f"Output '{name}' has metrics but no loss: cdnn reads an output's labels through its loss"
                    )
                cm = CompileMetrics(items, weighted=is_weighted, output_name=name if len(names) > 1 else None)
                cm.build(loss_obj.core_name, units, activation)
                if len(t.shape) > 2 and (is_weighted or cm.needs_outputs):
                    raise ValueError(
                        f"Invalid metrics for output '{name}' of shape {t.shape}: cdnn computes only the "
                        f"accuracy (unweighted) of an output with more than one axis per sample, received "
                        f"{items!r}" + (" as weighted_metrics" if is_weighted else "")
                    )
                made.append(cm)
            specs.append(
                {
                    "name": name,
                    "loss": loss_obj,
                    "weight": float(weight),
                    "units": units,
                    "shape": tuple(t.shape[1:]),
                    "metrics": made[0],
                    "weighted": made[1],
                    "kind": made[0].core_kind if made[0] is not None else None,
                }
            )
        if all(s["loss"] is None for s in specs) and args.get("loss") is not None:
            raise ValueError("compile: no output has a loss")
        cache[tuple(names)] = specs
        return specs

    def _check_compiled(self, what: str) -> None:
        if not self.compiled:
            raise ValueError(f"You must call `compile()` before calling `{what}()`.")
        if (self._compile_args or {}).get("loss") is None and self.loss is None:
            raise ValueError(f"No loss to compute: call `compile()` with a `loss` before `{what}()`.")

    # ---- data ------------------------------------------------------------------------------------
    def _prepare_inputs(self, graph, x, name: str = "x", check_float32: bool = True) -> list[np.ndarray]:
        """One float32 array ``[n, prod(shape)]`` per model input, from an array, a list or a dict."""
        names = graph.input_names
        if isinstance(x, dict):
            missing = [k for k in names if k not in x]
            if missing:
                raise ValueError(
                    f"Invalid `{name}`: the dict has no entry for input(s) {missing}; the model's inputs "
                    f"are {names}, received keys {list(x)}"
                )
            items = [x[k] for k in names]
            labels = [f"{name}['{k}']" for k in names]
        elif isinstance(x, (list, tuple)) and len(names) > 1:
            if len(x) != len(names):
                raise ValueError(
                    f"Invalid `{name}`: the model has {len(names)} inputs {names}, received a list of {len(x)} arrays"
                )
            items, labels = list(x), [f"{name}[{i}]" for i in range(len(x))]
        else:
            if isinstance(x, (list, tuple)) and len(x) == 1 and np.ndim(x[0]) >= 2:
                x = x[0]
            if len(names) != 1:
                raise ValueError(
                    f"Invalid `{name}`: the model has {len(names)} inputs {names}: pass a list or a dict of arrays"
                )
            items, labels = [x], [name]
        out = []
        n = None
        for a, label, t in zip(items, labels, graph.inputs):
            a = as_inputs(a, label)
            if tuple(a.shape[1:]) != tuple(t.shape[1:]):
                raise ValueError(
                    f"Input `{label}` has incompatible shape: model {self.name!r} expects inputs of "
                    f"shape {t.shape}, received {a.shape}"
                )
            if n is not None and len(a) != n:
                raise ValueError(
                    f"Invalid `{name}`: all inputs must have the same number of samples, received "
                    f"{[len(np.asarray(v)) for v in items]}"
                )
            n = len(a)
            out.append(as_float32(a, label, check_float32).reshape(len(a), -1))
        return out

    def _prepare_targets(self, specs: list, y, n: int, name: str = "y") -> list:
        """One label array per output with a loss (None for the others), from an array, a list or a dict."""
        names = [s["name"] for s in specs]
        if isinstance(y, dict):
            unknown = [k for k in y if k not in names]
            if unknown:
                raise ValueError(f"Invalid `{name}`: keys {unknown} are not output names; the outputs are {names}")
            items = [y.get(k) for k in names]
        elif isinstance(y, (list, tuple)) and len(names) > 1:
            if len(y) != len(names):
                raise ValueError(
                    f"Invalid `{name}`: the model has {len(names)} outputs {names}, received a list of "
                    f"{len(y)} label arrays"
                )
            items = list(y)
        else:
            if len(names) != 1:
                raise ValueError(
                    f"Invalid `{name}`: the model has {len(names)} outputs {names}: pass a list or a "
                    f"dict of label arrays"
                )
            items = [y]
        out = []
        for item, spec in zip(items, specs):
            if spec["loss"] is None:
                out.append(None)
                continue
            label = f"{name}['{spec['name']}']" if len(specs) > 1 else name
            if len(spec["shape"]) == 1:
                out.append(prepare_labels(item, n, spec["units"], spec["loss"], label))
            else:
                out.append(_nd_labels(item, n, spec["shape"], spec["loss"], label))
        return out

    # ---- the C core ----------------------------------------------------------------------------
    def _core_graph(self, training: bool, call: Optional[str] = None):
        """The C core's graph for fit (``training=True``) or inference, made on first use after compile/build;
        ``call`` ("None", "True"): that of ``model(x, training=...)`` (calls in training mode live)."""
        from cdnn.models.functional import lower, require_graph_core

        if call == "False":
            return self._core_graph(False)
        # one core graph serves both unless call() branches on `training` (two traces) or a call is live
        same = self._inference_model() is self._graph_model()
        key = "train" if training or (same and "train" in self._core) else "infer"
        if call is not None:
            key = "call " + call
        if key not in self._core:
            require_graph_core(f"Training or running model '{self.name}'")
            mode = {"call None": None, "call True": True}.get(key, key == "train")
            graph = self._graph_model() if mode else self._inference_model()
            nodes, ins, outs = lower(graph, training=mode, infer=key != "train")
            if mode is None and not any(d.get("live") for d in nodes):
                self._core[key] = self._core_graph(False)  # no call in training mode: predict's graph
                return self._core[key]
            training = key == "train"
            specs = (
                self._output_specs(graph)
                if self.compiled
                else [{"loss": None, "weight": 1.0, "kind": None} for _ in outs]
            )
            outputs = [
                {
                    "node": o,
                    "loss": s["loss"].core_name if s["loss"] else None,
                    "from_logits": bool(s["loss"].from_logits) if s["loss"] else False,
                    "loss_options": s["loss"]._core_options() if s["loss"] else None,
                    "weight": s["weight"],
                    "metric": s["kind"],
                }
                for o, s in zip(outs, specs)
            ]
            optimizer = {"name": "sgd"}
            if training:
                self._attach_slots(nodes)
                optimizer = self.optimizer.hyperparameters()
            self._core[key] = _core.Graph(nodes, ins, outputs, optimizer)
            self._core[key + " activity"] = [(i, d["activity"]) for i, d in enumerate(nodes) if d.get("activity")]
        return self._core[key]

    def _graph_activity(self, net) -> list:
        """The nodes of core graph ``net`` with an activity regularizer: ``(node, {"l1", "l2"})``."""
        key = next(k for k, v in self._core.items() if v is net)
        return self._core[key + " activity"]

    def _attach_slots(self, nodes: list) -> None:
        """Give each trainable node its optimizer state, Keras' order: ``slots`` (``W1, W2, b1, b2`` or
        gamma's and beta's) and ``extra_slots`` (slot 3, the moving average, the accumulator)."""
        params = self.trainable_weights
        if not self.optimizer._built_for(params):  # refuses an optimizer built for another model
            self.optimizer.build(params)
        # a row holds slots 1-3, the moving average and the accumulator
        by_id = {id(p): row for p, row in zip(params, self.optimizer._slots)}
        for node in nodes:
            op = node["op"]
            keys = {"dense": ("W", "b")}.get(
                op, ("gamma", "beta") if op in ("batchnorm", "layernorm", "rmsnorm", "prelu") else None
            )
            if keys is None or not node.get("trainable", True):
                continue
            slots, extra = [], {}
            for k in keys:
                row = by_id.get(id(node[k])) if node[k] is not None else None
                row = list(row) if row is not None else [None] * 5
                slots.extend(row[:2])
                sep = "" if k in ("W", "b") else "_"
                extra.update({f"{k}3": row[2], f"{k}{sep}ema": row[3], f"{k}{sep}acc": row[4]})
            node["slots"] = slots
            node["extra_slots"] = extra

    # ---- training and inference on the graph ----------------------------------------------------
    def fit(
        self,
        x=None,
        y=None,
        batch_size: Optional[int] = None,
        epochs: int = 1,
        verbose="auto",
        callbacks: Optional[list] = None,
        validation_split: float = 0.0,
        validation_data=None,
        shuffle: bool = True,
        initial_epoch: int = 0,
        **kwargs,
    ) -> callbacks_module.History:
        """Train the graph with mini-batch gradient descent (inputs and labels as arrays, lists or dicts)."""
        from cdnn.trainers.loop import fit_graph

        return fit_graph(
            self,
            x,
            y,
            batch_size,
            epochs,
            verbose,
            callbacks,
            validation_split,
            validation_data,
            shuffle,
            initial_epoch,
            kwargs,
        )

    def evaluate(
        self, x=None, y=None, batch_size: Optional[int] = None, verbose="auto", return_dict: bool = False, **kwargs
    ):
        """The total loss, each output's loss and metrics: a list as Keras orders it, or a dict
        (``sample_weight``, ``steps`` and ``callbacks`` as in Keras)."""
        from cdnn.trainers.loop import evaluate_graph

        return evaluate_graph(self, x, y, batch_size, verbose, return_dict, kwargs)

    def train_on_batch(self, x, y=None, sample_weight=None, class_weight=None, return_dict: bool = False):
        """One training step on the batch ``(x, y)``; the loss and metrics of this batch alone (the metrics
        are reset at each call, as in Keras 3)."""
        from cdnn.trainers.loop import train_graph_batch

        return train_graph_batch(self, x, y, sample_weight, class_weight, return_dict)

    def test_on_batch(self, x, y=None, sample_weight=None, return_dict: bool = False):
        """The loss and metrics of the batch ``(x, y)`` alone (the metrics are reset at each call, as in Keras 3)."""
        from cdnn.trainers.loop import test_graph_batch

        return test_graph_batch(self, x, y, sample_weight, return_dict)

    def _compile_like(self, other: Model) -> None:
        """Compile as ``other`` was compiled (Keras' ``compile_from_config(get_compile_config())``): a new
        optimizer from its config, losses and metrics made afresh from theirs (their states not shared),
        loss weights and weighted metrics kept."""
        args = other._compile_args or {}
        self.compile(
            optimizer=optimizers_module.get(optimizers_module.serialize(other.optimizer)),
            loss=_fresh(args.get("loss")),
            metrics=_fresh(args.get("metrics")),
            loss_weights=_fresh(args.get("loss_weights")),
            weighted_metrics=_fresh(args.get("weighted_metrics")),
        )

    def reset_metrics(self) -> None:
        """Start the running loss and metrics of ``train_on_batch``/``test_on_batch`` afresh."""
        self._batch_logs_state = None
        for specs in vars(self).get("_specs", {}).values():
            for s in specs:
                for cm in (s["metrics"], s["weighted"]):
                    if cm is not None:
                        cm.reset_state()

    def predict(
        self, x, batch_size: Optional[int] = None, verbose="auto", steps: Optional[int] = None, callbacks=None, **kwargs
    ):
        """The outputs for ``x`` (arrays, or a generator / PyDataset of batches): one array, or a list/dict
        of arrays as the model's outputs are structured; ``steps`` batches at most, callbacks as in Keras."""
        from cdnn.trainers.loop import predict_graph

        if kwargs:
            raise TypeError(f"predict: unsupported argument(s) {sorted(kwargs)}")
        if (
            type(verbose) is int
            and verbose == 0
            and steps is None
            and callbacks is None
            and (batch_size is None or (type(batch_size) is int and batch_size > 0))
        ):
            out = self._lean_graph_predict(x, None)
            if out is not None:
                return out
        return predict_graph(self, x, batch_size, verbose, steps, callbacks)

    def predict_on_batch(self, x):
        """The outputs for the batch ``x`` (as ``predict``, without callbacks or a progress bar)."""
        out = self._lean_graph_predict(x, None)
        if out is not None:
            return out
        return self.predict(x, batch_size=max(1, len(flatten(x)[0])), verbose=0)

    def _lean_graph_predict(self, x, call: Optional[str]):
        """The outputs of ``predict`` (``call`` None) or ``model(x)`` (``call`` "None") for arrays ``x`` the core
        reads as they are, by one C call on the core graph that path runs (kept while the model's core and traced
        graphs are those it was found in); None otherwise: the caller takes the general path."""
        plans = self.__dict__.get("_glean")
        plan = plans.get(call) if plans is not None else None
        core = self.__dict__.get("_core")
        if (
            plan is None
            or plan[0] is not core
            or plan[1] is not self.__dict__.get("_traced")
            or plan[2] != ("train" in core)
            or core.get(plan[3]) is not plan[4]
        ):
            plan = self._lean_graph_plan(call)
            if plan is None:
                return None
        shapes = plan[5]
        if len(shapes) == 1:
            if type(x) is not np.ndarray or x.shape[1:] != shapes[0]:
                return None
            xs = [x if x.ndim == 2 else x.reshape(len(x), -1)]
        else:
            if type(x) is not list and type(x) is not tuple or len(x) != len(shapes):
                return None
            xs = []
            for a, s in zip(x, shapes):
                if type(a) is not np.ndarray or a.shape[1:] != s:
                    return None
                xs.append(a if a.ndim == 2 else a.reshape(len(a), -1))
        outs = plan[4].predict_lean(xs, PREDICT_ROWS, plan[6])
        if outs is None:
            return None
        self.stop_predicting = False
        return self._structure_outputs(plan[7], outs)

    def _lean_graph_plan(self, call: Optional[str]) -> Optional[tuple]:
        """(core dict, traced dict, whether it holds "train", the net's key, the net, input shapes, output shapes,
        traced graph) for :meth:`_lean_graph_predict`, or None before the model has its inputs."""
        if not hasattr(self, "outputs") or "_core" not in self.__dict__:
            return None
        graph = self._inference_model()
        net = self._core_graph(training=False, call=call)
        core = self._core
        key = next(k for k, v in core.items() if v is net)
        plan = (
            core,
            self.__dict__.get("_traced"),
            "train" in core,
            key,
            net,
            tuple(tuple(t.shape[1:]) for t in graph.inputs),
            tuple(tuple(t.shape[1:]) for t in graph.outputs),
            graph,
        )
        self.__dict__.setdefault("_glean", {})[call] = plan
        return plan

    def _structure_outputs(self, graph, results: list):
        struct = graph._outputs_struct
        if isinstance(struct, dict):
            return dict(zip(struct, results))
        if isinstance(struct, (list, tuple)):
            return list(results)
        return results[0]

    def _own_callbacks(self, callbacks, params: dict) -> list:
        """``fit``'s, ``evaluate``'s or ``predict``'s callbacks, checked, given the model and ``params``, as Keras does."""
        if callbacks is None:
            return []
        if isinstance(callbacks, callbacks_module.Callback) or not hasattr(callbacks, "__iter__"):
            raise TypeError(
                f"Invalid argument `callbacks`: expected a list of callbacks, received {type(callbacks).__name__}"
            )
        cbs = list(callbacks)
        for cb in cbs:
            if not isinstance(cb, callbacks_module.Callback):
                raise TypeError(f"Invalid callback: expected a cdnn.callbacks.Callback, received {type(cb).__name__}")
            cb.set_model(self)
            cb.set_params(params)
        return cbs

    # ---- display ---------------------------------------------------------------------------------
    def summary(self, line_length: Optional[int] = None, positions=None, print_fn=None, **kwargs) -> None:
        """Print Keras 3's summary table: a ``Connected to`` column for a graph that is not a plain chain."""
        if positions is not None:
            raise ValueError("summary: argument `positions` is not supported by cdnn")
        for k in ("expand_nested", "show_trainable", "layer_range"):
            if kwargs.pop(k, None):
                raise ValueError(f"summary: argument `{k}` is not supported by cdnn")
        if kwargs:
            raise TypeError(f"summary: unsupported argument(s) {sorted(kwargs)}")
        graph = self if hasattr(self, "_nodes") else None
        connected = graph is not None and not graph._summary_sequential_like()
        rows = []
        layers = graph.layers if graph is not None else self.layers
        for layer in layers:
            if graph is not None:
                shape = graph._layer_output_shape_text(layer)
            else:
                shape = str((None, *layer.output_shape_)) if layer.output_shape_ is not None else "?"
            params = layer.count_params() if layer.built else None
            row = (layer.name, type(layer).__name__, shape, params)
            if connected:
                row = row + (graph._connections(layer),)
            rows.append(row)
        optimizer_params = None
        if self.compiled and self.optimizer is not None and self.optimizer.iterations > 0:
            optimizer_params = 2 + sum(v.size for v in self.optimizer.variables)
        trainable = int(sum(w.size for w in self.trainable_weights))
        text = format_summary(
            self.name,
            rows,
            trainable,
            self.count_params() - trainable,
            line_length=line_length,
            optimizer_params=optimizer_params,
        )
        (print_fn or print)(text)

    # ---- files ------------------------------------------------------------------------------------
    def export(self, filepath, format: str = "tf_saved_model", verbose=None, input_signature=None, **kwargs) -> None:
        """Write the inference graph for other runtimes: ``format="onnx"`` (needs the ``onnx`` package).

        Keras' other formats (TensorFlow SavedModel, LiteRT, OpenVINO) are refused: cdnn has no
        TensorFlow to write them with.
        """
        if format != "onnx":
            raise ValueError(
                f"Invalid value for argument `format`: cdnn exports format='onnx', received "
                f"format={format!r} (Keras' default, 'tf_saved_model', needs TensorFlow)"
            )
        from cdnn.export import export_onnx

        opset = kwargs.pop("opset_version", None)
        if kwargs:
            raise TypeError(f"export: unsupported argument(s) {sorted(kwargs)}")
        export_onnx(self, filepath, verbose=verbose, input_signature=input_signature, opset_version=opset)

    def save(self, filepath, overwrite: bool = True) -> None:
        """Save architecture, weights, compile settings and optimizer state to one file (atomically)."""
        from cdnn import saving

        if not hasattr(self, "_nodes"):
            raise NotImplementedError(
                f"Saving the subclassed model '{self.name}' ({type(self).__name__}) to a file is not supported by "
                f"cdnn: its architecture is its Python code. Use save_weights() and load_weights() into a new "
                f"{type(self).__name__}, or pickle the model"
            )
        saving.save_model(self, filepath, overwrite=overwrite)

    def save_weights(self, filepath, overwrite: bool = True) -> None:
        """Save the weights (Keras' ``.weights.h5`` layout for such names, else cdnn's own format)."""
        from cdnn import saving

        saving.save_weights(self, filepath, overwrite=overwrite)

    def load_weights(self, filepath) -> None:
        """Load weights saved by :meth:`save_weights` or :meth:`save` into a model of the same architecture."""
        from cdnn import saving

        saving.load_weights(self, filepath)

    def get_config(self) -> dict:
        """A subclassed model's config: its name (its structure lives in its Python code, as in Keras)."""
        return {"name": self.name, "trainable": self.trainable}

    # ---- pickling (joblib, multiprocessing, copy.deepcopy) ------------------------------------------
    def __getstate__(self) -> dict:
        """Everything but the C core's objects (remade on first use) and fit's thread timings."""
        state = dict(self.__dict__)
        state["_core"] = {}
        state.pop("_chooser", None)
        state.pop("_chooser_key", None)
        state.pop("_lean", None)
        state.pop("_glean", None)
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)

    @classmethod
    def from_config(cls, config: dict) -> Model:
        """A functional model from its config (``layers``, ``input_layers``...), a subclass from its kwargs."""
        from cdnn.models.functional import Functional

        if isinstance(config, dict) and "input_layers" in config and "layers" in config:
            return Functional.from_config(config)
        return cls(**config)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} name={self.name}, built={self.built}>"


def _fresh(value):
    """A compile argument with its Loss and Metric objects made anew from their configs (names, functions
    and numbers as they are; lists and dicts by output kept)."""
    if isinstance(value, (list, tuple)):
        return type(value)(_fresh(v) for v in value)
    if isinstance(value, dict):
        return {k: _fresh(v) for k, v in value.items()}
    if isinstance(value, (metrics_module.Metric, losses_module.Loss)):
        return type(value).from_config(value.get_config())
    return value
