"""Bad input gets a Python exception whose message says what was wrong and
what was expected (Keras' style: the argument, the value received, what is
expected) — and never a crash, a silent wrong answer, or a write outside an
array.
"""

import re

import numpy as np
import pytest

import cdnn
from cdnn import keras

SCCE = "sparse_categorical_crossentropy"


@pytest.fixture(autouse=True)
def fresh_session():
    cdnn.utils.clear_session()
    keras.utils.set_random_seed(0)


def fashion_model(loss=SCCE, last="softmax"):
    model = keras.Sequential(
        [keras.layers.Dense(100, activation="sigmoid", input_shape=(784,)), keras.layers.Dense(10, activation=last)]
    )
    model.compile(loss=loss, metrics=["accuracy"])
    return model


def data(n=40, features=784, classes=10, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((n, features)).astype(np.float32), rng.integers(0, classes, n)


def raises(exc, *fragments):
    """pytest.raises matching every fragment literally, in order."""
    return pytest.raises(exc, match=".*".join(re.escape(f) for f in fragments))


# --------------------------------------------------------------------------- unknown names


@pytest.mark.parametrize(
    "kind, call",
    [
        ("optimizer", lambda: fashion_model().compile(optimizer="adamwr", loss=SCCE)),
        ("loss", lambda: fashion_model().compile(loss="sparse_categorical_crossentropyy")),
        ("metric", lambda: fashion_model().compile(loss=SCCE, metrics=["precision@k"])),
        ("activation function", lambda: keras.layers.Dense(3, activation="swish2")),
        ("initializer", lambda: keras.layers.Dense(3, kernel_initializer="glorot")),
    ],
)
def test_unknown_names_say_what_is_known(kind, call):
    with pytest.raises(ValueError) as info:
        call()
    message = str(info.value)
    assert message.startswith(f"Could not interpret {kind} identifier: ")
    assert "Expected one of:" in message or "expected one of" in message


def test_unknown_optimizer_lists_the_supported_ones():
    with raises(
        ValueError, "'adamwr'", "adadelta, adafactor, adagrad, adam, adamax, adamw, ftrl, lion, nadam, rmsprop, sgd"
    ):
        fashion_model().compile(optimizer="adamwr", loss=SCCE)


def test_activation_functions_from_elsewhere_are_refused():
    with raises(ValueError, "activation"):
        keras.layers.Dense(3, activation=np.tanh)


# --------------------------------------------------------------------------- compile


def test_fit_and_evaluate_before_compile():
    model = keras.Sequential([keras.layers.Dense(10, activation="softmax", input_shape=(784,))])
    x, y = data()
    with raises(ValueError, "You must call `compile()` before calling `fit()`."):
        model.fit(x, y)
    with raises(ValueError, "You must call `compile()` before calling `evaluate()`."):
        model.evaluate(x, y)
    # predict needs no compile
    assert model.predict(x, verbose=0).shape == (40, 10)


def test_compile_without_a_loss_then_fit():
    model = fashion_model()
    model.compile(optimizer="sgd")
    with raises(ValueError, "loss"):
        model.fit(*data(), verbose=0)


@pytest.mark.parametrize(
    "loss, last", [(SCCE, "sigmoid"), ("categorical_crossentropy", "relu"), ("binary_crossentropy", "softmax")]
)
def test_probability_losses_on_other_outputs_follow_keras_formulas(loss, last):
    """Keras normalises and clips probabilities there: the loss matches the NumPy oracle's formula."""
    import reference

    model = fashion_model(loss=loss, last=last)
    x, y = data()
    y = keras.utils.to_categorical(y, 10) if loss != SCCE else y
    model.fit(x, y, verbose=0)
    value = model.evaluate(x, y, verbose=0)
    value = value[0] if isinstance(value, list) else value
    expected = reference.loss(loss, y, model.predict(x, verbose=0).astype(np.float64))
    assert np.isfinite(value)
    np.testing.assert_allclose(value, expected, rtol=1e-4)


def test_unsupported_fit_arguments():
    model = fashion_model()
    x, y = data()
    with raises(ValueError, "sample_weight"):
        model.fit(x, y, sample_weight=np.ones(41), verbose=0)  # one weight per sample
    with raises(TypeError, "workers"):
        model.fit(x, y, workers=4, verbose=0)


# --------------------------------------------------------------------------- shapes


def test_wrong_feature_count():
    model = fashion_model()
    x, y = data(features=100)
    for call in (
        lambda: model.fit(x, y, verbose=0),
        lambda: model.evaluate(x, y, verbose=0),
        lambda: model.predict(x, verbose=0),
    ):
        with raises(ValueError, "expects inputs of shape (None, 784)", "received (40, 100)"):
            call()


def test_images_into_a_model_built_for_flat_vectors():
    model = fashion_model()
    x = np.zeros((5, 28, 28), np.uint8)
    with raises(ValueError, "(None, 784)", "(5, 28, 28)"):
        model.fit(x, np.zeros(5, int), verbose=0)
    with raises(ValueError, "(None, 784)", "(5, 28, 28)"):
        model.predict(x, verbose=0)


def test_images_into_dense_without_flatten_apply_it_to_the_last_axis():
    # Keras 3: Dense on N-D inputs acts on the last axis; the model is then a graph, not the fused chain
    model = keras.Sequential([keras.layers.Dense(10, activation="softmax")])
    model.build((None, 28, 28))
    assert model.output_shape == (None, 28, 10)
    assert not model._fast_chain()


def test_one_dimensional_and_scalar_inputs():
    model = fashion_model()
    with raises(ValueError, "`x`", "(samples, features...)", "(784,)"):
        model.predict(np.zeros(784), verbose=0)
    with raises(ValueError, "`x`"):
        model.predict(3.0, verbose=0)


def test_mismatched_numbers_of_inputs_and_labels():
    model = fashion_model()
    x, y = data()
    with raises(ValueError, "`y`", "40 labels", "(39,)"):
        model.fit(x, y[:39], verbose=0)
    with raises(ValueError, "`y`"):
        model.evaluate(x, 3, verbose=0)


def test_empty_arrays():
    model = fashion_model()
    with raises(ValueError, "`x`", "at least one sample", "(0, 784)"):
        model.fit(np.zeros((0, 784)), np.zeros(0, int), verbose=0)
    with raises(ValueError, "at least one sample"):
        model.predict(np.zeros((0, 784)), verbose=0)
    with raises(ValueError, "`y`"):
        model.fit(np.zeros((3, 784)), np.zeros(0, int), verbose=0)


def test_missing_arrays():
    model = fashion_model()
    with raises(ValueError, "`x`"):
        model.fit(None, np.zeros(3), verbose=0)
    with raises(ValueError, "`y`"):
        model.fit(np.zeros((3, 784)), None, verbose=0)


# --------------------------------------------------------------------------- labels


def test_labels_outside_the_output_range():
    model = fashion_model()
    x, y = data()
    y[3] = 10
    with raises(ValueError, "[0, 10)", "10 units", "[0, 10]"):
        model.fit(x, y, verbose=0)
    y[3] = -1
    with raises(ValueError, "[0, 10)", "[-1, 9]"):
        model.fit(x, y, verbose=0)
    with raises(ValueError, "[0, 10)"):
        model.fit(x, y.astype(np.uint64) + np.uint64(2**40), verbose=0)
    with raises(ValueError, "validation_data[1]", "[0, 10)"):
        model.fit(x, np.abs(y), validation_data=(x, np.full(40, 12)), verbose=0)


def test_validation_data_of_the_wrong_form_says_what_it_got():
    model = fashion_model()
    x, y = data()
    with raises(ValueError, "`validation_data`", "a tuple (x_val, y_val)", "a tuple of 1 item(s)"):
        model.fit(x, y, validation_data=(x,), verbose=0)
    with raises(ValueError, "`validation_data[2]`", "one weight per sample"):
        model.fit(x, y, validation_data=(x, y, np.ones(len(y) + 1)), verbose=0)
    with raises(ValueError, "`validation_data`", "a tuple (x_val, y_val)", "received dict"):
        model.fit(x, y, validation_data={"x": x, "y": y}, verbose=0)
    assert model.optimizer.iterations == 0  # refused before any training


def test_non_integer_float_labels_with_a_sparse_loss():
    model = fashion_model()
    x, y = data()
    labels = y.astype(np.float64)
    labels[5] = 2.5
    with raises(ValueError, "integer class indices", "2.5"):
        model.fit(x, labels, verbose=0)


def test_one_hot_labels_with_a_sparse_loss():
    model = fashion_model()
    x, y = data()
    with raises(ValueError, "sparse_categorical_crossentropy", "(40,)", "(40, 10)", "categorical_crossentropy"):
        model.fit(x, keras.utils.to_categorical(y, 10), verbose=0)


def test_integer_labels_with_a_categorical_loss():
    model = fashion_model(loss="categorical_crossentropy")
    x, y = data()
    with raises(ValueError, "categorical_crossentropy", "(40, 10)", "(40,)", "sparse_categorical_crossentropy"):
        model.fit(x, y, verbose=0)
    with raises(ValueError, "(40, 10)", "(40, 3)"):
        model.fit(x, keras.utils.to_categorical(y % 3, 3), verbose=0)


def test_nan_labels():
    model = fashion_model(loss="categorical_crossentropy")
    x, y = data()
    onehot = keras.utils.to_categorical(y, 10)
    onehot[0, 0] = np.nan
    with raises(ValueError, "`y`", "NaN"):
        model.fit(x, onehot, verbose=0)


# --------------------------------------------------------------------------- values and dtypes


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_and_inf_in_inputs(bad):
    model = fashion_model()
    x, y = data()
    x[7, 100] = bad
    with raises(ValueError, "`x`", "NaN or infinity"):
        model.fit(x, y, verbose=0)
    with raises(ValueError, "NaN or infinity"):
        model.evaluate(x, y, verbose=0)
    with raises(ValueError, "NaN or infinity"):
        model.predict(x, verbose=0)
    clean, _ = data()
    with raises(ValueError, "validation_data[0]", "NaN or infinity"):
        model.fit(clean, y, validation_data=(x, y), verbose=0)


def _stopped_model(hidden, dropout):
    layers = [keras.layers.Input(shape=(784,))]
    if dropout:
        layers.append(keras.layers.Dropout(0.2))
    layers += [keras.layers.Dense(hidden, activation="relu"), keras.layers.Dense(10, activation="softmax")]
    model = keras.Sequential(layers)
    model.compile(optimizer="adam", loss=SCCE, metrics=["accuracy"])
    return model


# a 784x100 first layer is split in depth (its next batch is gathered a step ahead), 784x8 is not;
# 784x128 also keeps its weights packed during a run (written back when the run stops)
@pytest.mark.parametrize("hidden, dropout", [(100, False), (8, False), (128, False), (100, True), (8, True)])
@pytest.mark.parametrize("bad_row", [0, 130, 349])  # in the first, a middle and the last (short) batch
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_nan_found_in_a_later_batch_stops_fit_before_that_batch(hidden, dropout, bad_row, threads):
    """float32 rows are checked as the core gathers them: training stops before the
    update of the batch holding the NaN, with the batches before it trained exactly
    as a run over those batches alone trains them."""
    x, y = data(350)
    bad = x.copy()
    bad[bad_row, 777] = np.nan
    batch = 32
    trained = bad_row // batch
    cdnn.set_num_threads(threads)
    try:
        keras.utils.set_random_seed(5)
        stopped = _stopped_model(hidden, dropout)
        with raises(
            ValueError, "`x`", f"row {bad_row} contains NaN or infinity", f"before batch {trained + 1} of epoch 1"
        ):
            stopped.fit(bad, y, batch_size=batch, epochs=3, shuffle=False, verbose=0)
        keras.utils.set_random_seed(5)
        oracle = _stopped_model(hidden, dropout)
        if trained:
            oracle.fit(x[: trained * batch], y[: trained * batch], batch_size=batch, shuffle=False, verbose=0)
    finally:
        cdnn.set_num_threads(0)
    assert int(stopped.optimizer.iterations) == trained
    for got, want in zip(stopped.get_weights(), oracle.get_weights()):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("bad", [np.inf, -np.inf])
def test_infinity_in_a_shuffled_epoch_names_its_row(bad):
    model = fashion_model()
    x, y = data(300)
    x[211, 0] = bad
    with raises(ValueError, "row 211 contains NaN or infinity", "of epoch 1"):
        model.fit(x, y, batch_size=16, epochs=2, verbose=0)
    assert all(np.isfinite(w).all() for w in model.get_weights())


def test_nan_in_the_validation_split_is_refused_before_training():
    model = fashion_model()
    x, y = data(100)
    x[95, 3] = np.nan  # in the last 10%: never gathered by training
    before = [w.copy() for w in model.get_weights()]  # built: its input shape is given
    with raises(ValueError, "`x`", "validation split", "NaN or infinity"):
        model.fit(x, y, validation_split=0.1, verbose=0)
    assert int(model.optimizer.iterations) == 0
    assert len(model.get_weights()) == len(before)
    for got, want in zip(model.get_weights(), before):
        np.testing.assert_array_equal(got, want)


def test_core_train_run_reports_the_first_batch_with_a_nan():
    import reference

    from cdnn import _core

    rng = np.random.default_rng(0)
    W = reference.glorot_uniform(784, 100, rng, np.float32)
    specs = [
        dict(
            W=W,
            b=np.zeros(100, np.float32),
            activation="relu",
            slots=[np.zeros_like(W), np.zeros_like(W), np.zeros(100, np.float32), np.zeros(100, np.float32)],
        )
    ]
    W2 = reference.glorot_uniform(100, 10, rng, np.float32)
    specs.append(
        dict(
            W=W2,
            b=np.zeros(10, np.float32),
            activation="softmax",
            slots=[np.zeros_like(W2), np.zeros_like(W2), np.zeros(10, np.float32), np.zeros(10, np.float32)],
        )
    )
    net = _core.Network(specs, SCCE, False, "sparse", dict(name="adam", learning_rate=1e-3, epsilon=1e-7))
    x, y = data(64)
    x[[40, 20], [9, 700]] = [np.inf, np.nan]  # both in batch 1 (rows 16-31 of the permutation below)
    perm = np.arange(64, dtype=np.int32)[::-1].copy()  # batch 1 = rows 47..32, batch 2 = rows 31..16
    W_before = W.copy()
    with pytest.raises(_core.NonFiniteInputError) as info:
        net.train_run(x, y.astype(np.int32), perm, 0, 4, 16, 0, 0, np.zeros(4), np.zeros(4))
    assert (info.value.row, info.value.batch, info.value.trained) == (40, 1, 1)
    assert isinstance(info.value, ValueError)
    assert net.steps_done == 1
    assert not np.array_equal(W, W_before) and np.isfinite(W).all()  # batch 0 trained, batch 1 not
    trained_once = W.copy()
    with pytest.raises(_core.NonFiniteInputError) as info:  # starting at the bad batch: nothing trained
        net.train_run(x, y.astype(np.int32), perm, 1, 3, 16, 1, 0, np.zeros(4), np.zeros(4))
    assert (info.value.row, info.value.batch, info.value.trained) == (40, 1, 0)
    assert net.steps_done == 1
    np.testing.assert_array_equal(W, trained_once)


def test_float64_values_beyond_float32_are_refused_or_finite():
    # 1e300 is finite in float64 but infinite in float32: it must not reach the core as inf silently
    model = fashion_model()
    x, y = data()
    x = x.astype(np.float64)
    x[0, 0] = 1e300
    with raises(ValueError, "NaN or infinity", "beyond float32"):
        model.fit(x, y, verbose=0)


@pytest.mark.parametrize("x", [np.array([["a"] * 784]), np.zeros((1, 784), complex), np.zeros((1, 784), object)])
def test_inputs_of_non_real_dtypes(x):
    model = fashion_model()
    with raises(TypeError, "`x`", "real numbers", str(x.dtype)):
        model.predict(x, verbose=0)


@pytest.mark.parametrize("y", [np.array(["a"] * 40), np.zeros(40, complex), np.zeros(40, object)])
def test_labels_of_non_numeric_dtypes(y):
    model = fashion_model()
    with raises(TypeError, "`y`", str(y.dtype)):
        model.fit(data()[0], y, verbose=0)


# --------------------------------------------------------------------------- arguments


@pytest.mark.parametrize("batch_size", [0, -32, 2.5, True, "32"])
def test_bad_batch_sizes(batch_size):
    model = fashion_model()
    x, y = data()
    message = (
        f"Invalid value for argument `batch_size`: expected a positive integer, received batch_size={batch_size!r}"
    )
    with raises(ValueError, message):
        model.fit(x, y, batch_size=batch_size, verbose=0)
    with raises(ValueError, message):
        model.evaluate(x, y, batch_size=batch_size, verbose=0)
    with raises(ValueError, message):
        model.predict(x, batch_size=batch_size, verbose=0)


def test_batch_size_larger_than_the_data_is_one_batch():
    x, y = data(n=10)
    runs = []
    for batch_size in (10, 11, 10**9):  # 10**9 rows would need terabytes if the core sized for them
        keras.utils.set_random_seed(3)
        model = fashion_model()
        history = model.fit(x, y, batch_size=batch_size, epochs=2, verbose=0)
        assert model.optimizer.iterations == 2
        runs.append((history.history, model.get_weights()))
    for history, weights in runs[1:]:
        assert history == runs[0][0]
        for a, b in zip(weights, runs[0][1]):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    "argument, value",
    [
        ("epochs", -1),
        ("epochs", 2.0),
        ("verbose", 3),
        ("verbose", "yes"),
        ("validation_split", 1.0),
        ("validation_split", -0.1),
        ("initial_epoch", -1),
        ("validation_data", np.zeros(3)),
    ],
)
def test_bad_fit_arguments(argument, value):
    model = fashion_model()
    with raises(ValueError, f"Invalid value for argument `{argument}`"):
        model.fit(*data(), verbose=0, **{argument: value}) if argument != "verbose" else model.fit(
            *data(), verbose=value
        )


@pytest.mark.parametrize("units", [0, -5, 2.5, True, "10", None])
def test_bad_units(units):
    with raises(
        ValueError, f"Invalid value for argument `units`: expected a positive integer, received units={units!r}"
    ):
        keras.layers.Dense(units)


@pytest.mark.parametrize("rate", [1.0, -0.1, 1.5, "0.5"])
def test_bad_dropout_rates(rate):
    with raises(ValueError, "`rate`", "[0, 1)"):
        keras.layers.Dropout(rate)


@pytest.mark.parametrize("shape", [(0,), (-1, 3), "abc", ()])
def test_bad_input_shapes(shape):
    with raises(ValueError, "shape"):
        keras.layers.Input(shape=shape)
    with raises(ValueError, "input_shape"):
        keras.layers.Dense(3, input_shape=shape)


@pytest.mark.parametrize(
    "make",
    [
        lambda: keras.optimizers.SGD(learning_rate=-0.1),
        lambda: keras.optimizers.Adam(learning_rate=-1e-3),
        lambda: keras.optimizers.RMSprop(learning_rate=float("nan")),
        lambda: keras.optimizers.Adagrad(learning_rate=float("inf")),
    ],
)
def test_bad_learning_rates(make):
    with raises(ValueError, "Invalid value for argument `learning_rate`", "received learning_rate="):
        make()


def test_learning_rate_that_is_not_a_float_gets_keras_message():
    with raises(ValueError, "Argument `learning_rate` should be float", "Received instead: learning_rate=0.1"):
        keras.optimizers.SGD(learning_rate="0.1")


def test_setting_a_negative_learning_rate_later():
    opt = keras.optimizers.SGD()
    with raises(ValueError, "learning_rate=-1"):
        opt.learning_rate = -1
    assert opt.learning_rate == 0.01


@pytest.mark.parametrize(
    "make, argument",
    [
        (lambda: keras.optimizers.SGD(momentum=1.5), "momentum"),
        (lambda: keras.optimizers.SGD(momentum=-0.1), "momentum"),
        (lambda: keras.optimizers.Adam(beta_1=1.1), "beta_1"),
        (lambda: keras.optimizers.Adam(epsilon=-1.0), "epsilon"),
        (lambda: keras.optimizers.RMSprop(rho=2), "rho"),
        (lambda: keras.optimizers.Adagrad(initial_accumulator_value=-0.1), "initial_accumulator_value"),
    ],
)
def test_bad_optimizer_hyperparameters(make, argument):
    with raises(ValueError, f"argument `{argument}`"):
        make()


# --------------------------------------------------------------------------- models and weights


def test_building_mistakes():
    with raises(TypeError, "expected a cdnn layer", "str"):
        keras.Sequential(["dense"])
    with raises(ValueError, "unique names", "'a'"):
        keras.Sequential([keras.layers.Dense(3, name="a"), keras.layers.Dense(3, name="a")])
    with raises(ValueError, "Input", "first"):
        keras.Sequential([keras.layers.Dense(3), keras.layers.Input(shape=(3,))])
    with raises(ValueError, "`name`"):
        keras.Sequential(name=5)
    with raises(TypeError, "unsupported argument", "kernel_regularizr"):
        keras.layers.Dense(3, kernel_regularizr="l2")


def test_a_model_ending_in_dropout_is_a_graph():
    # Keras allows any last layer: such a model is not the fused Dense chain but a linear graph
    model = keras.Sequential([keras.layers.Dense(3, input_shape=(4,)), keras.layers.Dropout(0.5)])
    assert not model._fast_chain()
    empty = keras.Sequential()
    with raises(ValueError, "no layers"):
        empty.build((None, 4))


def test_set_weights_mistakes():
    model = fashion_model()
    weights = model.get_weights()
    with raises(ValueError, "expected a list of 4 arrays", "received 3"):
        model.set_weights(weights[:3])
    with raises(ValueError, "weight 0", "(100, 784)", "(784, 100)"):
        model.set_weights([weights[0].T] + weights[1:])
    with raises(TypeError, "weight 1", "<U"):
        model.set_weights([weights[0], np.array(["x"] * 100)] + weights[2:])
    with raises(ValueError, "weight 3", "NaN"):
        model.set_weights(weights[:3] + [np.full(10, np.nan)])
    with raises(ValueError, "weight 3", "float32"):
        model.set_weights(weights[:3] + [np.full(10, 1e300)])
    for a, b in zip(model.get_weights(), weights):  # nothing was half-written
        np.testing.assert_array_equal(a, b)
    with raises(ValueError, "build it"):
        keras.Sequential([keras.layers.Dense(3)]).set_weights([])


def test_set_num_threads_wants_an_integer():
    with raises(ValueError, "`n`", "'2'"):
        cdnn.set_num_threads("2")


def test_set_random_seed_wants_a_non_negative_integer():
    with raises(ValueError, "`seed`", "-1"):
        keras.utils.set_random_seed(-1)
    with raises(ValueError, "`seed`"):
        keras.utils.set_random_seed(1.5)
