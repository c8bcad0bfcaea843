"""A layer call's ``training`` mode during fit, as Keras 3 runs it.

A functional model passes its own mode (fit's ``training=True``) to every call over the value the
call was recorded with, so ``bn(x, training=False)`` and ``inner(x, training=False)`` in a functional
graph train their BatchNormalization (batch statistics, moving statistics updated) and keep their
Dropout active; in a subclassed model's ``call`` an explicit ``training=False`` wins: the
BatchNormalization normalizes with its moving statistics, leaves them alone and still trains gamma
and beta. ``BatchNormalization(trainable=False)`` runs in inference mode. Checked against real Keras
3 (JAX backend) from the same initial weights.
"""

import os

import numpy as np
import pytest

import cdnn


def _keras():
    os.environ.setdefault("KERAS_BACKEND", "jax")
    pytest.importorskip("jax")
    return pytest.importorskip("keras")


def _data(n=32, f=5, units=3, seed=0):
    rng = np.random.default_rng(seed)
    x = (rng.normal(size=(n, f)) * 2 + 1).astype("float32")
    y = rng.normal(size=(n, units)).astype("float32")
    return x, y


def _functional_bn(k, f, units, how):
    """A BatchNormalization then a Dense in library ``k``; ``how``: "call" (bn(x, training=False)),
    "nested" (a model holding the bn called with training=False), "frozen" (trainable=False)."""
    inp = k.Input((f,))
    bn = k.layers.BatchNormalization(trainable=how != "frozen")
    if how == "nested":
        inner_in = k.Input((f,))
        h = k.Model(inner_in, bn(inner_in))(inp, training=False)
    elif how == "call":
        h = bn(inp, training=False)
    else:
        h = bn(inp)
    d = k.layers.Dense(units, kernel_initializer="ones")
    return k.Model(inp, d(h)), bn, d


def _subclassed(k):
    class Net(k.Model):
        def __init__(self):
            super().__init__()
            self.bn = k.layers.BatchNormalization()
            self.d = k.layers.Dense(3, kernel_initializer="ones")

        def call(self, x, training=None):
            return self.d(self.bn(x, training=False))

    return Net()


def _fit(k, model, x, y, opt="sgd", epochs=2, bs=16):
    make = {"sgd": lambda: k.optimizers.SGD(0.1), "adam": lambda: k.optimizers.Adam(0.05)}[opt]
    model.compile(optimizer=make(), loss="mse")
    model.fit(x, y, epochs=epochs, batch_size=bs, verbose=0, shuffle=False)


@pytest.mark.parametrize("opt", ["sgd", "adam"])
def test_subclassed_bn_training_false_uses_moving_statistics(session, opt):
    """Keras: an explicit training=False in call() normalizes with the moving statistics, never updates
    them, and gamma/beta still train (their gradient taken with the moving statistics)."""
    keras = _keras()
    x, y = _data()
    ours, theirs = _subclassed(cdnn), _subclassed(keras)
    _fit(cdnn, ours, x, y, opt)
    _fit(keras, theirs, x, y, opt)
    mean, var = ours.bn.get_weights()[2:]
    np.testing.assert_array_equal(mean, np.zeros(5, np.float32))
    np.testing.assert_array_equal(var, np.ones(5, np.float32))
    assert not np.allclose(ours.bn.get_weights()[0], 1.0)  # gamma trained
    for a, b in zip(ours.bn.get_weights() + ours.d.get_weights(), theirs.bn.get_weights() + theirs.d.get_weights()):
        np.testing.assert_allclose(a, np.asarray(b), rtol=2e-4, atol=2e-5)
    np.testing.assert_allclose(
        ours.predict(x, verbose=0), np.asarray(theirs.predict(x, verbose=0)), rtol=2e-4, atol=2e-4
    )


def test_subclassed_bn_training_false_gradient_oracle(session):
    """One SGD step by hand (NumPy): y = (gamma * (x - mm) / sqrt(mv + eps) + beta) @ W + b, mse."""
    x, y = _data(n=8, f=4, units=2, seed=3)

    class Net(cdnn.Model):
        def __init__(self):
            super().__init__()
            self.bn = cdnn.layers.BatchNormalization(moving_mean_initializer="ones", moving_variance_initializer="ones")
            self.d = cdnn.layers.Dense(2, kernel_initializer="ones")

        def call(self, x, training=None):
            return self.d(self.bn(x, training=False))

    model = Net()
    _fit(cdnn, model, x, y, epochs=1, bs=8)
    xh = (x.astype(np.float64) - 1.0) / np.sqrt(1.0 + 1e-3)
    h = xh  # gamma 1, beta 0
    out = h @ np.ones((4, 2)) + 0.0
    dout = 2.0 * (out - y) / out.size
    dh = dout @ np.ones((2, 4))
    gamma = 1.0 - 0.1 * (dh * xh).sum(0)
    beta = -0.1 * dh.sum(0)
    got = model.bn.get_weights()
    np.testing.assert_allclose(got[0], gamma, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got[1], beta, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(got[2], np.ones(4, np.float32))
    np.testing.assert_array_equal(got[3], np.ones(4, np.float32))


@pytest.mark.parametrize("how", ["call", "nested", "frozen"])
def test_functional_training_mode_matches_keras(session, how):
    """bn(x, training=False) / inner(x, training=False) in a functional graph: fit's training=True wins
    in Keras 3 (batch statistics, moving statistics updated); trainable=False: inference mode."""
    keras = _keras()
    x, y = _data()
    ours, obn, od = _functional_bn(cdnn, 5, 3, how)
    theirs, tbn, td = _functional_bn(keras, 5, 3, how)
    _fit(cdnn, ours, x, y)
    _fit(keras, theirs, x, y)
    for a, b in zip(obn.get_weights() + od.get_weights(), tbn.get_weights() + td.get_weights()):
        np.testing.assert_allclose(a, np.asarray(b), rtol=2e-4, atol=2e-5)
    moved = not np.allclose(obn.get_weights()[2], 0.0)
    assert moved == (how != "frozen")


def test_functional_dropout_training_false_is_active_in_fit(session):
    """Keras 3: Dropout(0.5)(x, training=False) in a functional model still drops during fit."""
    x, y = _data()

    def run(flag):
        cdnn.utils.set_random_seed(7)
        inp = cdnn.Input((5,))
        h = cdnn.layers.Dropout(0.5)(inp, training=flag)
        d = cdnn.layers.Dense(3, kernel_initializer="ones")
        model = cdnn.Model(inp, d(h))
        _fit(cdnn, model, x, y, epochs=1, bs=32)
        return d.get_weights()[0], model

    plain = cdnn.Sequential([cdnn.Input((5,)), cdnn.layers.Dense(3, kernel_initializer="ones")])
    _fit(cdnn, plain, x, y, epochs=1, bs=32)
    dropped, model = run(False)
    assert not np.allclose(dropped, plain.layers[-1].get_weights()[0])
    np.testing.assert_array_equal(dropped, run(None)[0])  # the same masks as an unflagged call
    # inference stays deterministic
    np.testing.assert_array_equal(model.predict(x, verbose=0), model.predict(x, verbose=0))


def test_inference_bn_one_and_two_threads_bit_identical(session):
    rng = np.random.default_rng(5)
    x = rng.normal(size=(256, 33)).astype("float32")
    y = rng.normal(size=(256, 7)).astype("float32")

    class Net(cdnn.Model):
        def __init__(self):
            super().__init__()
            self.a = cdnn.layers.Dense(64, activation="relu")
            self.bn = cdnn.layers.BatchNormalization()
            self.d = cdnn.layers.Dense(7)

        def call(self, x, training=None):
            return self.d(self.bn(self.a(x), training=False))

    results = []
    for threads in (1, 2):
        cdnn.utils.set_random_seed(11)
        cdnn.set_num_threads(threads)
        model = Net()
        model.compile(optimizer="adam", loss="mse")
        model.fit(x, y, epochs=2, batch_size=64, verbose=0, shuffle=False)
        results.append(model.get_weights())
    for a, b in zip(*results):
        np.testing.assert_array_equal(a, b)
