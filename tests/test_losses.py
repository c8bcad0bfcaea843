"""Losses: the C core against the NumPy reference (keras/src/losses/losses.py's formulas), finite
differences, Keras' published docstring numbers, the Python API (functions, classes, get/serialize),
compile's refusals, and training with each loss bit-identical on 1 and 2 threads."""

import math
import os

import numpy as np
import pytest
import reference as ref

import cdnn
import cdnn as keras
from cdnn import _core

LOSSES = ref.KERAS_LOSSES
DENSE_POSITIVE = ("mean_squared_logarithmic_error", "poisson", "kl_divergence")  # outputs > 0 keep away from clips


def _data(name, rows, cols, seed=0, from_logits=False):
    """Outputs and labels fitting the loss (probabilities where it reads probabilities)."""
    rng = np.random.default_rng(seed + 31 * rows + cols)
    out = rng.normal(size=(rows, cols)).astype(np.float32)
    if name in ("binary_crossentropy", "binary_focal_crossentropy") and not from_logits:
        out = rng.uniform(0.02, 0.98, size=(rows, cols)).astype(np.float32)
    if name in ("categorical_crossentropy", "sparse_categorical_crossentropy") and not from_logits:
        out = rng.uniform(0.05, 1.0, size=(rows, cols)).astype(np.float32)
    if name in DENSE_POSITIVE:
        out = rng.uniform(0.05, 0.95, size=(rows, cols)).astype(np.float32)
    if name == "sparse_categorical_crossentropy":
        y = rng.integers(0, cols, rows).astype(np.int32)
    elif name == "categorical_crossentropy" or name == "categorical_hinge":
        y = np.eye(cols, dtype=np.float32)[rng.integers(0, cols, rows)]
    elif name in ("binary_crossentropy", "binary_focal_crossentropy", "kl_divergence"):
        y = rng.uniform(0, 1, size=(rows, cols)).astype(np.float32)
        if name == "binary_focal_crossentropy":
            y = np.round(y)
    elif name in ("hinge", "squared_hinge"):
        y = rng.integers(0, 2, size=(rows, cols)).astype(np.float32)
    elif name in ("mean_squared_logarithmic_error", "poisson"):
        y = rng.uniform(0, 3, size=(rows, cols)).astype(np.float32)
    else:
        y = rng.normal(size=(rows, cols)).astype(np.float32)
    return out, y


def _c(name, out, y, from_logits=False, sample_weight=None, activation="linear", z=None, **options):
    loss, _, dz = _core.loss_forward_backward(
        name,
        out,
        out if z is None else z,
        y,
        activation=activation,
        from_logits=from_logits,
        options=options,
        sample_weight=sample_weight,
    )
    return loss, dz


CASES = [
    (n, fl)
    for n in LOSSES
    for fl in (
        (False, True)
        if n
        in (
            "binary_crossentropy",
            "binary_focal_crossentropy",
            "categorical_crossentropy",
            "sparse_categorical_crossentropy",
        )
        else (False,)
    )
]


@pytest.mark.parametrize("rows,cols", [(1, 1), (3, 7), (33, 3), (7, 33)])
@pytest.mark.parametrize("name,from_logits", CASES)
def test_value_and_gradient_against_reference(name, from_logits, rows, cols):
    if cols == 1 and name in ("categorical_crossentropy", "sparse_categorical_crossentropy", "categorical_hinge"):
        cols = 2
    out, y = _data(name, rows, cols, from_logits=from_logits)
    w = np.random.default_rng(rows).uniform(0, 2, rows).astype(np.float32)
    loss, dz = _c(name, out, y, from_logits, sample_weight=w)
    per = ref.keras_loss(name, y, out.astype(np.float64), from_logits)
    np.testing.assert_allclose(loss, w * per, rtol=2e-6, atol=1e-9)
    total, grad = ref.keras_reduced_loss(name, y, out, from_logits, sample_weight=w)
    np.testing.assert_allclose(loss.sum() / rows, total, rtol=2e-6, atol=1e-9)
    np.testing.assert_allclose(dz, grad, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("name,from_logits", CASES)
def test_reference_gradient_matches_finite_differences(name, from_logits):
    out, y = _data(name, 4, 5, seed=3, from_logits=from_logits)
    p = out.astype(np.float64)
    w = np.array([0.5, 1.0, 2.0, 0.0])
    _, grad = ref.keras_reduced_loss(name, y, p, from_logits, sample_weight=w)
    h = 1e-6
    num = np.zeros_like(p)
    for idx in np.ndindex(p.shape):
        up, dn = p.copy(), p.copy()
        up[idx] += h
        dn[idx] -= h
        num[idx] = (
            ref.keras_reduced_loss(name, y, up, from_logits, sample_weight=w)[0]
            - ref.keras_reduced_loss(name, y, dn, from_logits, sample_weight=w)[0]
        ) / (2 * h)
    np.testing.assert_allclose(grad, num, rtol=1e-4, atol=1e-6)


OPTION_CASES = [
    ("huber", False, {"delta": 0.3}),
    ("huber", False, {"delta": 2.5}),
    ("binary_crossentropy", False, {"label_smoothing": 0.2}),
    ("binary_crossentropy", True, {"label_smoothing": 0.1}),
    ("categorical_crossentropy", False, {"label_smoothing": 0.3}),
    ("categorical_crossentropy", True, {"label_smoothing": 0.1}),
    ("binary_focal_crossentropy", False, {"gamma": 3.0}),
    ("binary_focal_crossentropy", True, {"gamma": 0.0}),
    ("binary_focal_crossentropy", True, {"gamma": 1.5, "alpha": 0.4, "apply_class_balancing": True}),
    ("binary_focal_crossentropy", False, {"label_smoothing": 0.2, "apply_class_balancing": True}),
    ("sparse_categorical_crossentropy", False, {"ignore_class": 1}),
    ("sparse_categorical_crossentropy", True, {"ignore_class": -1}),
]


@pytest.mark.parametrize("name,from_logits,options", OPTION_CASES)
def test_options_against_reference_and_finite_differences(name, from_logits, options):
    out, y = _data(name, 9, 4, seed=5, from_logits=from_logits)
    if options.get("ignore_class") == -1:
        y[[0, 4]] = -1
    w = np.linspace(0.1, 2.0, 9).astype(np.float32)
    loss, dz = _c(name, out, y, from_logits, sample_weight=w, **options)
    total, grad = ref.keras_reduced_loss(name, y, out, from_logits, sample_weight=w, **options)
    valid = (y != options["ignore_class"]).sum() if "ignore_class" in options else 9
    np.testing.assert_allclose(loss.sum() / valid, total, rtol=2e-6, atol=1e-9)
    np.testing.assert_allclose(dz, grad, rtol=1e-5, atol=1e-7)
    if "ignore_class" in options:
        ignored = y == options["ignore_class"]
        assert ignored.any() and (loss[ignored] == 0).all() and (dz[ignored] == 0).all()
    p, h = out.astype(np.float64), 1e-6
    for idx in [(1, 0), (3, 2), (8, 3)]:
        up, dn = p.copy(), p.copy()
        up[idx] += h
        dn[idx] -= h
        num = (
            ref.keras_reduced_loss(name, y, up, from_logits, sample_weight=w, **options)[0]
            - ref.keras_reduced_loss(name, y, dn, from_logits, sample_weight=w, **options)[0]
        ) / (2 * h)
        assert grad[idx] == pytest.approx(num, rel=1e-4, abs=1e-7)


@pytest.mark.parametrize(
    "name,act",
    [
        ("categorical_crossentropy", "softmax"),
        ("sparse_categorical_crossentropy", "softmax"),
        ("binary_crossentropy", "sigmoid"),
    ],
)
@pytest.mark.parametrize("smoothing", [0.0, 0.2])
def test_fused_output_is_computed_from_logits(name, act, smoothing):
    if smoothing and name == "sparse_categorical_crossentropy":
        pytest.skip("sparse cross-entropy has no label smoothing in Keras")
    rng = np.random.default_rng(1)
    z = rng.normal(size=(6, 5)).astype(np.float32) * 3
    out = _core.activation_forward(act, z)
    _, y = _data(name, 6, 5, seed=1)
    opts = {"label_smoothing": smoothing} if smoothing else {}
    loss, dz = _c(name, out, y, activation=act, z=z, **opts)
    per = ref.keras_loss(name, y, z, True, **opts)
    np.testing.assert_allclose(loss, per, rtol=2e-6)
    np.testing.assert_allclose(dz, ref.keras_reduced_loss(name, y, z, True, **opts)[1], rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize(
    "name",
    [
        "mean_absolute_error",
        "huber",
        "log_cosh",
        "kl_divergence",
        "hinge",
        "cosine_similarity",
        "binary_focal_crossentropy",
    ],
)
@pytest.mark.parametrize("act", ["sigmoid", "softmax", "softplus", "tanh"])
def test_gradient_through_the_output_activation(name, act):
    rng = np.random.default_rng(2)
    z = rng.normal(size=(5, 4)).astype(np.float32)
    out = _core.activation_forward(act, z)
    _, y = _data(name, 5, 4, seed=2)
    _, dz = _c(name, out, y, activation=act, z=z)
    upstream = ref.keras_reduced_loss(name, y, out.astype(np.float64))[1]
    expected = ref.activation_grad(act, z.astype(np.float64), upstream)
    np.testing.assert_allclose(dz, expected, rtol=2e-5, atol=1e-7)


def test_weights_scale_rows_and_zero_weight_removes_a_row():
    out, y = _data("mean_absolute_error", 4, 3)
    base, g0 = _c("mean_absolute_error", out, y)
    w = np.array([0.0, 1.0, 2.0, 0.5], np.float32)
    loss, g = _c("mean_absolute_error", out, y, sample_weight=w)
    np.testing.assert_array_equal(loss, base * w)
    np.testing.assert_allclose(g, g0 * w[:, None], rtol=1e-7)
    assert (g[0] == 0).all()


@pytest.mark.parametrize(
    "bad,match",
    [
        (np.array([1, -1, 1], np.float32), ">= 0"),
        (np.array([1, np.nan, 1], np.float32), "finite"),
        (np.ones(4, np.float32), "shape"),
        (np.ones(3), "dtype"),
    ],
)
def test_core_refuses_bad_weights(bad, match):
    out, y = _data("mean_squared_error", 3, 2)
    with pytest.raises((ValueError, TypeError), match=match):
        _c("mean_squared_error", out, y, sample_weight=bad)


def test_core_refuses_bad_options():
    out, y = _data("mean_squared_error", 3, 2)
    with pytest.raises(ValueError, match="ignore_class"):
        _c("mean_squared_error", out, y, ignore_class=1)
    with pytest.raises(ValueError, match="label_smoothing"):
        _c("binary_crossentropy", np.full((3, 2), 0.5, np.float32), y, label_smoothing=2.0)
    with pytest.raises(ValueError, match="options"):
        _c("mean_squared_error", out, y, smoothing=1)


# ---- Keras' published numbers (the docstrings of keras/src/losses/losses.py) ----------------

A2 = [[0, 1], [0, 0]]
P2 = [[0.6, 0.4], [0.4, 0.6]]
L4 = [[-18.6, 0.51], [2.94, -12.8]]
C3 = [[0, 1, 0], [0, 0, 1]]
Q3 = [[0.05, 0.95, 0], [0.1, 0.8, 0.1]]


@pytest.mark.parametrize(
    "value,expected",
    [
        (lambda: keras.losses.huber(A2, P2).mean(), 0.155),
        (lambda: keras.losses.Huber()(A2, P2), 0.155),
        (lambda: keras.losses.log_cosh([[0.0, 1.0], [0.0, 0.0]], [[1.0, 1.0], [0.0, 0.0]]).mean(), 0.108),
        (lambda: keras.losses.binary_crossentropy(A2, P2), [0.916, 0.714]),
        (lambda: keras.losses.binary_focal_crossentropy(A2, P2, gamma=2), [0.330, 0.206]),
        (lambda: keras.losses.categorical_crossentropy(C3, Q3), [0.0513, 2.303]),
        (lambda: keras.losses.sparse_categorical_crossentropy([1, 2], Q3), [0.0513, 2.303]),
        (
            lambda: keras.losses.cosine_similarity(
                [[0.0, 1.0], [1.0, 1.0], [1.0, 1.0]], [[1.0, 0.0], [1.0, 1.0], [-1.0, -1.0]]
            ),
            [-0.0, -0.99999994, 0.99999994],
        ),
        (lambda: keras.losses.MeanSquaredError()([1.0, 0.0, 1.0], [0.9, 0.1, 0.8]), 0.02),
        (lambda: keras.losses.MeanAbsoluteError()([1.0, 0.3, 1.0], [1.9, 0.3, 1.8]), 0.5666667),
        (lambda: keras.losses.MeanAbsolutePercentageError()([100.0, 200.0, 300.0], [90.0, 210.0, 310.0]), 6.111111),
        (lambda: keras.losses.BinaryCrossentropy(from_logits=True)([0, 1, 0, 0], [-18.6, 0.51, 2.94, -12.8]), 0.8654),
        (lambda: keras.losses.BinaryCrossentropy(from_logits=True)(A2, L4), 0.8654),
        (lambda: keras.losses.BinaryCrossentropy(from_logits=True)(A2, L4, sample_weight=[0.8, 0.2]), 0.243),
        (lambda: keras.losses.BinaryCrossentropy(from_logits=True, reduction="sum")(A2, L4), 1.730),
        (lambda: keras.losses.BinaryCrossentropy(from_logits=True, reduction=None)(A2, L4), [0.235, 1.496]),
        (
            lambda: keras.losses.BinaryFocalCrossentropy(gamma=2, from_logits=True)(
                [0, 1, 0, 0], [-18.6, 0.51, 2.94, -12.8]
            ),
            0.691,
        ),
        (
            lambda: keras.losses.BinaryFocalCrossentropy(apply_class_balancing=True, gamma=2, from_logits=True)(
                [0, 1, 0, 0], [-18.6, 0.51, 2.94, -12.8]
            ),
            0.51,
        ),
        (lambda: keras.losses.BinaryFocalCrossentropy(gamma=3, from_logits=True)(A2, L4), 0.647),
        (
            lambda: keras.losses.BinaryFocalCrossentropy(apply_class_balancing=True, gamma=3, from_logits=True)(A2, L4),
            0.482,
        ),
        (
            lambda: keras.losses.BinaryFocalCrossentropy(gamma=3, from_logits=True)(A2, L4, sample_weight=[0.8, 0.2]),
            0.133,
        ),
        (
            lambda: keras.losses.BinaryFocalCrossentropy(apply_class_balancing=True, gamma=3, from_logits=True)(
                A2, L4, sample_weight=[0.8, 0.2]
            ),
            0.097,
        ),
        (lambda: keras.losses.BinaryFocalCrossentropy(gamma=4, from_logits=True, reduction="sum")(A2, L4), 1.222),
        (
            lambda: keras.losses.BinaryFocalCrossentropy(gamma=5, from_logits=True, reduction=None)(A2, L4),
            [0.0017, 1.1561],
        ),
        (
            lambda: keras.losses.BinaryFocalCrossentropy(
                apply_class_balancing=True, gamma=5, from_logits=True, reduction=None
            )(A2, L4),
            [0.0004, 0.8670],
        ),
        (lambda: keras.losses.CategoricalCrossentropy()(C3, Q3), 1.177),
        (lambda: keras.losses.CategoricalCrossentropy()(C3, Q3, sample_weight=np.array([0.3, 0.7])), 0.814),
        (lambda: keras.losses.CategoricalCrossentropy(reduction="sum")(C3, Q3), 2.354),
        (lambda: keras.losses.SparseCategoricalCrossentropy()([1, 2], Q3), 1.177),
        (lambda: keras.losses.SparseCategoricalCrossentropy()([1, 2], Q3, sample_weight=np.array([0.3, 0.7])), 0.814),
    ],
)
def test_keras_docstring_examples(value, expected):
    got = np.asarray(value())
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, expected, atol=1.5e-3 if np.ndim(expected) else 6e-4, rtol=1e-3)


def test_ignore_class_is_masked_out_of_the_mean():
    # Keras: the mask weighs valid entries total / valid, so the mean is over the valid ones
    scce = keras.losses.SparseCategoricalCrossentropy(ignore_class=-1)
    y = np.array([1, -1, 2])
    p = np.array([[0.05, 0.95, 0], [0.3, 0.3, 0.4], [0.1, 0.8, 0.1]])
    expected = (-math.log(0.95) - math.log(0.1)) / 2
    assert float(scce(y, p)) == pytest.approx(expected, rel=1e-6)
    assert keras.losses.sparse_categorical_crossentropy(y, p, ignore_class=-1)[1] == 0


def test_hinge_reads_zero_one_labels_as_minus_one_one():
    p = np.array([[0.3, -0.8], [1.5, 0.2]])
    assert np.allclose(keras.losses.hinge([[0, 1], [1, 0]], p), keras.losses.hinge([[-1, 1], [1, -1]], p))
    np.testing.assert_allclose(keras.losses.hinge([[-1, 1], [1, -1]], p), [(1.3 + 1.8) / 2, (0 + 1.2) / 2], rtol=1e-6)


# ---- API: names, functions, classes, configs --------------------------------------------------

KERAS_CONFIGS = {  # keys of get_config() in Keras 3 (3.15 drops Huber's delta and CosineSimilarity's axis: cdnn keeps them)
    "MeanSquaredError": {"name", "reduction"},
    "Huber": {"name", "reduction", "delta"},
    "BinaryCrossentropy": {"name", "reduction", "from_logits", "label_smoothing", "axis"},
    "BinaryFocalCrossentropy": {
        "name",
        "reduction",
        "apply_class_balancing",
        "alpha",
        "gamma",
        "from_logits",
        "label_smoothing",
        "axis",
    },
    "CategoricalCrossentropy": {"name", "reduction", "from_logits", "label_smoothing", "axis"},
    "SparseCategoricalCrossentropy": {"name", "reduction", "from_logits", "ignore_class"},
    "CosineSimilarity": {"name", "reduction", "axis"},
}


@pytest.mark.parametrize("class_name", sorted(keras.losses._CLASSES))
def test_classes_round_trip_through_config(class_name):
    cls = getattr(keras.losses, class_name)
    loss = cls(name="mine")
    cfg = loss.get_config()
    if class_name in KERAS_CONFIGS:
        assert set(cfg) == KERAS_CONFIGS[class_name]
    again = cls.from_config(cfg)
    assert again.get_config() == cfg
    assert keras.losses.deserialize(keras.losses.serialize(loss)).get_config() == cfg
    out, y = _data(loss.core_name, 4, 3)
    assert float(loss(y, out)) == pytest.approx(float(again(y, out)))


def test_keras_default_names_and_aliases():
    assert keras.losses.Huber().name == "huber_loss"
    assert keras.losses.Huber(delta=2.0).delta == 2.0
    assert keras.losses.get("mae") is keras.losses.mean_absolute_error
    assert keras.losses.mse is keras.losses.MSE is keras.losses.mean_squared_error
    assert isinstance(keras.losses.get("Huber"), keras.losses.Huber)
    assert isinstance(keras.losses.get({"class_name": "Huber", "config": {"delta": 3.0}}), keras.losses.Huber)
    # cdnn's older saved form still loads
    old = keras.losses.get({"class_name": "SparseCategoricalCrossentropy", "from_logits": True, "name": "x"})
    assert old.from_logits and old.name == "x"


def test_functions_return_one_value_per_sample_and_accept_rank_differences():
    got = keras.losses.mae(np.array([1.0, 2.0, 3.0]), np.array([[1.5], [2.0], [2.0]]))
    np.testing.assert_allclose(got, [0.5, 0.0, 1.0])
    assert keras.losses.mse(np.zeros((2, 3, 4)), np.ones((2, 3, 4))).shape == (2, 3)
    with pytest.raises(ValueError, match="shape"):
        keras.losses.mse(np.zeros((2, 3)), np.ones((2, 4)))


@pytest.mark.parametrize(
    "bad",
    [
        lambda: keras.losses.Huber(delta=0),
        lambda: keras.losses.Huber(delta="x"),
        lambda: keras.losses.BinaryCrossentropy(label_smoothing=1.5),
        lambda: keras.losses.MeanSquaredError(reduction="avg"),
        lambda: keras.losses.CategoricalCrossentropy(axis=0),
        lambda: keras.losses.BinaryFocalCrossentropy(gamma=-1),
    ],
)
def test_bad_arguments_are_refused_at_construction(bad):
    with pytest.raises(ValueError):
        bad()


def _model(units=3, act="softmax"):
    return keras.Sequential(
        [keras.layers.Input((4,)), keras.layers.Dense(5, activation="relu"), keras.layers.Dense(units, activation=act)]
    )


def test_compile_refuses_python_losses_listing_the_builtins():
    def my_loss(y_true, y_pred):
        return ((y_true - y_pred) ** 2).mean(-1)

    class MyLoss(keras.losses.Loss):
        def call(self, y_true, y_pred):
            return ((y_true - y_pred) ** 2).mean(-1)

    for loss in (my_loss, MyLoss(), lambda t, p: t):
        with pytest.raises(ValueError) as e:
            _model().compile(loss=loss)
        msg = str(e.value)
        assert "C training loop" in msg and "huber" in msg and "cosine_similarity" in msg
    # the subclass still works standalone, as a Keras Loss
    assert float(MyLoss()([[1.0, 2.0]], [[1.0, 4.0]])) == pytest.approx(2.0)


def test_compile_refuses_reductions_it_cannot_train_with():
    with pytest.raises(ValueError, match="sum_over_batch_size"):
        _model().compile(loss=keras.losses.MeanSquaredError(reduction="sum"))


@pytest.mark.parametrize(
    "loss",
    [
        "mse",
        "mae",
        "mape",
        "msle",
        "huber",
        "log_cosh",
        "poisson",
        "kld",
        keras.losses.Huber(delta=0.5),
        keras.losses.mean_absolute_error,
        "cosine_similarity",
        "categorical_hinge",
        "hinge",
        "squared_hinge",
        "binary_crossentropy",
        keras.losses.BinaryFocalCrossentropy(gamma=1.0),
        keras.losses.CategoricalCrossentropy(label_smoothing=0.1),
        keras.losses.SparseCategoricalCrossentropy(ignore_class=0),
    ],
)
def test_training_is_bit_identical_on_one_and_two_threads(loss):
    rng = np.random.default_rng(7)
    x = rng.normal(size=(203, 4)).astype(np.float32)
    labels = rng.integers(0, 3, 203)
    name = keras.losses.resolve(loss).core_name
    y = labels if name == "sparse_categorical_crossentropy" else np.eye(3, dtype=np.float32)[labels]
    act = "softplus" if name in ("poisson", "mean_squared_logarithmic_error") else "softmax"
    results = []
    for threads in (1, 2):
        cdnn.set_num_threads(threads)
        try:
            keras.utils.set_random_seed(3)
            m = _model(3, act)
            m.compile(optimizer="adam", loss=loss)
            h = m.fit(x, y, batch_size=16, epochs=2, verbose=0, sample_weight=rng.uniform(0, 2, 203) * 0 + 1.5)
            results.append((h.history["loss"], [w.copy() for w in m.get_weights()]))
        finally:
            cdnn.set_num_threads(0)
    assert results[0][0] == results[1][0]
    assert all(np.array_equal(a, b) for a, b in zip(results[0][1], results[1][1]))
    assert all(math.isfinite(v) for v in results[0][0])


def test_training_loss_matches_reference_after_one_step():
    """fit's first batch loss is the reference loss of the initial weights' outputs."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(24, 4)).astype(np.float32)
    y = rng.normal(size=(24, 2)).astype(np.float32)
    w = rng.uniform(0, 2, 24).astype(np.float32)
    keras.utils.set_random_seed(0)
    m = keras.Sequential([keras.layers.Input((4,)), keras.layers.Dense(2, activation="tanh")])
    m.compile(optimizer=keras.optimizers.SGD(0.0), loss=keras.losses.Huber(delta=0.2))
    out = m.predict(x, verbose=0).astype(np.float64)
    expected = ref.keras_reduced_loss("huber", y, out, sample_weight=w, delta=0.2)[0]
    h = m.fit(x, y, batch_size=24, epochs=1, verbose=0, shuffle=False, sample_weight=w)
    assert h.history["loss"][0] == pytest.approx(expected, rel=1e-6)
    assert m.evaluate(x, y, sample_weight=w, verbose=0) == pytest.approx(expected, rel=1e-6)


# ---- real Keras, where installed (CI: pip install keras jax[cpu]) -----------------------------


def _real_keras():
    os.environ.setdefault("KERAS_BACKEND", "numpy")
    return pytest.importorskip("keras")


@pytest.mark.parametrize("name,from_logits", CASES)
def test_per_sample_values_match_real_keras(name, from_logits):
    rk = _real_keras()
    out, y = _data(name, 6, 4, seed=11, from_logits=from_logits)
    fn = getattr(rk.losses, name)
    kwargs = {"from_logits": True} if from_logits else {}
    expected = np.asarray(fn(y, out, **kwargs), dtype=np.float64)
    ours = getattr(keras.losses, name)(y, out, **kwargs)
    np.testing.assert_allclose(ours, expected, rtol=2e-5, atol=2e-6)


@pytest.mark.parametrize(
    "make",
    [
        lambda m: m.Huber(delta=0.7),
        lambda m: m.BinaryFocalCrossentropy(apply_class_balancing=True, gamma=1.5, alpha=0.3),
        lambda m: m.CategoricalCrossentropy(label_smoothing=0.2),
        lambda m: m.SparseCategoricalCrossentropy(ignore_class=2),
        lambda m: m.KLDivergence(reduction="sum"),
    ],
)
def test_classes_with_options_and_weights_match_real_keras(make):
    rk = _real_keras()
    ours, theirs = make(keras.losses), make(rk.losses)
    name = ours.core_name
    out, y = _data(name, 8, 4, seed=2)
    if name == "sparse_categorical_crossentropy":
        y[1] = 2
    w = np.linspace(0, 1.5, 8).astype(np.float32)
    np.testing.assert_allclose(
        ours(y, out, sample_weight=w), np.asarray(theirs(y, out, sample_weight=w)), rtol=2e-5, atol=2e-6
    )
    theirs_cfg = theirs.get_config()
    assert {k: v for k, v in ours.get_config().items() if k in theirs_cfg or k not in ("delta", "axis")} == theirs_cfg


def test_hinge_training_reads_zero_one_labels_as_minus_one_one():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(40, 4)).astype(np.float32)
    y01 = rng.integers(0, 2, size=(40, 1)).astype(np.float32)
    histories = []
    for y in (y01, 2 * y01 - 1):
        keras.utils.set_random_seed(2)
        m = keras.Sequential([keras.layers.Input((4,)), keras.layers.Dense(1, activation="tanh")])
        m.compile(optimizer="sgd", loss="hinge")
        histories.append(m.fit(x, y, batch_size=8, epochs=2, verbose=0).history["loss"])
    assert histories[0] == histories[1]
