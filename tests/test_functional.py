"""The functional API, subclassed models and Sequential as a graph: the issue's usage as executable examples.

Oracles: Keras 3's published rules and printed text (written out here), the
fused chain (``_core.Network``, itself checked against `tests/reference.py`)
for graphs that are chains, NumPy formulas for BatchNormalization, and Keras
itself (JAX backend) where it is installed.
"""

import os
import pickle

import numpy as np
import pytest

import cdnn
from cdnn import keras, layers
from cdnn._symbolic import KerasTensor, TracingError

pytestmark = pytest.mark.usefixtures("session")

SCCE = "sparse_categorical_crossentropy"


def data(n=60, features=(8,), classes=3, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, *features)).astype(np.float32)
    return x, rng.integers(0, classes, n)


def wide_and_deep(name="wide_and_deep"):
    wide = keras.Input(shape=(8,), name="wide")
    deep = keras.Input(shape=(784,), name="deep")
    x = layers.Dense(64, activation="relu")(deep)
    x = layers.BatchNormalization()(x)
    x = layers.Dense(32, activation="relu")(x)
    merged = layers.concatenate([wide, x])
    price = layers.Dense(1, name="price")(merged)
    kind = layers.Dense(3, activation="softmax", name="kind")(merged)
    return keras.Model(inputs=[wide, deep], outputs=[price, kind], name=name)


# Keras 3.15's own summary of wide_and_deep() in an 80-column terminal (line length 76)
WIDE_AND_DEEP_SUMMARY = """\
Model: "wide_and_deep"
┏━━━━━━━━━━━━━━━━━━━━━┳━━━━━━━━━━━━━━━━━━━┳━━━━━━━━━━━━┳━━━━━━━━━━━━━━━━━━━┓
┃ Layer (type)        ┃ Output Shape      ┃    Param # ┃ Connected to      ┃
┡━━━━━━━━━━━━━━━━━━━━━╇━━━━━━━━━━━━━━━━━━━╇━━━━━━━━━━━━╇━━━━━━━━━━━━━━━━━━━┩
│ deep (InputLayer)   │ (None, 784)       │          0 │ -                 │
├─────────────────────┼───────────────────┼────────────┼───────────────────┤
│ dense (Dense)       │ (None, 64)        │     50,240 │ deep[0][0]        │
├─────────────────────┼───────────────────┼────────────┼───────────────────┤
│ batch_normalization │ (None, 64)        │        256 │ dense[0][0]       │
│ (BatchNormalizatio… │                   │            │                   │
├─────────────────────┼───────────────────┼────────────┼───────────────────┤
│ wide (InputLayer)   │ (None, 8)         │          0 │ -                 │
├─────────────────────┼───────────────────┼────────────┼───────────────────┤
│ dense_1 (Dense)     │ (None, 32)        │      2,080 │ batch_normalizat… │
├─────────────────────┼───────────────────┼────────────┼───────────────────┤
│ concatenate         │ (None, 40)        │          0 │ wide[0][0],       │
│ (Concatenate)       │                   │            │ dense_1[0][0]     │
├─────────────────────┼───────────────────┼────────────┼───────────────────┤
│ price (Dense)       │ (None, 1)         │         41 │ concatenate[0][0] │
├─────────────────────┼───────────────────┼────────────┼───────────────────┤
│ kind (Dense)        │ (None, 3)         │        123 │ concatenate[0][0] │
└─────────────────────┴───────────────────┴────────────┴───────────────────┘
 Total params: 52,740 (206.02 KB)
 Trainable params: 52,612 (205.52 KB)
 Non-trainable params: 128 (512.00 B)"""

# Keras 3.15: a functional chain prints no Connected to column, but lists its InputLayer
MLP_SUMMARY = """\
Model: "mlp"
┏━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━┳━━━━━━━━━━━━━━━━━━━━━━━━┳━━━━━━━━━━━━━━━┓
┃ Layer (type)                    ┃ Output Shape           ┃       Param # ┃
┡━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━╇━━━━━━━━━━━━━━━━━━━━━━━━╇━━━━━━━━━━━━━━━┩
│ img (InputLayer)                │ (None, 784)            │             0 │
├─────────────────────────────────┼────────────────────────┼───────────────┤
│ dense (Dense)                   │ (None, 64)             │        50,240 │
├─────────────────────────────────┼────────────────────────┼───────────────┤
│ dense_1 (Dense)                 │ (None, 10)             │           650 │
└─────────────────────────────────┴────────────────────────┴───────────────┘
 Total params: 50,890 (198.79 KB)
 Trainable params: 50,890 (198.79 KB)
 Non-trainable params: 0 (0.00 B)"""


# ---- building -----------------------------------------------------------------------------------


def test_input_is_a_symbolic_tensor_and_layers_record_nodes():
    inputs = keras.Input(shape=(784,), name="img")
    assert isinstance(inputs, KerasTensor) and inputs.shape == (None, 784) and inputs.dtype == "float32"
    dense = layers.Dense(64, activation="relu")
    x = dense(inputs)
    assert x.shape == (None, 64)
    assert dense.input is inputs and dense.output is x
    assert keras.Input(shape=(3,), batch_size=16).shape == (16, 3)


def test_functional_model_lists_its_input_layers_and_finds_layers():
    inputs = keras.Input(shape=(784,), name="img")
    x = layers.Dense(64, activation="relu")(inputs)
    outputs = layers.Dense(10, activation="softmax")(x)
    model = keras.Model(inputs=inputs, outputs=outputs, name="mlp")
    assert [type(l).__name__ for l in model.layers] == ["InputLayer", "Dense", "Dense"]
    assert model.inputs == [inputs] and model.outputs == [outputs]
    assert model.get_layer("dense_1") is model.layers[2] is model.get_layer(index=2)
    assert model.input_shape == (None, 784) and model.output_shape == (None, 10)
    with pytest.raises(ValueError, match="No such layer: nope"):
        model.get_layer("nope")


def test_summary_of_a_graph_is_keras_text_with_connected_to():
    lines = []
    wide_and_deep().summary(print_fn=lines.append)
    assert lines[0] == WIDE_AND_DEEP_SUMMARY


def test_summary_of_a_functional_chain_has_no_connected_to_column():
    inputs = keras.Input(shape=(784,), name="img")
    x = layers.Dense(64, activation="relu")(inputs)
    model = keras.Model(inputs, layers.Dense(10, activation="softmax")(x), name="mlp")
    lines = []
    model.summary(print_fn=lines.append)
    assert lines[0] == MLP_SUMMARY


def test_clear_session_restarts_default_names():
    assert layers.Dense(2).name == "dense"
    assert layers.Dense(2).name == "dense_1"
    keras.backend.clear_session()
    assert layers.Dense(2).name == "dense"
    keras.utils.clear_session()
    assert layers.Dense(2).name == "dense"


# ---- bad graphs ---------------------------------------------------------------------------------


def test_graph_disconnected_names_the_missing_input():
    a, b = keras.Input((3,), name="a"), keras.Input((3,), name="b")
    out = layers.Dense(2, name="head")(layers.add([a, b]))
    with pytest.raises(ValueError, match="Graph disconnected.*'b'"):
        keras.Model(a, out)


def test_an_unused_input_is_refused():
    a, b = keras.Input((3,), name="a"), keras.Input((4,), name="unused")
    with pytest.raises(ValueError, match="'unused'.*not connected"):
        keras.Model([a, b], layers.Dense(2)(a))


def test_outputs_must_be_tensors_made_from_the_inputs():
    a = keras.Input((3,), name="a")
    with pytest.raises(TypeError, match="KerasTensors"):
        keras.Model(a, np.zeros(3))
    with pytest.raises(ValueError, match="`outputs` argument cannot be empty"):
        keras.Model(a, [])


def test_merge_shape_mismatch_names_the_layer_and_shapes():
    a, b = keras.Input((3,)), keras.Input((4,))
    with pytest.raises(ValueError, match=r"'add'.*\(None, 3\), \(None, 4\)"):
        layers.Add(name="add")([a, b])
    with pytest.raises(ValueError, match="exactly 2 inputs"):
        layers.subtract([a, a, a])
    c = keras.Input((2, 5))
    with pytest.raises(ValueError, match="Concatenate.*matching shapes"):
        layers.concatenate([c, keras.Input((3, 5))])
    assert layers.concatenate([c, keras.Input((2, 1))]).shape == (None, 2, 6)


def test_a_layer_reused_on_an_incompatible_shape():
    dense = layers.Dense(4, name="shared")
    dense(keras.Input((3,)))
    with pytest.raises(ValueError, match=r"'shared'.*value 3.*\(None, 5\)"):
        dense(keras.Input((5,)))


def test_duplicate_layer_names_are_refused():
    a = keras.Input((3,), name="x")
    h = layers.Dense(2, name="same")(a)
    with pytest.raises(ValueError, match='The name "same" is used 2 times'):
        keras.Model(a, layers.Dense(2, name="same")(h))


def test_a_sequential_cannot_contain_itself():
    model = keras.Sequential([layers.Dense(2)])
    with pytest.raises(ValueError, match="cycle"):
        model.add(model)


# ---- training graphs --------------------------------------------------------------------------------


def test_a_functional_chain_trains_exactly_like_the_fused_sequential_chain():
    x, y = data()
    seq = keras.Sequential(
        [keras.Input((8,)), layers.Dense(16, activation="relu"), layers.Dense(3, activation="softmax")]
    )
    inputs = keras.Input((8,))
    out = layers.Dense(3, activation="softmax")(layers.Dense(16, activation="relu")(inputs))
    fun = keras.Model(inputs, out)
    fun.set_weights(seq.get_weights())
    assert seq._fast_chain()
    for m in (seq, fun):
        m.compile(keras.optimizers.Adam(0.01), SCCE, metrics=["accuracy"])
    cdnn.utils.set_random_seed(7)
    h1 = seq.fit(x, y, batch_size=16, epochs=3, verbose=0)
    cdnn.utils.set_random_seed(7)
    h2 = fun.fit(x, y, batch_size=16, epochs=3, verbose=0)
    assert list(h2.history) == ["accuracy", "loss"]
    np.testing.assert_allclose(h1.history["loss"], h2.history["loss"], rtol=1e-5)
    for a, b in zip(seq.get_weights(), fun.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(fun.predict(x, verbose=0), seq.predict(x, verbose=0), rtol=1e-5, atol=1e-6)


def test_two_inputs_as_list_or_dict_and_two_outputs_with_keras_history_keys():
    rng = np.random.default_rng(1)
    xw, xd = rng.normal(size=(50, 8)), rng.normal(size=(50, 784))
    price, kind = rng.normal(size=(50, 1)), rng.integers(0, 3, 50)
    model = wide_and_deep()
    model.compile(
        "adam",
        loss={"price": "mse", "kind": SCCE},
        loss_weights={"price": 1.0, "kind": 0.5},
        metrics={"kind": ["accuracy"]},
    )
    history = model.fit(
        {"wide": xw, "deep": xd}, {"price": price, "kind": kind}, epochs=2, verbose=0, validation_split=0.2
    )
    # Keras 3 names them so (and sorts them)
    assert list(history.history) == [
        "kind_accuracy",
        "kind_loss",
        "loss",
        "price_loss",
        "val_kind_accuracy",
        "val_kind_loss",
        "val_loss",
        "val_price_loss",
    ]
    h = history.history
    np.testing.assert_allclose(
        h["val_loss"], np.array(h["val_price_loss"]) + 0.5 * np.array(h["val_kind_loss"]), rtol=1e-6
    )
    loss, price_loss, kind_loss, acc = model.evaluate([xw, xd], [price, kind], verbose=0)
    np.testing.assert_allclose(loss, price_loss + 0.5 * kind_loss, rtol=1e-6)
    p, k = model.predict([xw, xd], verbose=0)
    assert p.shape == (50, 1) and k.shape == (50, 3)
    assert acc == np.mean(k.argmax(1) == kind)
    np.testing.assert_allclose(price_loss, np.mean((p - price) ** 2), rtol=1e-5)
    as_dict = model.evaluate([xw, xd], [price, kind], verbose=0, return_dict=True)
    assert as_dict == {"kind_accuracy": acc, "kind_loss": kind_loss, "loss": loss, "price_loss": price_loss}


def test_dict_outputs_predict_a_dict():
    a = keras.Input((4,), name="a")
    h = layers.Dense(5, activation="relu")(a)
    model = keras.Model({"a": a}, {"left": layers.Dense(2)(h), "right": layers.Dense(1)(h)})
    out = model.predict({"a": np.ones((3, 4))}, verbose=0)
    assert sorted(out) == ["left", "right"] and out["left"].shape == (3, 2)


def test_an_output_without_a_loss_is_not_trained_on():
    x, y = data()
    a = keras.Input((8,))
    h = layers.Dense(6, activation="relu")(a)
    model = keras.Model(a, [layers.Dense(3, activation="softmax", name="cls")(h), layers.Dense(2, name="aux")(h)])
    model.compile("sgd", loss=[SCCE, None])
    aux = model.get_layer("aux").get_weights()
    model.fit(x, [y, None], epochs=1, verbose=0)
    assert all(np.array_equal(u, v) for u, v in zip(aux, model.get_layer("aux").get_weights()))


def test_a_model_is_a_layer_of_another_model():
    x, y = data()
    base = keras.Sequential([keras.Input((8,)), layers.Dense(3)], name="base")
    top = keras.Sequential([base, layers.Softmax()])
    inputs = keras.Input((8,))
    fun = keras.Model(inputs, layers.Softmax()(base(inputs)))
    logits = base.predict(x, verbose=0)
    e = np.exp(logits - logits.max(1, keepdims=True))
    np.testing.assert_allclose(top.predict(x, verbose=0), e / e.sum(1, keepdims=True), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(fun.predict(x, verbose=0), e / e.sum(1, keepdims=True), rtol=1e-5, atol=1e-7)
    lines = []
    top.summary(print_fn=lines.append)
    assert "│ base (Sequential)               │ (None, 3)              │            27 │" in lines[0]
    top.compile("adam", SCCE)
    top.fit(x, y, verbose=0)
    assert not np.allclose(base.predict(x, verbose=0), logits)  # the inner model's weights trained


def test_nested_models_save_and_load(tmp_path):
    x, _ = data(5)
    i = keras.Input((8,))
    base = keras.Model(i, layers.Dense(3)(layers.BatchNormalization()(i)), name="base")
    inner = keras.Sequential([keras.Input((8,)), layers.Dense(2)], name="inner")
    j = keras.Input((8,))
    for model in (
        keras.Sequential([keras.Input((8,)), base, layers.Softmax()]),
        keras.Model(j, layers.Dense(1)(inner(j))),
    ):
        model.save(tmp_path / "m.npz")
        loaded = keras.load_model(tmp_path / "m.npz")
        assert type(loaded) is type(model)
        np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))


def test_eager_calls_run_the_core():
    x, _ = data(5)
    model = wide_and_deep()
    p, k = model([x, np.zeros((5, 784))])
    np.testing.assert_allclose(k.sum(1), 1, rtol=1e-6)
    bn = layers.BatchNormalization()
    np.testing.assert_allclose(bn(x), x / np.sqrt(1 + 1e-3), rtol=1e-6)
    dense = layers.Dense(4)
    y = dense(x.reshape(5, 2, 4))
    np.testing.assert_allclose(y, x.reshape(5, 2, 4) @ dense.kernel, rtol=1e-5, atol=1e-6)
    # no layer depends on the mode: a training-mode call computes what predict does
    np.testing.assert_allclose(model([x, np.zeros((5, 784))], training=True)[1], k, rtol=1e-6)


# ---- subclassed models ----------------------------------------------------------------------------


class MLP(keras.Model):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.hidden = layers.Dense(16, activation="relu")
        self.dropout = layers.Dropout(0.5)
        self.out = layers.Dense(3, activation="softmax")

    def call(self, inputs, training=None):
        x = self.hidden(inputs)
        if training:
            x = self.dropout(x, training=training)
        return self.out(x)


def test_subclassed_model_is_traced_for_training_and_for_inference():
    x, y = data()
    model = MLP()
    model.compile("adam", SCCE, metrics=["accuracy"])
    history = model.fit(x, y, epochs=2, verbose=0)
    assert list(history.history) == ["accuracy", "loss"]
    assert [l.name for l in model.layers] == ["dense", "dropout", "dense_1"]
    assert [n["op"] for n in cdnn.models.functional.lower(model._graph_model())[0]] == [
        "input",
        "dense",
        "dropout",
        "dense",
    ]
    assert [n["op"] for n in cdnn.models.functional.lower(model._inference_model())[0]] == ["input", "dense", "dense"]
    # inference: no dropout, so the same as the two Dense layers by hand
    h = np.maximum(x @ model.hidden.kernel + model.hidden.bias, 0) @ model.out.kernel + model.out.bias
    e = np.exp(h - h.max(1, keepdims=True))
    np.testing.assert_allclose(model.predict(x, verbose=0), e / e.sum(1, keepdims=True), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(model(x), model.predict(x, verbose=0))
    assert model.count_params() == 8 * 16 + 16 + 16 * 3 + 3


def test_an_untraceable_call_fails_at_build_time_saying_what_and_where():
    class UsesNumPy(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = layers.Dense(2)

        def call(self, inputs):
            return self.dense(np.tanh(inputs))

    class Branches(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = layers.Dense(2)

        def call(self, inputs):
            if inputs > 0:
                return self.dense(inputs)
            return inputs

    with pytest.raises(TracingError, match=r"np\.tanh.*test_functional\.py:\d+ in call\(\)"):
        UsesNumPy().predict(np.zeros((2, 3)), verbose=0)
    with pytest.raises(TracingError, match=r"control flow.*test_functional\.py:\d+ in call\(\)"):
        Branches().build((None, 3))


# ---- freezing ------------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["constructor", "attribute", "model"])
def test_frozen_weights_are_bit_unchanged_by_fit(how):
    x, y = data()
    dense = layers.Dense(16, activation="relu", trainable=how != "constructor")
    bn = layers.BatchNormalization(trainable=how != "constructor")
    head = layers.Dense(3, activation="softmax")
    model = keras.Sequential([keras.Input((8,)), dense, bn, head])
    if how == "attribute":
        dense.trainable = bn.trainable = False
    if how == "model":
        model.trainable = False
        assert not dense.trainable and not head.trainable
    frozen = [w.copy() for w in dense.weights + bn.weights]  # a frozen BN keeps its moving statistics too
    head_before = head.get_weights()
    model.compile("adam", SCCE)
    model.fit(x, y, epochs=2, verbose=0)
    assert all(np.array_equal(a, b) for a, b in zip(frozen, dense.weights + bn.weights))
    head_changed = not all(np.array_equal(a, b) for a, b in zip(head_before, head.get_weights()))
    assert head_changed == (how != "model")
    assert (model.trainable_weights == []) == (how == "model")


def test_summary_counts_frozen_and_batchnorm_weights_as_non_trainable():
    model = keras.Sequential(
        [keras.Input((4,)), layers.Dense(8, trainable=False), layers.BatchNormalization(), layers.Dense(2)]
    )
    lines = []
    model.summary(print_fn=lines.append)
    text = lines[0]
    # Dense 4*8+8=40 frozen; BN: gamma/beta trainable (16), moving statistics not (16); head 18
    assert " Trainable params: 34 (136.00 B)" in text
    assert " Non-trainable params: 56 (224.00 B)" in text
    assert [w.shape for w in model.non_trainable_weights] == [(4, 8), (8,), (8,), (8,)]


# ---- Sequential as a graph -------------------------------------------------------------------------


def test_sequential_with_new_layers_trains_and_pops():
    x, y = data(features=(2, 4))
    model = keras.Sequential(
        [
            keras.Input((2, 4)),
            layers.Dense(6),
            layers.LayerNormalization(),
            layers.LeakyReLU(0.1),
            layers.Flatten(),
            layers.Dense(3, activation="softmax"),
        ]
    )
    assert not model._fast_chain()
    model.compile("adam", SCCE, metrics=["accuracy"])
    model.fit(x, y, epochs=2, verbose=0)
    assert model.predict(x, verbose=0).shape == (60, 3)
    last = model.pop()
    assert isinstance(last, layers.Dense) and model.output_shape == (None, 12)
    assert model.predict(x, verbose=0).shape == (60, 12)


def test_batchnorm_moving_statistics_follow_keras_formula():
    rng = np.random.default_rng(3)
    x = rng.normal(2.0, 3.0, size=(32, 5)).astype(np.float32)
    bn = layers.BatchNormalization(momentum=0.9)
    model = keras.Sequential([keras.Input((5,)), bn])
    model.compile(keras.optimizers.SGD(0.0), "mse")
    model.fit(x, np.zeros_like(x), batch_size=32, epochs=4, shuffle=False, verbose=0)
    mean, var = x.astype(np.float64).mean(0), x.astype(np.float64).var(0)
    # moving = moving * momentum + batch * (1 - momentum), four times from (0, 1)
    np.testing.assert_allclose(bn.moving_mean, (1 - 0.9**4) * mean, rtol=1e-5)
    np.testing.assert_allclose(bn.moving_variance, 0.9**4 + (1 - 0.9**4) * var, rtol=1e-5)
    expected = (x - bn.moving_mean) / np.sqrt(bn.moving_variance + 1e-3)
    np.testing.assert_allclose(model.predict(x, verbose=0), expected, rtol=1e-4, atol=1e-5)


# ---- saving -------------------------------------------------------------------------------------------


def test_functional_model_save_load_round_trip(tmp_path):
    rng = np.random.default_rng(2)
    xw, xd = rng.normal(size=(20, 8)), rng.normal(size=(20, 784))
    model = wide_and_deep()
    model.compile("adam", loss=["mse", SCCE], metrics=[None, ["accuracy"]], loss_weights=[1.0, 0.2])
    model.fit([xw, xd], [rng.normal(size=20), rng.integers(0, 3, 20)], verbose=0)
    path = tmp_path / "wd.npz"
    model.save(path)
    loaded = keras.load_model(path)
    assert type(loaded).__name__ == "Functional"
    assert [l.name for l in loaded.layers] == [l.name for l in model.layers]
    assert loaded.get_config() == model.get_config()
    for a, b in zip(model.predict([xw, xd], verbose=0), loaded.predict([xw, xd], verbose=0)):
        np.testing.assert_array_equal(a, b)
    assert loaded.optimizer.iterations == model.optimizer.iterations
    clone = pickle.loads(pickle.dumps(model))
    np.testing.assert_array_equal(clone.predict([xw, xd], verbose=0)[1], model.predict([xw, xd], verbose=0)[1])


# ---- Keras itself as the oracle -------------------------------------------------------------------------


def test_two_input_two_output_training_matches_keras():
    pytest.importorskip("jax")
    os.environ.setdefault("KERAS_BACKEND", "jax")
    real = pytest.importorskip("keras")
    if real.backend.backend() != "jax":
        pytest.skip("needs Keras on the JAX backend")

    def build(lib):
        a, b = lib.Input((5,), name="wide"), lib.Input((7,), name="deep")
        h = lib.layers.BatchNormalization(name="bn")(lib.layers.Dense(6, activation="relu", name="h")(b))
        c = lib.layers.Concatenate(name="cat")([a, h])
        return lib.Model(
            [a, b], [lib.layers.Dense(1, name="price")(c), lib.layers.Dense(3, activation="softmax", name="kind")(c)]
        )

    rng = np.random.default_rng(0)
    xa, xb = rng.normal(size=(40, 5)).astype("f4"), rng.normal(size=(40, 7)).astype("f4")
    y1, y2 = rng.normal(size=(40, 1)).astype("f4"), rng.integers(0, 3, 40)
    theirs, ours = build(real), build(keras)
    ours.set_weights(theirs.get_weights())
    theirs.compile(real.optimizers.SGD(0.1), loss=["mse", SCCE], loss_weights=[1.0, 0.5], metrics=[[], ["accuracy"]])
    ours.compile(keras.optimizers.SGD(0.1), loss=["mse", SCCE], loss_weights=[1.0, 0.5], metrics=[None, ["accuracy"]])
    h_theirs = theirs.fit([xa, xb], [y1, y2], batch_size=8, epochs=3, shuffle=False, verbose=0).history
    h_ours = ours.fit([xa, xb], [y1, y2], batch_size=8, epochs=3, shuffle=False, verbose=0).history
    assert list(h_ours) == sorted(h_theirs)
    for key in h_theirs:
        np.testing.assert_allclose(h_ours[key], h_theirs[key], rtol=1e-4)
    for a, b in zip(ours.get_weights(), theirs.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_a_subclassed_model_is_not_saved_to_a_file_but_its_weights_are(tmp_path):
    x, y = data()
    model = MLP()
    model.compile("adam", SCCE)
    model.fit(x, y, verbose=0)
    with pytest.raises(NotImplementedError, match="subclassed model 'mlp'.*save_weights"):
        model.save(tmp_path / "m.npz")
    model.save_weights(tmp_path / "w.npz")
    other = MLP()
    other.build((None, 8))
    other.load_weights(tmp_path / "w.npz")
    np.testing.assert_array_equal(other.predict(x, verbose=0), model.predict(x, verbose=0))


@pytest.mark.parametrize("freeze", ["first", "all"])
def test_a_frozen_dense_chain_stays_on_the_fused_path_and_matches_the_graph(freeze):
    x, y = data()
    seq = keras.Sequential(
        [keras.Input((8,)), layers.Dense(16, activation="relu"), layers.Dense(3, activation="softmax")]
    )
    inputs = keras.Input((8,))
    first, second = layers.Dense(16, activation="relu"), layers.Dense(3, activation="softmax")
    fun = keras.Model(inputs, second(first(inputs)))
    fun.set_weights(seq.get_weights())
    if freeze == "first":
        seq.layers[0].trainable = first.trainable = False
    else:
        seq.trainable = fun.trainable = False
    assert seq._fast_chain()
    before = seq.get_weights()
    for m in (seq, fun):
        m.compile(keras.optimizers.Adam(0.01), SCCE)
    cdnn.utils.set_random_seed(3)
    seq.fit(x, y, batch_size=16, epochs=2, verbose=0)
    cdnn.utils.set_random_seed(3)
    fun.fit(x, y, batch_size=16, epochs=2, verbose=0)
    after = seq.get_weights()
    assert np.array_equal(before[0], after[0]) and np.array_equal(before[1], after[1])
    assert np.array_equal(before[2], after[2]) == (freeze == "all")
    for a, b in zip(after, fun.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_keras_archive_of_a_subclassed_model_is_refused_a_graph_is_written(tmp_path):
    pytest.importorskip("h5py")
    model = MLP()
    model.build((None, 4))
    with pytest.raises(NotImplementedError, match=r"subclassed model 'mlp'"):
        model.save(tmp_path / "m.keras")
    graph = wide_and_deep()
    graph.save(tmp_path / "g.keras")  # tests/test_keras_graph_files.py checks these files against Keras
    keras.Sequential([keras.Input((3,)), layers.BatchNormalization(), layers.Dense(2)]).save(tmp_path / "s.keras")
    assert [l.name for l in keras.models.load_model(tmp_path / "g.keras").layers] == [l.name for l in graph.layers]


@pytest.mark.parametrize("bad", [{"__object__": {"class_name": "os.system"}}, {"nope": "mse"}, 5])
def test_a_damaged_graph_compile_record_is_a_model_file_error(tmp_path, bad):
    import json
    import zipfile

    model = wide_and_deep()
    model.compile("adam", loss=["mse", SCCE])
    path = tmp_path / "m.cdnn"
    model.save(path)
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(arrays["__cdnn__"].tobytes())
    meta["compile"]["args"]["loss"] = bad
    arrays["__cdnn__"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    np.savez(tmp_path / "bad.npz", **arrays)
    assert zipfile.is_zipfile(tmp_path / "bad.npz")
    with pytest.raises(cdnn.saving.ModelFileError, match="compile settings"):
        keras.load_model(tmp_path / "bad.npz")
