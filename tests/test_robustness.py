"""Robustness and safety (issue 7): bad input never crashes the interpreter,
memory is not leaked, threads and interruptions leave models consistent,
killed saves and downloads leave usable files, and training numerics stay
finite or are reported.

The bad-input sweep runs every case in a child process (this file, run as a
script with ``--cases``), many cases per child. The child prints a marker
before each case and a JSON result after it, so a crash or a hang is pinned
on the case that was running, and the cases after it go on in a new child.
``tests/sanitize.sh`` runs this file against an ASan/UBSan build, where the
children inherit the sanitizer.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import gzip
import hashlib
import io
import json
import os
import pickle
import random
import re
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import zipfile
from pathlib import Path

import numpy as np
import pytest

from cdnn._saving import ModelFileError
from cdnn.datasets._idx import IdxError

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
SCCE = "sparse_categorical_crossentropy"
#: the child runs under AddressSanitizer (tests/sanitize.sh): no address-space limit, which ASan's
#: shadow memory would exceed; the cases that need the limit to be safe are skipped there
UNDER_ASAN = "asan" in os.environ.get("LD_PRELOAD", "")
#: address-space limit of the sweep's children: a case that allocates gigabytes fails fast instead
CHILD_ADDRESS_SPACE = 4 << 30


def child_env(**extra) -> dict:
    env = dict(
        os.environ,
        OMP_NUM_THREADS="1",
        PYTHONPATH=os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]),
    )
    env.update(extra)
    return env


# ============================================================================ the bad-input table
# Each case is a function run in a child process. `expect` is the exception it must raise (None: it must
# succeed, and checks its own result), `keywords` words the message must contain (what was wrong and what
# was expected). Cases with `limit=True` would try to allocate gigabytes if the check they test were
# missing: they run only under an address-space limit, so a regression fails fast with MemoryError.


@dataclasses.dataclass
class Case:
    fn: object
    expect: type | None
    keywords: tuple
    xfail: str | None = None
    limit: bool = False
    seconds: float = 5.0


CASES: dict[str, Case] = {}


def case(expect=None, *keywords, xfail=None, limit=False, seconds=5.0):
    def register(fn):
        CASES[fn.__name__] = Case(fn, expect, keywords, xfail, limit, seconds)
        return fn

    return register


TMP = Path(tempfile.gettempdir())  # the child's own temporary directory, set in child_main


def _keras():
    import cdnn

    return cdnn.keras


def dense_model(features=784, units=10, activation="softmax", loss=SCCE, compile=True, metrics=("accuracy",)):
    keras = _keras()
    model = keras.Sequential([keras.layers.Input(shape=(features,)), keras.layers.Dense(units, activation=activation)])
    if compile:
        model.compile(optimizer="sgd", loss=loss, metrics=list(metrics) if metrics else None)
    return model


def samples(n=32, features=784, classes=10, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((n, features)).astype(np.float32), rng.integers(0, classes, n)


def same_predictions(x_odd, x_ref, **model_args):
    model = dense_model(**model_args)
    got, want = model.predict(x_odd, verbose=0), model.predict(np.ascontiguousarray(x_ref, np.float32), verbose=0)
    assert got.dtype == np.float32 and np.array_equal(got, want), "converted input gives other predictions"


def saved_model_file(name="good.cdnn", fitted=True):
    model = dense_model(features=6, units=3)
    if fitted:
        model.fit(*samples(12, 6, 3), verbose=0)
    path = TMP / name
    model.save(path)
    return path


def model_file_parts(path):
    with np.load(path) as z:
        return json.loads(z["__cdnn__"].tobytes()), {k: z[k] for k in z.files if k != "__cdnn__"}


def write_model_file(path, meta, arrays):
    raw = meta if isinstance(meta, bytes) else json.dumps(meta).encode()
    with open(path, "wb") as f:
        np.savez(f, __cdnn__=np.frombuffer(raw, np.uint8), **arrays)
    return path


def load(path):
    return _keras().models.load_model(path)


def idx_file(data: bytes, name="x.idx", compress=False):
    path = TMP / name
    path.write_bytes(gzip.compress(data) if compress else data)
    return path


def idx_header(*dims, type_code=0x08):
    return bytes([0, 0, type_code, len(dims)]) + struct.pack(f">{len(dims)}I", *dims)


def read_idx(path):
    from cdnn.datasets._idx import read_idx as read

    return read(path)


# ---- shapes and ranks


@case(ValueError, "shape", "samples")
def x_of_rank_one():
    dense_model().predict(np.zeros(784), verbose=0)


@case(ValueError, "shape", "()")
def x_scalar():
    dense_model().predict(np.float32(3), verbose=0)


@case(ValueError, "(None, 784)", "(4, 28, 28)")
def images_into_a_model_built_for_784():
    dense_model().predict(np.zeros((4, 28, 28), np.float32), verbose=0)


@case(ValueError, "(None, 784)", "(4, 785)")
def one_feature_too_many():
    dense_model().fit(np.zeros((4, 785)), np.zeros(4, int), verbose=0)


@case(ValueError, "Flatten", "(None, 28, 3)")
def images_into_dense_without_flatten():
    # Dense acts on the last axis (Keras 3); a loss on its (None, 28, 3) output is refused
    keras = _keras()
    model = keras.Sequential([keras.layers.Dense(3)])
    model.compile(loss="sparse_categorical_crossentropy")
    model.fit(np.zeros((4, 28, 28)), np.zeros(4, int), verbose=0)


@case(ValueError, "10 labels", "(9,)")
def more_inputs_than_labels():
    x, y = samples(10)
    dense_model().fit(x, y[:9], verbose=0)


@case(ValueError, "labels", "(11,)")
def more_labels_than_inputs():
    x, y = samples(11)
    dense_model().evaluate(x[:10], y, verbose=0)


@case(ValueError, "empty", "at least one")
def empty_inputs_to_fit():
    dense_model().fit(np.zeros((0, 784), np.float32), np.zeros(0, int), verbose=0)


@case(ValueError, "empty", "at least one")
def empty_inputs_to_predict():
    dense_model().predict(np.zeros((0, 784), np.float32), verbose=0)


@case(ValueError, "positive", "(0, 2)")
def zero_features_build_nothing():
    keras = _keras()
    keras.Sequential([keras.layers.Dense(2)]).predict(np.zeros((5, 0)), verbose=0)


@case(ValueError, "validation_data", "(None, 784)")
def validation_data_of_the_wrong_shape():
    x, y = samples(8)
    dense_model().fit(x, y, validation_data=(x[:, :100], y), verbose=0)


# ---- batch sizes and fit arguments


@case(ValueError, "batch_size", "positive", "0")
def batch_size_zero():
    dense_model().fit(*samples(8), batch_size=0, verbose=0)


@case(ValueError, "batch_size", "positive", "-5")
def batch_size_negative():
    dense_model().fit(*samples(8), batch_size=-5, verbose=0)


@case(ValueError, "batch_size", "2.5")
def batch_size_not_an_integer():
    dense_model().predict(samples(8)[0], batch_size=2.5, verbose=0)


@case(None)
def batch_size_larger_than_the_data_is_one_batch():
    keras = _keras()
    x, y = samples(20)
    results = []
    for bs in (20, 10**6, np.int64(2**40)):
        keras.utils.set_random_seed(1)
        model = dense_model()
        history = model.fit(x, y, batch_size=bs, epochs=2, verbose=0)
        results.append((model.get_weights(), history.history["loss"], model.optimizer.iterations))
    for weights, losses, iterations in results[1:]:
        assert iterations == 2, f"expected one batch per epoch, ran {iterations} in 2 epochs"
        assert losses == results[0][1]
        assert all(np.array_equal(a, b) for a, b in zip(weights, results[0][0]))


@case(ValueError, "epochs", "non-negative")
def negative_epochs():
    dense_model().fit(*samples(8), epochs=-1, verbose=0)


@case(ValueError, "validation_split", "[0, 1)")
def validation_split_of_one():
    dense_model().fit(*samples(8), validation_split=1.0, verbose=0)


# ---- dtypes: refused, or converted correctly


@case(TypeError, "dtype", "object", "real numbers")
def inputs_of_objects():
    dense_model(features=3).predict(np.array([[1, "a", None]], dtype=object), verbose=0)


@case(TypeError, "dtype", "<U", "real numbers")
def inputs_of_strings():
    dense_model(features=2).fit(np.array([["1", "2"]]), np.array([0]), verbose=0)


@case(TypeError, "dtype", "complex", "real numbers")
def inputs_of_complex_numbers():
    dense_model(features=2).evaluate(np.ones((3, 2), complex), np.zeros(3, int), verbose=0)


@case(TypeError, "dtype", "datetime64", "real numbers")
def inputs_of_dates():
    dense_model(features=2).predict(np.zeros((3, 2), "M8[s]"), verbose=0)


@case(None)
def float16_inputs_are_converted_exactly():
    x = samples(16)[0].astype(np.float16)
    same_predictions(x, x.astype(np.float32))


@case(None)
def float64_inputs_train_as_their_float32_values():
    keras = _keras()
    x, y = samples(40)
    x64 = x.astype(np.float64) + 1e-12  # rounds back to x in float32
    runs = []
    for xs in (x64, x):
        keras.utils.set_random_seed(3)
        model = dense_model()
        model.fit(xs, y, epochs=2, batch_size=8, verbose=0)
        runs.append(model.get_weights())
    assert all(np.array_equal(a, b) for a, b in zip(*runs))


@case(None)
def integer_inputs_are_converted():
    x = np.random.default_rng(0).integers(0, 256, (16, 784))
    same_predictions(x, x.astype(np.float32))


@case(None)
def boolean_inputs_are_zeros_and_ones():
    x = samples(16)[0] > 0.5
    same_predictions(x, x.astype(np.float32))


@case(None)
def uint8_images_through_flatten():
    keras = _keras()
    x = np.random.default_rng(0).integers(0, 256, (8, 28, 28), dtype=np.uint8)
    model = keras.Sequential([keras.layers.Input(shape=(28, 28)), keras.layers.Flatten(), keras.layers.Dense(10)])
    flat = keras.Sequential([keras.layers.Input(shape=(784,)), keras.layers.Dense(10)])
    flat.set_weights(model.get_weights())
    assert np.array_equal(model.predict(x, verbose=0), flat.predict(x.reshape(8, 784).astype(np.float32), verbose=0))


@case(None)
def non_contiguous_inputs():
    wide = samples(16, features=1568)[0]
    same_predictions(wide[:, ::2], wide[:, ::2].copy())
    same_predictions(np.asfortranarray(wide[:, :784]), wide[:, :784].copy())


@case(None)
def read_only_inputs_and_labels():
    x, y = samples(16)
    x.flags.writeable = False
    y.flags.writeable = False
    before = x.copy()
    model = dense_model()
    model.fit(x, y, verbose=0)
    model.evaluate(x, y, verbose=0)
    same_predictions(x, before)
    assert np.array_equal(x, before)


# ---- NaN and infinity


@case(ValueError, "NaN", "`x`")
def nan_in_training_inputs():
    x, y = samples(8)
    x[3, 100] = np.nan
    dense_model().fit(x, y, verbose=0)


@case(ValueError, "infinity", "`x`")
def inf_in_predict_inputs():
    x = samples(8)[0]
    x[0, 0] = np.inf
    dense_model().predict(x, verbose=0)


@case(ValueError, "infinity", "`x`")
def minus_inf_in_evaluate_inputs():
    x, y = samples(8)
    x[7, 783] = -np.inf
    dense_model().evaluate(x, y, verbose=0)


@case(ValueError, "float32", "3.4e38")
def float64_beyond_float32_range():
    x = samples(4)[0].astype(np.float64)
    x[1, 1] = 1e39
    dense_model().predict(x, verbose=0)


@case(ValueError, "NaN", "validation_data")
def nan_in_validation_inputs():
    x, y = samples(8)
    bad = x.copy()
    bad[0, 0] = np.nan
    dense_model().fit(x, y, validation_data=(bad, y), verbose=0)


# ---- labels


@case(ValueError, "[0, 10)", "-1")
def negative_labels():
    x, y = samples(8)
    y[2] = -1
    dense_model().fit(x, y, verbose=0)


@case(ValueError, "[0, 10)", "10")
def labels_equal_to_units():
    x, y = samples(8)
    y[5] = 10
    dense_model().fit(x, y, verbose=0)


@case(ValueError, "[0, 10)")
def huge_unsigned_labels():
    x, y = samples(8)
    dense_model().evaluate(x, y.astype(np.uint64) + np.uint64(2**63), verbose=0)


@case(ValueError, "integer", "2.5")
def non_integer_float_labels():
    x, y = samples(8)
    dense_model().fit(x, y + 0.5, verbose=0)


@case(ValueError, "NaN", "`y`")
def nan_labels():
    x, y = samples(8)
    y = y.astype(float)
    y[0] = np.nan
    dense_model().fit(x, y, verbose=0)


@case(ValueError, "(8,)", "(8, 3)")
def labels_of_the_wrong_shape_for_the_loss():
    x, _ = samples(8)
    dense_model().fit(x, np.zeros((8, 3), int), verbose=0)


@case(ValueError, "one-hot", "categorical_crossentropy")
def one_hot_labels_with_a_sparse_loss():
    x, y = samples(8)
    dense_model().fit(x, np.eye(10)[y], verbose=0)


@case(ValueError, "(8, 10)", "sparse_categorical_crossentropy")
def integer_labels_with_a_categorical_loss():
    x, y = samples(8)
    dense_model(loss="categorical_crossentropy").fit(x, y, verbose=0)


@case(ValueError, "(8, 1)", "(8, 2)")
def binary_labels_of_the_wrong_width():
    x, _ = samples(8)
    dense_model(units=1, activation="sigmoid", loss="binary_crossentropy").fit(x, np.zeros((8, 2)), verbose=0)


@case(TypeError, "dtype", "numeric labels")
def string_labels():
    x, _ = samples(4)
    dense_model().fit(x, np.array(["cat", "dog", "cat", "dog"]), verbose=0)


@case(ValueError, "4 labels", "()")
def scalar_labels():
    dense_model().fit(samples(4)[0], np.int64(1), verbose=0)


@case(None)
def boolean_and_float_integer_labels_are_accepted():
    x, y = samples(8, classes=2)
    dense_model(units=2).fit(x, y.astype(bool), verbose=0)
    dense_model(units=2).fit(x, y.astype(np.float64), verbose=0)


# ---- names and hyper-parameters


@case(ValueError, "optimizer", "adamwr", "rmsprop")
def unknown_optimizer():
    dense_model(compile=False).compile(optimizer="adamwr", loss=SCCE)


@case(ValueError, "loss", "dice", "mean_squared_error")
def unknown_loss():
    dense_model(compile=False).compile(loss="dice")


@case(ValueError, "activation", "celu", "relu")
def unknown_activation():
    _keras().layers.Dense(3, activation="celu")


@case(ValueError, "metric", "auroc", "accuracy")
def unknown_metric():
    dense_model(compile=False).compile(loss=SCCE, metrics=["auroc"])


@case(ValueError, "initializer", "kaiming_normal", "glorot_uniform")
def unknown_initializer():
    _keras().layers.Dense(3, kernel_initializer="kaiming_normal")  # PyTorch's name; Keras' is he_normal


@case(ValueError, "learning_rate", "non-negative", "-0.1")
def negative_learning_rate():
    _keras().optimizers.Adam(learning_rate=-0.1)


@case(ValueError, "learning_rate", "nan")
def nan_learning_rate():
    _keras().optimizers.SGD(learning_rate=float("nan"))


@case(ValueError, "learning_rate", "float32")
def learning_rate_beyond_float32():
    _keras().optimizers.SGD(learning_rate=1e39)


@case(ValueError, "beta_1", "[0, 1]")
def adam_beta_out_of_range():
    _keras().optimizers.Adam(beta_1=1.5)


@case(ValueError, "units", "positive", "units=0")
def zero_units():
    _keras().layers.Dense(0)


@case(ValueError, "units", "positive", "2.5")
def fractional_units():
    _keras().layers.Dense(2.5)


@case(ValueError, "rate", "[0, 1)")
def dropout_of_one():
    _keras().layers.Dropout(1.0)


@case(ValueError, "input_shape", "positive")
def input_shape_with_a_zero():
    _keras().layers.Dense(3, input_shape=(0,))


@case(ValueError, "n", "integer")
def thread_count_as_a_string():
    import cdnn

    cdnn.set_num_threads("2")


@case(ValueError, "n", "2147483648")
def thread_count_beyond_int():
    import cdnn

    cdnn.set_num_threads(2**31)


@case(None)
def absurd_thread_count_is_refused_or_capped():
    import cdnn

    try:
        cdnn.set_num_threads(100000)
    except ValueError:
        return  # refused up front: fine
    try:
        dense_model().fit(*samples(8), verbose=0)
    finally:
        cdnn.set_num_threads(1)


# ---- layers and optimizers used directly (the other doors into the C core)


@case(ValueError, "value 5", "(2, 4)")
def dense_layer_called_on_the_wrong_width():
    layer = _keras().layers.Dense(3)
    layer(np.zeros((2, 5)))
    layer(np.zeros((2, 4)))


@case(None)
def dense_layer_called_on_images():
    # Keras 3: Dense applies to the last axis of N-D inputs
    assert _keras().layers.Dense(3)(np.zeros((2, 4, 4))).shape == (2, 4, 3)


def two_input_two_output_model():
    keras = _keras()
    a, b = keras.Input((3,), name="a"), keras.Input((4,), name="b")
    h = keras.layers.concatenate([a, keras.layers.BatchNormalization()(b)])
    model = keras.Model(
        [a, b], [keras.layers.Dense(1, name="price")(h), keras.layers.Dense(3, activation="softmax", name="kind")(h)]
    )
    model.compile("sgd", loss=["mse", SCCE], metrics=[None, ["accuracy"]])
    return model


@case(ValueError, "'b'", "['a', 'b']")
def graph_fit_with_a_missing_dict_input():
    two_input_two_output_model().fit({"a": np.zeros((4, 3))}, [np.zeros(4), np.zeros(4, int)], verbose=0)


@case(ValueError, "2 inputs", "list of 3")
def graph_fit_with_too_many_inputs():
    two_input_two_output_model().fit([np.zeros((4, 3))] * 3, [np.zeros(4), np.zeros(4, int)], verbose=0)


@case(ValueError, "same number of samples", "[4, 5]")
def graph_inputs_of_different_lengths():
    two_input_two_output_model().predict([np.zeros((4, 3)), np.zeros((5, 4))], verbose=0)


@case(ValueError, "'nope'", "output names")
def graph_loss_for_an_unknown_output():
    two_input_two_output_model().compile("sgd", loss={"nope": "mse"})


@case(ValueError, "[0, 3)", "y['kind']")
def graph_labels_out_of_range():
    two_input_two_output_model().fit([np.zeros((4, 3)), np.zeros((4, 4))], [np.zeros(4), np.full(4, 3)], verbose=0)


@case(ValueError, "NaN", "x[1]")
def graph_nan_in_the_second_input():
    b = np.zeros((4, 4))
    b[2, 1] = np.nan
    two_input_two_output_model().predict([np.zeros((4, 3)), b], verbose=0)


@case(ValueError, "Graph disconnected", "'b'")
def graph_disconnected():
    keras = _keras()
    a, b = keras.Input((3,), name="a"), keras.Input((3,), name="b")
    keras.Model(a, keras.layers.add([a, b]))


@case(ValueError, "(None, 3)", "(None, 4)", "'add'")
def graph_merge_of_different_shapes():
    keras = _keras()
    keras.layers.Add(name="add")([keras.Input((3,)), keras.Input((4,))])


@case(TypeError, "np.exp", "in call()")
def subclassed_call_with_numpy():
    keras = _keras()

    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = keras.layers.Dense(2)

        def call(self, x):
            return self.dense(np.exp(x))

    Net().predict(np.zeros((2, 3)), verbose=0)


@case(None)
def graph_with_a_shared_trainable_layer():
    keras = _keras()
    a = keras.Input((3,))
    shared = keras.layers.Dense(3)
    model = keras.Model(a, shared(shared(a)))
    model.compile("sgd", "mse")
    model.fit(np.zeros((4, 3)), np.zeros((4, 3)), verbose=0)


@case(None)
def graph_on_one_sample_of_odd_width():
    keras = _keras()
    a = keras.Input((7,))
    x = keras.layers.LayerNormalization()(keras.layers.Dense(33)(a))
    model = keras.Model(a, keras.layers.Dense(1)(keras.layers.Dropout(0.5)(x)))
    model.compile("adam", "mse")
    model.fit(np.ones((1, 7)), np.ones(1), verbose=0)
    assert model.predict(np.ones((1, 7)), verbose=0).shape == (1, 1)


@case(ValueError, "adapt", "NaN")
def normalization_adapt_on_nan():
    keras = _keras()
    keras.layers.Normalization().adapt(np.array([[1.0], [np.nan]]))


@case(None)
def dense_layer_called_on_no_rows():
    assert _keras().layers.Dense(3)(np.zeros((0, 5))).shape == (0, 3)


@case(ValueError, "`g`", "(3, 4)", "(4, 3)")
def apply_gradients_of_the_wrong_shape():
    _keras().optimizers.Adam().apply_gradients([(np.zeros((4, 3)), np.zeros((3, 4), np.float32))])


@case(TypeError, "`w`", "float32", "float64")
def apply_gradients_to_a_float64_variable():
    _keras().optimizers.Adam().apply_gradients([(np.zeros((3, 4)), np.zeros((3, 4)))])


@case(ValueError, "`w`", "C-contiguous")
def apply_gradients_to_a_strided_variable():
    _keras().optimizers.RMSprop().apply_gradients([(np.zeros((3, 2)), np.zeros((3, 4), np.float32)[:, ::2])])


@case(ValueError, "`w`", "writable")
def apply_gradients_to_a_read_only_variable():
    v = np.zeros((3, 4), np.float32)
    v.flags.writeable = False
    _keras().optimizers.SGD().apply_gradients([(np.zeros((3, 4)), v)])


@case(ValueError, "shape", "3.5")
def fractional_input_shape():
    """Once silently truncated to (3,); Keras refuses a non-integer dimension."""
    _keras().layers.Input(shape=(3.5,))


# ---- order of calls


@case(ValueError, "compile()", "fit()")
def fit_before_compile():
    dense_model(compile=False).fit(*samples(8), verbose=0)


@case(ValueError, "compile()", "evaluate()")
def evaluate_before_compile():
    dense_model(compile=False).evaluate(*samples(8), verbose=0)


@case(ValueError, "loss", "compile()")
def fit_after_compile_without_a_loss():
    model = dense_model(compile=False)
    model.compile(optimizer="adam")
    model.fit(*samples(8), verbose=0)


@case(ValueError, "no layers", "Dense")
def predict_with_no_layers():
    _keras().Sequential().predict(samples(2)[0], verbose=0)


@case(None)
def unbuilt_model_is_built_by_predict_and_summarised():
    keras = _keras()
    model = keras.Sequential([keras.layers.Dense(4, activation="relu"), keras.layers.Dense(2)])
    lines = []
    model.summary(print_fn=lines.append)  # before building: no shapes yet
    assert "Total params: 0" in "\n".join(lines)
    out = model.predict(np.ones((3, 5)), verbose=0)
    assert out.shape == (3, 2) and np.isfinite(out).all()
    lines.clear()
    model.summary(print_fn=lines.append)
    text = "\n".join(lines)
    assert "(None, 4)" in text and "(None, 2)" in text and "Total params: 34" in text, text


@case(ValueError, "not been built", "save")
def save_an_unbuilt_model():
    keras = _keras()
    keras.Sequential([keras.layers.Dense(2)]).save(TMP / "unbuilt.cdnn")


# ---- set_weights


@case(ValueError, "set_weights", "build")
def set_weights_before_building():
    keras = _keras()
    keras.Sequential([keras.layers.Dense(2)]).set_weights([np.zeros((3, 2)), np.zeros(2)])


@case(ValueError, "2 arrays", "received 1")
def set_weights_with_too_few_arrays():
    dense_model().set_weights([np.zeros((784, 10))])


@case(ValueError, "weight 0", "(10, 784)", "(784, 10)")
def set_weights_with_a_transposed_kernel():
    dense_model().set_weights([np.zeros((10, 784)), np.zeros(10)])


@case(TypeError, "weight 1", "object", "real numbers")
def set_weights_of_objects():
    dense_model().set_weights([np.zeros((784, 10)), np.array([None] * 10)])


@case(ValueError, "weight 0", "NaN")
def set_weights_with_nan():
    dense_model().set_weights([np.full((784, 10), np.nan), np.zeros(10)])


@case(TypeError, "set_weights", "list")
def set_weights_with_none():
    dense_model().set_weights(None)


@case(None)
def set_weights_from_read_only_and_broadcast_arrays():
    model = dense_model(features=3, units=2)
    kernel = np.arange(6, dtype=np.float64).reshape(3, 2)
    kernel.flags.writeable = False
    bias = np.broadcast_to(np.float32(0.5), (2,))  # read-only, zero strides
    model.set_weights([kernel, bias])
    got = model.get_weights()
    assert np.array_equal(got[0], kernel.astype(np.float32)) and np.array_equal(got[1], [0.5, 0.5])
    assert got[0].dtype == np.float32 and got[0].flags.writeable


# ---- sizes beyond the C core's 32-bit dimensions: refused before anything is allocated


@case(ValueError, "units", limit=True, seconds=2)
def dense_of_2_31_units():
    keras = _keras()
    keras.Sequential([keras.layers.Input(shape=(1,)), keras.layers.Dense(2**31)])


@case(ValueError, "2147483648", limit=True, seconds=2)
def input_of_2_31_features():
    keras = _keras()
    keras.Sequential([keras.layers.Input(shape=(2**31,)), keras.layers.Dense(2)])


@case(ValueError, "4294967296", limit=True, seconds=2)
def flatten_to_2_32_features():
    keras = _keras()
    keras.Sequential([keras.layers.Input(shape=(2**16, 2**16)), keras.layers.Flatten(), keras.layers.Dense(2)])


@case(ValueError, "2147483648", limit=True, seconds=2)
def broadcast_input_of_2_31_features_into_an_unbuilt_model():
    keras = _keras()
    x = np.broadcast_to(np.float32(0), (1, 2**31))
    keras.Sequential([keras.layers.Dense(2)]).predict(x, verbose=0)


@case(ValueError, "(None, 784)", "2147483648", limit=True, seconds=2)
def broadcast_input_of_2_31_features_into_a_built_model():
    dense_model().predict(np.broadcast_to(np.float32(0), (1, 2**31)), verbose=0)


@case(MemoryError, "allocate", limit=True, seconds=2)
def broadcast_input_of_2_31_rows():
    # 2**31 rows are fine for the core (64-bit row counts) but their float32 copy is 6 TiB: numpy refuses it
    dense_model().predict(np.broadcast_to(np.float32(0), (2**31, 784)), verbose=0)


@case(ValueError, "2147483648", limit=True, seconds=2)
def broadcast_labels_of_2_31_rows():
    dense_model(features=3).fit(np.ones((2, 3)), np.broadcast_to(np.int64(0), (2**31,)), verbose=0)


# ---- model files


def _bad_model(name, change):
    meta, arrays = model_file_parts(saved_model_file())
    meta, arrays = change(meta, arrays)
    return load(write_model_file(TMP / name, meta, arrays))


@case(ModelFileError, "truncated")
def truncated_model_file():
    data = saved_model_file().read_bytes()
    (TMP / "cut.cdnn").write_bytes(data[: len(data) // 2])
    load(TMP / "cut.cdnn")


@case(ModelFileError, "architecture", "layer list")
def model_file_with_a_wrong_architecture():
    _bad_model("arch.cdnn", lambda m, a: ({**m, "config": {"name": "x", "layers": "Dense"}}, a))


@case(ModelFileError, "weight array 0", "(5, 3)", "expected float32 (6, 3)")
def model_file_with_arrays_of_the_wrong_shape():
    _bad_model("shape.cdnn", lambda m, a: (m, {**a, "weight_0": np.zeros((5, 3), np.float32)}))


class Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


@case(ModelFileError, "pickle")
def model_file_with_a_pickled_object():
    marker = str(TMP / "pwned")
    evil = np.empty(1, dtype=object)
    evil[0] = Payload(marker)
    try:
        _bad_model("evil.cdnn", lambda m, a: (m, {**a, "weight_1": evil}))
    finally:
        assert not os.path.exists(marker), "loading the file ran code from it"


@case(ModelFileError, "not a cdnn model file")
def model_file_that_is_not_a_zip():
    (TMP / "text.cdnn").write_bytes(b"just some text, not a model\n" * 10)
    load(TMP / "text.cdnn")


@case(ModelFileError, "not a cdnn model file")
def model_file_that_is_a_pickle():
    marker = str(TMP / "pwned2")
    (TMP / "p.cdnn").write_bytes(pickle.dumps(Payload(marker)))
    try:
        load(TMP / "p.cdnn")
    finally:
        assert not os.path.exists(marker)


@case(ModelFileError, "not a cdnn model file")
def model_file_that_is_a_directory():
    (TMP / "dir.cdnn").mkdir(exist_ok=True)
    load(TMP / "dir.cdnn")


@case(FileNotFoundError, "nowhere.cdnn")
def model_file_that_does_not_exist():
    load(TMP / "nowhere.cdnn")


@case(ModelFileError, "declares", "(8589934592,)", seconds=2)
def model_file_whose_array_header_promises_32_gib():
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "<f4", "fortran_order": False, "shape": (2**33,)})
    meta, arrays = model_file_parts(saved_model_file())
    del arrays["weight_0"]  # a member the architecture names: members it does not name are never read
    write_model_file(TMP / "bomb.cdnn", meta, arrays)
    with zipfile.ZipFile(TMP / "bomb.cdnn", "a") as z:
        z.writestr("weight_0.npy", buf.getvalue() + bytes(64))
    load(TMP / "bomb.cdnn")


@case(ModelFileError, "architecture record", "corrupted")
def model_file_with_deeply_nested_json():
    meta, arrays = model_file_parts(saved_model_file())
    write_model_file(TMP / "deep.cdnn", b"[" * 100000 + b"]" * 100000, arrays)
    load(TMP / "deep.cdnn")


@case(ModelFileError, "iteration", "2**62")
def model_file_with_an_iteration_count_beyond_64_bits():
    _bad_model("iters.cdnn", lambda m, a: ({**m, "compile": {**m["compile"], "iterations": 2**70}}, a))


@case(ModelFileError, "units", limit=True, seconds=2)
def model_file_with_a_dense_layer_of_2_31_units():
    def change(meta, arrays):
        meta = json.loads(json.dumps(meta))
        meta["config"]["layers"][0]["config"]["units"] = 2**31
        return meta, arrays

    _bad_model("huge.cdnn", change)


@case(ModelFileError, "input shape")
def weights_file_without_a_usable_input_shape():
    keras = _keras()
    meta, arrays = model_file_parts(saved_model_file())
    write_model_file(TMP / "w.cdnn", {**meta, "config": {**meta["config"], "input_shape": [[6]]}}, arrays)
    keras.Sequential([keras.layers.Dense(3)]).load_weights(TMP / "w.cdnn")


# ---- IDX files


@case(IdxError, "magic", "0x01000803")
def idx_with_a_wrong_magic_number():
    read_idx(idx_file(bytes([1, 0, 8, 3]) + struct.pack(">3I", 1, 2, 2) + bytes(4)))


@case(IdxError, "type code", "0x0D", "unsigned byte")
def idx_of_float32_elements():
    read_idx(idx_file(idx_header(2, 2, type_code=0x0D) + bytes(16)))


@case(IdxError, "truncated", "(10, 28, 28)", "7844")
def idx_shorter_than_its_counts():
    read_idx(idx_file(idx_header(10, 28, 28) + bytes(7828)))


@case(IdxError, "trailing", "(3,)")
def idx_longer_than_its_counts():
    read_idx(idx_file(idx_header(3) + bytes(9)))


@case(IdxError, "truncated", "header")
def idx_cut_inside_its_header():
    read_idx(idx_file(idx_header(60000, 28, 28)[:9]))


@case(IdxError, "0 dimensions")
def idx_of_zero_dimensions():
    read_idx(idx_file(bytes([0, 0, 8, 0])))


@case(IdxError, "truncated", "(60000, 28, 28)")
def gzip_idx_shorter_than_its_counts():
    read_idx(idx_file(idx_header(60000, 28, 28) + bytes(1000), "t.gz", compress=True))


@case(IdxError, "truncated", "2147483648", seconds=2)
def gzip_idx_whose_header_promises_2_gib():
    # small file, huge promise: refused as truncated without allocating the 2 GiB
    read_idx(idx_file(idx_header(2**15, 2**16) + bytes(100), "bomb.gz", compress=True))


@case(IdxError, "implausible")
def gzip_idx_whose_header_promises_2_to_the_96_bytes():
    read_idx(idx_file(idx_header(2**32 - 1, 2**32 - 1, 2**32 - 1) + bytes(10), "huge.gz", compress=True))


@case(IdxError, "implausible", "(0, 16777216, 16777216, 16777216)")
def idx_of_no_element_whose_other_dimensions_overflow():
    # 16 bytes, no element: NumPy would refuse the shape itself ("array is too big"; found by fuzzing)
    read_idx(idx_file(idx_header(0, 2**24, 2**24, 2**24)))


@case(None)
def idx_of_no_image_is_an_empty_array():
    array, _ = read_idx(idx_file(idx_header(0, 28, 28)))
    assert array.shape == (0, 28, 28) and array.dtype == np.uint8


@case(IdxError, "gzip")
def gzip_idx_cut_in_the_middle():
    data = gzip.compress(idx_header(100, 10) + bytes(range(256)) * 4)
    (TMP / "cut.gz").write_bytes(data[: len(data) // 2])
    read_idx(TMP / "cut.gz")


# ---- issue 22: reads that never end, unbounded loads, refused arguments Keras accepts


@case(ModelFileError, "/dev/zero", "not a regular file", limit=True, seconds=2)
def model_file_that_is_dev_zero():
    load("/dev/zero")


@case(ModelFileError, "/dev/urandom", "not a regular file", limit=True, seconds=2)
def model_file_that_is_dev_urandom():
    load("/dev/urandom")


@case(ModelFileError, "named pipe", "not a regular file", seconds=2)
def model_file_that_is_a_named_pipe_nobody_writes():
    os.mkfifo(TMP / "pipe.keras")
    load(TMP / "pipe.keras")  # used to block forever in open()


@case(ModelFileError, "not a regular file", seconds=2)
def weights_loaded_from_a_named_pipe():
    os.mkfifo(TMP / "pipe.weights.h5")
    dense_model(features=6, units=3).load_weights(TMP / "pipe.weights.h5")


@case(ModelFileError, "do not match", limit=True, seconds=2)
def small_model_file_whose_architecture_declares_dense_of_10_to_the_8_units():
    # a 2.5 KB file: the architecture says Dense(10**8), the weight arrays are the small ones it was saved
    # with; building the layer first drew 6e8 initial weights (4.8 GB) before the shapes were compared
    meta, arrays = model_file_parts(saved_model_file())
    meta["config"]["layers"][0]["config"]["units"] = 10**8
    path = write_model_file(TMP / "huge.cdnn", meta, arrays)
    assert path.stat().st_size < 4096
    load(path)


@case(ModelFileError, "do not match", limit=True, seconds=2)
def weights_file_whose_architecture_declares_dense_of_10_to_the_8_units():
    meta, arrays = model_file_parts(saved_model_file())
    meta["config"]["layers"][0]["config"]["units"] = 10**8
    path = write_model_file(TMP / "huge-weights.cdnn", meta, arrays)
    keras = _keras()
    model = keras.Sequential([keras.layers.Dense(10**8 // 4)])  # unbuilt: built from the file's input shape
    model.load_weights(path)


@case(ModelFileError, "do not match", limit=True, seconds=2)
def keras_archive_whose_config_declares_dense_of_10_to_the_8_units():
    dense_model(features=6, units=3).save(TMP / "small.keras")
    with zipfile.ZipFile(TMP / "small.keras") as z:
        parts = {name: z.read(name) for name in z.namelist()}
    config = json.loads(parts["config.json"])
    dense = next(l for l in config["config"]["layers"] if l["class_name"] == "Dense")
    dense["config"]["units"] = 10**8
    parts["config.json"] = json.dumps(config).encode()
    with zipfile.ZipFile(TMP / "huge.keras", "w") as z:
        for name, data in parts.items():
            z.writestr(name, data)
    load(TMP / "huge.keras")


@case(ModelFileError, "members", "overlap in the archive", seconds=2)
def model_file_whose_members_overlap():
    # weight_0's central-directory entry claims compressed bytes that run over weight_1's local header:
    # the shape of overlap bombs (many entries inflating one blob), refused before anything is inflated
    path = saved_model_file()
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as z:
        w0 = z.getinfo("weight_0.npy")
    at = 0
    while True:  # patch weight_0's central entry: compressed and uncompressed sizes
        at = data.find(b"PK\x01\x02", at)
        name_len = struct.unpack_from("<H", data, at + 28)[0]
        if data[at + 46 : at + 46 + name_len] == b"weight_0.npy":
            break
        at += 4
    grow = 10  # weight_0's data ends where weight_1's local header starts: now it covers 10 bytes of it
    struct.pack_into("<LL", data, at + 20, w0.compress_size + grow, w0.file_size + grow)
    (TMP / "crafted.cdnn").write_bytes(bytes(data))
    load(TMP / "crafted.cdnn")


@case(None)
def model_file_with_an_unnamed_128_mib_deflated_member_is_loaded_without_reading_it():
    import tracemalloc

    path = saved_model_file()
    with zipfile.ZipFile(path, "a", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as z:
        with z.open("junk.npy", "w", force_zip64=True) as f:
            header = io.BytesIO()
            np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False, "shape": (32 << 20,)})
            f.write(header.getvalue())
            block = bytes(16 << 20)
            for _ in range(8):
                f.write(block)
    assert path.stat().st_size < 1 << 20
    tracemalloc.start()
    load(path)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 8 << 20, f"loading a {path.stat().st_size}-byte file took {peak} bytes"


@case(None)
def model_file_written_on_a_big_endian_machine_loads():
    model = dense_model(features=6, units=3)
    model.fit(*samples(12, 6, 3), epochs=2, verbose=0)
    model.save(TMP / "little.cdnn")
    meta, arrays = model_file_parts(TMP / "little.cdnn")
    big = {k: v.astype(v.dtype.newbyteorder(">")) for k, v in arrays.items()}
    assert all(v.dtype.byteorder == ">" for v in big.values())
    back = load(write_model_file(TMP / "big.cdnn", meta, big))
    for a, b in zip(back.get_weights(), model.get_weights()):
        assert a.dtype == np.float32 and a.dtype.isnative and np.array_equal(a, b)
    assert back.optimizer.iterations == model.optimizer.iterations
    x = samples(4, 6, 3)[0]
    assert np.array_equal(back.predict(x, verbose=0), model.predict(x, verbose=0))


@case(None)
def model_file_with_nan_weights_loads_as_keras_does():
    import warnings

    model = dense_model(features=6, units=3)
    model.fit(*samples(12, 6, 3), verbose=0)
    model.layers[0].kernel[0, 0] = np.nan
    model.layers[0].bias[1] = np.inf
    model.save(TMP / "nan.cdnn")
    model.save_weights(TMP / "nan-weights.cdnn")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        back = load(TMP / "nan.cdnn")
        other = dense_model(features=6, units=3)
        other.load_weights(TMP / "nan-weights.cdnn")
    assert sum("NaN" in str(w.message) for w in caught) == 2
    for m in (back, other):
        for a, b in zip(m.get_weights(), model.get_weights()):
            assert np.array_equal(a, b, equal_nan=True)


@case(None)
def load_model_from_a_bytes_path():
    back = load(os.fsencode(saved_model_file()))
    assert back.built


@case(None)
def save_and_load_a_246_byte_file_name():
    name = "m" * 240 + ".keras"
    model = dense_model(features=6, units=3)
    model.save(TMP / name)
    model.save(TMP / name)  # over the first
    assert load(TMP / name).built and sorted(p.name for p in TMP.iterdir() if p.name.startswith(".")) == []


@case(ValueError, "filepath", "empty")
def save_to_an_empty_path():
    dense_model(features=6, units=3).save("")


@case(ValueError, "filepath", "regular file", "named pipe")
def save_over_a_named_pipe():
    os.mkfifo(TMP / "target-pipe.keras")
    try:
        dense_model(features=6, units=3).save(TMP / "target-pipe.keras")
    finally:
        assert (TMP / "target-pipe.keras").is_fifo()


@case(ValueError, "filepath", "regular file", "character device")
def save_through_a_symlink_to_dev_null():
    (TMP / "null.keras").symlink_to("/dev/null")
    try:
        dense_model(features=6, units=3).save(TMP / "null.keras")
    finally:
        assert (TMP / "null.keras").is_symlink() and Path("/dev/null").is_char_device()


@case(None)
def validation_split_of_a_numpy_float32():
    history = dense_model(features=6, units=3).fit(*samples(20, 6, 3), validation_split=np.float32(0.2), verbose=0)
    assert "val_loss" in history.history


@case(None)
def validation_data_with_no_sample_weights():
    x, y = samples(20, 6, 3)
    history = dense_model(features=6, units=3).fit(x, y, validation_data=(x[:5], y[:5], None), verbose=0)
    assert "val_loss" in history.history


@case(None)
def thread_count_as_a_numpy_integer():
    import cdnn

    cdnn.set_num_threads(np.int64(1))
    assert cdnn.get_num_threads() == 1


@case(IdxError, "named pipe", "not a regular file", seconds=2)
def idx_file_that_is_a_named_pipe():
    os.mkfifo(TMP / "pipe.idx")
    read_idx(TMP / "pipe.idx")  # used to block forever


@case(ValueError, "`n`", "-18446744073709551616")
def thread_count_of_minus_2_to_the_64():
    import cdnn

    cdnn.set_num_threads(-(2**64))


# ---- two cases that test the harness itself, not cdnn (not part of the sweep)


@case(None)
def harness_case_that_crashes():
    os.kill(os.getpid(), signal.SIGKILL)  # not SIGSEGV: ASan would report that as a finding


@case(ValueError, "units")
def harness_case_after_a_crash():
    _keras().layers.Dense(0)


HARNESS = {name: CASES.pop(name) for name in ("harness_case_that_crashes", "harness_case_after_a_crash")}


# ============================================================================ the child process


def child_main(names: list[str]) -> None:
    """Run `names` in order, printing a start marker before each and a JSON result after it."""
    global TMP
    import resource

    import cdnn

    if not UNDER_ASAN:
        resource.setrlimit(resource.RLIMIT_AS, (CHILD_ADDRESS_SPACE, CHILD_ADDRESS_SPACE))
    cdnn.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        TMP = Path(tmp)
        for name in names:
            c = CASES.get(name) or HARNESS[name]
            print(f"@@START {name}", flush=True)
            result = {"case": name, "exc": None, "mro": [], "msg": "", "skipped": False}
            if c.limit and UNDER_ASAN:
                result["skipped"] = True
                print("@@END " + json.dumps(result), flush=True)
                continue
            cdnn.utils.clear_session()
            cdnn.utils.set_random_seed(0)
            t0 = time.perf_counter()
            try:
                c.fn()
            except BaseException as exc:  # noqa: BLE001 - the parent judges it
                result["exc"] = type(exc).__name__
                result["mro"] = [k.__name__ for k in type(exc).__mro__]
                result["msg"] = f"{exc}"[:2000]
                if isinstance(exc, AssertionError):
                    result["msg"] += "\n" + traceback.format_exc()[-2000:]
            result["seconds"] = time.perf_counter() - t0
            print("@@END " + json.dumps(result), flush=True)


def run_in_children(names: list[str], timeout: float = 120.0) -> dict:
    """Run the cases, restarting a child after each crash or hang; returns name -> result."""
    results = {}
    todo = list(names)
    while todo:
        cmd = [sys.executable, str(Path(__file__).resolve()), "--cases", *todo]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=child_env(), cwd=REPO)
            out, err, status = proc.stdout, proc.stderr, proc.returncode
        except subprocess.TimeoutExpired as exc:
            out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
            err = exc.stderr.decode() if isinstance(exc.stderr, bytes) else (exc.stderr or "")
            status = "hang"
        started = None
        for line in out.splitlines():
            if line.startswith("@@START "):
                started = line[8:]
            elif line.startswith("@@END "):
                r = json.loads(line[6:])
                r["status"] = "done"
                results[r["case"]] = r
                started = None
        if started is not None:  # died (or hung) inside this case
            results[started] = {
                "case": started,
                "status": "crashed" if status != "hang" else "hung",
                "returncode": status,
                "stderr": err[-6000:],
            }
        left = [n for n in todo if n not in results]
        if len(left) == len(todo):  # no progress: never loop forever
            for n in left:
                results[n] = {"case": n, "status": "not run", "returncode": status, "stderr": err[-6000:]}
            left = []
        todo = left
    return results


@pytest.fixture(scope="module")
def sweep():
    """All cases, in two children running side by side; name -> result."""
    names = list(CASES)
    halves = [names[0::2], names[1::2]]
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        parts = list(pool.map(run_in_children, halves))
    return {k: v for part in parts for k, v in part.items()}


def _case_params():
    for name, c in CASES.items():
        marks = [pytest.mark.xfail(strict=True, reason=c.xfail)] if c.xfail else []
        yield pytest.param(name, marks=marks, id=name)


def test_the_table_is_large_enough():
    assert len(CASES) >= 40
    assert sum(c.expect is None for c in CASES.values()) >= 8, "conversions must be checked too"


@pytest.mark.parametrize("name", list(_case_params()))
def test_bad_input_gives_a_clear_exception_never_a_crash(sweep, name):
    c, r = CASES[name], sweep[name]
    assert r["status"] == "done", f"case {name} {r['status']} (exit {r.get('returncode')}):\n{r.get('stderr')}"
    if r["skipped"]:
        pytest.skip("needs an address-space limit, which ASan cannot run under")
    if c.expect is None:
        assert r["exc"] is None, f"{r['exc']}: {r['msg']}"
    else:
        assert c.expect.__name__ in r["mro"], f"expected {c.expect.__name__}, got {r['exc']}: {r['msg']}"
        missing = [k for k in c.keywords if k.lower() not in r["msg"].lower()]
        assert not missing, f"message lacks {missing}: {r['msg']!r}"
    assert r["seconds"] < c.seconds, f"took {r['seconds']:.2f} s"


def test_a_crash_is_pinned_on_its_case():
    """The harness itself: a case that kills its process is reported as such, and the next case still runs."""
    results = run_in_children(["harness_case_that_crashes", "harness_case_after_a_crash"], timeout=60)
    crashed, after = results["harness_case_that_crashes"], results["harness_case_after_a_crash"]
    assert crashed["status"] == "crashed" and crashed["returncode"] == -signal.SIGKILL, crashed
    assert after["status"] == "done" and after["exc"] == "ValueError"


# ============================================================================ helpers for the other children


def run_child(name: str, *args: str, timeout: float = 120.0, env: dict | None = None) -> dict:
    """Run ``child_<name>(*args)`` from this file in a new interpreter; return the JSON it printed last."""
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--run", name, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env or child_env(),
        cwd=REPO,
    )
    assert proc.returncode == 0, (
        f"child {name} exited with {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    )
    return json.loads([line for line in proc.stdout.splitlines() if line.startswith("@@JSON ")][-1][7:])


def start_child(name: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), "--run", name, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=child_env(),
        cwd=REPO,
    )


def report(obj) -> None:
    print("@@JSON " + json.dumps(obj), flush=True)


def wait_for_line(proc: subprocess.Popen, prefix: str, timeout: float = 60.0) -> str:
    """Read the child's stdout until a line starting with `prefix` (fails on EOF or timeout)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            raise AssertionError(
                f"child ended (status {proc.wait()}) before printing {prefix!r}:\n{proc.stderr.read()[-4000:]}"
            )
        if line.startswith(prefix):
            return line
    raise AssertionError(f"no {prefix!r} from the child within {timeout} s")


def classifier(features, hidden, classes, optimizer="adam", loss=SCCE, dropout=0.0, hidden_activation="relu"):
    keras = _keras()
    layers = [keras.layers.Input(shape=(features,)), keras.layers.Dense(hidden, activation=hidden_activation)]
    if dropout:
        layers.append(keras.layers.Dropout(dropout))
    layers.append(keras.layers.Dense(classes, activation="softmax"))
    model = keras.Sequential(layers)
    model.compile(optimizer=optimizer, loss=loss, metrics=["accuracy"])
    return model


def weights_equal(a, b) -> bool:
    return len(a) == len(b) and all(u.dtype == v.dtype and np.array_equal(u, v) for u, v in zip(a, b))


# ============================================================================ threads


def _thread_jobs():
    """Two different models and data sets (name, builder, x, y)."""
    keras = _keras()
    rng = np.random.default_rng(7)
    xa, ya = rng.random((6000, 196), dtype=np.float32), rng.integers(0, 10, 6000)
    xb = rng.normal(size=(6000, 50)).astype(np.float32)
    yb = np.eye(3, dtype=np.float32)[rng.integers(0, 3, 6000)]
    return [
        ("a", lambda: classifier(196, 128, 10, optimizer="adam"), xa, ya),
        (
            "b",
            lambda: classifier(
                50,
                64,
                3,
                optimizer=keras.optimizers.SGD(0.05, momentum=0.9),
                loss="categorical_crossentropy",
                hidden_activation="tanh",
            ),
            xb,
            yb,
        ),
    ]


@pytest.mark.parametrize("core_threads", [1, 2], ids=lambda n: f"core{n}")
def test_two_models_trained_at_once_from_two_threads_match_their_solo_runs(core_threads):
    """Each model is trained alone, then both at once from two Python threads: bit-identical weights and history.

    ``shuffle=False`` and no dropout: the order of draws from cdnn's global random generator (shuffling,
    dropout keys) would otherwise depend on how the two threads interleave.
    """
    import cdnn

    cdnn.set_num_threads(core_threads)
    try:
        jobs = _thread_jobs()
        fit_args = dict(epochs=6, batch_size=32, shuffle=False, verbose=0)
        solo, start = {}, {}
        for name, build, x, y in jobs:
            cdnn.utils.set_random_seed(11)
            model = build()
            start[name] = model.get_weights()
            history = model.fit(x, y, **fit_args)
            solo[name] = (model.get_weights(), history.history)

        models = {}
        for name, build, x, y in jobs:
            models[name] = build()
            models[name].set_weights(start[name])
        barrier, together, errors, spans = threading.Barrier(2), {}, [], {}

        def train(name, x, y):
            try:
                barrier.wait()
                t0 = time.perf_counter()
                history = models[name].fit(x, y, **fit_args)
                spans[name] = (t0, time.perf_counter())
                together[name] = (models[name].get_weights(), history.history)
            except BaseException as exc:  # noqa: BLE001
                errors.append(exc)

        threads = [threading.Thread(target=train, args=(name, x, y)) for name, _, x, y in jobs]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert not errors, errors
        (a0, a1), (b0, b1) = spans["a"], spans["b"]
        assert min(a1, b1) > max(a0, b0), "the two fits did not overlap in time"
        for name in solo:
            assert weights_equal(together[name][0], solo[name][0]), f"model {name}: weights differ"
            assert together[name][1] == solo[name][1], f"model {name}: history differs"
    finally:
        cdnn.set_num_threads(0)


def child_same_model_from_two_threads():
    """fit in one thread while the main thread calls predict on the same model (a web-service pattern)."""
    import cdnn

    keras = _keras()
    cdnn.set_num_threads(1)
    rng = np.random.default_rng(0)
    x, y = rng.random((2000, 784), dtype=np.float32), rng.integers(0, 10, 2000)
    # a workspace over 32 MB: glibc maps it with mmap and unmaps it when it is freed
    model = classifier(784, 8192, 10, optimizer="sgd")
    started = threading.Event()
    trainer = threading.Thread(
        target=model.fit,
        args=(x, y),
        kwargs=dict(
            batch_size=64,
            epochs=3,
            verbose=0,
            callbacks=[keras.callbacks.LambdaCallback(on_epoch_begin=lambda epoch, logs=None: started.set())],
        ),
    )
    trainer.start()
    assert started.wait(60)
    time.sleep(0.3)  # the trainer is inside a C run now
    out = model.predict(x[:600], verbose=0)  # predict's larger batch makes the shared workspace grow
    trainer.join()
    report({"finite": bool(np.isfinite(out).all() and all(np.isfinite(w).all() for w in model.get_weights()))})


def test_one_model_used_from_two_threads_does_not_crash():
    """predict() while fit() runs in another thread used to free the C workspace under the running fit
    (heap-use-after-free, SIGSEGV 10 times out of 10): the Network must serialise its C calls."""
    assert run_child("same_model_from_two_threads", timeout=180)["finite"]


# ============================================================================ Ctrl-C


def _interrupt_data():
    rng = np.random.default_rng(0)
    return rng.random((20000, 784), dtype=np.float32), rng.integers(0, 10, 20000)


def _interrupt_model():
    import cdnn

    cdnn.utils.set_random_seed(0)
    return classifier(784, 256, 10, optimizer="adam")


def child_interrupted_fit(tmp):
    """Train until SIGINT; then report what the interrupted model looks like."""
    import cdnn

    keras = _keras()
    # Python raises KeyboardInterrupt on SIGINT only if its parent left SIGINT alone: a suite started in the
    # background of a non-interactive shell (`cmd &`) has it ignored
    signal.signal(signal.SIGINT, signal.default_int_handler)
    cdnn.set_num_threads(1)
    x, y = _interrupt_data()
    model = _interrupt_model()
    epochs_done = []
    log = keras.callbacks.LambdaCallback(
        on_epoch_end=lambda e, logs=None: (epochs_done.append(e), print(f"@@EPOCH {e}", flush=True))
    )
    print(f"@@READY {time.time()}", flush=True)
    try:
        model.fit(x, y, batch_size=256, epochs=10**6, verbose=0, callbacks=[log])
    except KeyboardInterrupt:
        caught = time.time()
    else:
        report({"interrupted": False})
        return
    out = {
        "interrupted": True,
        "caught": caught,
        "epochs_done": len(epochs_done),
        "history_epochs": len(model.history.history.get("loss", [])),
        "history_keys": sorted(model.history.history),
        "iterations": int(model.optimizer.iterations),
    }
    weights = model.get_weights()
    # which number of batches these weights are the result of: replay the same fit, batch by batch
    replay = _interrupt_model()
    count, matched = [0], [None]

    def after_batch(batch, logs):
        count[0] += 1
        if count[0] >= out["iterations"] and weights_equal(replay.get_weights(), weights):
            matched[0] = count[0]
        if matched[0] is not None or count[0] > out["iterations"] + 2000:
            replay.stop_training = True

    replay.fit(
        x,
        y,
        batch_size=256,
        epochs=10**6,
        verbose=0,
        callbacks=[keras.callbacks.LambdaCallback(on_train_batch_end=after_batch)],
    )
    out["weights_after_batches"] = matched[0]
    # usable and savable
    pred = model.predict(x[:100], verbose=0)
    path = Path(tmp) / "interrupted.cdnn"
    model.save(path)
    loaded = keras.models.load_model(path)
    out["reload_same"] = bool(np.array_equal(loaded.predict(x[:100], verbose=0), pred))
    out["loaded_iterations"] = int(loaded.optimizer.iterations)
    more = model.fit(x[:2000], y[:2000], batch_size=256, epochs=1, verbose=0)
    out["fits_again"] = bool(np.isfinite(more.history["loss"][0]))
    report(out)


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory):
    """A child trains for ~1 s (at least one whole epoch), gets SIGINT; its report plus the delay."""
    proc = start_child("interrupted_fit", str(tmp_path_factory.mktemp("sigint")))
    try:
        ready = float(wait_for_line(proc, "@@READY").split()[1])
        wait_for_line(proc, "@@EPOCH 0")
        time.sleep(max(0.0, ready + 1.0 - time.time()) + random.uniform(0.0, 0.2))
        sent = time.time()
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    lines = [line for line in out.splitlines() if line.startswith("@@JSON ")]
    assert lines and proc.returncode == 0, f"child failed ({proc.returncode}):\n{out[-2000:]}\n{err[-4000:]}"
    result = json.loads(lines[-1][7:])
    result["delay"] = result.get("caught", float("inf")) - sent
    return result


def test_ctrl_c_stops_fit_quickly_and_leaves_a_usable_model(interrupted):
    r = interrupted
    assert r["interrupted"], "fit ended without KeyboardInterrupt"
    assert r["delay"] < 1.0, f"KeyboardInterrupt came {r['delay']:.2f} s after SIGINT"
    assert r["epochs_done"] >= 1 and r["history_epochs"] == r["epochs_done"], r
    assert r["history_keys"] == ["accuracy", "loss"]
    # the weights are those after a whole number of batches: no batch was half applied
    assert r["weights_after_batches"] is not None, "the weights match no number of whole batches"
    assert r["reload_same"] and r["fits_again"]


def test_ctrl_c_leaves_the_step_count_of_the_weights(interrupted):
    """The optimizer's step count is that of the weights (it once missed the last run's batches: a resumed
    fit or a saved file then used the wrong Adam bias correction)."""
    r = interrupted
    assert r["weights_after_batches"] == r["iterations"] == r["loaded_iterations"], r


# ============================================================================ SIGKILL while saving


def child_save_loop(path, once):
    """Save a ~17 MB model over `path` again and again, its first bias marking the save's number."""
    import cdnn

    keras = _keras()
    cdnn.set_num_threads(1)
    cdnn.utils.set_random_seed(0)
    model = keras.Sequential([keras.layers.Input(shape=(2048,)), keras.layers.Dense(2048), keras.layers.Dense(10)])
    model.compile(optimizer="sgd", loss="mse")
    bias = model.layers[0].bias
    start = int(time.time() * 1000) % 10**6 * 1000
    print("@@READY", flush=True)
    i = 0
    while True:
        i += 1
        bias[0] = start + i
        model.save(path)
        print(f"@@SAVED {start + i}", flush=True)
        if once == "once":
            return


def _temporaries(directory: Path, name: str, suffix: str) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.startswith(f".{name}.") and p.name.endswith(suffix))


def test_sigkill_during_save_keeps_the_previous_file(tmp_path):
    """20 children saving in a loop are killed at random moments; the file always loads, and the only stray
    file is at most one temporary: the last killed save's (the next save removes it)."""
    keras = _keras()
    path = tmp_path / "m.cdnn"
    subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--run", "save_loop", str(path), "once"],
        check=True,
        env=child_env(),
        cwd=REPO,
        capture_output=True,
        timeout=120,
    )
    rng = random.Random(1)
    left_a_temporary = 0
    kills = 8 if UNDER_ASAN else 20  # no C runs here: under the sanitizer, fewer (slow) children do
    for _ in range(kills):
        proc = start_child("save_loop", str(path), "loop")
        wait_for_line(proc, "@@READY")
        time.sleep(rng.uniform(0.0, 0.35))
        proc.kill()
        proc.communicate()
        names = sorted(p.name for p in tmp_path.iterdir())
        temps = _temporaries(tmp_path, "m.cdnn", ".tmp")
        assert set(names) - set(temps) == {"m.cdnn"}, names
        assert len(temps) <= 1, f"temporaries of killed saves pile up: {temps}"
        left_a_temporary += len(temps)
        model = keras.models.load_model(path)
        marker = model.layers[0].bias[0]
        assert marker == int(marker) and marker > 0 and np.isfinite(model.layers[0].kernel).all()
    print(f"a killed save left its temporary file in {left_a_temporary} of {kills} kills")
    assert left_a_temporary >= 1, "no kill landed inside a save: the test tested nothing"


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_only_temporaries_of_dead_processes_are_removed(tmp_path, monkeypatch):
    """A save, or a download, deletes what killed writers left, never the file of one still writing."""
    from cdnn import _saving
    from cdnn.datasets import _fetch

    host, dead = _saving._host(), _dead_pid()
    for kind, name, suffix in (("save", "m.cdnn", ".tmp"), ("download", "t10k-labels-idx1-ubyte.gz", ".part")):
        directory = tmp_path / kind
        directory.mkdir()
        stale = f".{name}.{host}-{dead}.k1x2{suffix}"
        kept = [
            f".{name}.{host}-{os.getppid()}.a7b8{suffix}",  # a live process
            f".{name}.otherhost-{dead}.c9d0{suffix}",  # another machine's (shared directory)
            f".{name}.{host}-{dead}.e1f2.other",  # not a temporary
            f".other.keras.{host}-{dead}.g3h4{suffix}",
        ]  # another file's
        for n in [stale, *kept]:
            (directory / n).write_bytes(b"partial")
        if kind == "save":
            dense_model(features=3, units=2).save(directory / name)
        else:
            kept.pop()  # a download clears any file's
            _fetch._remove_stale_parts(directory)
        left = sorted(p.name for p in directory.iterdir() if p.name != name)
        assert left == sorted(kept), (kind, left)


# ============================================================================ SIGKILL while downloading


TINY_NAMES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def tiny_dataset():
    """A four-file dataset of random bytes, with the hashes of its IDX files; (dataset, name -> gz bytes)."""
    from cdnn.datasets import _fetch

    rng = np.random.default_rng(5)
    shapes = ((300, 28, 28), (300,), (100, 28, 28), (100,))
    specs, served = [], {}
    for name, shape in zip(TINY_NAMES, shapes):
        a = rng.integers(0, 256, shape, dtype=np.uint8)
        raw = idx_header(*shape) + a.tobytes()
        specs.append(_fetch.FileSpec(name, shape, hashlib.sha256(raw).hexdigest()))
        served[name + ".gz"] = gzip.compress(raw, mtime=0)
    dataset = _fetch.Dataset(title="Tiny", dirname="tiny", files=tuple(specs), mirrors=("fake://mirror/",))
    return dataset, served


class SlowResponse:
    """A fake HTTP response that trickles its body out."""

    def __init__(self, body: bytes, piece: int, pause: float):
        self.body, self.piece, self.pause, self.at = body, piece, pause, 0

    def read(self, n=-1):
        time.sleep(self.pause)
        n = self.piece if n is None or n < 0 else min(n, self.piece)
        chunk = self.body[self.at : self.at + n]
        self.at += len(chunk)
        return chunk

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def fake_urlopen(served, piece=4096, pause=0.0):
    def urlopen(url, timeout=None):
        return SlowResponse(served[url.rsplit("/", 1)[1]], piece, pause)

    return urlopen


def child_slow_download(cache):
    from cdnn.datasets import _fetch

    os.environ["XDG_CACHE_HOME"] = cache
    os.environ.pop("CDNN_DATA", None)
    dataset, served = tiny_dataset()
    _fetch.urlopen = fake_urlopen(served, piece=4096, pause=0.004)
    print("@@READY", flush=True)
    _fetch.load(dataset)
    print("@@DONE", flush=True)


def test_sigkill_during_download_never_leaves_a_bad_cache_file(tmp_path, monkeypatch):
    from cdnn.datasets import _fetch

    cache = tmp_path / "cache"
    directory = cache / "cdnn" / "tiny"
    dataset, served = tiny_dataset()
    rng = random.Random(2)
    mid_download = 0
    for _ in range(4 if UNDER_ASAN else 10):
        for name in TINY_NAMES:  # each child downloads everything; partial files stay
            (directory / (name + ".gz")).unlink(missing_ok=True)
        proc = start_child("slow_download", str(cache))
        wait_for_line(proc, "@@READY")
        time.sleep(rng.uniform(0.0, 0.5))
        proc.kill()
        proc.communicate()
        if not directory.exists():
            continue
        mid_download += any(p.name.endswith(".part") for p in directory.iterdir())
        for spec in dataset.files:  # a file under its own name is complete and checked
            if (directory / (spec.name + ".gz")).exists():
                _fetch._check(dataset, spec, directory / (spec.name + ".gz"))
        others = [p.name for p in directory.iterdir() if not p.name.startswith(".")]
        assert set(others) <= {n + ".gz" for n in TINY_NAMES}, others
        parts = [p.name for p in directory.iterdir() if p.name.startswith(".")]
        assert len(parts) <= 1 and all(p.endswith(".part") for p in parts), f"partial downloads pile up: {parts}"
    assert mid_download >= 1, "no kill landed inside a download: the test tested nothing"
    # a later load in this process completes the cache and removes what the killed children left
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    monkeypatch.delenv("CDNN_DATA", raising=False)
    monkeypatch.setattr(_fetch, "urlopen", fake_urlopen(served))
    (x_train, _), (x_test, _) = _fetch.load(dataset)
    assert x_train.shape == (300, 28, 28) and x_test.shape == (100, 28, 28)
    assert sorted(p.name for p in directory.iterdir()) == sorted(n + ".gz" for n in TINY_NAMES)


# ============================================================================ leaks


def _rss() -> int:
    """Resident bytes, after giving free heap pages back to the system (less allocator noise)."""
    import ctypes

    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):
        pass
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def child_leak_loop(tmp, iterations):
    import gc

    import cdnn

    keras = _keras()
    cdnn.set_num_threads(1)
    rng = np.random.default_rng(0)
    x, y = rng.random((512, 64), dtype=np.float32), rng.integers(0, 10, 512)
    path = Path(tmp) / "m.cdnn"
    bad_x = x.copy()
    bad_x[3, 3] = np.nan
    bad_file = Path(tmp) / "bad.cdnn"
    bad_file.write_bytes(b"PK\x03\x04" + bytes(100))
    rss = []
    for i in range(int(iterations)):
        model = classifier(64, 128, 10, optimizer="adam", dropout=0.1)
        model.fit(x, y, batch_size=64, epochs=1, verbose=0)
        model.predict(x, verbose=0)
        model.evaluate(x, y, verbose=0)
        model.save(path)
        loaded = keras.models.load_model(path)
        loaded.predict(x, verbose=0)
        loaded.fit(x, y, batch_size=64, epochs=1, verbose=0)
        for bad in (lambda m=loaded: m.predict(bad_x, verbose=0), lambda: keras.models.load_model(bad_file)):
            try:  # the error paths must not leak either
                bad()
            except ValueError:
                pass
        del model, loaded
        cdnn.utils.clear_session()
        if i % 10 == 9:  # a full collection is slow here (this file imports pytest)
            gc.collect()
            rss.append((i + 1, _rss()))
    report({"rss": rss})


@pytest.mark.skipif(UNDER_ASAN, reason="ASan's quarantine keeps freed memory resident: RSS says nothing there")
def test_repeated_fit_predict_save_load_does_not_grow_memory(tmp_path):
    """200 rounds of build, fit, predict, evaluate, save, load, fit, and two refused calls: resident memory
    is flat after warm-up (measured after malloc_trim it stays within a few kilobytes; 1 MiB over the
    last 130 rounds is ~8 KB a round)."""
    rss = run_child("leak_loop", str(tmp_path), "200", timeout=300)["rss"]
    early = max(r for i, r in rss if 30 <= i <= 70)
    late = max(r for i, r in rss if i > 150)
    assert late - early < 1 << 20, (
        f"RSS grew by {(late - early) / 2**10:.0f} KiB from rounds 30-70 to 160-200 ({early} -> {late} bytes)"
    )


# ============================================================================ numerics and determinism


@pytest.mark.slow
def test_same_seed_bit_identical_on_fashion_mnist_across_threads_and_runs():
    import cdnn
    from cdnn.datasets import fashion_mnist

    (x, y), _ = fashion_mnist.load_data()
    x, y = (x[:12000].reshape(-1, 784) / 255.0).astype(np.float32), y[:12000]
    runs = {}
    try:
        for label, threads in (("1", 1), ("2", 2), ("4", 4), ("1-again", 1)):
            cdnn.set_num_threads(threads)
            cdnn.utils.set_random_seed(42)
            model = classifier(784, 128, 10, optimizer="adam", dropout=0.2)
            history = model.fit(x, y, batch_size=64, epochs=2, validation_split=0.1, verbose=0)
            runs[label] = (model.get_weights(), history.history)
    finally:
        cdnn.set_num_threads(0)
    assert runs["1"][1]["accuracy"][-1] > 0.75
    for label in ("2", "4", "1-again"):
        assert weights_equal(runs[label][0], runs["1"][0]), f"weights with {label} threads differ"
        assert runs[label][1] == runs["1"][1], f"history with {label} threads differs"


@pytest.mark.parametrize(
    "loss, last, hidden",
    [
        (SCCE, "softmax", "relu"),
        ("categorical_crossentropy", "softmax", "tanh"),
        ("binary_crossentropy", "sigmoid", "gelu"),
        ("mse", None, "leaky_relu"),
        (SCCE, "sigmoid", "sigmoid"),
    ],
)
def test_extreme_logits_give_finite_loss_and_gradients(loss, last, hidden):
    """Inputs and weights of +-1e4 give logits near 1e16: the loss and the gradients stay finite."""
    import cdnn

    keras = _keras()
    cdnn.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    units = 1 if loss == "binary_crossentropy" else 4
    model = keras.Sequential(
        [
            keras.layers.Input(shape=(32,)),
            keras.layers.Dense(16, activation=hidden),
            keras.layers.Dense(units, activation=last),
        ]
    )
    model.compile(
        optimizer=keras.optimizers.SGD(0.0), loss=loss, metrics=["accuracy"]
    )  # w -= 0 * g: NaN iff g is not finite
    model.set_weights([np.where(rng.random(w.shape) < 0.5, -1e4, 1e4) for w in model.get_weights()])
    x = np.where(rng.random((64, 32)) < 0.5, -1e4, 1e4).astype(np.float32)
    labels = rng.integers(0, units, 64)
    y = {
        SCCE: labels,
        "categorical_crossentropy": np.eye(units)[labels],
        "binary_crossentropy": rng.integers(0, 2, (64, 1)),
        "mse": rng.normal(size=(64, units)),
    }[loss]
    before = model.evaluate(x, y, verbose=0)[0]
    history = model.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0)
    assert np.isfinite(before) and np.isfinite(history.history["loss"][0]), (before, history.history)
    assert all(np.isfinite(w).all() for w in model.get_weights()), "an update was not finite"
    assert np.isfinite(model.predict(x, verbose=0)).all()


def test_a_diverging_run_reports_nan_and_terminate_on_nan_stops_it(tmp_path, capsys):
    import cdnn

    keras = _keras()
    rng = np.random.default_rng(0)
    x, y = rng.random((256, 20), dtype=np.float32), rng.random((256, 3)).astype(np.float32)

    def diverging():
        cdnn.utils.set_random_seed(0)
        model = keras.Sequential(
            [keras.layers.Input(shape=(20,)), keras.layers.Dense(16, activation="relu"), keras.layers.Dense(3)]
        )
        model.compile(optimizer=keras.optimizers.SGD(learning_rate=1e6), loss="mse")
        return model

    model = diverging()
    losses = model.fit(x, y, epochs=5, batch_size=32, verbose=0).history["loss"]
    assert len(losses) == 5 and not np.isfinite(losses).all(), losses
    assert np.isnan(model.predict(x[:4], verbose=0)).any()  # NaN weights predict NaN, no crash
    for name in ("nan.cdnn", "nan.keras"):  # a file cdnn writes always loads, NaN and all (as Keras)
        model.save(tmp_path / name)
        with pytest.warns(RuntimeWarning, match="NaN"):
            back = keras.models.load_model(tmp_path / name)
        for a, b in zip(back.get_weights(), model.get_weights()):
            np.testing.assert_array_equal(a, b)

    model = diverging()
    capsys.readouterr()
    history = model.fit(x, y, epochs=5, batch_size=32, verbose=0, callbacks=[keras.callbacks.TerminateOnNaN()])
    assert len(history.history["loss"]) == 1 and not np.isfinite(history.history["loss"][0])
    printed = capsys.readouterr().out
    match = re.fullmatch(r"Batch (\d+): Invalid loss, terminating training\n", printed)
    assert match, printed
    # as Keras: stopped right after the update of that batch (not at the end of cdnn's run of batches)
    assert model.optimizer.iterations == int(match.group(1)) + 1 < 8


if __name__ == "__main__" and sys.argv[1:2] == ["--cases"]:
    child_main(sys.argv[2:])
elif __name__ == "__main__" and sys.argv[1:2] == ["--run"]:
    globals()["child_" + sys.argv[2]](*sys.argv[3:])
