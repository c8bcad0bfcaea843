"""Small predicts on 2 threads: the same bits as on 1.

A predict of at most 16 samples without labels splits each big Dense's columns (with its fused
BatchNormalization and Activation) over 2 threads, in the chain and the graph; a predict of more rows
whose flops are few shares its rows over 2 threads. Either is chosen per call by timing against 1
thread (``_core.row_split(0)``), or forced: ``row_split(1)`` one thread, ``row_split(2)`` two, a predict
of at most 16 rows then splitting every Dense. Forced 1 and forced 2 must give the same bits, and those of
the same rows inside a bigger batch; the chooser's decisions are checked on given timings.
"""

from __future__ import annotations

import numpy as np
import pytest
import reference as ref

import cdnn
from cdnn import _core, keras, layers
from cdnn.models.functional import lower

ROWS = [1, 2, 3, 7, 33]
UNITS = [1, 3, 7, 33]


@pytest.fixture
def forced(session):
    """``run(mode, f, *args)``: f(*args) on 2 threads under ``_core.row_split(mode)``."""
    cdnn.set_num_threads(2)

    def run(mode, f, *args):
        _core.row_split(mode)
        try:
            return f(*args)
        finally:
            _core.row_split(0)

    yield run
    _core.row_split(0)


def _same_bits_forced(forced, model, xs, full):
    """For every row count: forced 1 thread and forced 2 give the same bits, those of the rows in ``full``."""
    for n in ROWS:
        for i in (0, len(xs[0]) - n):
            part = [x[i : i + n] for x in xs]
            arg = part if len(part) > 1 else part[0]
            one = forced(1, model.predict_on_batch, arg)
            two = forced(2, model.predict_on_batch, arg)
            auto = model.predict_on_batch(arg)
            for a, b, c, f in zip(*(v if isinstance(v, list) else [v] for v in (one, two, auto, full))):
                np.testing.assert_array_equal(a, b, err_msg=f"rows {i}..{i + n}")
                np.testing.assert_array_equal(a, c, err_msg=f"rows {i}..{i + n}")
                np.testing.assert_array_equal(a, f[i : i + n], err_msg=f"rows {i}..{i + n}")


def _graph_oracle(model, xs):
    desc, ins, outs = lower(model._inference_model(), training=False)
    vals, _ = ref.Graph(desc, ins, [{"node": o} for o in outs]).forward(xs, training=False)
    return [vals[k].reshape((len(xs[0]),) + tuple(model.outputs[j].shape[1:])) for j, k in enumerate(outs)]


def _perturb(model):
    """Biases and normalization vectors away from their initial values (variances > 0)."""
    rng = np.random.default_rng(2)
    model.set_weights(
        [(w + rng.normal(0, 0.3, w.shape) ** 2 if w.ndim == 1 else w).astype(np.float32) for w in model.get_weights()]
    )


def _bn(units, n_in):
    inp = layers.Input(shape=(n_in,))
    h = layers.Activation("relu")(layers.BatchNormalization()(layers.Dense(units)(inp)))
    h = layers.Activation("relu")(layers.BatchNormalization()(layers.Dense(33)(h)))
    return keras.Model(inp, layers.Dense(3, activation="softmax")(h))


def _add(units, n_in):
    inp = layers.Input(shape=(n_in,))
    a = layers.Dense(units, activation="relu")(inp)
    b = layers.Dense(units, activation="tanh")(inp)
    return keras.Model(inp, layers.Dense(4)(layers.Add()([a, layers.Dense(units)(a), b])))


def _concat(units, n_in):
    a, b = layers.Input(shape=(n_in,)), layers.Input(shape=(9,))
    h = layers.Concatenate()([layers.Dense(units, activation="relu")(a), layers.Dense(7)(b), b])
    return keras.Model([a, b], layers.Dense(3, activation="sigmoid")(h))


def _two_outputs(units, n_in):
    inp = layers.Input(shape=(n_in,))
    h = layers.Dense(units, activation="relu")(inp)
    return keras.Model(inp, [layers.Dense(3, activation="softmax")(h), layers.Dense(units)(h), h])


def _three_d(units, n_in):
    inp = layers.Input(shape=(4, n_in))
    h = layers.Dense(units, activation="relu")(inp)
    return keras.Model(inp, layers.Dense(5)(layers.BatchNormalization()(layers.Dense(6)(h))))


def _softmax_last(units, n_in):
    inp = layers.Input(shape=(n_in,))
    h = layers.BatchNormalization()(layers.Dense(units)(inp))
    a = layers.Activation("softmax")(h)
    b = layers.Dense(units, activation="softmax")(inp)
    return keras.Model(inp, [a, b])


GRAPHS = [_bn, _add, _concat, _two_outputs, _three_d, _softmax_last]


@pytest.mark.parametrize("n_in", [20, 784])
@pytest.mark.parametrize("units", UNITS)
@pytest.mark.parametrize("make", GRAPHS, ids=lambda f: f.__name__[1:])
def test_graph_split_same_bits_as_one_thread(forced, make, units, n_in):
    """A graph's predicts of up to 16 samples with its Dense nodes' columns split over 2 threads (fused
    BatchNormalization and activations in the epilogue, a softmax after every column), and its small
    predicts with the rows shared: the bits of 1 thread and of the rows in a batch, the oracle's values."""
    model = make(units, n_in)
    _perturb(model)
    rng = np.random.default_rng(units)
    xs = [rng.random((40,) + tuple(i.shape[1:]), dtype=np.float32) for i in model.inputs]
    full = model.predict(xs if len(xs) > 1 else xs[0], verbose=0)
    full = full if isinstance(full, list) else [full]
    for got, want in zip(full, _graph_oracle(model, xs)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * max(1.0, float(np.abs(want).max())))
    _same_bits_forced(forced, model, xs, full)


@pytest.mark.parametrize("units", UNITS + [100])
def test_chain_small_predicts_same_bits_as_one_thread(forced, units):
    """The chain's predicts of up to 16 rows split in columns and its small predicts' rows shared over 2
    threads: the bits of 1 thread and of the rows in a batch; odd widths, a depth-split first layer."""
    model = keras.Sequential(
        [
            layers.Input(shape=(784,)),
            layers.Dense(units, activation="relu"),
            layers.Dense(7, activation="tanh"),
            layers.Dense(3, activation="softmax"),
        ]
    )
    x = np.random.default_rng(units).random((40, 784), dtype=np.float32)
    full = model.predict(x, verbose=0)
    h = x
    for layer in model.layers:
        _, h = ref.dense_forward(h, layer.kernel, layer.bias, layer.activation.__name__)
    np.testing.assert_allclose(full, h, rtol=1e-5, atol=1e-6)
    _same_bits_forced(forced, model, [x], [full])


@pytest.mark.parametrize("functional", [False, True])
def test_two_rows_in_chunks_of_one(forced, functional):
    """Two rows predicted in chunks of one (a workspace of one row) are not split together: the bits of
    each row alone."""
    stack = [layers.Input(shape=(784,)), layers.Dense(100, activation="relu"), layers.Dense(10)]
    model = keras.Sequential(stack)
    if functional:
        inp = layers.Input(shape=(784,))
        model = keras.Model(inp, model(inp))
    x = np.random.default_rng(0).random((2, 784), dtype=np.float32)
    want = np.concatenate([forced(1, model.predict_on_batch, x[i : i + 1]) for i in range(2)])
    got = forced(2, model.predict, x, 1, 0)
    np.testing.assert_array_equal(got, want)


def _probes(picks, option):
    return [i for i, o in enumerate(picks) if o == option]


def test_chooser_measures_both_then_keeps_the_faster_probing_less_and_less():
    """Each option twice first (2 threads first), then the faster; the other probed once 64 calls are made,
    the interval doubling while the choice holds."""
    picks = _core.chooser_trace([1e-5] * 2000, [2e-5] * 2000)
    assert picks[:4] == [1, 1, 0, 0]
    assert _probes(picks, 1) == [0, 1, 64, 64 + 129, 64 + 129 + 257, 64 + 129 + 257 + 513, 64 + 129 + 257 + 513 + 1025]
    picks = _core.chooser_trace([2e-5] * 300, [1e-5] * 300)
    assert _probes(picks, 0) == [2, 3, 64, 64 + 129]


def test_chooser_falls_back_to_one_thread_when_the_other_core_is_busy_and_recovers():
    """2 threads faster until the other core gets busy (2 threads 40x slower): within three calls back to 1
    thread; when the core is free again, back to 2 at the next probe (repeated at once while faster); a
    probe faster by chance (one in three) costs two more probes at most."""
    n = 3000
    two = [0.5e-5] * 500 + [20e-5] * 500 + [0.5e-5] * (n - 1000)
    picks = _core.chooser_trace([1e-5] * n, two)
    assert _probes(picks[:500], 0) == [2, 3, 64, 193, 450] and not any(picks[503:963])
    assert _probes(picks[963:], 1)[:4] == [0, 1025, 1026, 1027] and all(picks[1988:2055])
    two = [0.5e-5 if i % 3 == 0 else 3e-5 for i in range(3000)]
    assert sum(_core.chooser_trace([1e-5] * 3000, two)) <= 2 + 2 * 6
    # one slow call (a moment of load) moves no choice
    two = [0.5e-5] * 200 + [20e-5] + [0.5e-5] * 200
    assert _core.chooser_trace([1e-5] * 401, two) == _core.chooser_trace([1e-5] * 401, [0.5e-5] * 401)
