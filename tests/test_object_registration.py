"""``keras.saving.register_keras_serializable``: Keras' names, and loading files that name user classes."""

import json
import os
import zipfile

import numpy as np
import pytest

import cdnn
from cdnn import keras as ck
from cdnn.saving import object_registration

pytest.importorskip("h5py")


def _hits_class(register: bool, package="tests_pkg", name=None):
    class Hits(ck.metrics.Metric):
        """Counts the samples whose arg-max is the label."""

        def __init__(self, name="hits", **kwargs):
            super().__init__(name=name, **kwargs)
            self.total = self.add_variable(shape=(), initializer="zeros", name="total")

        def update_state(self, y_true, y_pred, sample_weight=None):
            hits = np.argmax(np.asarray(y_pred), -1) == np.asarray(y_true).reshape(-1)
            self.total.assign(self.total + float(hits.sum()))

        def result(self):
            return self.total

    if register:
        Hits = ck.saving.register_keras_serializable(package=package, name=name)(Hits)
    return Hits


@pytest.fixture(autouse=True)
def _clean_registry():
    before = dict(object_registration._OBJECTS), dict(object_registration._NAMES)
    yield
    object_registration._OBJECTS.clear()
    object_registration._OBJECTS.update(before[0])
    object_registration._NAMES.clear()
    object_registration._NAMES.update(before[1])


def test_registered_names_follow_keras():
    Hits = _hits_class(True, package="pkg", name="Hitter")
    assert ck.saving.get_registered_name(Hits) == "pkg>Hitter"
    assert ck.saving.get_registered_object("pkg>Hitter") is Hits
    assert ck.saving.get_registered_object("pkg>Other") is None
    assert ck.saving.get_registered_object("x", custom_objects={"x": Hits}) is Hits
    Plain = _hits_class(False)
    assert ck.saving.get_registered_name(Plain) == "Hits"
    with ck.saving.custom_object_scope({"scoped": Plain}):
        assert ck.saving.get_registered_object("scoped") is Plain
    assert ck.saving.get_registered_object("scoped") is None

    class NoConfig:
        pass

    with pytest.raises(ValueError, match="get_config"):
        ck.saving.register_keras_serializable()(NoConfig)


def _model(metric):
    cdnn.utils.set_random_seed(0)
    model = ck.Sequential([ck.layers.Input((3,)), ck.layers.Dense(2, activation="softmax")])
    model.compile("sgd", "sparse_categorical_crossentropy", metrics=[metric])
    x = np.random.default_rng(0).random((8, 3), dtype=np.float32)
    model.fit(x, np.arange(8) % 2, verbose=0)
    return model


def test_a_registered_metric_is_written_under_its_name_and_loaded_back(tmp_path):
    Hits = _hits_class(True)
    _model(Hits()).save(tmp_path / "m.keras")
    with zipfile.ZipFile(tmp_path / "m.keras") as zf:
        (entry,) = json.loads(zf.read("config.json"))["compile_config"]["metrics"]
    assert entry["registered_name"] == "tests_pkg>Hits" and entry["class_name"] == "Hits"
    back = ck.models.load_model(tmp_path / "m.keras")
    (metric,) = back._compile_metrics._user_metrics
    assert type(metric) is Hits and metric.name == "hits"


def test_an_unregistered_class_is_refused_unless_given_in_custom_objects(tmp_path):
    Hits = _hits_class(True)
    _model(Hits()).save(tmp_path / "m.keras")
    object_registration._OBJECTS.clear()
    with pytest.raises(
        cdnn.saving.ModelFileError, match=r"Could not locate metric 'tests_pkg>Hits'.*register_keras_serializable"
    ):
        ck.models.load_model(tmp_path / "m.keras")
    for key in ("tests_pkg>Hits", "Hits"):
        back = ck.models.load_model(tmp_path / "m.keras", custom_objects={key: Hits})
        assert type(back._compile_metrics._user_metrics[0]) is Hits
    with pytest.raises(cdnn.saving.ModelFileError, match="Could not locate"):
        ck.models.load_model(tmp_path / "m.keras")  # custom_objects held only during that load


def test_a_keras_file_naming_a_keras_registered_metric_loads_with_the_cdnn_class(tmp_path):
    os.environ.setdefault("KERAS_BACKEND", "jax")
    pytest.importorskip("jax")
    keras = pytest.importorskip("keras")

    @keras.saving.register_keras_serializable(package="shared_pkg", name="Hits")
    class KerasHits(keras.metrics.Mean):
        pass

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, activation="softmax")])
    model.compile("sgd", "sparse_categorical_crossentropy", metrics=[KerasHits(name="hits")])
    model.save(tmp_path / "k.keras")
    with pytest.raises(cdnn.saving.ModelFileError, match="shared_pkg>Hits"):
        ck.models.load_model(tmp_path / "k.keras")
    Hits = _hits_class(True, package="shared_pkg")
    back = ck.models.load_model(tmp_path / "k.keras")
    assert type(back._compile_metrics._user_metrics[0]) is Hits
