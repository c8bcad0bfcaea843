"""Keras 3's files for functional models and the layer graph's layers, both directions with real Keras.

cdnn writes ``.keras``/``.weights.h5`` that Keras 3.15 (JAX) loads and predicts the same with, and
reads what Keras writes: the same predictions, and training continues from Keras' optimizer state
(the next epoch's weights agree with Keras' own next epoch).
"""

import io
import json
import os
import zipfile

import numpy as np
import pytest

import cdnn
from cdnn import keras as ck

h5py = pytest.importorskip("h5py")
L = ck.layers


def _keras():
    os.environ.setdefault("KERAS_BACKEND", "jax")
    pytest.importorskip("jax")
    return pytest.importorskip("keras")


def _rng_data(n=32, seed=0):
    rng = np.random.default_rng(seed)
    return (
        [rng.random((n, 4), dtype=np.float32), rng.random((n, 2, 3), dtype=np.float32)],
        [rng.random((n, 2), dtype=np.float32), (rng.random((n, 1)) > 0.5).astype(np.float32)],
    )


def _multi_io(optimizer="nadam", dropout=True):
    """Two inputs, two outputs, BatchNorm, a nested Sequential, merges and activation layers."""
    cdnn.utils.set_random_seed(1)
    a, b = L.Input((4,), name="a"), L.Input((2, 3), name="b")
    x = L.BatchNormalization()(L.Dense(5, name="d1")(a))
    y = L.Dense(5)(L.Flatten()(L.Dense(5)(b)))
    inner = ck.Sequential([L.Input((10,)), L.Dense(6), L.LayerNormalization(), L.ReLU()], name="inner")
    z = inner(L.Concatenate()([x, y]))
    z2 = L.Add()([z, L.LeakyReLU()(z)])
    z2 = L.Dropout(0.1)(z2) if dropout else z2
    o1 = L.Dense(2, name="o1")(z2)
    o2 = L.Dense(1, name="o2", activation="sigmoid")(L.Multiply()([z, L.Softmax()(z)]))
    model = ck.Model([a, b], [o1, o2], name="m")
    model.compile(optimizer=optimizer, loss=["mse", "binary_crossentropy"])
    return model


def _every_layer():
    """One input, each layer of the graph at least once, a dict output."""
    cdnn.utils.set_random_seed(2)
    a = L.Input((2, 6), name="a")
    x = L.Rescaling(0.5, offset=1.0)(a)
    norm = L.Normalization()
    norm.adapt(np.random.default_rng(5).random((10, 2, 6)) * 3 + 1)
    x = norm(x)
    x = L.Normalization(mean=[1.0] * 6, variance=[2.0] * 6, invert=True)(x)
    x = L.Dense(4)(x)
    x = L.GaussianNoise(0.1)(x)
    x = L.LayerNormalization()(x)
    x = L.Activation("tanh")(x)
    x = L.Identity()(x)
    x = L.Reshape((8,))(x)
    y = L.BatchNormalization(momentum=0.9, epsilon=1e-2)(L.Dense(8)(x))
    z = L.Subtract()([x, y])
    z = L.Average()([z, y])
    z = L.Maximum()([z, y])
    z = L.Minimum()([z, x])
    out = L.Dense(3, activation="softmax")(z)
    model = ck.Model(a, {"out": out}, name="every")
    model.compile(optimizer="adamw", loss="categorical_crossentropy")
    return model


def _fit_data_every(n=32):
    rng = np.random.default_rng(3)
    return rng.random((n, 2, 6), dtype=np.float32), np.eye(3, dtype=np.float32)[rng.integers(0, 3, n)]


def _close(a, b, tol=2e-5):
    for u, v in zip(a if isinstance(a, list) else [a], b if isinstance(b, list) else [b]):
        np.testing.assert_allclose(np.asarray(u), np.asarray(v), rtol=tol, atol=tol)


def _predict(model, x):
    out = model.predict(x, verbose=0)
    return list(out.values()) if isinstance(out, dict) else out


def test_functional_keras_archive_loads_in_keras_and_predicts_the_same(tmp_path):
    keras = _keras()
    x, y = _rng_data()
    model = _multi_io()
    model.fit(x, y, epochs=2, batch_size=8, verbose=0)
    model.save(tmp_path / "m.keras")
    km = keras.models.load_model(tmp_path / "m.keras")
    _close(_predict(km, x), _predict(model, x))
    assert [l.name for l in km.layers] == [l.name for l in model.layers]
    assert int(km.optimizer.iterations) == int(model.optimizer.iterations) == 8
    assert type(km.optimizer).__name__ == "Nadam"
    # the optimizer's slots are Keras' (m, v per trainable variable in Keras' order)
    for kv, cv in zip(km.optimizer.variables[2:4], model.optimizer._slots[0][:2]):
        np.testing.assert_array_equal(np.asarray(kv), cv)


def _continues(original, reloaded, x, y):
    """One more epoch on both: the same weights when the optimizer state came through (a fresh state differs)."""
    fresh = cdnn.models.clone_model(reloaded)
    fresh.compile(optimizer=type(reloaded.optimizer).__name__.lower(), loss=reloaded._compile_args["loss"])
    fresh.set_weights(reloaded.get_weights())
    for m in (original, reloaded, fresh):
        m.fit(x, y, epochs=1, batch_size=8, verbose=0, shuffle=False)
    _close(reloaded.get_weights(), original.get_weights(), tol=1e-6)
    assert max(np.abs(a - b).max() for a, b in zip(fresh.get_weights(), original.get_weights())) > 1e-4


@pytest.mark.parametrize("optimizer", ["nadam", "adam"])
def test_keras_written_functional_loads_in_cdnn_and_trains_on_from_its_state(tmp_path, optimizer):
    keras = _keras()
    x, y = _rng_data()
    model = _multi_io(optimizer, dropout=False)
    model.fit(x, y, epochs=2, batch_size=8, verbose=0, shuffle=False)
    model.save(tmp_path / "c.keras")
    km = keras.models.load_model(tmp_path / "c.keras")
    assert int(km.optimizer.iterations) == 8
    km.save(tmp_path / "k.keras")  # the state as Keras writes it
    back = ck.models.load_model(tmp_path / "k.keras")
    _close(_predict(back, x), _predict(km, x))
    assert int(back.optimizer.iterations) == 8
    _continues(model, back, x, y)


def test_every_graph_layer_both_directions(tmp_path):
    keras = _keras()
    x, y = _fit_data_every()
    model = _every_layer()
    model.fit(x, y, epochs=1, batch_size=8, verbose=0)
    model.save(tmp_path / "e.keras")
    km = keras.models.load_model(tmp_path / "e.keras")
    _close(_predict(km, x), _predict(model, x))
    assert [type(l).__name__ for l in km.layers] == [type(l).__name__ for l in model.layers]
    km.fit(x, y, epochs=1, batch_size=8, verbose=0, shuffle=False)
    km.save(tmp_path / "k.keras")
    back = ck.models.load_model(tmp_path / "k.keras")
    _close(_predict(back, x), _predict(km, x))
    assert int(back.optimizer.iterations) == 8
    np.testing.assert_array_equal(back.layers[2].count, 10 * 2)  # Normalization's adapt count, an int32 in Keras


@pytest.mark.parametrize("optimizer", ["adafactor", "nadam"])
def test_adafactor_and_nadam_state_through_keras_files(tmp_path, optimizer):
    keras = _keras()
    cdnn.utils.set_random_seed(6)
    model = ck.Sequential([L.Input((5,)), L.Dense(4, activation="relu"), L.Dense(3, activation="softmax")])
    model.compile(optimizer=optimizer, loss="categorical_crossentropy")
    rng = np.random.default_rng(2)
    x, y = rng.random((32, 5), dtype=np.float32), np.eye(3, dtype=np.float32)[rng.integers(0, 3, 32)]
    model.fit(x, y, epochs=2, batch_size=8, verbose=0, shuffle=False)
    model.save(tmp_path / "c.keras")
    km = keras.models.load_model(tmp_path / "c.keras")
    assert len(km.optimizer.variables) == 2 + (3 * 4 if optimizer == "adafactor" else 2 * 4 + 1)
    if optimizer == "adafactor":  # r, c, v per variable; int32 placeholders for a bias's r and c
        np.testing.assert_array_equal(np.asarray(km.optimizer.variables[2]), model.optimizer._slots[0][0])
        np.testing.assert_array_equal(np.asarray(km.optimizer.variables[7]), model.optimizer._slots[1][2])
    km.save(tmp_path / "k.keras")
    back = ck.models.load_model(tmp_path / "k.keras")
    for a, b in zip(back.optimizer._slots, model.optimizer._slots):
        for u, v in zip(a, b):
            assert (u is None) == (v is None) and (u is None or np.array_equal(u, v))
    _continues(model, back, x, y)


def test_weights_h5_both_directions_functional_batchnorm(tmp_path):
    keras = _keras()
    x, y = _rng_data()
    model = _multi_io("adam", dropout=False)
    model.fit(x, y, epochs=1, batch_size=8, verbose=0)
    model.save_weights(tmp_path / "c.weights.h5")
    model.save(tmp_path / "arch.keras")
    km = keras.models.load_model(tmp_path / "arch.keras")
    km.set_weights([np.zeros_like(np.asarray(w)) for w in km.get_weights()])
    km.load_weights(tmp_path / "c.weights.h5")
    _close(_predict(km, x), _predict(model, x))
    with h5py.File(tmp_path / "c.weights.h5", "r") as h5:
        names = set()
        h5.visit(names.add)
    # Keras' layout: class names numbered per container, a nested model's layers under its own `layers`
    assert {
        "layers/batch_normalization/vars/3",
        "layers/sequential/layers/dense/vars/1",
        "layers/input_layer_1/vars",
        "layers/dense_4/vars/0",
    } <= names
    km.fit(x, y, epochs=1, batch_size=8, verbose=0)
    km.save_weights(tmp_path / "k.weights.h5")
    other = _multi_io("adam", dropout=False)
    other.load_weights(tmp_path / "k.weights.h5")
    _close(_predict(other, x), _predict(km, x))
    bn = next(l for l in other.layers if type(l).__name__ == "BatchNormalization")
    kbn = next(l for l in km.layers if type(l).__name__ == "BatchNormalization")
    np.testing.assert_allclose(bn.moving_variance, np.asarray(kbn.moving_variance), rtol=1e-6)


def test_nested_functional_round_trip(tmp_path):
    keras = _keras()
    cdnn.utils.set_random_seed(4)
    i = L.Input((3,))
    inner = ck.Model(i, L.Dense(2, activation="relu")(i), name="innerf")
    a = L.Input((3,), name="a")
    t = inner(L.Dense(3)(a))
    out = L.Add()([t, L.Dense(2)(a)])
    model = ck.Model(a, [out, t], name="outer")
    model.compile(optimizer="sgd", loss="mse")
    x = np.random.default_rng(0).random((16, 3), dtype=np.float32)
    model.save(tmp_path / "n.keras")
    with zipfile.ZipFile(tmp_path / "n.keras") as zf:  # an output of a nested functional model: its node 1
        assert json.loads(zf.read("config.json"))["config"]["output_layers"][1] == ["innerf", 1, 0]
    km = keras.models.load_model(tmp_path / "n.keras")
    _close(_predict(km, x), _predict(model, x))
    km.save(tmp_path / "k.keras")
    back = ck.models.load_model(tmp_path / "k.keras")
    _close(_predict(back, x), _predict(km, x))


def test_sequential_with_graph_layers_round_trip(tmp_path):
    keras = _keras()
    cdnn.utils.set_random_seed(5)
    model = ck.Sequential(
        [
            L.Input((3, 4)),
            L.Rescaling(2.0),
            L.Dense(5),
            L.BatchNormalization(),
            L.Flatten(),
            L.Dense(4, activation="relu"),
            L.LayerNormalization(),
            L.Dense(2, activation="softmax"),
        ]
    )
    model.compile(optimizer="nadam", loss="categorical_crossentropy")
    rng = np.random.default_rng(1)
    x, y = rng.random((24, 3, 4), dtype=np.float32), np.eye(2, dtype=np.float32)[rng.integers(0, 2, 24)]
    model.fit(x, y, epochs=1, batch_size=8, verbose=0)
    model.save(tmp_path / "s.keras")
    km = keras.models.load_model(tmp_path / "s.keras")
    _close(km.predict(x, verbose=0), model.predict(x, verbose=0))
    km.save(tmp_path / "k.keras")
    back = ck.models.load_model(tmp_path / "k.keras")
    _close(back.predict(x, verbose=0), km.predict(x, verbose=0))


def test_functional_config_is_keras_form(tmp_path):
    model = _multi_io()
    model.save(tmp_path / "m.keras")
    with zipfile.ZipFile(tmp_path / "m.keras") as zf:
        config = json.loads(zf.read("config.json"))
    assert config["class_name"] == "Functional" and config["registered_name"] == "Functional"
    cfg = config["config"]
    assert cfg["input_layers"] == [["a", 0, 0], ["b", 0, 0]]
    assert cfg["output_layers"] == [["o1", 0, 0], ["o2", 0, 0]]
    concat = next(l for l in cfg["layers"] if l["class_name"] == "Concatenate")
    (args,) = concat["inbound_nodes"][0]["args"]
    feeding = [model.get_layer(concat["name"]).input[i]._keras_history[0].name for i in (0, 1)]
    assert [t["config"]["keras_history"] for t in args] == [[feeding[0], 0, 0], [feeding[1], 0, 0]]
    assert feeding[0].startswith("batch_normalization")
    assert concat["build_config"] == {"input_shape": [[None, 5], [None, 5]]}
    bn = next(l for l in cfg["layers"] if l["class_name"] == "BatchNormalization")
    assert bn["inbound_nodes"][0]["kwargs"] == {"mask": None}
    inner = next(l for l in cfg["layers"] if l["name"] == "inner")
    assert inner["class_name"] == "Sequential" and inner["inbound_nodes"][0]["kwargs"] == {"mask": None}


def test_unsupported_layer_in_a_keras_file_is_named(tmp_path):
    model = _multi_io()
    model.save(tmp_path / "m.keras")
    with zipfile.ZipFile(tmp_path / "m.keras") as zf:
        parts = {n: zf.read(n) for n in zf.namelist()}
    config = json.loads(parts["config.json"])
    entry = next(l for l in config["config"]["layers"] if l["class_name"] == "LeakyReLU")
    entry["class_name"] = "PReLU"
    parts["config.json"] = json.dumps(config).encode()
    with zipfile.ZipFile(tmp_path / "bad.keras", "w") as zf:
        for n, data in parts.items():
            zf.writestr(n, data)
    with pytest.raises(cdnn.saving.ModelFileError, match="PReLU"):
        ck.models.load_model(tmp_path / "bad.keras")
    entry["class_name"] = "LeakyReLU"
    entry["config"]["renorm"] = True
    parts["config.json"] = json.dumps(config).encode()
    with zipfile.ZipFile(tmp_path / "bad2.keras", "w") as zf:
        for n, data in parts.items():
            zf.writestr(n, data)
    with pytest.raises(cdnn.saving.ModelFileError, match="renorm"):
        ck.models.load_model(tmp_path / "bad2.keras")


def test_weights_shape_checked_against_config_before_reading(tmp_path):
    model = _multi_io()
    model.save(tmp_path / "m.keras")
    with zipfile.ZipFile(tmp_path / "m.keras") as zf:
        parts = {n: zf.read(n) for n in zf.namelist()}
    src = h5py.File(io.BytesIO(parts["model.weights.h5"]), "r")
    buf = io.BytesIO()
    with h5py.File(buf, "w") as dst:
        for k in src:
            src.copy(src[k], dst, k)
        del dst["layers/batch_normalization/vars/2"]
        dst["layers/batch_normalization/vars/2"] = np.zeros(7, np.float32)
    parts["model.weights.h5"] = buf.getvalue()
    with zipfile.ZipFile(tmp_path / "bad.keras", "w") as zf:
        for n, data in parts.items():
            zf.writestr(n, data)
    with pytest.raises(cdnn.saving.ModelFileError, match=r"batch_normalization.*\(7,\).*\(5,\)"):
        ck.models.load_model(tmp_path / "bad.keras")


def test_recorded_training_flag_is_saved_as_keras_does(tmp_path):
    """Keras writes the call's ``training`` kwarg; the reloaded model keeps MC dropout in model(x)."""
    a = L.Input((3,))
    model = ck.Model(a, L.Dense(1)(L.Dropout(0.5)(a, training=True)))
    model.save(tmp_path / "m.keras")
    cfg = json.loads(zipfile.ZipFile(tmp_path / "m.keras").read("config.json"))
    assert cfg["config"]["layers"][1]["inbound_nodes"][0]["kwargs"] == {"training": True}
    back = ck.models.load_model(tmp_path / "m.keras")
    x = np.ones((400, 3), np.float32)
    np.testing.assert_allclose(back.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-6)
    assert np.std(back(x)) > 0.1  # the recorded training=True stays in model(x)
