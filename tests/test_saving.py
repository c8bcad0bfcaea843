"""Tests for weights and model files (cdnn._saving through the Keras API).

A model file is a NumPy ``.npz`` with a JSON architecture record; loading
must never unpickle or execute anything, must refuse damaged or foreign
files with ``cdnn._saving.ModelFileError`` (a ValueError) naming the
problem, and saving must be atomic.
"""

import json
import os
import pickle
import stat
import zipfile

import numpy as np
import pytest

import cdnn
from cdnn import keras
from cdnn._saving import ModelFileError

SCCE = "sparse_categorical_crossentropy"


@pytest.fixture(autouse=True)
def fresh_session():
    cdnn.utils.clear_session()
    keras.utils.set_random_seed(2024)


def blobs(n=120, features=10, classes=4, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=3.0, size=(classes, features))
    y = rng.integers(0, classes, n)
    return (centres[y] + rng.normal(size=(n, features))).astype(np.float32), y


def make_model(optimizer="adam", dropout=True, name=None):
    layers = [keras.layers.Input(shape=(10,)), keras.layers.Dense(12, activation="relu", name="hidden")]
    if dropout:
        layers.append(keras.layers.Dropout(0.2))
    layers.append(keras.layers.Dense(4, activation="softmax", name="out"))
    model = keras.Sequential(layers, name=name)
    model.compile(optimizer=optimizer, loss=SCCE, metrics=["accuracy"])
    return model


def assert_weights_equal(a, b):
    assert len(a) == len(b)
    for u, v in zip(a, b):
        assert u.dtype == v.dtype == np.float32
        np.testing.assert_array_equal(u, v)


def write_npz(path, meta=None, **arrays):
    """A file in cdnn's layout with a hand-made architecture record."""
    if meta is not None:
        raw = meta if isinstance(meta, bytes) else json.dumps(meta).encode()
        arrays["__cdnn__"] = np.frombuffer(raw, dtype=np.uint8)
    with open(path, "wb") as f:
        np.savez(f, **arrays)


def saved_meta(path):
    with np.load(path) as z:
        return json.loads(z["__cdnn__"].tobytes()), {k: z[k] for k in z.files if k != "__cdnn__"}


# --------------------------------------------------------------------------- get/set weights


def test_get_weights_keras_order_and_copies():
    model = make_model()
    weights = model.get_weights()
    assert [w.shape for w in weights] == [(10, 12), (12,), (12, 4), (4,)]
    assert all(w.dtype == np.float32 for w in weights)
    assert weights[0] is not model.layers[0].kernel
    weights[0][...] = 0  # a copy: the model is unchanged
    assert np.abs(model.get_weights()[0]).max() > 0
    assert [[w.shape for w in l.get_weights()] for l in model.layers] == [[(10, 12), (12,)], [], [(12, 4), (4,)]]


def test_set_weights_changes_predictions_and_casts_to_float32():
    model = make_model()
    x, _ = blobs(5)
    new = [np.full((10, 12), 0.01), np.zeros(12, np.float64), np.zeros((12, 4), np.int64), np.arange(4)]
    model.set_weights(new)
    got = model.get_weights()
    assert all(w.dtype == np.float32 for w in got)
    np.testing.assert_array_equal(got[3], [0, 1, 2, 3])
    # zero kernel into the output: softmax of the bias [0, 1, 2, 3] for every sample
    expected = np.exp(np.arange(4)) / np.exp(np.arange(4)).sum()
    np.testing.assert_allclose(model.predict(x, verbose=0), np.tile(expected, (5, 1)), rtol=1e-6)


def test_set_weights_then_training_uses_them():
    x, y = blobs()
    a, b = make_model(dropout=False), make_model(dropout=False)
    b.set_weights(a.get_weights())
    keras.utils.set_random_seed(1)
    a.fit(x, y, epochs=1, verbose=0)
    keras.utils.set_random_seed(1)
    b.fit(x, y, epochs=1, verbose=0)
    assert_weights_equal(a.get_weights(), b.get_weights())


# --------------------------------------------------------------------------- save / load_model


def test_save_and_load_model_round_trip(tmp_path):
    x, y = blobs()
    model = make_model(optimizer=keras.optimizers.RMSprop(learning_rate=0.003, momentum=0.5), name="내 모델")
    model.fit(x, y, epochs=2, verbose=0)
    path = tmp_path / "model.cdnn"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert loaded.name == "내 모델"
    assert [(type(l).__name__, l.name) for l in loaded.layers] == [
        ("Dense", "hidden"),
        ("Dropout", "dropout"),
        ("Dense", "out"),
    ]
    assert loaded.layers[1].rate == 0.2 and loaded.input_shape == (None, 10)
    assert_weights_equal(loaded.get_weights(), model.get_weights())
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))
    assert loaded.evaluate(x, y, verbose=0) == model.evaluate(x, y, verbose=0)
    opt = loaded.optimizer
    assert type(opt) is keras.optimizers.RMSprop
    assert (opt.learning_rate, opt.rho, opt.momentum, opt.epsilon) == (0.003, 0.9, 0.5, 1e-7)
    assert opt.iterations == model.optimizer.iterations == 8
    assert loaded.loss.name == SCCE and loaded._compile_metrics._user_metrics == ["accuracy"]
    assert loaded.get_config() == model.get_config()


@pytest.mark.parametrize(
    "optimizer", ["sgd", "adagrad", "rmsprop", "adam", keras.optimizers.SGD(0.05, momentum=0.9, nesterov=True)]
)
def test_loaded_model_resumes_training_identically(tmp_path, optimizer):
    # the optimizer's slots and step count (Adam's bias correction) come back with the model
    x, y = blobs()
    model = make_model(optimizer=optimizer)
    model.fit(x, y, epochs=2, verbose=0)
    model.save(tmp_path / "m.cdnn")
    loaded = keras.models.load_model(tmp_path / "m.cdnn")
    keras.utils.set_random_seed(77)
    h1 = model.fit(x, y, epochs=2, verbose=0)
    keras.utils.set_random_seed(77)
    h2 = loaded.fit(x, y, epochs=2, verbose=0)
    assert h1.history == h2.history
    assert_weights_equal(model.get_weights(), loaded.get_weights())
    assert loaded.optimizer.iterations == model.optimizer.iterations == 16


def test_a_fresh_optimizer_does_not_resume_identically(tmp_path):
    # the counter-check of the test above: the state matters
    x, y = blobs()
    model = make_model()
    model.fit(x, y, epochs=2, verbose=0)
    model.save(tmp_path / "m.cdnn")
    loaded = keras.models.load_model(tmp_path / "m.cdnn", compile=False)
    assert not loaded.compiled
    loaded.compile(optimizer="adam", loss=SCCE, metrics=["accuracy"])
    keras.utils.set_random_seed(77)
    model.fit(x, y, epochs=1, verbose=0)
    keras.utils.set_random_seed(77)
    loaded.fit(x, y, epochs=1, verbose=0)
    assert not np.array_equal(model.get_weights()[0], loaded.get_weights()[0])


def test_save_untrained_and_uncompiled_models(tmp_path):
    x, y = blobs()
    compiled = make_model()
    compiled.save(tmp_path / "c.cdnn")
    loaded = keras.models.load_model(tmp_path / "c.cdnn")
    assert loaded.compiled and loaded.optimizer.iterations == 0
    loaded.fit(x, y, verbose=0)

    bare = keras.Sequential([keras.layers.Flatten(input_shape=(2, 5)), keras.layers.Dense(3, activation="tanh")])
    bare.save(tmp_path / "b.cdnn")
    loaded = keras.models.load_model(tmp_path / "b.cdnn")
    assert not loaded.compiled and loaded.input_shape == (None, 2, 5)
    x3 = x.reshape(-1, 2, 5)
    np.testing.assert_array_equal(loaded.predict(x3, verbose=0), bare.predict(x3, verbose=0))


def test_unbuilt_model_cannot_be_saved(tmp_path):
    model = keras.Sequential([keras.layers.Dense(3)])
    with pytest.raises(ValueError, match="not been built"):
        model.save(tmp_path / "m.cdnn")
    assert not (tmp_path / "m.cdnn").exists()


def test_overwrite_false_keeps_the_existing_file(tmp_path):
    path = tmp_path / "m.cdnn"
    path.write_bytes(b"old")
    with pytest.raises(FileExistsError):
        make_model().save(path, overwrite=False)
    assert path.read_bytes() == b"old"


def test_file_holds_plain_arrays_and_json(tmp_path):
    model = make_model()
    model.fit(*blobs(), verbose=0)
    model.save(tmp_path / "m.cdnn")
    meta, arrays = saved_meta(tmp_path / "m.cdnn")  # np.load's default allow_pickle=False reads it all
    assert meta["format"] == "cdnn-model" and meta["kind"] == "model"
    assert all(a.dtype == np.float32 for a in arrays.values())
    with zipfile.ZipFile(tmp_path / "m.cdnn") as z:
        assert all(name.endswith(".npy") for name in z.namelist())


# --------------------------------------------------------------------------- save_weights / load_weights


def test_save_weights_and_load_weights(tmp_path):
    x, y = blobs()
    model = make_model()
    model.fit(x, y, verbose=0)
    model.save_weights(tmp_path / "w.weights.cdnn")
    other = make_model()
    assert not np.array_equal(other.get_weights()[0], model.get_weights()[0])
    other.load_weights(tmp_path / "w.weights.cdnn")
    assert_weights_equal(other.get_weights(), model.get_weights())
    np.testing.assert_array_equal(other.predict(x, verbose=0), model.predict(x, verbose=0))
    # an unbuilt model of the same layers is built from the file's input shape
    unbuilt = keras.Sequential(
        [
            keras.layers.Dense(12, activation="relu"),
            keras.layers.Dropout(0.2),
            keras.layers.Dense(4, activation="softmax"),
        ]
    )
    unbuilt.load_weights(tmp_path / "w.weights.cdnn")
    assert_weights_equal(unbuilt.get_weights(), model.get_weights())
    # a whole-model file also provides weights
    model.save(tmp_path / "m.cdnn")
    third = make_model()
    third.load_weights(tmp_path / "m.cdnn")
    assert_weights_equal(third.get_weights(), model.get_weights())


def test_load_weights_into_another_architecture_is_refused(tmp_path):
    make_model().save_weights(tmp_path / "w.weights.cdnn")
    wider = keras.Sequential(
        [keras.layers.Dense(13, activation="relu", input_shape=(10,)), keras.layers.Dense(4, activation="softmax")]
    )
    before = wider.get_weights()
    with pytest.raises(ModelFileError, match=r"weight array 0 .*\(10, 13\)"):
        wider.load_weights(tmp_path / "w.weights.cdnn")
    assert_weights_equal(wider.get_weights(), before)
    deeper = keras.Sequential(
        [keras.layers.Dense(12, input_shape=(10,)), keras.layers.Dense(12), keras.layers.Dense(4, activation="softmax")]
    )
    with pytest.raises(ModelFileError, match="6"):
        deeper.load_weights(tmp_path / "w.weights.cdnn")


# --------------------------------------------------------------------------- hostile and damaged files


class Payload:
    """Unpickling this object creates a marker file: proof that the loader executed code."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_pickled_object_arrays_are_refused_without_running_them(tmp_path):
    marker = tmp_path / "pwned"
    good = make_model()
    good.save(tmp_path / "good.cdnn")
    meta, arrays = saved_meta(tmp_path / "good.cdnn")
    evil = np.empty(1, dtype=object)
    evil[0] = Payload(str(marker))
    arrays["weight_0"] = evil
    write_npz(tmp_path / "evil.cdnn", meta, **arrays)
    # sanity: the file really executes code when unpickled
    with np.load(tmp_path / "evil.cdnn", allow_pickle=True) as z:
        z["weight_0"]
    assert marker.exists()
    marker.unlink()

    for load in (keras.models.load_model, make_model().load_weights):
        with pytest.raises(ModelFileError, match="pickle"):
            load(tmp_path / "evil.cdnn")
        assert not marker.exists()


def test_a_plain_pickle_file_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "pwned"
    (tmp_path / "evil.cdnn").write_bytes(pickle.dumps(Payload(str(marker))))
    with pytest.raises(ModelFileError, match="not a cdnn model file"):
        keras.models.load_model(tmp_path / "evil.cdnn")
    assert not marker.exists()


@pytest.mark.parametrize("keep", [0, 10, 0.5, 0.9, -1])
def test_truncated_files_are_refused(tmp_path, keep):
    model = make_model()
    model.save(tmp_path / "m.cdnn")
    data = (tmp_path / "m.cdnn").read_bytes()
    cut = keep if isinstance(keep, int) and keep >= 0 else int(len(data) * keep) if keep > 0 else len(data) - 1
    (tmp_path / "cut.cdnn").write_bytes(data[:cut])
    with pytest.raises(ModelFileError, match="cut.cdnn"):
        keras.models.load_model(tmp_path / "cut.cdnn")


def test_corrupted_bytes_inside_the_archive_are_refused(tmp_path):
    model = make_model()
    model.save(tmp_path / "m.cdnn")
    data = bytearray((tmp_path / "m.cdnn").read_bytes())
    with zipfile.ZipFile(tmp_path / "m.cdnn") as z:
        info = z.getinfo("weight_0.npy")
    data[info.header_offset + 200] ^= 0xFF  # inside weight_0's data: the zip's CRC no longer matches
    (tmp_path / "bad.cdnn").write_bytes(bytes(data))
    with pytest.raises(ModelFileError):
        keras.models.load_model(tmp_path / "bad.cdnn")


@pytest.mark.parametrize("content", [b"", b"hello, I am a text file\n", b"PK\x03\x04 not really a zip"])
def test_files_that_are_not_zip_archives_are_refused(tmp_path, content):
    (tmp_path / "x.cdnn").write_bytes(content)
    with pytest.raises(ModelFileError, match="not a cdnn model file"):
        keras.models.load_model(tmp_path / "x.cdnn")


def test_a_bare_npy_array_is_refused(tmp_path):
    np.save(tmp_path / "a.npy", np.zeros(3, np.float32))
    with pytest.raises(ModelFileError, match="not a cdnn model file"):
        keras.models.load_model(tmp_path / "a.npy")


def test_a_foreign_npz_is_refused(tmp_path):
    write_npz(tmp_path / "f.npz", None, a=np.zeros(3))
    with pytest.raises(ModelFileError, match="no architecture record"):
        keras.models.load_model(tmp_path / "f.npz")


def test_a_zip_with_raw_members_is_refused(tmp_path):
    with zipfile.ZipFile(tmp_path / "z.cdnn", "w") as z:
        z.writestr("__cdnn__", b"{}")
        z.writestr("weight_0", b"\x00" * 8)
    with pytest.raises(ModelFileError):
        keras.models.load_model(tmp_path / "z.cdnn")


def test_a_missing_file():
    with pytest.raises(FileNotFoundError, match="nowhere.cdnn"):
        keras.models.load_model("/nonexistent/nowhere.cdnn")


def good_meta_and_arrays(tmp_path):
    make_model().save(tmp_path / "good.cdnn")
    return saved_meta(tmp_path / "good.cdnn")


def edit(meta, path, value):
    """A deep copy of meta with meta[path...] = value."""
    meta = json.loads(json.dumps(meta))
    node = meta
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return meta


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda m: b"{not json", "corrupted"),
        (lambda m: b"\xff\xfe", "corrupted"),
        (lambda m: [1, 2, 3], "not a cdnn model file"),
        (lambda m: edit(m, ["format"], "keras"), "not a cdnn model file"),
        (lambda m: edit(m, ["version"], 99), "version"),
        (lambda m: edit(m, ["config"], None), "layer list"),
        (lambda m: edit(m, ["config", "layers", 0, "class_name"], "Lambda"), "invalid architecture"),
        (lambda m: edit(m, ["config", "layers", 0, "config", "function"], "os.system"), "invalid architecture"),
        (lambda m: edit(m, ["config", "layers", 0, "config", "activation"], "__import__"), "invalid architecture"),
        (lambda m: edit(m, ["config", "layers", 0, "config", "units"], -3), "invalid architecture"),
        (lambda m: edit(m, ["config", "layers", 0, "config", "units"], "12"), "invalid architecture"),
        (lambda m: edit(m, ["config", "layers", 0, "config", "units"], 10**15), "invalid architecture"),
        (lambda m: edit(m, ["config", "layers", 0, "config", "units"], 13), "weight array 0"),
        (lambda m: edit(m, ["config", "input_shape"], "ten"), "input shape|architecture"),
        (lambda m: edit(m, ["weights"], [[10, 12]]), "weight arrays"),
        (lambda m: edit(m, ["compile", "optimizer", "class_name"], "Evil"), "compile settings"),
        (lambda m: edit(m, ["compile", "optimizer", "config", "learning_rate"], -1.0), "compile settings"),
        (lambda m: edit(m, ["compile", "loss"], {"class_name": "os.system"}), "compile settings"),
        (lambda m: edit(m, ["compile", "iterations"], -5), "iteration"),
    ],
)
def test_wrong_architecture_records_are_refused(tmp_path, change, message):
    meta, arrays = good_meta_and_arrays(tmp_path)
    meta = change(meta)
    write_npz(tmp_path / "bad.cdnn", meta, **arrays)
    with pytest.raises(ModelFileError, match=message):
        keras.models.load_model(tmp_path / "bad.cdnn")


@pytest.mark.parametrize(
    "name, array, message",
    [
        ("weight_0", np.zeros((12, 10), np.float32), r"shape \(12, 10\)"),
        ("weight_1", np.zeros(12, np.float64), "dtype float64"),
        ("weight_3", None, "missing"),
    ],
)
def test_weight_arrays_of_wrong_shape_or_dtype_are_refused(tmp_path, name, array, message):
    meta, arrays = good_meta_and_arrays(tmp_path)
    if array is None:
        del arrays[name]
    else:
        arrays[name] = array
    write_npz(tmp_path / "bad.cdnn", meta, **arrays)
    with pytest.raises(ModelFileError, match=message):
        keras.models.load_model(tmp_path / "bad.cdnn")
    with pytest.raises(ModelFileError, match=message):
        make_model().load_weights(tmp_path / "bad.cdnn")


def test_optimizer_slots_of_wrong_shape_are_refused(tmp_path):
    model = make_model()
    model.fit(*blobs(), verbose=0)
    model.save(tmp_path / "m.cdnn")
    meta, arrays = saved_meta(tmp_path / "m.cdnn")
    arrays["slot_0"] = np.zeros((3, 3), np.float32)
    write_npz(tmp_path / "bad.cdnn", meta, **arrays)
    with pytest.raises(ModelFileError, match="slot 0"):
        keras.models.load_model(tmp_path / "bad.cdnn")


def test_model_file_error_is_a_value_error():
    assert issubclass(ModelFileError, ValueError)


# --------------------------------------------------------------------------- atomic saving


def test_interrupted_save_leaves_the_previous_file_and_no_temporary(tmp_path, monkeypatch):
    x, y = blobs()
    model = make_model()
    path = tmp_path / "m.cdnn"
    model.save(path)
    before = model.predict(x, verbose=0)
    model.fit(x, y, verbose=0)

    import cdnn._saving as saving

    real_savez = np.savez

    def savez_then_fail(file, **arrays):
        file.write(b"PK\x03\x04 half an archive")
        raise KeyboardInterrupt("power cut")

    monkeypatch.setattr(saving.np, "savez", savez_then_fail)
    with pytest.raises(KeyboardInterrupt):
        model.save(path)
    with pytest.raises(KeyboardInterrupt):
        model.save_weights(tmp_path / "w.weights.cdnn")
    monkeypatch.setattr(saving.np, "savez", real_savez)

    assert sorted(os.listdir(tmp_path)) == ["m.cdnn"]
    np.testing.assert_array_equal(keras.models.load_model(path).predict(x, verbose=0), before)


def test_save_into_a_missing_directory_fails_cleanly(tmp_path):
    with pytest.raises(OSError):
        make_model().save(tmp_path / "no" / "such" / "m.cdnn")
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_saved_files_get_the_mode_of_an_ordinary_open(tmp_path, umask):
    """As Keras' files: 0666 less the umask (0644 usually), not the 0600 of a mkstemp temporary."""
    x, y = blobs()
    model = make_model()
    model.fit(x, y, verbose=0)
    old = os.umask(umask)
    try:
        model.save(tmp_path / "m.cdnn")
        model.save_weights(tmp_path / "w.weights.cdnn")
        model.fit(x, y, verbose=0, callbacks=[keras.callbacks.ModelCheckpoint(str(tmp_path / "c" / "ck.cdnn"))])
    finally:
        os.umask(old)
    for path in (tmp_path / "m.cdnn", tmp_path / "w.weights.cdnn", tmp_path / "c" / "ck.cdnn"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask, path
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c", "m.cdnn", "w.weights.cdnn"]  # no temporaries


def test_temporary_names_are_new_files_and_say_whose_they_are(tmp_path):
    from cdnn._files import create_temporary

    made = set()
    for _ in range(50):
        fd, path = create_temporary(tmp_path, ".m.keras.host-1.", ".tmp")
        os.close(fd)
        name = os.path.basename(path)
        assert name.startswith(".m.keras.host-1.") and name.endswith(".tmp") and name.count(".") == 5
        made.add(name)
    assert len(made) == 50 and sorted(p.name for p in tmp_path.iterdir()) == sorted(made)


def test_a_save_that_cannot_be_written_names_the_users_path(tmp_path):
    """Not the hidden temporary the save writes first."""
    model = make_model()
    with pytest.raises(FileNotFoundError, match=f"folder {tmp_path}/missing does not exist") as err:
        model.save(tmp_path / "missing" / "m.cdnn")
    assert err.value.filename == str(tmp_path / "missing" / "m.cdnn")
    with pytest.raises(IsADirectoryError, match="is a folder, expected a file path"):
        model.save_weights(tmp_path)
    assert list(tmp_path.iterdir()) == []
