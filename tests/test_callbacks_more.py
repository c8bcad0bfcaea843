"""ReduceLROnPlateau, CSVLogger, TensorBoard (read back with tensorboard's own reader),
BackupAndRestore, ProgbarLogger and History.params, against Keras 3's callbacks' rules."""

import csv
import os

import numpy as np
import pytest

import cdnn as keras

cb = keras.callbacks


def _problem(n=120, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 5)).astype(np.float32)
    y = (x[:, 0] + x[:, 1] > 0).astype(np.float32)
    return x, y


def _model(lr=0.01):
    keras.utils.set_random_seed(0)
    m = keras.Sequential(
        [
            keras.layers.Input((5,)),
            keras.layers.Dense(8, activation="relu"),
            keras.layers.Dense(1, activation="sigmoid"),
        ]
    )
    m.compile(keras.optimizers.SGD(learning_rate=lr), "binary_crossentropy", metrics=["accuracy", "AUC"])
    return m


class FeedLogs(cb.Callback):
    """Replaces the monitored value by a scripted sequence (before the callbacks after it see it)."""

    def __init__(self, key, values):
        super().__init__()
        self.key, self.values = key, values

    def on_epoch_end(self, epoch, logs=None):
        logs[self.key] = self.values[epoch]


def _reference_plateau(values, lr, factor, patience, cooldown, min_delta, min_lr, mode):
    """Keras 3's ReduceLROnPlateau.on_epoch_end, step by step, on a list of values."""
    best, wait, cool, lrs = None, 0, 0, []
    sign = -1 if mode == "min" else 1
    for v in values:
        if cool > 0:
            cool -= 1
            wait = 0
        if best is None or (v - sign * min_delta < best if mode == "min" else v - sign * min_delta > best):
            best, wait = v, 0
        elif cool <= 0:
            wait += 1
            if wait >= patience and lr > np.float32(min_lr):
                lr = max(lr * factor, min_lr)
                cool, wait = cooldown, 0
        lrs.append(lr)
    return lrs


@pytest.mark.parametrize(
    "key, mode, values",
    [
        ("val_loss", "auto", [1.0, 0.9, 0.95, 0.96, 0.97, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.1]),
        ("val_AUC", "auto", [0.5, 0.6, 0.6, 0.6, 0.59, 0.7, 0.69, 0.68, 0.67, 0.66, 0.65, 0.64]),
        ("accuracy", "max", [0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5]),
    ],
)
def test_reduce_lr_on_plateau_follows_keras_rule(key, mode, values):
    x, y = _problem()
    model = _model(lr=0.04)
    seen = []
    rec = cb.LambdaCallback(
        on_epoch_end=lambda e, logs: seen.append((logs["learning_rate"], float(model.optimizer.learning_rate)))
    )
    plateau = cb.ReduceLROnPlateau(
        monitor=key, factor=0.5, patience=2, cooldown=1, min_delta=0.001, min_lr=0.006, mode=mode
    )
    h = model.fit(
        x, y, epochs=len(values), verbose=0, validation_data=(x, y), callbacks=[FeedLogs(key, values), plateau, rec]
    )
    expected = _reference_plateau(
        values, 0.04, 0.5, 2, 1, 0.001, 0.006, "max" if "AUC" in key or mode == "max" else "min"
    )
    after = [s[1] for s in seen]
    assert after == pytest.approx(expected)
    # the logs carry the rate the epoch trained with, as Keras'
    assert h.history["learning_rate"] == pytest.approx([0.04] + expected[:-1])


def test_reduce_lr_on_plateau_refuses_factor_1_and_unknown_direction():
    with pytest.raises(ValueError, match="factor"):
        cb.ReduceLROnPlateau(factor=1.0)
    x, y = _problem()
    model = _model()
    with pytest.raises(ValueError, match="mode='max'"):
        model.fit(x, y, epochs=1, verbose=0, callbacks=[cb.ReduceLROnPlateau(monitor="thing")])


def test_csv_logger_writes_keras_header_and_rows(tmp_path):
    x, y = _problem()
    path = tmp_path / "log.csv"
    model = _model()
    h = model.fit(x, y, epochs=3, verbose=0, validation_split=0.25, callbacks=[cb.CSVLogger(path)])
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["epoch", "AUC", "accuracy", "loss", "val_AUC", "val_accuracy", "val_loss"]
    assert [r[0] for r in rows[1:]] == ["0", "1", "2"]
    for i, r in enumerate(rows[1:]):
        assert float(r[3]) == h.history["loss"][i] and float(r[6]) == h.history["val_loss"][i]
    # append with another separator: no second header; without validation the val_ columns say NA
    model.fit(x, y, epochs=1, verbose=0, callbacks=[cb.CSVLogger(path, separator=";", append=True)])
    lines = path.read_text().splitlines()
    assert len(lines) == 5 and lines[4].startswith("0;") and lines[4].endswith(";NA;NA;NA")
    new = tmp_path / "new.csv"
    model.fit(x, y, epochs=1, verbose=0, callbacks=[cb.CSVLogger(new, append=True)])
    assert new.read_text().splitlines()[0] == "epoch,AUC,accuracy,loss,val_AUC,val_accuracy,val_loss"


def _events(folder):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder), size_guidance={"tensors": 0})
    acc.Reload()
    return acc


def test_tensorboard_scalars_and_histograms_read_back(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.util import tensor_util

    x, y = _problem()
    model = _model()
    h = model.fit(
        x, y, epochs=3, verbose=0, validation_split=0.25, callbacks=[cb.TensorBoard(tmp_path, histogram_freq=2)]
    )
    train, val = _events(tmp_path / "train"), _events(tmp_path / "validation")
    for name in ("loss", "accuracy", "AUC"):
        events = train.Tensors(f"epoch_{name}")
        assert [e.step for e in events] == [0, 1, 2]
        assert [float(tensor_util.make_ndarray(e.tensor_proto)) for e in events] == pytest.approx(h.history[name])
        vevents = val.Tensors(f"epoch_{name}")
        assert [float(tensor_util.make_ndarray(e.tensor_proto)) for e in vevents] == pytest.approx(
            h.history["val_" + name]
        )
    assert [
        float(tensor_util.make_ndarray(e.tensor_proto)) for e in train.Tensors("epoch_learning_rate")
    ] == pytest.approx([0.01] * 3)
    tags = train.Tags()["tensors"]
    kernel = f"{model.layers[0].name}/kernel/histogram"
    assert kernel in tags and f"{model.layers[1].name}/bias/histogram" in tags
    hist = train.Tensors(kernel)
    assert [e.step for e in hist] == [0, 2]  # every histogram_freq epochs
    counts = tensor_util.make_ndarray(hist[-1].tensor_proto)[:, 2]
    assert counts.sum() == model.layers[0].kernel.size
    assert "evaluation_loss_vs_iterations" in val.Tags()["tensors"]


def test_tensorboard_batch_scalars(tmp_path):
    pytest.importorskip("tensorboard")
    x, y = _problem(96)
    model = _model()
    model.fit(x, y, epochs=2, batch_size=16, verbose=0, callbacks=[cb.TensorBoard(tmp_path, update_freq=4)])
    train = _events(tmp_path / "train")
    assert [e.step for e in train.Tensors("batch_loss")] == [4, 8, 12]


def test_tensorboard_missing_package_is_named(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_tensorboard(name, *args, **kwargs):
        if name.startswith("tensorboard"):
            raise ImportError("No module named 'tensorboard'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tensorboard)
    with pytest.raises(ImportError, match="pip install tensorboard"):
        cb.TensorBoard("logs")


class Crash(cb.Callback):
    def __init__(self, at_epoch):
        super().__init__()
        self.at_epoch = at_epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.at_epoch:
            raise RuntimeError("interrupted")


def test_backup_and_restore_resumes_at_the_epoch_it_stopped(tmp_path):
    x, y = _problem()
    backup = tmp_path / "backup"
    model = _model()
    with pytest.raises(RuntimeError):
        model.fit(x, y, epochs=6, verbose=0, callbacks=[cb.BackupAndRestore(backup), Crash(2)])
    assert os.path.exists(backup)
    weights_at_3 = model.get_weights()  # the backup of epoch index 2 ran before the crash
    iterations = model.optimizer.iterations
    fresh = _model()  # a new process would start from new weights
    fresh.set_weights([np.zeros_like(w) for w in fresh.get_weights()])
    seen = []
    h = fresh.fit(
        x,
        y,
        epochs=6,
        verbose=0,
        callbacks=[
            cb.BackupAndRestore(backup),
            cb.LambdaCallback(
                on_epoch_begin=lambda e, logs=None: seen.append(
                    (e, fresh.optimizer.iterations, [w.copy() for w in fresh.get_weights()])
                )
            ),
        ],
    )
    assert h.epoch == [3, 4, 5]
    assert seen[0][1] == iterations
    assert all(np.array_equal(a, b) for a, b in zip(seen[0][2], weights_at_3))
    assert not os.path.exists(backup)  # a fit that ends normally deletes it


class Rows(keras.metrics.Metric):
    def __init__(self, name="rows", **kwargs):
        super().__init__(name=name, **kwargs)
        self.n = self.add_variable(shape=(), name="n")

    def update_state(self, y_true, y_pred, sample_weight=None):
        self.n.assign_add(len(y_true))

    def result(self):
        return self.n.numpy()


def test_backup_every_n_batches_with_a_user_metric_and_a_reduced_learning_rate(tmp_path):
    x, y = _problem(64)
    backup = tmp_path / "b"
    model = _model()
    model.compile(keras.optimizers.Adam(learning_rate=0.01), "binary_crossentropy", metrics=[Rows()])
    lowered = cb.LambdaCallback(on_epoch_begin=lambda e, logs=None: setattr(model.optimizer, "learning_rate", 0.005))
    with pytest.raises(RuntimeError):
        model.fit(
            x,
            y,
            epochs=3,
            batch_size=16,
            verbose=0,
            callbacks=[lowered, cb.BackupAndRestore(backup, save_freq=3), Crash(1)],
        )
    # saved after batches 3 and 6 of the 8 trained (4 per epoch); the epoch reached is the first
    again = _model()
    again.compile(keras.optimizers.Adam(learning_rate=0.01), "binary_crossentropy", metrics=[Rows()])
    restore = cb.BackupAndRestore(backup)
    restore.set_model(again)
    restore.on_train_begin()
    assert again.optimizer.iterations == 6 and float(again.optimizer.learning_rate) == 0.005
    assert again._initial_epoch == 1


def test_history_params_and_progbar_logger(capsys):
    x, y = _problem(100)
    model = _model()
    h = model.fit(x, y, epochs=2, batch_size=32, verbose=2, callbacks=[cb.ProgbarLogger()])
    assert h.params == {"verbose": 2, "epochs": 2, "steps": 4}
    out = capsys.readouterr().out
    assert out.count("4/4") == 2  # one bar per epoch, not two
