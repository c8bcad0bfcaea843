"""Tests for the building blocks used on their own: layers, activations,
initialisers, losses, optimizers' ``apply_gradients`` and utils.

Expected numbers are Keras 3's documented examples or worked out by hand
from Keras' formulas.
"""

import math

import numpy as np
import pytest

import cdnn
from cdnn import keras


@pytest.fixture(autouse=True)
def fresh_session():
    cdnn.utils.clear_session()
    keras.utils.set_random_seed(0)


# --------------------------------------------------------------------------- layers


def test_dense_builds_kernel_and_bias_and_reports_shapes():
    layer = keras.layers.Dense(5, activation="relu")
    assert not layer.built and layer.weights == [] and layer.count_params() == 0
    layer.build((7,))
    assert layer.kernel.shape == (7, 5) and layer.bias.shape == (5,)
    assert layer.output_shape_ == (5,) and layer.count_params() == 40
    no_bias = keras.layers.Dense(5, use_bias=False)
    no_bias.build((7,))
    assert [w.shape for w in no_bias.get_weights()] == [(7, 5)] and no_bias.count_params() == 35


def test_dense_call_computes_activation_of_affine_map():
    layer = keras.layers.Dense(3, activation="tanh", bias_initializer="ones")
    x = np.random.default_rng(0).normal(size=(4, 6)).astype(np.float32)
    out = layer(x)
    np.testing.assert_allclose(out, np.tanh(x.astype(np.float64) @ layer.kernel + 1.0), atol=1e-6)


def test_model_without_bias_trains_and_counts_params():
    model = keras.Sequential(
        [
            keras.layers.Dense(4, use_bias=False, activation="relu", input_shape=(3,)),
            keras.layers.Dense(2, activation="softmax"),
        ]
    )
    assert model.count_params() == 12 + 8 + 2
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    before = model.get_weights()
    model.fit(np.eye(3).repeat(4, axis=0), np.arange(12) % 2, verbose=0)
    assert [w.shape for w in model.get_weights()] == [(3, 4), (4, 2), (2,)]
    assert not np.array_equal(before[0], model.get_weights()[0])


def test_flatten_and_dropout_shapes():
    flat = keras.layers.Flatten()
    flat.build((28, 28))
    assert flat.output_shape_ == (784,) and flat.count_params() == 0
    drop = keras.layers.Dropout(0.25)
    drop.build((100,))
    assert drop.output_shape_ == (100,) and drop.rate == 0.25


def test_input_layer():
    inp = keras.layers.Input(shape=(28, 28))
    assert inp.shape == (None, 28, 28)
    assert keras.Input is keras.layers.Input
    assert keras.layers.Input(shape=784).shape == (None, 784)


@pytest.mark.parametrize(
    "layer",
    [
        lambda: keras.layers.Dense(7, activation="gelu", use_bias=False, kernel_initializer="he_normal", name="d"),
        lambda: keras.layers.Dense(3, input_shape=(4,)),
        lambda: keras.layers.Flatten(input_shape=(2, 3), name="f"),
        lambda: keras.layers.Dropout(0.4),
        lambda: keras.layers.InputLayer(shape=(9,)),
    ],
)
def test_layer_configs_are_json_data_that_rebuild_the_layer(layer):
    import json

    original = layer()
    config = {"class_name": type(original).__name__, "config": original.get_config()}
    assert json.loads(json.dumps(config)) == config
    copy = keras.layers.deserialize(config)
    assert type(copy) is type(original) and copy.get_config() == original.get_config()


def test_deserialize_refuses_unknown_classes():
    with pytest.raises(ValueError, match="Invalid layer description"):
        keras.layers.deserialize({"class_name": "Lambda", "config": {"function": "print"}})


# --------------------------------------------------------------------------- activations


def test_activation_values():
    a = keras.activations
    x = np.array([-3.0, -0.5, 0.0, 0.5, 3.0])
    np.testing.assert_allclose(a.relu(x), [0, 0, 0, 0.5, 3])
    np.testing.assert_allclose(a.sigmoid(x), 1 / (1 + np.exp(-x)))
    np.testing.assert_allclose(a.tanh(x), np.tanh(x))
    np.testing.assert_allclose(a.linear(x), x)
    np.testing.assert_allclose(a.leaky_relu(x), [-0.6, -0.1, 0, 0.5, 3])  # Keras 3: slope 0.2
    np.testing.assert_allclose(a.gelu(x), [0.5 * v * (1 + math.erf(v / math.sqrt(2))) for v in x])
    np.testing.assert_allclose(a.softmax(np.array([[1.0, 2.0, 3.0]])), [[0.09003057, 0.24472847, 0.66524096]])
    assert a.sigmoid(np.array([-1000.0, 1000.0])).tolist() == [0.0, 1.0]  # no overflow warning, no NaN
    assert a.get(None) is a.linear and a.get("relu") is a.relu and a.get(a.gelu) is a.gelu


@pytest.mark.parametrize("name", ["sigmoid", "relu", "softmax", "tanh", "linear", "leaky_relu", "gelu"])
def test_every_activation_trains_in_the_core_like_the_numpy_function(name):
    layer = keras.layers.Dense(4, activation=name)
    x = np.random.default_rng(1).normal(size=(5, 3)).astype(np.float32)
    out = layer(x)
    z = x.astype(np.float64) @ layer.kernel
    np.testing.assert_allclose(out, getattr(keras.activations, name)(z), atol=2e-6)


def test_gelu_keeps_its_relative_precision_for_negative_inputs():
    layer = keras.layers.Dense(1, activation="gelu", use_bias=False)
    layer.build((1,))
    layer.kernel[...] = 1.0
    z = np.array([[-3.0], [-5.3], [-8.0]], np.float32)
    np.testing.assert_allclose(layer(z), keras.activations.gelu(z), rtol=1e-4)


# --------------------------------------------------------------------------- initializers


@pytest.mark.parametrize(
    "name, bound",
    [
        ("glorot_uniform", math.sqrt(6 / (30 + 20))),
        ("he_uniform", math.sqrt(6 / 30)),
        ("lecun_uniform", math.sqrt(3 / 30)),
        ("random_uniform", 0.05),
    ],
)
def test_uniform_initializers_bounds(name, bound):
    w = cdnn.initializers.get(name)((30, 20))
    assert w.dtype == np.float32 and w.shape == (30, 20) and w.flags.c_contiguous
    assert np.abs(w).max() <= bound and np.abs(w).max() > 0.9 * bound


def test_normal_initializers_are_truncated_at_two_deviations():
    # Keras' truncated normal: stddev sqrt(scale / fan) / 0.8796..., values within two of those
    w = cdnn.initializers.get("he_normal")((400, 300))
    std = math.sqrt(2 / 400) / 0.87962566103423978
    assert np.abs(w).max() <= 2 * std * (1 + 1e-6)
    assert w.std() == pytest.approx(math.sqrt(2 / 400), rel=0.02)  # the truncation undoes the correction


def test_constant_initializers():
    assert (cdnn.initializers.get("zeros")((3,)) == 0).all() and (cdnn.initializers.get("ones")((2, 2)) == 1).all()


# --------------------------------------------------------------------------- losses (Keras 3's docstring examples)


def test_losses_match_keras_documented_values():
    L = keras.losses
    probs = [[0.05, 0.95, 0], [0.1, 0.8, 0.1]]
    assert L.SparseCategoricalCrossentropy()([1, 2], probs) == pytest.approx(1.177, abs=1e-3)
    assert L.CategoricalCrossentropy()([[0, 1, 0], [0, 0, 1]], probs) == pytest.approx(1.177, abs=1e-3)
    assert L.BinaryCrossentropy()([[0, 1], [0, 0]], [[0.6, 0.4], [0.4, 0.6]]) == pytest.approx(0.815, abs=1e-3)
    assert L.BinaryCrossentropy(from_logits=True)([[0, 1], [0, 0]], [[-18.6, 0.51], [2.94, -12.8]]) == pytest.approx(
        0.865, abs=1e-3
    )
    assert L.MeanSquaredError()([[0.0, 1.0], [0.0, 0.0]], [[1.0, 1.0], [1.0, 0.0]]) == 0.5


def test_loss_names():
    # as Keras 3: a function's name gives the function, compile trains with its class
    assert keras.losses.get("mse") is keras.losses.mean_squared_error
    assert keras.losses.resolve("mse").core_name == "mean_squared_error"
    assert keras.losses.resolve("sparse_categorical_crossentropy").name == "sparse_categorical_crossentropy"
    loss = keras.losses.CategoricalCrossentropy(from_logits=True)
    assert keras.losses.get(loss) is loss
    assert keras.losses.get(keras.losses.serialize(loss)).from_logits


def test_from_logits_losses_train():
    # a linear output with a from_logits loss: the same training as softmax + the probability loss
    x = np.random.default_rng(0).normal(size=(64, 5)).astype(np.float32)
    y = np.arange(64) % 3
    results = []
    for last, loss in (
        ("linear", keras.losses.SparseCategoricalCrossentropy(from_logits=True)),
        ("softmax", "sparse_categorical_crossentropy"),
    ):
        keras.utils.set_random_seed(4)
        model = keras.Sequential([keras.layers.Dense(3, activation=last, input_shape=(5,))])
        model.compile(optimizer="sgd", loss=loss)
        results.append((model.fit(x, y, epochs=2, verbose=0).history["loss"], model.get_weights()))
    assert results[0][0] == pytest.approx(results[1][0], rel=1e-6)
    for a, b in zip(results[0][1], results[1][1]):
        np.testing.assert_allclose(a, b, atol=1e-6)


# --------------------------------------------------------------------------- optimizers by hand


def one_step(opt, g=1.0, w=1.0, steps=1):
    var = np.array([w], np.float32)
    for _ in range(steps):
        opt.apply_gradients([(np.array([g], np.float32), var)])
    return float(var[0])


def test_sgd_steps():
    assert one_step(keras.optimizers.SGD(0.1)) == pytest.approx(0.9)
    # Keras' docstring: with momentum 0.9 the second step moves by 0.18 (gradient = var)
    opt, var = keras.optimizers.SGD(0.1, momentum=0.9), np.array([1.0], np.float32)
    opt.apply_gradients([(var.copy(), var)])
    assert 1.0 - var[0] == pytest.approx(0.1)
    before = float(var[0])
    opt.apply_gradients([(var.copy(), var)])
    assert before - var[0] == pytest.approx(0.18, rel=1e-6)
    # Nesterov, by hand: m1 = -0.1; w1 = 1 + 0.9*m1 - 0.1 = 0.81
    assert one_step(keras.optimizers.SGD(0.1, momentum=0.9, nesterov=True)) == pytest.approx(0.81)


def test_adaptive_optimizers_first_steps():
    # Adagrad: a = 0.1 + 1; w -= 0.001 / sqrt(1.1 + 1e-7)
    assert one_step(keras.optimizers.Adagrad()) == pytest.approx(1 - 0.001 / math.sqrt(1.1 + 1e-7), abs=1e-7)
    # RMSprop: v = 0.1 * 1; w -= 0.001 / sqrt(0.1 + 1e-7)
    assert one_step(keras.optimizers.RMSprop()) == pytest.approx(1 - 0.001 / math.sqrt(0.1 + 1e-7), abs=1e-7)
    # Adam: alpha = lr sqrt(1 - 0.999) / (1 - 0.9); m = 0.1, v = 0.001; w -= alpha m / (sqrt(v) + 1e-7)
    alpha = 0.001 * math.sqrt(1 - 0.999) / (1 - 0.9)
    assert one_step(keras.optimizers.Adam()) == pytest.approx(1 - alpha * 0.1 / (math.sqrt(0.001) + 1e-7), abs=1e-7)
    # Adam, step 2 (same gradient): m = 0.19, v = 0.001999, alpha_2 = lr sqrt(1 - 0.999**2) / (1 - 0.81)
    alpha2 = 0.001 * math.sqrt(1 - 0.999**2) / (1 - 0.9**2)
    expected = 1 - alpha * 0.1 / (math.sqrt(0.001) + 1e-7) - alpha2 * 0.19 / (math.sqrt(0.001999) + 1e-7)
    assert one_step(keras.optimizers.Adam(), steps=2) == pytest.approx(expected, abs=1e-7)


def test_optimizer_iterations_count_updates():
    opt = keras.optimizers.Adam()
    one_step(opt, steps=3)
    assert opt.iterations == 3


# --------------------------------------------------------------------------- utils


def test_to_categorical():
    np.testing.assert_array_equal(keras.utils.to_categorical([0, 2, 1], 4), [[1, 0, 0, 0], [0, 0, 1, 0], [0, 1, 0, 0]])
    assert keras.utils.to_categorical(np.array([[1], [0]])).shape == (2, 2)
    with pytest.raises(ValueError):
        keras.utils.to_categorical([3], 2)


def test_set_random_seed_repeats_initial_weights():
    keras.utils.set_random_seed(42)
    a = keras.layers.Dense(4)
    a.build((3,))
    keras.utils.set_random_seed(42)
    b = keras.layers.Dense(4)
    b.build((3,))
    np.testing.assert_array_equal(a.kernel, b.kernel)
    # and Python's and NumPy's global generators, as Keras does
    import random

    keras.utils.set_random_seed(42)
    first = (random.random(), np.random.rand())
    keras.utils.set_random_seed(42)
    assert (random.random(), np.random.rand()) == first
