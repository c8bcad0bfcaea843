"""Tests for cdnn.models.Sequential: the Keras 3 model API over the C core.

Expectations come from outside the code under test: Keras 3's documented
defaults, formats and rules (written out here), hand computation, and the
NumPy oracle `tests/reference.py` trained from the same initial weights.
"""

import itertools
import math
import re

import numpy as np
import pytest
import reference as ref

import cdnn
from cdnn import keras

SCCE = "sparse_categorical_crossentropy"

# Keras 3's summary of the issue's model, produced by Keras' own rendering
# (the same text as tests/test_summary.py, here reached through model.summary()).
FASHION_SUMMARY = """\
Model: "패션 MNIST 모델"
┏━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━┳━━━━━━━━━━━━━━━━━━━━━━━━┳━━━━━━━━━━━━━━━┓
┃ Layer (type)                    ┃ Output Shape           ┃       Param # ┃
┡━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━╇━━━━━━━━━━━━━━━━━━━━━━━━╇━━━━━━━━━━━━━━━┩
│ hidden (Dense)                  │ (None, 100)            │        78,500 │
├─────────────────────────────────┼────────────────────────┼───────────────┤
│ output (Dense)                  │ (None, 10)             │         1,010 │
└─────────────────────────────────┴────────────────────────┴───────────────┘
 Total params: 79,510 (310.59 KB)
 Trainable params: 79,510 (310.59 KB)
 Non-trainable params: 0 (0.00 B)
"""

# Keras 3's non-terminal progress line: "1500/1500 ━━━━━━━━━━━━━━━━━━━━ 2s 1ms/step - accuracy: 0.8492 - loss: 0.4244"
STEP_TIME = r"\d+s \d+(?:us|ms|s)/step"
NUMBER = r"(?:\d+\.\d{4}|\d\.\d{4}e[+-]\d\d|nan)"


def progress_re(steps, names, verbose=1):
    metrics = "".join(rf" - {n}: ({NUMBER})" for n in names)
    if verbose == 2:
        return re.compile(rf"^{steps}/{steps} - \d+s - \d+(?:us|ms|s)/step{metrics}$")
    return re.compile(rf"^{steps}/{steps} ━{{20}} {STEP_TIME}{metrics}$")


@pytest.fixture(autouse=True)
def fresh_session(monkeypatch):
    """Default names restart at dense/sequential; a fixed seed; one thread unless a test says otherwise."""
    monkeypatch.setenv("COLUMNS", "80")
    cdnn.utils.clear_session()
    keras.utils.set_random_seed(1234)
    threads = cdnn.get_num_threads()
    yield
    cdnn.set_num_threads(threads)


def blobs(n=300, features=20, classes=5, seed=0, spread=1.0):
    """Gaussian blobs: a learnable classification problem, float32 inputs, int64 labels."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=3.0, size=(classes, features))
    y = rng.integers(0, classes, n)
    x = centres[y] + rng.normal(scale=spread, size=(n, features))
    return x.astype(np.float32), y


def fashion_like(n=640, seed=0):
    """Fake Fashion-MNIST: (n, 28, 28) uint8 images whose class is a linear function of the pixels."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    w = rng.normal(size=(784, 10))
    y = (x.reshape(n, -1) / 255.0 @ w).argmax(axis=1)
    return x, y


def small_model(
    optimizer="adam", loss=SCCE, metrics=("accuracy",), hidden=16, inputs=20, units=5, last="softmax", dropout=None
):
    layers = [keras.layers.Dense(hidden, activation="relu", input_shape=(inputs,))]
    if dropout:
        layers.append(keras.layers.Dropout(dropout))
    layers.append(keras.layers.Dense(units, activation=last))
    model = keras.Sequential(layers)
    model.compile(optimizer=optimizer, loss=loss, metrics=list(metrics) if metrics else None)
    return model


def oracle_forward(weights, activations, x):
    """Forward pass of the NumPy oracle in float64 from a model's get_weights()."""
    a = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    for i, act in enumerate(activations):
        _, a = ref.dense_forward(a, weights[2 * i].astype(np.float64), weights[2 * i + 1].astype(np.float64), act)
    return a


# --------------------------------------------------------------------------- the issue's snippet


def test_issue_snippet_prints_keras_summary_and_progress(capsys):
    x, y = fashion_like(640)
    train_scaled = x.reshape(-1, 28 * 28) / 255.0  # float64, as in the book
    train_target = y
    model = keras.Sequential(
        [
            keras.layers.Dense(units=100, input_shape=(28 * 28,), activation="sigmoid", name="hidden"),
            keras.layers.Dense(units=10, activation="softmax", name="output"),
        ],
        name="패션 MNIST 모델",
    )
    model.summary()
    assert capsys.readouterr().out == FASHION_SUMMARY

    model.compile(loss="sparse_categorical_crossentropy", optimizer="sgd", metrics="accuracy")
    history = model.fit(train_scaled[:512], train_target[:512], epochs=5)
    out = capsys.readouterr().out.splitlines()
    # "Epoch i/5" then one progress line per epoch; 512 samples in batches of 32 -> 16 steps
    assert out[0::2] == [f"Epoch {i}/5" for i in range(1, 6)]
    line = progress_re(16, ["accuracy", "loss"])
    for epoch, text in enumerate(out[1::2]):
        m = line.match(text)
        assert m, text
        assert m.group(1) == f"{history.history['accuracy'][epoch]:.4f}"
        assert m.group(2) == f"{history.history['loss'][epoch]:.4f}"
    assert len(out) == 10
    # plain SGD learns this problem: the loss goes down every epoch
    assert all(b < a for a, b in zip(history.history["loss"], history.history["loss"][1:]))

    result = model.evaluate(train_scaled[512:], train_target[512:])
    text = capsys.readouterr().out.splitlines()
    assert len(result) == 2 and all(type(v) is float for v in result)
    m = progress_re(4, ["accuracy", "loss"]).match(text[-1])
    assert m, text
    assert m.group(1) == f"{result[1]:.4f}" and m.group(2) == f"{result[0]:.4f}"


# --------------------------------------------------------------------------- building models


def test_sequential_add_input_and_input_shape_build_the_same_model():
    a = keras.Sequential()
    a.add(keras.layers.Dense(100, activation="sigmoid", input_shape=(784,)))
    a.add(keras.layers.Dense(10, activation="softmax"))
    b = keras.Sequential(
        [
            keras.layers.Input(shape=(784,)),
            keras.layers.Dense(100, activation="sigmoid"),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )
    c = keras.Sequential(
        [keras.layers.Dense(100, activation="sigmoid", input_dim=784), keras.layers.Dense(10, activation="softmax")]
    )
    for model in (a, b, c):
        assert model.built
        assert model.input_shape == (None, 784)
        assert model.output_shape == (None, 10)
        assert model.count_params() == 79510
        assert [w.shape for w in model.get_weights()] == [(784, 100), (100,), (100, 10), (10,)]
    assert [l.name for l in a.layers] == ["dense", "dense_1"]
    assert [l.name for l in b.layers] == ["dense_2", "dense_3"]


def test_default_names_follow_keras_and_clear_session_restarts_them():
    m1 = keras.Sequential([keras.layers.Dense(3)])
    m2 = keras.Sequential(
        [keras.layers.Flatten(), keras.layers.Dense(3), keras.layers.Dropout(0.1), keras.layers.Dense(2)]
    )
    assert (m1.name, m2.name) == ("sequential", "sequential_1")
    assert [l.name for l in m1.layers + m2.layers] == ["dense", "flatten", "dense_1", "dropout", "dense_2"]
    assert keras.layers.Input(shape=(3,)).name == "input_layer"
    cdnn.utils.clear_session()
    assert keras.Sequential().name == "sequential"
    assert keras.layers.Dense(1).name == "dense"


def test_unicode_names_and_summary_of_input_flatten_model():
    model = keras.Sequential(
        [
            keras.layers.Input(shape=(28, 28)),
            keras.layers.Flatten(name="펼치기"),
            keras.layers.Dense(100, activation="relu", name="은닉층"),
            keras.layers.Dropout(0.3),
            keras.layers.Dense(10, activation="softmax"),
        ],
        name="모델",
    )
    lines = []
    model.summary(print_fn=lines.append)
    text = lines[0]
    assert text.startswith('Model: "모델"')
    assert re.search(r"│ 펼치기 \(Flatten\) +│ \(None, 784\) +│ +0 │", text)
    assert re.search(r"│ 은닉층 \(Dense\) +│ \(None, 100\) +│ +78,500 │", text)
    assert re.search(r"│ dropout \(Dropout\) +│ \(None, 100\) +│ +0 │", text)
    assert " Total params: 79,510 (310.59 KB)" in text


def test_import_cdnn_as_tf_and_keras_submodules_are_the_same_objects():
    import cdnn as tf
    from cdnn.keras.layers import Dense
    from cdnn.keras.models import Sequential, load_model
    from cdnn.keras.optimizers import Adam

    assert tf.keras is cdnn and tf.keras.layers.Dense is cdnn.layers.Dense
    assert Dense is cdnn.layers.Dense and Sequential is cdnn.Sequential and load_model is cdnn.load_model
    assert Adam is cdnn.optimizers.Adam
    # a layer imported the Keras way can be added to a model
    model = Sequential([Dense(4, input_shape=(3,), activation="softmax")])
    assert model.layers[0].units == 4


def test_flatten_input_shape_trains_on_images_like_the_flat_model():
    x, y = fashion_like(96)
    keras.utils.set_random_seed(5)
    image = keras.Sequential([keras.layers.Flatten(input_shape=(28, 28)), keras.layers.Dense(10, activation="softmax")])
    keras.utils.set_random_seed(5)
    flat = keras.Sequential([keras.layers.Dense(10, activation="softmax", input_shape=(784,))])
    for m in (image, flat):
        m.compile(loss=SCCE, metrics=["accuracy"])
    np.testing.assert_array_equal(image.get_weights()[0], flat.get_weights()[0])
    keras.utils.set_random_seed(9)
    h1 = image.fit(x, y, epochs=2, verbose=0)
    keras.utils.set_random_seed(9)
    h2 = flat.fit(x.reshape(-1, 784), y, epochs=2, verbose=0)
    assert h1.history == h2.history
    for a, b in zip(image.get_weights(), flat.get_weights()):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(image.predict(x, verbose=0), flat.predict(x.reshape(-1, 784), verbose=0))


# --------------------------------------------------------------------------- defaults


def test_compile_without_optimizer_uses_rmsprop_with_keras_defaults():
    model = small_model(optimizer="rmsprop")
    model.compile(loss=SCCE, metrics=["accuracy"])
    opt = model.optimizer
    assert type(opt) is keras.optimizers.RMSprop
    assert (opt.learning_rate, opt.rho, opt.momentum, opt.epsilon) == (0.001, 0.9, 0.0, 1e-7)


def test_optimizer_default_hyperparameters_are_keras_3s():
    sgd, adagrad, rms, adam = (
        keras.optimizers.SGD(),
        keras.optimizers.Adagrad(),
        keras.optimizers.RMSprop(),
        keras.optimizers.Adam(),
    )
    assert (sgd.learning_rate, sgd.momentum, sgd.nesterov) == (0.01, 0.0, False)
    assert (adagrad.learning_rate, adagrad.initial_accumulator_value, adagrad.epsilon) == (0.001, 0.1, 1e-7)
    assert (rms.learning_rate, rms.rho, rms.momentum, rms.epsilon) == (0.001, 0.9, 0.0, 1e-7)
    assert (adam.learning_rate, adam.beta_1, adam.beta_2, adam.epsilon) == (0.001, 0.9, 0.999, 1e-7)
    assert keras.optimizers.SGD(learning_rate=0.1).learning_rate == 0.1


@pytest.mark.parametrize(
    "name, cls",
    [
        ("sgd", "SGD"),
        ("SGD", "SGD"),
        ("adam", "Adam"),
        ("Adam", "Adam"),
        ("rmsprop", "RMSprop"),
        ("adagrad", "Adagrad"),
    ],
)
def test_optimizer_names_give_default_objects(name, cls):
    model = small_model(optimizer=name)
    assert type(model.optimizer).__name__ == cls
    assert model.optimizer.learning_rate == (0.01 if cls == "SGD" else 0.001)


def test_optimizer_objects_are_used_as_given():
    opt = keras.optimizers.SGD(learning_rate=0.1)
    model = small_model(optimizer=opt)
    assert model.optimizer is opt
    x, y = blobs(64)
    model.fit(x, y, batch_size=32, epochs=1, verbose=0)
    assert opt.iterations == 2


def test_glorot_uniform_kernels_and_zero_biases():
    model = keras.Sequential(
        [
            keras.layers.Dense(100, activation="sigmoid", input_shape=(784,)),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )
    for (fan_in, fan_out), (kernel, bias) in zip([(784, 100), (100, 10)], zip(*[iter(model.get_weights())] * 2)):
        limit = math.sqrt(6 / (fan_in + fan_out))
        assert kernel.dtype == np.float32 and bias.dtype == np.float32
        assert np.abs(kernel).max() <= limit
        # a uniform draw on [-limit, limit]: reaches near both ends, mean 0, variance limit**2 / 3
        assert kernel.max() > 0.97 * limit and kernel.min() < -0.97 * limit
        assert abs(kernel.mean()) < 0.05 * limit
        assert kernel.var() == pytest.approx(limit**2 / 3, rel=0.1)
        np.testing.assert_array_equal(bias, np.zeros(fan_out, np.float32))


# --------------------------------------------------------------------------- fit


def test_fit_returns_history_of_float_lists():
    x, y = blobs(200)
    model = small_model()
    history = model.fit(x, y, epochs=3, validation_split=0.2, verbose=0)
    assert isinstance(history, keras.callbacks.History)
    assert list(history.history) == ["accuracy", "loss", "val_accuracy", "val_loss"]
    for values in history.history.values():
        assert len(values) == 3 and all(type(v) is float for v in values)
    assert history.epoch == [0, 1, 2]
    assert model.history is history
    # accuracy counts whole samples: 160 training and 40 validation samples
    assert all(round(a * 160) == pytest.approx(a * 160) for a in history.history["accuracy"])
    assert all(round(a * 40) == pytest.approx(a * 40) for a in history.history["val_accuracy"])


def test_validation_split_takes_the_last_fraction_before_shuffling():
    # With learning rate 0 nothing changes, so each logged loss is the loss of the initial model on
    # exactly the samples of that part: training on the first 75 %, validation on the last 25 %.
    x, y = blobs(100)
    y[75:] = 0  # make the last quarter different from the rest
    model = small_model(optimizer=keras.optimizers.SGD(learning_rate=0.0))
    first = model.evaluate(x[:75], y[:75], verbose=0)
    last = model.evaluate(x[75:], y[75:], verbose=0)
    everything = model.evaluate(x, y, verbose=0)
    history = model.fit(x, y, validation_split=0.25, shuffle=True, verbose=0)
    assert history.history["val_loss"][0] == pytest.approx(last[0], rel=1e-6)
    assert history.history["val_accuracy"][0] == pytest.approx(last[1])
    assert history.history["loss"][0] == pytest.approx(first[0], rel=1e-5)
    assert history.history["accuracy"][0] == pytest.approx(first[1])
    assert abs(last[0] - everything[0]) > 1e-2  # the crafted data makes the choice matter


def test_validation_split_rounds_the_training_part_down_as_keras():
    # Keras: split_at = floor(n * (1 - validation_split)); 10 samples at 0.25 -> 7 train, 3 validation
    x, y = blobs(10)
    model = small_model(optimizer=keras.optimizers.SGD(learning_rate=0.0))
    expected = model.evaluate(x[7:], y[7:], verbose=0)
    history = model.fit(x, y, validation_split=0.25, verbose=0)
    assert history.history["val_loss"][0] == pytest.approx(expected[0], rel=1e-6)
    assert model.optimizer.iterations == 1
    # floor(10 * 0.05) = 0 training samples: refused, as Keras does
    with pytest.raises(ValueError, match="validation_split"):
        model.fit(x, y, validation_split=0.95, verbose=0)


def test_validation_data_is_evaluated_with_the_end_of_epoch_weights():
    x, y = blobs(200)
    xv, yv = blobs(50, seed=1)
    model = small_model()
    history = model.fit(x, y, epochs=2, validation_data=(xv, yv), verbose=0)
    loss, acc = model.evaluate(xv, yv, verbose=0)
    assert history.history["val_loss"][-1] == pytest.approx(loss, rel=1e-12)
    assert history.history["val_accuracy"][-1] == acc
    # validation_data wins over validation_split, as in Keras: all 200 samples are trained on
    model2 = small_model()
    model2.fit(x, y, batch_size=50, validation_split=0.5, validation_data=(xv, yv), verbose=0)
    assert model2.optimizer.iterations == 4


def test_initial_epoch_runs_the_remaining_epochs(capsys):
    x, y = blobs(64)
    model = small_model()
    history = model.fit(x, y, batch_size=32, epochs=5, initial_epoch=3)
    out = capsys.readouterr().out.splitlines()
    assert history.epoch == [3, 4]
    assert len(history.history["loss"]) == 2
    assert [l for l in out if l.startswith("Epoch")] == ["Epoch 4/5", "Epoch 5/5"]
    assert model.optimizer.iterations == 4


def test_last_batch_may_be_smaller_and_steps_count_batches():
    x, y = blobs(100)
    model = small_model()
    seen = []

    class Steps(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            seen.append(self.params["steps"])

    model.fit(x, y, batch_size=32, verbose=0, callbacks=[Steps()])
    assert seen == [4]  # 32 + 32 + 32 + 4
    assert model.optimizer.iterations == 4


# --------------------------------------------------------------------------- verbose


def test_verbose_0_prints_nothing(capsys):
    x, y = blobs(64)
    model = small_model()
    model.fit(x, y, epochs=2, verbose=0, validation_split=0.25)
    model.evaluate(x, y, verbose=0)
    model.predict(x, verbose=0)
    assert capsys.readouterr().out == ""


def test_verbose_1_and_auto_print_one_keras_line_per_epoch(capsys):
    x, y = blobs(100)
    for verbose in (1, "auto"):
        model = small_model()
        history = model.fit(x, y, epochs=2, validation_split=0.2, verbose=verbose)
        out = capsys.readouterr().out.splitlines()
        assert out[0] == "Epoch 1/2" and out[2] == "Epoch 2/2" and len(out) == 4
        # 80 training samples -> 3 steps; Keras' order: accuracy, loss, val_accuracy, val_loss
        line = progress_re(3, ["accuracy", "loss", "val_accuracy", "val_loss"])
        for epoch, text in ((0, out[1]), (1, out[3])):
            m = line.match(text)
            assert m, text
            # Keras' format: 4 decimals, or 4 significant digits at or below 1e-3 (0 is 0.0000e+00)
            assert m.groups() == tuple(
                f"{v:.4f}" if abs(v) > 1e-3 else f"{v:.4e}"
                for v in (history.history[k][epoch] for k in ("accuracy", "loss", "val_accuracy", "val_loss"))
            )


def test_verbose_2_prints_the_plain_keras_line(capsys):
    x, y = blobs(100)
    model = small_model()
    history = model.fit(x, y, batch_size=25, epochs=2, verbose=2)
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "Epoch 1/2" and out[2] == "Epoch 2/2" and len(out) == 4
    m = progress_re(4, ["accuracy", "loss"], verbose=2).match(out[3])
    assert m, out[3]
    assert m.groups() == (f"{history.history['accuracy'][1]:.4f}", f"{history.history['loss'][1]:.4f}")


def test_verbose_1_on_a_terminal_redraws_the_bar_in_place(monkeypatch):
    import io
    import sys

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    screen = Terminal()
    monkeypatch.setattr(sys, "stdout", screen)
    x, y = blobs(100)
    history = small_model().fit(x, y, batch_size=1, epochs=2)
    monkeypatch.undo()
    lines = screen.getvalue().split("\n")
    assert lines[0] == "Epoch 1/2" and lines[2] == "Epoch 2/2" and lines[4] == ""
    for epoch, text in ((0, lines[1]), (1, lines[3])):
        assert "\x1b[1m100/100\x1b[0m \x1b[32m━━━━━━━━━━━━━━━━━━━━\x1b[0m" in text  # bold count, green bar
        shown = re.sub(r"\x1b\[\d+m", "", text.split("\r")[-1]).rstrip(" ")  # what the terminal shows last
        m = progress_re(100, ["accuracy", "loss"]).match(shown)
        assert m, repr(shown)
        assert m.groups() == (f"{history.history['accuracy'][epoch]:.4f}", f"{history.history['loss'][epoch]:.4f}")


def test_one_epoch_has_no_epoch_header_and_predict_prints_a_bar(capsys):
    x, y = blobs(40)
    model = small_model()
    model.fit(x, y, epochs=1)
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 1 and progress_re(2, ["accuracy", "loss"]).match(out[0]), out
    model.predict(x)
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 1 and re.match(rf"^2/2 ━{{20}} {STEP_TIME}$", out[0]), out


# --------------------------------------------------------------------------- data types


@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.int64, np.float16, np.float64])
def test_inputs_of_any_real_dtype_train_like_float32(dtype):
    rng = np.random.default_rng(3)
    x = rng.integers(0, 50, size=(64, 20)).astype(np.float32)  # exact in every dtype tested
    y = rng.integers(0, 5, 64)
    results = []
    for data in (x, x.astype(dtype)):
        keras.utils.set_random_seed(7)
        model = small_model()
        history = model.fit(data, y, epochs=2, verbose=0)
        results.append((history.history, model.get_weights(), model.predict(data, verbose=0)))
    assert results[0][0] == results[1][0]
    for a, b in zip(results[0][1] + [results[0][2]], results[1][1] + [results[1][2]]):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    "dtype", [np.int8, np.uint8, np.int16, np.uint16, np.int32, np.uint32, np.uint64, np.float32, np.float64]
)
def test_labels_of_any_integer_width_or_integral_floats(dtype):
    x, y = blobs(64)
    runs = []
    for labels in (y, y.astype(dtype), y.astype(dtype).reshape(-1, 1)):
        keras.utils.set_random_seed(7)
        model = small_model()
        runs.append((model.fit(x, labels, epochs=1, verbose=0).history, model.evaluate(x, labels, verbose=0)))
    assert runs[0] == runs[1] == runs[2]


def test_lists_are_accepted_as_arrays():
    x, y = blobs(32)
    keras.utils.set_random_seed(7)
    model = small_model()
    h1 = model.fit(x.tolist(), y.tolist(), epochs=1, verbose=0).history
    keras.utils.set_random_seed(7)
    model = small_model()
    h2 = model.fit(x, y, epochs=1, verbose=0).history
    assert h1 == h2


# --------------------------------------------------------------------------- evaluate and predict


def test_evaluate_returns_loss_and_accuracy_of_the_predictions():
    x, y = blobs(150)
    model = small_model()
    model.fit(x, y, epochs=2, verbose=0)
    loss, acc = model.evaluate(x, y, verbose=0)
    probs = model.predict(x, verbose=0)
    assert acc == np.mean(probs.argmax(axis=1) == y)
    assert loss == pytest.approx(ref.loss(SCCE, y, probs.astype(np.float64)), rel=1e-5)
    assert model.evaluate(x, y, verbose=0, return_dict=True) == {"accuracy": acc, "loss": loss}


def test_evaluate_without_metrics_returns_the_loss_as_a_float():
    x, y = blobs(50)
    model = small_model(metrics=None)
    result = model.evaluate(x, y, verbose=0)
    assert type(result) is float
    assert result == pytest.approx(ref.loss(SCCE, y, model.predict(x, verbose=0).astype(np.float64)), rel=1e-5)
    assert list(model.fit(x, y, verbose=0).history) == ["loss"]


def test_predict_returns_float32_probabilities_equal_to_the_oracle():
    x, y = blobs(700)  # more than one C inference batch of 512 rows
    model = small_model()
    model.fit(x, y, epochs=1, verbose=0)
    probs = model.predict(x, verbose=0)
    assert probs.dtype == np.float32 and probs.shape == (700, 5)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(probs, oracle_forward(model.get_weights(), ["relu", "softmax"], x), atol=1e-6)
    np.testing.assert_array_equal(model.predict(x, batch_size=7, verbose=0), probs)
    np.testing.assert_array_equal(model(x), probs)


def test_predict_on_a_never_fitted_model_with_an_input_shape():
    model = keras.Sequential(
        [keras.layers.Dense(8, activation="tanh", input_shape=(4,)), keras.layers.Dense(3, activation="softmax")]
    )
    x = np.random.default_rng(0).normal(size=(10, 4))
    probs = model.predict(x, verbose=0)
    np.testing.assert_allclose(probs, oracle_forward(model.get_weights(), ["tanh", "softmax"], x), atol=1e-6)


def test_predict_without_an_input_shape_builds_the_model_from_the_data():
    model = keras.Sequential([keras.layers.Dense(8, activation="relu"), keras.layers.Dense(3, activation="softmax")])
    assert not model.built and model.get_weights() == []
    x = np.random.default_rng(0).normal(size=(10, 6))
    probs = model.predict(x, verbose=0)
    assert model.built and model.input_shape == (None, 6)
    assert [w.shape for w in model.get_weights()] == [(6, 8), (8,), (8, 3), (3,)]
    np.testing.assert_allclose(probs, oracle_forward(model.get_weights(), ["relu", "softmax"], x), atol=1e-6)
    # fit and summary work on the model built this way
    model.compile(loss=SCCE, optimizer="adam", metrics=["accuracy"])
    model.fit(x, np.arange(10) % 3, verbose=0)
    lines = []
    model.summary(print_fn=lines.append)
    assert "(None, 8)" in lines[0] and " Trainable params: 83 (332.00 B)" in lines[0]
    # and, trained, Adam's 2 x 83 slots, its iteration count and its learning rate, as Keras 3
    assert " Total params: 251 (1008.00 B)" in lines[0] and " Optimizer params: 168 (676.00 B)" in lines[0]


def test_fit_without_an_input_shape_builds_on_images_with_flatten():
    x, y = fashion_like(64)
    model = keras.Sequential([keras.layers.Flatten(), keras.layers.Dense(10, activation="softmax")])
    model.compile(loss=SCCE, metrics=["accuracy"])
    model.fit(x, y, verbose=0)
    assert model.input_shape == (None, 28, 28)
    assert model.get_weights()[0].shape == (784, 10)


def test_predict_works_whatever_the_compiled_loss():
    # predict needs no loss: a model compiled for training with another loss still predicts
    model = small_model(loss="binary_crossentropy", last="softmax", metrics=None)
    x, _ = blobs(10)
    np.testing.assert_allclose(
        model.predict(x, verbose=0), oracle_forward(model.get_weights(), ["relu", "softmax"], x), atol=1e-6
    )


# --------------------------------------------------------------------------- the oracle


OPTIMIZERS = {
    "sgd": (lambda: keras.optimizers.SGD(0.1), lambda: ref.SGD(0.1)),
    "sgd_momentum": (lambda: keras.optimizers.SGD(0.05, momentum=0.9), lambda: ref.SGD(0.05, momentum=0.9)),
    "sgd_nesterov": (
        lambda: keras.optimizers.SGD(0.05, momentum=0.9, nesterov=True),
        lambda: ref.SGD(0.05, momentum=0.9, nesterov=True),
    ),
    "adagrad": (lambda: keras.optimizers.Adagrad(0.05), lambda: ref.Adagrad(0.05)),
    "rmsprop": (lambda: keras.optimizers.RMSprop(), lambda: ref.RMSprop()),
    "rmsprop_momentum": (lambda: keras.optimizers.RMSprop(momentum=0.5), lambda: ref.RMSprop(momentum=0.5)),
    "adam": (lambda: keras.optimizers.Adam(0.01), lambda: ref.Adam(0.01)),
    "adam_default": (lambda: keras.optimizers.Adam(), lambda: ref.Adam()),
}


def train_both(model, ref_optimizer, x, y, loss_name, activations, epochs=2, batch_size=16):
    """Train the model (shuffle=False) and the oracle from the same initial weights; return both results."""
    mlp = ref.MLP([(w.shape[0], a) for w, a in zip(model.get_weights()[1::2], activations)], x.shape[1])
    mlp.params = [w.astype(np.float64) for w in model.get_weights()]
    history = model.fit(x, y, batch_size=batch_size, epochs=epochs, shuffle=False, verbose=0)
    oracle = [mlp.fit_epoch(x, y, batch_size, ref_optimizer, loss_name) for _ in range(epochs)]
    return history.history, mlp, oracle


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_training_matches_the_numpy_oracle(name):
    make, make_ref = OPTIMIZERS[name]
    x, y = blobs(100, spread=2.0)
    model = small_model(optimizer=make())
    initial = model.get_weights()
    history, mlp, oracle = train_both(model, make_ref(), x, y, SCCE, ["relu", "softmax"])
    for w, r in zip(model.get_weights(), mlp.params):
        np.testing.assert_allclose(w, r, rtol=0, atol=1e-5)
    assert history["loss"] == pytest.approx([l for l, _ in oracle], rel=1e-5)
    assert history["accuracy"] == pytest.approx([a for _, a in oracle], abs=1e-12)
    assert model.optimizer.iterations == mlp_steps(100, 16, 2)
    # and training moved the weights well beyond the tolerance (the comparison is not between untouched copies)
    assert all(np.abs(w - w0).max() > 1e-3 for w, w0 in zip(model.get_weights(), initial))


def mlp_steps(n, batch_size, epochs):
    return epochs * -(-n // batch_size)


@pytest.mark.parametrize(
    "loss_name, units, last",
    [
        ("categorical_crossentropy", 5, "softmax"),
        ("binary_crossentropy", 1, "sigmoid"),
        ("mse", 3, "linear"),
        ("mean_squared_error", 1, "sigmoid"),
    ],
)
def test_other_losses_match_the_numpy_oracle(loss_name, units, last):
    x, labels = blobs(100, spread=2.0)
    if loss_name == "categorical_crossentropy":
        y = keras.utils.to_categorical(labels, 5)
    elif units == 1:
        y = (labels % 2).astype(np.float32).reshape(-1, 1)
    else:
        y = np.random.default_rng(0).normal(size=(100, units)).astype(np.float32)
    model = small_model(optimizer=keras.optimizers.Adam(0.01), loss=loss_name, units=units, last=last)
    history, mlp, oracle = train_both(model, ref.Adam(0.01), x, y, loss_name, ["relu", last])
    for w, r in zip(model.get_weights(), mlp.params):
        np.testing.assert_allclose(w, r, rtol=0, atol=1e-5)
    assert history["loss"] == pytest.approx([l for l, _ in oracle], rel=1e-5)
    assert history["accuracy"] == pytest.approx([a for _, a in oracle], abs=1e-12)


@pytest.mark.parametrize("case", ["multi_label_bce", "soft_labels_cce", "unnormalised_cce", "mse_softmax", "mse_gelu"])
def test_less_common_loss_and_output_pairs_match_the_numpy_oracle(case):
    # multi-label binary cross-entropy: Keras' "accuracy" is then categorical (the oracle follows Keras)
    rng = np.random.default_rng(5)
    x, labels = blobs(100, spread=2.0)
    loss_name, last, y = {
        "multi_label_bce": ("binary_crossentropy", "sigmoid", (rng.random((100, 4)) > 0.5).astype(np.float32)),
        "soft_labels_cce": ("categorical_crossentropy", "softmax", rng.dirichlet(np.ones(4), 100)),
        "unnormalised_cce": ("categorical_crossentropy", "softmax", rng.random((100, 4)) * 2),
        "mse_softmax": ("mse", "softmax", keras.utils.to_categorical(labels % 4, 4)),
        "mse_gelu": ("mse", "gelu", rng.normal(size=(100, 4))),
    }[case]
    model = small_model(optimizer=keras.optimizers.Adam(0.01), loss=loss_name, units=4, last=last)
    history, mlp, oracle = train_both(model, ref.Adam(0.01), x, y, loss_name, ["relu", last])
    for w, r in zip(model.get_weights(), mlp.params):
        np.testing.assert_allclose(w, r, rtol=0, atol=1e-5)
    assert history["loss"] == pytest.approx([l for l, _ in oracle], rel=1e-5)
    if case != "mse_gelu":  # there float32 outputs tie (gelu's tiny negatives) where float64 ones don't
        assert history["accuracy"] == pytest.approx([a for _, a in oracle], abs=1e-12)


@pytest.mark.parametrize("activation", ["sigmoid", "relu", "tanh", "linear", "leaky_relu", "gelu", "softmax"])
def test_every_hidden_activation_trains_like_the_numpy_oracle(activation):
    x, y = blobs(100, features=12, classes=4, spread=2.0)
    model = keras.Sequential(
        [
            keras.layers.Dense(16, activation=activation, input_shape=(12,)),
            keras.layers.Dense(8, activation=activation),
            keras.layers.Dense(4, activation="softmax"),
        ]
    )
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss=SCCE, metrics=["accuracy"])
    history, mlp, oracle = train_both(model, ref.Adam(0.01), x, y, SCCE, [activation, activation, "softmax"])
    for w, r in zip(model.get_weights(), mlp.params):
        np.testing.assert_allclose(w, r, rtol=0, atol=1e-5)
    assert history["loss"] == pytest.approx([l for l, _ in oracle], rel=1e-5)


# --------------------------------------------------------------------------- determinism


def seeded_run(seed, threads=1, dropout=0.3, shuffle=True, epochs=2):
    """A model big enough for the core to use several threads (> 400k flops per step)."""
    cdnn.set_num_threads(threads)
    if cdnn.build_info()["openmp"]:
        assert cdnn.get_num_threads() == threads
    keras.utils.set_random_seed(seed)
    x, y = blobs(256, features=64, classes=10, seed=2)
    model = small_model(optimizer="adam", hidden=128, inputs=64, units=10, dropout=dropout)
    # 192 training samples in batches of 30: six of 30 and one of 12, split unevenly between threads
    history = model.fit(x, y, batch_size=30, epochs=epochs, shuffle=shuffle, validation_split=0.25, verbose=0)
    return history.history, model.get_weights(), model.predict(x, verbose=0)


def assert_same_run(a, b):
    assert a[0] == b[0]
    for u, v in zip(a[1] + [a[2]], b[1] + [b[2]]):
        np.testing.assert_array_equal(u, v)


def assert_different_runs(a, b):
    assert not all(np.array_equal(u, v) for u, v in zip(a[1], b[1]))


def test_same_seed_gives_bit_identical_training_with_dropout():
    assert_same_run(seeded_run(11), seeded_run(11))
    assert_different_runs(seeded_run(11), seeded_run(12))


def test_one_and_two_threads_train_bit_identically():
    one = seeded_run(21, threads=1)
    two = seeded_run(21, threads=2)
    assert_same_run(one, two)
    assert_same_run(seeded_run(21, threads=1, dropout=None), seeded_run(21, threads=2, dropout=None))


def test_shuffle_and_dropout_change_training():
    base = seeded_run(31, dropout=None, shuffle=False)
    assert_different_runs(base, seeded_run(31, dropout=None, shuffle=True))
    assert_different_runs(base, seeded_run(31, dropout=0.3, shuffle=False))


@pytest.mark.parametrize("where", ["input", "hidden"])
def test_dropout_zeroes_a_fraction_rate_and_scales_the_rest(where):
    # Every unit is 1 and every weight 1, so a sample's output is (kept units) / (1 - rate), and with
    # MSE against 0 and learning rate 0 its loss is that squared: batches of one sample reveal each mask.
    rate, width, n = 0.5, 1000, 120
    if where == "input":
        layers = [keras.layers.Input(shape=(width,)), keras.layers.Dropout(rate)]
        x = np.ones((n, width), np.float32)
    else:
        layers = [keras.layers.Input(shape=(1,)), keras.layers.Dense(width, use_bias=False), keras.layers.Dropout(rate)]
        x = np.ones((n, 1), np.float32)
    model = keras.Sequential(layers + [keras.layers.Dense(1, use_bias=False)])
    model.set_weights([np.ones_like(w) for w in model.get_weights()])
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.0), loss="mse")
    means = []

    class Means(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            means.append(logs["loss"])

    model.fit(x, np.zeros((n, 1)), batch_size=1, epochs=2, callbacks=[Means()], verbose=0)
    means = np.array(means).reshape(2, n)
    counts = np.arange(1, n + 1)
    losses = np.diff(np.concatenate([[[0.0]] * 2, means * counts], axis=1), axis=1)  # each sample's loss
    kept = np.sqrt(losses) * (1 - rate)
    np.testing.assert_allclose(kept, np.round(kept), atol=1e-3)  # whole units kept, scaled by 1/(1-rate)
    # kept ~ Binomial(1000, 0.5): mean 500, standard deviation 15.8
    assert abs(kept.mean() - width * (1 - rate)) < 5
    assert 10 < kept.std() < 22
    assert len(np.unique(kept)) > 20  # a new mask for each sample...
    assert not np.array_equal(kept[0], kept[1])  # ...and each epoch
    np.testing.assert_array_equal(model.predict(x[:3], verbose=0), [[width]] * 3)  # none at inference


def test_dropout_is_off_at_inference():
    x, y = blobs(100)
    model = small_model(dropout=0.5)
    model.fit(x, y, epochs=1, verbose=0)
    probs = model.predict(x, verbose=0)
    np.testing.assert_allclose(probs, oracle_forward(model.get_weights(), ["relu", "softmax"], x), atol=1e-6)
    np.testing.assert_array_equal(model.predict(x, verbose=0), probs)


# --------------------------------------------------------------------------- real data (slow)


@pytest.fixture(scope="module")
def fashion():
    (x_train, y_train), _ = keras.datasets.fashion_mnist.load_data()
    from sklearn.model_selection import train_test_split

    train_scaled = (x_train / 255.0).reshape(-1, 28 * 28)
    return train_test_split(train_scaled, y_train, test_size=0.2, random_state=42)


@pytest.mark.slow
def test_fashion_mnist_accuracy_parity_with_keras(fashion):
    # Keras 3 reaches about 0.87 validation accuracy with this model after 5 epochs of RMSprop
    train_scaled, val_scaled, train_target, val_target = fashion
    model = keras.Sequential(
        [
            keras.layers.Dense(100, activation="sigmoid", input_shape=(784,), name="hidden"),
            keras.layers.Dense(10, activation="softmax", name="output"),
        ],
        name="패션 MNIST 모델",
    )
    model.compile(loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    history = model.fit(train_scaled, train_target, epochs=5, verbose=0, validation_data=(val_scaled, val_target))
    loss, acc = model.evaluate(val_scaled, val_target, verbose=0)
    assert acc >= 0.865
    assert acc == history.history["val_accuracy"][-1]
    assert history.history["accuracy"][-1] > 0.86 and loss < 0.40


@pytest.mark.slow
def test_fashion_mnist_epoch_matches_the_numpy_oracle(fashion):
    train_scaled, _, train_target, _ = fashion
    x, y = train_scaled[:12000], train_target[:12000]
    model = keras.Sequential(
        [
            keras.layers.Dense(100, activation="sigmoid", input_shape=(784,)),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )
    model.compile(optimizer="sgd", loss=SCCE, metrics=["accuracy"])
    history, mlp, oracle = train_both(model, ref.SGD(), x, y, SCCE, ["sigmoid", "softmax"], epochs=1, batch_size=32)
    for w, r in zip(model.get_weights(), mlp.params):
        np.testing.assert_allclose(w, r, rtol=0, atol=2e-5)
    assert history["loss"][0] == pytest.approx(oracle[0][0], rel=1e-5)
    assert history["accuracy"][0] == pytest.approx(oracle[0][1], abs=2 / 12000)


@pytest.mark.slow
def test_issue_snippet_on_fashion_mnist(fashion, capsys):
    train_scaled, val_scaled, train_target, val_target = fashion
    model = keras.Sequential(
        [
            keras.layers.Dense(units=100, input_shape=(28 * 28,), activation="sigmoid", name="hidden"),
            keras.layers.Dense(units=10, activation="softmax", name="output"),
        ],
        name="패션 MNIST 모델",
    )
    model.summary()
    model.compile(loss="sparse_categorical_crossentropy", optimizer="sgd", metrics="accuracy")
    history = model.fit(train_scaled, train_target, epochs=5)
    loss, acc = model.evaluate(val_scaled, val_target)
    out = capsys.readouterr().out
    assert out.startswith(FASHION_SUMMARY)
    lines = out[len(FASHION_SUMMARY) :].splitlines()
    assert lines[0::2][:5] == [f"Epoch {i}/5" for i in range(1, 6)]
    assert all(progress_re(1500, ["accuracy", "loss"]).match(l) for l in lines[1:10:2]), lines
    assert progress_re(375, ["accuracy", "loss"]).match(lines[10]) and len(lines) == 11
    # plain SGD at 0.01 is slow: about 0.80 after 5 epochs (RMSprop, the default, reaches 0.87)
    assert 0.78 <= acc <= 0.81 and 0.55 <= loss <= 0.65
    assert history.history["accuracy"][-1] == pytest.approx(acc, abs=0.02)


# ---- the thread chooser of fit -------------------------------------------------------------


def _feed(chooser, per_batch, runs, batches=50):
    """Run the chooser ``runs`` times with fake timings; returns the thread counts it picked."""
    picks = []
    for _ in range(runs):
        t = chooser.pick()
        picks.append(t)
        chooser.record(t, per_batch[t] * batches, batches)
    return picks


def _runs(chooser, per_batch, epoch_batches=1000):
    """Drive the chooser as fit does, with fake timings (``{threads: seconds per batch}``) and epochs of
    ``epoch_batches`` batches, without end; yields ``(threads, batches, probing, seconds of training
    before the run)`` for each run, before its time is recorded."""
    seconds = 0.0
    while True:
        done = 0
        while done < epoch_batches:
            t = chooser.pick()
            k = chooser.run_batches(epoch_batches - done)
            yield t, k, chooser.probing, seconds
            chooser.record(t, k * per_batch[t], k)
            seconds += k * per_batch[t]
            done += k


def test_thread_chooser_takes_one_thread_only_when_clearly_faster():
    from cdnn.trainers import thread_chooser as models

    slow_many = models._ThreadChooser(2)
    picks = _feed(slow_many, {2: 1e-3, 1: 0.5e-3}, 40)
    assert picks[-1] == 1 and slow_many.best() == 1  # busy machine: one thread wins
    close = models._ThreadChooser(2)
    picks = _feed(close, {2: 1e-3, 1: 0.95e-3}, 40)
    assert close.best() == 2  # within SINGLE_THREAD_MARGIN: noise, keep the threads
    assert picks[-10:].count(2) >= 8  # one thread only for the odd probe
    assert models._ThreadChooser(1).pick() == 1


def test_thread_chooser_probes_at_doubling_intervals():
    from cdnn.trainers import thread_chooser as models

    c = models._ThreadChooser(2)
    probes, seconds = [], 0.0
    for _ in range(400):
        t = c.pick()
        if c.probing:
            probes.append(round(seconds, 3))
            assert t == 1
        c.record(t, 0.05, 50)  # 50 ms per run, threads always faster
        seconds += 0.05
    gaps = np.diff(probes)
    assert len(probes) >= 4 and gaps[0] < 1.0 and gaps[-1] >= models.PROBE_SECONDS - 0.05
    assert all(b >= a - 1e-9 for a, b in zip(gaps, gaps[1:]))  # (sums of 0.05 s: rounding)


def test_thread_chooser_probes_a_far_slower_option_less_often():
    from cdnn.trainers import thread_chooser as models

    def probe_gaps(one_thread_per_batch):
        """Seconds of training between the probes of one thread (its first measurement first)."""
        c = models._ThreadChooser(2)
        probes = []
        for t, k, probing, seconds in itertools.islice(_runs(c, {2: 1e-3, 1: one_thread_per_batch}), 400):
            if probing and (not probes or c.measured.get(1, 0.0) >= models.MIN_MEASURED_SECONDS):
                probes.append(seconds)
        return np.diff(probes)

    clear = probe_gaps(1.9e-3)  # one thread 1.9x slower: as at BIG-b128 on an idle machine
    close = probe_gaps(1.3e-3)  # 1.3x: the load may tip it, re-check as often as ever
    # (gaps: the interval, plus the probe itself and up to one run of 0.1 s)
    first = models.FIRST_PROBE_SECONDS
    assert 4 * first <= clear[0] <= 4 * first + 0.2 and 16 * first <= clear[1] <= 16 * first + 0.2, clear
    assert all(models.PROBE_SECONDS <= g <= models.PROBE_SECONDS + 0.2 for g in clear[2:]), clear
    assert first <= close[0] <= first + 0.2 and 2 * first <= close[1] <= 2 * first + 0.2, close
    assert 4 * first <= close[2] <= 4 * first + 0.2, close
    assert len(clear) < len(close)


def test_thread_chooser_leaves_short_fits_alone():
    from cdnn.trainers import thread_chooser as models

    # a grid search's fits are short: a probe of one thread costs about half its length
    for t, k, probing, seconds in _runs(models._ThreadChooser(2), {2: 1e-4, 1: 1e-4}):  # 0.1 ms per batch
        assert t == 2 or seconds >= models.FIRST_PROBE_SECONDS
        if probing:
            break
    assert t == 1 and seconds < models.FIRST_PROBE_SECONDS + models.RUN_SECONDS + 0.01  # measured soon after


def test_thread_chooser_moves_to_one_thread_soon_on_a_busy_machine():
    from cdnn.trainers import thread_chooser as models

    # two busy loops on the cores: all threads 17 ms per batch, one thread 1.9 ms (BIG-b128 measured so);
    # probes of one thread are a batch each here, and follow each other until it is measured
    c = models._ThreadChooser(2)
    switched, trained = None, 0
    for t, k, probing, seconds in _runs(c, {2: 17e-3, 1: 1.9e-3}, epoch_batches=94):
        if trained == 2 * 94:
            break
        if t == 1 and not probing and switched is None:
            switched = seconds
        trained += k
    assert switched is not None and switched < models.FIRST_PROBE_SECONDS + models.RUN_SECONDS + 0.05, switched
    assert seconds < 1.0, seconds  # two epochs, against 1.6 s on all threads (17 ms x 94 x 2)


def test_thread_chooser_learns_the_run_length_and_keeps_it():
    from cdnn.trainers import thread_chooser as models

    c = models._ThreadChooser(2)
    assert c.pick() == 2 and c.run_batches(500) == 1
    lengths, one_thread = [], []
    target = int(models.RUN_SECONDS / 1e-3)
    for _ in range(30):  # 1 ms per batch on the threads: runs grow up to RUN_SECONDS
        t = c.pick()
        k = c.run_batches(500)
        if t == 1:
            # one thread is first measured once the runs have their length, with probe-sized runs
            assert c.probing and c.chunk == target and k == target // models.PROBE_FRACTION
            one_thread.append(k)
        else:
            assert not c.probing
            lengths.append(k)
        chunk = c.chunk
        c.record(t, k * 1e-3, k)
        assert t == 2 or c.chunk == chunk  # a probe's time says nothing of the runs' length
        if one_thread == [k]:  # one probe is a whole measurement (MIN_MEASURED_SECONDS or more)
            assert c.measured[1] >= models.MIN_MEASURED_SECONDS and c.probe_interval is not None
    growth = models.RUN_GROWTH
    assert lengths[:3] == [1, growth, growth**2] and lengths[-1] == target
    assert sum(one_thread) * 1e-3 >= models.MIN_MEASURED_SECONDS
    assert all(b <= growth * a for a, b in zip(lengths, lengths[1:]))
    assert c.run_batches(30) == 30  # an epoch's last batches
    c.record(2, 30e-3, 30)
    assert c.run_batches(500) == target  # a short run at the same speed keeps the length
    c.since_probe = c.probe_interval  # time to probe one thread
    assert c.pick() == 1 and c.probing and c.run_batches(500) == target // models.PROBE_FRACTION
    c.record(1, 1.0, c.run_batches(500))  # a probe's time says nothing of the runs' length
    assert c.pick() == 2 and c.run_batches(500) == target
    c.record(2, 10 * 30e-3, 30)  # ten times slower: the length follows at once
    assert c.run_batches(500) == target // 10


def test_fit_starts_later_epochs_with_the_learned_run_length(monkeypatch):
    from cdnn.trainers import thread_chooser as models

    # runs so long a target that every run may grow RUN_GROWTH times: the lengths do not depend on the clock
    monkeypatch.setattr(models, "RUN_SECONDS", 1e9)
    rng = np.random.default_rng(4)
    x, y = rng.random((4096, 6)).astype(np.float32), rng.integers(0, 4, 4096)
    model = small_model(inputs=x.shape[1], units=4, metrics=None)
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    runs = []
    record = model._chooser.record
    model._chooser.record = lambda t, s, k: (runs.append((model._chooser.probing, k)), record(t, s, k))
    model.fit(x, y, batch_size=8, epochs=2, verbose=0)
    # the first fit ramped up to whole epochs: no later epoch ramps up from one batch again
    assert runs[0][1] > 8 and len(runs) <= 6, runs
    assert sum(k for _, k in runs) == 2 * 512


def test_fit_keeps_its_thread_chooser_across_calls():
    rng = np.random.default_rng(3)
    x, y = rng.random((64, 6)).astype(np.float32), rng.integers(0, 4, 64)
    model = small_model(inputs=x.shape[1], units=4, metrics=None)
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    first = model._chooser
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    assert model._chooser is first  # measurements carry over from one fit to the next
    model.fit(x, y, batch_size=16, epochs=1, verbose=0)
    assert model._chooser is not first  # another batch size: timings start over
    second = model._chooser
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    model.fit(x, y, batch_size=16, epochs=1, verbose=0)
    assert model._chooser is not second  # a new core network: timings start over


def _graph_model():
    inp = keras.Input((20,))
    return keras.Model(inp, keras.layers.Dense(5, activation="softmax")(keras.layers.Dense(16)(inp)))


@pytest.mark.parametrize("make", [small_model, _graph_model], ids=["sequential", "functional"])
def test_compile_execution_options_keras_defaults_and_no_op_values_train_the_same(make):
    """Keras' defaults, and jit_compile / auto_scale_loss (the run is compiled C in float32), change nothing."""
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(64, 20)).astype(np.float32), rng.integers(0, 5, 64)
    runs = []
    for options in (
        {},
        {"run_eagerly": False, "steps_per_execution": 1, "jit_compile": "auto", "auto_scale_loss": True},
        {"jit_compile": True, "auto_scale_loss": False},
        {"jit_compile": False},
    ):
        cdnn.utils.set_random_seed(3)
        model = make()
        model.compile(optimizer="adam", loss=SCCE, **options)
        hist = model.fit(x, y, batch_size=16, epochs=2, verbose=0, shuffle=False)
        runs.append((hist.history["loss"], [w.copy() for w in model.get_weights()]))
    for loss, weights in runs[1:]:
        assert loss == runs[0][0]
        for a, b in zip(weights, runs[0][1]):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("make", [small_model, _graph_model], ids=["sequential", "functional"])
@pytest.mark.parametrize(
    "options, message",
    [
        ({"run_eagerly": True}, "no Python-level training step"),
        ({"steps_per_execution": 4}, "only every 4 batches"),
        ({"steps_per_execution": 0}, "expected a positive integer"),
        ({"run_eagerly": "yes"}, "expected True or False"),
        ({"jit_compile": "xla"}, "expected True, False or 'auto'"),
        ({"auto_scale_loss": None}, "expected True or False"),
    ],
)
def test_compile_refuses_execution_options_cdnn_does_not_have(make, options, message):
    model = make()
    with pytest.raises(ValueError, match=re.escape(message)):
        model.compile(optimizer="adam", loss=SCCE, **options)


def _noisy_runs(chooser, per_batch, slow, seconds_total, epoch_batches=188):
    """Drive the chooser as fit does for ``seconds_total`` of training with fake timings; the runs whose
    index is in ``slow`` take three times as long (a moment of load). Returns [(threads, batches, probing)]."""
    runs, seconds, i = [], 0.0, 0
    while seconds < seconds_total:
        done = 0
        while done < epoch_batches and seconds < seconds_total:
            t = chooser.pick()
            k = chooser.run_batches(epoch_batches - done)
            took = k * per_batch[t] * (3.0 if i in slow else 1.0)
            runs.append((t, k, chooser.probing))
            chooser.record(t, took, k)
            seconds += took
            done += k
            i += 1
    return runs


@pytest.mark.parametrize("slow_run", range(4, 12))
def test_thread_chooser_recovers_from_one_slow_run(slow_run):
    """W2-b256 as measured: 0.6 ms per batch on 2 threads, 1.1 ms on 1. One run slowed three times by
    the load (a probe of 2 threads, or a 2-thread run just before a probe of 1) must not keep the fit
    on one thread: it is back on two within about a second of training, and most of it is on two."""
    from cdnn.trainers import thread_chooser as models

    c = models._ThreadChooser(2)
    runs = _noisy_runs(c, {2: 0.6e-3, 1: 1.1e-3}, {slow_run}, 10.0)
    assert c.best() == 2
    batches_on_one = sum(k for t, k, probing in runs if t == 1)
    assert batches_on_one / sum(k for _, k, _ in runs) < 0.05, runs[:30]
    # the chooser was on one thread at most ONE_THREAD_PROBE_SECONDS (and a run) after the slow run
    ones = [i for i, (t, k, probing) in enumerate(runs) if t == 1 and not probing]
    assert sum(runs[i][1] for i in ones) * 1.1e-3 < models.ONE_THREAD_PROBE_SECONDS + 0.2


def test_thread_chooser_recovers_when_the_first_probe_of_two_threads_is_slow():
    from cdnn.trainers import thread_chooser as models

    c = models._ThreadChooser(2)
    runs = _noisy_runs(c, {2: 0.6e-3, 1: 1.1e-3}, set(range(3, 9)), 3.0)  # a second of load early on
    assert c.best() == 2 and runs[-1][0] == 2
    late = runs[len(runs) // 2 :]
    assert sum(k for t, k, _ in late if t == 1) / sum(k for _, k, _ in late) < 0.05


def test_thread_chooser_probes_cost_little_on_a_busy_machine():
    """Both cores busy: 17 ms per batch on 2 threads, 1.9 ms on 1 (BIG-b128 measured so). The
    re-measurements of 2 threads while on one (at least every ONE_THREAD_PROBE_SECONDS) are short:
    under 4% of the training time."""
    from cdnn.trainers import thread_chooser as models

    c = models._ThreadChooser(2)
    per_batch = {2: 17e-3, 1: 1.9e-3}
    runs = _noisy_runs(c, per_batch, set(), 30.0, epoch_batches=94)
    late = runs[len(runs) // 3 :]
    on_two = sum(k * per_batch[2] for t, k, _ in late if t == 2)
    assert on_two / sum(k * per_batch[t] for t, k, _ in late) < 0.04
    assert sum(1 for t, _, probing in late if t == 2 and probing) >= 5  # it does re-measure


def test_thread_chooser_logs_its_decisions(monkeypatch, capsys):
    from cdnn.trainers import thread_chooser as models

    monkeypatch.setenv("CDNN_THREAD_LOG", "1")
    c = models._ThreadChooser(2)
    _feed(c, {2: 1e-3, 1: 0.5e-3}, 40)
    assert len(c.decisions) == 40 and c.decisions[-1][4] == 1
    threads, batches, seconds, probing, chosen, interval = c.decisions[-1]
    assert seconds == pytest.approx(batches * 0.5e-3 if threads == 1 else batches * 1e-3)
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 40 and err[-1].startswith("cdnn threads: ran ") and "next 1" in err[-1]
    monkeypatch.delenv("CDNN_THREAD_LOG")
    models._ThreadChooser(2).record(2, 1.0, 1)
    assert capsys.readouterr().err == ""
