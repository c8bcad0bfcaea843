"""``Sequential``: a linear stack of layers, Keras 3's model API over cdnn's C training loop.

A plain chain (trainable Dense / Dropout / Flatten / Reshape layers, flat
inputs to each Dense) runs on the C core's fused ``Network``, the fast path;
any other stack is a linear graph and runs as a functional model
(:class:`~cdnn.models.model.Model`, ``_core.Graph``).

Python prepares the data once per call (float32, C-contiguous), then the epoch
loop every model shares (:func:`cdnn.trainers.loop.run_epochs`) hands runs of
mini-batches to the C core, which trains them with the GIL released. Between
runs (about ten a second) Python redraws the progress bar and calls the
callbacks; between epochs it validates.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence, Union

import numpy as np

from cdnn import _core, _naming, _random, _saving, _serial, saving
from cdnn import activations as activations_module
from cdnn import callbacks as callbacks_module
from cdnn import losses as losses_module
from cdnn import metrics as metrics_module
from cdnn import optimizers as optimizers_module
from cdnn._errors import invalid
from cdnn._progbar import Progbar
from cdnn._summary import format_summary
from cdnn._symbolic import KerasTensor
from cdnn.layers import Dense, Dropout, Flatten, InputLayer, Layer, Reshape
from cdnn.models.model import Model, _batch_size, _compile_options, _verbose, prepare_labels
from cdnn.models.model import all_finite as _all_finite
from cdnn.models.model import as_float32 as _as_float32
from cdnn.models.model import as_inputs as _as_inputs
from cdnn.trainers.compile_utils import (
    CompileMetrics,
    deserialize_metrics,
    flatten_metrics_in_order,
    metrics_logs,
    serialize_metrics,
)
from cdnn.trainers.epoch_iterator import (
    ArrayEpochs,
    BatchEpochs,
    batches_of,
    check_batch_source_args,
    is_batch_source,
    refuse_sample_weight_arg,
)
from cdnn.trainers.loop import ChainRuns, check_fit_args, run_epochs
from cdnn.trainers.sample_weights import as_sample_weights, class_weights_to_sample_weights
from cdnn.trainers.thread_chooser import _ThreadChooser

__all__ = ["Sequential", "load_model"]

#: rows per C inference batch (results do not depend on it)
PREDICT_ROWS = 512


class Sequential(Model):
    """A linear stack of layers.

    Parameters
    ----------
    layers : list of Layer, optional
        The layers, the first possibly an ``Input`` or carrying ``input_shape=``.
    name : str, optional
        Any text; defaults to ``sequential``, ``sequential_1``, ...
    """

    def __init__(
        self,
        layers: Optional[Sequence[Union[Layer, KerasTensor]]] = None,
        name: Optional[str] = None,
        trainable: bool = True,
        **kwargs,
    ) -> None:
        if kwargs:
            raise TypeError(f"Sequential: unsupported argument(s) {sorted(kwargs)}")
        if name is not None and not isinstance(name, str):
            raise invalid("name", name, "a string")
        Layer.__init__(self, name=name if name else _naming.unique_name("sequential"))
        self._init_model_state()
        self._layers: list[Layer] = []
        self._input_shape: Optional[tuple] = None
        self._input_batch: Optional[int] = None  # Input(batch_size=...): the batch dimension shapes show
        self.built = False
        self.optimizer: Optional[optimizers_module.Optimizer] = None
        self.loss: Optional[losses_module.Loss] = None
        self._compile_metrics: Optional[CompileMetrics] = None
        self._weighted_metrics: Optional[CompileMetrics] = None
        self._loss_tracker = metrics_module.Mean(name="loss")
        self.compiled = False
        self.stop_training = False
        self.history: Optional[callbacks_module.History] = None
        self._net = None
        for layer in layers or ():
            self.add(layer)
        if not trainable:
            self.trainable = False

    # ---- structure --------------------------------------------------------
    def add(self, layer: Layer) -> None:
        """Append a layer (an ``Input`` only as the first element; a model is one layer)."""
        if (
            isinstance(layer, KerasTensor)
            and layer._keras_history is not None
            and isinstance(layer._keras_history[0], InputLayer)
        ):
            layer = layer._keras_history[0]  # keras.Input(...) as the first element
        if layer is self:
            raise ValueError(f"Sequential model {self.name!r} cannot be added to itself (a cycle)")
        if not isinstance(layer, Layer):
            raise TypeError(
                f"Invalid argument `layer`: expected a cdnn layer (cdnn.layers.Dense, ...), "
                f"received {type(layer).__name__}"
            )
        if isinstance(layer, InputLayer):
            if self._layers:
                raise ValueError("An Input can only be the first element of a Sequential model")
            self._input_shape = layer._input_shape
            self._input_batch = layer.batch_size
            return
        if not self._layers and self._input_shape is None and layer._input_shape is not None:
            self._input_shape = layer._input_shape
        if any(l.name == layer.name for l in self._layers):
            raise ValueError(
                f"All layers added to a Sequential model should have unique names. "
                f"Name {layer.name!r} is already the name of a layer in this model."
            )
        self._layers.append(layer)
        self.built = False
        self._structure_changed()
        if self._input_shape is not None:
            self.build((None, *self._input_shape))

    def pop(self) -> Layer:
        """Remove and return the last layer."""
        if not self._layers:
            raise TypeError("There are no layers in the model.")
        layer = self._layers.pop()
        self._structure_changed()
        self.built = False
        if self._layers and self._input_shape is not None:
            self.build((None, *self._input_shape))
        return layer

    def _structure_changed(self) -> None:
        self._specs = {}
        self._net = None
        self._core = {}
        self._traced = {}

    @property
    def layers(self) -> list[Layer]:
        """The layers (without the input)."""
        return list(self._layers)

    def build(self, input_shape) -> None:
        """Create every layer's weights for inputs of ``input_shape`` (with or without the batch dimension)."""
        shape = tuple(input_shape)
        if shape and shape[0] is None:
            shape = shape[1:]
        shape = tuple(int(d) for d in shape)
        if not self._layers:
            raise ValueError("Sequential model has no layers: add a Dense layer before building it")
        first = self._layers[0]
        if not first.built and not isinstance(first, Model):
            first.build(shape)  # its own message for a shape its weights cannot take (e.g. zero features)
        self._input_shape = shape
        self._traced = {}
        graph = self._graph_model()  # builds every layer, checking each one's input shape
        self.output_shape_ = tuple(graph.outputs[0].shape[1:])
        self.built = True
        self._net = None
        self._core = {}
        self._specs = {}

    def _graph_model(self, training: bool = True):
        """The stack as a linear functional graph: ``Input`` then each layer called on the previous output."""
        from cdnn.models.functional import Functional

        if "graph" not in self._traced:
            if self._input_shape is None:
                raise ValueError(
                    f"Sequential model {self.name!r} has not been built yet: give it an Input or call "
                    f"fit/predict/build first"
                )
            x = inputs = InputLayer(
                shape=self._input_shape, name=f"{self.name}_input", batch_size=getattr(self, "_input_batch", None)
            )._output_tensor
            for layer in self._layers:
                x = layer(x)
            graph = Functional.__new__(Functional)
            graph._functional_view([inputs], [x])
            graph._inputs_struct, graph._outputs_struct = inputs, x
            graph.name = self.name
            self._traced["graph"] = graph
        return self._traced["graph"]

    def _inference_model(self):
        return self._graph_model()

    @property
    def inputs(self) -> list:
        return self._graph_model().inputs

    @property
    def outputs(self) -> list:
        return self._graph_model().outputs

    def _fast_chain(self) -> bool:
        """Whether the fused Dense-chain ``Network`` runs this model: Dense (trainable or frozen), Dropout,
        Flatten and Reshape only, each Dense on flat inputs, a Dense last, no activity regularizer (the
        graph executor adds those)."""
        if not self._layers or not isinstance(self._layers[-1], Dense):
            return False
        for layer in self._layers:
            if type(layer) not in (Dense, Dropout, Flatten, Reshape) or layer.activity_regularizer is not None:
                return False
            if isinstance(layer, Dense) and layer.built and len(layer._build_input_shape) != 1:
                return False
        return True

    def _ensure_built(self, x: np.ndarray, name: str = "x") -> None:
        if not self.built:
            self.build((None, *x.shape[1:]))
        if tuple(x.shape[1:]) != self._input_shape:
            flat = int(math.prod(self._input_shape))
            if not (len(x.shape) == 2 and x.shape[1] == flat and len(self._input_shape) == 1):
                raise ValueError(
                    f"Input `{name}` has incompatible shape: model {self.name!r} expects inputs of "
                    f"shape {(None, *self._input_shape)}, received {x.shape}"
                )

    @property
    def input_shape(self) -> tuple:
        return (getattr(self, "_input_batch", None), *self._input_shape) if self._input_shape is not None else None

    @property
    def output_shape(self) -> tuple:
        if not self.built:
            raise AttributeError(f"Sequential model {self.name!r} has not been built yet")
        return (getattr(self, "_input_batch", None), *self.output_shape_)

    def _dense_stack(self) -> list[dict]:
        """The layers as the C core sees them: Dense layers with the dropout before each."""
        if not isinstance(self._layers[-1] if self._layers else None, Dense):
            last = self._layers[-1] if self._layers else None
            raise ValueError(
                f"cdnn trains Dense layers: the last layer must be Dense, received "
                f"{type(last).__name__ if last else 'no layer'} {getattr(last, 'name', '')!r}"
            )
        stack, drop = [], 1.0
        for layer in self._layers:
            if isinstance(layer, Dropout):
                drop *= 1.0 - layer.rate  # consecutive dropouts: keep probabilities multiply
            elif isinstance(layer, Dense):
                stack.append({"layer": layer, "dropout": 1.0 - drop})
                drop = 1.0
            elif isinstance(layer, Flatten):
                continue
        if drop != 1.0:
            raise ValueError("A Dropout after the last Dense layer has no effect on training in cdnn; remove it")
        return stack

    # ---- display ------------------------------------------------------------
    def summary(self, line_length: Optional[int] = None, print_fn=None) -> None:
        """Print Keras 3's summary table (``print_fn`` receives the text instead, if given)."""
        rows = []
        for layer in self._layers:
            batch = getattr(self, "_input_batch", None)
            shape = str((batch, *layer.output_shape_)) if layer.built and layer.output_shape_ is not None else "?"
            # Keras 3: "0 (unbuilt)" for a layer whose weights are not made yet (weightless layers are
            # built when made in recent versions: "0")
            unbuilt = not layer.built and isinstance(layer, Dense)
            rows.append((layer.name, type(layer).__name__, shape, None if unbuilt else layer.count_params()))
        # Keras builds its optimizer at the first training step (or when loading its state) and then
        # lists its variables: the slots, the iteration count and the learning rate
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

    # ---- compile ------------------------------------------------------------
    def compile(self, optimizer="rmsprop", loss=None, metrics=None, **kwargs) -> None:
        """Choose the optimizer, loss and metrics (Keras' default optimizer is RMSprop)."""
        loss_weights = kwargs.pop("loss_weights", None)
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
        self._core = {}
        self.loss = losses_module.resolve(loss) if loss is not None else None
        self._compile_metrics = CompileMetrics(metrics) if metrics is not None else None
        self._weighted_metrics = CompileMetrics(weighted_metrics, weighted=True) if weighted_metrics else None
        self._specs = {}
        self._loss_tracker = metrics_module.Mean(name="loss")
        self.compiled = True
        self._net = None

    @property
    def metrics(self) -> list:
        """The loss tracker and the compiled metrics (one ``compile_metrics`` object), as Keras 3."""
        if not self.compiled:
            return []
        return [self._loss_tracker] + [m for m in (self._compile_metrics, self._weighted_metrics) if m is not None]

    @property
    def metrics_names(self) -> list[str]:
        """``["loss", "compile_metrics"]`` after compiling with metrics, as Keras 3."""
        return [m.name for m in self.metrics]

    def reset_metrics(self) -> None:
        for m in self.metrics:
            m.reset_state()
        Model.reset_metrics(self)

    def _check_compiled(self, what: str) -> None:
        if not self.compiled:
            # Keras 3 raises ValueError here too
            raise ValueError(f"You must call `compile()` before calling `{what}()`.")
        if self.loss is None:
            raise ValueError(f"No loss to compute: call `compile()` with a `loss` before `{what}()`.")

    @_serial.one_builder
    def _core_network(self):
        """The C core's view of this model, made on first use after (re)compiling or (re)building."""
        if self._net is None:
            stack = self._dense_stack()
            top = stack[-1]["layer"]
            loss = self.loss
            params = self.trainable_weights  # a frozen Dense gets no slots: the core leaves it bit for bit
            if not self.optimizer._built_for(params):  # refuses an optimizer built for another model
                self.optimizer.build(params)
            slots = iter(self.optimizer._slots)
            opt = self.optimizer

            def untouched(w):
                # the chain's core wants slot arrays even for a frozen layer, whose slots it never reads or
                # writes: zero pages the system maps only if touched (np.zeros), not optimizer state
                specs = opt._slot_specs(tuple(w.shape)) + [
                    (w.shape, 0.0) if opt.use_ema else None,
                    (w.shape, 0.0) if opt.gradient_accumulation_steps else None,
                ]
                return [np.zeros(spec[0], np.float32) if spec is not None else None for spec in specs]

            layers = []
            for item in stack:
                layer = item["layer"]
                frozen = not (self.trainable and layer.trainable)
                ws = untouched(layer.kernel) if frozen else next(slots)
                if not layer.use_bias:
                    bs = [None] * 5
                else:
                    bs = untouched(layer.bias) if frozen else next(slots)
                layers.append(
                    {
                        "W": layer.kernel,
                        "b": layer.bias,
                        "activation": layer.activation.__name__,
                        "alpha": activations_module.core_alpha(layer.activation),
                        "dropout": item["dropout"],
                        "slots": [ws[0], ws[1], bs[0], bs[1]],
                        "extra_slots": {
                            "W3": ws[2],
                            "b3": bs[2],
                            "Wema": ws[3],
                            "bema": bs[3],
                            "Wacc": ws[4],
                            "bacc": bs[4],
                        },
                        "trainable": not frozen,
                        **layer._core_rules(),
                    }
                )
            kind = None
            if self._compile_metrics is not None:  # bad metric and loss/output combinations are refused here
                self._compile_metrics.build(loss.core_name, top.units, top.activation.__name__)
                kind = self._compile_metrics.core_kind
            if self._weighted_metrics is not None:
                self._weighted_metrics.build(loss.core_name, top.units, top.activation.__name__)
            self._net = _core.Network(
                layers, loss.core_name, loss.from_logits, kind, self.optimizer.hyperparameters(), loss._core_options()
            )
            self._chooser_key = None  # fit's thread timings were for the old network
        return self._net

    # ---- data -----------------------------------------------------------------
    def _prepare_x(self, x, name: str = "x", check_float32: bool = True) -> np.ndarray:
        a = _as_inputs(x, name)
        self._ensure_built(a, name)
        return _as_float32(a, name, check_float32).reshape(a.shape[0], -1)

    def _prepare_y(self, y, n: int, name: str = "y") -> np.ndarray:
        return prepare_labels(y, n, self._layers[-1].units, self.loss, name)

    def _prepare_sample_weight(self, sample_weight, n: int, name: str = "sample_weight") -> Optional[np.ndarray]:
        return as_sample_weights(sample_weight, n, name)

    def _class_sample_weight(self, class_weight, ys: np.ndarray) -> np.ndarray:
        """``class_weight`` as the sample weights of the prepared labels ``ys``."""
        return class_weights_to_sample_weights(
            class_weight, ys, self.loss.core_name, self._layers[-1].units, getattr(self.loss, "ignore_class", None)
        )

    def _route_to_graph(self, x) -> bool:
        """Build from ``x`` if needed; whether this model runs as a graph rather than the fused chain."""
        from cdnn.trainers.epoch_iterator import is_batch_source

        if not self.built and x is not None and not isinstance(x, (dict, list, tuple)) and not is_batch_source(x):
            self._ensure_built(_as_inputs(x))
        weights = (self._compile_args or {}).get("loss_weights")
        plain_weight = weights is None or (np.ndim(weights) <= 1 and np.all(np.asarray(weights) == 1))
        return not (self._fast_chain() and plain_weight)

    # ---- training ---------------------------------------------------------------
    @_serial.one_at_a_time  # a second fit of this model (from another thread) waits for the first
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
        steps_per_epoch: Optional[int] = None,
        validation_steps: Optional[int] = None,
        validation_batch_size: Optional[int] = None,
        validation_freq=1,
        **kwargs,
    ) -> callbacks_module.History:
        """Train with mini-batch gradient descent; returns a History of the epoch logs.

        Parameters follow Keras: ``x`` is an array (NumPy, list, pandas) with labels ``y``, or a
        generator / ``keras.utils.PyDataset`` of ``(x, y)`` or ``(x, y, sample_weight)`` batches
        (``class_weight`` with a PyDataset only, as Keras); ``validation_split`` takes the last fraction
        of the data (before shuffling); ``validation_data`` is ``(x_val, y_val)`` or a generator /
        PyDataset; ``steps_per_epoch`` batches make an epoch (needed for an endless generator);
        validation runs every ``validation_freq`` epochs (or at the epochs listed).
        """
        if self._route_to_graph(x):
            kwargs.update(
                steps_per_epoch=steps_per_epoch,
                validation_steps=validation_steps,
                validation_batch_size=validation_batch_size,
                validation_freq=validation_freq,
            )
            return Model.fit(
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
                **kwargs,
            )
        class_weight = kwargs.pop("class_weight", None)
        sample_weight = kwargs.pop("sample_weight", None)
        if kwargs:
            raise TypeError(f"fit: unsupported argument(s) {sorted(kwargs)}")
        self._check_compiled("fit")
        batch_size = _batch_size(batch_size)
        verbose = _verbose(verbose)
        check_fit_args(epochs, validation_split, initial_epoch, steps_per_epoch, validation_steps, validation_freq)
        val_batch = _batch_size(validation_batch_size) if validation_batch_size is not None else batch_size

        if sample_weight is not None and class_weight is not None:
            raise ValueError("You cannot `class_weight` and `sample_weight` at the same time.")  # Keras' words
        split_val = None
        if is_batch_source(x):
            check_batch_source_args(x, y, validation_split, sample_weight, class_weight)
            feeder = BatchEpochs(x, steps_per_epoch, "x", class_weight, shuffle)
        else:
            # float32 training rows are checked for NaN and infinity by the core as it gathers each batch
            xs = self._prepare_x(x, check_float32=False)
            ys = self._prepare_y(y, len(xs))
            sw = as_sample_weights(sample_weight, len(xs))
            if validation_split and validation_data is None:
                split = int(math.floor(len(xs) * (1.0 - validation_split)))  # as Keras: train on the first part
                if split <= 0 or split >= len(xs):
                    raise ValueError(
                        f"validation_split={validation_split} leaves no training or no validation "
                        f"samples out of {len(xs)}"
                    )
                if not _all_finite(xs[split:]):  # not gathered by training: checked here
                    raise ValueError("Invalid values in `x`: its validation split contains NaN or infinity")
                # as Keras: the sample weights are split with the data, class weights weigh the training part
                split_val = (xs[split:], ys[split:], sw[split:] if sw is not None else None)  # already prepared
                xs, ys = xs[:split], ys[:split]
                sw = sw[:split] if sw is not None else None
            if class_weight is not None:
                sw = self._class_sample_weight(class_weight, ys)
            # a batch larger than the data is the whole data (and the C workspace is sized by the batch)
            feeder = ArrayEpochs(xs, ys, min(batch_size, len(xs)), shuffle, steps_per_epoch, sw)
        val = None
        if split_val is not None:
            vx, vy, vsw = split_val
            if validation_steps is not None:
                cut = validation_steps * val_batch
                vx, vy, vsw = vx[:cut], vy[:cut], vsw[:cut] if vsw is not None else None
            val = (vx, vy, vsw)
        elif validation_data is not None:
            if is_batch_source(validation_data):
                val = validation_data
            else:
                if not isinstance(validation_data, (tuple, list)):
                    raise ValueError(
                        f"Invalid value for argument `validation_data`: expected a tuple (x_val, y_val) "
                        f"or (x_val, y_val, sample_weight), received {type(validation_data).__name__}"
                    )
                if len(validation_data) not in (2, 3):
                    raise ValueError(
                        f"Invalid value for argument `validation_data`: expected a tuple (x_val, y_val) "
                        f"or (x_val, y_val, sample_weight), received a {type(validation_data).__name__} "
                        f"of {len(validation_data)} item(s)"
                    )
                vx = self._prepare_x(validation_data[0], "validation_data[0]")
                vy = self._prepare_y(validation_data[1], len(vx), "validation_data[1]")
                vsw = as_sample_weights(
                    validation_data[2] if len(validation_data) == 3 else None, len(vx), "validation_data[2]"
                )
                if validation_steps is not None:  # as Keras: the first validation_steps batches
                    cut = validation_steps * val_batch
                    vx, vy, vsw = vx[:cut], vy[:cut], vsw[:cut] if vsw is not None else None
                val = (vx, vy, vsw)
        return self._train(
            feeder,
            val,
            epochs,
            verbose,
            list(callbacks or []),
            int(initial_epoch),
            (val_batch, validation_steps, validation_freq),
        )

    def _train(self, feeder, val, epochs, verbose, user_callbacks, initial_epoch, val_args):
        net = self._core_network()
        history = callbacks_module.History()
        cbs = self._own_callbacks(
            [*user_callbacks, history], {"verbose": verbose, "epochs": epochs, "steps": feeder.steps}
        )
        self.history = history
        self.stop_training = False
        val_batch, val_steps, val_freq = val_args
        key = (_core.get_num_threads(), feeder.batch_size)
        if getattr(self, "_chooser_key", None) != key:
            self._chooser, self._chooser_key = _ThreadChooser(key[0]), key

        def validate():
            return self._evaluate_with_callbacks(val, val_batch, cbs, val_steps)

        run_epochs(
            self,
            net,
            feeder,
            ChainRuns(self, feeder.steps),
            epochs,
            initial_epoch,
            verbose,
            cbs,
            user_callbacks,
            history,
            self._chooser,
            validate if val is not None else None,
            val_freq,
        )
        return history

    def _run_logs(self, loss_sum: float, correct_sum: float, rows: int) -> dict:
        """The logs after ``rows`` rows whose losses (and core-counted accuracy) sum to these."""
        self._loss_tracker.reset_state()
        self._loss_tracker._add_sums(loss_sum, rows)
        cm = self._compile_metrics
        if cm is not None and cm.core_index is not None:
            cm.metrics[cm.core_index].reset_state()
            cm.add_core_counts(correct_sum, rows)
        return metrics_logs(self._loss_tracker, [cm, self._weighted_metrics])

    def _penalty(self) -> float:
        """The layers' regularization penalties at the current weights (Keras adds them to the loss)."""
        if not self.trainable:  # Keras: the penalties of the trainable weights only
            return 0.0
        return float(sum(layer._penalty() for layer in self._layers if hasattr(layer, "_penalty")))

    def _log_names(self) -> list:
        return list(metrics_logs(self._loss_tracker, [self._compile_metrics, self._weighted_metrics]))

    def _evaluate_rows(
        self, net, xs: np.ndarray, ys: np.ndarray, sums: list, sw=None, batch_size: int = PREDICT_ROWS
    ) -> dict:
        """Add ``(xs, ys)`` (weights ``sw``) to the running loss and metrics (``sums``: loss, correct, rows);
        the logs."""
        # ignore_class's mean is per batch (Keras): the loss's batches are then the evaluation's
        rows = batch_size if getattr(self.loss, "ignore_class", None) is not None else PREDICT_ROWS
        out, ls, cs = net.predict(xs, rows, ys, sw)
        # Keras adds the regularization penalties (model.losses) to every batch's loss
        ls += self._penalty() * len(xs)
        sums[0], sums[1], sums[2] = sums[0] + ls, sums[1] + cs, sums[2] + len(xs)
        cm, wcm = self._compile_metrics, self._weighted_metrics
        if cm is not None and cm.needs_outputs:
            cm.update_outputs(ys, out)
        if wcm is not None:
            wcm.update_outputs(ys, out, sample_weight=sw)
        return self._run_logs(*sums)

    def _evaluate_with_callbacks(self, data, batch_size: int, cbs: list, steps: Optional[int] = None) -> dict:
        """The logs of ``data`` (arrays ``(xs, ys, sw)``, or a generator / PyDataset of batches), calling the
        callbacks' test hooks as Keras' ``evaluate`` does.

        Arrays go batch by batch (``on_test_batch_begin/end`` with the running means, ``stop_evaluating``
        read after each batch) only for a callback that defines those hooks, or when ``on_test_begin`` set
        ``stop_evaluating``; otherwise in one pass in C.
        """
        self.stop_evaluating = False
        for cb in cbs:
            cb.on_test_begin({})
        per_batch = [cb for cb in cbs if cb._needs_test_batches]
        net = self._core_network()
        for m in (self._compile_metrics, self._weighted_metrics):
            if m is not None:
                m.reset_state()
        sums = [0.0, 0.0, 0]
        logs = self._run_logs(0.0, 0.0, 0)
        source = is_batch_source(data)
        if source:
            name = "x" if cbs is getattr(self, "_evaluate_cbs", None) else "validation_data"
            batches = batches_of(data, steps, name, self)
        elif (per_batch or self.stop_evaluating) and len(data[0]):
            xs, ys, sw = data
            batches = (
                (
                    xs[start : start + batch_size],
                    ys[start : start + batch_size],
                    sw[start : start + batch_size] if sw is not None else None,
                )
                for start in range(0, len(xs), batch_size)
            )
        else:
            batches = iter([data])
            per_batch = []
        self._eval_batches = 0
        for step, (xb, yb, swb) in enumerate(batches):
            for cb in per_batch:
                cb.on_test_batch_begin(step, {})
            # a generator's batch is one batch whatever `batch_size` says (ignore_class's mean is per batch)
            logs = self._evaluate_rows(net, xb, yb, sums, swb, len(xb) if source else batch_size)
            for cb in per_batch:
                cb.on_test_batch_end(step, dict(logs))
            self._eval_batches = step + 1
            if self.stop_evaluating:
                break
        for cb in cbs:
            cb.on_test_end(dict(logs))
        return logs

    # ---- inference -----------------------------------------------------------
    def evaluate(
        self,
        x=None,
        y=None,
        batch_size: Optional[int] = None,
        verbose="auto",
        sample_weight=None,
        steps: Optional[int] = None,
        callbacks=None,
        return_dict: bool = False,
        **kwargs,
    ):
        """The loss and metrics on ``(x, y)`` (arrays, or a generator / PyDataset of batches):
        ``[loss, *metrics]`` in compile order, the loss alone without metrics, or a dict.

        ``sample_weight`` weighs each sample's loss (Keras' sum_over_batch_size: the weighted sum
        over the number of samples); the accuracy from ``metrics`` is not weighted, as in Keras.
        """
        if self._route_to_graph(x):
            return Model.evaluate(
                self,
                x,
                y,
                batch_size,
                verbose,
                return_dict,
                callbacks=callbacks,
                sample_weight=sample_weight,
                steps=steps,
                **kwargs,
            )
        if kwargs:
            raise TypeError(f"evaluate: unsupported argument(s) {sorted(kwargs)}")
        self._check_compiled("evaluate")
        batch_size, verbose = _batch_size(batch_size), _verbose(verbose)
        if steps is not None and (isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1):
            raise invalid("steps", steps, "a positive integer or None")
        if is_batch_source(x):
            refuse_sample_weight_arg(x, sample_weight)
            data = x
            total = steps or getattr(x, "num_batches", None)
        else:
            xs = self._prepare_x(x)
            ys = self._prepare_y(y, len(xs))
            sw = as_sample_weights(sample_weight, len(xs))
            if steps is not None:
                xs, ys = xs[: steps * batch_size], ys[: steps * batch_size]
                sw = sw[: steps * batch_size] if sw is not None else None
            data, total = (xs, ys, sw), -(-len(xs) // batch_size)
        cbs = self._own_callbacks(callbacks, {"verbose": verbose, "epochs": 1, "steps": total})
        bar = Progbar(total, verbose=verbose)
        self._evaluate_cbs = cbs
        try:
            logs = self._evaluate_with_callbacks(data, batch_size, cbs, steps)
        finally:
            self._evaluate_cbs = None
        bar.update(bar.target if bar.target is not None else self._eval_batches, list(logs.items()), finalize=True)
        if return_dict:
            return logs
        return flatten_metrics_in_order(logs, [self._compile_metrics, self._weighted_metrics])

    def predict(
        self, x, batch_size: Optional[int] = None, verbose="auto", steps: Optional[int] = None, callbacks=None, **kwargs
    ) -> np.ndarray:
        """The last layer's outputs (e.g. class probabilities), float32 of shape (samples, units);
        ``x`` an array or a generator / PyDataset of batches (``x`` or ``(x, ...)``)."""
        if (
            type(verbose) is int
            and verbose == 0
            and steps is None
            and callbacks is None
            and not kwargs
            and (batch_size is None or (type(batch_size) is int and batch_size > 0))
        ):
            out = self._lean_predict(x)
            if out is not None:
                return out
        if self._route_to_graph(x):
            return Model.predict(self, x, batch_size, verbose, steps, callbacks, **kwargs)
        if kwargs:
            raise TypeError(f"predict: unsupported argument(s) {sorted(kwargs)}")
        batch_size, verbose = _batch_size(batch_size), _verbose(verbose)
        if steps is not None and (isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1):
            raise invalid("steps", steps, "a positive integer or None")
        if is_batch_source(x):
            total = steps or getattr(x, "num_batches", None)
            cbs = self._own_callbacks(callbacks, {"verbose": verbose, "epochs": 1, "steps": total})
            bar = Progbar(total, verbose=verbose)
            self.stop_predicting = False
            for cb in cbs:
                cb.on_predict_begin({})
            outs = []
            for step, xb in enumerate(batches_of(x, steps, "x", self, with_labels=False)):
                for cb in cbs:
                    cb.on_predict_batch_begin(step, {})
                outs.append(self._inference_network().predict(xb, PREDICT_ROWS))
                for cb in cbs:
                    cb.on_predict_batch_end(step, {"outputs": outs[-1]})
                if total is None or step + 1 < total:
                    bar.update(step + 1)
                if self.stop_predicting:
                    break
            if not outs:
                raise ValueError("predict: the generator or PyDataset `x` yielded no batch")
            for cb in cbs:
                cb.on_predict_end({})
            bar.update(total if total is not None else len(outs), finalize=True)
            return np.concatenate(outs)
        xs = self._prepare_x(x)
        if steps is not None:
            xs = xs[: steps * batch_size]
        steps = -(-len(xs) // batch_size)
        cbs = self._own_callbacks(callbacks, {"verbose": verbose, "epochs": 1, "steps": steps})
        bar = Progbar(steps, verbose=verbose)
        net = self._inference_network()
        self.stop_predicting = False
        for cb in cbs:
            cb.on_predict_begin({})
        per_batch = [cb for cb in cbs if cb._needs_predict_batches]
        if per_batch or self.stop_predicting:  # batch by batch, each batch's outputs in the logs as Keras
            out = np.empty((len(xs), net.n_out), np.float32)
            for step, start in enumerate(range(0, len(xs), batch_size)):
                for cb in per_batch:
                    cb.on_predict_batch_begin(step, {})
                stop = min(start + batch_size, len(xs))
                out[start:stop] = net.predict(xs[start:stop], PREDICT_ROWS)
                for cb in per_batch:
                    cb.on_predict_batch_end(step, {"outputs": out[start:stop]})
                if self.stop_predicting:  # as Keras: the batches predicted so far
                    out = out[:stop]
                    break
        else:
            out = net.predict(xs, PREDICT_ROWS)
        for cb in cbs:
            cb.on_predict_end({})
        bar.update(bar.target, finalize=True)
        return out

    # ---- one batch at a time ------------------------------------------------------
    def train_on_batch(self, x, y=None, sample_weight=None, class_weight=None, return_dict: bool = False):
        """One training step on the batch ``(x, y)``; the loss and metrics of this batch alone (the metrics
        are reset at each call, as in Keras 3)."""
        if self._route_to_graph(x):
            return Model.train_on_batch(self, x, y, sample_weight, class_weight, return_dict)
        self._check_compiled("train_on_batch")
        self.reset_metrics()
        if sample_weight is not None and class_weight is not None:
            raise ValueError("You cannot `class_weight` and `sample_weight` at the same time.")  # Keras' words
        xs = self._prepare_x(x, check_float32=False)
        ys = self._prepare_y(y, len(xs))
        sw = as_sample_weights(sample_weight, len(xs))
        if class_weight is not None:
            sw = self._class_sample_weight(class_weight, ys)
        net = self._core_network()
        cm = self._compile_metrics
        want = cm is not None and cm.needs_outputs or self._weighted_metrics is not None
        out = np.empty((len(xs), net.n_out), np.float32) if want else None
        loss, correct = np.zeros(1), np.zeros(1)
        net.set_optimizer(self.optimizer._run_hyperparameters(int(self.optimizer.iterations), 1))
        seed = int(_random.generator().integers(0, 2**63))
        before = net.steps_done
        try:
            net.train_run(
                xs,
                ys,
                np.arange(len(xs), dtype=np.int32),
                0,
                1,
                len(xs),
                self.optimizer.iterations,
                seed,
                loss,
                correct,
                0,
                False,
                sw,
                out,
            )
        except _core.NonFiniteInputError as e:
            raise ValueError(
                f"Invalid values in `x`: row {e.row} contains NaN or infinity; the batch is not trained"
            ) from None
        finally:
            self.optimizer.iterations += net.steps_done - before
        return self._batch_logs(loss[0], correct[0], ys, out, return_dict, sw)

    def test_on_batch(self, x, y=None, sample_weight=None, return_dict: bool = False):
        """The loss and metrics of the batch ``(x, y)`` alone (the metrics are reset at each call, as in
        Keras 3)."""
        if self._route_to_graph(x):
            return Model.test_on_batch(self, x, y, sample_weight, return_dict)
        self._check_compiled("test_on_batch")
        self.reset_metrics()
        xs = self._prepare_x(x)
        ys = self._prepare_y(y, len(xs))
        sw = as_sample_weights(sample_weight, len(xs))
        out, loss, correct = self._core_network().predict(xs, PREDICT_ROWS, ys, sw)
        return self._batch_logs(loss + self._penalty() * len(xs), correct, ys, out, return_dict, sw)

    def __call__(self, inputs, training: Optional[bool] = None, **kwargs):
        """On arrays: the outputs in inference mode unless ``training=True``; on symbolic tensors: the model as
        a layer (see :meth:`Model.__call__`). A float32 array the fused chain reads as it is takes one C call."""
        if not training and not kwargs and type(inputs) is np.ndarray:
            out = self._lean_predict(inputs)
            if out is not None:
                return out
        return Model.__call__(self, inputs, training, **kwargs)

    def predict_on_batch(self, x) -> np.ndarray:
        """The outputs for the batch ``x`` (as ``predict``, without callbacks or a progress bar)."""
        out = self._lean_predict(x)
        if out is not None:
            return out
        if self._route_to_graph(x):
            return Model.predict(self, x, verbose=0)
        return self._inference_network().predict(self._prepare_x(x), PREDICT_ROWS)

    def _lean_predict(self, x) -> Optional[np.ndarray]:
        """The outputs for ``x`` by the shortest path, when ``x`` is a float32 array the core reads as it is
        and the model runs as the fused chain: the network made once and checked by identity, one C call
        (on one thread below the core's threshold, without entering OpenMP). None otherwise: the caller
        takes the general path, which converts ``x`` or says what is wrong with it."""
        plan = self.__dict__.get("_lean")
        if plan is None or not self._lean_current(plan):
            plan = self._lean_plan()
            if plan is None:
                return None
        if type(x) is not np.ndarray or x.shape[1:] != plan[1]:
            return None
        return plan[0].predict_lean(x if x.ndim == 2 else x.reshape(len(x), -1), PREDICT_ROWS)

    def _lean_current(self, plan: tuple) -> bool:
        """Whether ``plan`` still describes the model: the same layers, weight arrays and activations
        (weights overwritten in place are read by the network where they are)."""
        refs = plan[2]
        if self._net is not plan[3] or len(self._layers) != plan[4]:
            return False
        i = 0
        for layer in self._layers:
            if layer is not refs[i]:
                return False
            i += 1
            if type(layer) is Dense:
                if layer.kernel is not refs[i] or layer.bias is not refs[i + 1] or layer.activation is not refs[i + 2]:
                    return False
                i += 3
        return True

    def _lean_plan(self) -> Optional[tuple]:
        """(network, input shape, identity references, training network, layer count) for :meth:`_lean_predict`,
        or None when the model is not a built fused chain."""
        self.__dict__.pop("_lean", None)
        if not self.built or self._input_shape is None or not self._fast_chain():
            return None
        weights = (self._compile_args or {}).get("loss_weights")
        if not (weights is None or (np.ndim(weights) <= 1 and np.all(np.asarray(weights) == 1))):
            return None
        net = self._inference_network()
        refs = []
        for layer in self._layers:
            refs.append(layer)
            if type(layer) is Dense:
                refs.extend((layer.kernel, layer.bias, layer.activation))
        plan = (net, tuple(self._input_shape), tuple(refs), self._net, len(self._layers))
        self._lean = plan
        return plan

    def _batch_logs(self, loss: float, correct: float, ys: np.ndarray, out, return_dict: bool, sw=None):
        cm, wcm = self._compile_metrics, self._weighted_metrics
        self._loss_tracker._add_sums(loss, len(ys))
        if cm is not None:
            cm.add_core_counts(correct, len(ys))
            if cm.needs_outputs:
                cm.update_outputs(ys, out)
        if wcm is not None:
            wcm.update_outputs(ys, out, sample_weight=sw)
        logs = metrics_logs(self._loss_tracker, [cm, wcm])
        return logs if return_dict else flatten_metrics_in_order(logs, [cm, wcm])

    def _inference_network(self):
        """The C network predict runs: the training one once compiled with a loss (sharing its workspace),
        else an inference-only one, made once per :meth:`_lean_plan`."""
        stack = self._dense_stack()
        if self.compiled and self.loss is not None:
            return self._core_network()
        plan = self.__dict__.get("_lean")
        if plan is not None and plan[3] is None and self._lean_current(plan):
            return plan[0]
        layers = [
            {
                "W": s["layer"].kernel,
                "b": s["layer"].bias,
                "activation": s["layer"].activation.__name__,
                "alpha": activations_module.core_alpha(s["layer"].activation),
            }
            for s in stack
        ]
        return _core.Network(layers, "mean_squared_error", False, None, {"name": "sgd"})

    # ---- weights and files -------------------------------------------------------
    def get_weights(self) -> list[np.ndarray]:
        """Copies of the weights, in Keras' order: kernel then bias for each Dense layer."""
        return [w.copy() for w in self.weights]

    def set_weights(self, weights: Sequence) -> None:
        """Overwrite the weights in place from arrays of the same shapes (cast to float32)."""
        own = self.weights
        if not self.built:
            raise ValueError(
                f"Model {self.name!r} has no weights yet: build it (give an input shape or call fit) before set_weights"
            )
        if isinstance(weights, (str, bytes, np.ndarray)) or not hasattr(weights, "__iter__"):
            raise TypeError(
                f"Invalid argument `weights` of set_weights: expected a list of {len(own)} arrays "
                f"(kernel and bias per Dense layer), received {type(weights).__name__}"
            )
        weights = list(weights)
        if len(weights) != len(own):
            raise ValueError(
                f"set_weights: expected a list of {len(own)} arrays for model {self.name!r}, received {len(weights)}"
            )
        new = []
        for i, (w, o) in enumerate(zip(weights, own)):
            a = np.asarray(w)
            if a.dtype.kind not in "biuf":
                raise TypeError(f"set_weights: weight {i} has dtype {a.dtype}, expected real numbers")
            if a.shape != o.shape:
                raise ValueError(f"set_weights: weight {i} has shape {a.shape}, expected {o.shape}")
            with np.errstate(over="ignore"):
                a = a.astype(np.float32)
            if not np.isfinite(a).all():
                raise ValueError(f"set_weights: weight {i} contains NaN or infinity (or values beyond float32)")
            new.append(a)
        for a, o in zip(new, own):
            np.copyto(o, a, casting="unsafe")

    def save(self, filepath, overwrite: bool = True) -> None:
        """Save architecture, weights, compile settings and optimizer state to one file (atomically)."""
        saving.save_model(self, filepath, overwrite=overwrite)

    def save_weights(self, filepath, overwrite: bool = True) -> None:
        """Save the weights only (atomically)."""
        saving.save_weights(self, filepath, overwrite=overwrite)

    def load_weights(self, filepath) -> None:
        """Load weights saved by :meth:`save_weights` or :meth:`save` from a model of the same architecture."""
        saving.load_weights(self, filepath)

    def to_json(self, **kwargs) -> str:
        """The architecture as Keras 3 serializes it (``keras.models.model_from_json`` rebuilds it)."""
        return saving.model_to_json(self, **kwargs)

    def get_config(self) -> dict:
        """The architecture as plain data."""
        cfg = {
            "name": self.name,
            "input_shape": list(self._input_shape) if self._input_shape is not None else None,
            "layers": [{"class_name": type(l).__name__, "config": l.get_config()} for l in self._layers],
        }
        if not self.trainable:
            cfg["trainable"] = False
        return cfg

    @classmethod
    def from_config(cls, config: dict) -> Sequential:
        """Rebuild from :meth:`get_config` (layers made fresh, built if the input shape is known)."""
        from cdnn.models import deserialize_layer

        if not isinstance(config, dict) or not isinstance(config.get("layers"), list):
            raise ValueError(f"Invalid Sequential config: {str(config)[:200]!r}")
        model = cls([deserialize_layer(c) for c in config["layers"]], name=config.get("name"))
        shape = config.get("input_shape")
        if shape is not None and not model.built:
            if not isinstance(shape, list):
                raise ValueError(f"Invalid input shape {shape!r} in Sequential config")
            if model._layers:
                model.build((None, *shape))
            else:
                model._input_shape = tuple(shape)
        if config.get("trainable") is False:
            model.trainable = False
        return model

    # ---- pickling (joblib, multiprocessing, copy.deepcopy) ---------------------------
    def __getstate__(self) -> dict:
        """The model in cdnn's file format, in memory: what :meth:`save` writes.

        A built model becomes the bytes of its ``.npz`` file (weights, JSON
        architecture, compile settings, optimizer slots and step count); a
        model without weights yet, its architecture and compile settings.
        The history of the last ``fit`` and the C core's buffers are not kept.
        """
        if not self.built:
            comp = None
            if self.compiled:
                comp = {
                    "optimizer": optimizers_module.serialize(self.optimizer),
                    "loss": losses_module.serialize(self.loss) if self.loss is not None else None,
                    "metrics": serialize_metrics(self._compile_metrics),
                    "weighted_metrics": serialize_metrics(self._weighted_metrics),
                    "loss_weights": (self._compile_args or {}).get("loss_weights"),
                }
            return {"cdnn_state": 1, "config": self.get_config(), "compile": comp}
        import io

        arrays, meta = _saving._collect(self, with_optimizer=True)
        meta["kind"] = "model"
        buf = io.BytesIO()
        np.savez(buf, **{_saving._META: _saving._meta_array(meta), **arrays})
        return {"cdnn_state": 1, "file": buf.getvalue()}

    def __setstate__(self, state: dict) -> None:
        """Rebuild from :meth:`__getstate__`'s state with :func:`load_model`'s checks."""
        if not isinstance(state, dict) or state.get("cdnn_state") != 1:
            raise _saving.ModelFileError("Not a pickled cdnn Sequential (unknown state format)")
        if "file" in state:  # read in memory with load_model's checks (no temporary file)
            model = _saving.load_model_from_bytes(state["file"], type(self).from_config)
            self.__dict__.update(model.__dict__)
            return
        from cdnn import layers as layers_module

        config = state["config"]
        Sequential.__init__(self, [layers_module.deserialize(c) for c in config["layers"]], name=config["name"])
        if config.get("input_shape") is not None and not self.built:
            if self._layers:
                self.build((None, *config["input_shape"]))
            else:  # only an Input so far
                self._input_shape = tuple(config["input_shape"])
        comp = state.get("compile")
        if comp:
            self.compile(
                optimizer=optimizers_module.get(comp["optimizer"]),
                loss=losses_module.resolve(comp["loss"]) if comp.get("loss") else None,
                metrics=deserialize_metrics(comp),
                weighted_metrics=deserialize_metrics({"metrics": comp.get("weighted_metrics")}),
                loss_weights=comp.get("loss_weights"),
            )

    def __repr__(self) -> str:
        return f"<Sequential name={self.name!r}, built={self.built}>"


def load_model(filepath, custom_objects=None, compile: bool = True, safe_mode: bool = True) -> Model:
    """Read a model written by ``model.save`` (or Keras 3). Never unpickles, imports or runs anything from the file;
    ``custom_objects`` names user classes (metrics, losses) the file's compile settings use."""
    return saving.load_model(filepath, custom_objects=custom_objects, compile=compile, safe_mode=safe_mode)
