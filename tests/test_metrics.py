"""Metrics: Keras 3's docstring examples (keras/src/metrics/*_metrics.py), the NumPy reference's
loops, several update_state calls with sample weights, and fit/evaluate's logs."""

import math
import os

import numpy as np
import pytest
import reference as ref

import cdnn as keras

M = keras.metrics

# (metric, y_true, y_pred, expected, sample_weight, expected weighted): Keras 3 docstrings
DOCSTRING_CASES = [
    # accuracy_metrics.py
    (lambda: M.Accuracy(), [[1], [2], [3], [4]], [[0], [2], [3], [4]], 0.75, [1, 1, 0, 0], 0.5),
    (lambda: M.BinaryAccuracy(), [[1], [1], [0], [0]], [[0.98], [1], [0], [0.6]], 0.75, [1, 0, 0, 1], 0.5),
    (lambda: M.CategoricalAccuracy(), [[0, 0, 1], [0, 1, 0]], [[0.1, 0.9, 0.8], [0.05, 0.95, 0]], 0.5, [0.7, 0.3], 0.3),
    (lambda: M.SparseCategoricalAccuracy(), [[2], [1]], [[0.1, 0.6, 0.3], [0.05, 0.95, 0]], 0.5, [0.7, 0.3], 0.3),
    (
        lambda: M.TopKCategoricalAccuracy(k=1),
        [[0, 0, 1], [0, 1, 0]],
        [[0.1, 0.9, 0.8], [0.05, 0.95, 0]],
        0.5,
        [0.7, 0.3],
        0.3,
    ),
    (lambda: M.SparseTopKCategoricalAccuracy(k=1), [2, 1], [[0.1, 0.9, 0.8], [0.05, 0.95, 0]], 0.5, [0.7, 0.3], 0.3),
    # regression_metrics.py
    (lambda: M.MeanSquaredError(), [[0, 1], [0, 0]], [[1, 1], [0, 0]], 0.25, [1, 0], 0.5),
    (lambda: M.MeanAbsoluteError(), [[0, 1], [0, 0]], [[1, 1], [0, 0]], 0.25, [1, 0], 0.5),
    (lambda: M.MeanAbsolutePercentageError(), [[0, 1], [0, 0]], [[1, 1], [0, 0]], 250000000.0, [1, 0], 500000000.0),
    (lambda: M.MeanSquaredLogarithmicError(), [[0, 1], [0, 0]], [[1, 1], [0, 0]], 0.12011322, [1, 0], 0.24022643),
    (lambda: M.RootMeanSquaredError(), [[0, 1], [0, 0]], [[1, 1], [0, 0]], 0.5, [1, 0], 0.70710677),
    (
        lambda: M.CosineSimilarity(),
        [[0.0, 1.0], [1.0, 1.0]],
        [[1.0, 0.0], [1.0, 1.0]],
        0.49999997,
        [0.3, 0.7],
        0.6999999,
    ),
    (lambda: M.LogCoshError(), [[0, 1], [0, 0]], [[1, 1], [0, 0]], 0.10844523, [1, 0], 0.21689045),
    # confusion_metrics.py
    (lambda: M.FalsePositives(), [0, 1, 0, 0], [0, 0, 1, 1], 2.0, [0, 0, 1, 0], 1.0),
    (lambda: M.FalseNegatives(), [0, 1, 1, 1], [0, 1, 0, 0], 2.0, [0, 0, 1, 0], 1.0),
    (lambda: M.TrueNegatives(), [0, 1, 0, 0], [1, 1, 0, 0], 2.0, [0, 0, 1, 0], 1.0),
    (lambda: M.TruePositives(), [0, 1, 1, 1], [1, 0, 1, 1], 2.0, [0, 0, 1, 0], 1.0),
    (lambda: M.Precision(), [0, 1, 1, 1], [1, 0, 1, 1], 0.6666667, [0, 0, 1, 0], 1.0),
    (lambda: M.Recall(), [0, 1, 1, 1], [1, 0, 1, 1], 0.6666667, [0, 0, 1, 0], 1.0),
    (lambda: M.AUC(num_thresholds=3), [0, 0, 1, 1], [0, 0.5, 0.3, 0.9], 0.75, [1, 0, 0, 1], 1.0),
]


@pytest.mark.parametrize("case", DOCSTRING_CASES, ids=lambda c: type(c[0]()).__name__)
def test_keras_docstring_examples(case):
    make, y_true, y_pred, expected, weights, expected_weighted = case
    m = make()
    m.update_state(y_true, y_pred)
    assert float(m.result()) == pytest.approx(expected, rel=1e-6)
    m.reset_state()
    m.update_state(y_true, y_pred, sample_weight=weights)
    assert float(m.result()) == pytest.approx(expected_weighted, rel=1e-6)


def test_more_docstring_examples():
    m = M.Precision(top_k=2)
    m.update_state([0, 0, 1, 1], [1, 1, 1, 1])
    assert float(m.result()) == 0.0
    m = M.Precision(top_k=4)
    m.update_state([0, 0, 1, 1], [1, 1, 1, 1])
    assert float(m.result()) == 0.5
    m = M.R2Score()
    m.update_state(np.array([[1], [4], [3]]), np.array([[2], [4], [4]]))
    assert float(m.result()) == pytest.approx(0.57142854, rel=1e-6)
    y_true = np.array([[1, 1, 1], [1, 0, 0], [1, 1, 0]], np.int32)
    y_pred = np.array([[0.2, 0.6, 0.7], [0.2, 0.6, 0.6], [0.6, 0.8, 0.0]], np.float32)
    m = M.F1Score(threshold=0.5)
    m.update_state(y_true, y_pred)
    np.testing.assert_allclose(m.result(), [0.5, 0.8, 0.6666667], rtol=1e-6)
    m = M.FBetaScore(beta=2.0, threshold=0.5)
    m.update_state(y_true, y_pred)
    np.testing.assert_allclose(m.result(), [0.3846154, 0.90909094, 0.8333334], rtol=1e-6)
    m = M.SparseTopKCategoricalAccuracy(k=1, from_sorted_ids=True)
    m.update_state([2, 1], [[1, 0, 3], [1, 2, 3]])
    assert float(m.result()) == 0.5
    m = M.Sum()
    m.update_state([1, 3, 5, 7], sample_weight=[1, 1, 0, 0])
    assert float(m.result()) == 4.0
    m = M.Mean()
    m.update_state([1, 3, 5, 7], sample_weight=[1, 1, 0, 0])
    assert float(m.result()) == 2.0


def _data(seed=0, n=61, c=4):
    rng = np.random.default_rng(seed)
    probs = rng.random((n, c))
    probs /= probs.sum(axis=1, keepdims=True)
    return rng, probs, rng.integers(0, 2, (n, 1)).astype(np.float32), rng.random((n, 1)), rng.random(n)


@pytest.mark.parametrize("curve", ["ROC", "PR"])
@pytest.mark.parametrize("num_thresholds", [3, 7, 200])
def test_auc_matches_the_reference_loops_over_several_updates(curve, num_thresholds):
    _, _, y, p, w = _data()
    m = M.AUC(num_thresholds=num_thresholds, curve=curve)
    for s in (slice(0, 1), slice(1, 33), slice(33, None)):
        m.update_state(y[s], p[s], sample_weight=w[s])
    assert float(m.result()) == pytest.approx(ref.auc(y, p, num_thresholds, curve, w), rel=1e-9, abs=1e-12)


def test_auc_multi_label_is_the_mean_of_the_columns():
    rng, probs, *_ = _data()
    y = rng.integers(0, 2, probs.shape)
    m = M.AUC(multi_label=True)
    m.update_state(y[:20], probs[:20])
    m.update_state(y[20:], probs[20:])
    expected = np.mean([ref.auc(y[:, j], probs[:, j]) for j in range(probs.shape[1])])
    assert float(m.result()) == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("thresholds", [None, 0.3, [0.1, 0.5, 0.9]])
def test_precision_and_recall_match_the_reference_counts(thresholds):
    _, _, y, p, w = _data(1)
    ts = [0.5] if thresholds is None else np.atleast_1d(thresholds)
    c = ref.confusion_at_thresholds(y, p, ts, w)
    prec, rec = M.Precision(thresholds=thresholds), M.Recall(thresholds=thresholds)
    for s in (slice(0, 30), slice(30, None)):
        prec.update_state(y[s], p[s], sample_weight=w[s])
        rec.update_state(y[s], p[s], sample_weight=w[s])
    np.testing.assert_allclose(np.atleast_1d(prec.result()), c["tp"] / (c["tp"] + c["fp"]), rtol=1e-12)
    np.testing.assert_allclose(np.atleast_1d(rec.result()), c["tp"] / (c["tp"] + c["fn"]), rtol=1e-12)


def test_class_id_and_top_k_select_what_counts():
    rng, probs, *_ = _data(2)
    labels = rng.integers(0, probs.shape[1], len(probs))
    onehot = np.eye(probs.shape[1])[labels]
    r = M.Recall(class_id=2)
    r.update_state(onehot, probs)
    pred2 = probs[:, 2] > 0.5
    assert float(r.result()) == pytest.approx((pred2 & (labels == 2)).sum() / (labels == 2).sum())
    p = M.Precision(top_k=1)
    p.update_state(onehot, probs)  # the top-1 prediction of each row: precision = top-1 accuracy
    assert float(p.result()) == pytest.approx(np.mean(probs.argmax(1) == labels))


def test_r2_and_fbeta_match_the_reference():
    rng = np.random.default_rng(3)
    yt = rng.normal(size=(40, 3))
    yp = yt + rng.normal(size=(40, 3))
    m = M.R2Score()
    m.update_state(yt[:13], yp[:13])
    m.update_state(yt[13:], yp[13:])
    assert float(m.result()) == pytest.approx(ref.r2_score(yt, yp), rel=1e-9)
    lab = rng.integers(0, 2, (40, 3))
    pr = rng.random((40, 3))
    f = M.FBetaScore(beta=0.5, threshold=0.5)
    f.update_state(lab[:7], pr[:7])
    f.update_state(lab[7:], pr[7:])
    np.testing.assert_allclose(f.result(), ref.f_beta(lab, pr, 0.5), rtol=1e-6)
    f = M.F1Score(average="macro", threshold=0.5)
    f.update_state(lab, pr)
    assert float(f.result()) == pytest.approx(np.mean(ref.f_beta(lab, pr)), rel=1e-6)


def test_metric_objects_are_stateful_and_serializable():
    m = M.AUC(num_thresholds=50, curve="PR", name="pr_auc")
    m.update_state([0, 1], [0.2, 0.8])
    assert float(m.result()) > 0
    m.reset_state()
    assert float(m.result()) == 0.0
    cfg = M.serialize(m)
    again = M.deserialize(cfg)
    assert type(again) is M.AUC and again.name == "pr_auc" and again.num_thresholds == 50 and again.curve == "PR"
    assert M.get("mae").name == "mean_absolute_error" and isinstance(
        M.get("RootMeanSquaredError"), M.RootMeanSquaredError
    )
    assert m.result().numpy() == 0.0  # results answer .numpy() as Keras tensors
    with pytest.raises(ValueError, match="auroc"):
        M.get("auroc")


class BatchCount(keras.metrics.Metric):
    """A user metric: counts its update_state calls and the rows it saw (as a Keras 3 subclass)."""

    def __init__(self, name="batch_count", **kwargs):
        super().__init__(name=name, **kwargs)
        self.calls = self.add_variable(shape=(), initializer="zeros", name="calls")
        self.rows = self.add_variable(shape=(), initializer="zeros", name="rows")

    def update_state(self, y_true, y_pred, sample_weight=None):
        assert isinstance(y_pred, np.ndarray)
        self.calls.assign_add(1)
        self.rows.assign_add(len(y_pred))

    def result(self):
        return self.calls.numpy()


# --------------------------------------------------------------------------- in compile/fit/evaluate


def _binary_problem(n=200, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 6)).astype(np.float32)
    y = (x[:, 0] - x[:, 1] > 0).astype(np.float32)
    return x, y


def _model(units=1, activation="sigmoid"):
    keras.utils.set_random_seed(1)
    return keras.Sequential(
        [
            keras.layers.Input((6,)),
            keras.layers.Dense(8, activation="relu"),
            keras.layers.Dense(units, activation=activation),
        ]
    )


def test_history_keys_are_sorted_as_keras_with_duplicate_names_numbered():
    x, y = _binary_problem()
    model = _model()
    model.compile("adam", "binary_crossentropy", metrics=["accuracy", "AUC", M.Precision(), "mae", "mae"])
    h = model.fit(x, y, epochs=2, batch_size=16, validation_split=0.25, verbose=0)
    assert list(h.history) == [
        "AUC",
        "accuracy",
        "loss",
        "mae",
        "mae_1",
        "precision",
        "val_AUC",
        "val_accuracy",
        "val_loss",
        "val_mae",
        "val_mae_1",
        "val_precision",
    ]
    logs = model.evaluate(x, y, verbose=0, return_dict=True)
    assert list(logs) == ["AUC", "accuracy", "loss", "mae", "mae_1", "precision"]
    # the list: loss, then the metrics in compile order (Keras repeats a duplicate's value, then adds mae_1)
    values = model.evaluate(x, y, verbose=0)
    assert values == [
        logs["loss"],
        logs["accuracy"],
        logs["AUC"],
        logs["precision"],
        logs["mae"],
        logs["mae"],
        logs["mae_1"],
    ]
    assert model.metrics_names == ["loss", "compile_metrics"]


def test_evaluate_metrics_equal_the_metrics_of_the_predictions():
    x, y = _binary_problem()
    model = _model()
    model.compile(
        "adam",
        "binary_crossentropy",
        metrics=["accuracy", M.AUC(), M.Precision(), M.Recall(), "mse", M.F1Score(threshold=0.5)],
    )
    model.fit(x, y, epochs=1, verbose=0)
    logs = model.evaluate(x, y, batch_size=7, verbose=0, return_dict=True)
    p = model.predict(x, verbose=0)
    assert logs["auc"] == pytest.approx(ref.auc(y, p), rel=1e-9)
    c = ref.confusion_at_thresholds(y, p, [0.5])
    assert logs["precision"] == pytest.approx(c["tp"][0] / (c["tp"][0] + c["fp"][0]))
    assert logs["recall"] == pytest.approx(c["tp"][0] / (c["tp"][0] + c["fn"][0]))
    assert logs["accuracy"] == pytest.approx(np.mean((p[:, 0] > 0.5) == y))
    assert logs["mse"] == pytest.approx(np.mean((p[:, 0] - y) ** 2), rel=1e-5)
    assert logs["f1_score"] == pytest.approx(ref.f_beta(y[:, None], p)[0], rel=1e-5)


def test_training_metrics_come_from_each_steps_outputs():
    """One batch per epoch, SGD with learning rate 0: the step's outputs are the predictions, so the
    training logs equal the metrics of predict's outputs (and the core's own accuracy agrees)."""
    x, y = _binary_problem(64)
    model = _model()
    model.compile(
        keras.optimizers.SGD(learning_rate=0.0),
        "binary_crossentropy",
        metrics=["accuracy", M.AUC(num_thresholds=13), "mae", M.BinaryAccuracy(name="acc2")],
    )
    h = model.fit(x, y, epochs=1, batch_size=64, shuffle=False, verbose=0).history
    p = model.predict(x, verbose=0)
    assert h["auc"][0] == pytest.approx(ref.auc(y, p, 13), rel=1e-9)
    assert h["mae"][0] == pytest.approx(np.mean(np.abs(p[:, 0] - y)), rel=1e-5)
    assert h["accuracy"][0] == h["acc2"][0] == pytest.approx(np.mean((p[:, 0] > 0.5) == y))


def test_metrics_over_several_runs_and_a_short_last_batch():
    """AUC over an epoch of many runs equals the AUC of all the steps' outputs (learning rate 0)."""
    x, y = _binary_problem(203)
    model = _model()
    model.compile(
        keras.optimizers.SGD(learning_rate=0.0), "binary_crossentropy", metrics=[M.AUC(), "mse", BatchCount()]
    )
    h = model.fit(x, y, epochs=2, batch_size=8, verbose=0).history
    p = model.predict(x, verbose=0)
    assert h["auc"][1] == pytest.approx(ref.auc(y, p), rel=1e-9)
    assert h["batch_count"] == [26.0, 26.0]  # a user metric gets one call per batch, reset per epoch


def test_plain_accuracy_does_not_copy_outputs():
    x, y = _binary_problem()
    model = _model()
    model.compile("adam", "binary_crossentropy", metrics=["accuracy"])
    model.fit(x, y, epochs=1, verbose=0)
    assert not model._compile_metrics.needs_outputs
    model.compile("adam", "binary_crossentropy", metrics=["accuracy", "mae"])
    model.fit(x, y, epochs=1, verbose=0)
    assert model._compile_metrics.needs_outputs


def test_regression_metrics_in_fit():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(120, 6)).astype(np.float32)
    y = (x[:, :2] @ np.array([1.0, -2.0])).astype(np.float32)
    model = _model(activation="linear")
    model.compile("adam", "mse", metrics=["mae", M.RootMeanSquaredError(), "R2Score", "mape", "msle"])
    h = model.fit(x, y, epochs=3, verbose=0, validation_data=(x, y))
    assert list(h.history) == [
        "R2Score",
        "loss",
        "mae",
        "mape",
        "msle",
        "root_mean_squared_error",
        "val_R2Score",
        "val_loss",
        "val_mae",
        "val_mape",
        "val_msle",
        "val_root_mean_squared_error",
    ]
    p = model.predict(x, verbose=0)[:, 0]
    assert h.history["val_root_mean_squared_error"][-1] == pytest.approx(np.sqrt(np.mean((p - y) ** 2)), rel=1e-5)
    assert h.history["val_R2Score"][-1] == pytest.approx(ref.r2_score(y[:, None], p[:, None]), rel=1e-5)


@pytest.mark.parametrize(
    "loss, metric, words",
    [
        ("sparse_categorical_crossentropy", "AUC", ["AUC", "multi_label", "one-hot"]),
        ("categorical_crossentropy", "AUC", ["AUC", "softmax", "multi_label=True"]),
        ("sparse_categorical_crossentropy", "mse", ["element by element", "one-hot"]),
        ("sparse_categorical_crossentropy", M.SparseTopKCategoricalAccuracy(k=11), ["k=11", "10 classes"]),
        ("categorical_crossentropy", M.TopKCategoricalAccuracy(k=12), ["k=12"]),
        ("categorical_crossentropy", "sparse_categorical_accuracy", ["integer class labels"]),
        ("sparse_categorical_crossentropy", "categorical_accuracy", ["one-hot"]),
        ("sparse_categorical_crossentropy", M.Precision(), ["one-hot"]),
        ("categorical_crossentropy", M.Recall(class_id=10), ["class_id=10"]),
    ],
)
def test_metrics_that_cannot_fit_are_refused_before_training(loss, metric, words):
    model = _model(10, "softmax")
    model.compile("adam", loss, metrics=[metric])
    before = [w.copy() for w in model.get_weights()]
    x = np.zeros((4, 6), np.float32)
    y = np.arange(4) if loss.startswith("sparse") else np.eye(10)[np.arange(4)]
    with pytest.raises(ValueError) as info:
        model.fit(x, y, verbose=0)
    for word in words:
        assert word in str(info.value)
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))


def test_multi_label_auc_on_a_softmax_with_one_hot_labels():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(90, 6)).astype(np.float32)
    labels = rng.integers(0, 3, 90)
    model = _model(3, "softmax")
    model.compile("adam", "categorical_crossentropy", metrics=[M.AUC(multi_label=True), M.TopKCategoricalAccuracy(k=2)])
    logs = model.evaluate(x, np.eye(3)[labels], verbose=0, return_dict=True)
    p = model.predict(x, verbose=0)
    assert logs["auc"] == pytest.approx(np.mean([ref.auc(labels == j, p[:, j]) for j in range(3)]), rel=1e-9)
    second = np.sort(p, axis=1)[:, -2]
    assert logs["top_k_categorical_accuracy"] == pytest.approx(np.mean(p[np.arange(90), labels] >= second))


def test_saved_model_keeps_its_metrics(tmp_path):
    x, y = _binary_problem()
    model = _model()
    model.compile("adam", "binary_crossentropy", metrics=["accuracy", M.AUC(num_thresholds=20, name="roc")])
    model.fit(x, y, epochs=1, verbose=0)
    for name in ("m.cdnn", "m.keras"):
        if name.endswith(".keras"):
            pytest.importorskip("h5py")
        path = tmp_path / name
        model.save(path)
        loaded = keras.models.load_model(path)
        assert [type(m) for m in loaded._compile_metrics._user_metrics] == [str, M.AUC]
        assert loaded.evaluate(x, y, verbose=0, return_dict=True) == model.evaluate(x, y, verbose=0, return_dict=True)


# --------------------------------------------------------------------------- against Keras itself (optional)

KERAS_CASES = [
    ("BinaryAccuracy", {}, "b"),
    ("CategoricalAccuracy", {}, "c"),
    ("SparseCategoricalAccuracy", {}, "s"),
    ("TopKCategoricalAccuracy", {"k": 2}, "c"),
    ("SparseTopKCategoricalAccuracy", {"k": 3}, "s"),
    ("MeanAbsoluteError", {}, "r"),
    ("MeanSquaredError", {}, "r"),
    ("RootMeanSquaredError", {}, "r"),
    ("MeanAbsolutePercentageError", {}, "r"),
    ("R2Score", {}, "r"),
    ("R2Score", {"class_aggregation": "variance_weighted_average", "num_regressors": 2}, "r"),
    ("AUC", {}, "b"),
    ("AUC", {"curve": "PR"}, "b"),
    ("AUC", {"num_thresholds": 7, "summation_method": "minoring"}, "b"),
    ("AUC", {"multi_label": True}, "m"),
    ("AUC", {"multi_label": True, "curve": "PR", "label_weights": [1, 2, 3, 0]}, "m"),
    ("AUC", {}, "c"),
    ("AUC", {"from_logits": True}, "l"),
    ("Precision", {}, "b"),
    ("Recall", {}, "b"),
    ("Precision", {"thresholds": [0.2, 0.5, 0.9]}, "b"),
    ("Precision", {"top_k": 2}, "m"),
    ("Recall", {"top_k": 2}, "m"),
    ("Precision", {"class_id": 2}, "c"),
    ("Recall", {"class_id": 1, "thresholds": 0.3}, "c"),
    ("F1Score", {}, "m"),
    ("F1Score", {"average": "macro", "threshold": 0.3}, "m"),
    ("FBetaScore", {"beta": 2.0, "average": "weighted"}, "m"),
    ("F1Score", {"average": "micro"}, "m"),
]


def _case_data(kind):
    rng, probs, yb, pb, w = _data(4)
    ys = rng.integers(0, probs.shape[1], len(probs))
    reg_t = rng.normal(size=(len(probs), 3))
    data = {
        "b": (yb, pb),
        "c": (np.eye(probs.shape[1])[ys], probs),
        "s": (ys, probs),
        "m": (rng.integers(0, 2, probs.shape).astype(float), probs),
        "r": (reg_t, reg_t + rng.normal(size=reg_t.shape)),
        "l": (yb, rng.normal(size=pb.shape)),
    }
    return data[kind], w


_KERAS_SCRIPT = """
import json, os, sys
import numpy as np
import keras
cases = json.load(open(sys.argv[1]))
out = []
for c in cases:
    data = np.load(c["data"])
    res = []
    for weighted in (False, True):
        m = getattr(keras.metrics, c["name"])(**c["kwargs"])
        for s in (slice(0, 20), slice(20, None)):
            m.update_state(data["y_true"][s], data["y_pred"][s], sample_weight=data["w"][s] if weighted else None)
        res.append(np.asarray(m.result()).tolist())
    out.append(res)
json.dump(out, open(sys.argv[2], "w"))
"""


@pytest.fixture(scope="module")
def keras_results(tmp_path_factory):
    """Keras 3's own results for KERAS_CASES, computed in a child process (numpy backend), so that
    this process's Keras, if another test loads one, keeps its own backend."""
    import json
    import subprocess
    import sys

    folder = tmp_path_factory.mktemp("keras_metrics")
    cases = []
    for i, (name, kwargs, kind) in enumerate(KERAS_CASES):
        (y_true, y_pred), w = _case_data(kind)
        path = folder / f"case{i}.npz"
        np.savez(path, y_true=y_true, y_pred=y_pred, w=w)
        cases.append({"name": name, "kwargs": kwargs, "data": str(path)})
    (folder / "cases.json").write_text(json.dumps(cases))
    (folder / "run.py").write_text(_KERAS_SCRIPT)
    env = dict(os.environ, KERAS_BACKEND="numpy")
    proc = subprocess.run(
        [sys.executable, str(folder / "run.py"), str(folder / "cases.json"), str(folder / "out.json")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if proc.returncode != 0:
        pytest.skip(f"Keras 3 is not usable here: {proc.stderr.strip().splitlines()[-1:]}")
    return json.loads((folder / "out.json").read_text())


@pytest.mark.parametrize("index", range(len(KERAS_CASES)), ids=[f"{c[0]}-{i}" for i, c in enumerate(KERAS_CASES)])
def test_same_results_as_keras(index, keras_results):
    name, kwargs, kind = KERAS_CASES[index]
    (y_true, y_pred), w = _case_data(kind)
    for weighted, theirs in zip((False, True), keras_results[index]):
        ours = getattr(M, name)(**kwargs)
        for s in (slice(0, 20), slice(20, None)):
            ours.update_state(y_true[s], y_pred[s], sample_weight=w[s] if weighted else None)
        np.testing.assert_allclose(np.asarray(ours.result()), np.asarray(theirs), rtol=2e-5, atol=1e-6)


# --------------------------------------------------------------------------- the core's output buffer


@pytest.mark.parametrize("sizes, batch", [((7, 3), 5), ((33, 1), 1), ((784, 256, 10), 33), ((1000, 512, 7), 64)])
def test_train_run_copies_each_steps_outputs(sizes, batch):
    """With learning rate 0 the step's outputs are predict's; 1 and 2 threads give the same bits."""
    rng = np.random.default_rng(0)
    n = 3 * batch + 2
    x = rng.normal(size=(n, sizes[0])).astype(np.float32)
    y = rng.integers(0, 2, (n, sizes[-1])).astype(np.float32)
    layers = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(
            {
                "W": (rng.normal(size=(a, b)) / math.sqrt(a)).astype(np.float32),
                "b": np.zeros(b, np.float32),
                "activation": "sigmoid" if i == len(sizes) - 2 else "relu",
            }
        )
    net = keras._core.Network(layers, "binary_crossentropy", False, None, {"name": "sgd", "learning_rate": 0.0})
    expected = net.predict(x, 512)
    perm = rng.permutation(n).astype(np.int32)
    steps = -(-n // batch)
    results = []
    for threads in (1, 2):
        out = np.full((steps * batch, sizes[-1]), np.nan, np.float32)
        done = net.train_run(
            x, y, perm, 0, steps, batch, 0, 1, np.zeros(steps), np.zeros(steps), threads, False, outputs=out
        )
        assert done == steps
        np.testing.assert_allclose(out[:n], expected[perm], rtol=2e-5, atol=1e-6)
        results.append(out[:n])
    assert np.array_equal(results[0], results[1])
    with pytest.raises(ValueError, match="outputs"):
        net.train_run(
            x,
            y,
            perm,
            0,
            steps,
            batch,
            0,
            1,
            np.zeros(steps),
            np.zeros(steps),
            1,
            False,
            outputs=np.zeros((steps * batch - 1, sizes[-1]), np.float32),
        )
    with pytest.raises(TypeError, match="outputs"):
        net.train_run(
            x,
            y,
            perm,
            0,
            steps,
            batch,
            0,
            1,
            np.zeros(steps),
            np.zeros(steps),
            1,
            False,
            outputs=np.zeros((steps * batch, sizes[-1]), np.float64),
        )
    with pytest.raises(ValueError, match="C-contiguous"):
        net.train_run(
            x,
            y,
            perm,
            0,
            steps,
            batch,
            0,
            1,
            np.zeros(steps),
            np.zeros(steps),
            1,
            False,
            outputs=np.zeros((2 * steps * batch, sizes[-1]), np.float32)[::2],
        )


@pytest.mark.parametrize("T", [18, 200, 1001])
def test_even_threshold_counts_equal_a_binary_search_at_the_boundaries(T):
    from cdnn.metrics.confusion_metrics import _count_below

    st = M.AUC(num_thresholds=T)._thresholds
    rng = np.random.default_rng(T)
    p = np.concatenate([rng.random(5000), st, np.nextafter(st, 2), np.nextafter(st, -2), [-3.0, 0.0, 1.0, 4.0]])
    for values in (p, p.astype(np.float32).astype(np.float64)):
        np.testing.assert_array_equal(_count_below(st, values), np.searchsorted(st, values, side="left"))
    assert _count_below(st, np.array([np.nan]))[0] == 0  # NaN > t is false for every t
