"""The layer families beyond Dense: configs (Keras' keys), shapes, weights, refusals, and their values in C.

Values are checked against Keras' published formulas written here in NumPy
(Normalization: ``(x - mean) / max(sqrt(var), 1e-7)``; Rescaling: ``x * scale
+ offset``; LayerNormalization over the last axis, epsilon 1e-3), computed by
calling each layer on arrays, which runs the C core.
"""

import numpy as np
import pytest

from cdnn import keras, layers

pytestmark = pytest.mark.usefixtures("session")

X = np.random.default_rng(0).normal(1.0, 2.0, size=(7, 3, 5)).astype(np.float32)

ALL = [
    (layers.BatchNormalization, {}),
    (layers.BatchNormalization, {"momentum": 0.9, "epsilon": 0.01, "center": False, "scale": False}),
    (layers.LayerNormalization, {"epsilon": 1e-5}),
    (layers.Activation, {"activation": "tanh"}),
    (layers.ReLU, {"negative_slope": 0.1}),
    (layers.LeakyReLU, {"negative_slope": 0.2}),
    (layers.Softmax, {}),
    (layers.Reshape, {"target_shape": (5, 3)}),
    (layers.Flatten, {}),
    (layers.Rescaling, {"scale": 1 / 255, "offset": -1.0}),
    (layers.Normalization, {"mean": [1.0] * 5, "variance": [4.0] * 5}),
    (layers.GaussianNoise, {"stddev": 0.1}),
    (layers.Dropout, {"rate": 0.3}),
    (layers.Identity, {}),
]


@pytest.mark.parametrize("cls, kwargs", ALL, ids=lambda v: getattr(v, "__name__", ""))
def test_config_round_trip_and_shape(cls, kwargs):
    layer = cls(**kwargs)
    config = layer.get_config()
    for key, value in kwargs.items():
        expected = list(value) if isinstance(value, tuple) else value
        assert config[key] == expected
    clone = cls.from_config(config)
    assert clone.get_config() == config
    assert layers.deserialize({"class_name": cls.__name__, "config": config}).get_config() == config
    out = layer(keras.Input((3, 5)))
    assert out.shape == (None, *layer.compute_output_shape((3, 5)))


def test_keras_defaults_and_weight_order_of_batchnormalization():
    bn = layers.BatchNormalization()
    assert (bn.momentum, bn.epsilon, bn.center, bn.scale) == (0.99, 1e-3, True, True)
    bn.build((6,))
    assert [w.tolist() for w in bn.weights] == [[1.0] * 6, [0.0] * 6, [0.0] * 6, [1.0] * 6]  # gamma beta mean var
    assert len(bn.trainable_weights) == 2 and len(bn.non_trainable_weights) == 2 and bn.count_params() == 24
    assert layers.LeakyReLU().negative_slope == 0.3  # Keras 3's default
    assert layers.LayerNormalization().epsilon == 1e-3


def test_values_of_the_elementwise_layers_computed_in_c():
    x = X.reshape(7, 15)
    np.testing.assert_allclose(layers.Rescaling(0.5, offset=2.0)(x), x * 0.5 + 2.0, rtol=1e-6)
    np.testing.assert_allclose(layers.ReLU()(x), np.maximum(x, 0))
    np.testing.assert_allclose(layers.LeakyReLU(0.2)(x), np.where(x > 0, x, 0.2 * x), rtol=1e-6)
    e = np.exp(x - x.max(1, keepdims=True))
    np.testing.assert_allclose(layers.Softmax()(x), e / e.sum(1, keepdims=True), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(layers.Activation("tanh")(x), np.tanh(x), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(layers.Dropout(0.5)(x), x)  # inference: the identity
    np.testing.assert_array_equal(layers.GaussianNoise(1.0)(x), x)
    np.testing.assert_array_equal(layers.Reshape((5, 3))(x), x.reshape(7, 5, 3))


def test_layer_normalization_over_the_last_axis():
    ln = layers.LayerNormalization()
    out = ln(X)
    mean, var = X.mean(-1, keepdims=True), X.var(-1, keepdims=True)
    np.testing.assert_allclose(out, (X - mean) / np.sqrt(var + 1e-3), rtol=1e-4, atol=1e-5)


def test_normalization_adapt_and_invert():
    data = np.random.default_rng(1).normal(3.0, 2.0, size=(200, 4)).astype(np.float32)
    norm = layers.Normalization()
    norm.adapt(data)
    np.testing.assert_allclose(norm.adapt_mean, data.mean(0), rtol=1e-5)
    np.testing.assert_allclose(norm.adapt_variance, data.var(0), rtol=1e-5)
    assert norm.count_params() == 9 and norm.trainable_weights == []  # mean, variance, count (Keras)
    out = norm(data)
    np.testing.assert_allclose(out, (data - data.mean(0)) / data.std(0), rtol=1e-4, atol=1e-5)
    inverse = layers.Normalization(mean=data.mean(0), variance=data.var(0), invert=True)
    np.testing.assert_allclose(inverse(out), data, rtol=1e-4, atol=1e-4)
    zero_var = layers.Normalization(mean=[0.0], variance=[0.0])
    np.testing.assert_allclose(zero_var(np.full((2, 3), 1e-7, np.float32)), 1.0, rtol=1e-5)  # max(std, 1e-7)


def test_merge_layers_and_functional_forms():
    a, b = X[:, 0], X[:, 1]
    pairs = [
        (layers.Add(), a + b),
        (layers.Subtract(), a - b),
        (layers.Multiply(), a * b),
        (layers.Average(), (a + b) / 2),
        (layers.Maximum(), np.maximum(a, b)),
        (layers.Minimum(), np.minimum(a, b)),
        (layers.Concatenate(), np.concatenate([a, b], -1)),
    ]
    for layer, expected in pairs:
        np.testing.assert_allclose(layer([a, b]), expected, rtol=1e-6, err_msg=type(layer).__name__)
    i, j = keras.Input((5,)), keras.Input((5,))
    for fn, cls in [
        (layers.add, "Add"),
        (layers.subtract, "Subtract"),
        (layers.multiply, "Multiply"),
        (layers.average, "Average"),
        (layers.maximum, "Maximum"),
        (layers.minimum, "Minimum"),
        (layers.concatenate, "Concatenate"),
    ]:
        out = fn([i, j])
        assert type(out._keras_history[0]).__name__ == cls


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: layers.BatchNormalization(axis=1), "axis"),
        (lambda: layers.BatchNormalization(synchronized=True), "synchronized"),
        (
            lambda: layers.BatchNormalization(beta_regularizer=keras.regularizers.OrthogonalRegularizer()),
            "beta_regularizer",
        ),
        (lambda: layers.LayerNormalization(rms_scaling=True), "rms_scaling"),
        (lambda: layers.ReLU(max_value=-6.0), "max_value"),
        (lambda: layers.ReLU(threshold=-1.0), "threshold"),
        (lambda: layers.Softmax(axis=1), "axis"),
        (lambda: layers.Concatenate(axis=1), "axis"),
        (lambda: layers.Normalization(axis=0), "axis"),
        (lambda: layers.Normalization(mean=[1.0]), "variance"),
        (lambda: layers.Dropout(0.5, noise_shape=(1, 5)), "noise_shape"),
        (lambda: layers.Reshape((0, 3)), "target_shape"),
        (lambda: layers.GaussianNoise(-1.0), "stddev"),
        (lambda: layers.Dense(3, dtype="float64"), "dtype"),
    ],
)
def test_unsupported_arguments_are_refused_with_a_message(make, message):
    with pytest.raises((ValueError, TypeError), match=message):
        make()


def test_reshape_checks_the_element_count():
    with pytest.raises(ValueError, match="total size"):
        layers.Reshape((4, 4))(keras.Input((3, 5)))
    assert layers.Reshape((-1, 3))(keras.Input((3, 5))).shape == (None, 5, 3)


def test_every_new_layer_survives_save_and_load(tmp_path):
    inputs = keras.Input((3, 5))
    x = layers.Rescaling(0.5)(inputs)
    x = layers.Normalization(mean=[0.0] * 5, variance=[1.0] * 5)(x)
    x = layers.Dense(4)(x)
    x = layers.BatchNormalization()(x)
    x = layers.LayerNormalization()(x)
    x = layers.Activation("relu")(x)
    x = layers.GaussianNoise(0.1)(x)
    x = layers.Reshape((4, 3))(x)
    x = layers.Flatten()(x)
    a = layers.LeakyReLU(0.1)(x)
    b = layers.ReLU()(x)
    x = layers.Concatenate()(
        [
            layers.Add()([a, b]),
            layers.Subtract()([a, b]),
            layers.Multiply()([a, b]),
            layers.Average()([a, b]),
            layers.Maximum()([a, b]),
            layers.Minimum()([a, b]),
        ]
    )
    x = layers.Dropout(0.2)(layers.Identity()(x))
    model = keras.Model(inputs, layers.Softmax()(layers.Dense(3)(x)))
    adapted = layers.Normalization()
    adapted.adapt(X.reshape(-1, 5))
    seq = keras.Sequential([keras.Input((3, 5)), adapted, layers.Flatten(), layers.Dense(2)])
    for m in (model, seq):
        path = tmp_path / f"{m.name}.npz"
        m.save(path)
        loaded = keras.load_model(path)
        assert [type(l).__name__ for l in loaded.layers] == [type(l).__name__ for l in m.layers]
        np.testing.assert_array_equal(loaded.predict(X, verbose=0), m.predict(X, verbose=0))
