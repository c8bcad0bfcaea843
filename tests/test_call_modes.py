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


@pytest.mark.parametrize("kind", ["GaussianDropout", "AlphaDropout"])
def test_recorded_training_noise_layers_in_model_call(session, kind):
    """GaussianDropout and AlphaDropout called with training=True: model(x) draws their noise (seeded,
    thread-independent), predict is the identity through them, as Keras 3."""
    inp = cdnn.Input((300,))
    model = cdnn.Model(inp, getattr(cdnn.layers, kind)(0.3)(inp, training=True))
    x = np.random.default_rng(3).normal(size=(400, 300)).astype("float32")
    runs = []
    for threads in (1, 2):
        cdnn.set_num_threads(threads)
        cdnn.utils.set_random_seed(5)
        runs.append(np.asarray(model(x)))
    np.testing.assert_array_equal(runs[0], runs[1])
    assert not np.allclose(runs[0], x)
    if kind == "GaussianDropout":
        m = runs[0] / x
        assert abs(m.mean() - 1) < 0.01 and abs(m.std() - np.sqrt(0.3 / 0.7)) < 0.01
    else:  # unit mean and variance kept on unit normal inputs
        assert abs(runs[0].mean()) < 0.02 and abs(runs[0].var() - 1) < 0.03
    np.testing.assert_array_equal(model.predict(x, verbose=0), x)


def test_sequential_training_call_as_keras(session):
    """Sequential: model(x, training=True) runs Dropout (Keras' MC idiom), model(x) does not."""
    keras = _keras()
    x = np.ones((4000, 4), "float32")
    out = []
    for k in (cdnn, keras):
        model = k.Sequential([k.Input((4,)), k.layers.Dropout(0.25)])
        out.append([_summary("drop", model(x, training=t), x) for t in (None, True)])
    assert out[0] == out[1]


# ---- fit(shuffle=True) with a PyDataset: the batch order per epoch, as Keras' PyDatasetAdapter --------------


def _reads(k, shuffle, graph: bool, **fit_kwargs):
    """The batch indices fit, then evaluate and predict, read from a PyDataset of 6 batches (2 epochs)."""

    class Batches(k.utils.PyDataset):
        def __init__(self):
            super().__init__()
            self.log = []

        def __len__(self):
            return 6

        def __getitem__(self, i):
            self.log.append(int(i))
            rng = np.random.default_rng(int(i))
            return rng.normal(size=(4, 3)).astype("float32"), rng.normal(size=(4, 1)).astype("float32")

    if graph:
        inp = k.Input((3,))
        model = k.Model(inp, k.layers.Dense(1)(k.layers.Dense(2)(inp)))
    else:
        model = k.Sequential([k.Input((3,)), k.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    train, val = Batches(), Batches()
    model.fit(train, epochs=2, verbose=0, validation_data=val, **({} if shuffle is None else {"shuffle": shuffle}))
    other = Batches()
    model.evaluate(other, verbose=0)
    model.predict(other, verbose=0)
    return train.log, val.log, other.log


@pytest.mark.parametrize("graph", [False, True], ids=["chain", "graph"])
@pytest.mark.parametrize("shuffle", [None, True, "batch", False])
def test_pydataset_batch_order_as_keras(session, graph, shuffle):
    keras = _keras()
    in_order = list(range(6))
    for k in (cdnn, keras):
        keras.utils.set_random_seed(3)
        train, val, other = _reads(k, shuffle, graph)
        train = train[1:] if k is keras else train  # Keras reads batch 0 once first, for its shapes
        epochs = [train[:6], train[6:]]
        assert all(sorted(e) == in_order for e in epochs), (k.__name__, train)
        assert val == in_order * 2 and other == in_order * 2, k.__name__
        if shuffle is False:
            assert epochs == [in_order, in_order], k.__name__
        else:  # seed 3: neither pass is in order, and they differ
            assert epochs[0] != in_order and epochs[1] != in_order and epochs[0] != epochs[1], (k.__name__, train)
    cdnn.utils.set_random_seed(3)
    again = _reads(cdnn, shuffle, graph)[0]
    cdnn.utils.set_random_seed(3)
    assert _reads(cdnn, shuffle, graph)[0] == again  # cdnn's seeded generator


def test_subclassed_bn_without_training_argument_trains(session):
    """call() using a BatchNormalization without passing ``training``: fit trains it in training mode, as
    Keras' TensorFlow and PyTorch backends do (the outer call's mode). Keras' JAX trainer calls ``call``
    without that context and leaves it in inference mode (docs/keras-compatibility.md); the oracle is
    Keras (JAX) with ``training=training`` passed, which the other backends compute without it."""
    keras = _keras()
    x = np.random.default_rng(0).normal(3, 2, (64, 4)).astype("float32")
    y = np.zeros((64, 1), "float32")

    def make(k, passed):
        class Net(k.Model):
            def __init__(self):
                super().__init__()
                self.bn = k.layers.BatchNormalization()
                self.d = k.layers.Dense(1, kernel_initializer="ones")

            def call(self, x, training=None):
                return self.d(self.bn(x, training=training) if passed else self.bn(x))

        return Net()

    got = []
    for k, passed in ((cdnn, False), (keras, True)):
        net = make(k, passed)
        net.compile(optimizer="sgd", loss="mse")
        net.fit(x, y, epochs=2, batch_size=16, shuffle=False, verbose=0)
        got.append(net.bn.get_weights() + net.d.get_weights())
    for a, b in zip(*got):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    assert np.abs(got[0][2]).max() > 0.1  # the moving mean moved


# ---- ignore_class on a graph model: the chain's formula (Keras' mean over each batch's valid rows) -----------


def _ignore_run(k, graph: bool, weights, how: str):
    rng = np.random.default_rng(5)
    x = rng.normal(size=(90, 6)).astype("float32")
    y = rng.integers(-1, 4, 90).astype("int32")
    y[y == -1] = 9
    L = k.layers
    if graph:
        i = k.Input((6,))
        model = k.Model(i, L.Dense(4, activation="softmax")(L.Dense(5, activation="relu")(i)))
    else:
        model = k.Sequential([k.Input((6,)), L.Dense(5, activation="relu"), L.Dense(4, activation="softmax")])
    model.set_weights(weights)
    model.compile(
        optimizer=k.optimizers.Adam(0.05),
        loss=k.losses.SparseCategoricalCrossentropy(ignore_class=9),
        metrics=["accuracy", k.metrics.SparseCategoricalCrossentropy(ignore_class=9)],
    )
    kw = {"sample_weight": rng.uniform(0.5, 2, 90).astype("float32")} if how == "sample" else {}
    if how == "class":
        kw = {"class_weight": {0: 0.5, 1: 2.0, 2: 1.0, 3: 3.0}}
    h = model.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0, **kw)
    e = model.evaluate(x, y, batch_size=16, verbose=0, sample_weight=kw.get("sample_weight"))
    return h.history, e, model.get_weights()


@pytest.mark.parametrize("how", ["plain", "sample", "class"])
def test_graph_ignore_class_as_chain_and_keras(session, how):
    weights = [
        np.random.default_rng(s).normal(0, 0.5, shape).astype("float32")
        for s, shape in enumerate([(6, 5), (5,), (5, 4), (4,)])
    ]
    runs = []
    for threads in (1, 2):
        cdnn.set_num_threads(threads)
        runs += [_ignore_run(cdnn, False, weights, how), _ignore_run(cdnn, True, weights, how)]
    for other in runs[1:]:  # the graph is the chain's formula, bit for bit, on 1 and 2 threads
        assert other[0] == runs[0][0] and other[1] == runs[0][1]
        for a, b in zip(other[2], runs[0][2]):
            np.testing.assert_array_equal(a, b)
    keras = pytest.importorskip("keras") if _keras() else None
    theirs = _ignore_run(keras, True, weights, how)
    for key, values in theirs[0].items():
        np.testing.assert_allclose(runs[1][0][key], values, rtol=2e-4, err_msg=key)
    np.testing.assert_allclose(runs[1][1], theirs[1], rtol=2e-4)
    for a, b in zip(runs[1][2], theirs[2]):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-4)


def test_graph_ignore_class_per_timestep_as_keras(session):
    """Labels per row of an N-D output: the mean over the batch's non-ignored elements, as Keras."""
    keras = _keras()
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 3, 6)).astype("float32")
    y = rng.integers(-1, 4, (50, 3)).astype("int32")
    y[y == -1] = 9
    w = [rng.normal(0, 0.5, (6, 4)).astype("float32"), np.zeros(4, "float32")]
    got = []
    for k in (cdnn, keras):
        i = k.Input((3, 6))
        m = k.Model(i, k.layers.Dense(4, activation="softmax")(i))
        m.set_weights(w)
        m.compile(optimizer=k.optimizers.SGD(0.5), loss=k.losses.SparseCategoricalCrossentropy(ignore_class=9))
        h = m.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0)
        got.append(h.history["loss"] + [m.evaluate(x, y, batch_size=16, verbose=0)] + list(m.get_weights()[0].ravel()))
    np.testing.assert_allclose(got[0], got[1], rtol=2e-5, atol=1e-6)


def test_layer_call_on_arrays_in_training_mode_as_keras(session):
    """layer(x, training=True): Dropout drops, BatchNormalization uses and records the batch's statistics."""
    keras = _keras()
    x = np.random.default_rng(0).normal(3, 2, (3000, 4)).astype("float32")
    got = []
    for k in (cdnn, keras):
        drop, bn = k.layers.Dropout(0.5), k.layers.BatchNormalization()
        out = [_summary("drop", drop(np.ones_like(x), training=t), np.ones_like(x)) for t in (None, True)]
        got.append((out, np.asarray(bn(x, training=True)), bn.get_weights()))
    assert got[0][0] == got[1][0]
    np.testing.assert_allclose(got[0][1], got[1][1], rtol=1e-4, atol=1e-4)
    for a, b in zip(got[0][2], got[1][2]):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
