"""Batches ``(x, y, sample_weight)`` from a generator or a PyDataset, in fit (training and validation) and
evaluate, for the fused Dense chain and graph models.

Oracles: real Keras 3 (keras/src/trainers/data_adapters: a generator's or a PyDataset's batch carries its
weights, a PyDataset takes ``class_weight`` and a generator refuses it; compile_utils: one array weighs
every output, a list / dict weighs them by output; the loss is weighted, ``metrics`` are not,
``weighted_metrics`` are), same initial weights, SGD, no shuffling; and cdnn itself given the same data
as arrays with ``fit(sample_weight=...)``, which must train the same bits.
"""

import numpy as np
import pytest

import cdnn

N, B, F = 48, 8, 5  # 6 batches of 8
# 2 validation batches: Keras replays a generator's first 2 batches (which it peeks at) at each
# validation, so that only a generator of 2 batches gives Keras the same ones every time
V = 16


def _keras():
    return pytest.importorskip("keras", reason="real Keras 3 is the oracle of these tests")


def _data(seed=0, n=N):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, F)).astype(np.float32)
    y1 = rng.integers(0, 3, n)
    y2 = (rng.random((n, 1)) > 0.5).astype(np.float32)
    w = (rng.random(n) * 2).astype(np.float32)
    return x, y1, y2, w


def _batches(n, make):
    """``make(i, rows)`` for the batches of ``B`` rows of ``n`` samples."""
    return [make(i, slice(s, s + B)) for i, s in enumerate(range(0, n, B))]


def _generator(batches):
    def gen():
        while True:
            yield from batches

    return gen()


def _dataset(lib, batches):
    class Batches(lib.utils.PyDataset):
        def __init__(self):
            super().__init__()

        def __len__(self):
            return len(batches)

        def __getitem__(self, i):
            return batches[i]

    return Batches()


def _source(kind, lib, batches):
    return _generator(batches) if kind == "generator" else _dataset(lib, batches)


def _steps(kind, n):
    return {"generator": n // B}.get(kind)


def _chain(lib):
    return lib.Sequential(
        [lib.Input((F,)), lib.layers.Dense(6, activation="relu"), lib.layers.Dense(3, activation="softmax")]
    )


def _graph1(lib):
    """A graph model of one output."""
    inp = lib.Input(shape=(F,))
    return lib.Model(inp, lib.layers.Dense(3, activation="softmax")(lib.layers.Dense(6, activation="relu")(inp)))


def _graph(lib):
    inp = lib.Input(shape=(F,), name="x")
    h = lib.layers.Dense(8, activation="tanh", name="h")(inp)
    o1 = lib.layers.Dense(3, activation="softmax", name="out1")(h)
    o2 = lib.layers.Dense(1, activation="sigmoid", name="out2")(h)
    return lib.Model(inp, [o1, o2])


def _dict_graph(lib):
    """Outputs by name: Keras 3 takes sample weights by name for these only (compile_utils' paths)."""
    inp = lib.Input(shape=(F,), name="x")
    h = lib.layers.Dense(8, activation="tanh", name="h")(inp)
    o1 = lib.layers.Dense(3, activation="softmax", name="out1")(h)
    o2 = lib.layers.Dense(1, activation="sigmoid", name="out2")(h)
    return lib.Model(inp, {"out1": o1, "out2": o2})


CHAIN_COMPILE = dict(loss="sparse_categorical_crossentropy", metrics=["accuracy"], weighted_metrics=["accuracy"])
GRAPH_COMPILE = dict(
    loss=["sparse_categorical_crossentropy", "binary_crossentropy"],
    loss_weights=[1.0, 0.5],
    metrics=[["accuracy"], ["mae"]],
    weighted_metrics=[["accuracy"], ["mse"]],
)
DICT_COMPILE = {key: dict(zip(["out1", "out2"], value)) for key, value in GRAPH_COMPILE.items()}


def _three(build, compile_kw):
    """Keras' model and two cdnn models (batches / arrays), all with Keras' initial weights."""
    keras = _keras()
    k = build(keras)
    k.compile(optimizer=keras.optimizers.SGD(0.1), **compile_kw)
    out = [k]
    for _ in range(2):
        c = build(cdnn)
        c.set_weights([np.asarray(w) for w in k.get_weights()])
        c.compile(optimizer=cdnn.optimizers.SGD(0.1), **compile_kw)
        out.append(c)
    return out


def _assert_like_keras(hk, hc, rtol=2e-4, atol=2e-5):
    assert sorted(hk.history) == sorted(hc.history)
    for key in hk.history:
        np.testing.assert_allclose(hc.history[key], hk.history[key], rtol=rtol, atol=atol, err_msg=key)


def _assert_same_training(ha, hb, a, b):
    """The same bits of weights and training logs; validation sums its batches in another order."""
    assert sorted(ha.history) == sorted(hb.history)
    for key in ha.history:
        if key.startswith("val_"):
            np.testing.assert_allclose(hb.history[key], ha.history[key], rtol=1e-12, err_msg=key)
        else:
            assert hb.history[key] == ha.history[key], key
    for u, v in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_array_equal(u, v)


def _check(build, compile_kw, kind, train, val, arrays, val_arrays, epochs=3):
    """Fit Keras and cdnn on the batches ``train`` (validation ``val``) and cdnn on ``arrays`` =
    ``(x, y, sample_weight)`` (validation ``val_arrays``); compare, then evaluate on ``val``."""
    keras = _keras()
    k, c, a = _three(build, compile_kw)
    if build is _chain:
        assert c._fast_chain()
    fit = dict(epochs=epochs, shuffle=False, verbose=0)
    steps = dict(steps_per_epoch=_steps(kind, N), validation_steps=_steps(kind, len(val_arrays[0])))
    hk = k.fit(_source(kind, keras, train), validation_data=_source(kind, keras, val), **steps, **fit)
    hc = c.fit(_source(kind, cdnn, train), validation_data=_source(kind, cdnn, val), **steps, **fit)
    x, y, sw = arrays
    ha = a.fit(x, y, sample_weight=sw, batch_size=B, validation_data=val_arrays, **fit)
    _assert_like_keras(hk, hc)
    _assert_same_training(ha, hc, a, c)
    for u, v in zip(c.get_weights(), k.get_weights()):
        np.testing.assert_allclose(u, np.asarray(v), rtol=1e-4, atol=1e-5)
    ek = k.evaluate(_source(kind, keras, val), steps=steps["validation_steps"], verbose=0, return_dict=True)
    ec = c.evaluate(_source(kind, cdnn, val), steps=steps["validation_steps"], verbose=0, return_dict=True)
    ea = a.evaluate(*val_arrays[:2], sample_weight=val_arrays[2], batch_size=B, verbose=0, return_dict=True)
    assert sorted(ek) == sorted(ec) == sorted(ea)
    for key in ek:
        np.testing.assert_allclose(ec[key], float(ek[key]), rtol=2e-4, atol=2e-5, err_msg=key)
        np.testing.assert_allclose(ec[key], ea[key], rtol=1e-12, err_msg=key)
    return hc


def _weights_as(w, shape):
    return w[:, None] if shape == "(n,1)" else w


# ------------------------------------------------------------ the Dense chain


@pytest.mark.parametrize("kind", ["generator", "PyDataset"])
@pytest.mark.parametrize("shape", ["(n,)", "(n,1)"])
def test_chain_trains_and_validates_on_weighted_batches(kind, shape):
    x, y, _, w = _data(1)
    vx, vy, _, vw = _data(2, n=V)
    train = _batches(N, lambda i, s: (x[s], y[s], _weights_as(w[s], shape)))
    val = _batches(V, lambda i, s: (vx[s], vy[s], _weights_as(vw[s], shape)))
    h = _check(_chain, CHAIN_COMPILE, kind, train, val, (x, y, w), (vx, vy, vw))
    # the weights count: unweighted accuracy and weighted accuracy differ
    assert h.history["accuracy"] != h.history["weighted_accuracy"]


@pytest.mark.parametrize("kind", ["generator", "PyDataset"])
def test_chain_mixes_weighted_and_unweighted_batches(kind):
    """(x, y), (x, y, None) and weighted batches in one epoch: Keras weighs the first two by 1."""
    x, y, _, w = _data(3)
    vx, vy, _, vw = _data(4, n=V)
    forms = ["w", "pair", "none", "w", "none", "pair"]

    def make(xs, ys, ws):
        def batch(i, s):
            form = forms[i % len(forms)]
            return (xs[s], ys[s]) if form == "pair" else (xs[s], ys[s], None if form == "none" else ws[s])

        return batch

    ones = np.array([forms[i // B % len(forms)] == "w" for i in range(N)])
    vones = np.array([forms[i // B % len(forms)] == "w" for i in range(V)])
    _check(
        _chain,
        CHAIN_COMPILE,
        kind,
        _batches(N, make(x, y, w)),
        _batches(V, make(vx, vy, vw)),
        (x, y, np.where(ones, w, 1).astype(np.float32)),
        (vx, vy, np.where(vones, vw, 1).astype(np.float32)),
    )


def test_chain_short_last_batch_and_unweighted_batches_only():
    """A weighted epoch of 5 batches (the last of 3 rows) and a validation generator without weights."""
    x, y, _, w = _data(5, n=35)
    vx, vy, _, _ = _data(6, n=16)
    keras = _keras()
    k, c, a = _three(_chain, CHAIN_COMPILE)
    train = _batches(35, lambda i, s: (x[s], y[s], w[s]))
    val = _batches(16, lambda i, s: (vx[s], vy[s]))
    fit = dict(epochs=2, shuffle=False, verbose=0)
    hk = k.fit(_dataset(keras, train), validation_data=_dataset(keras, val), **fit)
    hc = c.fit(_dataset(cdnn, train), validation_data=_dataset(cdnn, val), **fit)
    ha = a.fit(x, y, sample_weight=w, batch_size=B, validation_data=(vx, vy), **fit)
    _assert_like_keras(hk, hc)
    _assert_same_training(ha, hc, a, c)


def test_class_weight_with_a_py_dataset_matches_keras_and_arrays():
    x, y, _, _ = _data(7)
    cw = {0: 0.5, 1: 2.0, 2: 1.25}
    keras = _keras()
    k, c, a = _three(_chain, CHAIN_COMPILE)
    train = _batches(N, lambda i, s: (x[s], y[s]))
    fit = dict(epochs=2, shuffle=False, verbose=0, class_weight=cw)
    hk = k.fit(_dataset(keras, train), **fit)
    hc = c.fit(_dataset(cdnn, train), **fit)
    ha = a.fit(x, y, batch_size=B, **fit)
    _assert_like_keras(hk, hc)
    _assert_same_training(ha, hc, a, c)
    assert hc.history["accuracy"] != hc.history["weighted_accuracy"]


# ------------------------------------------------------------ graph models


def _graph_case(i, s, x, y1, y2, w, form):
    if form == "one":  # one array weighs every output
        return x[s], [y1[s], y2[s]], w[s]
    if form == "list":
        return x[s], [y1[s], y2[s]], [w[s], (2 - w[s])[:, None]]
    if form == "dict":
        return {"x": x[s]}, {"out1": y1[s], "out2": y2[s]}, {"out1": w[s], "out2": 2 - w[s]}
    # "mixed": per batch, weights for one output, both, or none
    return x[s], [y1[s], y2[s]], [(w[s], None), (None, 2 - w[s]), None][i % 3]


def _graph_arrays(x, y1, y2, w, form, n):
    if form == "one":
        return x, [y1, y2], w
    if form == "list":
        return x, [y1, y2], [w, 2 - w]
    if form == "dict":
        return {"x": x}, {"out1": y1, "out2": y2}, {"out1": w, "out2": 2 - w}
    batch = np.arange(n) // B % 3
    return x, [y1, y2], [np.where(batch == 0, w, 1).astype(np.float32), np.where(batch == 1, 2 - w, 1)]


@pytest.mark.parametrize(
    "kind, form",
    [("generator", "one"), ("PyDataset", "one"), ("generator", "list"), ("PyDataset", "dict"), ("generator", "mixed")],
)
def test_graph_trains_and_validates_on_weighted_batches(kind, form):
    x, y1, y2, w = _data(8)
    vx, vy1, vy2, vw = _data(9, n=V)
    train = _batches(N, lambda i, s: _graph_case(i, s, x, y1, y2, w, form))
    val = _batches(V, lambda i, s: _graph_case(i, s, vx, vy1, vy2, vw, form))
    build, compile_kw = (_dict_graph, DICT_COMPILE) if form == "dict" else (_graph, GRAPH_COMPILE)
    h = _check(
        build, compile_kw, kind, train, val, _graph_arrays(x, y1, y2, w, form, N),
        _graph_arrays(vx, vy1, vy2, vw, form, V),
    )  # fmt: skip
    assert h.history["out1_accuracy"] != h.history["out1_weighted_accuracy"]


def test_graph_class_weight_with_a_py_dataset_matches_keras_and_arrays():
    x, y, _, _ = _data(10)
    cw = {0: 1.5, 1: 0.25, 2: 1.0}
    keras = _keras()
    k, c, a = _three(_graph1, CHAIN_COMPILE)
    train = _batches(N, lambda i, s: (x[s], y[s]))
    fit = dict(epochs=2, shuffle=False, verbose=0, class_weight=cw)
    hk = k.fit(_dataset(keras, train), **fit)
    hc = c.fit(_dataset(cdnn, train), **fit)
    ha = a.fit(x, y, batch_size=B, **fit)
    _assert_like_keras(hk, hc)
    _assert_same_training(ha, hc, a, c)


# ------------------------------------------------------------ refused, with Keras' words


def _compiled(build):
    m = build(cdnn)
    m.compile(optimizer="sgd", **(GRAPH_COMPILE if build is _graph else CHAIN_COMPILE))
    return m


def _keras_message(build, call):
    keras = _keras()
    k = build(keras)
    k.compile(optimizer="sgd", **(GRAPH_COMPILE if build is _graph else CHAIN_COMPILE))
    with pytest.raises(ValueError) as e:
        call(k, keras)
    return str(e.value)


@pytest.mark.parametrize("build", [_chain, _graph])
def test_class_weight_with_a_generator_and_sample_weight_with_a_source_are_refused_as_keras(build):
    x, y1, y2, w = _data(11)

    def batches(i, s):
        return (x[s], y1[s]) if build is _chain else (x[s], [y1[s], y2[s]])

    calls = [
        lambda m, lib: m.fit(_generator(_batches(N, batches)), steps_per_epoch=2, class_weight={0: 1.0}, verbose=0),
        lambda m, lib: m.fit(_generator(_batches(N, batches)), steps_per_epoch=2, sample_weight=w, verbose=0),
        lambda m, lib: m.fit(_dataset(lib, _batches(N, batches)), sample_weight=w, verbose=0),
        lambda m, lib: m.evaluate(_generator(_batches(N, batches)), steps=2, sample_weight=w, verbose=0),
        lambda m, lib: m.evaluate(_dataset(lib, _batches(N, batches)), sample_weight=w, verbose=0),
    ]
    for call in calls:
        expected = _keras_message(build, call)
        m = _compiled(build)
        before = [v.copy() for v in m.get_weights()]
        with pytest.raises(ValueError) as e:
            call(m, cdnn)
        assert str(e.value) == expected
        for u, v in zip(before, m.get_weights()):
            np.testing.assert_array_equal(u, v)


@pytest.mark.parametrize("build", [_chain, _graph1])
def test_class_weight_with_weighted_py_dataset_batches_is_refused_as_keras(build):
    """As Keras: a batch (x, y, sample_weight) beside class_weight, even with weights None."""
    x, y, _, _ = _data(12)

    def call(m, lib):
        batches = _batches(N, lambda i, s: (x[s], y[s], None))
        return m.fit(_dataset(lib, batches), class_weight={0: 1.0, 1: 1.0, 2: 1.0}, shuffle=False, verbose=0)

    expected = _keras_message(build, call)
    assert expected.startswith("You cannot specify `class_weight` and `sample_weight` at the same time.")
    m = _compiled(build)
    with pytest.raises(ValueError, match="You cannot specify `class_weight` and `sample_weight` at the same time"):
        call(m, cdnn)
    assert m.optimizer.iterations == 0


def test_class_weight_with_several_outputs_is_refused_before_reading_a_batch():
    read = []

    class Batches(cdnn.utils.PyDataset):
        def __len__(self):
            return 2

        def __getitem__(self, i):
            read.append(i)
            raise AssertionError("no batch is read")

    m = _compiled(_graph)
    with pytest.raises(ValueError, match="`class_weight` is only supported for Models with a single output."):
        m.fit(Batches(), class_weight={0: 1.0}, verbose=0)
    assert read == []


BAD_WEIGHTS = [
    (lambda w: -w, ValueError, r"expected weights >= 0"),
    (lambda w: np.where(np.arange(len(w)) == 3, np.nan, w), ValueError, r"expected finite weights"),
    (lambda w: w[:-1], ValueError, r"expected one weight per sample, shape \(8,\), received \(7,\)"),
    (lambda w: np.stack([w, w], 1), ValueError, r"expected one weight per sample, shape \(8,\), received \(8, 2\)"),
    (lambda w: w.astype(str), TypeError, r"expected real numbers"),
]


@pytest.mark.parametrize("build", [_chain, _graph])
@pytest.mark.parametrize("bad, exc, match", BAD_WEIGHTS)
def test_bad_batch_weights_are_refused_before_their_run(build, bad, exc, match):
    x, y1, y2, w = _data(13)

    def batch(weights):
        def make(i, s):
            ws = bad(w[s]) if weights == "bad" or (weights == "third" and i == 2) else w[s]
            return (x[s], y1[s], ws) if build is _chain else (x[s], [y1[s], y2[s]], ws)

        return make

    where = "sample_weight of a batch of `x`"
    # the first batch is bad: nothing is trained
    m = _compiled(build)
    before = [v.copy() for v in m.get_weights()]
    with pytest.raises(exc, match=f"`{where}`: {match}" if exc is ValueError else match):
        m.fit(_dataset(cdnn, _batches(N, batch("bad"))), shuffle=False, verbose=0)
    assert m.optimizer.iterations == 0
    for u, v in zip(before, m.get_weights()):
        np.testing.assert_array_equal(u, v)
    # the third batch is bad: the two batches before it are trained, one batch at a time here
    m = _compiled(build)
    with pytest.raises(exc, match=match):
        m.fit(_dataset(cdnn, _batches(N, batch("third"))), shuffle=False, verbose=0)
    assert m.optimizer.iterations <= 2
    # validation and evaluate name their data
    m = _compiled(build)
    with pytest.raises(exc, match="validation_data" if exc is ValueError else match):
        m.fit(
            _dataset(cdnn, _batches(N, batch("good"))),
            validation_data=_dataset(cdnn, _batches(N, batch("bad"))),
            verbose=0,
        )
    with pytest.raises(exc, match=match):
        m.evaluate(_generator(_batches(N, batch("bad"))), steps=2, verbose=0)


def test_graph_weights_by_output_are_checked_in_batches():
    x, y1, y2, w = _data(14)
    m = _compiled(_graph)
    cases = [
        ([w[:8]] * 3, "one `sample_weight` array per output"),
        ({"out1": w[:8], "out3": w[:8]}, r"keys \['out3'\] are not output names"),
        ([w[:8], -w[:8]], r"sample_weight of a batch of `x`\[1\]`: expected weights >= 0"),
    ]
    for ws, match in cases:
        with pytest.raises(ValueError, match=match):
            m.fit(_generator([(x[:8], [y1[:8], y2[:8]], ws)]), steps_per_epoch=1, verbose=0)
    assert m.optimizer.iterations == 0


def test_ignore_class_mean_is_per_generator_batch_in_evaluate():
    """A generator's batch of 40 is one batch in evaluate (not split by the default batch_size of 32):
    ignore_class's mean is over each batch's valid rows, weighted, as in Keras."""
    keras = _keras()
    x, y, _, w = _data(15, n=80)
    y = np.where(np.arange(80) % 3 == 0, 2, y)
    batches = [(x[s : s + 40], y[s : s + 40], w[s : s + 40]) for s in (0, 40)]
    k, c = _chain(keras), _chain(cdnn)
    c.set_weights([np.asarray(v) for v in k.get_weights()])
    for m, lib in ((k, keras), (c, cdnn)):
        m.compile(optimizer="sgd", loss=lib.losses.SparseCategoricalCrossentropy(ignore_class=2))
    expected = k.evaluate(_generator(batches), steps=2, verbose=0)
    got = c.evaluate(_generator(batches), steps=2, verbose=0)
    assert got == pytest.approx(expected, rel=2e-5)
    assert got == pytest.approx(c.evaluate(x, y, sample_weight=w, batch_size=40, verbose=0), rel=1e-12)
