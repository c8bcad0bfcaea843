"""Inference fusion: a Dense without activation runs the BatchNormalization (and then the Activation) that
alone read its value in its GEMM's epilogue, in predict, predict_on_batch, model(x) and evaluate.

The fused values must equal the separate passes' bit for bit (the graph's ``fuse`` off), follow the
NumPy oracle (tests/reference.py's Graph, float64, Keras' formulas) within float32 rounding, be the same
on 1 and 2 threads, and follow every change of the weights (fit, set_weights, load_weights). Where a
value is read elsewhere (a second consumer, a model output, a wanted node, a logits loss), or the Dense
has its own activation (the BatchNormalization then follows it), nothing is fused and the values stay right.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import reference as ref

from cdnn import _core, keras, layers
from cdnn.models.functional import lower

WIDTHS = [1, 3, 7, 33, 784, 1000]


def _perturb(model, seed=2):
    """Weights away from their initial values (moving statistics as after training: variance > 0)."""
    rng = np.random.default_rng(seed)
    ws = []
    for w in model.get_weights():
        ws.append((w + rng.normal(0, 0.3, w.shape) ** 2 if w.ndim == 1 else w).astype(np.float32))
    model.set_weights(ws)


def _bn_mlp(n_in, units, use_bias=True, center=True, scale=True, act="relu", out=5):
    inp = layers.Input(shape=(n_in,))
    h = layers.Dense(units, use_bias=use_bias)(inp)
    h = layers.BatchNormalization(center=center, scale=scale)(h)
    h = layers.Activation(act)(h)
    h = layers.Dense(out, use_bias=use_bias)(h)
    h = layers.BatchNormalization(center=center, scale=scale)(h)
    model = keras.Model(inp, layers.Activation("softmax")(h))
    _perturb(model)
    return model


def _oracle(model, x, nodes=None):
    """The model's outputs (or the values of ``nodes``) by the NumPy graph, from its current weights."""
    desc, ins, outs = lower(model._inference_model(), training=False)
    vals, _ = ref.Graph(desc, ins, [{"node": o} for o in outs]).forward([x], training=False)
    return [vals[k].reshape(len(x), -1) for k in (outs if nodes is None else nodes)]


def _unfused(model, x, **kw):
    graph = model._core_graph(training=False)
    graph.fuse = False
    try:
        return model.predict(x, verbose=0, **kw)
    finally:
        graph.fuse = True


def _close(got, want, rtol=1e-5):
    """Within float32 rounding relative to the values' scale."""
    np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * max(1.0, float(np.abs(want).max())))


def _fused(graph, nodes=(), labelled=False):
    """``{dense: last}``: the nodes a predict computes in each fused Dense's epilogue."""
    return {i: int(e) for i, e in enumerate(graph.fusions(nodes, labelled)) if e >= 0}


def _ops(model):
    return [d["op"] for d in lower(model._inference_model(), training=False)[0]]


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("variant", ["bias+cs", "nobias+cs", "bias-cs", "nobias-cs"])
def test_fused_predict_is_the_unfused_one_and_the_oracle(threads, width, variant):
    model = _bn_mlp(
        17, width, use_bias=not variant.startswith("no"), center=variant.endswith("+cs"), scale=variant.endswith("+cs")
    )
    graph = model._core_graph(training=False)
    assert _ops(model) == ["input", "dense", "batchnorm", "activation", "dense", "batchnorm", "activation"]
    assert _fused(graph) == {1: 3, 4: 6}  # each Dense computes its BatchNormalization and Activation
    for n in (1, 5, 37):
        x = np.random.default_rng(n).standard_normal((n, 17)).astype(np.float32)
        got = model.predict(x, verbose=0)
        np.testing.assert_array_equal(got, _unfused(model, x))
        np.testing.assert_array_equal(model.predict_on_batch(x), got)
        np.testing.assert_array_equal(np.asarray(model(x)), got)
        _close(got, _oracle(model, x)[0])


def test_one_and_two_threads_give_the_same_bits():
    model = _bn_mlp(33, 1000)
    x = np.random.default_rng(0).standard_normal((600, 33)).astype(np.float32)
    got = {}
    prev = _core.get_num_threads()
    try:
        for t in (1, 2):
            _core.set_num_threads(t)
            got[t] = model.predict(x, verbose=0, batch_size=600)
    finally:
        _core.set_num_threads(prev)
    np.testing.assert_array_equal(got[1], got[2])
    np.testing.assert_array_equal(got[1], _unfused(model, x, batch_size=600))


def test_a_dense_with_its_own_activation_is_not_fused(threads):
    # the BatchNormalization follows the ReLU: relu(x W + b), then normalized
    inp = layers.Input(shape=(9,))
    h = layers.BatchNormalization()(layers.Dense(7, activation="relu")(inp))
    model = keras.Model(inp, layers.Dense(3)(h))
    _perturb(model)
    assert _fused(model._core_graph(training=False)) == {}
    x = np.random.default_rng(1).standard_normal((11, 9)).astype(np.float32)
    _close(model.predict(x, verbose=0), _oracle(model, x)[0])


def test_values_read_twice_are_computed(threads):
    inp = layers.Input(shape=(6,))
    d1 = layers.Dense(8)(inp)
    bn = layers.BatchNormalization()(d1)
    a = layers.Activation("tanh")(bn)
    merged = layers.Add()([a, bn])  # the BatchNormalization feeds two consumers
    d2 = layers.Dense(8)(merged)
    both = layers.Concatenate()([layers.BatchNormalization()(d2), d2])  # a Dense feeding two consumers
    model = keras.Model(inp, [layers.Dense(4)(both), bn])  # the first BatchNormalization is also an output
    _perturb(model)
    assert " ".join(_ops(model)) == "input dense batchnorm activation add dense batchnorm concatenate dense"
    # the first Dense computes its BatchNormalization (an output, read twice) and stops there; the second
    # Dense's value is read twice: not fused
    assert _fused(model._core_graph(training=False)) == {1: 2}
    x = np.random.default_rng(2).standard_normal((13, 6)).astype(np.float32)
    got = model.predict(x, verbose=0)
    for g, w in zip(got, _oracle(model, x)):
        _close(g, w)
    for g, u in zip(got, _unfused(model, x)):
        np.testing.assert_array_equal(g, u)


def test_a_wanted_value_is_not_fused():
    model = _bn_mlp(5, 7)
    graph = model._core_graph(training=False)
    assert _fused(graph, [1]) == {4: 6}
    assert _fused(graph, [2]) == {1: 2, 4: 6}
    x = np.random.default_rng(3).standard_normal((9, 5)).astype(np.float32)
    for node in (1, 2, 3):
        (got,) = graph.predict([x], nodes=[node])
        _close(got, _oracle(model, x, [node])[0])
    with pytest.raises(ValueError, match="node indices"):
        _fused(graph, [99])


def test_frozen_batchnorm_after_fit(threads):
    model = _bn_mlp(10, 33)
    model.layers[2].trainable = False  # the first BatchNormalization: inference mode in fit too
    model.compile("adam", "sparse_categorical_crossentropy")
    rng = np.random.default_rng(4)
    x, y = rng.standard_normal((64, 10)).astype(np.float32), rng.integers(0, 5, 64)
    frozen = [w.copy() for w in model.layers[2].get_weights()]
    model.fit(x, y, epochs=2, batch_size=16, verbose=0)
    for a, b in zip(model.layers[2].get_weights(), frozen):
        np.testing.assert_array_equal(a, b)
    got = model.predict(x, verbose=0)
    np.testing.assert_array_equal(got, _unfused(model, x))
    _close(got, _oracle(model, x)[0])


def test_predict_follows_fit_set_weights_and_load_weights(tmp_path):
    model = _bn_mlp(12, 7)
    model.compile("adam", "sparse_categorical_crossentropy")
    rng = np.random.default_rng(5)
    x, y = rng.standard_normal((40, 12)).astype(np.float32), rng.integers(0, 5, 40)
    before = model.predict(x, verbose=0)
    model.save_weights(tmp_path / "m.weights.h5")
    model.fit(x, y, epochs=2, batch_size=8, verbose=0)  # moving statistics and weights move
    after_fit = model.predict(x, verbose=0)
    assert not np.allclose(after_fit, before)
    _close(after_fit, _oracle(model, x)[0])
    ws = model.get_weights()
    model.set_weights([w * 1.5 if w.ndim == 1 else w for w in ws])
    _close(model.predict(x, verbose=0), _oracle(model, x)[0])
    model.load_weights(tmp_path / "m.weights.h5")
    np.testing.assert_array_equal(model.predict(x, verbose=0), before)


def test_evaluate_reports_the_loss_of_predicts_outputs():
    model = _bn_mlp(8, 33)
    model.compile("sgd", "sparse_categorical_crossentropy", metrics=["accuracy"])
    graph = model._core_graph(training=False)
    # with labels, the softmax Activation output's loss reads its input: that value is computed
    assert _fused(graph, labelled=True) == {1: 3, 4: 5}
    rng = np.random.default_rng(6)
    x, y = rng.standard_normal((50, 8)).astype(np.float32), rng.integers(0, 5, 50)
    p = model.predict(x, verbose=0).astype(np.float64)
    loss, acc = model.evaluate(x, y, verbose=0, batch_size=50)
    np.testing.assert_allclose(loss, -np.log(p[np.arange(50), y]).mean(), rtol=1e-5)
    assert acc == pytest.approx((p.argmax(1) == y).mean())


def test_keras_gives_the_same_outputs_within_float32_rounding():
    os.environ.setdefault("KERAS_BACKEND", "jax")
    pytest.importorskip("jax")
    k = pytest.importorskip("keras")
    model = _bn_mlp(20, 33)
    inp = k.Input(shape=(20,))
    h = k.layers.Activation("relu")(k.layers.BatchNormalization()(k.layers.Dense(33)(inp)))
    h = k.layers.Activation("softmax")(k.layers.BatchNormalization()(k.layers.Dense(5)(h)))
    theirs = k.Model(inp, h)
    theirs.set_weights(model.get_weights())
    x = np.random.default_rng(7).standard_normal((64, 20)).astype(np.float32)
    _close(model.predict(x, verbose=0), np.asarray(theirs.predict(x, verbose=0)))


def test_a_dense_on_n_d_inputs_is_fused_per_row(threads):
    inp = layers.Input(shape=(3, 5))
    h = layers.Activation("gelu")(layers.BatchNormalization()(layers.Dense(7)(inp)))
    model = keras.Model(inp, layers.Dense(2)(layers.Flatten()(h)))
    _perturb(model)
    assert _fused(model._core_graph(training=False)) == {1: 3}
    x = np.random.default_rng(8).standard_normal((9, 3, 5)).astype(np.float32)
    got = model.predict(x, verbose=0)
    np.testing.assert_array_equal(got, _unfused(model, x))
    _close(got, _oracle(model, x)[0])
