"""The lean predict path (float32 arrays, no progress bar, no callbacks) against the general one.

``predict(x, verbose=0)``, ``predict_on_batch`` and ``model(x)`` take a short path for
arrays the core reads as they are, with the C network made once per model state; the
general path (callbacks given, other dtypes, non-contiguous arrays) converts and checks.
Both must give the same bits, the cached network must follow every change of the model,
and a row's prediction must not depend on the batch it is in (the GEMM's few-row kernel
keeps the sums of the general tiles).
"""

from __future__ import annotations

import numpy as np
import pytest
import reference as ref

import cdnn
from cdnn import _core, keras, layers

BATCHES = [1, 2, 3, 7, 33, 1000]


def _chain(sizes, compiled=False):
    model = keras.Sequential(
        [layers.Input(shape=(sizes[0],))]
        + [layers.Dense(u, activation="relu") for u in sizes[1:-1]]
        + [layers.Dense(sizes[-1], activation="softmax")]
    )
    if compiled:
        model.compile("adam", "sparse_categorical_crossentropy")
    return model


def _oracle(model, x):
    """The chain's outputs by tests/reference.py's Dense, from the model's current weights."""
    h = np.asarray(x, np.float32).reshape(len(x), -1)
    for layer in model.layers:
        if isinstance(layer, layers.Dense):
            _, h = ref.dense_forward(h, layer.kernel, layer.bias, layer.activation.__name__)
    return h


def _bn_graph():
    inp = keras.Input((20,))
    h = layers.Dense(64)(inp)
    h = layers.BatchNormalization()(h)
    h = layers.Activation("relu")(h)
    out = layers.Dense(5, activation="softmax")(h)
    model = keras.Model(inp, out)
    bn = model.layers[2]
    rng = np.random.default_rng(3)
    bn.set_weights([rng.uniform(0.5, 1.5, 64), rng.normal(size=64), rng.normal(size=64), rng.uniform(0.5, 2, 64)])
    return model


def _general(model, x):
    """predict by the general path: a callback makes it run batch by batch with hooks."""
    return model.predict(x, verbose=0, callbacks=[cdnn.callbacks.Callback()])


@pytest.mark.parametrize("compiled", [False, True])
@pytest.mark.parametrize("sizes", [[784, 100, 10], [784, 512, 256, 10], [33, 70, 5]])
def test_chain_fast_path_same_bits_as_general_and_row_alone(session, sizes, compiled):
    model = _chain(sizes, compiled)
    x = np.random.default_rng(1).random((1000, sizes[0]), dtype=np.float32)
    full = _general(model, x)
    np.testing.assert_allclose(full, _oracle(model, x), rtol=1e-5, atol=1e-6)
    for n in BATCHES:
        for fn in (lambda a: model.predict(a, verbose=0), model.predict_on_batch, model):
            np.testing.assert_array_equal(fn(x[:n]), full[:n])
            np.testing.assert_array_equal(fn(x[:n]), _general(model, x[:n]))
    for i in range(0, 40):  # a row alone: the few-row kernel's sums are the big tiles' sums
        np.testing.assert_array_equal(model.predict_on_batch(x[i : i + 1])[0], full[i])
        np.testing.assert_array_equal(model.predict_on_batch(x[i : i + 2]), full[i : i + 2])


def test_sequential_call_on_an_array_takes_one_c_call(session, monkeypatch):
    """``model(x)`` of a Dense chain on a float32 array goes straight to the lean path (no symbolic-input
    scan, no generic call); other inputs and ``training=True`` still reach Model.__call__."""
    model = _chain([784, 100, 10])
    x = np.random.default_rng(3).random((3, 784), dtype=np.float32)
    want = model.predict(x, verbose=0)
    seen = []
    generic = cdnn.Model.__call__

    def spy(self, *args, **kwargs):
        seen.append(args[1:] if len(args) > 1 else kwargs)
        return generic(self, *args, **kwargs)

    monkeypatch.setattr(cdnn.Model, "__call__", spy)
    np.testing.assert_array_equal(model(x), want)
    np.testing.assert_array_equal(model(x, training=False), want)
    assert seen == []
    np.testing.assert_array_equal(model(x.astype(np.float64)), want)
    np.testing.assert_array_equal(model(x, training=True), want)  # no dropout: the same values
    assert len(seen) == 2


@pytest.mark.parametrize("n", [1, 3, 33])
def test_chain_other_inputs_converted_as_before(session, n):
    model = _chain([30, 40, 4])
    rng = np.random.default_rng(2)
    x = rng.random((n, 30), dtype=np.float32)
    want = _general(model, x)
    wide = np.zeros((n, 60), np.float32)
    wide[:, ::2] = x  # not contiguous
    fortran = np.asfortranarray(x)
    for a in (wide[:, ::2], fortran, x.astype(np.float64), [list(r) for r in x]):
        np.testing.assert_array_equal(model.predict(a, verbose=0), want)
        np.testing.assert_array_equal(model.predict_on_batch(a), want)
        np.testing.assert_array_equal(model(a), want)
    xi = rng.integers(0, 5, (n, 30))
    np.testing.assert_array_equal(model.predict(xi, verbose=0), _general(model, xi.astype(np.float32)))


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("n, row", [(1, 0), (7, 6), (33, 17), (1000, 0), (1000, 517), (3000, 2999)])
def test_lean_predict_checks_every_piece_of_the_input(session, n, row, value, threads):
    """The core checks the input piece by piece as the forward pass reads it (no pass of its own): a NaN or
    infinity anywhere, in any thread's piece, sends the call to the general path, which refuses it."""
    cdnn.set_num_threads(threads)
    model = _chain([30, 40, 4])
    x = np.random.default_rng(row).random((n, 30), np.float32)
    want = _general(model, x)
    np.testing.assert_array_equal(model.predict_on_batch(x), want)
    net = model._lean_plan()[0]
    np.testing.assert_array_equal(net.predict_lean(x, 512), want)  # the lean path itself takes it
    bad = x.copy()
    bad[row, row % 30] = value
    assert net.predict_lean(bad, 512) is None
    for call in (model.predict_on_batch, model, lambda a: model.predict(a, verbose=0)):
        with pytest.raises(ValueError, match="NaN or infinity"):
            call(bad)
    np.testing.assert_array_equal(model.predict_on_batch(x), want)  # nothing left over from the stopped call


def test_chain_fast_path_keeps_the_checks(session):
    model = _chain([30, 40, 4])
    x = np.ones((2, 30), np.float32)
    model.predict(x, verbose=0)
    bad = x.copy()
    bad[1, 3] = np.nan
    with pytest.raises(ValueError, match="NaN or infinity"):
        model.predict(bad, verbose=0)
    with pytest.raises(ValueError, match="NaN or infinity"):
        model.predict_on_batch(bad)
    with pytest.raises(ValueError, match="incompatible shape"):
        model.predict(np.ones((2, 31), np.float32), verbose=0)
    with pytest.raises(ValueError, match="at least one sample"):
        model.predict(np.ones((0, 30), np.float32), verbose=0)
    with pytest.raises(ValueError, match="batch_size"):
        model.predict(x, verbose=0, batch_size=0)
    with pytest.raises(ValueError, match="verbose"):
        model.predict(x, verbose=False)


def test_cached_network_follows_the_model(session, tmp_path):
    model = _chain([30, 40, 4], compiled=True)
    rng = np.random.default_rng(4)
    x = rng.random((5, 30), dtype=np.float32)
    y = rng.integers(0, 4, 64)
    model.predict(x, verbose=0)
    # set_weights
    model.set_weights([w + rng.normal(size=w.shape).astype(np.float32) for w in model.get_weights()])
    np.testing.assert_allclose(model.predict(x, verbose=0), _oracle(model, x), rtol=1e-5, atol=1e-6)
    # fit
    before = model.predict(x, verbose=0)
    model.fit(rng.random((64, 30), dtype=np.float32), y, epochs=1, verbose=0)
    after = model.predict(x, verbose=0)
    assert not np.array_equal(before, after)
    np.testing.assert_allclose(after, _oracle(model, x), rtol=1e-5, atol=1e-6)
    # load_weights
    path = tmp_path / "m.weights.h5"
    model.save_weights(path)
    model.set_weights([np.zeros_like(w) for w in model.get_weights()])
    np.testing.assert_allclose(model.predict(x, verbose=0), 0.25, rtol=1e-6)
    model.load_weights(path)
    np.testing.assert_array_equal(model.predict(x, verbose=0), after)
    # trainable changes and a new compile
    model.layers[0].trainable = False
    model.compile("sgd", "sparse_categorical_crossentropy")
    np.testing.assert_array_equal(model.predict(x, verbose=0), after)
    model.fit(rng.random((64, 30), dtype=np.float32), y, epochs=1, verbose=0)
    np.testing.assert_allclose(model.predict_on_batch(x), _oracle(model, x), rtol=1e-5, atol=1e-6)


def test_cached_network_follows_replaced_layers_and_activations(session):
    """Changes the in-place weights cannot show: a new activation, a layer added or removed."""
    model = _chain([30, 40, 4])
    x = np.random.default_rng(5).random((3, 30), dtype=np.float32)
    model.predict(x, verbose=0)
    model.layers[0].activation = cdnn.activations.get("tanh")
    np.testing.assert_allclose(model.predict(x, verbose=0), _oracle(model, x), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(model(x), _oracle(model, x), rtol=1e-5, atol=1e-6)
    model.add(layers.Dense(3, activation="sigmoid"))
    assert model.predict(x, verbose=0).shape == (3, 3)
    np.testing.assert_allclose(model.predict_on_batch(x), _oracle(model, x), rtol=1e-5, atol=1e-6)
    model.pop()
    np.testing.assert_allclose(model.predict(x, verbose=0), _oracle(model, x), rtol=1e-5, atol=1e-6)


def test_predict_on_batch_of_a_graph_sequential_runs_every_layer(session):
    """A Sequential with a BatchNormalization is a graph: predict_on_batch must not run its Dense layers alone."""
    model = keras.Sequential([layers.Input((10,)), layers.Dense(8), layers.BatchNormalization(), layers.Dense(3)])
    bn = model.layers[1]
    bn.set_weights([np.full(8, 2.0), np.full(8, 0.5), np.full(8, 0.1), np.full(8, 4.0)])
    x = np.random.default_rng(6).random((4, 10), dtype=np.float32)
    np.testing.assert_array_equal(model.predict_on_batch(x), _general(model, x))
    np.testing.assert_array_equal(model(x), _general(model, x))


@pytest.mark.parametrize("n", BATCHES)
def test_graph_fast_path_same_bits_as_general(session, n):
    model = _bn_graph()
    x = np.random.default_rng(7).random((n, 20), dtype=np.float32)
    want = _general(model, x)
    np.testing.assert_array_equal(model.predict(x, verbose=0), want)
    np.testing.assert_array_equal(model.predict_on_batch(x), want)
    np.testing.assert_array_equal(model(x), want)
    np.testing.assert_array_equal(model.predict(np.asfortranarray(x), verbose=0), want)
    np.testing.assert_array_equal(model.predict(x.astype(np.float64), verbose=0), want)
    # against the NumPy formulas (Keras' inference transform of BatchNormalization)
    d1, bn, _, d2 = model.layers[1:]
    z = x @ d1.kernel + d1.bias
    h = np.maximum((z - bn.moving_mean) / np.sqrt(bn.moving_variance + bn.epsilon) * bn.gamma + bn.beta, 0)
    _, o = ref.dense_forward(h, d2.kernel, d2.bias, "softmax")
    np.testing.assert_allclose(want, o, rtol=1e-5, atol=1e-6)


def test_graph_predict_follows_set_weights(session):
    model = _bn_graph()
    x = np.random.default_rng(8).random((3, 20), dtype=np.float32)
    before = model.predict(x, verbose=0)
    ws = model.get_weights()
    ws[3] = ws[3] + 1.0  # BatchNormalization's beta
    model.set_weights(ws)
    after = model.predict(x, verbose=0)
    assert not np.allclose(before, after)
    np.testing.assert_array_equal(after, _general(model, x))


@pytest.mark.parametrize("n", [1, 33, 2000])
def test_one_and_two_threads_same_bits(session, n):
    chain, graph = _chain([784, 512, 256, 10]), _bn_graph()
    rng = np.random.default_rng(9)
    xc, xg = rng.random((n, 784), dtype=np.float32), rng.random((n, 20), dtype=np.float32)
    cdnn.set_num_threads(1)
    one = chain.predict(xc, verbose=0), graph.predict(xg, verbose=0)
    cdnn.set_num_threads(2)
    two = chain.predict(xc, verbose=0), graph.predict(xg, verbose=0)
    np.testing.assert_array_equal(one[0], two[0])
    np.testing.assert_array_equal(one[1], two[1])


# ---- the one- and two-row GEMM kernels: the big tiles' sums on every SIMD path -------------------

SIMD_PATHS = _core.build_info()["simd_supported"]
ODD_COLUMNS = [1, 3, 7, 33, 784, 1000]


@pytest.fixture(params=SIMD_PATHS)
def simd(request):
    """Each SIMD path this CPU supports, then back to "auto"."""
    _core.simd_select(request.param)
    yield request.param
    _core.simd_select("auto")


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("depth", [1, 5, 13, 100, 300, 784])
def test_gemm_one_and_two_rows_same_bits_as_rows_of_a_big_product(session, simd, threads, depth):
    """op(A) rows alone (the few-row kernel: W read 8 rows at a time, any column tail, depths past a
    slice) give the bits of the same rows inside a 40-row product (the register tiles)."""
    cdnn.set_num_threads(threads)
    rng = np.random.default_rng(depth)
    for n in ODD_COLUMNS:
        a = rng.standard_normal((40, depth), dtype=np.float32)
        b = rng.standard_normal((depth, n), dtype=np.float32)
        full = _core.gemm(a, b)
        np.testing.assert_allclose(full, a.astype(np.float64) @ b, rtol=1e-4, atol=1e-4 * np.sqrt(depth))
        for i in (0, 17, 38):
            np.testing.assert_array_equal(_core.gemm(a[i : i + 1], b), full[i : i + 1], err_msg=f"row {i}, {n} cols")
            np.testing.assert_array_equal(_core.gemm(a[i : i + 2], b), full[i : i + 2], err_msg=f"rows {i}, {n} cols")


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("units", ODD_COLUMNS)
def test_dense_rows_alone_same_bits_as_in_a_batch(session, simd, threads, units):
    """A Dense chain's prediction of one or two rows (bias and activation on the few-row kernel's
    columns) is the bits of the same rows predicted in a batch, on every path, 1 or 2 threads."""
    cdnn.set_num_threads(threads)
    model = _chain([37, units, 3])
    x = np.random.default_rng(units).random((300, 37), dtype=np.float32)
    full = model.predict(x, verbose=0)
    np.testing.assert_allclose(full, _oracle(model, x), rtol=1e-5, atol=1e-6)
    for i in (0, 5, 298):
        np.testing.assert_array_equal(model.predict_on_batch(x[i : i + 1]), full[i : i + 1])
        np.testing.assert_array_equal(model(x[i : i + 2]), full[i : i + 2])


@pytest.mark.parametrize("n", [1, 2])
def test_rows_alone_from_non_contiguous_and_other_dtypes(session, simd, n):
    """Inputs the lean path does not take (a strided view, float64, Fortran order, big-endian) reach the same
    kernel through the general path's conversion: the same bits as a float32 row."""
    model = _chain([784, 100, 10])
    x = np.random.default_rng(5).random((2 * n, 784), dtype=np.float32)
    want = model.predict(x[::2], verbose=0)
    for other in (x[::2], x[::2].astype(np.float64), np.asfortranarray(x[::2]), x[::2].astype(">f4")):
        for fn in (lambda a: model.predict(a, verbose=0), model.predict_on_batch, model):
            np.testing.assert_array_equal(np.asarray(fn(other)), want)
    np.testing.assert_array_equal(want, model.predict(np.ascontiguousarray(x[::2]), verbose=0))


@pytest.mark.parametrize("sizes", [[784, 512, 256, 10], [784, 100, 10]])
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("n", [1037, 2000])
def test_big_predict_packed_once_and_even_chunks_same_bits(session, simd, threads, n, sizes):
    """A predict of many rows (W packed once for the call: into the copy a training run keeps, or, for
    784x100, whose rows are 400 bytes apart, into the predict's own; chunks of even size) gives the bits of
    the same rows predicted one at a time (W read in place), and follows W changed in place."""
    cdnn.set_num_threads(threads)
    model = _chain(sizes)
    x = np.random.default_rng(n).random((n, 784), dtype=np.float32)
    out = model.predict(x, verbose=0)
    np.testing.assert_array_equal(out, _general(model, x))
    np.testing.assert_allclose(out, _oracle(model, x), rtol=1e-5, atol=1e-6)
    for i in (0, n - 1):
        np.testing.assert_array_equal(model.predict_on_batch(x[i : i + 1]), out[i : i + 1])
    model.layers[0].kernel[::3] *= -1.5  # in place: the next predict packs W again
    again = model.predict(x, verbose=0)
    assert not np.array_equal(again, out)
    np.testing.assert_allclose(again, _oracle(model, x), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(model.predict_on_batch(x[n - 1 :]), again[n - 1 :])


def test_dense_weights_start_on_a_cache_line(session):
    """A built Dense layer's kernel and bias start on 64-byte boundaries (the GEMM's vector loads of
    W's rows split no cache line), float32 and C-contiguous, and set_weights keeps them so."""
    model = _chain([784, 512, 100, 10])
    for layer in model.layers:
        for w in (layer.kernel, layer.bias):
            assert w.ctypes.data % 64 == 0 and w.dtype == np.float32 and w.flags.c_contiguous
    kernel = model.layers[0].kernel
    model.set_weights([np.ones_like(w) for w in model.get_weights()])
    assert model.layers[0].kernel is kernel and kernel.ctypes.data % 64 == 0 and np.all(kernel == 1)


@pytest.fixture
def row_split():
    """Force one- and two-row predicts onto 2 threads, every layer's columns split (``_core.row_split``)."""
    cdnn.set_num_threads(2)
    _core.row_split(2)
    yield
    _core.row_split(0)


@pytest.mark.parametrize("activation", ["relu", "tanh"])
@pytest.mark.parametrize("units", ODD_COLUMNS)
def test_rows_split_over_two_threads_same_bits_as_one(session, simd, row_split, units, activation):
    """A one- or two-row predict with each layer's columns split over 2 threads (whole micro-kernel
    panels each, the tail on the last) gives the bits of the same rows on 1 thread and in a batch:
    the first layer depth-split (784 x units >= its threshold) or not, odd widths, every SIMD path."""
    model = keras.Sequential(
        [
            layers.Input(shape=(784,)),
            layers.Dense(units, activation=activation),
            layers.Dense(33, activation=activation),
        ]
        + [layers.Dense(3, activation="softmax")]
    )
    x = np.random.default_rng(units).random((300, 784), dtype=np.float32)
    full = model.predict(x, verbose=0)
    np.testing.assert_allclose(full, _oracle(model, x), rtol=1e-5, atol=1e-6)
    rows = [x[i : i + n] for i in (0, 5, 298) for n in (1, 2)]
    two = [model.predict_on_batch(r) for r in rows]
    _core.row_split(1)
    one = [model.predict_on_batch(r) for r in rows]
    for a, b, r, i in zip(two, one, rows, (0, 0, 5, 5, 298, 298)):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a, full[i : i + len(r)])


def test_rows_split_chosen_by_timing_same_bits(session):
    """The run-time choice (1 or 2 threads per call) changes no bit of a one-row predict of 784-512-256-10."""
    cdnn.set_num_threads(2)
    model = _chain([784, 512, 256, 10])
    x = np.random.default_rng(4).random((1, 784), dtype=np.float32)
    want = model.predict(np.repeat(x, 40, axis=0), verbose=0)[:1]
    for _ in range(300):  # both options measured, then probes
        np.testing.assert_array_equal(model(x), want)
