"""Keras 3's own files: cdnn writes what Keras loads, and loads what Keras writes.

The round trips against real Keras run where ``keras`` (with the JAX backend) is
installed, as in CI; the rest needs only ``h5py``.
"""

import io
import json
import os
import zipfile

import numpy as np
import pytest

import cdnn
from cdnn import layers

h5py = pytest.importorskip("h5py")


def _real_keras():
    os.environ.setdefault("KERAS_BACKEND", "jax")
    pytest.importorskip("jax")
    return pytest.importorskip("keras")


def _data(n=64, shape=(6, 5), classes=4, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((n, *shape)).astype(np.float32), rng.integers(0, classes, n)


def _cdnn_model(optimizer="adam", dropout=True):
    cdnn.utils.set_random_seed(3)
    stack = [layers.Input(shape=(6, 5)), layers.Flatten(), layers.Dense(7, activation="relu")]
    stack += [layers.Dropout(0.25)] if dropout else []
    stack += [layers.Dense(4, activation="softmax", kernel_initializer="he_normal")]
    model = cdnn.Sequential(stack, name="small")
    model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def test_keras_archive_layout_is_keras_3s(tmp_path):
    x, y = _data()
    model = _cdnn_model()
    model.fit(x, y, epochs=1, batch_size=16, verbose=0)
    model.save(tmp_path / "m.keras")
    with zipfile.ZipFile(tmp_path / "m.keras") as zf:
        assert sorted(zf.namelist()) == ["config.json", "metadata.json", "model.weights.h5"]
        config = json.loads(zf.read("config.json"))
        meta = json.loads(zf.read("metadata.json"))
        h5 = h5py.File(io.BytesIO(zf.read("model.weights.h5")), "r")
    assert meta["keras_version"].startswith("3.")
    assert config["class_name"] == "Sequential" and config["module"] == "keras"
    names = [entry["class_name"] for entry in config["config"]["layers"]]
    assert names == ["InputLayer", "Flatten", "Dense", "Dropout", "Dense"]
    assert config["config"]["layers"][0]["config"]["batch_shape"] == [None, 6, 5]
    dense = config["config"]["layers"][4]
    assert dense["config"]["kernel_initializer"]["class_name"] == "HeNormal"
    assert dense["build_config"] == {"input_shape": [None, 7]}
    assert config["compile_config"]["loss"] == "sparse_categorical_crossentropy"
    assert config["compile_config"]["optimizer"]["class_name"] == "Adam"
    # variables by class name, numbered per container; Adam's moments interleaved per variable
    np.testing.assert_array_equal(h5["layers/dense/vars/0"][()], model.layers[1].kernel)
    np.testing.assert_array_equal(h5["layers/dense_1/vars/1"][()], model.layers[3].bias)
    assert int(h5["optimizer/vars/0"][()]) == model.optimizer.iterations == 4
    np.testing.assert_array_equal(h5["optimizer/vars/2"][()], model.optimizer._slots[0][0])
    np.testing.assert_array_equal(h5["optimizer/vars/3"][()], model.optimizer._slots[0][1])
    assert len(h5["optimizer/vars"]) == 2 + 2 * 4


@pytest.mark.parametrize("optimizer", ["adam", "sgd", "rmsprop", "adagrad"])
def test_keras_archive_round_trip_in_cdnn_keeps_weights_and_optimizer_state(tmp_path, optimizer):
    x, y = _data()
    model = _cdnn_model(optimizer)
    model.fit(x, y, epochs=2, batch_size=16, verbose=0)
    model.save(tmp_path / "m.keras")
    back = cdnn.models.load_model(tmp_path / "m.keras")
    np.testing.assert_array_equal(back.predict(x, verbose=0), model.predict(x, verbose=0))
    assert back.optimizer.iterations == model.optimizer.iterations
    assert type(back.optimizer) is type(model.optimizer)
    for a, b in zip(back.optimizer.variables, model.optimizer.variables):
        np.testing.assert_array_equal(a, b)
    # training on continues bit for bit as the original would
    cdnn.utils.set_random_seed(5)
    model.fit(x, y, epochs=1, batch_size=16, verbose=0)
    cdnn.utils.set_random_seed(5)
    back.fit(x, y, epochs=1, batch_size=16, verbose=0)
    for a, b in zip(back.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_weights_h5_round_trip_and_cdnn_format_still_loads(tmp_path):
    x, y = _data()
    model = _cdnn_model()
    model.fit(x, y, epochs=1, batch_size=16, verbose=0)
    model.save_weights(tmp_path / "w.weights.h5")
    assert h5py.is_hdf5(tmp_path / "w.weights.h5")
    other = _cdnn_model()
    other.build((None, 6, 5))
    other.load_weights(tmp_path / "w.weights.h5")
    np.testing.assert_array_equal(other.predict(x, verbose=0), model.predict(x, verbose=0))
    # cdnn's own format, by name, and files of earlier versions saved under a .keras name
    model.save(tmp_path / "m.cdnn")
    os.replace(tmp_path / "m.cdnn", tmp_path / "old.keras")
    np.testing.assert_array_equal(
        cdnn.models.load_model(tmp_path / "old.keras").predict(x, verbose=0), model.predict(x, verbose=0)
    )


def test_to_json_model_from_json_and_clone_model(tmp_path):
    model = _cdnn_model()
    text = model.to_json()
    assert json.loads(text)["class_name"] == "Sequential"
    again = cdnn.models.model_from_json(text)
    assert [type(l).__name__ for l in again.layers] == [type(l).__name__ for l in model.layers]
    assert [w.shape for w in again.weights] == [w.shape for w in model.weights]
    clone = cdnn.models.clone_model(model)
    assert [w.shape for w in clone.weights] == [w.shape for w in model.weights]
    # compiled as the model was, with fresh weights (Keras 3's clone_model: compile_from_config)
    assert clone.compiled == model.compiled and not np.array_equal(clone.get_weights()[0], model.get_weights()[0])
    with pytest.raises(ValueError, match="clone_function"):
        cdnn.models.clone_model(model, clone_function=lambda l: l)


def test_legacy_h5_model_names_are_refused_for_saving(tmp_path):
    with pytest.raises(ValueError, match="legacy HDF5"):
        _cdnn_model().save(tmp_path / "m.h5")
    with pytest.raises(ValueError, match="weights.h5"):
        _cdnn_model().save_weights(tmp_path / "m.keras")


# ---- bad files: clear errors, bounded reads --------------------------------------------
def _archive(tmp_path, config, weights=b"", name="bad.keras", extra=None):
    path = tmp_path / name
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("metadata.json", json.dumps({"keras_version": "3.15.1"}))
        zf.writestr("config.json", json.dumps(config) if not isinstance(config, bytes) else config)
        zf.writestr("model.weights.h5", weights)
        for k, v in (extra or {}).items():
            zf.writestr(k, v)
    return path


def _saved_config(tmp_path):
    model = _cdnn_model()
    model.build((None, 6, 5))
    model.save(tmp_path / "good.keras")
    with zipfile.ZipFile(tmp_path / "good.keras") as zf:
        return json.loads(zf.read("config.json")), zf.read("model.weights.h5")


def test_unknown_and_code_running_layers_are_named_and_refused(tmp_path):
    config, weights = _saved_config(tmp_path)
    config["config"]["layers"][2]["class_name"] = "Lambda"
    with pytest.raises(cdnn.saving.ModelFileError, match="Lambda"):
        cdnn.models.load_model(_archive(tmp_path, config, weights))
    config, weights = _saved_config(tmp_path)
    config["config"]["layers"][2]["registered_name"] = "my_package>MyDense"
    config["config"]["layers"][2]["module"] = "my_package"
    with pytest.raises(cdnn.saving.ModelFileError, match="custom layer"):
        cdnn.models.load_model(_archive(tmp_path, config, weights))
    config, weights = _saved_config(tmp_path)
    config["config"]["layers"][2]["config"]["kernel_regularizer"] = {"class_name": "MyRegularizer", "config": {}}
    with pytest.raises(cdnn.saving.ModelFileError, match="regularizer.*MyRegularizer"):
        cdnn.models.load_model(_archive(tmp_path, config, weights))
    config, weights = _saved_config(tmp_path)
    layer_config = config["config"]["layers"][2]["config"]
    layer_config["activity_regularizer"] = {"class_name": "L2", "config": {"l2": 0.1}}
    loaded = cdnn.models.load_model(_archive(tmp_path, config, weights))  # a regularizer cdnn has: it loads
    reg = loaded.get_layer(layer_config["name"]).activity_regularizer
    assert isinstance(reg, cdnn.regularizers.L2) and reg.l2 == pytest.approx(0.1)


def test_oversized_and_damaged_members_are_refused_before_reading(tmp_path):
    config, weights = _saved_config(tmp_path)
    huge = weights + b"\0" * (64 << 20)  # far more than a 4-layer model of 100 weights can need
    with pytest.raises(cdnn.saving.ModelFileError, match="more than"):
        cdnn.models.load_model(_archive(tmp_path, config, huge))
    with pytest.raises(cdnn.saving.ModelFileError, match="HDF5"):
        cdnn.models.load_model(_archive(tmp_path, config, b"not hdf5 at all"))
    with pytest.raises(cdnn.saving.ModelFileError, match="JSON"):
        cdnn.models.load_model(_archive(tmp_path, b"{not json", weights))
    # a dataset of the wrong shape is named, not read into a wrong-sized layer
    buf = io.BytesIO(weights)
    with h5py.File(buf, "a") as h5:
        del h5["layers/dense/vars/0"]
        h5["layers/dense/vars/0"] = np.zeros((3, 3), np.float32)
    with pytest.raises(cdnn.saving.ModelFileError, match="layers/dense/0|layers/dense/vars|shape"):
        cdnn.models.load_model(_archive(tmp_path, config, buf.getvalue()))


def test_a_dense_layer_of_a_billion_units_is_refused_without_allocating_it(tmp_path):
    config, weights = _saved_config(tmp_path)
    config["config"]["layers"][2]["config"]["units"] = 10**9
    with pytest.raises((cdnn.saving.ModelFileError, MemoryError, ValueError)):
        cdnn.models.load_model(_archive(tmp_path, config, weights))


# ---- against real Keras -----------------------------------------------------------------
@pytest.mark.keras
def test_real_keras_loads_what_cdnn_writes(tmp_path):
    keras = _real_keras()
    x, y = _data()
    model = _cdnn_model()
    model.fit(x, y, epochs=2, batch_size=16, verbose=0)
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    np.testing.assert_allclose(
        np.asarray(loaded.predict(x, verbose=0)), model.predict(x, verbose=0), rtol=1e-5, atol=1e-6
    )
    assert int(loaded.optimizer.iterations) == model.optimizer.iterations
    # Adam's moments land in Keras' variables
    m0 = [v for v in loaded.optimizer.variables if v.shape == (30, 7)]
    np.testing.assert_array_equal(np.asarray(m0[0]), model.optimizer._slots[0][0])
    np.testing.assert_array_equal(np.asarray(m0[1]), model.optimizer._slots[0][1])
    model.save_weights(tmp_path / "w.weights.h5")
    fresh = keras.models.clone_model(loaded)
    fresh.load_weights(tmp_path / "w.weights.h5")
    np.testing.assert_allclose(
        np.asarray(fresh.predict(x, verbose=0)), model.predict(x, verbose=0), rtol=1e-5, atol=1e-6
    )
    again = keras.models.model_from_json(model.to_json())
    assert [type(l).__name__ for l in again.layers] == ["Flatten", "Dense", "Dropout", "Dense"]


@pytest.mark.keras
@pytest.mark.parametrize("optimizer", ["adam", "sgd", "rmsprop", "adagrad"])
def test_cdnn_loads_what_real_keras_writes(tmp_path, optimizer):
    keras = _real_keras()
    x, y = _data()
    keras.utils.set_random_seed(1)
    model = keras.Sequential(
        [
            keras.Input(shape=(6, 5)),
            keras.layers.Flatten(),
            keras.layers.Dense(7, activation="relu"),
            keras.layers.Dropout(0.25),
            keras.layers.Dense(4, activation="softmax"),
        ],
        name="from_keras",
    )
    opt = {
        "adam": keras.optimizers.Adam(),
        "sgd": keras.optimizers.SGD(momentum=0.9),
        "rmsprop": keras.optimizers.RMSprop(momentum=0.5),
        "adagrad": keras.optimizers.Adagrad(),
    }[optimizer]
    model.compile(optimizer=opt, loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x, y, epochs=2, batch_size=16, verbose=0)
    model.save(tmp_path / "k.keras")
    model.save_weights(tmp_path / "k.weights.h5")
    ours = cdnn.models.load_model(tmp_path / "k.keras")
    expected = np.asarray(model.predict(x, verbose=0))
    np.testing.assert_allclose(ours.predict(x, verbose=0), expected, rtol=1e-5, atol=1e-6)
    assert ours.name == "from_keras" and ours.optimizer.iterations == int(model.optimizer.iterations)
    theirs = [np.asarray(v) for v in model.optimizer.variables][2:]  # after iterations and learning_rate
    from cdnn.saving.keras_format import _slot_order

    order = _slot_order(ours.optimizer, len(ours.weights))
    assert len(order) == len(theirs) > 0
    for (p, s), value in zip(order, theirs):
        np.testing.assert_array_equal(ours.optimizer._slots[p][s], value)
    # the weights file alone, into a cdnn model of the same architecture
    same = cdnn.Sequential(
        [
            layers.Input(shape=(6, 5)),
            layers.Flatten(),
            layers.Dense(7, activation="relu"),
            layers.Dropout(0.25),
            layers.Dense(4, activation="softmax"),
        ]
    )
    same.load_weights(tmp_path / "k.weights.h5")
    np.testing.assert_allclose(same.predict(x, verbose=0), expected, rtol=1e-5, atol=1e-6)


def test_a_keras_checkpoint_without_h5py_fails_before_training(tmp_path, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_h5py(name, *args, **kwargs):
        if name == "h5py":
            raise ImportError("No module named 'h5py'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_h5py)
    x, y = _data()
    model = _cdnn_model()
    seen = []
    probe = cdnn.callbacks.LambdaCallback(on_epoch_begin=lambda epoch, logs: seen.append(epoch))
    with pytest.raises(ImportError, match="pip install h5py"):
        model.fit(
            x, y, epochs=1, verbose=0, callbacks=[cdnn.callbacks.ModelCheckpoint(str(tmp_path / "best.keras")), probe]
        )
    assert seen == []  # no epoch was trained and lost
    model.save(tmp_path / "m.cdnn")  # cdnn's own format needs nothing but NumPy


@pytest.mark.keras
def test_cdnn_reads_legacy_h5_model_files(tmp_path):
    keras = _real_keras()
    x, y = _data()
    keras.utils.set_random_seed(2)
    model = keras.Sequential(
        [
            keras.Input(shape=(6, 5)),
            keras.layers.Flatten(),
            keras.layers.Dense(7, activation="tanh"),
            keras.layers.Dropout(0.25),
            keras.layers.Dense(4, activation="softmax"),
        ],
        name="legacy",
    )
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x, y, epochs=2, batch_size=16, verbose=0)
    model.save(tmp_path / "old.h5")
    ours = cdnn.models.load_model(tmp_path / "old.h5")
    np.testing.assert_allclose(
        ours.predict(x, verbose=0), np.asarray(model.predict(x, verbose=0)), rtol=1e-5, atol=1e-6
    )
    assert ours.loss.get_config()["name"] == "sparse_categorical_crossentropy"
    assert ours.optimizer.iterations == int(model.optimizer.iterations) == 8
    theirs = [np.asarray(v) for v in model.optimizer.variables][2:]
    np.testing.assert_array_equal(ours.optimizer._slots[0][0], theirs[0])
    np.testing.assert_array_equal(ours.optimizer._slots[0][1], theirs[1])
    plain = cdnn.models.load_model(tmp_path / "old.h5", compile=False)
    assert not plain.compiled
