"""The run loop: epochs of mini-batches trained in C, callbacks and the progress bar between runs.

:func:`run_epochs` is given a core network (``_core.Network`` or
``_core.Graph``), the prepared arrays and the callbacks -- never a model --
and calls ``train_run`` for runs of batches (about ten a second, or one
batch at a time when a callback wants every batch). :func:`fit_graph` and
:func:`evaluate_graph` are the graph models' ``fit`` and ``evaluate``: they
prepare inputs and labels per input and per output and turn the core's sums
into Keras 3's logs (``loss``, ``<output>_loss``, ``<output>_accuracy``, sorted).
"""

from __future__ import annotations

import math
import time
from typing import Callable, Optional

import numpy as np

from cdnn import _core, _io_utils, _random
from cdnn import callbacks as callbacks_module
from cdnn._errors import invalid
from cdnn._progbar import Progbar, epoch_header
from cdnn.trainers.thread_chooser import _ThreadChooser

__all__ = ["run_epochs", "fit_graph", "evaluate_graph"]

#: rows per C inference batch (results do not depend on it)
PREDICT_ROWS = 512


def run_epochs(
    net,
    xs,
    ys,
    n: int,
    batch_size: int,
    epochs: int,
    initial_epoch: int,
    verbose: int,
    shuffle: bool,
    cbs: list,
    user_callbacks: list,
    history,
    optimizer,
    chooser: _ThreadChooser,
    make_logs: Callable,
    validate: Optional[Callable],
    stopped: Callable[[], bool],
    n_outputs: Optional[int] = None,
    stateful: tuple = (),
) -> Optional[dict]:
    """Train ``epochs - initial_epoch`` epochs; returns the last epoch's logs (None if none ran).

    ``make_logs(loss_sum, correct_sums, output_loss_sums, seen)`` turns the
    core's sums into logs; ``validate()`` gives the ``val_`` logs (or None);
    ``stopped()`` reads the model's ``stop_training``. ``n_outputs`` is set for
    a graph, whose runs also report per-output correctness and losses.
    """
    steps = -(-n // batch_size)
    per_batch = [cb for cb in cbs if cb._needs_batches]
    # the core stops a run after a batch whose loss is not finite, so that such a callback
    # stops fit right after that batch's update, as in Keras
    stop_nonfinite = any(cb._stops_on_nonfinite_loss for cb in cbs)
    batch_loss = np.zeros(steps)
    if n_outputs is None:
        batch_correct, output_loss = np.zeros(steps), None
    else:
        batch_correct, output_loss = np.zeros((steps, n_outputs)), np.zeros((steps, n_outputs))
    rng = _random.fit_generator()  # this fit's own: other threads' draws do not change its results
    history.on_train_begin()
    for cb in user_callbacks:
        cb.on_train_begin()

    def logs_until(done: int, seen: int) -> dict:
        seen = max(seen, 1)
        return make_logs(
            batch_loss[:done].sum() / seen,
            batch_correct[:done].sum(axis=0) / seen,
            None if output_loss is None else output_loss[:done].sum(axis=0) / seen,
        )

    training_logs = None
    for epoch in range(initial_epoch, epochs):
        for cb in cbs:
            cb.on_epoch_begin(epoch)
        if verbose and epochs > 1:
            _io_utils.print_msg(epoch_header(epoch + 1, epochs))
        bar = Progbar(steps, verbose=verbose, stateful_metrics=list(stateful))
        perm = (rng.permutation(n) if shuffle else np.arange(n)).astype(np.int32)
        seed = int(rng.integers(0, 2**63))
        done, seen = 0, 0
        while done < steps and not stopped():
            nt = chooser.pick()
            k = 1 if per_batch else chooser.run_batches(steps - done)
            for cb in per_batch:
                cb.on_train_batch_begin(done)
            net.set_optimizer(optimizer.hyperparameters())
            t0 = time.perf_counter()
            steps_before = net.steps_done
            extra = {} if output_loss is None else {"output_loss": output_loss[done:]}
            try:
                k = net.train_run(
                    xs,
                    ys,
                    perm,
                    done,
                    k,
                    batch_size,
                    optimizer.iterations,
                    seed,
                    batch_loss[done:],
                    batch_correct[done:],
                    nt,
                    stop_nonfinite,
                    **extra,
                )
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
            done += k
            seen = min(n, done * batch_size)
            logs = logs_until(done, seen)
            for cb in cbs:
                cb._on_run_end(
                    done - k,
                    batch_loss[done - k : done] / np.minimum(batch_size, n - np.arange(done - k, done) * batch_size),
                )
            for cb in per_batch:
                cb.on_train_batch_end(done - 1, dict(logs))
            if done < steps:
                if warm_up:
                    bar.warm_up(done)
                else:
                    bar.update(done, list(logs.items()))
        logs = logs_until(done, seen)
        # as Keras: an epoch cut short by `stop_training` is still validated and its bar finalized
        if validate is not None:
            logs.update({"val_" + k: v for k, v in validate().items()})
        bar.update(steps, list(logs.items()), finalize=True)
        for cb in cbs:
            cb.on_epoch_end(epoch, logs)
        training_logs = logs
        if stopped():
            break
    for cb in cbs:  # as Keras 3: the last epoch's logs (None if no epoch ran)
        cb.on_train_end(training_logs)
    return training_logs


# ---- graph models ----------------------------------------------------------------------------------


def _graph_logs(specs: list, loss: float, correct, output_loss) -> dict:
    """Keras 3's logs of a graph model: ``loss``, each output's loss (if several) and accuracy, sorted by name."""
    logs = {"loss": float(loss)}
    with_loss = [s for s in specs if s["loss"] is not None]
    for o, s in enumerate(specs):
        if s["metric"] is not None:
            name = s["metric"].name if len(specs) == 1 else f"{s['name']}_{s['metric'].name}"
            logs[name] = float(correct[o])
        if len(with_loss) > 1 and s["loss"] is not None and output_loss is not None:
            logs[f"{s['name']}_loss"] = float(output_loss[o])
    return dict(sorted(logs.items()))


def _evaluate_logs(model, specs: list, xs: list, ys: list) -> dict:
    net = model._core_graph(training=False)
    activity = model._graph_activity(net)
    values, loss_sums, correct_sums = net.predict(xs, PREDICT_ROWS, ys, nodes=[i for i, _ in activity] or None)
    n = len(xs[0])
    weighted = sum(s["weight"] * l for s, l in zip(specs, loss_sums) if s["loss"] is not None)
    # Keras adds each activity penalty divided by the batch size to a batch's mean loss: over the
    # batches, the penalty of every sample once
    for (_, r), v in zip(activity, values if activity else []):
        a = np.asarray(v, np.float64)
        weighted += r["l1"] * np.abs(a).sum() + r["l2"] * np.square(a).sum()
    return _graph_logs(specs, weighted / n, correct_sums / n, loss_sums / n)


def _checked_fit_args(batch_size, epochs, verbose, validation_split, initial_epoch, kwargs: dict):
    from cdnn.models.model import _batch_size, _verbose

    for k in (
        "class_weight",
        "sample_weight",
        "steps_per_epoch",
        "validation_steps",
        "validation_batch_size",
        "validation_freq",
    ):
        if kwargs.get(k) is not None:
            raise ValueError(f"fit: argument `{k}` is not supported by cdnn for this model")
        kwargs.pop(k, None)
    if kwargs:
        raise TypeError(f"fit: unsupported argument(s) {sorted(kwargs)}")
    if isinstance(epochs, bool) or not isinstance(epochs, (int, np.integer)) or epochs < 0:
        raise invalid("epochs", epochs, "a non-negative integer")
    if not isinstance(validation_split, (int, float)) or not 0 <= validation_split < 1:
        raise invalid("validation_split", validation_split, "a number in [0, 1)")
    if isinstance(initial_epoch, bool) or not isinstance(initial_epoch, (int, np.integer)) or initial_epoch < 0:
        raise invalid("initial_epoch", initial_epoch, "a non-negative integer")
    return _batch_size(batch_size), _verbose(verbose)


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
    from cdnn.models.model import all_finite

    model._check_compiled("fit")
    batch_size, verbose = _checked_fit_args(batch_size, epochs, verbose, validation_split, initial_epoch, kwargs)
    if not hasattr(model, "_nodes") and model._input_struct is None:
        model._set_inputs_from_data(x)
    graph = model._graph_model()
    specs = model._output_specs(graph)
    # float32 training rows are checked for NaN and infinity by the core as it gathers each batch
    xs = model._prepare_inputs(graph, x, check_float32=False)
    n = len(xs[0])
    ys = model._prepare_targets(specs, y, n)
    val = None
    if validation_data is not None:
        if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
            raise ValueError(
                f"Invalid value for argument `validation_data`: expected a tuple (x_val, y_val), "
                f"received {type(validation_data).__name__}"
            )
        vx = model._prepare_inputs(graph, validation_data[0], "validation_data[0]")
        val = (vx, model._prepare_targets(specs, validation_data[1], len(vx[0]), "validation_data[1]"))
    elif validation_split:
        split = int(math.floor(n * (1.0 - validation_split)))  # as Keras: train on the first part
        if split <= 0 or split >= n:
            raise ValueError(
                f"validation_split={validation_split} leaves no training or no validation samples out of {n}"
            )
        if not all(all_finite(a[split:]) for a in xs):
            raise ValueError("Invalid values in `x`: its validation split contains NaN or infinity")
        val = ([a[split:] for a in xs], [None if t is None else t[split:] for t in ys])
        xs, ys = [a[:split] for a in xs], [None if t is None else t[:split] for t in ys]
        n = split
    batch_size = min(batch_size, n)
    net = model._core_graph(training=True)
    history = callbacks_module.History()
    steps = -(-n // batch_size)
    user = list(callbacks or [])
    cbs = model._own_callbacks([*user, history], {"verbose": verbose, "epochs": epochs, "steps": steps})
    model.history = history
    model.stop_training = False
    key = (id(net), _core.get_num_threads(), batch_size)
    if getattr(model, "_chooser_key", None) != key:
        model._chooser, model._chooser_key = _ThreadChooser(key[1]), key

    def validate():
        return _evaluate_with_callbacks(model, specs, *val, batch_size, cbs)

    run_epochs(
        net,
        xs,
        ys,
        n,
        batch_size,
        epochs,
        int(initial_epoch),
        verbose,
        shuffle,
        cbs,
        user,
        history,
        model.optimizer,
        model._chooser,
        lambda l, c, o: _graph_logs(specs, l, c, o),
        validate if val is not None else None,
        lambda: model.stop_training,
        n_outputs=len(specs),
        stateful=tuple(_graph_logs(specs, 0.0, [0.0] * len(specs), [0.0] * len(specs))),
    )
    return history


def _evaluate_with_callbacks(model, specs, xs, ys, batch_size: int, cbs: list) -> dict:
    for cb in cbs:
        cb.on_test_begin()
    logs = _evaluate_logs(model, specs, xs, ys)
    for cb in cbs:
        cb.on_test_end(dict(logs))
    return logs


def evaluate_graph(model, x, y, batch_size, verbose, return_dict: bool, kwargs: dict):
    """``Model.evaluate`` for a graph: ``[loss, <output>_loss..., metrics...]`` as Keras 3 orders it, or a dict."""
    from cdnn.models.model import _batch_size, _verbose

    kwargs.pop("steps", None)
    callbacks = kwargs.pop("callbacks", None)
    if kwargs:
        raise TypeError(f"evaluate: unsupported argument(s) {sorted(kwargs)}")
    model._check_compiled("evaluate")
    batch_size, verbose = _batch_size(batch_size), _verbose(verbose)
    if not hasattr(model, "_nodes") and model._input_struct is None:
        model._set_inputs_from_data(x)
    graph = model._inference_model()
    specs = model._output_specs(graph)
    xs = model._prepare_inputs(graph, x)
    ys = model._prepare_targets(specs, y, len(xs[0]))
    steps = -(-len(xs[0]) // batch_size)
    cbs = model._own_callbacks(callbacks, {"verbose": verbose, "epochs": 1, "steps": steps})
    bar = Progbar(steps, verbose=verbose)
    logs = _evaluate_with_callbacks(model, specs, xs, ys, batch_size, cbs)
    bar.update(bar.target, list(logs.items()), finalize=True)
    if return_dict:
        return logs
    order = ["loss"] + [f"{s['name']}_loss" for s in specs if f"{s['name']}_loss" in logs]
    order += [
        k
        for s in specs
        for k in logs
        if k not in order and s["metric"] is not None and k in (s["metric"].name, f"{s['name']}_{s['metric'].name}")
    ]
    values = [logs[k] for k in order]
    return values[0] if len(values) == 1 else values
