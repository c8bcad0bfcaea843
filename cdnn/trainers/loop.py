"""The epoch loop of every model's ``fit``: epochs of mini-batches trained in C, callbacks and the
progress bar between runs; and the checks and validation schedule ``fit`` takes.

:func:`run_epochs` is given the core network (the Dense chain's ``_core.Network`` with
:class:`ChainRuns`, or a ``_core.Graph`` with :class:`GraphRuns`), an epoch feeder and the callbacks,
and calls ``train_run`` for runs of batches (about ten a second, or one batch at a time when a
callback wants every batch). :func:`fit_graph`, :func:`evaluate_graph`, :func:`train_graph_batch` and
:func:`test_graph_batch` are the graph models' ``fit``, ``evaluate``, ``train_on_batch`` and
``test_on_batch``: they prepare inputs, labels and sample weights per input and per output, and
:class:`GraphLogs` turns the core's sums and the outputs' metrics into Keras 3's logs (``loss``,
``<output>_loss``, ``<output>_<metric>``, sorted).
"""

from __future__ import annotations

import math
import time
import warnings
from typing import Callable, Optional

import numpy as np

from cdnn import _core, _io_utils, _random
from cdnn import callbacks as callbacks_module
from cdnn import metrics as metrics_module
from cdnn._errors import invalid
from cdnn._progbar import Progbar, epoch_header
from cdnn.trainers.compile_utils import flatten_metrics_in_order, metrics_logs
from cdnn.trainers.epoch_iterator import (
    ArrayEpochs,
    BatchEpochs,
    batches_of,
    check_batch_source_args,
    is_batch_source,
    refuse_sample_weight_arg,
)
from cdnn.trainers.sample_weights import as_sample_weights, class_weights_to_sample_weights
from cdnn.trainers.thread_chooser import _ThreadChooser

__all__ = [
    "check_fit_args",
    "check_validation_freq",
    "should_eval",
    "ChainRuns",
    "GraphRuns",
    "run_epochs",
    "fit_graph",
    "evaluate_graph",
    "predict_graph",
    "train_graph_batch",
    "test_graph_batch",
]

#: rows per C inference batch (results do not depend on it)
PREDICT_ROWS = 512


def check_validation_freq(freq) -> None:
    """Refuse a ``validation_freq`` that is neither a positive integer nor a list of epochs (Keras' words)."""
    if isinstance(freq, bool) or not (
        isinstance(freq, (int, np.integer)) and freq >= 1 or isinstance(freq, (list, tuple))
    ):
        raise ValueError(
            f"Expected `validation_freq` to be a list or int. Received: validation_freq={freq!r} of the "
            f"type {type(freq)}."
        )


def should_eval(epoch: int, freq) -> bool:
    """Keras' rule: validate after epoch ``epoch + 1`` if it is a multiple of ``freq`` (or listed in it)."""
    return (epoch + 1) % freq == 0 if isinstance(freq, (int, np.integer)) else (epoch + 1) in freq


def check_fit_args(epochs, validation_split, initial_epoch, steps_per_epoch, validation_steps, validation_freq) -> None:
    """Refuse, before anything is prepared, ``fit`` arguments of the wrong kind (Keras' checks and cdnn's)."""
    if isinstance(epochs, bool) or not isinstance(epochs, (int, np.integer)) or epochs < 0:
        raise invalid("epochs", epochs, "a non-negative integer")
    if (
        isinstance(validation_split, (bool, np.bool_))
        or not isinstance(validation_split, (int, float, np.integer, np.floating))
        or not 0 <= validation_split < 1
    ):
        raise invalid("validation_split", validation_split, "a number in [0, 1)")
    if isinstance(initial_epoch, bool) or not isinstance(initial_epoch, (int, np.integer)) or initial_epoch < 0:
        raise invalid("initial_epoch", initial_epoch, "a non-negative integer")
    for name, value in (("steps_per_epoch", steps_per_epoch), ("validation_steps", validation_steps)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1):
            raise invalid(name, value, "a positive integer or None")
    check_validation_freq(validation_freq)


# ---- graph models ----------------------------------------------------------------------------------


class GraphLogs:
    """A graph model's running loss sums and metrics, per output, turned into Keras 3's logs.

    ``loss`` (the loss-weighted total), ``<output>_loss`` for each output with a loss when several
    have one, and every output's metrics and weighted metrics under Keras' names (sorted).
    """

    def __init__(self, specs: list) -> None:
        self.specs = specs
        self.groups = [s["metrics"] for s in specs] + [s["weighted"] for s in specs]
        self.tracker = metrics_module.Mean(name="loss")
        self.with_loss = [o for o, s in enumerate(specs) if s["loss"] is not None]
        self.reset()

    @property
    def wants_outputs(self) -> list:
        """Per output: whether its metrics need the outputs (all but the accuracy the core counts)."""
        return [
            (s["metrics"] is not None and s["metrics"].needs_outputs) or s["weighted"] is not None for s in self.specs
        ]

    def reset(self) -> None:
        self.loss, self.rows = 0.0, 0
        self.out_loss = np.zeros(len(self.specs))
        self.correct = np.zeros(len(self.specs))
        for cm in self.groups:
            if cm is not None:
                cm.reset_state()

    def add_sums(self, loss: float, out_loss, correct, rows: int) -> None:
        """The core's sums over ``rows`` more samples: total loss, per-output losses and accuracies."""
        self.loss += float(loss)
        self.out_loss += np.asarray(out_loss, np.float64)
        self.correct += np.asarray(correct, np.float64)
        self.rows += int(rows)

    def update_outputs(self, ys: list, outs: list, rows, batch_size: Optional[int], sws) -> None:
        """The metrics the core does not count, from the samples ``rows`` of the labels and sample weights
        (``rows`` None: all of them) and the outputs ``outs`` (one per output, or None)."""
        for o, s in enumerate(self.specs):
            if outs[o] is None:
                continue
            y = ys[o] if rows is None else ys[o][rows]
            sw = None if sws is None or sws[o] is None else (sws[o] if rows is None else sws[o][rows])
            out = outs[o][: len(y)]
            if s["metrics"] is not None and s["metrics"].needs_outputs:
                s["metrics"].update_outputs(y, out, batch_size)
            if s["weighted"] is not None:
                s["weighted"].update_outputs(y, out, batch_size, sw)

    def logs(self, prefix: str = "") -> dict:
        seen = max(self.rows, 1)
        self.tracker.reset_state()
        self.tracker._add_sums(self.loss, seen)
        extra = {}
        if len(self.with_loss) > 1:
            extra = {f"{self.specs[o]['name']}_loss": self.out_loss[o] / seen for o in self.with_loss}
        for o, s in enumerate(self.specs):
            cm = s["metrics"]
            if cm is not None and cm.core_index is not None:
                cm.metrics[cm.core_index].reset_state()
                cm.add_core_counts(self.correct[o], seen)
        return metrics_logs(self.tracker, self.groups, prefix, extra)

    def ordered(self, logs: dict):
        """``evaluate``'s list, as Keras 3 orders it."""
        names = tuple(f"{self.specs[o]['name']}_loss" for o in self.with_loss) if len(self.with_loss) > 1 else ()
        return flatten_metrics_in_order(logs, self.groups, names)


def _output_buffers(logs: GraphLogs, specs: list, rows: int, have: Optional[list]) -> Optional[list]:
    """Per output, a float32 buffer of at least ``rows`` samples for the outputs its metrics read (or None)."""
    wants = logs.wants_outputs
    if not any(wants):
        return None
    sizes = [int(math.prod(s["shape"])) for s in specs]
    if have is not None and all(h is None or len(h) >= rows for h in have):
        return have
    return [np.empty((rows, size), np.float32) if w else None for w, size in zip(wants, sizes)]


class GraphData:
    """A graph model's data preparation as the epoch feeders call it (``_prepare_x``, ``_prepare_y``,
    ``_prepare_sample_weight``, ``_class_sample_weight``)."""

    def __init__(self, model, graph, specs: list) -> None:
        self.model, self.graph, self.specs = model, graph, specs

    def _prepare_x(self, x, name: str = "x", check_float32: bool = True) -> list:
        return self.model._prepare_inputs(self.graph, x, name, check_float32=check_float32)

    def _prepare_y(self, y, n: int, name: str = "y") -> list:
        return self.model._prepare_targets(self.specs, y, n, name)

    def _prepare_sample_weight(self, sample_weight, n: int, name: str = "sample_weight") -> Optional[list]:
        return per_output_sample_weights(self.specs, sample_weight, n, name)

    def _class_sample_weight(self, class_weight, ys: list) -> list:
        return graph_class_weights(self.specs, class_weight, ys)


class ChainRuns:
    """The Dense chain's side of :func:`run_epochs`: its core ``Network``'s runs, the loss and the
    core-counted accuracy summed per batch, and the metrics that read the outputs."""

    def __init__(self, model, steps: Optional[int]) -> None:
        self.model = model
        self.data = model  # what the feeder prepares batches with
        self.cm, self.wcm = model._compile_metrics, model._weighted_metrics
        # each batch's outputs leave C only for metrics the core does not count itself
        self.want_outputs = self.cm is not None and self.cm.needs_outputs or self.wcm is not None
        self.run_out: Optional[np.ndarray] = None
        self.outputs: Optional[np.ndarray] = None
        self.batch_correct = np.zeros(steps or 64)
        self.seen = 0

    def stateful(self) -> list:
        return self.model._log_names()

    def reset(self) -> None:
        self.model._loss_tracker.reset_state()
        for m in (self.cm, self.wcm):
            if m is not None:
                m.reset_state()
        self.seen = 0

    def grow(self, size: int) -> None:
        self.batch_correct = np.resize(self.batch_correct, size)

    def train(self, net, run, k: int, step0, seed: int, batch_loss, done: int, nt: int, stop_nonfinite: bool) -> int:
        size = k * run.batch_size * net.n_out
        if self.want_outputs and (self.run_out is None or self.run_out.size < size):
            self.run_out = np.empty(size, np.float32)
        self.outputs = self.run_out[:size].reshape(-1, net.n_out) if self.run_out is not None else None
        return net.train_run(
            run.xs,
            run.ys,
            run.perm,
            run.first,
            k,
            run.batch_size,
            step0,
            seed,
            batch_loss[done:],
            self.batch_correct[done:],
            nt,
            stop_nonfinite,
            run.sw,
            self.outputs if self.want_outputs else None,
        )

    def after_run(self, run, rows, done: int, k: int, batch_loss) -> dict:
        if self.want_outputs and self.outputs is not None:
            for m in (self.cm, self.wcm):
                if m is not None:
                    m.update_outputs(
                        run.ys[rows],
                        self.outputs[: len(rows)],
                        run.batch_size,
                        None if run.sw is None or m is self.cm else run.sw[rows],
                    )
        self.seen += len(rows)
        return self.epoch_logs(batch_loss, done + k)

    def epoch_logs(self, batch_loss, done: int) -> dict:
        return self.model._run_logs(batch_loss[:done].sum(), self.batch_correct[:done].sum(), self.seen)


class GraphRuns:
    """A graph's side of :func:`run_epochs`: its core ``Graph``'s runs and :class:`GraphLogs` (the losses
    and accuracies per output, the metrics that read the outputs)."""

    def __init__(self, model, logs_state: GraphLogs, steps: Optional[int]) -> None:
        self.state = logs_state
        self.specs = logs_state.specs
        self.data = GraphData(model, model._graph_model(), self.specs)
        n_out = len(self.specs)
        self.batch_correct, self.output_loss = np.zeros((steps or 64, n_out)), np.zeros((steps or 64, n_out))
        self.outs: Optional[list] = None
        self._stateful = list(logs_state.logs())

    def stateful(self) -> list:
        return self._stateful

    def reset(self) -> None:
        self.state.reset()

    def grow(self, size: int) -> None:
        n_out = len(self.specs)
        self.batch_correct = np.resize(self.batch_correct, (size, n_out))
        self.output_loss = np.resize(self.output_loss, (size, n_out))

    def train(self, net, run, k: int, step0, seed: int, batch_loss, done: int, nt: int, stop_nonfinite: bool) -> int:
        self.outs = _output_buffers(self.state, self.specs, k * run.batch_size, self.outs)
        return net.train_run(
            run.xs,
            run.ys,
            run.perm,
            run.first,
            k,
            run.batch_size,
            step0,
            seed,
            batch_loss[done:],
            self.batch_correct[done:],
            nt,
            stop_nonfinite,
            output_loss=self.output_loss[done:],
            sample_weight=run.sw,
            outputs=self.outs,
        )

    def after_run(self, run, rows, done: int, k: int, batch_loss) -> dict:
        st = self.state  # the epoch's sums from its batches, however its runs were cut
        st.loss, st.out_loss = float(batch_loss[: done + k].sum()), self.output_loss[: done + k].sum(axis=0)
        st.correct, st.rows = self.batch_correct[: done + k].sum(axis=0), st.rows + len(rows)
        if self.outs is not None:
            self.state.update_outputs(run.ys, self.outs, rows, run.batch_size, run.sw)
        return self.state.logs()

    def epoch_logs(self, batch_loss, done: int) -> dict:
        return self.state.logs()


def run_epochs(
    model,
    net,
    feeder,
    runs,
    epochs: int,
    initial_epoch: int,
    verbose: int,
    cbs: list,
    user_callbacks: list,
    history,
    chooser: _ThreadChooser,
    validate: Optional[Callable],
    validation_freq,
) -> Optional[dict]:
    """Train ``epochs - initial_epoch`` epochs of the core ``net`` (the chain's ``Network`` with
    :class:`ChainRuns`, or a ``Graph`` with :class:`GraphRuns`); returns the last epoch's logs.

    ``feeder`` gives the runs of batches (:class:`ArrayEpochs`, shuffled per pass, or
    :class:`BatchEpochs` of a generator / PyDataset; ``steps_per_epoch``); ``validate()`` gives the
    ``val_`` logs, after the epochs ``validation_freq`` selects. As Keras 3's trainer: a schedule's rate
    at every step, ``BackupAndRestore``'s initial epoch, ``stop_training`` read after every run, the EMA
    weights swapped in before ``on_train_end``.
    """
    optimizer = model.optimizer
    steps = feeder.steps
    per_batch = [cb for cb in cbs if cb._needs_batches]
    # the core stops a run after a batch whose loss is not finite, so that such a callback
    # stops fit right after that batch's update, as in Keras
    stop_nonfinite = any(cb._stops_on_nonfinite_loss for cb in cbs)
    batch_loss = np.zeros(steps or 64)
    rng = _random.fit_generator()  # this fit's own: other threads' draws do not change its results
    model._initial_epoch = None
    history.on_train_begin({})
    for cb in user_callbacks:
        cb.on_train_begin({})
    if model._initial_epoch is not None:  # as Keras: BackupAndRestore resumes where it stopped
        initial_epoch = model._initial_epoch
    stateful = runs.stateful()

    training_logs = None
    try:
        for epoch in range(initial_epoch, epochs):
            for cb in cbs:
                cb.on_epoch_begin(epoch, {})
            if verbose and epochs > 1:
                _io_utils.print_msg(epoch_header(epoch + 1, epochs))
            runs.reset()
            bar = Progbar(steps, verbose=verbose, stateful_metrics=stateful)
            seed = feeder.begin_epoch(rng)
            done = 0
            while (steps is None or done < steps) and not model.stop_training:
                nt = chooser.pick()
                # no batch left in the data (before steps_per_epoch): next_run warns as Keras and ends the epoch
                k = 1 if per_batch else chooser.run_batches(max(feeder.left(done), 1))
                run = feeder.next_run(k, runs.data)
                if run is None:
                    break
                k = run.k
                if done + k > len(batch_loss):  # an epoch of unknown length: room for twice as many batches
                    batch_loss = np.resize(batch_loss, 2 * (done + k))
                    runs.grow(2 * (done + k))
                for cb in per_batch:
                    cb.on_train_batch_begin(done, {})
                # a schedule's rate per step of the run, as Keras computes it at each optimizer step
                net.set_optimizer(optimizer._run_hyperparameters(int(optimizer.iterations), k))
                t0 = time.perf_counter()
                steps_before = net.steps_done
                try:
                    k = runs.train(net, run, k, optimizer.iterations, seed, batch_loss, done, nt, stop_nonfinite)
                except _core.NonFiniteInputError as e:
                    raise ValueError(
                        f"Invalid values in `x`: row {e.row} contains NaN or infinity; training stopped "
                        f"before batch {e.batch + 1} of epoch {epoch + 1} (the batches before it "
                        f"are trained)"
                    ) from None
                finally:
                    # counted by the core itself: exact even when Ctrl-C lands just after the run
                    optimizer.iterations += net.steps_done - steps_before
                elapsed = time.perf_counter() - t0
                warm_up = not chooser.warm  # this run also paid for the workspace and starting the threads
                chooser.record(nt, elapsed, k)
                logs = runs.after_run(run, run.rows(k), done, k, batch_loss)
                feeder.advance(k)
                done += k
                for cb in cbs:
                    cb._on_run_end(done - k, batch_loss[done - k : done] / run.batch_rows(k))
                for cb in per_batch:
                    cb.on_train_batch_end(done - 1, dict(logs))
                if steps is None or done < steps:
                    if warm_up:
                        bar.warm_up(done)
                    else:
                        bar.update(done, list(logs.items()))
            feeder.end_epoch()
            if done == 0 and isinstance(feeder, BatchEpochs) and not model.stop_training:
                if epoch == initial_epoch:
                    raise ValueError("fit: the generator or PyDataset `x` yielded no batch")
                warnings.warn(
                    "Your input ran out of data; interrupting training. Make sure that your dataset or "
                    "generator can generate at least `steps_per_epoch * epochs` batches. You may need to "
                    "use the `.repeat()` function when building your dataset.",
                    stacklevel=3,
                )
                break
            logs = runs.epoch_logs(batch_loss, done)
            # as Keras: an epoch cut short by `stop_training` is still validated and its bar finalized
            if validate is not None and should_eval(epoch, validation_freq):
                logs.update({"val_" + k: v for k, v in validate().items()})
            bar.update(steps if steps is not None else done, list(logs.items()), finalize=True)
            for cb in cbs:
                cb.on_epoch_end(epoch, logs)
            training_logs = logs
            if model.stop_training:
                break
    finally:
        if epochs > initial_epoch:  # as Keras 3: the EMA weights into the model, also when fit is interrupted
            optimizer.finalize_variable_values(model.trainable_weights)
    for cb in cbs:  # as Keras 3: the last epoch's logs ({} if no epoch ran)
        cb.on_train_end(training_logs if training_logs is not None else {})
    return training_logs


def _evaluate_into(model, logs_state: GraphLogs, xs: list, ys: list, sws, batch_size: int) -> dict:
    """Add ``(xs, ys)`` (sample weights ``sws``) to ``logs_state``, in one inference pass in C; the logs."""
    net = model._core_graph(training=False)
    activity = model._graph_activity(net)
    n_out = len(net.output_nodes)
    nodes = list(net.output_nodes) + [i for i, _ in activity] if activity else None
    # calls in training mode, ignore_class (a mean over each batch's valid rows): Keras' batches
    ignore = any(getattr(s["loss"], "ignore_class", None) is not None for s in logs_state.specs)
    rows = batch_size if net.live or ignore else PREDICT_ROWS
    values, loss_sums, correct_sums = net.predict(xs, rows, ys, nodes=nodes, sample_weight=sws)
    outs = values[:n_out]
    specs = logs_state.specs
    total = sum(s["weight"] * l for s, l in zip(specs, loss_sums) if s["loss"] is not None)
    # Keras adds the weight regularization penalties (model.losses) to every batch's loss
    total += model._penalty() * len(xs[0])
    # Keras adds each activity penalty divided by the batch size to a batch's mean loss, unweighted:
    # over the batches, the penalty of every sample once
    for (_, r), v in zip(activity, values[n_out:]):
        a = np.asarray(v, np.float64)
        total += r["l1"] * np.abs(a).sum() + r["l2"] * np.square(a).sum()
    logs_state.add_sums(total, loss_sums, correct_sums, len(xs[0]))
    wants = logs_state.wants_outputs
    if any(wants):
        flat = [o.reshape(len(o), -1) if w else None for o, w in zip(outs, wants)]
        logs_state.update_outputs(ys, flat, None, batch_size, sws)
    return logs_state.logs()


def _evaluate_with_callbacks(
    model, logs_state: GraphLogs, data, batch_size: int, cbs: list, steps: Optional[int] = None, name: str = "x"
) -> dict:
    """The logs of ``data`` (prepared arrays ``(xs, ys, sws)``, or a generator / PyDataset of batches, of
    which ``steps``), calling the callbacks' test hooks as Keras' ``evaluate`` does.

    Arrays go batch by batch (``on_test_batch_begin/end`` with the running means, ``model.stop_evaluating``
    read after each batch) only for a callback that defines those hooks, or when ``on_test_begin`` set
    ``stop_evaluating``; otherwise in one pass in C.
    """
    model.stop_evaluating = False
    for cb in cbs:
        cb.on_test_begin({})
    logs_state.reset()
    per_batch = [cb for cb in cbs if cb._needs_test_batches]
    source = is_batch_source(data)
    if source:
        graph = model._inference_model()
        batches = batches_of(data, steps, name, GraphData(model, graph, logs_state.specs))
    elif (per_batch or model.stop_evaluating) and len(data[0][0]):
        n = len(data[0][0])
        batches = (_rows_of(data, slice(start, start + batch_size)) for start in range(0, n, batch_size))
    else:
        batches, per_batch = iter([data]), []
    logs = None
    for step, (xs, ys, sws) in enumerate(batches):
        for cb in per_batch:
            cb.on_test_batch_begin(step, {})
        logs = _evaluate_into(model, logs_state, xs, ys, sws, len(xs[0]) if source else batch_size)
        for cb in per_batch:
            cb.on_test_batch_end(step, dict(logs))
        if model.stop_evaluating:
            break
    if logs is None:
        raise ValueError(f"evaluate: the generator or PyDataset `{name}` yielded no batch")
    for cb in cbs:
        cb.on_test_end(dict(logs))
    return logs


def predict_graph(model, x, batch_size, verbose, steps, callbacks, call: Optional[str] = None):
    """``Model.predict`` for a graph: ``x`` arrays (list / dict per input) or a generator / PyDataset of
    batches (``x`` or ``(x, ...)``), ``steps`` batches at most; the outputs structured as the model's.

    Callbacks get Keras' predict hooks (``on_predict_batch_end`` with ``{"outputs": ...}``, the batch's
    outputs structured as the model's); ``model.stop_predicting`` is read after each batch.
    ``call``: the core graph of ``model(x, training=...)`` (``Model._core_graph``), ``x`` one batch.
    """
    from cdnn.models.model import _batch_size, _verbose, lean_input

    batch_size, verbose = _batch_size(batch_size), _verbose(verbose)
    if steps is not None and (isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1):
        raise invalid("steps", steps, "a positive integer or None")
    source = is_batch_source(x)
    if source and not model.built:
        raise ValueError(
            f"Model '{model.name}' has not been built yet: a generator or PyDataset does not give it its input "
            f"shapes before predicting; give it an Input or call model.build(input_shape) first"
        )
    if not source and not hasattr(model, "outputs"):
        model._set_inputs_from_data(x)
    graph = model._inference_model()
    net = model._core_graph(training=False, call=call)
    shapes = [tuple(t.shape[1:]) for t in graph.outputs]

    def run(xs: list) -> list:
        # calls in training mode run in Keras' batches: model(x)'s is all of x
        values = net.predict(xs, PREDICT_ROWS if not net.live else (len(xs[0]) or 1) if call else batch_size)
        return [v.reshape(len(xs[0]), *s) for v, s in zip(values, shapes)]

    xs: list = []
    if source:
        total = steps or getattr(x, "num_batches", None)
        batches = batches_of(x, steps, "x", GraphData(model, graph, []), with_labels=False)
    else:
        lean = lean_input(x, tuple(graph.inputs[0].shape[1:])) if len(graph.inputs) == 1 else None
        xs = [lean] if lean is not None else model._prepare_inputs(graph, x)
        if steps is not None:
            xs = [a[: steps * batch_size] for a in xs]
        n = len(xs[0])
        total = -(-n // batch_size)
        batches = ([a[start : start + batch_size] for a in xs] for start in range(0, n, batch_size))
    cbs = model._own_callbacks(callbacks, {"verbose": verbose, "epochs": 1, "steps": total})
    bar = Progbar(total, verbose=verbose)
    model.stop_predicting = False
    for cb in cbs:
        cb.on_predict_begin({})
    per_batch = [cb for cb in cbs if cb._needs_predict_batches]
    parts: list = []
    if source or per_batch or model.stop_predicting:
        for step, xb in enumerate(batches):
            for cb in per_batch:
                cb.on_predict_batch_begin(step, {})
            parts.append(run(xb))
            for cb in per_batch:
                cb.on_predict_batch_end(step, {"outputs": model._structure_outputs(graph, parts[-1])})
            if source and (total is None or step + 1 < total):
                bar.update(step + 1)
            if model.stop_predicting:
                break
        if not parts and source:
            raise ValueError("predict: the generator or PyDataset `x` yielded no batch")
    results = [np.concatenate(p) for p in zip(*parts)] if parts else run(xs)
    for cb in cbs:
        cb.on_predict_end({})
    bar.update(total if total is not None else len(parts), finalize=True)
    return model._structure_outputs(graph, results)


def _prepare_data(model, graph, specs, x, y, sample_weight, names=("x", "y", "sample_weight"), check_float32=True):
    xs = model._prepare_inputs(graph, x, names[0], check_float32=check_float32)
    n = len(xs[0])
    ys = model._prepare_targets(specs, y, n, names[1])
    return xs, ys, per_output_sample_weights(specs, sample_weight, n, names[2])


def fit_graph(
    model,
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
    kwargs: dict,
):
    """``Model.fit`` for a graph: inputs/labels as arrays, lists or dicts; history keys as Keras 3 names them."""
    from cdnn.models.model import _batch_size, _verbose, all_finite

    class_weight = kwargs.pop("class_weight", None)
    sample_weight = kwargs.pop("sample_weight", None)
    steps_per_epoch = kwargs.pop("steps_per_epoch", None)
    validation_steps = kwargs.pop("validation_steps", None)
    validation_batch_size = kwargs.pop("validation_batch_size", None)
    validation_freq = kwargs.pop("validation_freq", 1)
    if kwargs:
        raise TypeError(f"fit: unsupported argument(s) {sorted(kwargs)}")
    model._check_compiled("fit")
    batch_size, verbose = _batch_size(batch_size), _verbose(verbose)
    check_fit_args(epochs, validation_split, initial_epoch, steps_per_epoch, validation_steps, validation_freq)
    val_batch = _batch_size(validation_batch_size) if validation_batch_size is not None else batch_size
    if sample_weight is not None and class_weight is not None:
        raise ValueError("You cannot `class_weight` and `sample_weight` at the same time.")  # Keras' words
    source = is_batch_source(x)
    if source:
        check_batch_source_args(x, y, validation_split, sample_weight, class_weight)
    if source and not model.built:
        raise ValueError(
            f"Model '{model.name}' has not been built yet: a generator or PyDataset does not give it its input "
            f"shapes before training; give it an Input or call model.build(input_shape) first"
        )
    if not source and not hasattr(model, "_nodes") and model._input_struct is None:
        model._set_inputs_from_data(x)
    graph = model._graph_model()
    specs = model._output_specs(graph)
    if class_weight is not None:
        check_graph_class_weight(specs)
    xs = ys = sws = None
    n = 0
    if not source:
        # float32 training rows are checked for NaN and infinity by the core as it gathers each batch
        xs, ys, sws = _prepare_data(model, graph, specs, x, y, sample_weight, check_float32=False)
        n = len(xs[0])
    val = None
    if is_batch_source(validation_data):
        val = validation_data
    elif validation_data is not None:
        if not isinstance(validation_data, (tuple, list)) or len(validation_data) not in (2, 3):
            what = type(validation_data).__name__
            if isinstance(validation_data, (tuple, list)):
                what += f" of {len(validation_data)} item(s)"
            raise ValueError(
                f"Invalid value for argument `validation_data`: expected a tuple (x_val, y_val) "
                f"or (x_val, y_val, sample_weight), received {what}"
            )
        val = _prepare_data(
            model,
            graph,
            specs,
            validation_data[0],
            validation_data[1],
            validation_data[2] if len(validation_data) == 3 else None,
            ("validation_data[0]", "validation_data[1]", "validation_data[2]"),
        )
    elif validation_split and not source:
        split = int(math.floor(n * (1.0 - validation_split)))  # as Keras: train on the first part
        if split <= 0 or split >= n:
            raise ValueError(
                f"validation_split={validation_split} leaves no training or no validation samples out of {n}"
            )
        if not all(all_finite(a[split:]) for a in xs):
            raise ValueError("Invalid values in `x`: its validation split contains NaN or infinity")
        # as Keras: the sample weights are split with the data, class weights weigh the training part
        val = _rows_of((xs, ys, sws), slice(split, None))
        xs, ys, sws = _rows_of((xs, ys, sws), slice(None, split))
        n = split
    if isinstance(val, tuple) and validation_steps is not None:  # as Keras: the first validation_steps batches
        val = _rows_of(val, slice(None, validation_steps * val_batch))
    if class_weight is not None and not source:
        sws = graph_class_weights(specs, class_weight, ys)
    net = model._core_graph(training=True)
    if source:
        feeder = BatchEpochs(x, steps_per_epoch, "x", class_weight, shuffle)
    else:
        # a batch larger than the data is the whole data (and the C workspace is sized by the batch)
        feeder = ArrayEpochs(xs, ys, min(batch_size, n), shuffle, steps_per_epoch, sws)
    history = callbacks_module.History()
    user = list(callbacks or [])
    cbs = model._own_callbacks([*user, history], {"verbose": verbose, "epochs": epochs, "steps": feeder.steps})
    model.history = history
    model.stop_training = False
    key = (id(net), _core.get_num_threads(), feeder.batch_size if not source else None)
    if getattr(model, "_chooser_key", None) != key:
        model._chooser, model._chooser_key = _ThreadChooser(key[1]), key
    train_logs = GraphLogs(specs)
    val_logs = GraphLogs(specs)

    def validate():
        return _evaluate_with_callbacks(model, val_logs, val, val_batch, cbs, validation_steps, "validation_data")

    run_epochs(
        model,
        net,
        feeder,
        GraphRuns(model, train_logs, feeder.steps),
        epochs,
        int(initial_epoch),
        verbose,
        cbs,
        user,
        history,
        model._chooser,
        validate if val is not None else None,
        validation_freq,
    )
    model._batch_logs_state = None  # train_on_batch's running logs start again after a fit, as in Keras
    return history


def _rows_of(data: tuple, rows) -> tuple:
    xs, ys, sws = data
    return (
        [a[rows] for a in xs],
        [None if t is None else t[rows] for t in ys],
        None if sws is None else [None if w is None else w[rows] for w in sws],
    )


def per_output_sample_weights(specs: list, sample_weight, n: int, name: str = "sample_weight") -> Optional[list]:
    """``sample_weight`` per output (None where none), checked, as Keras 3 takes it: one array for a model of
    one output, or of several (the same weights for every output), or a list / dict by output name."""
    if sample_weight is None:
        return None
    names = [s["name"] for s in specs]
    if isinstance(sample_weight, dict):
        unknown = [k for k in sample_weight if k not in names]
        if unknown:
            raise ValueError(f"Invalid `{name}`: keys {unknown} are not output names; the outputs are {names}")
        items = [sample_weight.get(k) for k in names]
        labels = [f"{name}['{k}']" for k in names]
    elif isinstance(sample_weight, (list, tuple)) and len(specs) > 1:
        if len(sample_weight) != len(specs):
            raise ValueError(
                f"You should provide one `sample_weight` array per output in `y`: the model has "
                f"{len(specs)} outputs {names}, received a list of {len(sample_weight)}"
            )
        items, labels = list(sample_weight), [f"{name}[{o}]" for o in range(len(specs))]
    else:
        items, labels = [sample_weight] * len(specs), [name] * len(specs)
    out = [
        None if item is None or s["loss"] is None else as_sample_weights(item, n, label)
        for item, s, label in zip(items, specs, labels)
    ]
    return out if any(w is not None for w in out) else None


def check_graph_class_weight(specs: list) -> None:
    """Refuse ``class_weight`` for a model of several outputs (as Keras 3) or of an output of several axes."""
    if len(specs) != 1:
        raise ValueError("`class_weight` is only supported for Models with a single output.")  # Keras' words
    s = specs[0]
    if len(s["shape"]) != 1:
        raise ValueError(
            f"Invalid argument `class_weight`: the output has shape {(None, *s['shape'])}; cdnn weighs classes "
            f"of outputs of one axis per sample (pass `sample_weight`)"
        )


def graph_class_weights(specs: list, class_weight, ys: list) -> list:
    """``class_weight`` as per-output sample weights: a model of a single output only, as Keras 3."""
    check_graph_class_weight(specs)
    s = specs[0]
    return [
        class_weights_to_sample_weights(
            class_weight, ys[0], s["loss"].core_name, s["units"], getattr(s["loss"], "ignore_class", None)
        )
    ]


def evaluate_graph(model, x, y, batch_size, verbose, return_dict: bool, kwargs: dict):
    """``Model.evaluate`` for a graph: ``[loss, <output>_loss..., metrics...]`` as Keras 3 orders it, or a dict."""
    from cdnn.models.model import _batch_size, _verbose

    steps = kwargs.pop("steps", None)
    callbacks = kwargs.pop("callbacks", None)
    sample_weight = kwargs.pop("sample_weight", None)
    if kwargs:
        raise TypeError(f"evaluate: unsupported argument(s) {sorted(kwargs)}")
    model._check_compiled("evaluate")
    batch_size, verbose = _batch_size(batch_size), _verbose(verbose)
    if steps is not None and (isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1):
        raise invalid("steps", steps, "a positive integer or None")
    source = is_batch_source(x)
    if source:
        refuse_sample_weight_arg(x, sample_weight)
    if not hasattr(model, "_nodes") and model._input_struct is None and not source:
        model._set_inputs_from_data(x)
    graph = model._inference_model()
    specs = model._output_specs(graph)
    if source:
        data, total = x, steps or getattr(x, "num_batches", None)
    else:
        data = _prepare_data(model, graph, specs, x, y, sample_weight)
        if steps is not None:
            data = _rows_of(data, slice(None, steps * batch_size))
        total = -(-len(data[0][0]) // batch_size)
    cbs = model._own_callbacks(callbacks, {"verbose": verbose, "epochs": 1, "steps": total})
    bar = Progbar(total, verbose=verbose)
    state = GraphLogs(specs)
    logs = _evaluate_with_callbacks(model, state, data, batch_size, cbs, steps)
    bar.update(bar.target if bar.target is not None else 1, list(logs.items()), finalize=True)
    return logs if return_dict else state.ordered(logs)


def _batch_state(model, specs: list) -> GraphLogs:
    """Fresh logs for one ``train_on_batch``/``test_on_batch`` call: Keras 3 resets the metrics at each call."""
    model.reset_metrics()
    state = model._batch_logs_state = GraphLogs(specs)
    return state


def train_graph_batch(model, x, y, sample_weight, class_weight, return_dict: bool):
    """``Model.train_on_batch`` for a graph: one step on ``(x, y)``, the logs of this batch alone."""
    model._check_compiled("train_on_batch")
    if sample_weight is not None and class_weight is not None:
        raise ValueError("You cannot `class_weight` and `sample_weight` at the same time.")  # Keras' words
    if not hasattr(model, "_nodes") and model._input_struct is None:
        model._set_inputs_from_data(x)
    graph = model._graph_model()
    specs = model._output_specs(graph)
    xs, ys, sws = _prepare_data(model, graph, specs, x, y, sample_weight, check_float32=False)
    if class_weight is not None:
        sws = graph_class_weights(specs, class_weight, ys)
    n = len(xs[0])
    net = model._core_graph(training=True)
    state = _batch_state(model, specs)
    outs = _output_buffers(state, specs, n, None)
    loss, correct, out_loss = np.zeros(1), np.zeros((1, len(specs))), np.zeros((1, len(specs)))
    optimizer = model.optimizer
    net.set_optimizer(optimizer.hyperparameters())
    seed = int(_random.generator().integers(0, 2**63))
    before = net.steps_done
    try:
        net.train_run(
            xs,
            ys,
            np.arange(n, dtype=np.int32),
            0,
            1,
            n,
            optimizer.iterations,
            seed,
            loss,
            correct,
            0,
            False,
            output_loss=out_loss,
            sample_weight=sws,
            outputs=outs,
        )
    except _core.NonFiniteInputError as e:
        raise ValueError(
            f"Invalid values in `x`: row {e.row} contains NaN or infinity; the batch is not trained"
        ) from None
    finally:
        optimizer.iterations += net.steps_done - before
    state.add_sums(loss[0], out_loss[0], correct[0], n)
    if outs is not None:
        state.update_outputs(ys, outs, None, None, sws)
    logs = state.logs()
    return logs if return_dict else state.ordered(logs)


def test_graph_batch(model, x, y, sample_weight, return_dict: bool):
    """``Model.test_on_batch`` for a graph: the logs of the batch ``(x, y)`` alone."""
    model._check_compiled("test_on_batch")
    if not hasattr(model, "_nodes") and model._input_struct is None:
        model._set_inputs_from_data(x)
    graph = model._inference_model()
    specs = model._output_specs(graph)
    xs, ys, sws = _prepare_data(model, graph, specs, x, y, sample_weight)
    state = _batch_state(model, specs)
    logs = _evaluate_into(model, state, xs, ys, sws, len(xs[0]))
    return logs if return_dict else state.ordered(logs)
