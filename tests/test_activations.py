"""Activations: the core's vectorized forms and derivatives against float64 NumPy (tests/reference.py,
keras/src/activations/activations.py's formulas), their stated accuracy, Keras' published examples,
Dense layers using them (fused forward, dX epilogue, depth-split layers) on 1 and 2 threads."""

import numpy as np
import pytest
import reference as ref

import cdnn
import cdnn as keras
from cdnn import _core

NEW = ("elu", "selu", "silu", "softplus", "softsign", "hard_sigmoid", "hard_silu", "mish", "relu6", "exponential")
#: max error of the value in float32 ulps of the exact value (README/docs state these)
ULP_BOUND = {
    "elu": 2,
    "selu": 3,
    "silu": 4,
    "softplus": 2,
    "softsign": 2,
    "hard_sigmoid": 1,
    "hard_silu": 2,
    "mish": 4,
    "relu6": 0,
    "exponential": 4,
}
#: max error of the derivative: relative, or absolute where the derivative is below 1 in magnitude
GRAD_BOUND = 3e-7
ALPHA = {"elu": 1.0}


def _grid():
    return np.concatenate(
        [
            np.linspace(-100, 100, 200001),
            np.linspace(-10, 10, 200001),
            np.linspace(-1e-3, 1e-3, 2001),
            -np.logspace(-30, 2, 5000),
            np.logspace(-30, 1.94, 5000),
            [0.0, -0.0, 3.0, -3.0, 6.0],
        ]
    ).astype(np.float32)


def _ulps(got: np.ndarray, exact: np.ndarray) -> np.ndarray:
    return np.abs(got.astype(np.float64) - exact) / np.spacing(np.abs(exact.astype(np.float32))).astype(np.float64)


@pytest.mark.parametrize("name", NEW)
def test_value_within_stated_ulps_of_float64(name):
    x = _grid()
    if name == "exponential":
        x = x[x < 88.7]  # beyond, e^x overflows float32 (inf, as NumPy's float32 exp)
    y = _core.activation_forward(name, x.reshape(1, -1), ALPHA.get(name, 0.2)).ravel()
    exact = ref.activation(name, x.astype(np.float64))
    # silu and mish are 0 below -87.33, where e^x leaves float32's normal range (|exact| < 1.1e-36)
    judged = (np.abs(exact) >= 1e-36) & ~((x < -87.33) & np.isin(name, ("silu", "mish")))
    assert _ulps(y[judged], exact[judged]).max() <= ULP_BOUND[name]
    assert np.isfinite(y).all()
    # the rest: flushed towards 0, never the wrong sign or size
    assert (np.abs(y[~judged]) <= 1.2e-36).all()


@pytest.mark.parametrize("name", NEW)
def test_derivative_within_stated_error_of_float64(name):
    x = _grid()
    if name == "exponential":
        x = x[x < 88.7]
    g = _core.activation_backward(
        name, x.reshape(1, -1), np.ones((1, x.size), np.float32), ALPHA.get(name, 0.2)
    ).ravel()
    exact = ref.activation_grad(name, x.astype(np.float64), np.ones(x.size))
    err = np.abs(g - exact) / np.maximum(np.abs(exact), 1.0)
    assert err.max() <= GRAD_BOUND


@pytest.mark.parametrize("name", NEW + ("log_softmax",))
def test_derivative_matches_finite_differences(name):
    rng = np.random.default_rng(4)
    z = (rng.normal(size=(3, 7)) * 2).astype(np.float64)
    z[np.abs(np.abs(z) - 3) < 0.05] += 0.1  # away from hard_sigmoid's kinks
    u = rng.normal(size=z.shape)
    analytic = ref.activation_grad(name, z, u)
    h = 1e-6
    num = np.zeros_like(z)
    for idx in np.ndindex(z.shape):
        up, dn = z.copy(), z.copy()
        up[idx] += h
        dn[idx] -= h
        num[idx] = ((ref.activation(name, up) - ref.activation(name, dn)) * u).sum() / (2 * h)
    np.testing.assert_allclose(analytic, num, rtol=1e-5, atol=1e-7)
    core = _core.activation_backward(name, z.astype(np.float32), u.astype(np.float32), ALPHA.get(name, 0.2))
    np.testing.assert_allclose(core, analytic, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("rows,cols", [(1, 1), (3, 7), (33, 1000)])
def test_log_softmax_rows(rows, cols):
    z = (np.random.default_rng(rows).normal(size=(rows, cols)) * 5).astype(np.float32)
    got = _core.activation_forward("log_softmax", z)
    exact = ref.activation("log_softmax", z.astype(np.float64))
    # within a few ulps of the row's largest magnitude (the result is x - max - log(sum))
    scale = np.spacing(np.abs(exact).max(axis=1, keepdims=True).astype(np.float32))
    assert (np.abs(got - exact) <= 4 * scale).all()
    np.testing.assert_allclose(np.exp(got.astype(np.float64)).sum(axis=1), 1.0, rtol=1e-5)


def test_keras_docstring_examples():
    x = np.array([-10, -5, 0.0, 5, 10], np.float32)
    np.testing.assert_array_equal(keras.activations.relu(x), [0, 0, 0, 5, 10])
    np.testing.assert_allclose(keras.activations.relu(x, negative_slope=0.5), [-5, -2.5, 0, 5, 10])
    np.testing.assert_allclose(keras.activations.relu(x, max_value=5.0), [0, 0, 0, 5, 5])
    np.testing.assert_allclose(keras.activations.relu(x, threshold=5.0), [-0, -0, 0, 0, 10])
    for kw in (
        {"negative_slope": 0.3, "threshold": 1.0},
        {"negative_slope": 0.1, "max_value": 2.0, "threshold": -1},
        {"max_value": 6.0},
    ):
        np.testing.assert_allclose(keras.activations.relu(x, **kw), ref.relu_with_options(x, **kw))
    np.testing.assert_allclose(
        keras.activations.hard_sigmoid(np.array([-3.5, -3, 0, 1.5, 3, 4], np.float32)), [0, 0, 0.5, 0.75, 1, 1]
    )
    np.testing.assert_allclose(
        keras.activations.hard_silu(np.array([-4, -1.5, 0, 2, 4], np.float32)),
        [0, -1.5 * 1.5 / 6, 0, 2 * 5 / 6, 4],
        rtol=1e-6,
    )
    np.testing.assert_allclose(
        keras.activations.elu(np.array([-1.0, 2.0], np.float32), alpha=0.5), [0.5 * (np.exp(-1) - 1), 2.0], rtol=1e-6
    )


def test_aliases_and_serialization():
    assert keras.activations.get("swish") is keras.activations.silu
    assert keras.activations.get("hard_swish") is keras.activations.hard_silu
    d = keras.layers.Dense(3, activation="swish")
    assert d.get_config()["activation"] == "silu"
    assert keras.layers.Dense(3, activation=keras.activations.mish).get_config()["activation"] == "mish"
    with pytest.raises(ValueError, match="celu"):
        keras.layers.Dense(3, activation="celu")
    with pytest.raises(ValueError, match="axis"):
        keras.activations.log_softmax(np.ones((2, 2)), axis=0)


def _train(
    act,
    units=(40,),
    threads=1,
    seed=0,
    out_act="softmax",
    loss="sparse_categorical_crossentropy",
    n=150,
    features=24,
    init="glorot_uniform",
):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, features)).astype(np.float32)
    y = rng.integers(0, 3, n)
    cdnn.set_num_threads(threads)
    try:
        keras.utils.set_random_seed(seed)
        layers = [keras.layers.Input((features,))]
        layers += [keras.layers.Dense(u, activation=act, kernel_initializer=init) for u in units]
        layers.append(keras.layers.Dense(3, activation=out_act))
        m = keras.Sequential(layers)
        m.compile(optimizer="adam", loss=loss)
        h = m.fit(x, y, batch_size=16, epochs=2, verbose=0)
        return h.history["loss"], m.get_weights(), m.predict(x, verbose=0)
    finally:
        cdnn.set_num_threads(0)


@pytest.mark.parametrize("act", NEW)
def test_dense_training_is_bit_identical_on_one_and_two_threads(act):
    # two hidden layers: the lower one's derivative runs in dX's epilogue
    a = _train(act, units=(33, 7), threads=1)
    b = _train(act, units=(33, 7), threads=2)
    assert a[0] == b[0]
    assert all(np.array_equal(u, v) for u, v in zip(a[1], b[1]))
    assert all(np.isfinite(v) for v in a[0])


@pytest.mark.parametrize("act", ["silu", "mish", "elu", "softsign"])
def test_depth_split_layers_match_unsplit_gradients(act):
    """Layers big enough to be split in depth (784 x 64) train the same on 1 and 2 threads."""
    a = _train(act, units=(64, 64), threads=1, features=784, n=64)
    b = _train(act, units=(64, 64), threads=2, features=784, n=64)
    assert a[0] == b[0]
    assert all(np.array_equal(u, v) for u, v in zip(a[1], b[1]))


@pytest.mark.parametrize("act", NEW)
def test_dense_forward_and_backward_against_reference(act):
    rng = np.random.default_rng(9)
    x = rng.normal(size=(7, 5)).astype(np.float32)
    W = (rng.normal(size=(5, 33)) * 0.7).astype(np.float32)
    b = rng.normal(size=33).astype(np.float32) * 0.1
    y, z = _core.dense_forward(x, W, b, act, ALPHA.get(act, 0.2))
    zr = x.astype(np.float64) @ W + b
    np.testing.assert_allclose(y, ref.activation(act, zr), rtol=2e-5, atol=1e-5)
    dy = rng.normal(size=y.shape).astype(np.float32)
    a = z if act in _core.GRAD_FROM_Z else y
    dW, _, dx = _core.dense_backward(x, W, a, dy, act, ALPHA.get(act, 0.2))
    dz = ref.activation_grad(act, zr, dy.astype(np.float64))
    np.testing.assert_allclose(dW, x.T.astype(np.float64) @ dz, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(dx, dz @ W.T, rtol=1e-4, atol=1e-5)


def test_log_softmax_output_with_logits_loss_trains_like_softmax():
    """log_softmax outputs are logits: with from_logits cross-entropy the loss equals softmax + cross-entropy."""
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    a = _train("relu", out_act="log_softmax", loss=loss)
    b = _train("relu", out_act="softmax")
    np.testing.assert_allclose(a[0], b[0], rtol=1e-5)
    np.testing.assert_allclose(np.exp(a[2]).sum(axis=1), 1.0, rtol=1e-5)


def test_selu_with_lecun_normal_self_normalizes():
    """Keras' recipe: selu with lecun_normal weights keeps unit-variance inputs near mean 0, variance 1."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4000, 256)).astype(np.float32)
    keras.utils.set_random_seed(1)
    m = keras.Sequential(
        [keras.layers.Input((256,))]
        + [keras.layers.Dense(256, activation="selu", kernel_initializer="lecun_normal") for _ in range(8)]
    )
    out = m.predict(x, verbose=0)
    assert abs(out.mean()) < 0.1 and abs(out.std() - 1) < 0.1


@pytest.mark.parametrize("act", NEW)
def test_uncompiled_model_and_layer_call_use_keras_defaults(act):
    """predict before compile and Dense(x) apply the activation with Keras' parameters (elu's alpha 1)."""
    rng = np.random.default_rng(3)
    x = rng.normal(size=(5, 4)).astype(np.float32)
    keras.utils.set_random_seed(0)
    layer = keras.layers.Dense(6, activation=act)
    m = keras.Sequential([keras.layers.Input((4,)), layer])
    expected = ref.activation(act, x.astype(np.float64) @ layer.kernel + layer.bias)
    np.testing.assert_allclose(m.predict(x, verbose=0), expected, rtol=2e-5, atol=1e-5)
    np.testing.assert_allclose(layer(x), expected, rtol=2e-5, atol=1e-5)
