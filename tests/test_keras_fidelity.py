"""Small points of Keras 3 fidelity, each checked against Keras 3's source and, where it helps, real Keras 3
(JAX backend) running the same program: per-call metrics of ``train_on_batch``/``test_on_batch``, the
logs' value types, label shapes, metrics refused on integer labels, compile settings kept by clones and
copies, ``input_shape`` warnings and ``Input(batch_size=...)``."""

import os
import warnings

import numpy as np
import pytest

import cdnn


def _keras():
    pytest.importorskip("jax")
    os.environ.setdefault("KERAS_BACKEND", "jax")
    return pytest.importorskip("keras", reason="real Keras 3 is the oracle of these tests")


def _data(n=32, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 4)).astype(np.float32), rng.integers(0, 3, n)


def _classifier(lib, graph: bool):
    if graph:
        i = lib.Input((4,))
        h = lib.layers.Dense(5, activation="relu")(i)
        m = lib.Model(i, lib.layers.Dense(3, activation="softmax")(h))
    else:
        m = lib.Sequential(
            [lib.Input((4,)), lib.layers.Dense(5, activation="relu"), lib.layers.Dense(3, activation="softmax")]
        )
    m.compile(lib.optimizers.SGD(0.1), "sparse_categorical_crossentropy", metrics=["accuracy"])
    m.set_weights([(np.arange(w.size).reshape(w.shape) % 3 - 1) * np.float32(0.1) for w in m.get_weights()])
    return m


def _batch_calls(m, x, y):
    return [
        m.train_on_batch(x[:16], y[:16]),
        m.train_on_batch(x[16:], y[16:]),
        m.test_on_batch(x[:8], y[:8]),
        m.test_on_batch(x[8:], y[8:]),
    ]


# ---- 1. train_on_batch / test_on_batch reset the metrics at each call ------------------------------------
@pytest.mark.parametrize("graph", [False, True], ids=["chain", "graph"])
def test_on_batch_calls_give_their_batch_alone(graph):
    x, y = _data()
    m = _classifier(cdnn, graph)
    m.train_on_batch(x[:16], y[:16])
    m.train_on_batch(x[16:], y[16:])
    # what test_on_batch returns is evaluate on that batch alone, whatever came before
    assert m.test_on_batch(x[:8], y[:8]) == pytest.approx(m.evaluate(x[:8], y[:8], verbose=0), rel=1e-6)
    assert m.test_on_batch(x[8:], y[8:], return_dict=True) == pytest.approx(
        m.evaluate(x[8:], y[8:], verbose=0, return_dict=True), rel=1e-6
    )


@pytest.mark.parametrize("graph", [False, True], ids=["chain", "graph"])
def test_on_batch_calls_match_keras(graph):
    keras = _keras()
    x, y = _data()
    got = _batch_calls(_classifier(cdnn, graph), x, y)
    want = _batch_calls(_classifier(keras, graph), x, y)
    np.testing.assert_allclose(np.array(got), np.array(want, dtype=np.float64), rtol=2e-5, atol=1e-6)


# ---- 2. learning rates: what Keras 3 accepts from the constructor, schedules and LearningRateScheduler -----
def _raised(fn):
    try:
        fn()
    except ValueError as e:
        return str(e)
    return None


@pytest.mark.parametrize("lr", [1, np.float32(0.1), np.array([0.1]), np.array(0.1)], ids=repr)
def test_optimizer_refuses_a_learning_rate_that_is_not_a_float_as_keras(lr):
    keras = _keras()
    want = _raised(lambda: keras.optimizers.SGD(learning_rate=lr))
    assert want is not None
    with pytest.raises(ValueError) as e:
        cdnn.optimizers.SGD(learning_rate=lr)
    assert str(e.value) == want


def test_optimizer_takes_floats_and_an_int_assigned_later():
    opt = cdnn.optimizers.Adam(learning_rate=np.float64(0.5))
    assert opt.learning_rate == 0.5
    opt.learning_rate = 1  # Keras' variable assigns an int
    assert opt.learning_rate == 1.0


def test_schedule_given_a_one_element_array_trains_as_with_its_number():
    x, y = _data()
    weights = []
    for rate, decay_rate in ((0.5, 0.9), (np.array([0.5]), np.array([0.9]))):
        m = _classifier(cdnn, graph=False)
        decay = cdnn.optimizers.schedules.ExponentialDecay(rate, 2, decay_rate)
        m.compile(cdnn.optimizers.SGD(decay), "sparse_categorical_crossentropy")
        m.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0)
        weights.append(m.get_weights())
    for a, b in zip(*weights):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="initial_learning_rate"):
        cdnn.optimizers.schedules.ExponentialDecay(np.array([0.5, 0.1]), 2, 0.9)


@pytest.mark.parametrize(
    "value",
    [0.1, np.float32(0.1), np.float64(0.1), 1, np.int64(1), np.float16(0.1), np.array([0.1]), np.array(0.1)],
    ids=repr,
)
def test_learning_rate_scheduler_takes_what_keras_takes(value):
    keras = _keras()
    x, y = _data(16)
    results = [_scheduled_fit(lib, value, x, y) for lib in (keras, cdnn)]
    assert results[1] == results[0]


def _scheduled_fit(lib, value, x, y):
    """(error message or None, the types the schedule received, the logged rates) of a fit whose schedule
    returns ``value``."""
    seen = []

    def schedule(epoch, lr):
        seen.append(type(lr))
        return value

    m = _classifier(lib, graph=False)
    err = _raised(lambda: m.fit(x, y, epochs=2, verbose=0, callbacks=[lib.callbacks.LearningRateScheduler(schedule)]))
    return err, seen, None if err else m.history.history["learning_rate"]


# ---- 3. labels: hinge labels 0/1 in a graph model ---------------------------------------------------------
@pytest.mark.parametrize("loss", ["hinge", "squared_hinge"])
def test_graph_hinge_reads_labels_0_1_as_minus_1_plus_1_as_keras(loss):
    """Keras' hinge losses read labels that are all 0 or 1 as -1 and 1: the graph must too, in its loss
    and its gradient (the chain already did)."""
    x, c = _data(24)
    results = []
    for y in ((c > 0).astype(np.float32), np.where(c > 0, 1.0, -1.0).astype(np.float32)):
        i = cdnn.Input((4,))
        m = cdnn.Model(i, cdnn.layers.Dense(1)(i))
        m.compile(cdnn.optimizers.SGD(0.1), loss)
        m.set_weights([(np.arange(w.size).reshape(w.shape) % 3 - 1) * np.float32(0.2) for w in m.get_weights()])
        out = m.predict(x, verbose=0)[:, 0].astype(np.float64)
        t = np.where(c > 0, 1.0, -1.0)
        margin = np.maximum(1 - t * out, 0)
        want = np.mean(margin if loss == "hinge" else margin**2)
        assert m.evaluate(x, y, verbose=0) == pytest.approx(want, rel=1e-5)
        m.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0)
        results.append(m.get_weights())
    for a, b in zip(*results):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("graph", [False, True], ids=["chain", "graph"])
def test_label_shapes_squeezed_or_refused_as_keras(graph):
    """(n, 1) sparse and binary labels are squeezed as Keras squeezes them; labels Keras' cross-entropies
    refuse ((n, 1) for k units, (n, k) for one unit) are refused with both shapes named."""
    x, c = _data(16)
    for units, act, loss, y, y_flat in [
        (3, "softmax", "sparse_categorical_crossentropy", c.reshape(16, 1), c),
        (1, "sigmoid", "binary_crossentropy", (c > 0).astype(np.float32).reshape(16, 1), (c > 0).astype(np.float32)),
    ]:
        m = _one_layer(units, act, loss, graph)
        assert m.evaluate(x, y, verbose=0) == m.evaluate(x, y_flat, verbose=0)
    onehot = np.eye(3, dtype=np.float32)[c]
    for units, act, loss, y in [
        (3, "softmax", "categorical_crossentropy", c.reshape(16, 1).astype(np.float32)),
        (1, "softmax", "categorical_crossentropy", onehot),
        (1, "sigmoid", "binary_crossentropy", onehot),
        (3, "sigmoid", "binary_crossentropy", (c > 0).astype(np.float32).reshape(16, 1)),
    ]:
        m = _one_layer(units, act, loss, graph)
        with pytest.raises(ValueError, match=rf"\(16, {units}\).*received \(16, {y.shape[1]}\)"):
            m.fit(x, y, verbose=0)


def _one_layer(units, act, loss, graph):
    if graph:
        i = cdnn.Input((4,))
        m = cdnn.Model(i, cdnn.layers.Dense(units, activation=act)(i))
    else:
        m = cdnn.Sequential([cdnn.Input((4,)), cdnn.layers.Dense(units, activation=act)])
    m.compile("sgd", loss)
    return m


# ---- 4. metrics on integer labels -------------------------------------------------------------------------
@pytest.mark.parametrize("graph", [False, True], ids=["chain", "graph"])
@pytest.mark.parametrize("metric", ["mse", "binary_accuracy", "cosine_similarity", "mae", "RootMeanSquaredError"])
def test_elementwise_metrics_refused_on_integer_labels_of_a_k_way_output(metric, graph):
    """Keras fails on integer labels (n,) with these metrics of a 3-unit output (and broadcasts (n, 1) ones
    into meaningless values): refused before training, naming the metric."""
    x, c = _data(16)
    m = _one_layer(3, "softmax", "sparse_categorical_crossentropy", graph)
    if metric[0].isupper():
        metric = getattr(cdnn.metrics, metric)()
    for y in (c, c.reshape(16, 1)):
        with pytest.raises(ValueError, match=r"Invalid metric .* element by element.*integer class labels"):
            m.compile("sgd", "sparse_categorical_crossentropy", metrics=[metric])  # a graph checks here
            m.fit(x, y, verbose=0)


@pytest.mark.parametrize("graph", [False, True], ids=["chain", "graph"])
def test_top_k_with_k_above_the_classes_is_refused_where_keras_gives_a_constant(graph):
    """Keras' in_top_k puts every label in the top k when k > the classes (the metric is 1.0 whatever the
    model): cdnn refuses it before training (issue #20's bad input); k up to the classes is as Keras."""
    keras = _keras()
    x, c = _data(16)
    for loss, metric, y in (
        ("sparse_categorical_crossentropy", "sparse_top_k_categorical_accuracy", c),
        ("categorical_crossentropy", "top_k_categorical_accuracy", np.eye(3, dtype=np.float32)[c]),
    ):
        m = _classifier(cdnn, graph)
        with pytest.raises(ValueError, match=r"k=5 is more than the 3 classes"):
            m.compile("sgd", loss, metrics=[metric])  # a graph checks here
            m.evaluate(x, y, verbose=0)
        k = _classifier(keras, graph)
        k.compile("sgd", loss, metrics=[metric])
        assert k.evaluate(x, y, verbose=0, return_dict=True)[metric] == 1.0
    got, want = [], []
    for lib, out in ((cdnn, got), (keras, want)):
        m = _classifier(lib, graph)
        m.compile("sgd", "sparse_categorical_crossentropy", metrics=[lib.metrics.SparseTopKCategoricalAccuracy(k=2)])
        out.append(m)
    want[0].set_weights(got[0].get_weights())
    g = got[0].evaluate(x, c, verbose=0, return_dict=True)
    w = want[0].evaluate(x, c, verbose=0, return_dict=True)
    assert g["sparse_top_k_categorical_accuracy"] == pytest.approx(float(w["sparse_top_k_categorical_accuracy"]))


# ---- 5. loss_weights and weighted_metrics kept by clones, copies and files -------------------------------
def _weighted_model(kind: str):
    if kind == "functional":
        i = cdnn.Input((4,))
        m = cdnn.Model(i, cdnn.layers.Dense(3, activation="softmax")(cdnn.layers.Dense(5, activation="relu")(i)))
    else:
        bn = [cdnn.layers.BatchNormalization()] if kind == "sequential-graph" else []
        m = cdnn.Sequential(
            [cdnn.Input((4,)), cdnn.layers.Dense(5, activation="relu"), *bn, cdnn.layers.Dense(3, activation="softmax")]
        )
    m.compile(
        cdnn.optimizers.Adam(0.01),
        "sparse_categorical_crossentropy",
        metrics=["accuracy"],
        weighted_metrics=[cdnn.metrics.SparseCategoricalAccuracy(name="wacc")],
        loss_weights=2.0 if kind == "functional" else [2.0],
    )
    return m


def _sklearn_clone(m):
    sklearn = pytest.importorskip("sklearn")
    est = sklearn.base.clone(cdnn.wrappers.SKLearnClassifier(model=m))
    return cdnn.wrappers._clone_model(est.model)


def _saved_and_loaded(m, tmp_path):
    m.save(tmp_path / "m.cdnn")
    return cdnn.models.load_model(tmp_path / "m.cdnn")


@pytest.mark.parametrize("kind", ["sequential", "sequential-graph", "functional"])
@pytest.mark.parametrize("how", ["clone_model", "wrapper_clone", "sklearn_clone", "pickle", "deepcopy", "cdnn_file"])
def test_loss_weights_and_weighted_metrics_survive(kind, how, tmp_path):
    import copy
    import pickle

    x, y = _data(24)
    sw = np.linspace(0.1, 2.0, 24)
    m = _weighted_model(kind)
    m.fit(x, y, sample_weight=sw, epochs=1, verbose=0)
    copy_of = {
        "clone_model": cdnn.models.clone_model,
        "wrapper_clone": cdnn.wrappers._clone_model,
        "sklearn_clone": _sklearn_clone,
        "pickle": lambda a: pickle.loads(pickle.dumps(a)),
        "deepcopy": copy.deepcopy,
        "cdnn_file": lambda a: _saved_and_loaded(a, tmp_path),
    }[how]
    c = copy_of(m)
    assert c.compiled
    c.set_weights(m.get_weights())
    want = m.evaluate(x, y, sample_weight=sw, verbose=0, return_dict=True)
    got = c.evaluate(x, y, sample_weight=sw, verbose=0, return_dict=True)
    assert sorted(got) == sorted(want) and "wacc" in got
    for key in want:
        assert got[key] == pytest.approx(want[key], rel=1e-6), key
    # the loss weight is applied: twice the unweighted loss of the same model
    plain = _weighted_model(kind)
    plain.compile("adam", "sparse_categorical_crossentropy")
    plain.set_weights(m.get_weights())
    assert got["loss"] == pytest.approx(2 * plain.evaluate(x, y, sample_weight=sw, verbose=0), rel=1e-5)


@pytest.mark.parametrize("how", ["clone_model", "pickle"])
def test_unbuilt_sequential_keeps_its_compile_settings(how):
    import pickle

    m = cdnn.Sequential([cdnn.layers.Dense(5, activation="relu"), cdnn.layers.Dense(3, activation="softmax")])
    m.compile("adam", "sparse_categorical_crossentropy", weighted_metrics=["accuracy"], loss_weights=[0.5])
    c = cdnn.models.clone_model(m) if how == "clone_model" else pickle.loads(pickle.dumps(m))
    assert not c.built and c.compiled
    assert c._compile_args["loss_weights"] == [0.5]
    x, y = _data(8)
    c.fit(x, y, verbose=0)
    assert "accuracy" in c.history.history


# ---- 6. input_shape= on a layer warns; Input(batch_size=...) is the batch dimension shapes show ----------
_INPUT_SHAPE_WARNING = (
    "Do not pass an `input_shape`/`input_dim` argument to a layer. When using Sequential models, prefer using an "
    "`Input(shape)` object as the first layer in the model instead."
)


@pytest.mark.parametrize(
    "make",
    [
        lambda: cdnn.layers.Flatten(input_shape=(2, 3)),
        lambda: cdnn.layers.Dense(3, input_shape=(4,)),
        lambda: cdnn.layers.Dense(3, input_dim=4),
        lambda: cdnn.layers.Dropout(0.5, input_shape=(4,)),
    ],
)
def test_input_shape_on_a_layer_gives_keras_warning(make):
    with pytest.warns(UserWarning) as record:
        layer = make()
    assert [str(w.message) for w in record] == [_INPUT_SHAPE_WARNING]
    m = cdnn.Sequential([layer, cdnn.layers.Dense(2)])
    assert m.built  # the shape is still taken, as Keras does
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # made again from a config: no warning (Keras records an Input instead)
        cdnn.models.clone_model(m)
        cdnn.models.model_from_json(m.to_json())
        cdnn.Input((4,))
        cdnn.layers.Dense(3, input_shape=None)


def test_input_shape_warning_text_is_keras():
    keras = _keras()
    with pytest.warns(UserWarning) as record:
        keras.layers.Flatten(input_shape=(2, 3))
    assert _INPUT_SHAPE_WARNING in [str(w.message) for w in record]


@pytest.mark.parametrize("graph", [False, True], ids=["sequential", "functional"])
def test_input_batch_size_is_the_batch_dimension_of_shapes_and_summary(graph):
    i = cdnn.Input((4,), batch_size=16)
    if graph:
        m = cdnn.Model(i, cdnn.layers.Dense(3)(cdnn.layers.Dense(5)(i)))
    else:
        m = cdnn.Sequential([i, cdnn.layers.Dense(5), cdnn.layers.Dense(3)])
    assert tuple(m.inputs[0].shape) == (16, 4)
    assert tuple(m.outputs[0].shape) == (16, 3)
    lines = []
    m.summary(print_fn=lines.append)
    assert "(16, 5)" in lines[0] and "(16, 3)" in lines[0] and "None" not in lines[0]
    m.compile("sgd", "mse")  # the batch size shapes show does not bind fit or predict (nor in Keras on JAX)
    m.fit(np.zeros((20, 4), np.float32), np.zeros((20, 3), np.float32), batch_size=10, verbose=0)
    assert m.predict(np.zeros((7, 4), np.float32), verbose=0).shape == (7, 3)


# ---- 7. BatchNormalization under Adam: the last digits are float32 rounding, not a formula ----------------
_BN_PROGRAM = """
import sys, numpy as np, keras
if sys.argv[1] == "float64":
    keras.config.set_floatx("float64")
w = [np.asarray(a) for a in np.load(sys.argv[2], allow_pickle=True)["w"]]
d = np.load(sys.argv[2])
m = keras.Sequential([keras.Input((6,)), keras.layers.Dense(8, activation="relu"), keras.layers.BatchNormalization(),
                      keras.layers.Dense(3, activation="softmax")])
m.set_weights(w)
m.compile(keras.optimizers.Adam(0.01), "sparse_categorical_crossentropy")
for _ in range(10):
    m.train_on_batch(d["x"], d["y"])
np.savez(sys.argv[3], *[np.asarray(a, np.float64) for a in m.get_weights()])
"""


def _bn_model(lib):
    return lib.Sequential(
        [
            lib.Input((6,)),
            lib.layers.Dense(8, activation="relu"),
            lib.layers.BatchNormalization(),
            lib.layers.Dense(3, activation="softmax"),
        ]
    )


def test_batchnorm_under_adam_is_within_float32_rounding_of_keras_float64(tmp_path):
    """Ten Adam steps on a Dense-BatchNormalization-Dense model, against real Keras in float32 and in float64
    (JAX with x64, run apart): cdnn is within 1e-6 of the float64 run, and no farther from it than Keras'
    own float32 run, so the float32 gap to Keras (beta included) is rounding, not a formula."""
    _keras()
    import subprocess
    import sys

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(64, 6)).astype(np.float32), rng.integers(0, 3, 64)
    m = _bn_model(cdnn)
    r = np.random.default_rng(1)
    w = [
        (r.normal(size=a.shape) * 0.3).astype(np.float32) if i not in (2, 3, 4, 5) else a
        for i, a in enumerate(m.get_weights())
    ]
    m.set_weights(w)
    m.compile(cdnn.optimizers.Adam(0.01), "sparse_categorical_crossentropy")
    for _ in range(10):
        m.train_on_batch(x, y)
    ours = m.get_weights()
    np.savez(tmp_path / "in.npz", x=x, y=y, w=np.array(w, dtype=object))
    (tmp_path / "run.py").write_text(_BN_PROGRAM)
    runs = {}
    for floatx in ("float32", "float64"):
        env = dict(os.environ, KERAS_BACKEND="jax", JAX_ENABLE_X64="1" if floatx == "float64" else "0")
        subprocess.run(
            [
                sys.executable,
                str(tmp_path / "run.py"),
                floatx,
                str(tmp_path / "in.npz"),
                str(tmp_path / f"{floatx}.npz"),
            ],
            env=env,
            check=True,
            capture_output=True,
            timeout=300,
        )
        with np.load(tmp_path / f"{floatx}.npz") as f:
            runs[floatx] = [f[f"arr_{i}"] for i in range(len(ours))]
    for name, a, k32, k64 in zip(["k1", "b1", "gamma", "beta", "mean", "var", "k2", "b2"], ours, *runs.values()):
        ours_err, keras_err = np.abs(a - k64).max(), np.abs(k32 - k64).max()
        assert ours_err <= 1e-6, name
        assert ours_err <= max(2 * keras_err, 2e-7), name
        assert np.abs(a - k32).max() <= 2e-6, name


# ---- a learning rate given as a function, called at each step ------------------------------------------
@pytest.mark.parametrize("graph", [False, True], ids=["chain", "graph"])
def test_learning_rate_function_reads_the_iterations_of_each_step_as_keras(graph):
    """Keras calls a callable learning rate at every optimizer step: one reading ``optimizer.iterations``
    decays within a run of batches (cdnn called it k times before the run, all at the run's first step)."""
    keras = _keras()
    x, c = _data(64)
    start = _classifier(cdnn, graph).get_weights()
    got = []
    for lib in (cdnn, keras):
        m = _classifier(lib, graph)
        m.set_weights(start)
        opt = lib.optimizers.SGD()
        if lib is cdnn:
            opt.learning_rate = lambda o=opt: 0.5 / (1.0 + float(o.iterations))
        else:
            opt.learning_rate = lambda o=opt: 0.5 / (1.0 + keras.ops.cast(o.iterations, "float32"))
        m.compile(opt, "sparse_categorical_crossentropy")
        m.fit(x, c, batch_size=8, epochs=2, verbose=0, shuffle=False)
        got.append(m.get_weights())
    for a, b in zip(*got):
        np.testing.assert_allclose(a, np.asarray(b), rtol=1e-5, atol=1e-6)
