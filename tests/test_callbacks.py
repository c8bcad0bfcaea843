"""Tests for cdnn.callbacks: Keras 3's hooks, their order and arguments, and
the rules of EarlyStopping, ModelCheckpoint, TerminateOnNaN and
LearningRateScheduler.

Where a rule depends on the monitored values, a callback placed first
overwrites them with a scripted sequence (Keras passes one logs dict from
callback to callback), so the expected epochs are worked out by hand from
Keras' rules rather than from whatever training produced.
"""

import numpy as np
import pytest
import reference as ref

import cdnn
from cdnn import keras

SCCE = "sparse_categorical_crossentropy"


@pytest.fixture(autouse=True)
def fresh_session():
    cdnn.utils.clear_session()
    keras.utils.set_random_seed(99)


def blobs(n=100, features=8, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=3.0, size=(classes, features))
    y = rng.integers(0, classes, n)
    return (centres[y] + rng.normal(size=(n, features))).astype(np.float32), y


def make_model(optimizer="adam"):
    model = keras.Sequential(
        [keras.layers.Dense(6, activation="relu", input_shape=(8,)), keras.layers.Dense(3, activation="softmax")]
    )
    model.compile(optimizer=optimizer, loss=SCCE, metrics=["accuracy"])
    return model


class Script(keras.callbacks.Callback):
    """Overwrites ``logs[key]`` at each epoch end with the next scripted value, and records the weights."""

    def __init__(self, key, values):
        super().__init__()
        self.key, self.values = key, list(values)
        self.weights = []

    def on_epoch_end(self, epoch, logs=None):
        logs[self.key] = self.values[epoch]
        self.weights.append(self.model.get_weights())


class Recorder(keras.callbacks.Callback):
    """Records every hook call as (hook, argument, sorted log keys)."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def on_train_begin(self, logs=None):
        self.calls.append(("train_begin",))

    def on_train_end(self, logs=None):
        self.calls.append(("train_end",))

    def on_epoch_begin(self, epoch, logs=None):
        self.calls.append(("epoch_begin", epoch))

    def on_epoch_end(self, epoch, logs=None):
        self.calls.append(("epoch_end", epoch, sorted(logs)))

    def on_batch_begin(self, batch, logs=None):
        self.calls.append(("batch_begin", batch))

    def on_batch_end(self, batch, logs=None):
        self.calls.append(("batch_end", batch, sorted(logs)))


def assert_weights_equal(a, b):
    assert len(a) == len(b)
    for u, v in zip(a, b):
        np.testing.assert_array_equal(u, v)


# --------------------------------------------------------------------------- Callback


def test_user_callback_hooks_are_called_in_keras_order_with_batch_indices():
    x, y = blobs(100)
    model = make_model()
    rec = Recorder()
    model.fit(x, y, batch_size=32, epochs=2, validation_split=0.2, callbacks=[rec], verbose=0)
    # 80 training samples in batches of 32 -> batches 0, 1, 2 (the last of 16)
    expected = [("train_begin",)]
    for epoch in range(2):
        expected.append(("epoch_begin", epoch))
        for batch in range(3):
            expected += [("batch_begin", batch), ("batch_end", batch, ["accuracy", "loss"])]
        expected.append(("epoch_end", epoch, ["accuracy", "loss", "val_accuracy", "val_loss"]))
    expected.append(("train_end",))
    assert rec.calls == expected
    assert rec.model is model
    assert rec.params == {"verbose": 0, "epochs": 2, "steps": 3}


def test_batch_logs_hold_the_running_mean_of_the_epoch():
    x, y = blobs(96)
    model = make_model()
    logs_seen = []

    class Batches(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            logs_seen.append(dict(logs))

    history = model.fit(x, y, batch_size=32, epochs=1, callbacks=[Batches()], verbose=0)
    assert len(logs_seen) == 3
    # after the last batch the running mean is the epoch's value
    assert logs_seen[-1]["loss"] == pytest.approx(history.history["loss"][0], rel=1e-12)
    assert logs_seen[-1]["accuracy"] == pytest.approx(history.history["accuracy"][0], rel=1e-12)


def test_batch_callbacks_do_not_change_the_training():
    # With a batch hook the C core runs one batch at a time; without one, many: same result.
    x, y = blobs(200)
    keras.utils.set_random_seed(5)
    a = make_model()
    ha = a.fit(x, y, batch_size=8, epochs=2, verbose=0)
    keras.utils.set_random_seed(5)
    b = make_model()
    hb = b.fit(x, y, batch_size=8, epochs=2, verbose=0, callbacks=[Recorder()])
    assert ha.history == hb.history
    assert_weights_equal(a.get_weights(), b.get_weights())


def test_stop_training_from_a_callback_ends_after_that_epoch():
    x, y = blobs(64)
    model = make_model()

    class StopAtOne(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:
                self.model.stop_training = True

    history = model.fit(x, y, epochs=10, callbacks=[StopAtOne()], verbose=0)
    assert history.epoch == [0, 1]
    assert model.optimizer.iterations == 4


def test_stop_training_from_a_batch_hook_still_ends_the_epoch_as_keras(capsys):
    x, y = blobs(100)
    model = make_model()
    rec = Recorder()

    class StopAfterBatch1(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if batch == 1:
                self.model.stop_training = True

    history = model.fit(
        x, y, batch_size=10, epochs=3, validation_split=0.2, callbacks=[StopAfterBatch1(), rec], verbose=1
    )
    assert model.optimizer.iterations == 2
    assert history.epoch == [0]
    # on_epoch_end and on_train_end still run, with validation, as in Keras
    assert rec.calls[-2] == ("epoch_end", 0, ["accuracy", "loss", "val_accuracy", "val_loss"])
    assert rec.calls[-1] == ("train_end",)
    # the epoch's logs are over the 20 samples trained on
    assert history.history["accuracy"][0] * 20 == pytest.approx(round(history.history["accuracy"][0] * 20))
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "Epoch 1/3" and len(out) == 2 and "val_loss" in out[1]


def test_lambda_callback():
    x, y = blobs(64)
    model = make_model()
    ends, batches = [], []
    cb = keras.callbacks.LambdaCallback(
        on_epoch_end=lambda epoch, logs: ends.append((epoch, logs["loss"])),
        on_train_batch_end=lambda batch, logs: batches.append(batch),
    )
    history = model.fit(x, y, batch_size=16, epochs=2, callbacks=[cb], verbose=0)
    assert ends == list(enumerate(history.history["loss"]))
    assert batches == [0, 1, 2, 3] * 2


def test_a_callback_object_of_another_type_is_refused():
    x, y = blobs(16)
    with pytest.raises(TypeError, match="Callback"):
        make_model().fit(x, y, callbacks=[lambda epoch: None], verbose=0)


class FullRecorder(Recorder):
    """A Recorder that also records the evaluation and prediction hooks, with their logs."""

    def on_train_end(self, logs=None):
        self.calls.append(("train_end", logs))

    def on_test_begin(self, logs=None):
        self.calls.append(("test_begin",))

    def on_test_end(self, logs=None):
        self.calls.append(("test_end", dict(logs)))

    def on_predict_begin(self, logs=None):
        self.calls.append(("predict_begin",))

    def on_predict_end(self, logs=None):
        self.calls.append(("predict_end",))


def test_validation_in_fit_calls_the_test_hooks_and_train_end_gets_the_last_logs_as_keras_3():
    """Keras 3's fit validates through evaluate(callbacks=...): on_test_begin/end every epoch, before
    on_epoch_end; on_train_end(logs) gets the last epoch's logs."""
    x, y = blobs(100)
    model = make_model()
    rec = FullRecorder()
    history = model.fit(x, y, batch_size=32, epochs=2, validation_split=0.2, callbacks=[rec], verbose=0)
    calls = [c for c in rec.calls if c[0] not in ("batch_begin", "batch_end")]
    last = {k: v[-1] for k, v in history.history.items()}
    val = [{"accuracy": history.history["val_accuracy"][e], "loss": history.history["val_loss"][e]} for e in range(2)]
    assert calls == [
        ("train_begin",),
        ("epoch_begin", 0),
        ("test_begin",),
        ("test_end", val[0]),
        ("epoch_end", 0, ["accuracy", "loss", "val_accuracy", "val_loss"]),
        ("epoch_begin", 1),
        ("test_begin",),
        ("test_end", val[1]),
        ("epoch_end", 1, ["accuracy", "loss", "val_accuracy", "val_loss"]),
        ("train_end", last),
    ]
    # no validation: no test hooks; no epoch run: on_train_end({}) (Keras' CallbackList gives {} for no logs)
    rec.calls.clear()
    model.fit(x, y, epochs=1, initial_epoch=1, callbacks=[rec], verbose=0)
    assert rec.calls == [("train_begin",), ("train_end", {})]


def test_test_batch_hooks_see_the_running_means_of_evaluate(tmp_path):
    x, y = blobs(100)
    model = make_model()
    model.fit(x, y, epochs=1, verbose=0)
    seen = []

    class Batches(keras.callbacks.Callback):
        def on_test_batch_begin(self, batch, logs=None):
            seen.append(("begin", batch))

        def on_test_batch_end(self, batch, logs=None):
            seen.append(("end", batch, dict(logs)))

    cb = Batches()
    loss, acc = model.evaluate(x, y, batch_size=32, callbacks=[cb], verbose=0)
    assert [s[:2] for s in seen] == [(k, b) for b in range(4) for k in ("begin", "end")]
    assert cb.params == {"verbose": 0, "epochs": 1, "steps": 4} and cb.model is model
    for b, (_, _, logs) in enumerate(seen[1::2]):
        rows = min(32 * (b + 1), 100)  # the running mean over the rows evaluated so far
        prefix_loss, prefix_acc = model.evaluate(x[:rows], y[:rows], verbose=0)
        assert logs["loss"] == pytest.approx(prefix_loss, rel=1e-12)
        assert logs["accuracy"] == pytest.approx(prefix_acc, rel=1e-12)
    assert (loss, acc) == pytest.approx((seen[-1][2]["loss"], seen[-1][2]["accuracy"]), rel=1e-12)
    # a validation pass in fit runs batch by batch too, at the training batch size
    seen.clear()
    model.fit(x, y, batch_size=25, epochs=1, validation_split=0.5, callbacks=[cb], verbose=0)
    assert [s[1] for s in seen if s[0] == "end"] == [0, 1]


def test_evaluate_and_predict_call_their_hooks():
    x, y = blobs(70)
    model = make_model()
    model.fit(x, y, epochs=1, verbose=0)
    rec = FullRecorder()
    logs = model.evaluate(x, y, callbacks=[rec], verbose=0, return_dict=True)
    assert rec.calls == [("test_begin",), ("test_end", logs)]
    rec.calls.clear()
    expected = model.predict(x, verbose=0)
    np.testing.assert_array_equal(model.predict(x, callbacks=[rec], verbose=0), expected)
    assert rec.calls == [("predict_begin",), ("predict_end",)]

    outputs = []

    class Batches(keras.callbacks.Callback):
        def on_predict_batch_end(self, batch, logs=None):
            outputs.append((batch, logs["outputs"].copy()))

    got = model.predict(x, batch_size=32, callbacks=[Batches()], verbose=0)
    np.testing.assert_array_equal(got, expected)  # batch by batch, the same bits
    assert [b for b, _ in outputs] == [0, 1, 2]
    np.testing.assert_array_equal(np.concatenate([o for _, o in outputs]), expected)
    assert [len(o) for _, o in outputs] == [32, 32, 6]


def test_lambda_callback_takes_any_hook_as_keras_3():
    x, y = blobs(64)
    model = make_model()
    ends = []
    cb = keras.callbacks.LambdaCallback(
        on_test_end=lambda logs: ends.append(logs["loss"]), on_train_end=lambda logs: ends.append("end")
    )
    history = model.fit(x, y, epochs=2, validation_split=0.25, callbacks=[cb], verbose=0)
    assert ends == [*history.history["val_loss"], "end"]
    with pytest.raises(TypeError, match="on_tset_end"):
        keras.callbacks.LambdaCallback(on_tset_end=print)


def test_evaluate_and_predict_refuse_what_is_not_a_list_of_callbacks():
    x, y = blobs(16)
    model = make_model()
    model.fit(x, y, verbose=0)
    with pytest.raises(TypeError, match="list of callbacks"):
        model.evaluate(x, y, callbacks=FullRecorder(), verbose=0)
    with pytest.raises(TypeError, match="Callback"):
        model.predict(x, callbacks=[print], verbose=0)


# --------------------------------------------------------------------------- EarlyStopping


def run_scripted(monitor, values, epochs=None, **early):
    x, y = blobs(64)
    model = make_model()
    script = Script(monitor, values)
    stop = keras.callbacks.EarlyStopping(monitor=monitor, **early)
    history = model.fit(x, y, epochs=epochs or len(values), validation_split=0.25, callbacks=[script, stop], verbose=0)
    return model, script, stop, history


def test_early_stopping_patience_on_val_loss():
    # Keras: wait += 1 each epoch, reset on improvement; stop when wait >= patience
    # best 0.8 at epoch 1; epochs 2, 3 do not improve -> stop at epoch 3 (patience 2)
    model, script, stop, history = run_scripted("val_loss", [1.0, 0.8, 0.9, 0.85, 0.7, 0.6], patience=2)
    assert history.epoch == [0, 1, 2, 3]
    assert history.history["val_loss"] == [1.0, 0.8, 0.9, 0.85]
    assert stop.stopped_epoch == 3 and stop.best == 0.8 and stop.best_epoch == 1
    # without restore_best_weights the model keeps its last weights
    assert_weights_equal(model.get_weights(), script.weights[3])


def test_early_stopping_patience_0_stops_at_the_first_non_improvement():
    _, _, stop, history = run_scripted("val_loss", [1.0, 0.9, 0.95, 0.5])
    assert history.epoch == [0, 1, 2] and stop.stopped_epoch == 2


def test_early_stopping_min_delta():
    # min_delta 0.05: 0.79 is not better than 0.8 by more than 0.05 -> best stays at epoch 1
    _, _, stop, history = run_scripted("val_loss", [1.0, 0.8, 0.79, 0.78, 0.5, 0.4], patience=2, min_delta=0.05)
    assert history.epoch == [0, 1, 2, 3] and stop.best_epoch == 1
    # without min_delta 0.79 and 0.78 are improvements and training runs on
    _, _, stop, history = run_scripted("val_loss", [1.0, 0.8, 0.79, 0.78, 0.5, 0.4], patience=2)
    assert history.epoch == [0, 1, 2, 3, 4, 5] and stop.stopped_epoch == 0


def test_early_stopping_restores_the_best_epochs_weights():
    model, script, stop, history = run_scripted(
        "val_loss", [1.0, 0.6, 0.7, 0.65, 0.9, 0.1], patience=3, restore_best_weights=True
    )
    assert history.epoch == [0, 1, 2, 3, 4] and stop.best_epoch == 1
    assert_weights_equal(model.get_weights(), script.weights[1])
    assert not np.array_equal(script.weights[1][0], script.weights[4][0])


def test_early_stopping_on_accuracy_maximises_in_auto_mode():
    model, script, stop, history = run_scripted(
        "val_accuracy", [0.5, 0.7, 0.6, 0.65, 0.9], patience=2, restore_best_weights=True
    )
    assert history.epoch == [0, 1, 2, 3] and stop.best == 0.7
    assert_weights_equal(model.get_weights(), script.weights[1])


def test_early_stopping_mode_min_on_a_metric_and_baseline():
    _, _, stop, history = run_scripted("val_accuracy", [0.5, 0.4, 0.45, 0.3], patience=1, mode="min")
    assert history.epoch == [0, 1, 2] and stop.best == 0.4
    # baseline: improvements that do not beat the baseline do not reset the wait
    _, _, stop, history = run_scripted("val_loss", [1.0, 0.9, 0.95, 0.97, 0.1], patience=2, baseline=0.5)
    assert history.epoch == [0, 1, 2] and stop.best == 0.9
    _, _, stop, history = run_scripted("val_loss", [1.0, 0.9, 0.95, 0.97, 0.1], patience=2)
    assert history.epoch == [0, 1, 2, 3]


def test_early_stopping_on_a_missing_metric_warns_and_continues():
    x, y = blobs(32)
    with pytest.warns(
        UserWarning,
        match="Early stopping conditioned on metric `val_loss` which is not available. "
        "Available metrics are: accuracy,loss",
    ):
        history = make_model().fit(
            x, y, epochs=3, verbose=0, callbacks=[keras.callbacks.EarlyStopping(monitor="val_loss")]
        )
    assert history.epoch == [0, 1, 2]


def test_early_stopping_verbose_messages(capsys):
    run_scripted("val_loss", [1.0, 0.5, 0.9], patience=1, verbose=1, restore_best_weights=True)
    out = capsys.readouterr().out
    assert "Epoch 3: early stopping" in out
    assert "Restoring model weights from the end of the best epoch: 2." in out


def test_early_stopping_can_be_reused():
    x, y = blobs(64)
    model = make_model()
    stop = keras.callbacks.EarlyStopping(monitor="val_loss", patience=1)
    model.fit(x, y, epochs=3, validation_split=0.25, verbose=0, callbacks=[Script("val_loss", [1, 2, 3]), stop])
    history = model.fit(
        x, y, epochs=3, validation_split=0.25, verbose=0, callbacks=[Script("val_loss", [3, 2, 1]), stop]
    )
    assert history.epoch == [0, 1, 2]


# --------------------------------------------------------------------------- ModelCheckpoint


def test_model_checkpoint_every_epoch_with_epoch_in_the_name(tmp_path):
    x, y = blobs(64)
    model = make_model()
    script = Script("unused", [0, 0, 0])
    ckpt = keras.callbacks.ModelCheckpoint(str(tmp_path / "ckpt-{epoch:02d}.keras"))
    model.fit(x, y, epochs=3, callbacks=[script, ckpt], verbose=0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt-01.keras", "ckpt-02.keras", "ckpt-03.keras"]
    for epoch in range(3):
        loaded = keras.models.load_model(tmp_path / f"ckpt-{epoch + 1:02d}.keras")
        assert_weights_equal(loaded.get_weights(), script.weights[epoch])


def test_model_checkpoint_save_best_only(tmp_path):
    x, y = blobs(64)
    model = make_model()
    script = Script("val_loss", [1.0, 0.5, 0.7, 0.6])
    best = keras.callbacks.ModelCheckpoint(tmp_path / "best.keras", save_best_only=True)
    named = keras.callbacks.ModelCheckpoint(str(tmp_path / "m-{epoch:02d}-{val_loss:.2f}.keras"), save_best_only=True)
    model.fit(x, y, epochs=4, validation_split=0.25, callbacks=[script, best, named], verbose=0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.keras", "m-01-1.00.keras", "m-02-0.50.keras"]
    # the file holds epoch 1's model, not the last one
    assert_weights_equal(keras.models.load_model(tmp_path / "best.keras").get_weights(), script.weights[1])
    assert not np.array_equal(script.weights[1][0], model.get_weights()[0])


def test_model_checkpoint_monitor_accuracy_and_weights_only(tmp_path):
    x, y = blobs(64)
    model = make_model()
    script = Script("val_accuracy", [0.5, 0.4, 0.8, 0.7])
    ckpt = keras.callbacks.ModelCheckpoint(
        tmp_path / "w.weights.h5", monitor="val_accuracy", save_best_only=True, save_weights_only=True
    )
    model.fit(x, y, epochs=4, validation_split=0.25, callbacks=[script, ckpt], verbose=0)
    fresh = make_model()
    fresh.load_weights(tmp_path / "w.weights.h5")
    assert_weights_equal(fresh.get_weights(), script.weights[2])


def test_model_checkpoint_makes_its_folder_as_keras(tmp_path):
    """The tutorials' ``ModelCheckpoint("training_1/cp.weights.h5")``: Keras makes the folder, nested too."""
    x, y = blobs(64)
    model = make_model()
    weights = keras.callbacks.ModelCheckpoint(str(tmp_path / "training_1" / "cp.weights.h5"), save_weights_only=True)
    nested = keras.callbacks.ModelCheckpoint(str(tmp_path / "a" / "b-{epoch}" / "m.keras"))
    model.fit(x, y, epochs=2, callbacks=[weights, nested], verbose=0)
    assert sorted(p.name for p in (tmp_path / "training_1").iterdir()) == ["cp.weights.h5"]
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["b-1", "b-2"]
    fresh = make_model()
    fresh.load_weights(tmp_path / "training_1" / "cp.weights.h5")
    assert_weights_equal(fresh.get_weights(), model.get_weights())
    assert_weights_equal(keras.models.load_model(tmp_path / "a" / "b-2" / "m.keras").get_weights(), model.get_weights())


def test_model_checkpoint_in_a_folder_that_cannot_be_made(tmp_path):
    x, y = blobs(32)
    (tmp_path / "file").write_text("not a folder")
    ckpt = keras.callbacks.ModelCheckpoint(str(tmp_path / "file" / "m.keras"))
    with pytest.raises(OSError):
        make_model().fit(x, y, callbacks=[ckpt], verbose=0)


def test_model_checkpoint_best_only_without_its_metric_warns_and_saves_nothing(tmp_path):
    x, y = blobs(32)
    ckpt = keras.callbacks.ModelCheckpoint(str(tmp_path / "best.keras"), save_best_only=True)  # no validation
    with pytest.warns(UserWarning, match="Can save best model only with val_loss available, skipping."):
        make_model().fit(x, y, epochs=2, callbacks=[ckpt], verbose=0)
    assert list(tmp_path.iterdir()) == []


def test_model_checkpoint_with_an_unknown_name_in_the_filepath(tmp_path):
    x, y = blobs(32)
    ckpt = keras.callbacks.ModelCheckpoint(str(tmp_path / "{val_auc:.2f}.keras"))
    with pytest.raises(KeyError, match="val_auc"):
        make_model().fit(x, y, callbacks=[ckpt], verbose=0)


# --------------------------------------------------------------------------- TerminateOnNaN


def exploding_data():
    x, y = blobs(64)
    return x * 1e30, y  # finite inputs whose products overflow float32


def test_terminate_on_nan_stops_training(capsys):
    x, y = exploding_data()
    model = make_model(optimizer=keras.optimizers.SGD(learning_rate=1e30))
    history = model.fit(x, y, batch_size=16, epochs=5, callbacks=[keras.callbacks.TerminateOnNaN()], verbose=0)
    assert history.epoch == [0]
    assert np.isnan(history.history["loss"][0])
    # batch 0's loss is huge but finite; its update (learning rate 1e30) takes weights to +-inf, which
    # makes batch 1's loss NaN on every SIMD path (products that merely overflow give inf, not NaN,
    # where the kernel fuses the multiply-add, and NaN where it does not)
    assert capsys.readouterr().out == "Batch 1: Invalid loss, terminating training\n"
    # with batch hooks the core runs batch by batch: training stops right after batch 1, as in Keras
    model = make_model(optimizer=keras.optimizers.SGD(learning_rate=1e30))
    model.fit(x, y, batch_size=16, epochs=5, callbacks=[keras.callbacks.TerminateOnNaN(), Recorder()], verbose=0)
    assert model.optimizer.iterations == 2


def test_nan_loss_without_terminate_on_nan_does_not_crash():
    x, y = exploding_data()
    model = make_model(optimizer=keras.optimizers.SGD(learning_rate=1e30))
    history = model.fit(x, y, batch_size=16, epochs=3, verbose=0)
    assert history.epoch == [0, 1, 2]
    assert np.isnan(history.history["loss"]).all()
    assert np.isnan(model.evaluate(x, y, verbose=0)[0])


def test_terminate_on_nan_stays_quiet_on_finite_losses(capsys):
    x, y = blobs(64)
    history = make_model().fit(x, y, epochs=3, callbacks=[keras.callbacks.TerminateOnNaN()], verbose=0)
    assert history.epoch == [0, 1, 2]
    assert capsys.readouterr().out == ""


# --------------------------------------------------------------------------- LearningRateScheduler


def test_learning_rate_scheduler_sets_the_rate_used_by_the_core():
    x, y = blobs(64)
    model = make_model(optimizer=keras.optimizers.SGD(learning_rate=0.2))
    mlp = ref.MLP([(6, "relu"), (3, "softmax")], 8)
    mlp.params = [w.astype(np.float64) for w in model.get_weights()]

    def halve_after_first(epoch, lr):
        return lr if epoch == 0 else lr * 0.5

    sched = keras.callbacks.LearningRateScheduler(halve_after_first)
    history = model.fit(x, y, batch_size=16, epochs=3, shuffle=False, callbacks=[sched], verbose=0)
    # Keras logs (and gives the schedule) its float32 variable's value
    assert history.history["learning_rate"] == [float(np.float32(v)) for v in (0.2, 0.1, 0.05)]
    assert np.float32(model.optimizer.learning_rate) == np.float32(0.05)
    opt = ref.SGD(0.2)
    for lr in (0.2, 0.1, 0.05):
        opt.learning_rate = lr
        mlp.fit_epoch(x, y, 16, opt, SCCE)
    for w, r in zip(model.get_weights(), mlp.params):
        np.testing.assert_allclose(w, r, atol=1e-5)


def test_learning_rate_scheduler_accepts_a_one_argument_schedule(capsys):
    x, y = blobs(32)
    model = make_model()
    sched = keras.callbacks.LearningRateScheduler(lambda epoch: 0.01 / (epoch + 1), verbose=1)
    model.fit(x, y, epochs=2, callbacks=[sched], verbose=0)
    assert model.optimizer.learning_rate == 0.005
    out = capsys.readouterr().out
    assert "Epoch 2: LearningRateScheduler setting learning rate to 0.005." in out


def test_learning_rate_scheduler_refuses_a_non_number_and_a_negative_rate():
    x, y = blobs(32)
    with pytest.raises(ValueError, match="float"):
        make_model().fit(x, y, callbacks=[keras.callbacks.LearningRateScheduler(lambda e, lr: "fast")], verbose=0)
    with pytest.raises(ValueError, match="learning_rate"):
        make_model().fit(x, y, callbacks=[keras.callbacks.LearningRateScheduler(lambda e, lr: -1.0)], verbose=0)
