"""ELU, PReLU, GaussianDropout, AlphaDropout and ActivityRegularization (Keras 3's layers).

- Graph ops (prelu, elu activations, gaussian_dropout, alpha_dropout) against tests/reference.py's
  NumPy graph and central finite differences, widths 1 to 1000, 1 and 2 threads.
- PReLU and ActivityRegularization trained against real Keras (same initial weights, SGD and Adam).
- The noise layers' multipliers: mean, variance, keyed by the seed, the identity in inference.
- Configs, summary, .keras files both ways with real Keras, ONNX with onnxruntime, eager calls,
  bad arguments refused.
"""

import os

import numpy as np
import pytest
import reference as ref
from test_graph_core import (
    G,
    assert_close,
    assert_grads_match_reference,
    core_grads,
    core_graph,
    core_loss,
    f32,
    rand,
    ref_graph,
)

import cdnn
from cdnn import layers as L

WIDTHS = [1, 3, 7, 33, 784, 1000]


def _keras():
    """Real Keras 3 on JAX, the oracle; the test is skipped where it is not installed."""
    os.environ.setdefault("KERAS_BACKEND", "jax")
    pytest.importorskip("jax")
    return pytest.importorskip("keras")


def op_graph(op, width, rows=1):
    """input -> Dense(tanh) -> op -> Dense(3) -> mse."""
    g = G()
    x = g.input(*((rows, 5) if rows > 1 else (5,)))
    h = g.dense(x, width, "tanh", scale=2.0 / np.sqrt(5))
    s = g.shape(h)
    if op == "elu":
        y = g.add("activation", [h], s, activation="elu", alpha=0.7)
    elif op.startswith("prelu"):
        shared = op == "prelu_shared"
        ashape = (1,) * len(s) if shared else (1,) * (len(s) - 1) + (s[-1],) if op == "prelu_cols" else s
        ar = 1 if shared or op == "prelu_cols" else rows
        ac = 1 if shared else s[-1]
        y = g.add("prelu", [h], s, gamma=rand(*ashape, scale=0.5), beta=None, alpha_shape=(ar, ac))
    else:
        raise AssertionError(op)
    g.out(g.dense(y, 3))
    return g


PRELUS = ["prelu", "prelu_shared"]


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("op", ["elu"] + PRELUS)
def test_gradients_match_reference(op, width, threads):
    g = op_graph(op, width)
    n = 29
    x, y = rand(n, 5), rand(n, 3)
    assert_grads_match_reference(g, [x], [y], op)


@pytest.mark.parametrize("op", ["elu", "prelu", "prelu_shared", "prelu_cols"])
def test_three_dimensional_inputs_match_reference(op, threads):
    g = op_graph(op, 4, rows=3)
    n = 11
    x, y = rand(n, 15), rand(n, 9)
    grads, _ = core_grads(g, [x], [y])
    _, _, want, vals = ref_graph(g).gradients([x], [y], training=True)
    for key in grads:
        assert_close(grads[key], want[key], 1e-3, 1e-5 * (np.abs(want[key]).max() + 1), f"{op} {key}")
    net, _ = core_graph(g, {"name": "sgd"})
    got = net.predict([x], nodes=[2])[0]
    assert_close(got, ref_graph(g).forward([x], False)[0][2], 1e-5, 1e-6, f"{op} forward")


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("op", ["elu", "prelu"])
def test_finite_differences(op, width):
    """The core's gradients (first kernel, and alpha) against central differences of its own loss."""
    g = op_graph(op, width)
    n = 12
    rng = np.random.default_rng(width)
    x, y = rand(n, 5, rng=rng), rand(n, 3, rng=rng)
    grads, _ = core_grads(g, [x], [y])
    h = 1e-2
    # kernel entries whose step moves no value of the op's input across the kink at 0
    z = ref_graph(g).forward([x], False)[0][1]
    safe = [(r, c) for r in range(5) for c in range(width) if (np.abs(z[:, c]) > 3 * h * np.abs(x[:, r])).all()]
    checks = [(1, "W", safe[k]) for k in rng.choice(len(safe), min(3, len(safe)), replace=False)]
    if op == "prelu":
        checks += [(2, "gamma", (int(rng.integers(width)),)) for _ in range(3)]
    for node, key, idx in checks:
        a = g.nodes[node][key]
        old = a[idx]
        a[idx] = old + h
        lp = core_loss(g, [x], [y])
        a[idx] = old - h
        lm = core_loss(g, [x], [y])
        a[idx] = old
        fd = (lp - lm) / (2 * h)
        assert grads[(node, key)][idx] == pytest.approx(fd, rel=3e-2, abs=3e-4), (op, width, key, idx)


def noise_run(op, x, seed, threads=0, step0=0, **kw):
    """input -> noise op (a second output, no loss) -> Dense(1) -> mse: the noise node's training value."""
    n, d = x.shape
    g = G()
    i = g.input(d)
    z = g.add(op, [i], (d,), seed_offset=1, **kw)
    g.out(g.add("dense", [z], (1,), W=f32(np.full((d, 1), 0.01)), b=None, activation="linear"))
    g.outputs.append(dict(node=z, loss=None, weight=1.0, metric=None, from_logits=False))
    net, nodes = core_graph(g, {"name": "sgd", "learning_rate": 0.0})
    out = np.zeros((n, d), np.float32)
    perm = np.arange(n, dtype=np.int32)
    y = [np.zeros((n, 1), np.float32), None]
    net.train_run([x], y, perm, 0, 1, n, step0, seed, np.zeros(1), np.zeros((1, 2)), threads, outputs=[None, out])
    return out, net


@pytest.mark.parametrize("rate", [0.1, 0.5, 0.8])
def test_gaussian_dropout_multiplier_statistics(rate):
    sd = ref.gaussian_dropout_stddev(rate)
    x = np.ones((40, 2000), np.float32)
    m, net = noise_run("gaussian_dropout", x, seed=3, stddev=sd)
    assert abs(m.mean() - 1) < 5 * sd / np.sqrt(m.size)
    assert m.var() == pytest.approx(sd**2, rel=0.03)
    kurt = ((m - 1) ** 4).mean() / m.var() ** 2
    assert 2.85 < kurt < 3.15  # a normal's
    again, _ = noise_run("gaussian_dropout", x, seed=3, stddev=sd)
    other, _ = noise_run("gaussian_dropout", x, seed=4, stddev=sd)
    assert np.array_equal(m, again) and not np.array_equal(m, other)
    assert np.array_equal(net.predict([x])[1], x)  # inference: the identity


@pytest.mark.parametrize("rate", [0.05, 0.3, 0.6])
def test_alpha_dropout_statistics(rate):
    """Kept where the core keeps: a x + b; dropped: a alpha' + b; unit mean and variance are kept."""
    rng = np.random.default_rng(7)
    x = f32(rng.standard_normal((40, 2000)))
    y, net = noise_run("alpha_dropout", x, seed=5, rate=rate)
    a, b, alpha_p = ref._alpha_dropout_ab(rate)
    dropped = np.isclose(y, a * alpha_p + b, rtol=0, atol=1e-6)
    clear = ~np.isclose(x, alpha_p, atol=1e-3)  # else a kept value is close to a dropped one
    assert abs(dropped.mean() - rate) < 5 * np.sqrt(rate * (1 - rate) / x.size)
    assert_close(y[clear], ref.alpha_dropout(x, ~dropped, rate)[clear], 1e-6, 1e-6, "alpha dropout values")
    assert abs(y.mean()) < 0.01 and y.var() == pytest.approx(1.0, abs=0.015)
    again, _ = noise_run("alpha_dropout", x, seed=5, rate=rate)
    other, _ = noise_run("alpha_dropout", x, seed=5, rate=rate, step0=1)
    assert np.array_equal(y, again) and not np.array_equal(y, other)
    assert np.array_equal(net.predict([x])[1], x)


@pytest.mark.parametrize("op", ["gaussian_dropout", "alpha_dropout"])
def test_noise_backward_matches_reference(op, threads):
    """The gradient through the noise equals the oracle's with the multiplier (or kept mask) the core drew."""
    n, d = 24, 33
    g = G()
    i = g.input(5)
    h = g.dense(i, d, "tanh")
    kw = {"stddev": 0.6} if op == "gaussian_dropout" else {"rate": 0.3}
    z = g.add(op, [h], (d,), seed_offset=2, **kw)
    g.out(g.dense(z, 2))
    g.outputs.append(dict(node=z, loss=None, weight=1.0, metric=None, from_logits=False))
    x, y = rand(n, 5), rand(n, 2)
    net, nodes = core_graph(g, {"name": "sgd", "learning_rate": 1.0})
    out = np.zeros((n, d), np.float32)
    perm = np.arange(n, dtype=np.int32)
    net.train_run([x], [y, None], perm, 0, 1, n, 0, 11, np.zeros(1), np.zeros((1, 2)), outputs=[None, out])
    r = ref_graph(g)
    pre = r.forward([x], False)[0][h]
    if op == "gaussian_dropout":
        mask = out / pre
    else:
        a, b, _ = ref._alpha_dropout_ab(0.3)
        mask = np.isclose(out, a * pre + b, rtol=1e-5, atol=1e-6)
    _, _, want, _ = r.gradients([x], [y, None], True, masks={z: mask})
    for node, key in want:
        got = g.nodes[node][key].astype(np.float64) - nodes[node][key]
        assert_close(got, want[(node, key)], 1e-3, 1e-5 * (np.abs(want[(node, key)]).max() + 1), f"{op} {key}")


# ------------------------------------------------------------ layers and models


def _models(make, shape, opt, seed=0):
    keras = _keras()

    km = keras.Sequential([keras.Input(shape)] + make(keras.layers))
    cm = cdnn.Sequential([cdnn.Input(shape)] + make(L))
    cm.set_weights(km.get_weights())
    km.compile(getattr(keras.optimizers, opt)(learning_rate=0.05), "mse")
    cm.compile(getattr(cdnn.optimizers, opt)(learning_rate=0.05), "mse")
    return km, cm


PRELU_MODELS = {
    "per_unit": (lambda M: [M.Dense(6), M.PReLU(), M.Dense(2)], (4,)),
    "init_reg_constraint": (
        lambda M: [
            M.Dense(33, activation="tanh"),
            M.PReLU(alpha_initializer="ones", alpha_regularizer="l2", alpha_constraint="non_neg"),
            M.Dense(2),
        ],
        (4,),
    ),
    "shared_3d": (lambda M: [M.Dense(5), M.PReLU(shared_axes=[1]), M.Flatten(), M.Dense(2)], (3, 4)),
    "shared_all": (lambda M: [M.Dense(7), M.PReLU(shared_axes=[1, 2]), M.Flatten(), M.Dense(2)], (3, 4)),
    "first_and_last": (lambda M: [M.PReLU(alpha_initializer="ones"), M.Dense(2), M.PReLU()], (4,)),
    "activity": (lambda M: [M.Dense(7), M.ActivityRegularization(0.01, 0.02), M.ELU(0.7), M.Dense(2)], (4,)),
}


@pytest.mark.parametrize("opt", ["SGD", "Adam"])
@pytest.mark.parametrize("case", sorted(PRELU_MODELS))
def test_training_matches_real_keras(case, opt, session):
    make, shape = PRELU_MODELS[case]
    km, cm = _models(make, shape, opt)
    rng = np.random.default_rng(5)
    x = f32(rng.standard_normal((64, *shape)))
    y = f32(rng.standard_normal((64, 2)))
    if case.startswith("shared"):
        # non-zero alphas, so that the kernel's gradient depends on them from the first step
        for m in (km, cm):
            w = m.get_weights()
            w[2] = w[2] + 0.3
            m.set_weights(w)
    kh = km.fit(x, y, batch_size=16, epochs=3, shuffle=False, verbose=0)
    ch = cm.fit(x, y, batch_size=16, epochs=3, shuffle=False, verbose=0)
    assert np.allclose(ch.history["loss"], kh.history["loss"], rtol=1e-4)
    for a, b in zip(cm.get_weights(), km.get_weights()):
        assert a.shape == b.shape
        assert_close(a, b, 2e-4, 2e-5, f"{case} {opt} weights")
    assert_close(cm.predict(x, verbose=0), km.predict(x, verbose=0), 1e-4, 1e-5, "predict")


def _all_layers_model(width=784):
    return cdnn.Sequential(
        [
            cdnn.Input((width,)),
            L.Dense(256),
            L.PReLU(alpha_initializer="constant"),
            L.GaussianDropout(0.2),
            L.Dense(128, activation="selu"),
            L.AlphaDropout(0.1),
            L.ActivityRegularization(1e-4, 1e-4),
            L.Dense(64),
            L.ELU(0.5),
            L.Dense(10, activation="softmax"),
        ]
    )


@pytest.mark.parametrize("opt", ["sgd", "adam", "rmsprop"])
def test_one_and_two_threads_bit_identical(opt):
    rng = np.random.default_rng(2)
    x = f32(rng.standard_normal((300, 784)))
    y = rng.integers(0, 10, 300)
    runs = []
    for t in (1, 2):
        cdnn.utils.set_random_seed(9)
        m = _all_layers_model()
        m.compile(opt, "sparse_categorical_crossentropy")
        prev = cdnn.get_num_threads()
        cdnn.set_num_threads(t)
        try:
            h = m.fit(x, y, batch_size=128, epochs=2, verbose=0)
        finally:
            cdnn.set_num_threads(prev)
        runs.append((m.get_weights(), h.history["loss"]))
    # the epoch loss sums the runs' sums, whose lengths follow timings: equal to the last bits or so
    assert runs[0][1] == pytest.approx(runs[1][1], rel=1e-13)
    for a, b in zip(runs[0][0], runs[1][0]):
        assert np.array_equal(a, b)
    assert not np.array_equal(runs[0][0][2], np.full(256, 0.0))  # alpha trained


def test_configs_summary_and_counts_match_real_keras(session, tmp_path):
    keras = _keras()

    from cdnn.saving._keras_layers import layer_config

    args = [
        ("ELU", {"alpha": 0.5}),
        ("PReLU", {"alpha_initializer": "ones", "alpha_regularizer": "l2", "shared_axes": [1]}),
        ("GaussianDropout", {"rate": 0.3, "seed": 4}),
        ("AlphaDropout", {"rate": 0.2}),
        ("ActivityRegularization", {"l1": 0.1, "l2": 0.2}),
    ]
    for kind, kw in args:
        k = getattr(keras.layers, kind)(**kw, name="x")
        c = getattr(L, kind)(**kw, name="x")
        if kind == "PReLU":
            k.build((None, 3, 5))
            c.build((3, 5))
            assert c.alpha.shape == tuple(k.alpha.shape) == (1, 5)
            assert [w.path.split("/")[-1] for w in k.weights] == ["alpha"]
        want = keras.saving.serialize_keras_object(k)
        got = layer_config(c)
        want.pop("build_config", None)
        if kind == "PReLU":  # Keras writes its regularizer object, cdnn the same object's record
            want["config"].pop("alpha_regularizer")
            assert got["config"].pop("alpha_regularizer")["class_name"] == "L2"
        assert got == want, kind
    km = keras.Sequential([keras.Input((6,)), keras.layers.Dense(7), keras.layers.PReLU(), keras.layers.ELU()])
    cm = cdnn.Sequential([cdnn.Input((6,)), L.Dense(7), L.PReLU(), L.ELU()])
    assert cm.count_params() == km.count_params() == 56
    text = []
    cm.summary(print_fn=text.append)
    s = "\n".join(text)
    assert "p_re_lu (PReLU)" in s and "elu (ELU)" in s
    assert "Trainable params: 56" in s
    cm.layers[1].trainable = False
    assert len(cm.trainable_weights) == 2 and len(cm.non_trainable_weights) == 1


def test_real_keras_files_both_ways(session, tmp_path):
    keras = _keras()

    m = _all_layers_model(20)
    m.compile("adam", "sparse_categorical_crossentropy")
    rng = np.random.default_rng(3)
    x = f32(rng.standard_normal((64, 20)))
    m.fit(x, rng.integers(0, 10, 64), epochs=2, verbose=0)
    m.save(tmp_path / "a.keras")
    k = keras.saving.load_model(tmp_path / "a.keras")
    assert [type(a).__name__ for a in k.layers] == [type(a).__name__ for a in m.layers]
    assert_close(k.predict(x, verbose=0), m.predict(x, verbose=0), 1e-5, 1e-6, "keras loads cdnn")
    for a, b in zip(k.get_weights(), m.get_weights()):
        assert np.array_equal(a, b)
    k.save(tmp_path / "b.keras")
    c = cdnn.models.load_model(tmp_path / "b.keras")
    assert_close(c.predict(x, verbose=0), k.predict(x, verbose=0), 1e-5, 1e-6, "cdnn loads keras")
    assert c.layers[2].get_config() == m.layers[2].get_config()


def test_onnx_export_onnxruntime(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    m = _all_layers_model(20)
    m.layers[1].alpha[:] = np.linspace(-0.5, 0.5, 256)
    x = f32(np.random.default_rng(4).standard_normal((9, 20)))
    path = os.fspath(tmp_path / "m.onnx")
    m.export(path, format="onnx", verbose=False)
    s = ort.InferenceSession(path)
    (got,) = s.run(None, {s.get_inputs()[0].name: x})
    assert_close(got, m.predict(x, verbose=0), 1e-5, 1e-6, "onnx")


def test_eager_calls_match_reference():
    x = f32(np.random.default_rng(6).standard_normal((5, 3, 7)))
    assert_close(L.ELU(0.4)(x), ref.elu(x, 0.4), 1e-6, 1e-7, "elu")
    p = L.PReLU(alpha_initializer="random_normal", shared_axes=1)
    out = p(x)
    assert p.alpha.shape == (1, 7)
    assert_close(out, ref.prelu(x, p.alpha.astype(np.float64)), 1e-6, 1e-7, "prelu")
    for layer in (L.GaussianDropout(0.4), L.AlphaDropout(0.4), L.ActivityRegularization(1.0, 1.0)):
        assert np.array_equal(layer(x), x)


def test_activity_regularization_penalty_in_the_loss(session):
    m = cdnn.Sequential([cdnn.Input((3,)), L.Dense(4), L.ActivityRegularization(l1=0.5, l2=0.25)])
    m.compile(cdnn.optimizers.SGD(0.0), "mse")
    x, y = f32(np.ones((8, 3))), f32(np.zeros((8, 4)))
    h = m.fit(x, y, batch_size=8, epochs=1, verbose=0)
    a = m.predict(x, verbose=0).astype(np.float64)
    want = (a**2).mean() + (0.5 * np.abs(a).sum() + 0.25 * (a**2).sum()) / 8
    assert h.history["loss"][0] == pytest.approx(want, rel=1e-5)


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: L.ELU(alpha="x"), "alpha"),
        (lambda: L.GaussianDropout(1.0), "rate"),
        (lambda: L.GaussianDropout(-0.1), "rate"),
        (lambda: L.AlphaDropout(1.5), "rate"),
        (lambda: L.AlphaDropout(0.1, noise_shape=(None, 1)), "noise_shape"),
        (lambda: L.ActivityRegularization(l1=-1.0), "l1"),
        (lambda: L.PReLU(shared_axes="a"), "shared_axes"),
        (lambda: L.PReLU(alpha_initializer="nope"), "nope"),
        (lambda: L.PReLU(alpha_regularizer=cdnn.regularizers.OrthogonalRegularizer()), "alpha_regularizer"),
    ],
)
def test_bad_arguments_refused(make, match):
    with pytest.raises((ValueError, TypeError), match=match):
        make()


def test_bad_shapes_refused():
    p = L.PReLU()
    p(np.ones((2, 4), np.float32))
    with pytest.raises(ValueError, match="incompatible"):
        p(np.ones((2, 5), np.float32))
    with pytest.raises(ValueError, match="shared axis 3"):
        L.PReLU(shared_axes=[3])(np.ones((2, 4, 5), np.float32))
    with pytest.raises(NotImplementedError, match="shares"):
        L.PReLU(shared_axes=[1])(np.ones((2, 3, 4, 5), np.float32))
    g = G()
    i = g.input(4)
    g.out(g.add("prelu", [i], (4,), gamma=rand(3), beta=None, alpha_shape=(1, 3)))
    with pytest.raises(ValueError, match="alpha"):
        core_graph(g, {"name": "sgd"})
    g.nodes[1].update(gamma=rand(4), alpha_shape=(1, 4), rate=0.5)
    g.add("gaussian_dropout", [1], (4,), stddev=-1.0)
    with pytest.raises(ValueError, match="stddev"):
        core_graph(g, {"name": "sgd"})


OPTIMIZERS = [
    ("SGD", {"momentum": 0.9, "nesterov": True}),
    ("RMSprop", {"momentum": 0.5}),
    ("Adagrad", {}),
    ("Adadelta", {"learning_rate": 1.0}),
    ("Adamax", {}),
    ("Nadam", {}),
    ("AdamW", {}),
    ("Adam", {"amsgrad": True, "use_ema": True}),
    ("Lion", {"learning_rate": 0.001}),
    ("Ftrl", {"l1_regularization_strength": 0.01}),
    ("Adafactor", {}),
    ("SGD", {"gradient_accumulation_steps": 2, "clipnorm": 0.1}),
    ("Adam", {"global_clipnorm": 0.1}),
]


@pytest.mark.parametrize("name, kw", OPTIMIZERS, ids=lambda v: str(v))
def test_prelu_trains_with_every_optimizer_as_real_keras(name, kw, session):
    keras = _keras()

    kw = {"learning_rate": 0.02, **kw}
    x = f32(np.random.default_rng(8).standard_normal((48, 4)))
    y = f32(np.random.default_rng(9).standard_normal((48, 2)))
    km = keras.Sequential([keras.Input((4,)), keras.layers.Dense(6), keras.layers.PReLU(), keras.layers.Dense(2)])
    cm = cdnn.Sequential([cdnn.Input((4,)), L.Dense(6), L.PReLU(), L.Dense(2)])
    cm.set_weights(km.get_weights())
    km.compile(getattr(keras.optimizers, name)(**kw), "mse")
    cm.compile(getattr(cdnn.optimizers, name)(**kw), "mse")
    km.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0)
    cm.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0)
    assert not np.array_equal(cm.layers[1].alpha, np.zeros(6))
    for a, b in zip(cm.get_weights(), km.get_weights()):
        assert_close(a, b, 5e-4, 5e-5, f"{name} {kw}")


def test_shared_and_frozen_prelu_as_real_keras(session):
    keras = _keras()

    def build(M, Model, Input):
        a, b = Input((5,)), Input((5,))
        p = M.PReLU(alpha_initializer="ones")
        d = M.Dense(5)
        out = M.Dense(1)(M.Concatenate()([p(d(a)), p(d(b)), M.PReLU(trainable=False)(d(a))]))
        return Model([a, b], out)

    km = build(keras.layers, keras.Model, keras.Input)
    cm = build(L, cdnn.Model, cdnn.Input)
    w = km.get_weights()
    w[-3] = f32(np.linspace(-0.5, 0.5, 5))  # the frozen alpha, non-zero
    km.set_weights(w)
    cm.set_weights(w)
    frozen = w[-3].copy()
    rng = np.random.default_rng(1)
    xs = [f32(rng.standard_normal((32, 5))), f32(rng.standard_normal((32, 5)))]
    y = f32(rng.standard_normal((32, 1)))
    for m in (km, cm):
        m.compile("adam", "mse")
        m.fit(xs, y, batch_size=8, epochs=2, shuffle=False, verbose=0)
    for a, b in zip(cm.get_weights(), km.get_weights()):
        assert_close(a, b, 5e-4, 5e-5, "shared PReLU")
    assert np.array_equal([v for v in cm.non_trainable_weights][0], frozen)


@pytest.mark.parametrize(
    "shared, constraint",
    [(None, None), ([1], None), ([2], None), (None, "max_norm"), ([1], "unit_norm")],
)
def test_two_dimensional_alpha_with_adafactor_and_norm_constraints_as_real_keras(shared, constraint, session):
    """Keras factors a 2-D alpha's Adafactor moments and takes a norm constraint per column, as a kernel's."""
    keras = _keras()

    rng = np.random.default_rng(3)
    x, y = f32(rng.standard_normal((32, 3, 4))), f32(rng.standard_normal((32, 1)))
    for opt in ("Adafactor", "Adam"):

        def make(M):
            p = M.PReLU(alpha_initializer="ones", shared_axes=shared, alpha_constraint=constraint)
            return [M.Dense(5), p, M.Flatten(), M.Dense(1)]

        km = keras.Sequential([keras.Input((3, 4))] + make(keras.layers))
        cm = cdnn.Sequential([cdnn.Input((3, 4))] + make(L))
        cm.set_weights(km.get_weights())
        km.compile(getattr(keras.optimizers, opt)(learning_rate=0.05), "mse")
        cm.compile(getattr(cdnn.optimizers, opt)(learning_rate=0.05), "mse")
        km.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0)
        cm.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0)
        for a, b in zip(cm.get_weights(), km.get_weights()):
            assert_close(a, b, 5e-4, 5e-5, f"{opt} shared_axes={shared} {constraint}")


def test_adafactor_on_three_dimensional_alpha_refused():
    m = cdnn.Sequential([cdnn.Input((2, 3, 4)), L.PReLU(), L.Flatten(), L.Dense(1)])
    m.compile("adafactor", "mse")
    with pytest.raises(ValueError, match="Adafactor on a parameter of shape"):
        m.fit(np.ones((4, 2, 3, 4), np.float32), np.ones((4, 1), np.float32), verbose=0)
