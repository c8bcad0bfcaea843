"""Regularizers, constraints and initializer objects against Keras 3's formulas
(keras/src/regularizers/regularizers.py, keras/src/constraints/constraints.py,
keras/src/initializers/{random,constant}_initializers.py), and their configs through saving."""

from __future__ import annotations

import math

import numpy as np
import pytest
import reference as ref

import cdnn as keras

R, C, I = keras.regularizers, keras.constraints, keras.initializers


def w(shape=(7, 5), seed=0):
    return np.random.default_rng(seed).normal(0, 1, shape).astype(np.float32)


def test_penalties_are_keras_formulas():
    x = w().astype(np.float64)
    assert R.L1(0.3)(x) == pytest.approx(0.3 * np.abs(x).sum())
    assert R.L2(0.2)(x) == pytest.approx(0.2 * (x**2).sum())
    assert R.L1L2(0.1, 0.4)(x) == pytest.approx(0.1 * np.abs(x).sum() + 0.4 * (x**2).sum())
    assert R.L1L2()(x) == 0.0


def test_orthogonal_regularizer_value():
    x = w((6, 4)).astype(np.float64)
    for mode, a in (("rows", x), ("columns", x.T)):
        n = a / np.linalg.norm(a, axis=1, keepdims=True)
        p = n @ n.T
        off = np.abs(p).sum() - np.abs(np.diag(p)).sum()
        size = a.shape[0]
        assert R.OrthogonalRegularizer(0.2, mode)(x) == pytest.approx(0.2 * 0.5 * off / (size * (size - 1) / 2))


@pytest.mark.parametrize(
    "name, cls, cfg",
    [
        ("l1", R.L1, {"l1": 0.01}),
        ("l2", R.L2, {"l2": 0.01}),
        ("l1_l2", R.L1L2, {"l1": 0.0, "l2": 0.0}),
        ("l1l2", R.L1L2, {"l1": 0.0, "l2": 0.0}),
    ],
)
def test_strings_give_keras_defaults(name, cls, cfg):
    r = R.get(name)
    assert type(r) is cls and r.get_config() == cfg


@pytest.mark.parametrize("obj", [R.L1(0.2), R.L2(0.3), R.L1L2(0.1, 0.2), R.OrthogonalRegularizer(0.1, "columns")])
def test_regularizer_configs_round_trip(obj):
    back = R.deserialize(R.serialize(obj))
    assert type(back) is type(obj) and back.get_config() == obj.get_config()


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: R.L1(-1.0), "l1"),
        (lambda: R.L2(float("nan")), "l2"),
        (lambda: R.OrthogonalRegularizer(mode="diag"), "mode"),
        (lambda: R.get("l3"), "l3"),
    ],
)
def test_bad_regularizers_are_refused(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_what_the_core_cannot_train_is_refused_at_the_layer():
    with pytest.raises(ValueError, match="bias_regularizer.*OrthogonalRegularizer"):
        keras.layers.Dense(3, bias_regularizer=R.OrthogonalRegularizer())
    one_unit = keras.Sequential(
        [keras.layers.Input((4,)), keras.layers.Dense(1, kernel_regularizer=R.OrthogonalRegularizer(mode="columns"))]
    )
    one_unit.compile(optimizer="sgd", loss="mse")
    with pytest.raises(ValueError, match="at least 2 vectors"):
        one_unit.fit(np.zeros((4, 4)), np.zeros((4, 1)), verbose=0)
    with pytest.raises(ValueError, match="activity_regularizer.*OrthogonalRegularizer is for kernels"):
        keras.layers.Dense(3, activity_regularizer=R.OrthogonalRegularizer())

    class Mine(R.Regularizer):
        def __call__(self, x):
            return 0.0

    with pytest.raises(ValueError, match="Mine"):
        keras.layers.Dense(3, kernel_regularizer=Mine())


@pytest.mark.parametrize(
    "con, oracle",
    [
        (C.MaxNorm(1.5), lambda x: ref.max_norm(x, 1.5, 0)),
        (C.MaxNorm(0.5, axis=1), lambda x: ref.max_norm(x, 0.5, 1)),
        (C.NonNeg(), ref.non_neg),
        (C.UnitNorm(), lambda x: ref.unit_norm(x, 0)),
        (C.MinMaxNorm(0.5, 2.0, rate=0.7), lambda x: ref.min_max_norm(x, 0.5, 2.0, 0.7, 0)),
    ],
)
def test_constraints_are_keras_formulas(con, oracle):
    x = w()
    np.testing.assert_allclose(con(x), oracle(x.astype(np.float64)), rtol=1e-6, atol=1e-7)
    back = C.deserialize(C.serialize(con))
    assert type(back) is type(con) and back.get_config() == con.get_config()


@pytest.mark.parametrize(
    "name, cls",
    [("max_norm", C.MaxNorm), ("non_neg", C.NonNeg), ("unit_norm", C.UnitNorm), ("min_max_norm", C.MinMaxNorm)],
)
def test_constraint_strings(name, cls):
    assert type(C.get(name)) is cls


# ---------------------------------------------------------------- initializers


@pytest.mark.parametrize(
    "cls, limit_or_std, uniform",
    [
        (I.GlorotUniform, math.sqrt(6 / (300 + 200)), True),
        (I.HeUniform, math.sqrt(6 / 300), True),
        (I.LecunUniform, math.sqrt(3 / 300), True),
        (I.GlorotNormal, math.sqrt(2 / (300 + 200)), False),
        (I.HeNormal, math.sqrt(2 / 300), False),
        (I.LecunNormal, math.sqrt(1 / 300), False),
    ],
)
def test_variance_scaling_presets(cls, limit_or_std, uniform):
    a = cls(seed=1)((300, 200))
    assert a.dtype == np.float32 and a.shape == (300, 200)
    if uniform:
        assert np.abs(a).max() <= limit_or_std and np.abs(a).max() > 0.98 * limit_or_std
        assert a.std() == pytest.approx(limit_or_std / math.sqrt(3), rel=0.02)
    else:  # Keras' truncated normal: the stddev corrected so that the truncated draws have the wanted one
        assert a.std() == pytest.approx(limit_or_std, rel=0.02)
        assert np.abs(a).max() <= 2 * limit_or_std / 0.87962566103423978 + 1e-6


def test_a_seeded_initializer_draws_the_same_values_each_call_and_an_unseeded_one_does_not():
    init = I.HeNormal(seed=0)
    np.testing.assert_array_equal(init((4, 3)), init((4, 3)))
    np.testing.assert_array_equal(init((4, 3)), I.HeNormal(seed=0)((4, 3)))
    assert not np.array_equal(I.HeNormal(seed=1)((4, 3)), init((4, 3)))
    free = I.HeNormal()
    assert not np.array_equal(free((4, 3)), free((4, 3)))


def test_other_initializers():
    q = I.Orthogonal(gain=2.0, seed=3)((6, 4))
    np.testing.assert_allclose(q.T @ q, 4 * np.eye(4), atol=1e-5)
    q = I.Orthogonal(seed=3)((4, 6))
    np.testing.assert_allclose(q @ q.T, np.eye(4), atol=1e-5)
    np.testing.assert_array_equal(I.Identity(3.0)((3, 4)), 3 * np.eye(3, 4))
    np.testing.assert_array_equal(I.Constant(0.5)((2, 2)), np.full((2, 2), 0.5, np.float32))
    assert (I.Zeros()((3,)) == 0).all() and (I.Ones()((3,)) == 1).all()
    r = I.RandomUniform(-1, 2, seed=0)((1000,))
    assert r.min() >= -1 and r.max() < 2
    t = I.TruncatedNormal(1.0, 0.1, seed=0)((2000,))
    assert np.abs(t - 1.0).max() <= 0.2 + 1e-6 and t.mean() == pytest.approx(1.0, abs=0.01)
    n = I.RandomNormal(0.0, 2.0, seed=0)((5000,))
    assert n.std() == pytest.approx(2.0, rel=0.05)
    v = I.VarianceScaling(3.0, "fan_out", "untruncated_normal", seed=0)((100, 400))
    assert v.std() == pytest.approx(math.sqrt(3.0 / 400), rel=0.03)
    with pytest.raises(ValueError, match="two-dimensional"):
        I.Orthogonal()((3,))
    with pytest.raises(ValueError, match="scale"):
        I.VarianceScaling(scale=0)
    with pytest.raises(ValueError, match="seed"):
        I.HeNormal(seed="x")


@pytest.mark.parametrize(
    "obj",
    [
        I.HeNormal(seed=0),
        I.GlorotUniform(),
        I.Orthogonal(0.5, seed=2),
        I.Constant(0.3),
        I.VarianceScaling(2.0, "fan_avg", "uniform", seed=4),
        I.Identity(2.0),
    ],
)
def test_initializer_configs_round_trip(obj):
    back = I.deserialize(I.serialize(obj))
    assert type(back) is type(obj) and back.get_config() == obj.get_config()
    assert I.get(type(obj).__name__).__class__ is type(obj)


def test_a_model_with_objects_saves_and_loads(tmp_path):
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.layers.Input((6,)),
            keras.layers.Dense(
                5,
                activation="relu",
                kernel_initializer=I.HeNormal(seed=0),
                kernel_regularizer=R.L1L2(0.001, 0.01),
                bias_regularizer="l2",
                kernel_constraint=C.MaxNorm(2.0),
                bias_constraint="non_neg",
            ),
            keras.layers.Dense(3, activation="softmax", kernel_initializer="orthogonal"),
        ]
    )
    np.testing.assert_array_equal(model.layers[0].kernel, I.HeNormal(seed=0)((6, 5)))
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    x = np.random.default_rng(0).random((40, 6)).astype(np.float32)
    model.fit(x, np.arange(40) % 3, epochs=1, verbose=0)
    model.save(tmp_path / "m.npz")
    loaded = keras.models.load_model(tmp_path / "m.npz")
    d = loaded.layers[0]
    assert isinstance(d.kernel_regularizer, R.L1L2) and d.kernel_regularizer.get_config() == {"l1": 0.001, "l2": 0.01}
    assert isinstance(d.bias_regularizer, R.L2) and isinstance(d.kernel_constraint, C.MaxNorm)
    assert isinstance(d.bias_constraint, C.NonNeg) and isinstance(d.kernel_initializer, I.HeNormal)
    assert loaded.get_config() == model.get_config()
    for a, b in zip(loaded.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert loaded.evaluate(x, np.arange(40) % 3, verbose=0) == pytest.approx(
        model.evaluate(x, np.arange(40) % 3, verbose=0)
    )


@pytest.mark.parametrize("mode", ["rows", "columns"])
def test_orthogonal_regularizer_gradient_in_c_matches_finite_differences(mode):
    from cdnn import _core

    x = w((6, 5), seed=3)
    x[2] = 0.0  # a zero row: its norm is clamped as keras.ops.normalize clamps it
    reg = R.OrthogonalRegularizer(0.3, mode)
    # SGD(lr=1) on a zero gradient: the step is the regularizer's gradient alone
    w1 = x.copy()
    rules = [{**reg._core(), "orth_scratch": np.empty(2 * x.size + 6, np.float32)}]
    penalty = _core.optimizer_apply(
        {"name": "sgd", "learning_rate": 1.0}, [w1], [np.zeros_like(x)], [[None] * 5], 1, rules
    )
    grad = x - w1
    assert penalty == pytest.approx(reg(x), rel=1e-5)
    value, oracle = ref.orthogonal_regularizer(x.astype(np.float64), 0.3, mode)
    assert value == pytest.approx(reg(x), rel=1e-12)
    np.testing.assert_allclose(grad, oracle, rtol=1e-4, atol=1e-6)
    # the oracle against central differences, away from the zero row (where |x| is not differentiable)
    h = 1e-6
    x64 = x.astype(np.float64)
    for i, j in [(0, 0), (1, 3), (5, 4), (3, 2)]:
        up, down = x64.copy(), x64.copy()
        up[i, j] += h
        down[i, j] -= h
        numeric = (ref.orthogonal_regularizer(up, 0.3, mode)[0] - ref.orthogonal_regularizer(down, 0.3, mode)[0]) / (
            2 * h
        )
        assert oracle[i, j] == pytest.approx(numeric, rel=1e-4, abs=1e-8)


def test_regularizers_constraints_and_initializer_objects_go_through_keras_files(tmp_path):
    pytest.importorskip("h5py")
    model = keras.Sequential(
        [
            keras.layers.Input((6,)),
            keras.layers.Dense(
                5,
                activation="relu",
                kernel_initializer=I.RandomNormal(stddev=0.2, seed=3),
                kernel_regularizer=R.L1L2(0.001, 0.01),
                bias_regularizer=R.L2(0.02),
                kernel_constraint=C.MaxNorm(2.0),
                bias_constraint=C.NonNeg(),
            ),
            keras.layers.Dense(3, activation="softmax", kernel_regularizer=R.OrthogonalRegularizer(0.1, "columns")),
        ]
    )
    model.compile(optimizer=keras.optimizers.AdamW(use_ema=True), loss="sparse_categorical_crossentropy")
    x = np.random.default_rng(0).random((40, 6)).astype(np.float32)
    model.fit(x, np.arange(40) % 3, epochs=1, verbose=0)
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    d = loaded.layers[0]
    assert d.kernel_regularizer.get_config() == {"l1": 0.001, "l2": 0.01}
    assert d.bias_regularizer.get_config() == {"l2": 0.02}
    assert isinstance(d.kernel_constraint, C.MaxNorm) and isinstance(d.bias_constraint, C.NonNeg)
    assert isinstance(d.kernel_initializer, I.RandomNormal) and d.kernel_initializer.stddev == 0.2
    assert loaded.layers[1].kernel_regularizer.get_config() == {"factor": 0.1, "mode": "columns"}
    assert loaded.optimizer.get_config() == model.optimizer.get_config()
    for a, b in zip(loaded.optimizer.variables, model.optimizer.variables):
        np.testing.assert_array_equal(a, b)
    # and Keras 3 itself reads the same objects and optimizer state, where it is installed
    import os

    os.environ.setdefault("KERAS_BACKEND", "jax")
    pytest.importorskip("jax")
    real = pytest.importorskip("keras")
    theirs = real.models.load_model(path)
    dense = theirs.layers[0]
    assert type(dense.kernel_regularizer).__name__ == "L1L2" and float(dense.kernel_regularizer.l2) == 0.01
    assert type(dense.kernel_constraint).__name__ == "MaxNorm"
    assert type(theirs.optimizer).__name__ == "AdamW" and theirs.optimizer.use_ema
    kernel_average = [np.asarray(v) for v in theirs.optimizer.variables if v.path.endswith("kernel_average")]
    np.testing.assert_array_equal(kernel_average[0], model.optimizer._slots[0][3])


# ---- activity regularizers: real Keras 3 on JAX as the oracle -------------------------------------------


def _jax_keras():
    import os

    pytest.importorskip("jax")
    os.environ.setdefault("KERAS_BACKEND", "jax")
    real = pytest.importorskip("keras")
    if real.backend.backend() != "jax":
        pytest.skip("needs Keras on the JAX backend")
    return real


def _activity_model(lib, kind):
    if kind == "sequential":
        return lib.Sequential(
            [
                lib.Input((12,)),
                lib.layers.Dense(16, activation="tanh", activity_regularizer=lib.regularizers.L1(0.01)),
                lib.layers.Dropout(0.0),
                lib.layers.Dense(8, activation="relu", activity_regularizer=lib.regularizers.L1L2(0.001, 0.02)),
                lib.layers.Dense(3, activation="softmax"),
            ]
        )
    inp = lib.Input((12,))
    h = lib.layers.Dense(16, activation="tanh")(inp)
    h = lib.layers.BatchNormalization(activity_regularizer="l2")(h)
    h = lib.layers.Activation("relu", activity_regularizer=lib.regularizers.L1(0.005))(h)
    # on the model's output too: its penalty's gradient goes through the softmax with the loss's
    return lib.Model(inp, lib.layers.Dense(3, activation="softmax", activity_regularizer=lib.regularizers.L2(0.05))(h))


@pytest.mark.parametrize("kind", ["sequential", "functional"])
def test_activity_regularizers_train_and_report_the_loss_as_keras(kind):
    real = _jax_keras()
    # Keras' initial weights from a fixed seed: with some draws (seed 5) a ReLU unit at its kink
    # makes float32 Keras and cdnn part by 1%, and the draws otherwise depend on the tests run before
    real.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(70, 12)).astype("f4"), rng.integers(0, 3, 70)
    theirs, ours = _activity_model(real, kind), _activity_model(keras, kind)
    ours.set_weights(theirs.get_weights())
    for m, lib in ((theirs, real), (ours, keras)):
        m.compile(lib.optimizers.SGD(0.1), "sparse_categorical_crossentropy")
    fit = {"batch_size": 16, "epochs": 3, "shuffle": False, "verbose": 0, "validation_data": (x[:30], y[:30])}
    h_theirs, h_ours = theirs.fit(x, y, **fit).history, ours.fit(x, y, **fit).history
    for key in ("loss", "val_loss"):
        np.testing.assert_allclose(h_ours[key], h_theirs[key], rtol=2e-6)
    for a, b in zip(ours.get_weights(), theirs.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert ours.evaluate(x, y, verbose=0) == pytest.approx(theirs.evaluate(x, y, verbose=0), rel=2e-6)


def test_activity_regularizer_config_round_trip_and_refusals():
    layer = keras.layers.Dense(4, activity_regularizer=R.L1L2(0.1, 0.2), name="d")
    cfg = layer.get_config()
    # Keras 3's config: the serialized regularizer, and no key at all without one
    assert cfg["activity_regularizer"] == {
        "module": "keras.regularizers",
        "class_name": "L1L2",
        "config": {"l1": 0.1, "l2": 0.2},
        "registered_name": None,
    }
    again = keras.layers.Dense.from_config(cfg)
    assert (again.activity_regularizer.l1, again.activity_regularizer.l2) == (0.1, 0.2)
    assert "activity_regularizer" not in keras.layers.Dense(4).get_config()
    assert keras.layers.ReLU(activity_regularizer="l2").get_config()["activity_regularizer"]["config"] == {"l2": 0.01}

    class Mine(R.Regularizer):
        def __call__(self, x):
            return 0.0

    with pytest.raises(ValueError, match="Mine"):
        keras.layers.Dense(3, activity_regularizer=Mine())
