"""The two epoch loops (the Dense chain's in Sequential, the graph's in cdnn/trainers/loop.py) behave alike
and as Keras 3's trainer: per-step learning-rate schedules, EMA with frozen layers, BackupAndRestore of a
graph with BatchNormalization, predict/evaluate callbacks, steps, stop flags and the logs hooks receive.

Real Keras 3 (JAX backend) is the oracle where it is installed; the rest is checked against Keras'
trainer as documented in keras/src (callbacks get ``{}`` where Keras' CallbackList passes no logs).
"""

import os

import numpy as np
import pytest

import cdnn


def _real_keras():
    os.environ.setdefault("KERAS_BACKEND", "jax")
    pytest.importorskip("jax")
    return pytest.importorskip("keras")


def _data(n=64, features=5, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, features)).astype(np.float32), rng.normal(size=(n, 1)).astype(np.float32)


def _model(K, kind: str, frozen: bool = False):
    """A small regression model of library ``K`` (cdnn or keras): a Dense chain or a functional graph."""
    if kind == "functional":
        i = K.Input((5,))
        h = K.layers.Dense(4, activation="tanh")(i)
        h = K.layers.Dense(3, activation="tanh")(h)
        return K.Model(i, K.layers.Dense(1)(h))
    m = K.Sequential(
        [K.Input((5,)), K.layers.Dense(4, activation="tanh"), K.layers.Dense(3, activation="tanh"), K.layers.Dense(1)]
    )
    if frozen:
        m.layers[1].trainable = False
    return m


def _schedule(K, which: str):
    if which == "exponential":
        return K.optimizers.schedules.ExponentialDecay(0.1, decay_steps=3, decay_rate=0.5, staircase=True)
    return K.optimizers.schedules.PiecewiseConstantDecay([2, 5], [0.1, 0.01, 0.001])


# ---- 1. learning-rate schedules change at every optimizer step, in both loops -------------------------


@pytest.mark.parametrize("kind", ["sequential", "functional"])
@pytest.mark.parametrize("which", ["exponential", "piecewise"])
def test_a_schedule_changes_the_rate_at_every_step_as_keras(session, kind, which):
    keras = _real_keras()
    x, y = _data()
    theirs = _model(keras, kind)
    ours = _model(cdnn, kind)
    ours.set_weights(theirs.get_weights())
    for m, K in ((theirs, keras), (ours, cdnn)):
        m.compile(K.optimizers.SGD(_schedule(K, which)), "mse")
        # 8 steps an epoch: the rate changes inside the runs of batches the loop hands to C
        m.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0)
    assert int(ours.optimizer.iterations) == 16
    for a, b in zip(ours.get_weights(), theirs.get_weights()):
        np.testing.assert_allclose(a, np.asarray(b), rtol=0, atol=2e-6)


def test_a_graph_with_a_schedule_trains_as_the_chain_with_one_batch_per_run(session):
    """Without Keras: a per-batch callback makes the graph loop hand C one batch at a time, which reads the
    schedule at every step; runs of several batches must give the same weights."""
    x, y = _data()
    results: list = []
    start = None
    for per_batch in (False, True):
        m = _model(cdnn, "functional")
        if start is None:
            start = m.get_weights()
        m.set_weights(start)
        m.compile(cdnn.optimizers.SGD(_schedule(cdnn, "exponential")), "mse")

        class EveryBatch(cdnn.callbacks.Callback):
            def on_train_batch_end(self, batch, logs=None):
                pass

        m.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0, callbacks=[EveryBatch()] if per_batch else [])
        results.append(m.get_weights())
    for a, b in zip(*results):
        np.testing.assert_array_equal(a, b)


# ---- 2. use_ema with a frozen layer: the averages replace the trainable weights only -----------------


def test_ema_with_a_frozen_layer_swaps_the_trainable_weights_as_keras(session):
    keras = _real_keras()
    x, y = _data()
    theirs = _model(keras, "sequential", frozen=True)
    ours = _model(cdnn, "sequential", frozen=True)
    start = theirs.get_weights()
    ours.set_weights(start)
    for m, K in ((theirs, keras), (ours, cdnn)):
        m.compile(K.optimizers.SGD(0.1, use_ema=True, ema_momentum=0.9), "mse")
        m.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0)
    got = ours.get_weights()
    np.testing.assert_array_equal(got[2], start[2])  # the frozen layer is left alone
    np.testing.assert_array_equal(got[3], start[3])
    for a, b in zip(got, theirs.get_weights()):
        np.testing.assert_allclose(a, np.asarray(b), rtol=0, atol=2e-6)


def test_ema_weights_replace_the_model_s_when_fit_is_interrupted_as_keras(session):
    """Keras 3 swaps the moving averages in from a ``finally``: an exception from a callback too."""
    keras = _real_keras()
    x, y = _data()
    theirs = _model(keras, "sequential")
    ours = _model(cdnn, "sequential")
    ours.set_weights(theirs.get_weights())
    for m, K in ((theirs, keras), (ours, cdnn)):

        class Crash(K.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                raise RuntimeError("interrupted")

        m.compile(K.optimizers.SGD(0.1, use_ema=True, ema_momentum=0.9), "mse")
        with pytest.raises(RuntimeError, match="interrupted"):
            m.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0, callbacks=[Crash()])
    for a, b in zip(ours.get_weights(), theirs.get_weights()):
        np.testing.assert_allclose(a, np.asarray(b), rtol=0, atol=2e-6)


# ---- 3. BackupAndRestore of a graph with BatchNormalization ------------------------------------------


def _bn_model(kind: str):
    cdnn.utils.set_random_seed(1)
    if kind == "functional":
        i = cdnn.Input((5,))
        h = cdnn.layers.Dense(4, activation="tanh")(i)
        h = cdnn.layers.BatchNormalization()(h)
        m = cdnn.Model(i, cdnn.layers.Dense(1)(h))
    else:
        m = cdnn.Sequential(
            [
                cdnn.Input((5,)),
                cdnn.layers.Dense(4, activation="tanh"),
                cdnn.layers.BatchNormalization(),
                cdnn.layers.Dense(1),
            ]
        )
    m.compile(cdnn.optimizers.Adam(0.01), "mse")
    return m


class _Crash(cdnn.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        if epoch == 1:
            raise RuntimeError("interrupted")


@pytest.mark.parametrize("kind", ["functional", "sequential"])
def test_backup_and_restore_resumes_a_graph_with_batchnorm_exactly(session, tmp_path, kind):
    x, y = _data()
    whole = _bn_model(kind)
    whole.fit(x, y, batch_size=8, epochs=4, shuffle=False, verbose=0)

    first = _bn_model(kind)
    with pytest.raises(RuntimeError, match="interrupted"):
        first.fit(
            x,
            y,
            batch_size=8,
            epochs=4,
            shuffle=False,
            verbose=0,
            callbacks=[cdnn.callbacks.BackupAndRestore(tmp_path), _Crash()],
        )
    resumed = _bn_model(kind)
    history = resumed.fit(
        x, y, batch_size=8, epochs=4, shuffle=False, verbose=0, callbacks=[cdnn.callbacks.BackupAndRestore(tmp_path)]
    )
    assert history.epoch == [2, 3]  # resumed after the two epochs backed up
    assert int(resumed.optimizer.iterations) == int(whole.optimizer.iterations) == 32
    # moving mean/variance, weights and Adam's moments all restored: bit for bit the uninterrupted run
    for a, b in zip(resumed.get_weights(), whole.get_weights()):
        np.testing.assert_array_equal(a, b)


# ---- 4. callbacks, steps, generators and stop flags in predict / evaluate of both loops ---------------

_HOOKS = [
    "on_train_begin",
    "on_train_end",
    "on_epoch_begin",
    "on_epoch_end",
    "on_train_batch_begin",
    "on_train_batch_end",
    "on_test_begin",
    "on_test_end",
    "on_test_batch_begin",
    "on_test_batch_end",
    "on_predict_begin",
    "on_predict_end",
    "on_predict_batch_begin",
    "on_predict_batch_end",
]


def _recorder(K, stop_at=None):
    """A callback of library ``K`` recording every hook, its batch or epoch and its logs' keys (None for
    no logs; the outputs' shape for predict); ``stop_at``: the batch after which it sets
    ``stop_evaluating`` and ``stop_predicting``."""
    calls: list = []

    def make(hook):
        def record(logs):
            if logs is None:
                return None
            if "outputs" in logs:
                return ("outputs", np.shape(logs["outputs"]))
            return sorted(logs)

        if "batch" in hook or "epoch" in hook:

            def f(self, i, logs=None):
                calls.append((hook, i, record(logs)))
                if stop_at is not None and i == stop_at and hook == "on_test_batch_end":
                    self.model.stop_evaluating = True
                if stop_at is not None and i == stop_at and hook == "on_predict_batch_end":
                    self.model.stop_predicting = True

        else:

            def f(self, logs=None):
                calls.append((hook, record(logs)))

        return f

    cls = type("Recorder", (K.callbacks.Callback,), {h: make(h) for h in _HOOKS})
    return cls(), calls


def _hook_model(K, kind: str):
    if kind == "graph":
        i = K.Input((5,))
        h = K.layers.BatchNormalization()(K.layers.Dense(4)(i))
        m = K.Model(i, K.layers.Dense(1)(h))
    else:
        m = K.Sequential([K.Input((5,)), K.layers.Dense(4, activation="relu"), K.layers.Dense(1)])
    m.compile("sgd", "mse", metrics=["mae"])
    return m


@pytest.mark.parametrize("kind", ["graph", "chain"])
def test_every_hook_gets_the_calls_and_logs_keras_gives(session, kind):
    """fit (with validation), evaluate, predict and a fit that runs no epoch: the same hooks, in the same
    order, with ``{}`` where Keras' CallbackList passes no logs."""
    keras = _real_keras()
    x, y = _data(20)
    seen = {}
    for K in (keras, cdnn):
        m = _hook_model(K, kind)
        cb, calls = _recorder(K)
        m.fit(x, y, batch_size=8, epochs=1, validation_data=(x, y), callbacks=[cb], verbose=0)
        m.evaluate(x, y, batch_size=8, callbacks=[cb], verbose=0)
        m.predict(x, batch_size=8, callbacks=[cb], verbose=0)
        m.fit(x, y, epochs=1, initial_epoch=1, callbacks=[cb], verbose=0)
        seen[K.__name__] = calls
    assert seen["cdnn"] == seen["keras"]


@pytest.mark.parametrize("kind", ["graph", "chain"])
def test_stop_evaluating_and_stop_predicting_end_after_the_batch_as_keras(session, kind):
    keras = _real_keras()
    x, y = _data(40)
    seen, results = {}, {}
    weights = None
    for K in (keras, cdnn):
        m = _hook_model(K, kind)
        if weights is None:
            weights = m.get_weights()
        m.set_weights([np.asarray(w) for w in weights])
        cb, calls = _recorder(K, stop_at=1)
        loss = m.evaluate(x, y, batch_size=8, callbacks=[cb], verbose=0, return_dict=True)
        out = m.predict(x, batch_size=8, callbacks=[cb], verbose=0)
        seen[K.__name__], results[K.__name__] = calls, (loss, np.asarray(out))
    assert seen["cdnn"] == seen["keras"]
    loss, out = results["cdnn"]
    assert out.shape == (16, 1)  # the two batches predicted before the stop
    np.testing.assert_allclose(out, results["keras"][1], rtol=0, atol=1e-5)
    first_two = m.evaluate(x[:16], y[:16], batch_size=8, verbose=0, return_dict=True)
    assert loss == pytest.approx(first_two, rel=1e-12)
    assert loss == pytest.approx(results["keras"][0], rel=1e-5)


def _two_output_graph():
    i = cdnn.Input((5,))
    h = cdnn.layers.BatchNormalization()(cdnn.layers.Dense(4, activation="tanh")(i))
    m = cdnn.Model(i, {"a": cdnn.layers.Dense(1, name="a")(h), "b": cdnn.layers.Dense(3, name="b")(h)})
    m.compile("adam", {"a": "mse", "b": "mse"})
    return m


def test_graph_predict_honours_steps_and_gives_structured_batch_outputs(session):
    x, _ = _data(30)
    m = _two_output_graph()
    whole = m.predict(x, verbose=0)
    part = m.predict(x, batch_size=8, steps=2, verbose=0)
    assert sorted(part) == ["a", "b"]
    for k in "ab":
        np.testing.assert_array_equal(part[k], whole[k][:16])
    batches = []

    class Outputs(cdnn.callbacks.Callback):
        def on_predict_batch_end(self, batch, logs=None):
            batches.append({k: v.copy() for k, v in logs["outputs"].items()})

    got = m.predict(x, batch_size=8, callbacks=[Outputs()], verbose=0)
    assert [len(b["a"]) for b in batches] == [8, 8, 8, 6]
    for k in "ab":
        np.testing.assert_array_equal(got[k], whole[k])
        np.testing.assert_array_equal(np.concatenate([b[k] for b in batches]), whole[k])


class _Batches:
    """A re-iterable source of ``(x,)`` or ``(x, y)`` batches, as a ``tf.data.Dataset`` is."""

    def __init__(self, x, y, size: int) -> None:
        self.x, self.y, self.size = x, y, size

    def __iter__(self):
        for i in range(0, len(self.x), self.size):
            yield (
                (self.x[i : i + self.size],)
                if self.y is None
                else (self.x[i : i + self.size], self.y[i : i + self.size])
            )


def test_graph_evaluate_takes_an_iterable_with_batch_hooks(session):
    x, y = _data(30)
    m = _hook_model(cdnn, "graph")
    expected = m.evaluate(x, y, batch_size=8, verbose=0, return_dict=True)
    cb, calls = _recorder(cdnn)
    got = m.evaluate(_Batches(x, y, 8), callbacks=[cb], verbose=0, return_dict=True)
    assert got == pytest.approx(expected, rel=1e-6)
    assert [c[:2] for c in calls if c[0].startswith("on_test_batch")] == [
        (h, b) for b in range(4) for h in ("on_test_batch_begin", "on_test_batch_end")
    ]


def test_graph_predict_takes_generators_pydatasets_and_iterables(session):
    x, _ = _data(30)
    m = _two_output_graph()
    whole = m.predict(x, verbose=0)

    class Data(cdnn.utils.PyDataset):
        def __len__(self):
            return 4

        def __getitem__(self, i):
            return (x[8 * i : 8 * i + 8],)

    sources = [
        (x[i : i + 8] for i in range(0, 30, 8)),  # a generator of inputs
        Data(),  # a PyDataset of (x,) tuples
        [(x[i : i + 8], None) for i in range(0, 30, 8)].__iter__(),  # an iterator of (x, y) pairs
        _Batches(x, None, 8),  # an iterable as tf.data's: iter() gives the batches anew
    ]
    for source in sources:
        got = m.predict(source, verbose=0)
        for k in "ab":
            np.testing.assert_array_equal(got[k], whole[k])
    got = m.predict((x[i : i + 8] for i in range(0, 30, 8)), steps=2, verbose=0)
    np.testing.assert_array_equal(got["a"], whole["a"][:16])


def test_a_sequential_graph_predicts_from_a_generator_with_callbacks(session):
    """A Sequential holding BatchNormalization runs as a graph: its predict takes generators, steps and
    callbacks as the chain's does."""
    x, y = _data(30)
    m = cdnn.Sequential(
        [cdnn.Input((5,)), cdnn.layers.Dense(4), cdnn.layers.BatchNormalization(), cdnn.layers.Dense(1)]
    )
    m.compile("sgd", "mse")
    whole = m.predict(x, verbose=0)
    cb, calls = _recorder(cdnn)
    got = m.predict((x[i : i + 8] for i in range(0, 30, 8)), steps=3, callbacks=[cb], verbose=0)
    np.testing.assert_array_equal(got, whole[:24])
    assert [c[0] for c in calls] == ["on_predict_begin"] + ["on_predict_batch_begin", "on_predict_batch_end"] * 3 + [
        "on_predict_end"
    ]
    np.testing.assert_array_equal(m.predict(x, batch_size=8, steps=2, verbose=0), whole[:16])


@pytest.mark.parametrize("kind", ["sequential", "functional"])
def test_epoch_loss_independent_of_how_runs_are_cut(kind):
    """The epoch's loss sums its batches in one order: runs of one batch (a batch callback) and the long runs
    the thread chooser cuts give the same bits, so history does not depend on timings or thread counts."""
    x, y = _data(n=3000, seed=3)
    y = y * 1e3 + np.float32(0.1)
    hist = []
    for cbs in ([], [cdnn.callbacks.LambdaCallback(on_train_batch_end=lambda b, logs: None)]):
        cdnn.utils.set_random_seed(7)
        m = _model(cdnn, kind)
        m.compile("sgd", "mse")
        hist.append(m.fit(x, y, batch_size=7, epochs=2, verbose=0, callbacks=cbs).history["loss"])
    assert hist[0] == hist[1]
