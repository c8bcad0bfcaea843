"""cdnn.utils.split_dataset, against the rules of Keras 3's keras.utils.split_dataset."""

from __future__ import annotations

import numpy as np
import pytest

import cdnn
from cdnn.utils import split_dataset


def data(n=1000):
    x = np.arange(n * 3, dtype=np.float32).reshape(n, 3)
    return x, np.arange(n) % 7


def test_left_fraction_takes_the_first_samples_in_order():
    x, y = data()
    (xl, yl), (xr, yr) = split_dataset((x, y), left_size=0.8)
    np.testing.assert_array_equal(xl, x[:800])
    np.testing.assert_array_equal(yl, y[:800])
    np.testing.assert_array_equal(xr, x[800:])
    np.testing.assert_array_equal(yr, y[800:])


def test_right_size_alone_takes_the_last_samples():
    x, y = data(10)
    (xl, _), (xr, yr) = split_dataset((x, y), right_size=3)
    assert len(xl) == 7 and len(xr) == 3
    np.testing.assert_array_equal(yr, y[7:])


def test_both_sizes_leave_out_the_samples_between():
    # Keras: the left part is the first left_size samples, the right part the last right_size
    x, y = data(10)
    (xl, _), (xr, _) = split_dataset((x, y), left_size=0.3, right_size=2)
    np.testing.assert_array_equal(xl, x[:3])
    np.testing.assert_array_equal(xr, x[8:])


def test_fractions_are_rounded_as_python_rounds():
    x = np.arange(10)
    left, right = split_dataset(x, left_size=0.25)  # round(2.5) == 2 in Python, and so in Keras
    assert len(left) == 2 and len(right) == 8
    left, right = split_dataset(x, left_size=0.35)  # round(3.5) == 4
    assert len(left) == 4 and len(right) == 6


def test_structure_is_kept():
    x, y = data(20)
    left, right = split_dataset(x, left_size=5)
    assert isinstance(left, np.ndarray) and left.shape == (5, 3) and right.shape == (15, 3)
    left, right = split_dataset([x, y], left_size=5)
    assert isinstance(left, list) and isinstance(right, list) and len(left) == 2
    left, right = split_dataset((x, y), left_size=5)
    assert isinstance(left, tuple) and isinstance(right, tuple)


def test_shuffle_keeps_rows_together_and_repeats_with_a_seed():
    x, y = data()
    (xl, yl), (xr, yr) = split_dataset((x, y), left_size=0.9, shuffle=True, seed=3)
    # each row still holds its own label: row i of x is (3i, 3i+1, 3i+2) and its label i % 7
    for xs, ys in ((xl, yl), (xr, yr)):
        np.testing.assert_array_equal((xs[:, 0] / 3).astype(int) % 7, ys)
    # every sample once, in a new order
    np.testing.assert_array_equal(np.sort(np.concatenate([xl[:, 0], xr[:, 0]])), x[:, 0])
    assert not np.array_equal(xl, x[:900])
    (xl2, _), _ = split_dataset((x, y), left_size=0.9, shuffle=True, seed=3)
    np.testing.assert_array_equal(xl, xl2)
    (xl3, _), _ = split_dataset((x, y), left_size=0.9, shuffle=True, seed=4)
    assert not np.array_equal(xl, xl3)


def test_a_split_feeds_fit():
    rng = np.random.default_rng(0)
    x, y = rng.random((200, 4)).astype(np.float32), rng.integers(0, 3, 200)
    (x_train, y_train), (x_val, y_val) = split_dataset((x, y), left_size=0.75, shuffle=True, seed=0)
    model = cdnn.Sequential([cdnn.layers.Input(shape=(4,)), cdnn.layers.Dense(3, activation="softmax")])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    history = model.fit(x_train, y_train, validation_data=(x_val, y_val), epochs=1, verbose=0)
    assert set(history.history) == {"accuracy", "loss", "val_accuracy", "val_loss"}


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({}, ValueError, "At least one of the `left_size` or `right_size` must be specified"),
        ({"left_size": 0}, ValueError, "received left_size=0"),
        ({"left_size": 10}, ValueError, "a number of samples in (0, 10)"),
        ({"left_size": 1.0}, ValueError, "expected a fraction in (0, 1)"),
        ({"right_size": -0.5}, ValueError, "received right_size=-0.5"),
        ({"left_size": 0.6, "right_size": 0.5}, ValueError, "is more than 1"),
        ({"left_size": 6, "right_size": 5}, ValueError, "more than the 10 in `dataset`"),
        ({"left_size": 0.01}, ValueError, "leave the left part empty"),
        ({"left_size": "half"}, TypeError, "Invalid type for argument `left_size`"),
        ({"left_size": True}, TypeError, "Invalid type for argument `left_size`"),
    ],
)
def test_bad_sizes_are_refused(kwargs, error, message):
    with pytest.raises(error) as info:
        split_dataset(np.arange(10), **kwargs)
    assert message in str(info.value)


@pytest.mark.parametrize(
    "dataset, error, message",
    [
        ((np.zeros(5), np.zeros(6)), ValueError, "expected arrays of the same length, received lengths [5, 6]"),
        ((np.zeros(5), [1, 2, 3, 4, 5]), TypeError, "expected NumPy arrays, received list at index 1"),
        ((), ValueError, "received an empty tuple"),
        ({"x": np.zeros(5)}, TypeError, "received dict"),
        (np.float32(3.0), TypeError, "received float32"),
        ((np.zeros(()),), ValueError, "received a 0-d array"),
    ],
)
def test_bad_datasets_are_refused(dataset, error, message):
    with pytest.raises(error) as info:
        split_dataset(dataset, left_size=0.5)
    assert message in str(info.value)
