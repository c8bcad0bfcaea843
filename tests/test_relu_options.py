"""Keras' relu with ``negative_slope``, ``max_value`` and ``threshold`` (``keras.activations.relu``,
``layers.ReLU``) in the C core: against the float64 oracle (tests/reference.py), finite differences,
real Keras 3 on JAX (values bit for bit, including NaN and infinities), on every SIMD path and on 1 and
2 threads, in a Dense layer of the fused chain and as a layer of a graph."""

import os

import numpy as np
import pytest
import reference as ref

from cdnn import _core, keras

#: (negative_slope, max_value, threshold): each of Keras' branches, and the general code
OPTIONS = [
    (0.0, 3.0, 0.0),
    (0.0, None, 1.5),
    (0.0, 2.5, 0.5),
    (0.3, None, 1.0),
    (0.25, 4.0, 0.0),
    (0.1, 2.0, 0.75),
    (0.5, 1.0, 1.0),
]
OPT_IDS = [f"s{s}-m{m}-t{t}" for s, m, t in OPTIONS]
SIZES = [1, 3, 7, 33, 784, 1000]
SIMD_PATHS = _core.build_info()["simd_supported"]


@pytest.fixture(params=SIMD_PATHS)
def simd(request):
    _core.simd_select(request.param)
    yield request.param
    _core.simd_select("auto")


def _kw(slope, max_value, threshold):
    return {"alpha": slope, "max_value": max_value, "threshold": threshold}


def _values(n, seed, threshold, max_value):
    """Normal draws plus the kinks themselves (threshold, 0, max_value) when they fit."""
    x = (np.random.default_rng(seed).normal(size=n) * 3).astype(np.float32)
    kinks = [threshold, 0.0] + ([] if max_value is None else [max_value])
    x[: min(n, len(kinks))] = kinks[: min(n, len(kinks))]
    return x


@pytest.mark.parametrize("opts", OPTIONS, ids=OPT_IDS)
@pytest.mark.parametrize("n", SIZES)
def test_value_and_derivative_match_the_oracle_on_every_simd_path(opts, n, simd):
    slope, max_value, threshold = opts
    x = _values(n, n, threshold, max_value).reshape(1, n)
    y = _core.activation_forward("relu_args", x, **_kw(*opts))
    exact = ref.relu_with_options(x, slope, max_value, threshold)
    # one rounding of slope * (x - threshold) and of the subtraction: within 2 ulp of the exact value
    np.testing.assert_allclose(y, exact, rtol=2.4e-7, atol=1e-37)
    u = np.random.default_rng(n + 1).normal(size=(1, n)).astype(np.float32)
    g = _core.activation_backward("relu_args", x, u, **_kw(*opts))
    np.testing.assert_allclose(g, ref.relu_with_options_grad(x, u, slope, max_value, threshold), rtol=1.2e-7)


@pytest.mark.parametrize("opts", OPTIONS, ids=OPT_IDS)
def test_derivative_matches_finite_differences_away_from_the_kinks(opts):
    slope, max_value, threshold = opts
    rng = np.random.default_rng(7)
    z = rng.normal(size=(5, 9)) * 3
    kinks = np.array([threshold, 0.0] + ([] if max_value is None else [max_value]))
    z = z[np.abs(z[..., None] - kinks).min(-1) > 1e-2].reshape(1, -1)
    u = rng.normal(size=z.shape)
    g = _core.activation_backward("relu_args", z.astype(np.float32), u.astype(np.float32), **_kw(*opts))
    h = 1e-3
    fd = (ref.relu_with_options(z + h, *opts) - ref.relu_with_options(z - h, *opts)) / (2 * h) * u
    np.testing.assert_allclose(g, fd, rtol=1e-6, atol=1e-6)


def _jax_keras():
    pytest.importorskip("jax")
    os.environ.setdefault("KERAS_BACKEND", "jax")
    real = pytest.importorskip("keras")
    if real.backend.backend() != "jax":
        pytest.skip("needs Keras on the JAX backend")
    return real


SPECIAL = [-np.inf, -7.0, -1.0, -0.0, 0.0, 0.5, 0.75, 1.0, 1.5, 2.0, 2.5, 3.0, 6.0, 7.0, np.inf, np.nan]


@pytest.mark.parametrize(
    "opts", OPTIONS + [(0.0, 6.0, 0.0), (0.2, 6.0, 0.0), (0.0, None, -1.0), (0.1, 2.0, -1.0)], ids=str
)
def test_keras_activation_is_bit_identical_to_keras_on_jax(opts):
    real = _jax_keras()
    import jax

    slope, max_value, threshold = opts
    x = np.concatenate([np.array(SPECIAL, np.float32), _values(997, 3, threshold, max_value)])
    theirs = np.asarray(real.activations.relu(x, negative_slope=slope, max_value=max_value, threshold=threshold))
    ours = keras.activations.relu(x, negative_slope=slope, max_value=max_value, threshold=threshold)
    np.testing.assert_array_equal(ours, theirs)
    # the derivative: Keras on JAX splits a tie of clip's max/min in halves (0.5 at x == max_value,
    # and at 0 for a negative threshold); cdnn takes 0 there, as relu and relu6 do at their kinks
    grad = jax.vmap(jax.grad(lambda v: real.activations.relu(v, slope, max_value, threshold)))
    finite = np.isfinite(x)
    mine = _core.activation_backward(
        "relu_args", x.reshape(1, -1), np.ones((1, x.size), np.float32), **_kw(*opts)
    ).ravel()
    ties = (x == max_value) | ((x == 0) & (max_value is not None))
    judged = finite & ~ties
    np.testing.assert_array_equal(mine[judged], np.asarray(grad(x[judged])))


def test_relu_layer_arguments_as_keras():
    layer = keras.layers.ReLU(max_value=6, negative_slope=0.1, threshold=0.5, name="r")
    config = layer.get_config()
    assert (config["max_value"], config["negative_slope"], config["threshold"]) == (6.0, 0.1, 0.5)
    again = keras.layers.ReLU.from_config(config)
    assert (again.max_value, again.negative_slope, again.threshold) == (6.0, 0.1, 0.5)
    for kw in ({"max_value": -1.0}, {"negative_slope": -0.1}, {"threshold": -0.5}, {"threshold": None}):
        with pytest.raises(ValueError, match=next(iter(kw))):
            keras.layers.ReLU(**kw)
    x = np.array([[-10, -5, 0.0, 5, 10]], np.float32)
    np.testing.assert_allclose(
        keras.layers.ReLU(max_value=10, negative_slope=0.5, threshold=0)(x), [[-5, -2.5, 0, 5, 10]]
    )


def _graph(lib, opts, seed_layers=None):
    slope, max_value, threshold = opts
    inp = lib.Input((12,))
    h = lib.layers.Dense(33, name="h")(inp)
    h = lib.layers.ReLU(max_value=max_value, negative_slope=slope, threshold=threshold, name="r")(h)
    return lib.Model(inp, lib.layers.Dense(3, activation="softmax", name="out")(h))


def _data(n=96):
    rng = np.random.default_rng(5)
    return rng.normal(size=(n, 12)).astype(np.float32), rng.integers(0, 3, n)


@pytest.mark.parametrize("opts", OPTIONS, ids=OPT_IDS)
def test_relu_layer_trains_as_keras_on_jax(opts):
    real = _jax_keras()
    x, y = _data()
    theirs, ours = _graph(real, opts), _graph(keras, opts)
    ours.set_weights(theirs.get_weights())
    theirs.compile(real.optimizers.SGD(0.05), loss="sparse_categorical_crossentropy")
    ours.compile(keras.optimizers.SGD(0.05), loss="sparse_categorical_crossentropy")
    h_theirs = theirs.fit(x, y, batch_size=16, epochs=3, shuffle=False, verbose=0).history["loss"]
    h_ours = ours.fit(x, y, batch_size=16, epochs=3, shuffle=False, verbose=0).history["loss"]
    np.testing.assert_allclose(h_ours, h_theirs, rtol=1e-5)
    for a, b in zip(ours.get_weights(), theirs.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(ours.predict(x, verbose=0), theirs.predict(x, verbose=0), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("opts", OPTIONS, ids=OPT_IDS)
def test_relu_layer_gradients_match_the_graph_oracle(opts):
    """One SGD step of the graph (loss and updated weights) against the oracle's gradients."""
    x, y = _data(40)
    model = _graph(keras, opts)
    w0 = [w.astype(np.float64) for w in model.get_weights()]
    model.compile(keras.optimizers.SGD(1.0), loss="sparse_categorical_crossentropy")
    loss = model.fit(x, y, batch_size=40, epochs=1, shuffle=False, verbose=0).history["loss"][0]
    slope, max_value, threshold = opts
    nodes = [
        {"op": "input", "shape": (12,)},
        {"op": "dense", "inputs": [0], "shape": (33,), "W": w0[0], "b": w0[1]},
        {
            "op": "activation",
            "inputs": [1],
            "shape": (33,),
            "activation": "relu_args",
            "alpha": slope,
            "max_value": max_value,
            "threshold": threshold,
        },
        {"op": "dense", "inputs": [2], "shape": (3,), "W": w0[2], "b": w0[3], "activation": "softmax"},
    ]
    oracle = ref.Graph(nodes, [0], [{"node": 3, "loss": "sparse_categorical_crossentropy"}])
    want_loss, _, grads, _ = oracle.gradients([x], [y])
    np.testing.assert_allclose(loss, want_loss, rtol=1e-5)
    for k, (node, name) in enumerate([(1, "W"), (1, "b"), (3, "W"), (3, "b")]):
        np.testing.assert_allclose(model.get_weights()[k], w0[k] - grads[(node, name)], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("opts", OPTIONS, ids=OPT_IDS)
def test_relu_args_in_the_fused_chain_is_bit_identical_on_1_and_2_threads(opts):
    """A Dense layer of the fused chain (``_core.Network``) with relu_args: the same weights on 1 and 2
    threads, and predictions as the oracle's forward pass."""
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(200, 30)).astype(np.float32), rng.integers(0, 5, 200).astype(np.int32)
    runs = []
    for threads in (1, 2):
        w = [
            (rng_w := np.random.default_rng(9)).normal(size=(30, 1000)).astype(np.float32) * 0.05,
            np.zeros(1000, np.float32),
            rng_w.normal(size=(1000, 5)).astype(np.float32) * 0.05,
            np.zeros(5, np.float32),
        ]
        layers = [
            {"W": w[0], "b": w[1], "activation": "relu_args", **_kw(*opts)},
            {"W": w[2], "b": w[3], "activation": "softmax"},
        ]
        net = _core.Network(
            layers, "sparse_categorical_crossentropy", False, "sparse", {"name": "sgd", "learning_rate": 0.1}
        )
        n_b = 200 // 32 + 1
        perm = np.arange(200, dtype=np.int32)
        net.train_run(x, y, perm, 0, n_b, 32, 0, 1, np.zeros(n_b), np.zeros(n_b), threads, False)
        runs.append([a.copy() for a in w])
        if threads == 1:
            out = net.predict(x, 512)
            h = ref.relu_with_options(x.astype(np.float64) @ w[0] + w[1], *opts)
            want = ref.activation("softmax", h @ w[2] + w[3])
            np.testing.assert_allclose(out if not isinstance(out, tuple) else out[0], want, rtol=1e-4, atol=1e-6)
    for a, b in zip(*runs):
        np.testing.assert_array_equal(a, b)
