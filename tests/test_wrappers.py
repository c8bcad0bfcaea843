"""cdnn.wrappers: scikit-learn's estimator checks, label encoding, pickling, threads, searches.

The searches on real data (GridSearchCV with loky, and with a Dask cluster)
are marked ``slow``; the Dask one also ``dask``, and skips without dask.
"""

from __future__ import annotations

import copy
import os
import pickle

import numpy as np
import pytest

sklearn = pytest.importorskip("sklearn", reason="cdnn.wrappers needs scikit-learn (pip install '.[test]')")
joblib = pytest.importorskip("joblib", reason="joblib comes with scikit-learn")

from sklearn.model_selection import GridSearchCV, cross_val_score  # noqa: E402
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402
from sklearn.utils.fixes import parse_version  # noqa: E402

import cdnn  # noqa: E402
from cdnn import layers  # noqa: E402
from cdnn.wrappers import SKLearnClassifier, SKLearnRegressor  # noqa: E402

# ---------------------------------------------------------------- scikit-learn's own checks

#: the estimators the checks run on: small and fast, seeded (the checks also set random_state)
CHECKED = [
    SKLearnClassifier(hidden=(16,), epochs=20, learning_rate=0.01, batch_size=16, random_state=0),
    SKLearnRegressor(hidden=(16,), epochs=20, learning_rate=0.01, batch_size=16, random_state=0),
]
#: checks that cannot apply, by estimator class, with the reason: none today. Every check of
#: scikit-learn 1.9 passes (those needing pandas or SCIPY_ARRAY_API skip themselves when absent).
EXPECTED_FAILED: dict[str, dict[str, str]] = {"SKLearnClassifier": {}, "SKLearnRegressor": {}}


def _expected_failed(estimator) -> dict[str, str]:
    return EXPECTED_FAILED[type(estimator).__name__]


def _parametrize_checks(estimators):
    """``parametrize_with_checks`` with expected failures, in this scikit-learn's API."""
    if parse_version(parse_version(sklearn.__version__).base_version) >= parse_version("1.6"):
        return parametrize_with_checks(estimators, expected_failed_checks=_expected_failed)
    for est in estimators:  # before 1.6: the `_xfail_checks` tag
        failed = _expected_failed(est)
        if failed:
            tags = est._more_tags()
            type(est)._more_tags = lambda self, _t={**tags, "_xfail_checks": failed}: _t
    return parametrize_with_checks(estimators)


@_parametrize_checks(CHECKED)
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


# ---------------------------------------------------------------- helpers


def blobs(n=120, classes=3, features=5, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, 3, (classes, features))
    y = rng.integers(0, classes, n)
    return (centers[y] + rng.normal(0, 1, (n, features))).astype(np.float64), y


def compiled_model(units=3, loss="categorical_crossentropy", activation="softmax", learning_rate=0.001):
    model = cdnn.Sequential(
        [layers.Input(shape=(5,)), layers.Dense(8, activation="relu"), layers.Dense(units, activation=activation)]
    )
    model.compile(optimizer=cdnn.optimizers.Adam(learning_rate), loss=loss, metrics=["accuracy"])
    return model


def same_weights(a, b) -> bool:
    return all(np.array_equal(u, v) for u, v in zip(a.get_weights(), b.get_weights()))


# ---------------------------------------------------------------- the classifier


def test_default_mlp_learns_string_labels_and_reports_history():
    x, y = blobs()
    names = np.array(["cat", "dog", "emu"])[y]
    clf = SKLearnClassifier(hidden=(16, 8), epochs=15, learning_rate=0.01, random_state=0).fit(x, names)
    assert clf.classes_.tolist() == ["cat", "dog", "emu"]
    assert [type(l).__name__ for l in clf.model_.layers] == ["Dense", "Dense", "Dense"]
    assert [l.units for l in clf.model_.layers] == [16, 8, 3]
    assert clf.model_.loss.name == "sparse_categorical_crossentropy"
    assert clf.model_.optimizer.learning_rate == pytest.approx(0.01)
    proba = clf.predict_proba(x)
    assert proba.shape == (120, 3) and proba.dtype == np.float64
    # float64 rows that sum to 1 as scikit-learn checks it (within sqrt(eps)), not float32's 3e-7
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=0, atol=1e-12)
    np.testing.assert_allclose(proba, clf.model_.predict(x, verbose=0), rtol=1e-6)
    import warnings

    from sklearn.metrics import log_loss

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # "The y_prob values do not sum to one" was raised at every call
        log_loss(names, proba, labels=clf.classes_)
    assert set(clf.predict(x)) <= {"cat", "dog", "emu"}
    assert clf.score(x, names) > 0.9
    assert sorted(clf.history_) == ["accuracy", "loss"] and len(clf.history_["loss"]) == 15
    assert clf.n_features_in_ == 5


def test_random_state_makes_fits_repeat_and_differ_between_seeds():
    x, y = blobs()
    a = SKLearnClassifier(hidden=(8,), epochs=2, random_state=3).fit(x, y)
    b = SKLearnClassifier(hidden=(8,), epochs=2, random_state=3).fit(x, y)
    c = SKLearnClassifier(hidden=(8,), epochs=2, random_state=4).fit(x, y)
    assert same_weights(a.model_, b.model_) and not same_weights(a.model_, c.model_)


def test_callable_model_gets_X_one_hot_y_and_model_kwargs():
    x, y = blobs()
    seen = {}

    def build(X, y, width):
        seen.update(X=X.shape, y=y.shape, y_sum=float(y.sum()), width=width)
        model = cdnn.Sequential(
            [
                layers.Input(shape=(X.shape[1],)),
                layers.Dense(width, activation="relu"),
                layers.Dense(y.shape[1], activation="softmax"),
            ]
        )
        model.compile(optimizer="adam", loss="categorical_crossentropy")
        return model

    clf = SKLearnClassifier(build, model_kwargs={"width": 7}, epochs=1, random_state=0).fit(x, y)
    assert seen == {"X": (120, 5), "y": (120, 3), "y_sum": 120.0, "width": 7}
    assert clf.model_.layers[0].units == 7 and clf.predict(x).shape == (120,)


def test_binary_labels_with_a_one_unit_sigmoid_model():
    x, y = blobs(classes=2)
    labels = np.where(y == 1, 5, -5)
    model = compiled_model(units=1, loss="binary_crossentropy", activation="sigmoid", learning_rate=0.02)
    clf = SKLearnClassifier(model, epochs=20, random_state=0).fit(x, labels)
    proba = clf.predict_proba(x)
    assert clf.classes_.tolist() == [-5, 5] and proba.shape == (120, 2)
    np.testing.assert_allclose(proba[:, 1], clf.model_.predict(x, verbose=0)[:, 0], rtol=1e-6)
    assert clf.score(x, labels) > 0.9


def test_a_given_model_is_cloned_with_fresh_weights_and_left_untouched():
    x, y = blobs()
    model = compiled_model()
    before = model.get_weights()
    a = SKLearnClassifier(model, epochs=2, random_state=0).fit(x, y)
    b = SKLearnClassifier(model, epochs=2, random_state=1).fit(x, y)
    assert a.model_ is not model and b.model_ is not model
    assert all(np.array_equal(w, v) for w, v in zip(model.get_weights(), before))
    assert not same_weights(a.model_, b.model_)
    assert a.model_.optimizer is not model.optimizer and model.optimizer.iterations == 0
    assert a.model_.loss.name == "categorical_crossentropy"


def test_warm_start_continues_training():
    x, y = blobs()
    clf = SKLearnClassifier(hidden=(8,), epochs=2, batch_size=40, warm_start=True, random_state=0).fit(x, y)
    first = clf.model_
    clf.fit(x, y)
    assert clf.model_ is first and first.optimizer.iterations == 2 * 2 * 3
    with pytest.raises(ValueError, match="not seen by the first fit"):
        clf.fit(x, y + 1)
    # a given model: the first warm fit starts from its weights, which stay untouched
    model = compiled_model()
    est = SKLearnClassifier(model, epochs=0, warm_start=True).fit(x, y)
    assert same_weights(est.model_, model) and est.model_ is not model


def test_fit_kwargs_precedence_and_no_mutation():
    x, y = blobs()
    fit_kwargs = {"epochs": 3, "validation_split": 0.25}
    clf = SKLearnClassifier(hidden=(4,), epochs=10, fit_kwargs=fit_kwargs, random_state=0)
    clf.fit(x, y)
    assert len(clf.history_["loss"]) == 3 and "val_loss" in clf.history_
    clf.fit(x, y, epochs=2)
    assert len(clf.history_["loss"]) == 2 and fit_kwargs == {"epochs": 3, "validation_split": 0.25}


def test_model_errors_name_the_problem():
    x, y = blobs()
    uncompiled = cdnn.Sequential([layers.Input(shape=(5,)), layers.Dense(3, activation="softmax")])
    with pytest.raises(RuntimeError, match="needs to be compiled"):
        SKLearnClassifier(uncompiled).fit(x, y)
    with pytest.raises(ValueError, match="Invalid value for argument `model`"):
        SKLearnClassifier("mlp").fit(x, y)
    with pytest.raises(TypeError, match="return a cdnn Sequential"):
        SKLearnClassifier(lambda X, y: None).fit(x, y)
    with pytest.raises(ValueError, match="model_kwargs"):
        SKLearnClassifier(model_kwargs={"width": 3}).fit(x, y)
    with pytest.raises(ValueError, match="output has 5 units, expected one per class"):
        SKLearnClassifier(compiled_model(units=5, loss="sparse_categorical_crossentropy")).fit(x, y)
    with pytest.raises(ValueError, match="one class"):
        SKLearnClassifier().fit(x, np.zeros(len(x)))
    with pytest.raises(ValueError, match="Unknown label type"):
        SKLearnClassifier().fit(x, np.linspace(0, 1, len(x)))
    for hidden in ("32", 3.5, None):  # "32" used to become layers of 3 and 2 units: "units='3'"
        with pytest.raises(ValueError, match=r"argument `hidden`: .* tuple of positive integers .* received hidden="):
            SKLearnClassifier(hidden=hidden).fit(x, y)
    for hidden in (8, (8, 4), [8], np.array([8, 4])):
        assert [l.units for l in SKLearnClassifier(hidden=hidden, epochs=1).fit(x, y).model_.layers][:-1] == list(
            np.atleast_1d(hidden)
        )


def test_cross_val_score_runs_it():
    x, y = blobs()
    scores = cross_val_score(SKLearnClassifier(hidden=(16,), epochs=30, learning_rate=0.01, random_state=0), x, y, cv=3)
    assert scores.shape == (3,) and scores.min() > 0.8


# ---------------------------------------------------------------- the regressor


def test_regressor_keeps_the_shape_of_y():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 4))
    y = x @ np.array([1.0, -2.0, 0.5, 0.0]) + 0.1
    reg = SKLearnRegressor(hidden=(32,), epochs=40, learning_rate=0.01, random_state=0).fit(x, y)
    assert reg.predict(x).shape == (200,) and reg.predict(x).dtype == np.float64
    assert reg.model_.loss.name in ("mse", "mean_squared_error") and reg.model_.layers[-1].units == 1
    assert reg.score(x, y) > 0.9
    y2 = np.stack([y, -y], axis=1)
    reg2 = SKLearnRegressor(hidden=(32,), epochs=40, learning_rate=0.01, random_state=0).fit(x, y2)
    assert reg2.predict(x).shape == (200, 2) and reg2.score(x, y2) > 0.9


# ---------------------------------------------------------------- pickling


def test_sequential_pickles_predicts_identically_and_continues_training():
    x, y = blobs()
    cdnn.utils.set_random_seed(0)
    model = cdnn.Sequential(
        [
            layers.Input(shape=(5,)),
            layers.Dense(16, activation="relu"),
            layers.Dropout(0.2),
            layers.Dense(3, activation="softmax"),
        ],
        name="모델",
    )
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x, y, epochs=2, verbose=0)
    clone = pickle.loads(pickle.dumps(model))
    assert clone.name == "모델" and [l.name for l in clone.layers] == [l.name for l in model.layers]
    np.testing.assert_array_equal(clone.predict(x, verbose=0), model.predict(x, verbose=0))
    assert clone.optimizer.iterations == model.optimizer.iterations == 8
    for a, b in zip(clone.optimizer.variables, model.optimizer.variables):
        np.testing.assert_array_equal(a, b)
    # the optimizer state came along: one more epoch of each, same seed, gives the same weights
    cdnn.utils.set_random_seed(7)
    h1 = model.fit(x, y, epochs=1, verbose=0).history
    cdnn.utils.set_random_seed(7)
    h2 = clone.fit(x, y, epochs=1, verbose=0).history
    assert same_weights(model, clone) and h1 == h2
    # the state is the model file's bytes: no pickled objects inside
    state = model.__getstate__()
    assert set(state) == {"cdnn_state", "file"} and state["file"][:2] == b"PK"


def test_unbuilt_and_uncompiled_models_pickle_too():
    model = cdnn.Sequential([layers.Dense(4, activation="tanh"), layers.Dense(1)], name="lazy")
    model.compile(optimizer=cdnn.optimizers.SGD(0.05, momentum=0.9), loss="mse")
    clone = copy.deepcopy(model)
    assert not clone.built and clone.compiled and clone.name == "lazy"
    assert clone.optimizer.get_config() == model.optimizer.get_config()
    assert clone.get_config() == model.get_config()
    bare = pickle.loads(pickle.dumps(cdnn.Sequential([layers.Input(shape=(3,))])))
    assert bare.input_shape == (None, 3) and not bare.compiled


def test_load_model_still_refuses_pickles(tmp_path):
    path = tmp_path / "model.npz"
    np.savez(path, x=np.array([object()], dtype=object))
    with pytest.raises(ValueError, match="pickled|no architecture record"):
        cdnn.models.load_model(path)


def test_fitted_estimators_pickle():
    x, y = blobs()
    clf = SKLearnClassifier(hidden=(8,), epochs=3, random_state=0).fit(x, y)
    back = pickle.loads(pickle.dumps(clf))
    np.testing.assert_array_equal(back.predict_proba(x), clf.predict_proba(x))
    assert back.get_params() == clf.get_params() and back.history_ == clf.history_


# ---------------------------------------------------------------- threads


def _threads_of_a_fit(_):
    import cdnn as c
    from cdnn.wrappers import SKLearnClassifier as Clf

    rng = np.random.default_rng(0)
    est = Clf(hidden=(4,), epochs=1).fit(rng.normal(size=(20, 3)), np.arange(20) % 2)
    return est.n_threads_, c.get_num_threads()


@pytest.fixture
def default_threads():
    """OpenMP's default thread count (other tests may leave an explicit count behind), and back after."""
    cdnn.set_num_threads(0)
    yield cdnn.get_num_threads()
    cdnn.set_num_threads(0)


def test_a_fit_respects_threadpoolctl_and_set_num_threads(default_threads):
    threadpoolctl = pytest.importorskip("threadpoolctl")
    with threadpoolctl.threadpool_limits(1):
        assert _threads_of_a_fit(0) == (1, 1)
    assert _threads_of_a_fit(0) == (default_threads, default_threads)
    cdnn.set_num_threads(1)  # an explicit count wins, also over threadpoolctl
    assert _threads_of_a_fit(0) == (1, 1)
    with threadpoolctl.threadpool_limits(2):
        assert _threads_of_a_fit(0) == (1, 1)


def test_loky_workers_run_each_fit_on_their_share_of_the_cores():
    # joblib gives each of n_jobs loky workers OMP_NUM_THREADS = cores // n_jobs (at least 1),
    # unless OMP_NUM_THREADS is set already, or inner_max_num_threads says otherwise
    # (a serial build, CDNN_NO_OPENMP=1, always runs on one)
    omp = cdnn.build_info()["openmp"]
    share = int(os.environ.get("OMP_NUM_THREADS") or max(joblib.cpu_count() // 2, 1)) if omp else 1
    got = joblib.Parallel(n_jobs=2)(joblib.delayed(_threads_of_a_fit)(i) for i in range(2))
    assert got == [(share, share)] * 2
    with joblib.parallel_backend("loky", inner_max_num_threads=3):
        got = joblib.Parallel(n_jobs=2)(joblib.delayed(_threads_of_a_fit)(i) for i in range(2))
    assert got == [(3, 3) if omp else (1, 1)] * 2


# ---------------------------------------------------------------- searches on Fashion-MNIST

GRID = {"hidden": [(32,), (64,)], "learning_rate": [1e-3, 3e-3]}


@pytest.fixture(scope="module")
def fashion_slice():
    """2,000 Fashion-MNIST training images, flattened and scaled to [0, 1]."""
    try:
        (x, y), _ = cdnn.datasets.fashion_mnist.load_data()
    except cdnn.datasets.DatasetError as exc:
        pytest.skip(
            f"Fashion-MNIST is not available: {str(exc).splitlines()[0]} "
            f"(apt-get install dataset-fashion-mnist, or set CDNN_DATA)"
        )
    return x[:2000].reshape(2000, -1) / 255.0, y[:2000]


def _search(x, y, n_jobs):
    search = GridSearchCV(SKLearnClassifier(epochs=2, random_state=0), GRID, cv=3, n_jobs=n_jobs, refit=False)
    return search.fit(x, y).cv_results_


@pytest.fixture(scope="module")
def serial_results(fashion_slice):
    return _search(*fashion_slice, n_jobs=1)


@pytest.mark.slow
def test_grid_search_with_loky_equals_the_serial_search(fashion_slice, serial_results):
    assert serial_results["mean_test_score"].min() > 0.65
    parallel = _search(*fashion_slice, n_jobs=2)
    np.testing.assert_array_equal(parallel["mean_test_score"], serial_results["mean_test_score"])
    assert parallel["params"] == serial_results["params"]


@pytest.mark.slow
@pytest.mark.dask
def test_grid_search_on_a_dask_cluster_equals_the_serial_search(fashion_slice, serial_results):
    pytest.importorskip("dask", reason="dask is not installed: pip install 'dask[distributed]'")
    distributed = pytest.importorskip(
        "distributed", reason="dask.distributed is not installed: pip install 'dask[distributed]'"
    )
    with (
        distributed.LocalCluster(
            n_workers=2, processes=True, threads_per_worker=1, host="127.0.0.1", dashboard_address=None
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        with joblib.parallel_backend("dask"):
            results = _search(*fashion_slice, n_jobs=-1)
            threads = joblib.Parallel()(joblib.delayed(_threads_of_a_fit)(i) for i in range(2))
        workers = client.run(os.getpid)
    assert len(workers) == 2
    assert threads == [(1, 1)] * 2  # Dask's workers start with OMP_NUM_THREADS=1
    np.testing.assert_array_equal(results["mean_test_score"], serial_results["mean_test_score"])
