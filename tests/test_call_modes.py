"""A layer call recorded with ``training=True``/``False`` (the MC-dropout idiom) in every way of running a
graph model, against real Keras 3 (JAX backend): ``model(x)``, ``model(x, training=None/False/True)``,
``predict``, ``predict_on_batch``, ``evaluate``. Keras' random numbers cannot be matched: Dropout and
GaussianNoise are compared by their statistics, BatchNormalization (outputs and moving statistics) exactly.
"""

import os

import numpy as np
import pytest

import cdnn


def _keras():
    os.environ.setdefault("KERAS_BACKEND", "jax")
    pytest.importorskip("jax")
    return pytest.importorskip("keras")


def _layer(k, kind):
    L = k.layers
    return {"drop": lambda: L.Dropout(0.5), "noise": lambda: L.GaussianNoise(1.0), "bn": L.BatchNormalization}[kind]()


def _functional(k, kind, tr):
    inp = k.Input((4,))
    layer = _layer(k, kind)
    return k.Model(inp, layer(inp, training=tr)), layer


def _subclassed(k, kind, tr):
    class Net(k.Model):
        def __init__(self):
            super().__init__()
            self.layer = _layer(k, kind)

        def call(self, x, training=None):
            return self.layer(x, training=tr)

    net = Net()
    return net, net.layer


def _summary(kind, y, x):
    """Dropout: the fraction zeroed and the kept values' scale; noise: the noise's deviation; BN: the values."""
    y = np.asarray(y, np.float64)
    if kind == "drop":
        kept = y[y != 0] / x[y != 0]
        return round(float((y == 0).mean()), 1), sorted({round(float(v), 4) for v in kept})
    if kind == "noise":
        return round(float((y - x).std()), 1)
    return y


def _runs(k, make, kind, tr):
    """Each way of running the model, in turn (BatchNormalization's moving statistics carry over)."""
    rng = np.random.default_rng(0)
    x = rng.normal(3, 2, (4000, 4)).astype("float32") if kind == "bn" else np.ones((4000, 4), "float32")
    model, layer = make(k, kind, tr)
    model(x[:2])
    out = {}
    for name, fn in (
        ("m(x)", lambda: model(x)),
        ("m(x, None)", lambda: model(x, training=None)),
        ("m(x, False)", lambda: model(x, training=False)),
        ("m(x, True)", lambda: model(x, training=True)),
        ("predict", lambda: model.predict(x, batch_size=256, verbose=0)),
        ("predict_on_batch", lambda: model.predict_on_batch(x[:500])),
    ):
        y = fn()
        out[name] = _summary(kind, y, x[: len(y)])
    if kind == "bn":
        out["moving"] = [np.asarray(w) for w in layer.get_weights()[2:]]
    return out


@pytest.mark.parametrize("make", [_functional, _subclassed], ids=["functional", "subclassed"])
@pytest.mark.parametrize("tr", [True, False])
@pytest.mark.parametrize("kind", ["drop", "noise", "bn"])
def test_calls_run_the_recorded_mode_as_keras(session, make, kind, tr):
    keras = _keras()
    ours, theirs = _runs(cdnn, make, kind, tr), _runs(keras, make, kind, tr)
    for name in theirs:
        if kind == "bn":
            np.testing.assert_allclose(ours[name], theirs[name], rtol=2e-4, atol=2e-4, err_msg=name)
        else:
            assert ours[name] == theirs[name], name


@pytest.mark.parametrize("make", [_functional, _subclassed], ids=["functional", "subclassed"])
def test_evaluate_updates_as_keras(session, make):
    """evaluate: a functional model's recorded training=True is overridden (no update); a subclassed
    call's explicit one runs batch statistics and updates the moving statistics per batch."""
    keras = _keras()
    x = np.random.default_rng(1).normal(3, 2, (256, 4)).astype("float32")
    y = np.zeros((256, 4), "float32")
    got = []
    for k in (cdnn, keras):
        model, layer = make(k, "bn", True)
        model(x[:2], training=False)
        model.compile(optimizer="sgd", loss="mse")
        loss = model.evaluate(x, y, batch_size=64, verbose=0)
        got.append((loss, layer.get_weights()[2:]))
    np.testing.assert_allclose(got[0][0], got[1][0], rtol=1e-4)
    for a, b in zip(got[0][1], got[1][1]):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_mc_dropout_is_seeded_and_thread_independent(session):
    """model(x) with a recorded Dropout(training=True): the seeded mask stream, the same bits on 1 and 2
    threads, fresh masks at each call; predict stays deterministic."""
    inp = cdnn.Input((64,))
    h = cdnn.layers.Dense(256, activation="relu")(inp)
    h = cdnn.layers.Dropout(0.3)(h, training=True)
    model = cdnn.Model(inp, cdnn.layers.Dense(8)(h))
    x = np.random.default_rng(2).normal(size=(3000, 64)).astype("float32")
    runs = []
    for threads in (1, 2):
        cdnn.set_num_threads(threads)
        cdnn.utils.set_random_seed(7)
        runs.append((np.asarray(model(x)), np.asarray(model(x))))
    np.testing.assert_array_equal(runs[0][0], runs[1][0])
    np.testing.assert_array_equal(runs[0][1], runs[1][1])
    assert not np.array_equal(runs[0][0], runs[0][1])
    np.testing.assert_array_equal(model.predict(x, verbose=0), model.predict(x, verbose=0))


def test_sequential_training_call_as_keras(session):
    """Sequential: model(x, training=True) runs Dropout (Keras' MC idiom), model(x) does not."""
    keras = _keras()
    x = np.ones((4000, 4), "float32")
    out = []
    for k in (cdnn, keras):
        model = k.Sequential([k.Input((4,)), k.layers.Dropout(0.25)])
        out.append([_summary("drop", model(x, training=t), x) for t in (None, True)])
    assert out[0] == out[1]
