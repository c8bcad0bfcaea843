"""train_on_batch / test_on_batch / predict_on_batch, steps_per_epoch, validation_freq and
validation_steps, and inputs from pandas, Python generators and keras.utils.PyDataset (Keras 3's
trainers/trainer.py and data_adapters rules)."""

import warnings

import numpy as np
import pytest

import cdnn as keras


def _data(n=96, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4)).astype(np.float32)
    y = (x[:, 0] > x[:, 1]).astype(np.int32)
    return x, y


def _model(metrics=("accuracy",), lr=0.05):
    keras.utils.set_random_seed(3)
    m = keras.Sequential(
        [
            keras.layers.Input((4,)),
            keras.layers.Dense(6, activation="relu"),
            keras.layers.Dense(2, activation="softmax"),
        ]
    )
    m.compile(keras.optimizers.SGD(learning_rate=lr), "sparse_categorical_crossentropy", metrics=list(metrics))
    return m


def test_train_on_batch_is_one_fit_step_and_gives_its_batch_alone():
    x, y = _data(32)
    a, b = _model(), _model()
    a.fit(x, y, batch_size=32, epochs=1, shuffle=False, verbose=0)
    logs = b.train_on_batch(x, y, return_dict=True)
    assert all(np.array_equal(p, q) for p, q in zip(a.get_weights(), b.get_weights()))
    assert b.optimizer.iterations == 1
    assert list(logs) == ["accuracy", "loss"]
    second = b.train_on_batch(x[:16], y[:16])  # Keras 3 resets the metrics at each call
    assert isinstance(second, list) and len(second) == 2
    loss16 = b.test_on_batch(x[:16], y[:16])
    b.reset_metrics()
    assert b.test_on_batch(x[:16], y[:16], return_dict=True)["loss"] == loss16[0]
    assert b.test_on_batch(x, y, return_dict=True) != {}


def test_test_on_batch_and_predict_on_batch_match_evaluate_and_predict():
    x, y = _data(40)
    m = _model(metrics=["accuracy", keras.metrics.SparseTopKCategoricalAccuracy(k=1, name="top1")])
    m.fit(x, y, epochs=1, verbose=0)
    m.reset_metrics()
    assert m.test_on_batch(x, y, return_dict=True) == m.evaluate(x, y, verbose=0, return_dict=True)
    np.testing.assert_array_equal(m.predict_on_batch(x), m.predict(x, verbose=0))
    m.reset_metrics()
    plain = m.test_on_batch(x, y, return_dict=True)["loss"]
    m.reset_metrics()
    doubled = m.test_on_batch(x, y, sample_weight=np.full(40, 2.0), return_dict=True)["loss"]
    assert doubled == pytest.approx(2 * plain, rel=1e-6)  # Keras' weighted sum over the batch's rows
    with pytest.raises(ValueError, match="class_weight"):
        m.train_on_batch(x, y, sample_weight=np.ones(40), class_weight={0: 1.0, 1: 2.0})


def test_steps_per_epoch_walks_on_through_the_data_as_keras():
    x, y = _data(100)  # 4 batches of 32 (the last of 4)
    m = _model()
    seen = []
    counter = keras.callbacks.LambdaCallback(on_epoch_end=lambda e, logs: seen.append(m.optimizer.iterations))
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        h = m.fit(x, y, epochs=4, steps_per_epoch=3, verbose=0, callbacks=[counter])
    # epoch 1: batches 0-2; epoch 2: batch 3 then the data ends (warning); epoch 3: a new pass...
    assert seen == [3, 4, 7, 8]
    assert any("ran out of data" in str(x.message) for x in w)
    assert h.params["steps"] == 3


def test_validation_freq_and_validation_steps():
    x, y = _data(64)
    m = _model()
    evaluated = []
    cb = keras.callbacks.LambdaCallback(on_test_end=lambda logs: evaluated.append(logs))
    h = m.fit(x, y, epochs=4, verbose=0, validation_data=(x, y), validation_freq=2, callbacks=[cb])
    assert len(evaluated) == 2 and "val_loss" not in h.history or len(h.history["val_loss"]) == 2
    h = m.fit(x, y, epochs=3, verbose=0, validation_data=(x, y), validation_freq=[1, 3])
    assert len(h.history["val_loss"]) == 2
    h = m.fit(x, y, epochs=1, verbose=0, validation_data=(x, y), validation_steps=1, validation_batch_size=8)
    assert h.history["val_loss"][0] == pytest.approx(m.evaluate(x[:8], y[:8], verbose=0)[0])
    with pytest.raises(ValueError, match="validation_freq"):
        m.fit(x, y, validation_data=(x, y), validation_freq=0, verbose=0)


def _gen(x, y, batch, repeat=False):
    while True:
        for s in range(0, len(x), batch):
            yield x[s : s + batch], y[s : s + batch]
        if not repeat:
            return


class Batches(keras.utils.PyDataset):
    def __init__(self, x, y, batch, **kwargs):
        super().__init__(**kwargs)
        self.x, self.y, self.batch = x, y, batch
        self.epochs_ended = 0

    def __len__(self):
        return -(-len(self.x) // self.batch)

    def __getitem__(self, i):
        return self.x[i * self.batch : (i + 1) * self.batch], self.y[i * self.batch : (i + 1) * self.batch]

    def on_epoch_end(self):
        self.epochs_ended += 1


def test_generator_and_pydataset_train_as_the_same_arrays_unshuffled():
    x, y = _data(100)
    ref = _model()
    h_ref = ref.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0)
    g = _model()
    h_gen = g.fit(_gen(x, y, 16, repeat=True), steps_per_epoch=7, epochs=2, verbose=0)
    d = _model()
    ds = Batches(x, y, 16)
    h_ds = d.fit(ds, epochs=2, shuffle=False, verbose=0)
    for other in (g, d):
        for p, q in zip(ref.get_weights(), other.get_weights()):
            np.testing.assert_allclose(p, q, rtol=1e-6, atol=1e-7)
    assert h_ds.history["loss"] == pytest.approx(h_ref.history["loss"], rel=1e-6)
    assert h_gen.history["accuracy"] == pytest.approx(h_ref.history["accuracy"])
    assert ds.epochs_ended == 2
    assert d.evaluate(ds, verbose=0) == pytest.approx(d.evaluate(x, y, verbose=0))
    np.testing.assert_array_equal(d.predict(ds, verbose=0), d.predict(x, verbose=0))
    sizes = []
    seen = keras.callbacks.LambdaCallback(on_predict_batch_end=lambda b, logs: sizes.append(len(logs["outputs"])))
    np.testing.assert_array_equal(d.predict(_gen(x, y, 40), verbose=0, callbacks=[seen]), d.predict(x, verbose=0))
    assert sizes == [40, 40, 20]
    h = d.fit(x, y, epochs=1, verbose=0, validation_data=Batches(x, y, 10))
    assert h.history["val_loss"][0] == pytest.approx(d.evaluate(x, y, verbose=0)[0], rel=1e-6)


def test_a_finite_generator_ends_training_with_keras_warning():
    x, y = _data(64)
    m = _model()
    with pytest.warns(UserWarning, match="ran out of data"):
        h = m.fit(_gen(x, y, 16), epochs=3, verbose=0)
    assert len(h.history["loss"]) == 1 and m.optimizer.iterations == 4


def test_generator_batches_are_checked():
    x, y = _data(32)
    m = _model()
    with pytest.raises(ValueError, match="`sample_weight of a batch of `x``: expected weights >= 0"):
        m.fit(((x, y, -np.ones(32)) for _ in range(2)), epochs=1, verbose=0)
    with pytest.raises(ValueError, match=r"class indices in \[0, 2\)"):
        m.fit(((x, y + 5) for _ in range(2)), epochs=1, verbose=0)
    with pytest.raises(ValueError, match="validation_split"):
        m.fit(_gen(x, y, 8), validation_split=0.2, verbose=0)
    with pytest.raises(ValueError, match="yielded no batch"):
        m.fit(iter([]), epochs=2, verbose=0)


def test_pandas_inputs():
    pd = pytest.importorskip("pandas")
    x, y = _data(80)
    frame = pd.DataFrame(x, columns=list("abcd"))
    labels = pd.Series(y)
    a = _model()
    ha = a.fit(frame, labels, epochs=2, verbose=0, validation_data=(frame, labels))
    b = _model()
    hb = b.fit(x, y, epochs=2, verbose=0, validation_data=(x, y))
    assert ha.history == hb.history
    assert a.evaluate(frame, labels, verbose=0) == b.evaluate(x, y, verbose=0)
    np.testing.assert_array_equal(a.predict(frame, verbose=0), b.predict(x, verbose=0))
    assert a.train_on_batch(frame.iloc[:8], labels.iloc[:8]) is not None
