"""Shared layers: one layer object (Dense, BatchNormalization, LayerNormalization) called on several tensors.

One set of weights; its gradient is the sum of the calls' gradients (the NumPy oracle
``reference.shared_dense_backward`` and finite differences), one optimizer update a step; a
BatchNormalization called twice in training normalizes each call with its own batch statistics and
updates its moving statistics once per call, in Keras' execution order. Checked against real Keras 3
(JAX backend) from the same initial weights; bit-identical with 1 and 2 threads; saved and loaded both
ways in ``.keras`` files, exported to ONNX with the weights written once.
"""

import os
import sys

import numpy as np
import pytest

import cdnn

sys.path.insert(0, os.path.dirname(__file__))
import reference as ref  # noqa: E402


def _keras():
    os.environ.setdefault("KERAS_BACKEND", "jax")
    pytest.importorskip("jax")
    return pytest.importorskip("keras")


def _data(n=32, f=4, units=3, seed=0):
    rng = np.random.default_rng(seed)
    a = (rng.normal(size=(n, f)) + 1).astype("float32")
    b = (rng.normal(size=(n, f)) * 3 - 2).astype("float32")
    y = rng.normal(size=(n, units)).astype("float32")
    return a, b, y


def _towers(k, f=4, units=7, out=3):
    """Two inputs through one shared Dense -> BatchNormalization -> LayerNormalization tower, added."""
    ia, ib = k.Input((f,)), k.Input((f,))
    d = k.layers.Dense(units, activation="tanh")
    bn = k.layers.BatchNormalization(momentum=0.5)
    ln = k.layers.LayerNormalization()
    h = k.layers.Add()([ln(bn(d(ia))), ln(bn(d(ib)))])
    return k.Model([ia, ib], k.layers.Dense(out)(h)), d


def _weights(model, seed=1):
    rng = np.random.default_rng(seed)
    ws = [(rng.normal(size=w.shape) * 0.5).astype("float32") for w in model.get_weights()]
    ws[5] = np.abs(ws[5]) + 0.5  # the moving variance
    return ws


def _opt(k, name):
    return {"sgd": lambda: k.optimizers.SGD(0.1), "adam": lambda: k.optimizers.Adam(0.01)}[name]()


@pytest.mark.parametrize("opt", ["sgd", "adam"])
def test_shared_towers_match_real_keras(session, opt):
    keras = _keras()
    a, b, y = _data()
    ours, _ = _towers(cdnn)
    theirs, _ = _towers(keras)
    ws = _weights(ours)
    ours.set_weights(ws)
    theirs.set_weights(ws)
    for m, k in ((ours, cdnn), (theirs, keras)):
        m.compile(optimizer=_opt(k, opt), loss="mse")
        m.fit([a, b], y, epochs=3, batch_size=16, verbose=0, shuffle=False)
    assert len(ours.get_weights()) == len(theirs.get_weights()) == 10
    for x, z in zip(ours.get_weights(), theirs.get_weights()):
        np.testing.assert_allclose(x, np.asarray(z), rtol=1e-4, atol=2e-6)
    np.testing.assert_allclose(
        ours.predict([a, b], verbose=0), np.asarray(theirs.predict([a, b], verbose=0)), rtol=1e-4, atol=1e-5
    )


def test_shared_layer_counts_and_summary_match_real_keras(session, capsys):
    keras = _keras()
    ours, _ = _towers(cdnn)
    theirs, _ = _towers(keras)
    assert ours.count_params() == theirs.count_params() == 101
    assert [w.shape for w in ours.trainable_weights] == [tuple(w.shape) for w in theirs.trainable_weights]
    ours.summary()
    text = capsys.readouterr().out
    assert "input_layer[0][0" in text and "input_layer_1[0]" in text  # both calls of the shared Dense
    assert "Total params: 101" in text


@pytest.mark.parametrize("units", [1, 3, 7, 33])
def test_shared_dense_gradient_is_the_sum_of_its_calls(session, units):
    """One SGD step on y = d(a) + d(b) (mse) against reference.shared_dense_backward."""
    a, b, _ = _data(n=8, f=5, seed=units)
    y = np.random.default_rng(units + 1).normal(size=(8, units)).astype("float32")
    ia, ib = cdnn.Input((5,)), cdnn.Input((5,))
    d = cdnn.layers.Dense(units, activation="tanh")
    model = cdnn.Model([ia, ib], cdnn.layers.Add()([d(ia), d(ib)]))
    W, bias = (w.astype(np.float64) for w in d.get_weights())
    model.compile(optimizer=cdnn.optimizers.SGD(0.5), loss="mse")
    model.fit([a, b], y, epochs=1, batch_size=8, verbose=0, shuffle=False)
    xs = [a.astype(np.float64), b.astype(np.float64)]
    zs, outs = zip(*(ref.dense_forward(x, W, bias, "tanh") for x in xs))
    up = 2.0 * (sum(outs) - y) / y.size  # d mse / d output, for each call (Add passes it through)
    dW, db, _ = ref.shared_dense_backward(xs, W, list(zs), [up, up], "tanh")
    got_W, got_b = d.get_weights()
    np.testing.assert_allclose(got_W, W - 0.5 * dW, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got_b, bias - 0.5 * db, rtol=1e-5, atol=1e-6)

    # finite differences of the float64 loss agree with the oracle's summed gradient
    def loss(Wp):
        return float((((np.tanh(xs[0] @ Wp + bias) + np.tanh(xs[1] @ Wp + bias)) - y) ** 2).mean())

    eps = 1e-6
    for i, j in [(0, 0), (4, units - 1), (2, units // 2)]:
        e = np.zeros_like(W)
        e[i, j] = eps
        assert abs((loss(W + e) - loss(W - e)) / (2 * eps) - dW[i, j]) < 1e-6


@pytest.mark.parametrize("rules", [False, True], ids=["plain", "rules-global-clipnorm"])
def test_shared_layer_one_and_two_threads_bit_identical(session, rules):
    rng = np.random.default_rng(3)
    a = rng.normal(size=(256, 64)).astype("float32")
    b = rng.normal(size=(256, 64)).astype("float32")
    y = rng.normal(size=(256, 5)).astype("float32")
    results = []
    for threads in (1, 2):
        cdnn.utils.clear_session()
        cdnn.utils.set_random_seed(5)
        cdnn.set_num_threads(threads)
        if rules:  # the whole-gradient path: penalties, constraints, the global norm over every variable
            model = _ruled_towers(cdnn, f=64, units=33, out=5)
            model.compile(optimizer=cdnn.optimizers.Adam(0.01, global_clipnorm=0.3), loss="mse")
        else:
            model, _ = _towers(cdnn, f=64, units=33, out=5)
            model.compile(optimizer="adam", loss="mse")
        h = model.fit([a, b], y, epochs=2, batch_size=64, verbose=0, shuffle=False).history["loss"]
        results.append((h, model.get_weights()))
    assert results[0][0] == results[1][0]
    for x, z in zip(results[0][1], results[1][1]):
        np.testing.assert_array_equal(x, z)


def test_frozen_shared_layer_keeps_its_bits(session):
    a, b, y = _data()
    model, d = _towers(cdnn)
    d.trainable = False
    before = [w.copy() for w in d.get_weights()]
    model.compile(optimizer="adam", loss="mse")
    model.fit([a, b], y, epochs=2, batch_size=16, verbose=0)
    for x, z in zip(before, d.get_weights()):
        np.testing.assert_array_equal(x, z)
    assert not np.allclose(model.layers[-1].get_weights()[0], 0)


def test_get_and_set_weights_once(session):
    a, b, _ = _data()
    model, d = _towers(cdnn)
    ws = _weights(model)
    model.set_weights(ws)
    assert len(model.get_weights()) == 10
    np.testing.assert_array_equal(d.get_weights()[0], ws[0])
    first = model.predict([a, b], verbose=0)
    model.set_weights([w * 0.5 for w in ws[:5]] + [ws[5]] + [w * 0.5 for w in ws[6:]])
    assert not np.allclose(model.predict([a, b], verbose=0), first)


def test_real_keras_files_both_ways(session, tmp_path):
    keras = _keras()
    a, b, y = _data()
    ours, _ = _towers(cdnn)
    ours.set_weights(_weights(ours))
    ours.save(tmp_path / "ours.keras")
    loaded = keras.models.load_model(tmp_path / "ours.keras")
    np.testing.assert_allclose(
        np.asarray(loaded.predict([a, b], verbose=0)), ours.predict([a, b], verbose=0), rtol=1e-5, atol=1e-5
    )
    theirs, _ = _towers(keras)
    theirs.set_weights(_weights(theirs, seed=2))
    theirs.save(tmp_path / "theirs.keras")
    back = cdnn.models.load_model(tmp_path / "theirs.keras")
    np.testing.assert_allclose(
        back.predict([a, b], verbose=0), np.asarray(theirs.predict([a, b], verbose=0)), rtol=1e-5, atol=1e-5
    )
    assert back.count_params() == 101
    back.compile(optimizer="sgd", loss="mse")
    back.fit([a, b], y, epochs=1, verbose=0)  # the loaded model trains its shared layers


def test_onnx_export_writes_shared_weights_once_onnxruntime(session, tmp_path):
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    a, b, _ = _data()
    model, d = _towers(cdnn)
    model.set_weights(_weights(model))
    path = tmp_path / "m.onnx"
    model.export(str(path), format="onnx")
    graph = onnx.load(str(path)).graph
    kernel = d.get_weights()[0]
    same = [t for t in graph.initializer if tuple(t.dims) == kernel.shape]
    assert len(same) == 1
    sess = ort.InferenceSession(str(path))
    feeds = {i.name: x for i, x in zip(sess.get_inputs(), (a, b))}
    np.testing.assert_allclose(sess.run(None, feeds)[0], model.predict([a, b], verbose=0), rtol=1e-4, atol=1e-5)


def test_reuse_with_incompatible_shape_names_the_layer(session):
    d = cdnn.layers.Dense(3, name="tower")
    d(cdnn.Input((4,)))
    with pytest.raises(ValueError, match=r"'tower'.*value 4.*\(None, 5\)"):
        d(cdnn.Input((5,)))


def _ruled_towers(k, f=4, units=7, out=3):
    """The shared towers with weight rules on every shared layer (whole-gradient path)."""
    ia, ib = k.Input((f,)), k.Input((f,))
    d = k.layers.Dense(
        units,
        activation="tanh",
        kernel_regularizer=k.regularizers.L1L2(0.01, 0.02),
        bias_regularizer=k.regularizers.L2(0.05),
        kernel_constraint=k.constraints.MaxNorm(1.5),
    )
    bn = k.layers.BatchNormalization(momentum=0.5, gamma_regularizer=k.regularizers.L2(0.1))
    ln = k.layers.LayerNormalization(beta_constraint=k.constraints.NonNeg())
    h = k.layers.Add()([ln(bn(d(ia))), ln(bn(d(ib)))])
    return k.Model([ia, ib], k.layers.Dense(out)(h))


@pytest.mark.parametrize(
    "opt",
    [
        ("SGD", {"learning_rate": 0.1}),
        ("Adam", {"learning_rate": 0.01, "amsgrad": True, "clipnorm": 0.5}),
        ("Adam", {"learning_rate": 0.01, "global_clipnorm": 0.3}),
        ("SGD", {"learning_rate": 0.1, "use_ema": True, "ema_momentum": 0.9}),
        ("Adafactor", {"learning_rate": 0.05}),
    ],
    ids=["sgd-rules", "amsgrad-clipnorm", "global-clipnorm", "ema", "adafactor"],
)
def test_shared_layers_with_rules_and_whole_gradient_options_match_real_keras(session, opt):
    """A shared layer's penalty and constraint apply once to its one set of weights, after the summed gradient."""
    keras = _keras()
    a, b, y = _data()
    ours, theirs = _ruled_towers(cdnn), _ruled_towers(keras)
    ws = _weights(ours)
    ours.set_weights(ws)
    theirs.set_weights(ws)
    name, kw = opt
    losses = []
    for m, k in ((ours, cdnn), (theirs, keras)):
        m.compile(optimizer=getattr(k.optimizers, name)(**kw), loss="mse")
        losses.append(m.fit([a, b], y, epochs=3, batch_size=8, verbose=0, shuffle=False).history["loss"])
    for x, z in zip(ours.get_weights(), theirs.get_weights()):
        np.testing.assert_allclose(x, np.asarray(z), rtol=2e-4, atol=2e-5)
    np.testing.assert_allclose(losses[0], losses[1], rtol=2e-4)


def test_shared_dense_chained_matches_real_keras(session):
    """d(d(x)): the calls at different depths, against Keras."""
    keras = _keras()
    a, _, _ = _data(f=3)
    y = np.random.default_rng(9).normal(size=(32, 3)).astype("float32")

    def chained(k):
        x = k.Input((3,))
        d = k.layers.Dense(3, activation="tanh")
        return k.Model(x, d(d(x)))

    ours, theirs = chained(cdnn), chained(keras)
    ws = [(np.random.default_rng(4).normal(size=w.shape) * 0.5).astype("float32") for w in ours.get_weights()]
    ours.set_weights(ws)
    theirs.set_weights(ws)
    for m, k in ((ours, cdnn), (theirs, keras)):
        m.compile(optimizer=_opt(k, "adam"), loss="mse")
        m.fit(a, y, epochs=2, batch_size=8, verbose=0, shuffle=False)
    for x, z in zip(ours.get_weights(), theirs.get_weights()):
        np.testing.assert_allclose(x, np.asarray(z), rtol=1e-4, atol=2e-6)
