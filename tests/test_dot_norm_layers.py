"""Dot, UnitNormalization and RMSNormalization: the C graph ops against the NumPy oracle (tests/reference.py)
and finite differences, bit-identical on 1 and 2 threads; the layers against real Keras 3 (configs, values,
training with SGD and Adam from the same weights, .keras files both ways), ONNX Runtime, and refusals.
"""

import os

import numpy as np
import pytest
import reference as ref
from test_graph_core import RNG, G, assert_close, core_grads, core_loss, f32, rand

import cdnn
from cdnn import _core
from cdnn import keras as ck

L = ck.layers
WIDTHS = [1, 3, 7, 33, 784, 1000]
OPS = ["dot", "dot_normalize", "unitnorm", "rmsnorm"]


def _keras():
    os.environ.setdefault("KERAS_BACKEND", "jax")
    pytest.importorskip("jax")
    return pytest.importorskip("keras")


# ------------------------------------------------------------ the C ops


@pytest.fixture(autouse=True)
def _seeded():
    """The graph builders' generator (test_graph_core's) reseeded for each test and restored after it: no test's
    weights depend on the tests run before it."""
    saved = RNG.bit_generator.state
    RNG.bit_generator.state = np.random.default_rng(99).bit_generator.state
    yield
    RNG.bit_generator.state = saved


def op_graph(op, width, inputs=5, hidden_act=("tanh", "sigmoid")):
    """input -> Dense(width) [-> a second Dense for dot] -> op -> Dense(3) -> mse."""
    g = G()
    x = g.input(inputs)
    h = g.dense(x, width, hidden_act[0])
    if op.startswith("dot"):
        h2 = g.dense(x, width, hidden_act[1])
        y = g.add("dot", [h, h2], (1,), epsilon=1e-7 if op == "dot_normalize" else 0.0)
    elif op == "unitnorm":
        y = g.add("unitnorm", [h], (width,), epsilon=1e-12)
    else:
        gamma = f32(1 + 0.2 * RNG.standard_normal(width))
        y = g.add("rmsnorm", [h], (width,), gamma=gamma, beta=None, epsilon=1e-6)
    g.out(g.dense(y, 3))
    return g


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("op", OPS)
def test_forward_and_gradients_match_reference(op, width, threads):
    g = op_graph(op, width)
    n = 17
    x, y = rand(n, 5), rand(n, 3)
    grads, batch_loss = core_grads(g, [x], [y])
    total, _, want, vals = ref.Graph(g.nodes, g.inputs, g.outputs).gradients([x], [y], training=True)
    assert batch_loss / n == pytest.approx(total, rel=1e-5)
    assert set(grads) == set(want)
    top = max(np.abs(w).max() for w in want.values())
    for key in grads:
        # float32 rounding, amplified by 1 / ||x|| where a norm is small, against the gradients' own scale
        scale = max(np.abs(want[key]).max(), 0.1 * top) + 1e-3
        assert_close(grads[key], want[key], 1e-3, 2e-5 * scale + 1e-6, f"{op} grad {key}")
    net = _core.Graph(g.nodes, g.inputs, g.outputs, {"name": "sgd"})
    got = net.predict([x], nodes=list(range(len(g.nodes))))
    for i, (a, b) in enumerate(zip(got, vals)):
        assert_close(a, b, 1e-5, 1e-6, f"{op} node {i}")


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("op", OPS)
def test_gradients_finite_differences(op, width):
    """The core's gradient of the first Dense's kernel (each dot input's, for dot) against central differences
    of the core's own loss along random directions of the whole kernel (a float32 loss resolves about 1e-5 at
    this step: a direction over every weight gives a derivative far above that)."""
    g = op_graph(op, width)
    n = 8
    x, y = rand(n, 5), rand(n, 3)
    grads, _ = core_grads(g, [x], [y])
    rng = np.random.default_rng(width)
    for node in (1, 2) if op.startswith("dot") else (1,):
        W = g.nodes[node]["W"]
        old = W.copy()
        for _ in range(2):
            v = rng.choice([-1.0, 1.0], W.shape)

            def central(h, W=W, old=old, v=v):
                W[...] = old + h * v
                lp = core_loss(g, [x], [y])
                W[...] = old - h * v
                lm = core_loss(g, [x], [y])
                W[...] = old
                return (lp - lm) / (2 * h)

            fd = (4 * central(5e-3) - central(1e-2)) / 3  # Richardson: the step's error of order h**4
            assert float((grads[(node, "W")] * v).sum()) == pytest.approx(fd, rel=1e-2, abs=2e-5), (op, width)


@pytest.mark.parametrize("normalize", [False, True])
def test_dot_of_a_tensor_with_itself(normalize, threads):
    """Both of the dot's gradients reach one node (the second added to the first)."""
    g = G()
    h = g.dense(g.input(5), 7, "tanh")
    g.out(g.dense(g.add("dot", [h, h], (1,), epsilon=1e-7 if normalize else 0.0), 2))
    x, y = rand(11, 5), rand(11, 2)
    grads, _ = core_grads(g, [x], [y])
    _, _, want, _ = ref.Graph(g.nodes, g.inputs, g.outputs).gradients([x], [y], training=True)
    for key in want:
        assert_close(grads[key], want[key], 1e-3, 1e-5 * (np.abs(want[key]).max() + 1e-2), str(key))


def _slots(nodes):
    """Adam's two slots for every trainable parameter (the rmsnorm's scale included)."""
    for d in nodes:
        keys = {"dense": ("W", "b"), "rmsnorm": ("gamma", "beta")}.get(d["op"])
        if keys:
            d["slots"] = [None if d.get(k) is None else np.zeros_like(d[k]) for k in keys for _ in (0, 1)]
    return nodes


def _big_graph():
    g = G()
    a, b = g.input(784), g.input(784)
    ha = g.add("rmsnorm", [g.dense(a, 64, "tanh")], (64,), gamma=f32(1 + 0.1 * RNG.standard_normal(64)), epsilon=1e-6)
    hb = g.add("unitnorm", [g.dense(b, 64, "relu")], (64,), epsilon=1e-12)
    d1 = g.add("dot", [ha, hb], (1,), epsilon=1e-7)
    d2 = g.add("dot", [ha, g.dense(a, 64)], (1,), epsilon=0.0)
    g.out(g.dense(g.add("concatenate", [d1, d2, hb], (66,)), 10, "softmax"), "sparse_categorical_crossentropy")
    return g


def test_one_and_two_threads_bit_identical():
    import copy

    g = _big_graph()
    n = 300
    xs, ys = [rand(n, 784), rand(n, 784)], [RNG.integers(0, 10, n).astype(np.int32)]
    results = []
    for t in (1, 2):
        prev = _core.get_num_threads()
        _core.set_num_threads(t)
        try:
            nodes = _slots(copy.deepcopy(g.nodes))
            net = _core.Graph(nodes, g.inputs, g.outputs, {"name": "adam", "learning_rate": 0.01})
            bl, bc = np.zeros(5), np.zeros((5, 1))
            for step in range(2):
                assert net.train_run(xs, ys, np.arange(n, dtype=np.int32), 0, 5, 64, step * 5, 3, bl, bc) == 5
            results.append((nodes, bl.copy(), net.predict(xs)[0]))
        finally:
            _core.set_num_threads(prev)
    (n1, l1, p1), (n2, l2, p2) = results
    assert np.array_equal(l1, l2) and np.array_equal(p1, p2)
    for d1, d2, d0 in zip(n1, n2, g.nodes):
        for k in ("W", "b", "gamma"):
            if d1.get(k) is not None:
                assert np.array_equal(d1[k], d2[k]), k
                assert not np.array_equal(d1[k], d0[k]), k  # it trained


def test_bad_descriptions_refused():
    g = op_graph("dot", 4)
    g.nodes[3]["shape"] = (4,)
    with pytest.raises(ValueError, match="a dot needs two inputs of one shape"):
        _core.Graph(g.nodes, g.inputs, g.outputs, {"name": "sgd"})
    g = op_graph("rmsnorm", 4)
    g.nodes[2]["beta"] = f32(np.zeros(4))
    with pytest.raises(ValueError, match="no `beta`"):
        _core.Graph(g.nodes, g.inputs, g.outputs, {"name": "sgd"})
    g = op_graph("unitnorm", 4)
    g.nodes[2]["epsilon"] = 0.0
    with pytest.raises(ValueError, match="epsilon"):
        _core.Graph(g.nodes, g.inputs, g.outputs, {"name": "sgd"})


# ------------------------------------------------------------ the layers against Keras


def _keras_layer(keras, cls, kwargs):
    return getattr(keras.layers, cls)(**kwargs)


CONFIGS = [
    ("Dot", {"axes": 1}),
    ("Dot", {"axes": (1, 1), "normalize": True}),
    ("Dot", {"axes": [-1, -1]}),
    ("UnitNormalization", {}),
    ("UnitNormalization", {"axis": [1]}),
    ("RMSNormalization", {"epsilon": 1e-4}),
    ("RMSNormalization", {}),
]


@pytest.mark.parametrize("cls, kwargs", CONFIGS)
def test_configs_as_keras_before_and_after_build(session, cls, kwargs):
    keras = _keras()
    ours, theirs = getattr(L, cls)(**kwargs), _keras_layer(keras, cls, kwargs)

    def strip(cfg):
        return {k: v for k, v in cfg.items() if k not in ("name", "dtype", "trainable")}

    assert strip(ours.get_config()) == strip(theirs.get_config())
    for lib, layer in ((ck, ours), (keras, theirs)):
        layer([lib.Input((6,)), lib.Input((6,))] if cls == "Dot" else lib.Input((6,)))
    assert strip(ours.get_config()) == strip(theirs.get_config())  # RMSNormalization's axis: a list once built
    assert type(ours).from_config(ours.get_config()).get_config() == ours.get_config()
    assert ours.count_params() == theirs.count_params() == (6 if cls == "RMSNormalization" else 0)
    assert [w.shape for w in ours.weights] == [tuple(w.shape) for w in theirs.weights]


@pytest.mark.parametrize("width", WIDTHS)
def test_eager_values_as_keras(session, width):
    keras = _keras()
    rng = np.random.default_rng(width)
    a, b = f32(rng.normal(size=(9, width))), f32(rng.normal(size=(9, width)))
    a[0] = 0.0  # a zero row: Keras' epsilon caps the inverse norm
    b[1] = 1e-9
    rms, krms = L.RMSNormalization(), keras.layers.RMSNormalization()
    rms.build((width,))
    krms.build((None, width))
    scale = f32(rng.normal(size=width))
    rms.set_weights([scale])
    krms.set_weights([scale])
    pairs = [
        (L.UnitNormalization()(a), keras.layers.UnitNormalization()(a)),
        (L.UnitNormalization()(b), keras.layers.UnitNormalization()(b)),
        (rms(a), krms(a)),
        (L.Dot(axes=1)([a, b]), keras.layers.Dot(axes=1)([a, b])),
        (L.dot([a, b], axes=-1, normalize=True), keras.layers.dot([a, b], axes=-1, normalize=True)),
        (L.Dot(axes=(1, 1), normalize=True)([b, b]), keras.layers.Dot(axes=(1, 1), normalize=True)([b, b])),
    ]
    for k, (got, want) in enumerate(pairs):
        want = np.asarray(want)
        assert got.shape == want.shape, k
        np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-6 * max(1.0, np.abs(want).max()), err_msg=str(k))


def _models(keras, lib, width=8):
    """Two inputs, a shared RMSNormalization (one scale, two calls), UnitNormalization, both Dot forms."""
    a, b = lib.Input((width,), name="a"), lib.Input((width,), name="b")
    rms = lib.layers.RMSNormalization(epsilon=1e-3)
    ha = rms(lib.layers.Dense(width, activation="tanh")(a))
    hb = lib.layers.UnitNormalization()(rms(lib.layers.Dense(width, activation="sigmoid")(b)))
    d1 = lib.layers.Dot(axes=1, normalize=True)([ha, hb])
    d2 = lib.layers.dot([ha, lib.layers.Dense(width)(b)], axes=-1)
    out = lib.layers.Dense(2)(lib.layers.Concatenate()([d1, d2, ha]))
    return lib.Model([a, b], out, name="dotnorm")


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_training_matches_keras(session, optimizer):
    keras = _keras()
    keras.utils.set_random_seed(0)
    ours, theirs = _models(keras, ck), _models(keras, keras)
    theirs.set_weights([w + f32(RNG.normal(0, 0.1, w.shape)) for w in theirs.get_weights()])
    ours.set_weights(theirs.get_weights())
    rng = np.random.default_rng(1)
    x = [f32(rng.normal(size=(48, 8))), f32(rng.normal(size=(48, 8)))]
    y = f32(rng.normal(size=(48, 2)))
    name = {"sgd": "SGD", "adam": "Adam"}[optimizer]
    ours.compile(optimizer=getattr(ck.optimizers, name)(learning_rate=0.05), loss="mse")
    theirs.compile(optimizer=getattr(keras.optimizers, name)(learning_rate=0.05), loss="mse")
    h1 = ours.fit(x, y, epochs=3, batch_size=16, shuffle=False, verbose=0)
    h2 = theirs.fit(x, y, epochs=3, batch_size=16, shuffle=False, verbose=0)
    np.testing.assert_allclose(h1.history["loss"], h2.history["loss"], rtol=1e-5)
    for u, v in zip(ours.get_weights(), theirs.get_weights()):
        np.testing.assert_allclose(u, np.asarray(v), rtol=1e-4, atol=2e-6)
    assert not np.array_equal(ours.get_weights()[2], np.ones(8))  # the shared scale trained
    np.testing.assert_allclose(ours.predict(x, verbose=0), theirs.predict(x, verbose=0), rtol=1e-4, atol=2e-5)


def test_frozen_rmsnormalization_and_summary(session, capsys):
    model = ck.Sequential([L.Input((5,)), L.Dense(4), L.UnitNormalization(), L.RMSNormalization(), L.Dense(1)])
    model.layers[2].trainable = False
    model.compile("adam", "mse")
    model.summary()
    text = capsys.readouterr().out
    assert "(UnitNormalization)" in text and "(RMSNormalization)" in text
    assert "Trainable params: 29" in text and "Non-trainable params: 4" in text
    before = model.layers[2].get_weights()[0].copy()
    model.fit(np.ones((8, 5), np.float32), np.zeros((8, 1), np.float32), epochs=2, verbose=0)
    assert np.array_equal(model.layers[2].scale, before)


def test_summary_as_keras(session, capsys, monkeypatch):
    keras = _keras()
    texts = []
    for lib in (keras, ck):
        lib.utils.clear_session()
        a, b = lib.Input((6,)), lib.Input((6,))
        d = lib.layers.Dot(axes=1, normalize=True)(
            [lib.layers.RMSNormalization()(a), lib.layers.UnitNormalization()(b)]
        )
        lib.Model([a, b], d, name="m").summary()
        texts.append(capsys.readouterr().out)
    assert texts[0] == texts[1] and "Trainable params: 6 (24.00 B)" in texts[1]


def test_keras_files_both_ways(session, tmp_path):
    keras = _keras()
    rng = np.random.default_rng(2)
    x = [f32(rng.normal(size=(16, 8))), f32(rng.normal(size=(16, 8)))]
    y = f32(rng.normal(size=(16, 2)))
    ours = _models(keras, ck)
    ours.compile("adam", "mse")
    ours.fit(x, y, epochs=1, batch_size=8, verbose=0)
    ours.save(tmp_path / "c.keras")
    km = keras.models.load_model(tmp_path / "c.keras")
    np.testing.assert_allclose(km.predict(x, verbose=0), ours.predict(x, verbose=0), rtol=1e-5, atol=1e-6)
    assert [type(lr).__name__ for lr in km.layers] == [type(lr).__name__ for lr in ours.layers]
    km.fit(x, y, epochs=1, batch_size=8, verbose=0)
    km.save(tmp_path / "k.keras")
    back = ck.models.load_model(tmp_path / "k.keras")
    np.testing.assert_allclose(back.predict(x, verbose=0), km.predict(x, verbose=0), rtol=1e-5, atol=1e-6)
    assert int(back.optimizer.iterations) == 4
    assert back.get_layer(ours.layers[4].name).get_config()["axis"] == [-1]


@pytest.mark.parametrize("opset", [13, None])
def test_onnx_export_runs_in_onnxruntime(session, tmp_path, opset):
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    model = _models(None, ck, width=33)
    rng = np.random.default_rng(3)
    x = [f32(rng.normal(size=(7, 33))), f32(rng.normal(size=(7, 33)))]
    x[0][2] = 0.0
    model.export(str(tmp_path / "m.onnx"), format="onnx", opset_version=opset, verbose=False)
    sess = ort.InferenceSession(str(tmp_path / "m.onnx"))
    got = sess.run(None, {"a": x[0], "b": x[1]})[0]
    np.testing.assert_allclose(got, model.predict(x, verbose=0), rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------ refusals


def _call(layer, *shapes):
    ins = [L.Input(s) for s in shapes]
    return layer(ins if len(ins) > 1 or isinstance(layer, L.Dot) else ins[0])


BAD = [
    (lambda: L.Dot(axes="a"), TypeError, "Invalid type for argument `axes`"),
    (lambda: L.Dot(axes=(1, 1, 1)), ValueError, "it should contain two elements"),
    (lambda: L.Dot(axes=(1, 1.0)), ValueError, "list elements should be integers"),
    (lambda: _call(L.Dot(axes=1, name="d"), (3, 4), (3, 4)), ValueError, r"'d' \(Dot\).*two 2-D inputs"),
    (lambda: _call(L.Dot(axes=0), (4,), (4,)), ValueError, "batch_dot over axis 0"),
    (lambda: _call(L.Dot(axes=2), (4,), (4,)), ValueError, "out of range"),
    (lambda: _call(L.Dot(axes=1), (3,), (4,)), ValueError, r"axis values 3 \(at axis 1\) != 4"),
    (lambda: _call(L.Dot(axes=1), (4,), (4,), (4,)), ValueError, "exactly 2 inputs"),
    (lambda: L.Dot(axes=1)(L.Input((4,))), ValueError, "exactly 2 inputs"),
    (lambda: L.UnitNormalization(axis=[1, 2]), ValueError, "list of one int"),
    (lambda: L.UnitNormalization(axis="x"), ValueError, "axis"),
    (lambda: _call(L.UnitNormalization(axis=1), (3, 4)), ValueError, "not the last axis"),
    (lambda: _call(L.UnitNormalization(axis=0), (4,)), ValueError, "not the last axis"),
    (lambda: _call(L.RMSNormalization(axis=3), (4,)), ValueError, "out of bounds"),
    (lambda: L.RMSNormalization(epsilon=0), ValueError, "epsilon"),
    (lambda: L.RMSNormalization(epsilon="a"), ValueError, "epsilon"),
]


@pytest.mark.parametrize("make, exc, match", BAD)
def test_bad_arguments_and_shapes_refused(session, make, exc, match):
    with pytest.raises(exc, match=match):
        make()


def test_rmsnormalization_reused_on_another_width_refused(session):
    rms = L.RMSNormalization(name="r")
    rms(np.ones((2, 4), np.float32))
    with pytest.raises(ValueError, match=r"'r' \(RMSNormalization\).*value 4"):
        rms(np.ones((2, 5), np.float32))
    assert cdnn.layers.deserialize({"class_name": "Dot", "config": {"axes": [1, 1]}}).axes == [1, 1]


def test_zero_rows_train_to_finite_values(session):
    """A zero vector's inverse norm is capped at 1 / epsilon (Keras' formula): no NaN in the loss or the weights."""
    a, b = ck.Input((4,)), ck.Input((4,))
    d = L.Dot(axes=1, normalize=True)([L.UnitNormalization()(a), L.RMSNormalization()(b)])
    model = ck.Model([a, b], L.Dense(1)(d))
    model.compile("adam", "mse")
    x = np.zeros((8, 4), np.float32)
    history = model.fit([x, x], np.ones((8, 1), np.float32), epochs=2, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    assert all(np.isfinite(w).all() for w in model.get_weights())
