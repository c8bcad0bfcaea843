"""fit(sample_weight=...), fit(class_weight=...), validation_data=(x, y, sample_weight) and
evaluate(sample_weight=...) with Keras 3's weighted reduction (keras/src/losses/loss.py:
"sum_over_batch_size" = weighted sum / rows of the batch; the epoch's loss averages the batches
weighted by their rows; metrics passed as `metrics=` are not weighted, trainers/compile_utils.py)
against the NumPy reference."""

import re

import numpy as np
import pytest
import reference as ref

import cdnn
import cdnn as keras

N, F, C = 61, 6, 3


def _data(seed=0, n=N):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, F)).astype(np.float32)
    y = rng.integers(0, C, n)
    w = rng.uniform(0, 3, n).astype(np.float32)
    return x, y, w


def _model(loss="sparse_categorical_crossentropy", lr=0.05, units=C, act="softmax", metrics=None, seed=0):
    keras.utils.set_random_seed(seed)
    m = keras.Sequential([keras.layers.Input((F,)), keras.layers.Dense(units, activation=act)])
    m.compile(optimizer=keras.optimizers.SGD(lr), loss=loss, metrics=metrics)
    return m


def test_one_step_follows_the_weighted_gradient():
    """One full batch of SGD: W -= lr * x^T dL/dz with dL/dz = w_i (p_i - y_i) / rows."""
    x, y, w = _data()
    m = _model(lr=0.1)
    W0, b0 = (a.astype(np.float64) for a in m.get_weights())
    z = x.astype(np.float64) @ W0 + b0
    loss, dz = ref.keras_reduced_loss("sparse_categorical_crossentropy", y, z, True, sample_weight=w)
    h = m.fit(x, y, batch_size=N, epochs=1, verbose=0, shuffle=False, sample_weight=w)
    assert h.history["loss"][0] == pytest.approx(loss, rel=1e-6)
    W1, b1 = m.get_weights()
    np.testing.assert_allclose(W1, W0 - 0.1 * x.T.astype(np.float64) @ dz, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(b1, b0 - 0.1 * dz.sum(0), rtol=1e-5, atol=1e-6)


def test_epoch_loss_is_the_weighted_sum_over_all_rows():
    """Batches of 16 (the last of 13): each batch's sum / its rows, averaged weighted by rows = sum / N."""
    x, y, w = _data(1)
    m = _model(lr=0.0)
    out = m.predict(x, verbose=0).astype(np.float64)
    per = ref.keras_loss("sparse_categorical_crossentropy", y, out)
    h = m.fit(x, y, batch_size=16, epochs=1, verbose=0, sample_weight=w)
    assert h.history["loss"][0] == pytest.approx((w * per).sum() / N, rel=1e-6)
    assert m.evaluate(x, y, sample_weight=w, verbose=0) == pytest.approx((w * per).sum() / N, rel=1e-6)


def test_doubling_every_weight_doubles_loss_and_step_exactly():
    x, y, _ = _data(2)
    a = _model(lr=0.02)
    ha = a.fit(x, y, batch_size=8, epochs=2, verbose=0, shuffle=False, sample_weight=np.full(N, 2.0))
    b = _model(lr=0.04)
    hb = b.fit(x, y, batch_size=8, epochs=2, verbose=0, shuffle=False)
    assert ha.history["loss"][0] == 2 * hb.history["loss"][0]
    assert all(np.array_equal(u, v) for u, v in zip(a.get_weights(), b.get_weights()))


def test_unit_weights_change_nothing():
    x, y, _ = _data(3)
    a = _model()  # each model right before its fit: the seed also draws fit's shuffling
    ha = a.fit(x, y, batch_size=8, epochs=2, verbose=0, sample_weight=np.ones(N))
    b = _model()
    hb = b.fit(x, y, batch_size=8, epochs=2, verbose=0)
    assert ha.history == hb.history
    assert all(np.array_equal(u, v) for u, v in zip(a.get_weights(), b.get_weights()))


def test_accuracy_from_metrics_is_not_weighted():
    x, y, w = _data(4)
    m = _model(metrics=["accuracy"])
    loss_w, acc_w = m.evaluate(x, y, sample_weight=w, verbose=0)
    loss, acc = m.evaluate(x, y, verbose=0)
    assert acc_w == acc and loss_w != loss
    assert acc == pytest.approx((m.predict(x, verbose=0).argmax(1) == y).mean())


@pytest.mark.parametrize("labels", ["sparse", "one_hot"])
def test_class_weight_is_the_sample_weight_of_each_class(labels):
    x, y, _ = _data(5)
    cw = {0: 0.5, 1: 2.0, 2: 1.25}
    loss = "sparse_categorical_crossentropy" if labels == "sparse" else "categorical_crossentropy"
    yy = y if labels == "sparse" else np.eye(C, dtype=np.float32)[y]
    a = _model(loss)
    ha = a.fit(x, yy, batch_size=8, epochs=2, verbose=0, class_weight=cw)
    b = _model(loss)
    hb = b.fit(x, yy, batch_size=8, epochs=2, verbose=0, sample_weight=np.array([cw[c] for c in y]))
    assert ha.history == hb.history
    assert all(np.array_equal(u, v) for u, v in zip(a.get_weights(), b.get_weights()))


def test_class_weight_on_a_one_unit_binary_output():
    x, y, _ = _data(6)
    yb = (y > 0).astype(np.float32)
    a = _model("binary_crossentropy", units=1, act="sigmoid")
    ha = a.fit(x, yb, batch_size=8, epochs=1, verbose=0, class_weight={0: 3.0, 1: 1.0})
    b = _model("binary_crossentropy", units=1, act="sigmoid")
    hb = b.fit(x, yb, batch_size=8, epochs=1, verbose=0, sample_weight=np.where(yb == 0, 3.0, 1.0))
    assert ha.history == hb.history


def test_validation_data_with_weights():
    x, y, _ = _data(7)
    vx, vy, vw = _data(8, n=23)
    m = _model(lr=0.0, metrics=["accuracy"])
    h = m.fit(x, y, epochs=1, verbose=0, validation_data=(vx, vy, vw))
    assert h.history["val_loss"][0] == pytest.approx(m.evaluate(vx, vy, sample_weight=vw, verbose=0)[0], rel=1e-12)
    h2 = m.fit(x, y, epochs=1, verbose=0, validation_data=(vx, vy, None))
    assert h2.history["val_loss"][0] == pytest.approx(m.evaluate(vx, vy, verbose=0)[0], rel=1e-12)
    assert h.history["val_accuracy"] == h2.history["val_accuracy"]


def test_validation_split_splits_the_weights():
    x, y, w = _data(9)
    m = _model(lr=0.0)
    h = m.fit(x, y, epochs=1, verbose=0, validation_split=0.25, sample_weight=w)
    split = int(N * 0.75)
    assert h.history["val_loss"][0] == pytest.approx(
        m.evaluate(x[split:], y[split:], sample_weight=w[split:], verbose=0), rel=1e-12
    )


def test_weighted_training_is_bit_identical_on_one_and_two_threads():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(500, 100)).astype(np.float32)
    y = rng.integers(0, 10, 500)
    w = rng.uniform(0, 2, 500)
    results = []
    for threads in (1, 2):
        cdnn.set_num_threads(threads)
        try:
            keras.utils.set_random_seed(0)
            m = keras.Sequential(
                [
                    keras.layers.Input((100,)),
                    keras.layers.Dense(200, activation="relu"),
                    keras.layers.Dense(10, activation="softmax"),
                ]
            )
            m.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
            h = m.fit(x, y, batch_size=64, epochs=2, verbose=0, sample_weight=w, validation_data=(x, y, w))
            results.append((h.history, m.get_weights()))
        finally:
            cdnn.set_num_threads(0)
    assert results[0][0] == results[1][0]
    assert all(np.array_equal(u, v) for u, v in zip(results[0][1], results[1][1]))


def test_ignore_class_averages_each_batch_over_its_valid_rows():
    x, y, _ = _data(10)
    y = y.copy()
    y[::4] = -1
    loss = keras.losses.SparseCategoricalCrossentropy(ignore_class=-1)
    m = _model(loss, lr=0.0)
    out = m.predict(x, verbose=0).astype(np.float64)
    per = ref.keras_loss("sparse_categorical_crossentropy", y, out, ignore_class=-1)
    expected = 0.0
    for s in range(0, N, 16):  # Keras: each batch's mean over its valid rows, the epoch's weighted by rows
        yy = y[s : s + 16]
        expected += len(yy) * per[s : s + 16].sum() / (yy != -1).sum()
    h = m.fit(x, y, batch_size=16, epochs=1, verbose=0, shuffle=False)
    assert h.history["loss"][0] == pytest.approx(expected / N, rel=1e-6)
    assert m.evaluate(x, y, batch_size=16, verbose=0) == pytest.approx(expected / N, rel=1e-6)


@pytest.mark.parametrize(
    "kwargs,exc,match",
    [
        ({"sample_weight": -np.ones(N)}, ValueError, ">= 0"),
        ({"sample_weight": np.where(np.arange(N) == 5, np.nan, 1.0)}, ValueError, "finite"),
        ({"sample_weight": np.ones(N + 1)}, ValueError, "one weight per sample"),
        ({"sample_weight": np.ones((N, 2))}, ValueError, "one weight per sample"),
        ({"sample_weight": np.array(["a"] * N)}, TypeError, "sample_weight"),
        ({"class_weight": {0: 1.0, 1: 2.0}}, ValueError, "class(es) 2"),
        ({"class_weight": {0: 1.0, 1: 2.0, 2: -1.0}}, ValueError, "class_weight"),
        ({"class_weight": {0: 1.0, 1: 2.0, "two": 1.0}}, ValueError, "'two'"),
        ({"class_weight": [1.0, 2.0, 3.0]}, ValueError, "dict"),
        ({"class_weight": {0: 1, 1: 1, 2: 1}, "sample_weight": np.ones(N)}, ValueError, "at the same time"),
        ({"validation_data": (np.zeros((4, F)), np.zeros(4), np.ones(3))}, ValueError, "validation_data[2]"),
        ({"validation_data": (np.zeros((4, F)), np.zeros(4), -np.ones(4))}, ValueError, "validation_data[2]"),
    ],
)
def test_bad_weights_are_refused_before_training(kwargs, exc, match):
    x, y, _ = _data(11)
    m = _model()
    before = [w.copy() for w in m.get_weights()]
    with pytest.raises(exc, match=re.escape(match)):
        m.fit(x, y, verbose=0, **kwargs)
    assert all(np.array_equal(u, v) for u, v in zip(before, m.get_weights()))
    assert m.optimizer.iterations == 0


def test_class_weight_needs_a_classification_output():
    x, y, _ = _data(12)
    with pytest.raises(ValueError, match="does not classify"):
        _model("mse", act="linear").fit(x, np.eye(C)[y], verbose=0, class_weight={0: 1, 1: 1, 2: 1})
    with pytest.raises(ValueError, match="independent labels"):
        _model("binary_crossentropy", act="sigmoid").fit(x, np.eye(C)[y], verbose=0, class_weight={0: 1, 1: 1})


def test_evaluate_refuses_bad_weights():
    x, y, _ = _data(13)
    with pytest.raises(ValueError, match="sample_weight"):
        _model().evaluate(x, y, sample_weight=np.ones(3), verbose=0)


def test_class_weight_needs_no_weight_for_the_ignored_class():
    x, y, _ = _data(14)
    y = y.copy()
    y[::5] = -1
    loss = keras.losses.SparseCategoricalCrossentropy(ignore_class=-1)
    cw = {0: 0.5, 1: 2.0, 2: 1.0}
    a = _model(loss)
    ha = a.fit(x, y, batch_size=8, epochs=1, verbose=0, class_weight=cw)
    b = _model(loss)
    hb = b.fit(x, y, batch_size=8, epochs=1, verbose=0, sample_weight=np.array([cw.get(c, 7.0) for c in y]))
    assert ha.history == hb.history  # the ignored samples' weight does not matter
