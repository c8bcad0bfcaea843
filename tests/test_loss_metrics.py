"""Losses as metrics: ``BinaryCrossentropy``, ``CategoricalCrossentropy``, ``SparseCategoricalCrossentropy``,
``KLDivergence``, ``Poisson``, ``Hinge``, ``SquaredHinge``, ``CategoricalHinge`` (and the regression metrics
``CosineSimilarity``, ``LogCoshError`` by name) against real Keras 3 (JAX backend): Keras' docstring
examples, random data with sample weights over several updates, the names ``compile`` takes, configs,
fit/evaluate histories of chains and graph models, and ``.keras`` files that real Keras loads."""

import os

import numpy as np
import pytest

import cdnn

M = cdnn.metrics

AT_CLASSES = {
    "PrecisionAtRecall": {"recall": 0.4},
    "RecallAtPrecision": {"precision": 0.7, "num_thresholds": 30},
    "SensitivityAtSpecificity": {"specificity": 0.2, "class_id": 1},
    "SpecificityAtSensitivity": {"sensitivity": 1.0},
}
CLASSES = [
    "BinaryCrossentropy",
    "CategoricalCrossentropy",
    "SparseCategoricalCrossentropy",
    "KLDivergence",
    "Poisson",
    "Hinge",
    "SquaredHinge",
    "CategoricalHinge",
]


def _keras():
    os.environ.setdefault("KERAS_BACKEND", "jax")
    pytest.importorskip("jax")
    return pytest.importorskip("keras", reason="real Keras 3 is the oracle of these tests")


# ---- Keras 3's docstring examples (keras/src/metrics/probabilistic_metrics.py, hinge_metrics.py) -------------
Y2 = [[0, 1], [0, 0]]
P2 = [[0.6, 0.4], [0.4, 0.6]]
DOCSTRING_CASES = [
    ("KLDivergence", Y2, P2, 0.45814306, [1, 0], 0.9162892),
    ("Poisson", Y2, [[1, 1], [0, 0]], 0.49999997, [1, 0], 0.99999994),
    ("BinaryCrossentropy", Y2, P2, 0.81492424, [1, 0], 0.9162905),
    (
        "CategoricalCrossentropy",
        [[0, 1, 0], [0, 0, 1]],
        [[0.05, 0.95, 0], [0.1, 0.8, 0.1]],
        1.1769392,
        [0.3, 0.7],
        1.6271976,
    ),
    ("SparseCategoricalCrossentropy", [1, 2], [[0.05, 0.95, 0], [0.1, 0.8, 0.1]], 1.1769392, [0.3, 0.7], 1.6271976),
    ("Hinge", Y2, P2, 1.3, [1, 0], 1.1),
    ("SquaredHinge", Y2, P2, 1.86, [1, 0], 1.46),
    ("CategoricalHinge", Y2, P2, 1.4000001, [1, 0], 1.2),
]
# keras/src/metrics/confusion_metrics.py: (class, argument, y_true, y_pred, expected, weights, expected weighted)
Y5, P5 = [0, 0, 0, 1, 1], [0, 0.3, 0.8, 0.3, 0.8]
AT_CASES = [
    ("SensitivityAtSpecificity", 0.5, Y5, P5, 0.5, [1, 1, 2, 2, 1], 0.333333),
    ("SpecificityAtSensitivity", 0.5, Y5, P5, 0.66666667, [1, 1, 2, 2, 2], 0.5),
    ("PrecisionAtRecall", 0.5, Y5, P5, 0.5, [2, 2, 2, 1, 1], 0.33333333),
    ("RecallAtPrecision", 0.8, [0, 0, 1, 1], [0, 0.5, 0.3, 0.9], 0.5, [1, 0, 0, 1], 1.0),
]


@pytest.mark.parametrize("case", DOCSTRING_CASES, ids=lambda c: c[0])
def test_keras_docstring_examples(case):
    name, y_true, y_pred, expected, weights, expected_weighted = case
    m = getattr(M, name)()
    m.update_state(y_true, y_pred)
    assert float(m.result()) == pytest.approx(expected, rel=1e-6)
    m.reset_state()
    assert float(m.result()) == 0.0
    m.update_state(y_true, y_pred, sample_weight=weights)
    assert float(m.result()) == pytest.approx(expected_weighted, rel=1e-6)


@pytest.mark.parametrize("case", AT_CASES, ids=lambda c: c[0])
def test_keras_docstring_examples_of_rates_at_a_rate(case):
    name, value, y_true, y_pred, expected, weights, expected_weighted = case
    m = getattr(M, name)(value)
    m.update_state(y_true, y_pred)
    assert float(m.result()) == pytest.approx(expected, rel=1e-5)
    m.reset_state()
    m.update_state(y_true, y_pred, sample_weight=weights)
    assert float(m.result()) == pytest.approx(expected_weighted, rel=1e-5)


# ---- random data, sample weights, several updates: against Keras 3 ------------------------------------------
def _case_data(kind, n=37, seed=0):
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(n, 4)).astype(np.float32) * 2
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    ys = rng.integers(0, 4, n)
    w = rng.random(n).astype(np.float32) * 2
    w[3] = 0.0
    data = {
        "b": (rng.integers(0, 2, (n, 3)).astype(np.float32), 1 / (1 + np.exp(-logits[:, :3]))),
        "bl": (rng.integers(0, 2, (n, 3)).astype(np.float32), logits[:, :3]),
        "c": (np.eye(4, dtype=np.float32)[ys], probs),
        "cl": (np.eye(4, dtype=np.float32)[ys], logits),
        "soft": (rng.dirichlet(np.ones(4), n).astype(np.float32), probs),
        "s": (ys, probs),
        "sl": (ys, logits),
        "p": (rng.poisson(2.0, (n, 3)).astype(np.float32), np.exp(logits[:, :3] / 2)),
        "h": (rng.choice([-1.0, 1.0], (n, 3)).astype(np.float32), logits[:, :3]),
        "h01": (rng.integers(0, 2, (n, 3)).astype(np.float32), logits[:, :3]),
    }
    return data[kind], w


KERAS_CASES = [
    ("BinaryCrossentropy", {}, "b"),
    ("BinaryCrossentropy", {"label_smoothing": 0.2}, "b"),
    ("BinaryCrossentropy", {"from_logits": True}, "bl"),
    ("BinaryCrossentropy", {"from_logits": True, "label_smoothing": 0.1}, "bl"),
    ("CategoricalCrossentropy", {}, "c"),
    ("CategoricalCrossentropy", {"label_smoothing": 0.3}, "c"),
    ("CategoricalCrossentropy", {"from_logits": True}, "cl"),
    ("CategoricalCrossentropy", {}, "soft"),
    ("SparseCategoricalCrossentropy", {}, "s"),
    ("SparseCategoricalCrossentropy", {"from_logits": True}, "sl"),
    ("SparseCategoricalCrossentropy", {"ignore_class": 1}, "s"),
    ("SparseCategoricalCrossentropy", {"from_logits": True, "ignore_class": 2}, "sl"),
    ("KLDivergence", {}, "soft"),
    ("KLDivergence", {}, "c"),
    ("Poisson", {}, "p"),
    ("Hinge", {}, "h"),
    ("Hinge", {}, "h01"),
    ("SquaredHinge", {}, "h"),
    ("SquaredHinge", {}, "h01"),
    ("CategoricalHinge", {}, "c"),
    ("CategoricalHinge", {}, "h"),
    ("SensitivityAtSpecificity", {"specificity": 0.7}, "b"),
    ("SensitivityAtSpecificity", {"specificity": 0.4, "num_thresholds": 1}, "b"),
    ("SpecificityAtSensitivity", {"sensitivity": 0.6, "num_thresholds": 17}, "b"),
    ("SpecificityAtSensitivity", {"sensitivity": 0.6, "class_id": 2}, "c"),
    ("PrecisionAtRecall", {"recall": 0.3}, "b"),
    ("PrecisionAtRecall", {"recall": 0.8, "num_thresholds": 5}, "bl"),
    ("RecallAtPrecision", {"precision": 0.6}, "b"),
    ("RecallAtPrecision", {"precision": 0.99}, "b"),
    ("RecallAtPrecision", {"precision": 0.5, "class_id": 1, "num_thresholds": 50}, "c"),
]


@pytest.mark.parametrize("name, kwargs, kind", KERAS_CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(KERAS_CASES)])
def test_same_results_as_keras(name, kwargs, kind):
    keras = _keras()
    (y_true, y_pred), w = _case_data(kind)
    for weighted in (False, True):
        ours, theirs = getattr(M, name)(**kwargs), getattr(keras.metrics, name)(**kwargs)
        for s in (slice(0, 20), slice(20, None)):
            sw = w[s] if weighted else None
            ours.update_state(y_true[s], y_pred[s], sample_weight=sw)
            theirs.update_state(y_true[s], y_pred[s], sample_weight=sw)
        np.testing.assert_allclose(float(ours.result()), float(theirs.result()), rtol=2e-6, atol=1e-7)
        ours.reset_state()
        theirs.reset_state()
        assert float(ours.result()) == float(theirs.result()) == 0.0


@pytest.mark.parametrize("name", CLASSES + list(AT_CLASSES))
def test_config_is_keras_and_round_trips(name):
    keras = _keras()
    kwargs = {
        "BinaryCrossentropy": {"from_logits": True, "label_smoothing": 0.25},
        "CategoricalCrossentropy": {"label_smoothing": 0.1},
        "SparseCategoricalCrossentropy": {"from_logits": True, "ignore_class": 3},
        **AT_CLASSES,
    }.get(name, {})
    ours = getattr(M, name)(name="m", **kwargs)
    assert ours.get_config() == getattr(keras.metrics, name)(name="m", **kwargs).get_config()
    # the defaults (Keras numbers the default names of these classes per session: not compared)
    required = {k: v for k, v in AT_CLASSES.get(name, {}).items() if k not in ("num_thresholds", "class_id")}
    ours_default, theirs_default = getattr(M, name)(**required), getattr(keras.metrics, name)(**required)
    assert theirs_default.name.startswith(ours_default.name)
    assert {**ours_default.get_config(), "name": theirs_default.name} == theirs_default.get_config()
    back = type(ours).from_config(ours.get_config())
    assert type(back) is type(ours) and back.get_config() == ours.get_config()
    again = M.deserialize(M.serialize(ours))
    assert type(again) is type(ours) and again.get_config() == ours.get_config()
    # a config Keras wrote is read back by cdnn
    kconf = keras.metrics.serialize(getattr(keras.metrics, name)(**kwargs))
    assert M.deserialize(kconf).get_config() == kconf["config"]


NAMES = [
    "binary_crossentropy",
    "bce",
    "BCE",
    "BinaryCrossentropy",
    "categorical_crossentropy",
    "CategoricalCrossentropy",
    "sparse_categorical_crossentropy",
    "kl_divergence",
    "KLDivergence",
    "poisson",
    "hinge",
    "squared_hinge",
    "categorical_hinge",
    "cosine_similarity",
    "log_cosh_error",
    "LogCoshError",
    "precision_at_recall",
    "RecallAtPrecision",
]


def test_names_resolve_to_the_classes_keras_resolves_them_to():
    keras = _keras()
    for name in NAMES:
        if "precision" in name.lower():  # a class whose argument is required: Keras' get fails on it as cdnn's
            with pytest.raises(TypeError):
                keras.metrics.get(name)
            with pytest.raises(TypeError):
                M.get(name)
            continue
        assert type(M.get(name)).__name__ == type(keras.metrics.get(name)).__name__, name
    # Keras 3's metrics do not know the loss aliases kld, logcosh, huber_loss: neither does cdnn
    for name in ("kld", "KLD", "logcosh", "kullback_leibler_divergence"):
        with pytest.raises(ValueError):
            keras.metrics.get(name)
        with pytest.raises(ValueError, match=name):
            M.get(name)


def test_metric_functions_are_the_losses_functions():
    assert M.binary_crossentropy is cdnn.losses.binary_crossentropy
    assert M.kl_divergence is cdnn.losses.kl_divergence
    m = M.MeanMetricWrapper(M.poisson)
    assert M.MeanMetricWrapper.from_config(m.get_config())._fn is cdnn.losses.poisson


def test_unsupported_arguments_are_refused_at_construction():
    with pytest.raises(ValueError, match="recall"):
        M.PrecisionAtRecall(1.5)
    with pytest.raises(ValueError, match="num_thresholds"):
        M.SensitivityAtSpecificity(0.5, num_thresholds=0)
    with pytest.raises(ValueError, match="axis"):
        M.CategoricalCrossentropy(axis=0)
    with pytest.raises(ValueError, match="label_smoothing"):
        M.BinaryCrossentropy(label_smoothing=1.5)
    with pytest.raises(ValueError, match="ignore_class"):
        M.SparseCategoricalCrossentropy(ignore_class=1.5)


# ---- in compile: refused where the labels cannot fit ---------------------------------------------------------
@pytest.mark.parametrize(
    "loss, metric, words",
    [
        ("categorical_crossentropy", "sparse_categorical_crossentropy", "integer class labels"),
        ("sparse_categorical_crossentropy", "categorical_crossentropy", "one-hot labels"),
        ("sparse_categorical_crossentropy", "categorical_hinge", "one-hot labels"),
        ("sparse_categorical_crossentropy", "kl_divergence", "element by element"),
        ("sparse_categorical_crossentropy", "hinge", "element by element"),
    ],
)
def test_metrics_that_cannot_read_the_labels_are_refused_before_training(loss, metric, words):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(8, 3)).astype(np.float32)
    y = rng.integers(0, 4, 8) if loss.startswith("sparse") else np.eye(4)[rng.integers(0, 4, 8)]
    model = cdnn.Sequential([cdnn.Input((3,)), cdnn.layers.Dense(4, activation="softmax")])
    model.compile("sgd", loss, metrics=[metric])
    with pytest.raises(ValueError, match=words):
        model.fit(x, y, epochs=1, verbose=0)


# ---- fit / evaluate against Keras 3 --------------------------------------------------------------------------
def _data(n=48, seed=3, classes=4):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 5)).astype(np.float32)
    ys = rng.integers(0, classes, n)
    yb = (rng.random((n, 1)) > 0.5).astype(np.float32)
    sw = (rng.random(n) * 2).astype(np.float32)
    return x, ys, yb, sw


def _chain(lib, units, activation):
    return lib.Sequential(
        [lib.Input((5,)), lib.layers.Dense(8, activation="tanh"), lib.layers.Dense(units, activation=activation)]
    )


def _graph(lib):
    inp = lib.Input(shape=(5,), name="x")
    h = lib.layers.Dense(8, activation="tanh", name="h")(inp)
    o1 = lib.layers.Dense(4, activation="softmax", name="out1")(h)
    o2 = lib.layers.Dense(1, activation="sigmoid", name="out2")(h)
    return lib.Model(inp, [o1, o2])


def _assert_same(hk, hc, rtol=2e-4, atol=2e-5):
    assert sorted(hk) == sorted(hc)
    for key in hk:
        np.testing.assert_allclose(hc[key], hk[key], rtol=rtol, atol=atol, err_msg=key)


def _fit_both(make, compile_kw, x, y, sw, epochs=3):
    """The same model (Keras' initial weights) compiled alike in Keras and cdnn, trained with SGD without
    shuffling: histories and evaluate's dicts."""
    keras = _keras()
    keras.utils.set_random_seed(7)
    k, c = make(keras), make(cdnn)
    c.set_weights([np.asarray(w) for w in k.get_weights()])
    out = []
    for lib, model in ((keras, k), (cdnn, c)):
        kw = {key: (v(lib) if callable(v) else v) for key, v in compile_kw.items()}
        model.compile(optimizer=lib.optimizers.SGD(0.1), **kw)
        h = model.fit(
            x, y, sample_weight=sw, batch_size=8, epochs=epochs, shuffle=False, validation_split=0.25, verbose=0
        )
        e = model.evaluate(x, y, sample_weight=sw, verbose=0, return_dict=True)
        out.append((h.history, e))
    (hk, ek), (hc, ec) = out
    _assert_same(hk, hc)
    _assert_same(ek, ec)
    return hc, ec


def test_chain_categorical_fit_matches_keras():
    x, ys, _, sw = _data()
    y = np.eye(4, dtype=np.float32)[ys]
    compile_kw = {
        "loss": "categorical_crossentropy",
        "metrics": lambda lib: [
            "categorical_crossentropy",
            "kl_divergence",
            "poisson",
            "categorical_hinge",
            "cosine_similarity",
            "log_cosh_error",
            lib.metrics.CategoricalCrossentropy(label_smoothing=0.1, name="smooth"),
            lib.metrics.KLDivergence(),
        ],
        "weighted_metrics": lambda lib: ["categorical_crossentropy", lib.metrics.Hinge(name="h")],
    }
    hc, _ = _fit_both(lambda lib: _chain(lib, 4, "softmax"), compile_kw, x, y, sw)
    assert {"kl_divergence_1", "weighted_categorical_crossentropy", "val_smooth", "h"} <= set(hc)


def test_chain_binary_fit_matches_keras():
    x, _, yb, sw = _data(seed=4)
    compile_kw = {
        "loss": "binary_crossentropy",
        "metrics": lambda lib: [
            "binary_crossentropy",
            "bce",
            "hinge",
            "squared_hinge",
            lib.metrics.BinaryCrossentropy(label_smoothing=0.2),
            lib.metrics.PrecisionAtRecall(0.5, name="p_at_r"),
            lib.metrics.SensitivityAtSpecificity(0.5, num_thresholds=50, name="s_at_s"),
        ],
        "weighted_metrics": lambda lib: [
            "squared_hinge",
            "BinaryCrossentropy",
            lib.metrics.RecallAtPrecision(0.6, name="r_at_p"),
        ],
    }
    hc, _ = _fit_both(lambda lib: _chain(lib, 1, "sigmoid"), compile_kw, x, yb, sw)
    assert {"bce", "binary_crossentropy_1", "weighted_squared_hinge", "val_BinaryCrossentropy"} <= set(hc)


def test_chain_sparse_fit_with_logits_and_ignore_class_matches_keras():
    x, ys, _, sw = _data(seed=5)
    compile_kw = {
        "loss": lambda lib: lib.losses.SparseCategoricalCrossentropy(from_logits=True),
        "metrics": lambda lib: [
            lib.metrics.SparseCategoricalCrossentropy(from_logits=True),
            lib.metrics.SparseCategoricalCrossentropy(from_logits=True, ignore_class=0, name="ign"),
        ],
        "weighted_metrics": lambda lib: [
            lib.metrics.SparseCategoricalCrossentropy(from_logits=True, ignore_class=1, name="wign")
        ],
    }
    _fit_both(lambda lib: _chain(lib, 4, "linear"), compile_kw, x, ys, sw)


def test_graph_multi_output_fit_matches_keras():
    x, ys, yb, sw = _data(seed=6)
    compile_kw = {
        "loss": ["sparse_categorical_crossentropy", "binary_crossentropy"],
        "loss_weights": [1.0, 0.5],
        "metrics": {
            "out1": ["sparse_categorical_crossentropy"],
            "out2": ["binary_crossentropy", "hinge", "poisson", "kl_divergence"],
        },
        "weighted_metrics": lambda lib: {
            "out1": ["sparse_categorical_crossentropy"],
            "out2": ["squared_hinge", lib.metrics.SpecificityAtSensitivity(0.4, name="s_at_s")],
        },
    }
    hc, _ = _fit_both(_graph, compile_kw, x, [ys, yb], sw)
    assert {
        "out2_hinge",
        "val_out1_sparse_categorical_crossentropy",
        "out1_weighted_sparse_categorical_crossentropy",
    } <= set(hc)


def test_graph_single_output_fit_matches_keras():
    x, ys, _, sw = _data(seed=7)

    def make(lib):
        inp = lib.Input(shape=(5,))
        h = lib.layers.Dense(6, activation="relu")(inp)
        return lib.Model(inp, lib.layers.Dense(4, activation="softmax")(h))

    compile_kw = {
        "loss": "categorical_crossentropy",
        "metrics": ["categorical_crossentropy", "kl_divergence", "categorical_hinge"],
        "weighted_metrics": ["poisson"],
    }
    _fit_both(make, compile_kw, x, np.eye(4, dtype=np.float32)[ys], sw)


# ---- saved and loaded: cdnn's files, .keras files that real Keras loads --------------------------------------
def test_saved_metrics_load_in_cdnn_and_in_real_keras(tmp_path):
    pytest.importorskip("h5py")
    keras = _keras()
    x, ys, _, sw = _data(seed=8)
    y = np.eye(4, dtype=np.float32)[ys]
    model = _chain(cdnn, 4, "softmax")
    model.compile(
        cdnn.optimizers.SGD(0.1),
        "categorical_crossentropy",
        metrics=[
            "categorical_crossentropy",
            "kl_divergence",
            M.CategoricalCrossentropy(label_smoothing=0.1, name="smooth"),
            M.Hinge(),
            M.CategoricalHinge(name="ch"),
            M.SpecificityAtSensitivity(0.5, class_id=1, name="spec"),
        ],
        weighted_metrics=[M.Poisson(), "squared_hinge"],
    )
    model.fit(x, y, sample_weight=sw, epochs=1, batch_size=8, verbose=0)
    want = model.evaluate(x, y, sample_weight=sw, verbose=0, return_dict=True)
    for name in ("m.cdnn", "m.keras"):
        model.save(tmp_path / name)
        back = cdnn.models.load_model(tmp_path / name)
        assert back.evaluate(x, y, sample_weight=sw, verbose=0, return_dict=True) == pytest.approx(want, rel=1e-6)
        user = back._compile_metrics._user_metrics
        assert [type(m).__name__ for m in user[2:]] == [
            "CategoricalCrossentropy",
            "Hinge",
            "CategoricalHinge",
            "SpecificityAtSensitivity",
        ]
        assert user[2].label_smoothing == 0.1 and user[5].class_id == 1
    theirs = keras.models.load_model(tmp_path / "m.keras")
    config = theirs.get_compile_config()
    assert config["metrics"][:2] == ["categorical_crossentropy", "kl_divergence"]
    got = theirs.evaluate(x, y, sample_weight=sw, verbose=0, return_dict=True)
    _assert_same(got, want, rtol=1e-5, atol=1e-6)
    assert {"smooth", "spec", "squared_hinge", "poisson"} <= set(got)
