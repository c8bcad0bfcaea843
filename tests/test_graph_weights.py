"""Sample weights in the graph core and Keras 3's fit vocabulary on graph models.

The core is checked against the NumPy oracle (``tests/reference.py``'s ``Graph`` with row weights: each row's
loss and gradient times its sample's weight, divided by the batch's rows); the models against real
Keras 3 (same initial weights, a few epochs of SGD without shuffling): weights and history.
"""

import numpy as np
import pytest
import reference as ref
from test_graph_core import G, assert_close, core_graph, f32

import cdnn
from cdnn import _core


def two_output_graph(features=6, hidden=8):
    """input -> Dense(tanh) -> [Dense softmax (sparse CCE, weight 2), BN -> Dense (mse over 2 rows, weight 0.5)]."""
    g = G()
    x = g.input(features)
    h = g.dense(x, hidden, "tanh")
    a = g.dense(h, 4, "softmax")
    b = g.bn(h)
    r = g.add("reshape", [b], (hidden // 4, 4))
    c = g.dense(r, 3)
    g.out(a, "sparse_categorical_crossentropy", weight=2.0, metric=None)
    g.out(c, "mean_squared_error", weight=0.5)
    return g


def _data(n=10, seed=3, features=6, hidden=8):
    rng = np.random.default_rng(seed)
    xs = [f32(rng.standard_normal((n, features)))]
    ys = [rng.integers(0, 4, n).astype(np.int32), f32(rng.standard_normal((n, hidden // 4 * 3)))]
    sws = [f32(rng.random(n) * 2), f32(rng.random(n))]
    return xs, ys, sws


def test_weighted_gradients_and_losses_match_the_oracle(threads):
    g = two_output_graph()
    xs, ys, sws = _data()
    n = len(xs[0])
    net, nodes = core_graph(g, {"name": "sgd", "learning_rate": 1.0})
    bl, bc, ol = np.zeros(1), np.zeros((1, 2)), np.zeros((1, 2))
    outs = [np.zeros((n, 4), np.float32), np.zeros((n, 6), np.float32)]
    net.train_run(
        xs, ys, np.arange(n, dtype=np.int32), 0, 1, n, 0, 0, bl, bc, output_loss=ol, sample_weight=sws, outputs=outs
    )
    oracle = ref.Graph(g.nodes, g.inputs, g.outputs)
    total, per, grads, vals = oracle.gradients(xs, [ys[0], ys[1].reshape(n, 2, 3)], True, sample_weight=sws)
    assert_close(bl[0] / n, total, 1e-5, 1e-6, "weighted total loss")
    assert_close(ol[0] / n, per, 1e-5, 1e-6, "per-output losses")
    for (i, k), gw in grads.items():
        assert_close(g.nodes[i][k].astype(np.float64) - nodes[i][k], gw, 2e-4, 2e-5, f"gradient of {k} of node {i}")
    assert_close(outs[0], vals[g.outputs[0]["node"]], 1e-5, 1e-6, "copied outputs")
    assert_close(outs[1], vals[g.outputs[1]["node"]].reshape(n, 6), 1e-5, 1e-6, "copied N-D outputs")
    # weights of 1 are no weights; zero weights drop the samples
    _, ls1, _ = net.predict(xs, 4, ys)
    _, ls2, _ = net.predict(xs, 4, ys, sample_weight=[f32(np.ones(n)), None])
    np.testing.assert_array_equal(ls1, ls2)
    oracle.p = [{k: np.array(v, np.float64) for k, v in d.items() if k in p} for d, p in zip(nodes, oracle.p)]
    want = oracle.losses(xs, [ys[0], ys[1].reshape(n, 2, 3)], sample_weight=sws)
    _, ls3, _ = net.predict(xs, 4, ys, sample_weight=sws)
    assert_close(ls3 / n, want, 1e-5, 1e-6, "weighted inference losses")


def test_weighted_runs_are_bit_identical_on_1_and_2_threads():
    # large enough that the core runs the steps on two threads (GRAPH_SERIAL_FLOPS)
    g = two_output_graph(features=64, hidden=256)
    xs, ys, sws = _data(64, seed=5, features=64, hidden=256)
    results = []
    for nt in (1, 2):
        net, nodes = core_graph(g, {"name": "adam", "learning_rate": 0.01})
        bl, bc, ol = np.zeros(2), np.zeros((2, 2)), np.zeros((2, 2))
        perm = np.random.default_rng(0).permutation(64).astype(np.int32)
        prev = _core.get_num_threads()
        _core.set_num_threads(2)
        try:
            net.train_run(xs, ys, perm, 0, 2, 32, 0, 7, bl, bc, nt, output_loss=ol, sample_weight=sws)
        finally:
            _core.set_num_threads(prev)
        results.append((bl, ol, [d.get("W") for d in nodes]))
    np.testing.assert_array_equal(results[0][0], results[1][0])
    np.testing.assert_array_equal(results[0][1], results[1][1])
    for a, b in zip(results[0][2], results[1][2]):
        if a is not None:
            np.testing.assert_array_equal(a, b)


# ------------------------------------------------------------ models against real Keras 3


def _keras():
    return pytest.importorskip("keras", reason="real Keras 3 is the oracle of these tests")


def _two_output_model(lib, seed=0):
    inp = lib.Input(shape=(5,), name="x")
    h = lib.layers.Dense(8, activation="tanh", name="h")(inp)
    o1 = lib.layers.Dense(6, activation="softmax", name="out1")(h)
    o2 = lib.layers.Dense(1, activation="sigmoid", name="out2")(h)
    return lib.Model(inp, [o1, o2])


def _copy_weights(src, dst):
    dst.set_weights([np.asarray(w) for w in src.get_weights()])


def _mo_data(n=48, seed=11):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 5)).astype(np.float32)
    y1 = rng.integers(0, 3, n)  # of 6 classes for out1, of 3 for the single-output models
    y2 = (rng.random((n, 1)) > 0.5).astype(np.float32)
    sw = (rng.random(n) * 2).astype(np.float32)
    return x, y1, y2, sw


def _compile_both(models, **kw):
    k, c = models
    k.compile(optimizer=_keras().optimizers.SGD(0.1), **kw)
    c.compile(optimizer=cdnn.optimizers.SGD(0.1), **kw)


def _assert_same_history(hk, hc, rtol=2e-4, atol=2e-5):
    assert sorted(hk.history) == sorted(hc.history)
    for key in hk.history:
        np.testing.assert_allclose(hc.history[key], hk.history[key], rtol=rtol, atol=atol, err_msg=key)


def test_multi_output_weights_metrics_and_validation_match_keras():
    keras = _keras()
    x, y1, y2, sw = _mo_data()
    vx, vy1, vy2, vsw = _mo_data(20, seed=12)
    k = _two_output_model(keras)
    c = _two_output_model(cdnn)
    _copy_weights(k, c)
    kw = dict(
        loss=["sparse_categorical_crossentropy", "binary_crossentropy"],
        loss_weights=[1.0, 0.5],
        metrics=[["accuracy", "sparse_top_k_categorical_accuracy"], ["accuracy", "AUC", "mae"]],
        weighted_metrics=[["accuracy"], ["mse"]],
    )
    _compile_both((k, c), **kw)
    fit = dict(
        batch_size=8,
        epochs=4,
        shuffle=False,
        verbose=0,
        sample_weight=sw,
        validation_data=(vx, [vy1, vy2], vsw),
        validation_freq=2,
        steps_per_epoch=4,
    )
    hk = k.fit(x, [y1, y2], **fit)
    hc = c.fit(x, [y1, y2], **fit)
    assert "out1_weighted_accuracy" in hc.history and "val_out2_mse" in hc.history
    assert len(hc.history["val_loss"]) == 2  # validation_freq=2 over 4 epochs
    _assert_same_history(hk, hc)
    for a, b in zip(c.get_weights(), k.get_weights()):
        np.testing.assert_allclose(a, np.asarray(b), rtol=1e-4, atol=1e-5)
    ek = k.evaluate(vx, [vy1, vy2], sample_weight=vsw, verbose=0)
    ec = c.evaluate(vx, [vy1, vy2], sample_weight=vsw, verbose=0)
    np.testing.assert_allclose(ec, ek, rtol=2e-4, atol=2e-5)
    dk = k.evaluate(vx, [vy1, vy2], sample_weight=vsw, verbose=0, return_dict=True)
    dc = c.evaluate(vx, [vy1, vy2], sample_weight=vsw, verbose=0, return_dict=True)
    assert sorted(dk) == sorted(dc)


def test_single_output_class_weight_and_weighted_metrics_match_keras():
    keras = _keras()
    x, y1, _, _ = _mo_data(40, seed=21)

    def build(lib):
        inp = lib.Input(shape=(5,))
        h = lib.layers.Dense(6, activation="relu")(inp)
        h = lib.layers.BatchNormalization()(h)
        return lib.Model(inp, lib.layers.Dense(3, activation="softmax")(h))

    k, c = build(keras), build(cdnn)
    _copy_weights(k, c)
    kw = dict(
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy", "sparse_categorical_accuracy"],
        weighted_metrics=["accuracy", "sparse_categorical_accuracy"],
    )
    _compile_both((k, c), **kw)
    cw = {0: 0.5, 1: 2.0, 2: 1.5}
    fit = dict(batch_size=8, epochs=3, shuffle=False, verbose=0, class_weight=cw, validation_split=0.25)
    hk = k.fit(x, y1, **fit)
    hc = c.fit(x, y1, **fit)
    assert "weighted_accuracy" in hc.history
    _assert_same_history(hk, hc)
    for a, b in zip(c.get_weights(), k.get_weights()):
        np.testing.assert_allclose(a, np.asarray(b), rtol=1e-4, atol=1e-5)
    # train_on_batch / test_on_batch with weights
    k.reset_metrics()
    c.reset_metrics()
    rk = k.train_on_batch(x[:8], y1[:8], class_weight=cw, return_dict=True)
    rc = c.train_on_batch(x[:8], y1[:8], class_weight=cw, return_dict=True)
    assert sorted(rk) == sorted(rc)
    for key in rk:
        np.testing.assert_allclose(rc[key], float(rk[key]), rtol=2e-4, atol=2e-5, err_msg=key)
    k.reset_metrics()
    c.reset_metrics()
    sw = np.linspace(0.1, 2, 8)
    rk = k.test_on_batch(x[:8], y1[:8], sample_weight=sw)
    rc = c.test_on_batch(x[:8], y1[:8], sample_weight=sw)
    np.testing.assert_allclose(rc, [float(v) for v in rk], rtol=2e-4, atol=2e-5)


def test_chain_weighted_metrics_match_keras():
    keras = _keras()
    x, y1, _, sw = _mo_data(40, seed=31)

    def build(lib):
        return lib.Sequential([lib.Input(shape=(5,)), lib.layers.Dense(3, activation="softmax")])

    k, c = build(keras), build(cdnn)
    _copy_weights(k, c)
    y1 = np.eye(3, dtype=np.float32)[y1]
    _compile_both((k, c), loss="categorical_crossentropy", metrics=["accuracy"], weighted_metrics=["accuracy", "mae"])
    assert c._fast_chain()
    fit = dict(batch_size=8, epochs=2, shuffle=False, verbose=0, sample_weight=sw, validation_data=(x, y1, sw))
    hk = k.fit(x, y1, **fit)
    hc = c.fit(x, y1, **fit)
    assert "val_weighted_accuracy" in hc.history
    _assert_same_history(hk, hc)
    np.testing.assert_allclose(
        c.evaluate(x, y1, sample_weight=sw, verbose=0),
        k.evaluate(x, y1, sample_weight=sw, verbose=0),
        rtol=2e-4,
        atol=2e-5,
    )


# ------------------------------------------------------------ bad input, refused before training


def _compiled_graph():
    m = _two_output_model(cdnn)
    m.compile(optimizer="sgd", loss=["sparse_categorical_crossentropy", "binary_crossentropy"])
    return m


@pytest.mark.parametrize(
    "sw, match",
    [
        (-np.ones(48), "weights >= 0"),
        (np.r_[np.ones(47), np.nan], "finite"),
        (np.ones(40), "one weight per sample"),
        ([np.ones(48)], "one `sample_weight` array per output"),
        ({"nope": np.ones(48)}, "not output names"),
    ],
)
def test_bad_sample_weights_are_refused_before_training(sw, match):
    x, y1, y2, _ = _mo_data()
    m = _compiled_graph()
    before = [w.copy() for w in m.get_weights()]
    with pytest.raises(ValueError, match=match):
        m.fit(x, [y1, y2], sample_weight=sw, verbose=0)
    for a, b in zip(before, m.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert m.optimizer.iterations == 0


def test_class_weight_is_refused_for_several_outputs_and_missing_classes():
    x, y1, y2, _ = _mo_data()
    with pytest.raises(ValueError, match="only supported for Models with a single output"):
        _compiled_graph().fit(x, [y1, y2], class_weight={0: 1.0, 1: 1.0, 2: 1.0}, verbose=0)
    inp = cdnn.Input(shape=(5,))
    m = cdnn.Model(inp, cdnn.layers.Dense(3, activation="softmax")(inp))
    m.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    with pytest.raises(ValueError, match="no weight for class"):
        m.fit(x, y1, class_weight={0: 1.0, 1: 2.0}, verbose=0)
    with pytest.raises(ValueError, match="at the same time"):
        m.fit(x, y1, class_weight={0: 1.0, 1: 2.0, 2: 1}, sample_weight=np.ones(48), verbose=0)
    assert m.optimizer.iterations == 0


def test_evaluate_and_validation_weights_are_checked():
    x, y1, y2, _ = _mo_data()
    m = _compiled_graph()
    with pytest.raises(ValueError, match="validation_data\\[2\\]"):
        m.fit(x, [y1, y2], validation_data=(x, [y1, y2], np.ones(3)), verbose=0)
    with pytest.raises(ValueError, match="sample_weight"):
        m.evaluate(x, [y1, y2], sample_weight=np.ones(3), verbose=0)
    with pytest.raises(ValueError, match="validation_freq"):
        m.fit(x, [y1, y2], validation_freq=0, verbose=0)
    assert m.optimizer.iterations == 0


def test_zero_sample_weights_leave_the_weights_unchanged():
    """A model-level check of the core's weighting (not only the oracle's): weights of zero train nothing."""
    x, y1, y2, _ = _mo_data(16)
    m = _compiled_graph()
    before = [w.copy() for w in m.get_weights()]
    m.fit(x, [y1, y2], sample_weight=np.zeros(16), verbose=0, batch_size=8)
    for a, b in zip(before, m.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert m.optimizer.iterations == 2


def test_generators_and_py_datasets_train_graph_models_as_arrays_do():
    x, y1, y2, _ = _mo_data(40, seed=41)
    a, b, c = _compiled_graph(), _compiled_graph(), _compiled_graph()
    for m in (a, b, c):
        m.compile(
            optimizer="sgd",
            loss=["sparse_categorical_crossentropy", "binary_crossentropy"],
            metrics=[["accuracy"], ["mae"]],
        )
    b.set_weights(a.get_weights())
    c.set_weights(a.get_weights())

    def gen():
        while True:
            for s in range(0, 40, 8):
                yield x[s : s + 8], [y1[s : s + 8], y2[s : s + 8]]

    class Batches(cdnn.utils.PyDataset):
        def __len__(self):
            return 5

        def __getitem__(self, i):
            s = slice(8 * i, 8 * i + 8)
            return {"x": x[s]}, {"out1": y1[s], "out2": y2[s]}

    ha = a.fit(x, [y1, y2], batch_size=8, epochs=2, shuffle=False, verbose=0, validation_data=(x, [y1, y2]))
    hb = b.fit(gen(), steps_per_epoch=5, epochs=2, verbose=0, validation_data=gen(), validation_steps=5)
    hc = c.fit(Batches(), epochs=2, shuffle=False, verbose=0, validation_data=Batches())
    for h in (hb, hc):
        assert sorted(h.history) == sorted(ha.history)
        for key in ha.history:
            np.testing.assert_allclose(h.history[key], ha.history[key], rtol=1e-12, err_msg=key)
    np.testing.assert_allclose(b.evaluate(gen(), steps=5, verbose=0), a.evaluate(x, [y1, y2], verbose=0), rtol=1e-12)
    with pytest.raises(ValueError, match="sample_weight"):
        b.fit(gen(), steps_per_epoch=2, sample_weight=np.ones(8), verbose=0)


@pytest.mark.parametrize("suffix", [".keras", ".cdnn"])
@pytest.mark.parametrize("kind", ["chain", "functional"])
def test_weighted_metrics_survive_save_and_load(tmp_path, suffix, kind):
    pytest.importorskip("h5py") if suffix == ".keras" else None
    rng = np.random.default_rng(3)
    x = rng.normal(size=(64, 6)).astype(np.float32)
    y = rng.integers(0, 3, size=64)
    sw = rng.uniform(0.2, 2.0, size=64).astype(np.float32)
    if kind == "chain":
        model = cdnn.Sequential([cdnn.Input((6,)), cdnn.layers.Dense(5, activation="relu"), cdnn.layers.Dense(3)])
    else:
        inp = cdnn.Input((6,))
        model = cdnn.Model(inp, cdnn.layers.Dense(3)(cdnn.layers.Dense(5, activation="relu")(inp)))
    model.compile(
        "adam",
        cdnn.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
        weighted_metrics=["accuracy", cdnn.metrics.SparseTopKCategoricalAccuracy(k=2)],
    )
    model.fit(x, y, sample_weight=sw, epochs=1, batch_size=16, verbose=0)
    before = model.evaluate(x, y, sample_weight=sw, verbose=0, return_dict=True)
    path = str(tmp_path / f"m{suffix}")
    model.save(path)
    loaded = cdnn.models.load_model(path)
    after = loaded.evaluate(x, y, sample_weight=sw, verbose=0, return_dict=True)
    assert list(after) == list(before)
    assert "weighted_accuracy" in after and "sparse_top_k_categorical_accuracy" in after
    for k in before:
        assert after[k] == pytest.approx(before[k], rel=1e-6), k
