"""Graph models' lean predict (one input check, one C call on the cached core graph): the bits of the
general path, for predict, predict_on_batch and model(x); the general path whenever the lean one can't serve."""

from __future__ import annotations

import numpy as np
import pytest

import cdnn
from cdnn import keras, layers
from cdnn.trainers import loop


def _bn_mlp():
    inp = h = keras.Input((30,))
    for u in (24, 16):
        h = layers.Activation("relu")(layers.BatchNormalization()(layers.Dense(u)(h)))
    model = keras.Model(inp, layers.Dense(5, activation="softmax")(h))
    rng = np.random.default_rng(1)
    model.set_weights([w + rng.random(w.shape, np.float32) if w.ndim == 1 else w for w in model.get_weights()])
    return model


def _two_inputs():
    a, b = keras.Input((30,), name="a"), keras.Input((7,), name="b")
    h = layers.Concatenate()([layers.Dense(12, activation="tanh")(a), b])
    return keras.Model([a, b], layers.Dense(3)(h))


def _multi_output(as_dict):
    inp = keras.Input((30,))
    h = layers.Dense(16, activation="relu")(inp)
    p, q = layers.Dense(4, activation="softmax", name="p")(h), layers.Dense(2, name="q")(h)
    return keras.Model(inp, {"p": p, "q": q} if as_dict else [p, q])


MODELS = {
    "bn_mlp": _bn_mlp,
    "two_inputs": _two_inputs,
    "list_out": lambda: _multi_output(False),
    "dict_out": lambda: _multi_output(True),
}


def _inputs(name, n, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.random((n, 30), dtype=np.float32)
    return [x, rng.random((n, 7), dtype=np.float32)] if name == "two_inputs" else x


def _general(model, x):
    return loop.predict_graph(model, x, None, 0, None, [cdnn.callbacks.Callback()])


def _same(a, b):
    if isinstance(a, dict):
        assert sorted(a) == sorted(b)
        a, b = [a[k] for k in sorted(a)], [b[k] for k in sorted(b)]
    a, b = (a, b) if isinstance(a, list) else ([a], [b])
    assert len(a) == len(b)
    for u, v in zip(a, b):
        assert u.shape == v.shape and u.dtype == v.dtype
        np.testing.assert_array_equal(u, v)


@pytest.fixture
def general_calls(monkeypatch):
    """How many times the general path ran."""
    calls = []
    real = loop.predict_graph

    def counted(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(loop, "predict_graph", counted)
    return calls


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("n", [1, 3, 32])
@pytest.mark.parametrize("name", sorted(MODELS))
def test_lean_same_bits_as_general(session, general_calls, name, n, threads):
    cdnn.set_num_threads(threads)
    model = MODELS[name]()
    x = _inputs(name, n)
    want = _general(model, x)
    for _ in range(2):  # the first call makes the plan, the second runs it
        _same(model.predict(x, verbose=0), want)
        _same(model.predict_on_batch(x), want)
        _same(model(x), want)
        _same(model(x, training=False), want)
    assert len(general_calls) == 1  # _general's own: every other call took the lean path


def test_lean_follows_weights_fit_and_recompile(session, general_calls):
    model = _bn_mlp()
    x = _inputs("bn_mlp", 3)
    before = model.predict(x, verbose=0)
    ws = model.get_weights()
    ws[3] = ws[3] + 1.0  # the first BatchNormalization's beta
    model.set_weights(ws)
    after = model.predict(x, verbose=0)
    assert not np.allclose(before, after)
    _same(after, _general(model, x))
    model.compile("adam", "mse")
    model.fit(x, np.zeros((3, 5), np.float32), epochs=2, verbose=0)  # moving statistics and weights move
    fitted = model.predict(x, verbose=0)
    assert not np.allclose(fitted, after)
    _same(fitted, _general(model, x))
    _same(model(x), _general(model, x))


def test_live_call_and_other_inputs_take_the_general_path(session, general_calls):
    inp = keras.Input((30,))
    out = layers.Dense(4)(layers.Dropout(0.5)(layers.Dense(8)(inp), training=True))
    model = keras.Model(inp, out)
    x = _inputs("bn_mlp", 4)
    model(x)
    model(x)
    model(x, training=True)
    assert len(general_calls) == 3  # the dropout call is live in model(x): never the lean path
    lean = model.predict(x, verbose=0)
    assert len(general_calls) == 3  # predict runs it in inference: the lean path
    _same(lean, _general(model, x))
    for other in (x.astype(np.float64), np.asfortranarray(x), x.tolist(), x[:, None, :][:, 0]):
        _same(model.predict(other, verbose=0), model.predict(x, verbose=0))
    bad = x.copy()
    bad[1, 2] = np.nan
    with pytest.raises(ValueError):
        model.predict(bad, verbose=0)
    with pytest.raises(ValueError):
        model.predict(x, batch_size=0, verbose=0)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("value", [np.nan, np.inf])
@pytest.mark.parametrize("n, row", [(1, 0), (5, 4), (1000, 0), (1000, 641), (3000, 2999)])
@pytest.mark.parametrize("name", ["bn_mlp", "two_inputs"])
def test_lean_checks_every_piece_of_every_input(session, general_calls, name, n, row, value, threads):
    """Each piece of every input is checked as it is copied in: a NaN or infinity in any of them (the last
    input's too) makes the lean call give way to the general path, which refuses it."""
    cdnn.set_num_threads(threads)
    model = MODELS[name]()
    xs = _inputs(name, n, seed=row)
    want = _general(model, xs)
    _same(model.predict_on_batch(xs), want)
    assert len(general_calls) == 1  # the lean path took the finite inputs
    bad = [a.copy() for a in xs] if isinstance(xs, list) else xs.copy()
    last = bad[-1] if isinstance(bad, list) else bad
    last[row, row % last.shape[1]] = value
    with pytest.raises(ValueError, match="NaN or infinity"):
        model.predict_on_batch(bad)
    assert len(general_calls) == 2
    _same(model.predict_on_batch(xs), want)
    assert len(general_calls) == 2


def test_two_inputs_dict_and_mismatched_rows(session, general_calls):
    model = _two_inputs()
    xs = _inputs("two_inputs", 5)
    want = _general(model, xs)
    _same(model.predict({"a": xs[0], "b": xs[1]}, verbose=0), want)
    _same(model.predict(tuple(xs), verbose=0), want)
    with pytest.raises(ValueError):
        model.predict([xs[0], xs[1][:3]], verbose=0)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("widths", [(256, 128), (320, 100), (64, 7)])
def test_big_graph_predict_same_bits_as_rows_alone(session, widths, threads):
    """A graph predict of many samples (Dense products from W packed once for the call where every thread has
    enough samples, every node for 64 samples at a time) gives the bits of the same samples predicted alone
    and 32 at a time, with and without the BatchNormalization/Activation epilogue fusion, and evaluate's loss
    from the same values."""
    cdnn.set_num_threads(threads)
    inp = h = keras.Input((784,))
    for u in widths:
        h = layers.Activation("relu")(layers.BatchNormalization()(layers.Dense(u)(h)))
    h2 = layers.Dense(widths[0], activation="tanh")(inp)  # a second branch: a node read twice, unfused
    out = layers.Dense(10, activation="softmax")(layers.Concatenate()([h, h2]))
    model = keras.Model(inp, out)
    rng = np.random.default_rng(sum(widths))
    model.set_weights([w + rng.random(w.shape, np.float32) if w.ndim == 1 else w for w in model.get_weights()])
    x = rng.random((1037, 784), dtype=np.float32)
    full = model.predict(x, verbose=0)
    assert np.isfinite(full).all() and full.shape == (1037, 10)
    for i in (0, 511, 512, 1036):
        np.testing.assert_array_equal(model.predict_on_batch(x[i : i + 1]), full[i : i + 1])
    np.testing.assert_array_equal(model.predict(x[:96], batch_size=32, verbose=0), full[:96])
    np.testing.assert_array_equal(_general(model, x), full)
    model.compile(loss="sparse_categorical_crossentropy")
    y = rng.integers(0, 10, 1037)
    want = -np.log(full[np.arange(1037), y].astype(np.float64)).mean()
    assert model.evaluate(x, y, verbose=0) == pytest.approx(want, rel=1e-5)
    for layer in model.layers:  # W changed in place: the next predict packs it again (into its own copy for 100 units)
        if isinstance(layer, layers.Dense):
            layer.kernel[::3] *= -1.5
    again = model.predict(x, verbose=0)
    assert not np.array_equal(again, full)
    for i in (0, 1036):
        np.testing.assert_array_equal(model.predict_on_batch(x[i : i + 1]), again[i : i + 1])
