"""``Sequential``: Keras 3's model API over cdnn's C training loop.

Python prepares the data once per call (float32, C-contiguous), then hands
runs of mini-batches to the C core, which trains them with the GIL
released. Between runs (about ten a second) Python redraws the progress bar
and calls the callbacks; between epochs it validates.
"""
from __future__ import annotations

import math
import time
from typing import Optional, Sequence, Union

import numpy as np

from cdnn import _core, _io_utils, _naming, _random, _saving, callbacks as callbacks_module, saving
from cdnn import losses as losses_module, metrics as metrics_module, optimizers as optimizers_module
from cdnn._errors import invalid
from cdnn._progbar import Progbar, epoch_header
from cdnn._summary import format_summary
from cdnn.layers import Dense, Dropout, Flatten, InputLayer, Layer
from cdnn.trainers.thread_chooser import _ThreadChooser

__all__ = ["Sequential", "load_model"]

#: rows per C inference batch (results do not depend on it)
PREDICT_ROWS = 512


def _as_inputs(x, name: str = "x") -> np.ndarray:
    """A real-valued, finite, non-empty array (float32 if it must be copied anyway)."""
    if x is None:
        raise invalid(name, None, "an array of inputs")
    a = np.asarray(x)
    if a.dtype.kind not in "biuf":
        raise TypeError(f"Invalid dtype for argument `{name}`: expected real numbers (float or integer), "
                        f"received dtype {a.dtype}")
    if a.ndim < 2:
        raise ValueError(f"Invalid shape for argument `{name}`: expected (samples, features...), received {a.shape}")
    if a.shape[0] == 0:
        raise ValueError(f"Invalid argument `{name}`: expected at least one sample, received an empty array "
                         f"of shape {a.shape}")
    return a


#: rows per block when scanning inputs for NaN/inf (bounds the scan's temporary memory)
_FINITE_BLOCK = 4096


def _all_finite(a: np.ndarray) -> bool:
    """Whether every value is finite: float32 in the core (one parallel pass, no mask
    allocated), anything else with NumPy in blocks so no full-size mask is allocated."""
    if a.dtype == np.float32 and a.flags.c_contiguous:
        return _core.all_finite(a)
    return all(np.isfinite(a[i:i + _FINITE_BLOCK]).all() for i in range(0, len(a), _FINITE_BLOCK))


def _as_float32(a: np.ndarray, name: str, check_float32: bool = True) -> np.ndarray:
    """``a`` as C-contiguous float32, refusing NaN and infinity (also float64 values beyond float32's range).

    ``check_float32=False`` leaves float32 input unchecked: training checks each batch as
    the core gathers it, which costs nothing, where this scan reads all of ``a`` once more.
    """
    with np.errstate(over="ignore"):
        out = np.ascontiguousarray(a, dtype=np.float32)
    if a.dtype.kind == "f" and (check_float32 or a.dtype != np.float32) and not _all_finite(out):
        beyond = " or values beyond float32's range (3.4e38)" if _all_finite(a) else ""
        raise ValueError(f"Invalid values in `{name}`: it contains NaN or infinity{beyond}")
    return out


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


class Sequential:
    """A linear stack of layers.

    Parameters
    ----------
    layers : list of Layer, optional
        The layers, the first possibly an ``Input`` or carrying ``input_shape=``.
    name : str, optional
        Any text; defaults to ``sequential``, ``sequential_1``, ...
    """

    def __init__(self, layers: Optional[Sequence[Layer]] = None, name: Optional[str] = None, **kwargs) -> None:
        kwargs.pop("trainable", None)
        if kwargs:
            raise TypeError(f"Sequential: unsupported argument(s) {sorted(kwargs)}")
        if name is not None and not isinstance(name, str):
            raise invalid("name", name, "a string")
        self.name = name if name else _naming.unique_name("sequential")
        self._layers: list[Layer] = []
        self._input_shape: Optional[tuple] = None
        self.built = False
        self.optimizer: Optional[optimizers_module.Optimizer] = None
        self.loss: Optional[losses_module.Loss] = None
        self._metric: Optional[metrics_module.Metric] = None
        self.compiled = False
        self.stop_training = False
        self.history: Optional[callbacks_module.History] = None
        self._net = None
        for layer in layers or ():
            self.add(layer)

    # ---- structure --------------------------------------------------------
    def add(self, layer: Layer) -> None:
        """Append a layer (an ``Input`` only as the first element)."""
        if not isinstance(layer, Layer):
            raise TypeError(f"Invalid argument `layer`: expected a cdnn layer (cdnn.layers.Dense, ...), "
                            f"received {type(layer).__name__}")
        if isinstance(layer, InputLayer):
            if self._layers:
                raise ValueError("An Input can only be the first element of a Sequential model")
            self._input_shape = layer._input_shape
            return
        if not self._layers and self._input_shape is None and layer._input_shape is not None:
            self._input_shape = layer._input_shape
        if any(l.name == layer.name for l in self._layers):
            raise ValueError(f"All layers added to a Sequential model should have unique names. "
                             f"Name {layer.name!r} is already the name of a layer in this model.")
        self._layers.append(layer)
        self.built = False
        self._net = None
        if self._input_shape is not None:
            self.build((None, *self._input_shape))

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
        for layer in self._layers:
            if not layer.built:
                layer.build(shape)
            shape = layer.output_shape_
        self._input_shape = tuple(int(d) for d in (input_shape[1:] if input_shape[0] is None else input_shape))
        self.built = True
        self._net = None

    def _ensure_built(self, x: np.ndarray, name: str = "x") -> None:
        if not self.built:
            self.build((None, *x.shape[1:]))
        if tuple(x.shape[1:]) != self._input_shape:
            flat = int(math.prod(self._input_shape))
            if not (len(x.shape) == 2 and x.shape[1] == flat and len(self._input_shape) == 1):
                raise ValueError(f"Input `{name}` has incompatible shape: model {self.name!r} expects inputs of "
                                 f"shape {(None, *self._input_shape)}, received {x.shape}")

    @property
    def input_shape(self) -> tuple:
        return (None, *self._input_shape) if self._input_shape is not None else None

    @property
    def output_shape(self) -> tuple:
        if not self.built:
            raise AttributeError(f"Sequential model {self.name!r} has not been built yet")
        return (None, *self._layers[-1].output_shape_)

    @property
    def weights(self) -> list[np.ndarray]:
        return [w for l in self._layers for w in l.weights]

    @property
    def trainable_weights(self) -> list[np.ndarray]:
        return self.weights

    def count_params(self) -> int:
        """Number of parameters (inputs x units + units per Dense layer)."""
        return int(sum(w.size for w in self.weights))

    def _dense_stack(self) -> list[dict]:
        """The layers as the C core sees them: Dense layers with the dropout before each."""
        if not isinstance(self._layers[-1] if self._layers else None, Dense):
            last = self._layers[-1] if self._layers else None
            raise ValueError(f"cdnn trains Dense layers: the last layer must be Dense, received "
                             f"{type(last).__name__ if last else 'no layer'} {getattr(last, 'name', '')!r}")
        stack, drop = [], 1.0
        for layer in self._layers:
            if isinstance(layer, Dropout):
                drop *= 1.0 - layer.rate   # consecutive dropouts: keep probabilities multiply
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
            shape = str((None, *layer.output_shape_)) if layer.built else "?"
            # Keras 3: "0 (unbuilt)" for a layer whose weights are not made yet (weightless layers are
            # built when made in recent versions: "0")
            unbuilt = not layer.built and isinstance(layer, Dense)
            rows.append((layer.name, type(layer).__name__, shape, None if unbuilt else layer.count_params()))
        # Keras builds its optimizer at the first training step (or when loading its state) and then
        # lists its variables: the slots, the iteration count and the learning rate
        optimizer_params = None
        if self.compiled and self.optimizer is not None and self.optimizer.iterations > 0:
            optimizer_params = 2 + sum(v.size for v in self.optimizer.variables)
        text = format_summary(self.name, rows, self.count_params(), 0, line_length=line_length,
                              optimizer_params=optimizer_params)
        (print_fn or print)(text)

    # ---- compile ------------------------------------------------------------
    def compile(self, optimizer="rmsprop", loss=None, metrics=None, **kwargs) -> None:
        """Choose the optimizer, loss and metrics (Keras' default optimizer is RMSprop)."""
        for k in ("loss_weights", "weighted_metrics", "run_eagerly", "steps_per_execution", "jit_compile",
                  "auto_scale_loss"):
            kwargs.pop(k, None)
        if kwargs:
            raise TypeError(f"compile: unsupported argument(s) {sorted(kwargs)}")
        self.optimizer = optimizers_module.get(optimizer)
        self.loss = losses_module.get(loss) if loss is not None else None
        if metrics is None or metrics == []:
            self._metric = None
        else:
            items = [metrics] if isinstance(metrics, (str, metrics_module.Metric)) else list(metrics)
            if len(items) != 1:
                raise ValueError(f"Invalid value for argument `metrics`: cdnn supports one accuracy metric, "
                                 f"received {metrics!r}")
            self._metric = metrics_module.get(items[0])
        self.compiled = True
        self._net = None

    def _check_compiled(self, what: str) -> None:
        if not self.compiled:
            # Keras 3 raises ValueError here too
            raise ValueError(f"You must call `compile()` before calling `{what}()`.")
        if self.loss is None:
            raise ValueError(f"No loss to compute: call `compile()` with a `loss` before `{what}()`.")

    def _core_network(self):
        """The C core's view of this model, made on first use after (re)compiling or (re)building."""
        if self._net is None:
            stack = self._dense_stack()
            top = stack[-1]["layer"]
            loss = self.loss
            params = self.weights
            if len(self.optimizer._slots) != len(params) or any(
                    s is not None and s.shape != p.shape for pair, p in zip(self.optimizer._slots, params) for s in pair):
                self.optimizer.build(params)
            slots = iter(self.optimizer._slots)
            layers = []
            for item in stack:
                layer = item["layer"]
                ws = next(slots)
                bs = next(slots) if layer.use_bias else [None, None]
                layers.append({"W": layer.kernel, "b": layer.bias, "activation": layer.activation.__name__,
                               "alpha": 0.2, "dropout": item["dropout"], "slots": [ws[0], ws[1], bs[0], bs[1]]})
            kind = metrics_module.resolve(self._metric, loss.core_name, top.units) if self._metric else None
            self._net = _core.Network(layers, loss.core_name, loss.from_logits, kind,
                                      self.optimizer.hyperparameters())
            self._chooser_key = None  # fit's thread timings were for the old network
        return self._net

    # ---- data -----------------------------------------------------------------
    def _prepare_x(self, x, name: str = "x", check_float32: bool = True) -> np.ndarray:
        a = _as_inputs(x, name)
        self._ensure_built(a, name)
        return _as_float32(a, name, check_float32).reshape(a.shape[0], -1)

    def _prepare_y(self, y, n: int, name: str = "y") -> np.ndarray:
        if y is None:
            raise invalid(name, None, "an array of labels")
        a = np.asarray(y)
        units = self._layers[-1].units
        loss = self.loss.core_name
        if a.dtype.kind not in "biuf":
            raise TypeError(f"Invalid dtype for argument `{name}`: expected numeric labels, received {a.dtype}")
        if a.shape[0] != n if a.ndim else True:
            raise ValueError(f"Invalid shape for argument `{name}`: expected {n} labels to match the {n} inputs, "
                             f"received shape {a.shape}")
        if a.dtype.kind == "f" and not _all_finite(a):
            raise ValueError(f"Invalid values in `{name}`: it contains NaN or infinity")
        if loss == "sparse_categorical_crossentropy":
            if a.ndim == 2 and a.shape[1] == 1:
                a = a[:, 0]
            if a.ndim != 1:
                raise ValueError(f"Invalid shape for argument `{name}`: sparse_categorical_crossentropy expects "
                                 f"integer class labels of shape ({n},), received {a.shape} (one-hot labels go "
                                 f"with categorical_crossentropy)")
            if a.dtype.kind == "f" and not np.array_equal(a, np.round(a)):
                raise ValueError(f"Invalid labels in `{name}`: expected integer class indices, received "
                                 f"non-integer values such as {float(a[a != np.round(a)][0])}")
            if a.min() < 0 or a.max() >= units:
                raise ValueError(f"Invalid labels in `{name}`: expected class indices in [0, {units}) for an "
                                 f"output of {units} units, received values in [{a.min()}, {a.max()}]")
            return np.ascontiguousarray(a, dtype=np.int32)
        if a.ndim == 1 and units == 1:
            a = a.reshape(n, 1)
        if a.ndim != 2 or a.shape[1] != units:
            hint = " (integer labels go with sparse_categorical_crossentropy)" if a.ndim == 1 else ""
            raise ValueError(f"Invalid shape for argument `{name}`: {self.loss.name} expects labels of shape "
                             f"({n}, {units}) to match the output, received {a.shape}{hint}")
        return _as_float32(a, name)

    # ---- training ---------------------------------------------------------------
    def fit(self, x=None, y=None, batch_size: Optional[int] = None, epochs: int = 1, verbose="auto",
            callbacks: Optional[list] = None, validation_split: float = 0.0, validation_data=None,
            shuffle: bool = True, initial_epoch: int = 0, **kwargs) -> callbacks_module.History:
        """Train with mini-batch gradient descent; returns a History of the epoch logs.

        Parameters follow Keras: ``validation_split`` takes the last fraction of
        the data (before shuffling); ``validation_data`` is ``(x_val, y_val)``.
        """
        for k in ("class_weight", "sample_weight", "steps_per_epoch", "validation_steps", "validation_batch_size",
                  "validation_freq"):
            if kwargs.get(k) is not None:
                raise ValueError(f"fit: argument `{k}` is not supported by cdnn")
            kwargs.pop(k, None)
        if kwargs:
            raise TypeError(f"fit: unsupported argument(s) {sorted(kwargs)}")
        self._check_compiled("fit")
        batch_size = _batch_size(batch_size)
        verbose = _verbose(verbose)
        if isinstance(epochs, bool) or not isinstance(epochs, (int, np.integer)) or epochs < 0:
            raise invalid("epochs", epochs, "a non-negative integer")
        if not isinstance(validation_split, (int, float)) or not 0 <= validation_split < 1:
            raise invalid("validation_split", validation_split, "a number in [0, 1)")
        if isinstance(initial_epoch, bool) or not isinstance(initial_epoch, (int, np.integer)) or initial_epoch < 0:
            raise invalid("initial_epoch", initial_epoch, "a non-negative integer")

        # float32 training rows are checked for NaN and infinity by the core as it gathers each batch
        xs = self._prepare_x(x, check_float32=False)
        ys = self._prepare_y(y, len(xs))
        val = None
        if validation_data is not None:
            if not isinstance(validation_data, (tuple, list)):
                raise ValueError(f"Invalid value for argument `validation_data`: expected a tuple (x_val, y_val), "
                                 f"received {type(validation_data).__name__}")
            if len(validation_data) == 3:
                raise ValueError("fit: sample weights in `validation_data` (x_val, y_val, sample_weight) are not "
                                 "supported by cdnn")
            if len(validation_data) != 2:
                raise ValueError(f"Invalid value for argument `validation_data`: expected a tuple (x_val, y_val), "
                                 f"received a {type(validation_data).__name__} of {len(validation_data)} item(s)")
            vx = self._prepare_x(validation_data[0], "validation_data[0]")
            val = (vx, self._prepare_y(validation_data[1], len(vx), "validation_data[1]"))
        elif validation_split:
            split = int(math.floor(len(xs) * (1.0 - validation_split)))  # as Keras: train on the first part
            if split <= 0 or split >= len(xs):
                raise ValueError(f"validation_split={validation_split} leaves no training or no validation samples "
                                 f"out of {len(xs)}")
            if not _all_finite(xs[split:]):  # not gathered by training: checked here
                raise ValueError("Invalid values in `x`: its validation split contains NaN or infinity")
            val = (xs[split:], ys[split:])
            xs, ys = xs[:split], ys[:split]
        # a batch larger than the data is the whole data (and the C workspace is sized by the batch)
        return self._train(xs, ys, val, min(batch_size, len(xs)), epochs, verbose, list(callbacks or []), shuffle,
                           int(initial_epoch))

    def _train(self, xs, ys, val, batch_size, epochs, verbose, user_callbacks, shuffle, initial_epoch):
        net = self._core_network()
        n = len(xs)
        steps = -(-n // batch_size)
        history = callbacks_module.History()
        cbs = self._own_callbacks([*user_callbacks, history], {"verbose": verbose, "epochs": epochs, "steps": steps})
        per_batch = [cb for cb in cbs if cb._needs_batches]
        # the core stops a run after a batch whose loss is not finite, so that such a callback
        # stops fit right after that batch's update, as in Keras
        stop_nonfinite = any(cb._stops_on_nonfinite_loss for cb in cbs)
        metric_name = self._metric.name if self._metric else None
        batch_loss = np.zeros(steps)
        batch_correct = np.zeros(steps)
        rng = _random.generator()
        self.history = history
        self.stop_training = False
        history.on_train_begin()
        for cb in user_callbacks:
            cb.on_train_begin()

        key = (_core.get_num_threads(), batch_size)
        if getattr(self, "_chooser_key", None) != key:
            self._chooser, self._chooser_key = _ThreadChooser(key[0]), key
        threads = self._chooser
        training_logs = None
        for epoch in range(initial_epoch, epochs):
            for cb in cbs:
                cb.on_epoch_begin(epoch)
            if verbose and epochs > 1:
                _io_utils.print_msg(epoch_header(epoch + 1, epochs))
            bar = Progbar(steps, verbose=verbose, stateful_metrics=["accuracy", "loss", metric_name])
            perm = (rng.permutation(n) if shuffle else np.arange(n)).astype(np.int32)
            seed = int(rng.integers(0, 2**63))
            done, seen = 0, 0
            while done < steps and not self.stop_training:
                nt = threads.pick()
                k = 1 if per_batch else threads.run_batches(steps - done)
                for cb in per_batch:
                    cb.on_train_batch_begin(done)
                net.set_optimizer(self.optimizer.hyperparameters())
                t0 = time.perf_counter()
                steps_before = net.steps_done
                try:
                    k = net.train_run(xs, ys, perm, done, k, batch_size, self.optimizer.iterations, seed,
                                      batch_loss[done:], batch_correct[done:], nt, stop_nonfinite)
                except _core.NonFiniteInputError as e:
                    raise ValueError(f"Invalid values in `x`: row {e.row} contains NaN or infinity; training stopped "
                                     f"before batch {e.batch + 1} of epoch {epoch + 1} (the batches before it "
                                     f"are trained)") from None
                finally:
                    # counted by the core itself: exact even when Ctrl-C lands just after the run
                    self.optimizer.iterations += net.steps_done - steps_before
                elapsed = time.perf_counter() - t0
                warm_up = not threads.warm  # this run also paid for the workspace and starting the threads
                threads.record(nt, elapsed, k)
                done += k
                seen = min(n, done * batch_size)
                logs = self._logs(batch_loss[:done].sum() / seen, batch_correct[:done].sum() / seen)
                for cb in cbs:
                    cb._on_run_end(done - k, batch_loss[done - k:done] / np.minimum(
                        batch_size, n - np.arange(done - k, done) * batch_size))
                for cb in per_batch:
                    cb.on_train_batch_end(done - 1, dict(logs))
                if done < steps:
                    if warm_up:
                        bar.warm_up(done)
                    else:
                        bar.update(done, list(logs.items()))
            logs = self._logs(batch_loss[:done].sum() / max(seen, 1), batch_correct[:done].sum() / max(seen, 1))
            # as Keras: an epoch cut short by `stop_training` is still validated and its bar finalized
            if val is not None:
                val_logs = self._evaluate_with_callbacks(*val, batch_size, cbs)
                logs.update({"val_" + k: v for k, v in val_logs.items()})
            bar.update(steps, list(logs.items()), finalize=True)
            for cb in cbs:
                cb.on_epoch_end(epoch, logs)
            training_logs = logs
            if self.stop_training:
                break
        for cb in cbs:  # as Keras 3: the last epoch's logs (None if no epoch ran)
            cb.on_train_end(training_logs)
        return history

    def _logs(self, loss: float, correct: float, prefix: str = "") -> dict:
        logs = {}
        if self._metric is not None:
            logs[prefix + self._metric.name] = float(correct)
        logs[prefix + "loss"] = float(loss)
        return logs

    def _evaluate_arrays(self, xs: np.ndarray, ys: np.ndarray) -> tuple:
        net = self._core_network()
        _, loss_sum, correct_sum = net.predict(xs, PREDICT_ROWS, ys)
        return loss_sum / len(xs), correct_sum / len(xs)

    def _evaluate_with_callbacks(self, xs: np.ndarray, ys: np.ndarray, batch_size: int, cbs: list) -> dict:
        """The logs of ``(xs, ys)``, calling the callbacks' test hooks as Keras' ``evaluate`` does.

        Batch by batch (``on_test_batch_begin/end`` with the running means) only
        for a callback that defines those hooks; otherwise in one pass in C.
        """
        for cb in cbs:
            cb.on_test_begin()
        per_batch = [cb for cb in cbs if cb._needs_test_batches]
        if per_batch and len(xs):
            net = self._core_network()
            loss_sum = correct_sum = 0.0
            for step, start in enumerate(range(0, len(xs), batch_size)):
                for cb in per_batch:
                    cb.on_test_batch_begin(step)
                stop = min(start + batch_size, len(xs))
                _, ls, cs = net.predict(xs[start:stop], PREDICT_ROWS, ys[start:stop])
                loss_sum, correct_sum = loss_sum + ls, correct_sum + cs
                logs = self._logs(loss_sum / stop, correct_sum / stop)
                for cb in per_batch:
                    cb.on_test_batch_end(step, dict(logs))
        else:
            logs = self._logs(*self._evaluate_arrays(xs, ys))
        for cb in cbs:
            cb.on_test_end(dict(logs))
        return logs

    # ---- inference -----------------------------------------------------------
    def evaluate(self, x=None, y=None, batch_size: Optional[int] = None, verbose="auto",
                 return_dict: bool = False, **kwargs):
        """Loss and accuracy on ``(x, y)``: ``[loss, accuracy]``, or the loss alone without metrics."""
        kwargs.pop("steps", None)
        callbacks = kwargs.pop("callbacks", None)
        if kwargs:
            raise TypeError(f"evaluate: unsupported argument(s) {sorted(kwargs)}")
        self._check_compiled("evaluate")
        batch_size, verbose = _batch_size(batch_size), _verbose(verbose)
        xs = self._prepare_x(x)
        ys = self._prepare_y(y, len(xs))
        steps = -(-len(xs) // batch_size)
        cbs = self._own_callbacks(callbacks, {"verbose": verbose, "epochs": 1, "steps": steps})
        bar = Progbar(steps, verbose=verbose)
        logs = self._evaluate_with_callbacks(xs, ys, batch_size, cbs)
        bar.update(bar.target, list(logs.items()), finalize=True)
        if return_dict:
            return logs
        return [logs["loss"], logs[self._metric.name]] if self._metric is not None else logs["loss"]

    def predict(self, x, batch_size: Optional[int] = None, verbose="auto", **kwargs) -> np.ndarray:
        """The last layer's outputs (e.g. class probabilities), float32 of shape (samples, units)."""
        kwargs.pop("steps", None)
        callbacks = kwargs.pop("callbacks", None)
        if kwargs:
            raise TypeError(f"predict: unsupported argument(s) {sorted(kwargs)}")
        batch_size, verbose = _batch_size(batch_size), _verbose(verbose)
        xs = self._prepare_x(x)
        steps = -(-len(xs) // batch_size)
        cbs = self._own_callbacks(callbacks, {"verbose": verbose, "epochs": 1, "steps": steps})
        bar = Progbar(steps, verbose=verbose)
        net = self._inference_network()
        for cb in cbs:
            cb.on_predict_begin()
        per_batch = [cb for cb in cbs if cb._needs_predict_batches]
        if per_batch:  # batch by batch, each batch's outputs in the logs as Keras gives them
            out = np.empty((len(xs), net.n_out), np.float32)
            for step, start in enumerate(range(0, len(xs), batch_size)):
                for cb in per_batch:
                    cb.on_predict_batch_begin(step)
                stop = min(start + batch_size, len(xs))
                out[start:stop] = net.predict(xs[start:stop], PREDICT_ROWS)
                for cb in per_batch:
                    cb.on_predict_batch_end(step, {"outputs": out[start:stop]})
        else:
            out = net.predict(xs, PREDICT_ROWS)
        for cb in cbs:
            cb.on_predict_end()
        bar.update(bar.target, finalize=True)
        return out

    def _own_callbacks(self, callbacks, params: dict) -> list:
        """``fit``'s, ``evaluate``'s or ``predict``'s callbacks, checked, given the model and ``params``, as Keras does."""
        if callbacks is None:
            return []
        if isinstance(callbacks, callbacks_module.Callback) or not hasattr(callbacks, "__iter__"):
            raise TypeError(f"Invalid argument `callbacks`: expected a list of callbacks, "
                            f"received {type(callbacks).__name__}")
        cbs = list(callbacks)
        for cb in cbs:
            if not isinstance(cb, callbacks_module.Callback):
                raise TypeError(f"Invalid callback: expected a cdnn.callbacks.Callback, received {type(cb).__name__}")
            cb.set_model(self)
            cb.set_params(params)
        return cbs

    def __call__(self, x) -> np.ndarray:
        """``model(x)``: predictions without a progress bar."""
        return self.predict(x, verbose=0)

    def _inference_network(self):
        stack = self._dense_stack()
        if self.compiled and self.loss is not None:
            return self._core_network()
        layers = [{"W": s["layer"].kernel, "b": s["layer"].bias, "activation": s["layer"].activation.__name__}
                  for s in stack]
        return _core.Network(layers, "mean_squared_error", False, None, {"name": "sgd"})

    # ---- weights and files -------------------------------------------------------
    def get_weights(self) -> list[np.ndarray]:
        """Copies of the weights, in Keras' order: kernel then bias for each Dense layer."""
        return [w.copy() for w in self.weights]

    def set_weights(self, weights: Sequence) -> None:
        """Overwrite the weights in place from arrays of the same shapes (cast to float32)."""
        own = self.weights
        if not self.built:
            raise ValueError(f"Model {self.name!r} has no weights yet: build it (give an input shape or call fit) "
                             f"before set_weights")
        if isinstance(weights, (str, bytes, np.ndarray)) or not hasattr(weights, "__iter__"):
            raise TypeError(f"Invalid argument `weights` of set_weights: expected a list of {len(own)} arrays "
                            f"(kernel and bias per Dense layer), received {type(weights).__name__}")
        weights = list(weights)
        if len(weights) != len(own):
            raise ValueError(f"set_weights: expected a list of {len(own)} arrays for model {self.name!r}, "
                             f"received {len(weights)}")
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

    def export(self, filepath, format: str = "tf_saved_model", verbose=None, input_signature=None, **kwargs) -> None:
        """Write the inference graph for other runtimes: ``format="onnx"`` (needs the ``onnx`` package).

        Keras' other formats (TensorFlow SavedModel, LiteRT, OpenVINO) are refused: cdnn has no
        TensorFlow to write them with.
        """
        if format != "onnx":
            raise ValueError(f"Invalid value for argument `format`: cdnn exports format='onnx', received "
                             f"format={format!r} (Keras' default, 'tf_saved_model', needs TensorFlow)")
        from cdnn.export import export_onnx

        opset = kwargs.pop("opset_version", None)
        if kwargs:
            raise TypeError(f"export: unsupported argument(s) {sorted(kwargs)}")
        export_onnx(self, filepath, verbose=verbose, input_signature=input_signature, opset_version=opset)

    def to_json(self, **kwargs) -> str:
        """The architecture as Keras 3 serializes it (``keras.models.model_from_json`` rebuilds it)."""
        return saving.model_to_json(self, **kwargs)

    def get_config(self) -> dict:
        """The architecture as plain data."""
        return {"name": self.name,
                "input_shape": list(self._input_shape) if self._input_shape is not None else None,
                "layers": [{"class_name": type(l).__name__, "config": l.get_config()} for l in self._layers]}

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
                comp = {"optimizer": self.optimizer.get_config(),
                        "loss": self.loss.get_config() if self.loss is not None else None,
                        "metric": self._metric.get_config() if self._metric is not None else None}
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
        if "file" in state:
            import os
            import tempfile

            # the loader reads files: a private temporary one (load_model never unpickles anything)
            with tempfile.TemporaryDirectory(prefix="cdnn-") as tmp:
                path = os.path.join(tmp, "model.npz")
                with open(path, "wb") as f:
                    f.write(state["file"])
                model = _saving.load_model(path)
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
            self.compile(optimizer=optimizers_module.get(comp["optimizer"]),
                         loss=losses_module.get(comp["loss"]) if comp.get("loss") else None,
                         metrics=[metrics_module.get(comp["metric"])] if comp.get("metric") else None)

    def __repr__(self) -> str:
        return f"<Sequential name={self.name!r}, built={self.built}>"


def load_model(filepath, compile: bool = True) -> Sequential:
    """Read a model written by :meth:`Sequential.save`. Never unpickles or runs anything from the file."""
    return saving.load_model(filepath, compile=compile)
