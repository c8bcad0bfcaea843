"""Tests of the graph executor (cdnn._core.Graph) against independent values.

- Each op's forward pass (inference, and batch statistics in training) and
  backward pass (the gradients one SGD step applies) against tests/reference.py's
  NumPy Graph (float64, Keras' formulas), and against central finite
  differences of the core's own training loss.
- Whole small graphs (two inputs + Concatenate, a residual Add, a BatchNorm
  MLP, two outputs with loss weights) trained several steps with Adam against
  the reference's training step; a chain as a graph bit-identical to Network.
- 1 and 2 threads bit-identical; frozen nodes bit-unchanged; dropout and
  Gaussian noise masks; bad descriptions refused with clear errors.
"""

import copy
import zlib

import numpy as np
import pytest
import reference as ref

from cdnn import _core


def f32(a):
    return np.ascontiguousarray(a, dtype=np.float32)


RNG = np.random.default_rng(1234)


def rand(*shape, scale=1.0, rng=RNG):
    return f32(rng.standard_normal(shape) * scale)


@pytest.fixture(autouse=True)
def _reseeded(request):
    """RNG reseeded from each test's name: a test's data do not depend on which tests ran before it
    (other files build graphs with this module's RNG too)."""
    RNG.bit_generator.state = np.random.default_rng(zlib.crc32(request.node.name.encode())).bit_generator.state


# ------------------------------------------------------------ graph builders


class G:
    """A graph description being built: node dicts with float32 parameters."""

    def __init__(self):
        self.nodes, self.inputs, self.outputs = [], [], []

    def add(self, op, inputs, shape, **kw):
        self.nodes.append(dict(op=op, inputs=list(inputs), shape=tuple(shape), name=f"{op}_{len(self.nodes)}", **kw))
        if op == "input":
            self.inputs.append(len(self.nodes) - 1)
        return len(self.nodes) - 1

    def input(self, *shape):
        return self.add("input", [], shape)

    def shape(self, i):
        return self.nodes[i]["shape"]

    def dense(self, x, units, activation="linear", bias=True, trainable=True, scale=None):
        s = self.shape(x)
        W = rand(s[-1], units, scale=scale or 1.0 / np.sqrt(s[-1]))
        b = rand(units, scale=0.1) if bias else None
        return self.add("dense", [x], s[:-1] + (units,), W=W, b=b, activation=activation, trainable=trainable)

    def bn(self, x, center=True, scale=True, trainable=True, momentum=0.99, epsilon=1e-3):
        w = self.shape(x)[-1]
        return self.add(
            "batchnorm",
            [x],
            self.shape(x),
            gamma=f32(1 + 0.2 * RNG.standard_normal(w)) if scale else None,
            beta=rand(w, scale=0.1) if center else None,
            moving_mean=rand(w, scale=0.2),
            moving_variance=f32(0.5 + RNG.random(w)),
            momentum=momentum,
            epsilon=epsilon,
            trainable=trainable,
        )

    def ln(self, x, center=True, scale=True, trainable=True, epsilon=1e-3):
        w = self.shape(x)[-1]
        return self.add(
            "layernorm",
            [x],
            self.shape(x),
            gamma=f32(1 + 0.2 * RNG.standard_normal(w)) if scale else None,
            beta=rand(w, scale=0.1) if center else None,
            epsilon=epsilon,
            trainable=trainable,
        )

    def out(self, node, loss="mean_squared_error", weight=1.0, metric=None, from_logits=False):
        self.outputs.append(dict(node=node, loss=loss, weight=weight, metric=metric, from_logits=from_logits))


def with_slots(nodes, opt):
    """Copies of the nodes with their own parameter arrays and zeroed optimizer slots."""
    nodes = copy.deepcopy(nodes)
    two = opt["name"] in ("adam",) or (opt["name"] == "rmsprop" and opt.get("momentum", 0) > 0)
    one = opt["name"] != "sgd" or opt.get("momentum", 0) != 0
    for d in nodes:
        keys = {"dense": ("W", "b"), "batchnorm": ("gamma", "beta"), "layernorm": ("gamma", "beta")}.get(d["op"])
        keys = ("gamma", "beta") if d["op"] == "prelu" else keys
        if not keys:
            continue
        slots = []
        for k in keys:
            a = d.get(k)
            slots += [
                np.zeros_like(a) if (a is not None and one) else None,
                np.zeros_like(a) if (a is not None and two) else None,
            ]
        d["slots"] = slots
    return nodes


def core_graph(g, opt):
    nodes = with_slots(g.nodes, opt)
    return _core.Graph(nodes, g.inputs, g.outputs, opt), nodes


def core_train(g, xs, ys, opt, steps=1, batch_size=None, seed=0):
    """Train a fresh copy of g for `steps` full passes of one batch each; returns (nodes, batch losses)."""
    net, nodes = core_graph(g, opt)
    n = xs[0].shape[0]
    bs = batch_size or n
    nb = (n + bs - 1) // bs
    perm = np.arange(n, dtype=np.int32)
    losses = []
    for s in range(steps):
        bl = np.zeros(nb)
        bc = np.zeros((nb, len(g.outputs)))
        ol = np.zeros((nb, len(g.outputs)))
        assert net.train_run(xs, ys, perm, 0, nb, bs, s * nb, seed, bl, bc, output_loss=ol) == nb
        losses.append((bl, ol, bc))
    return nodes, losses, net


def core_grads(g, xs, ys):
    """The gradient of every trainable parameter, from one SGD step at learning rate 1."""
    nodes, losses, _ = core_train(g, xs, ys, {"name": "sgd", "learning_rate": 1.0})
    grads = {}
    for i, (d0, d1) in enumerate(zip(g.nodes, nodes)):
        for k in ("W", "b", "gamma", "beta"):
            if d0.get(k) is not None and d0.get("trainable", True):
                grads[(i, k)] = d0[k].astype(np.float64) - d1[k]
    return grads, losses[0][0][0]


def core_loss(g, xs, ys):
    """The training-mode loss of one full batch (SGD at learning rate 0 changes no weight)."""
    net, _ = core_graph(g, {"name": "sgd", "learning_rate": 0.0})
    n = xs[0].shape[0]
    bl = np.zeros(1)
    net.train_run(xs, ys, np.arange(n, dtype=np.int32), 0, 1, n, 0, 0, bl, np.zeros((1, len(g.outputs))))
    return bl[0] / n


def ref_graph(g):
    return ref.Graph(g.nodes, g.inputs, g.outputs)


def assert_close(got, want, rtol, atol, what):
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    assert got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape}"
    err = np.abs(got - want)
    tol = atol + rtol * np.abs(want)
    assert (err <= tol).all(), f"{what}: max err {err.max():.3g} (tol {tol.flat[np.argmax(err - tol)]:.3g})"


def assert_grads_match_reference(g, xs, ys, what):
    """One batch's loss and every trainable parameter's gradient in the core against the NumPy graph's."""
    grads, batch_loss = core_grads(g, xs, ys)
    total, _, want, _ = ref_graph(g).gradients(xs, ys, training=True)
    assert batch_loss / xs[0].shape[0] == pytest.approx(total, rel=1e-5)
    assert set(grads) == set(want)
    for key in grads:
        scale = np.abs(want[key]).max() + 1e-3
        assert_close(grads[key], want[key], 1e-3, 2e-5 * scale + 1e-6, f"{what} grad {key}")


# ------------------------------------------------------------ one op at a time


def op_graph(op, width=7, rows=1, n_in=2):
    """input -> Dense -> op -> Dense -> mse: the op's backward shows in the first Dense's gradient."""
    g = G()
    shape = (rows, 5) if rows > 1 else (5,)
    x = g.input(*shape)
    h = g.dense(x, width, "tanh")
    s = g.shape(h)
    if op == "batchnorm":
        y = g.bn(h)
    elif op == "batchnorm_frozen":
        y = g.bn(h, trainable=False)
    elif op == "batchnorm_plain":
        y = g.bn(h, center=False, scale=False)
    elif op == "layernorm":
        y = g.ln(h)
    elif op == "layernorm_plain":
        y = g.ln(h, center=False, scale=False)
    elif op.startswith("act_"):
        y = g.add("activation", [h], s, activation=op[4:], alpha=0.2)
    elif op == "affine":
        y = g.add("affine", [h], s, scale=rand(s[-1]), offset=rand(1))
    elif op in ref.MERGES:
        others = [g.dense(x, width, "sigmoid") for _ in range(1 if op == "subtract" else n_in - 1)]
        y = g.add(op, [h] + others, s)
    elif op == "concatenate":
        h2 = g.dense(x, 3, "sigmoid")
        y = g.add("concatenate", [h, h2], s[:-1] + (s[-1] + 3,))
    elif op == "reshape":
        y = g.add("reshape", [h], (int(np.prod(s)),))
    elif op == "dropout0":
        y = g.add("dropout", [h], s, rate=0.0, seed_offset=3)
    elif op == "noise0":
        y = g.add("gaussian_noise", [h], s, stddev=0.0, seed_offset=3)
    else:
        raise AssertionError(op)
    z = g.dense(y, 3)
    g.out(z)
    return g


OPS = [
    "batchnorm",
    "batchnorm_frozen",
    "batchnorm_plain",
    "layernorm",
    "layernorm_plain",
    "act_relu",
    "act_sigmoid",
    "act_tanh",
    "act_softmax",
    "act_leaky_relu",
    "act_gelu",
    "act_linear",
    "affine",
    "add",
    "subtract",
    "multiply",
    "average",
    "maximum",
    "minimum",
    "concatenate",
    "reshape",
    "dropout0",
    "noise0",
]


@pytest.mark.parametrize("rows", [1, 3])
@pytest.mark.parametrize("op", OPS)
def test_op_gradients_match_reference(op, rows, threads):
    g = op_graph(op, rows=rows)
    n = 33
    x = rand(n, 5 * rows)
    y = rand(n, int(np.prod(g.shape(len(g.nodes) - 1))))
    assert_grads_match_reference(g, [x], [y], op)


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("rows", [1, 3])
def test_ignore_class_gradients_match_reference(rows, weighted, threads):
    """ignore_class: the loss and its gradient are the mean over the batch's valid label rows (Keras)."""
    g = G()
    x = g.input(rows, 5)
    h = g.bn(g.dense(x, 6, "relu"))
    g.out(g.dense(h, 4, "softmax"), loss="sparse_categorical_crossentropy")
    g.outputs[0]["loss_options"] = {"ignore_class": 2}
    n = 17
    xs = rand(n, rows * 5)
    y = RNG.integers(0, 4, (n, rows) if rows > 1 else n).astype(np.int32)
    sw = f32(0.5 + RNG.random(n)) if weighted else None
    net, nodes = core_graph(g, {"name": "sgd", "learning_rate": 1.0})
    bl = np.zeros(1)
    net.train_run(
        [xs],
        [y],
        np.arange(n, dtype=np.int32),
        0,
        1,
        n,
        0,
        0,
        bl,
        np.zeros((1, 1)),
        sample_weight=None if sw is None else [sw],
    )
    total, _, want, _ = ref_graph(g).gradients(
        [xs.reshape(n, rows, 5)], [y], training=True, sample_weight=None if sw is None else [sw]
    )
    assert bl[0] / n == pytest.approx(total, rel=1e-5)
    for (i, k), w in want.items():
        got = g.nodes[i][k].astype(np.float64) - nodes[i][k]
        assert_close(got, w, 1e-3, 2e-5 * (np.abs(w).max() + 1e-3) + 1e-6, f"grad {(i, k)}")


@pytest.mark.parametrize("op", OPS)
def test_op_forward_matches_reference(op, threads):
    g = op_graph(op, rows=3, n_in=3)
    n = 37
    x = rand(n, 15)
    net, _ = core_graph(g, {"name": "sgd"})
    vals, _ = ref_graph(g).forward([x], training=False)
    got = net.predict([x], batch_size=16, nodes=list(range(len(g.nodes))))
    for i, (a, b) in enumerate(zip(got, vals)):
        assert_close(a, b, 1e-4, 1e-5, f"{op} node {i} ({g.nodes[i]['op']})")
    (out,) = net.predict([x])
    assert out.shape == (n,) + g.shape(len(g.nodes) - 1)
    assert np.array_equal(out, got[-1])


@pytest.mark.parametrize("op", ["batchnorm", "layernorm", "multiply", "maximum", "concatenate", "act_softmax"])
def test_op_gradients_finite_differences(op):
    """The core's gradient against central differences of the core's own training loss."""
    g = op_graph(op)
    n = 16
    x = rand(n, 5)
    y = rand(n, 3)
    grads, _ = core_grads(g, [x], [y])
    W = g.nodes[1]["W"]
    h = 1e-2
    for r, c in [(0, 0), (2, 3), (4, 6)]:
        old = W[r, c]
        W[r, c] = old + h
        lp = core_loss(g, [x], [y])
        W[r, c] = old - h
        lm = core_loss(g, [x], [y])
        W[r, c] = old
        fd = (lp - lm) / (2 * h)
        assert grads[(1, "W")][r, c] == pytest.approx(fd, rel=2e-2, abs=2e-4), (op, r, c)


def test_batchnorm_training_statistics_and_moving_update():
    """Keras: moving = moving * momentum + batch * (1 - momentum), biased batch variance."""
    g = G()
    x = g.input(6)
    b = g.bn(g.dense(x, 9, "relu"), momentum=0.9)
    g.out(b)
    n = 50
    xs = [rand(n, 6)]
    ys = [rand(n, 9)]
    nodes, _, _ = core_train(g, xs, ys, {"name": "sgd", "learning_rate": 0.0}, steps=3)
    h = np.maximum(xs[0].astype(np.float64) @ g.nodes[1]["W"] + g.nodes[1]["b"], 0)
    mean, var = h.mean(axis=0), h.var(axis=0)
    mm, mv = g.nodes[2]["moving_mean"].astype(np.float64), g.nodes[2]["moving_variance"].astype(np.float64)
    for _ in range(3):
        mm, mv = 0.9 * mm + 0.1 * mean, 0.9 * mv + 0.1 * var
    assert_close(nodes[2]["moving_mean"], mm, 1e-5, 1e-6, "moving_mean")
    assert_close(nodes[2]["moving_variance"], mv, 1e-5, 1e-6, "moving_variance")
    # the same through the oracle's formulas
    r = ref_graph(g)
    for _ in range(3):
        r.train_step(xs, ys, ref.SGD(0.0))
    assert_close(nodes[2]["moving_mean"], r.p[2]["moving_mean"], 1e-5, 1e-6, "moving_mean (oracle)")


# ------------------------------------------------------------ whole graphs


def two_inputs_concat():
    g = G()
    a, b = g.input(8), g.input(13)
    h = g.add("concatenate", [g.dense(a, 6, "relu"), b], (19,))
    g.out(g.dense(g.dense(h, 11, "relu"), 4, "softmax"), "sparse_categorical_crossentropy", metric="sparse")
    return g, lambda n: ([rand(n, 8), rand(n, 13)], [RNG.integers(0, 4, n).astype(np.int32)])


def residual_add():
    g = G()
    x = g.input(10)
    h = g.dense(x, 10, "relu")
    r = g.add("add", [x, g.dense(h, 10)], (10,))
    g.out(g.dense(g.add("activation", [r], (10,), activation="tanh"), 2), "mean_squared_error")
    return g, lambda n: ([rand(n, 10)], [rand(n, 2)])


def bn_mlp():
    g = G()
    x = g.input(20)
    # no bias before a BatchNormalization: its gradient is 0 up to rounding, which Adam would amplify
    h = g.add("activation", [g.bn(g.dense(x, 16, bias=False))], (16,), activation="relu")
    h = g.add("activation", [g.bn(g.dense(h, 12, bias=False))], (12,), activation="relu")
    g.out(g.dense(h, 5, "softmax"), "categorical_crossentropy", metric="categorical")
    return g, lambda n: ([rand(n, 20)], [f32(np.eye(5)[RNG.integers(0, 5, n)])])


def two_outputs():
    g = G()
    x = g.input(9)
    h = g.ln(g.dense(x, 12, "gelu"))
    g.out(g.dense(h, 3, "softmax"), "sparse_categorical_crossentropy", weight=0.7, metric="sparse")
    g.out(g.dense(g.add("reshape", [h], (3, 4)), 2, "sigmoid"), "binary_crossentropy", weight=2.5)
    g.out(h, None)
    return g, lambda n: ([rand(n, 9)], [RNG.integers(0, 3, n).astype(np.int32), f32(RNG.integers(0, 2, (n, 6))), None])


GRAPHS = {
    "two_inputs_concat": two_inputs_concat,
    "residual_add": residual_add,
    "bn_mlp": bn_mlp,
    "two_outputs": two_outputs,
}


@pytest.mark.parametrize("name", list(GRAPHS))
def test_graph_training_matches_reference(name, threads):
    g, data = GRAPHS[name]()
    n, bs, steps = 40, 13, 2
    xs, ys = data(n)
    opt = {"name": "adam", "learning_rate": 0.01}
    nodes, losses, _ = core_train(g, xs, ys, opt, steps=steps, batch_size=bs)
    r = ref_graph(g)
    adam = ref.Adam(0.01)
    for s in range(steps):
        for j, start in enumerate(range(0, n, bs)):
            sl = slice(start, start + bs)
            bx = [x[sl] for x in xs]
            by = [y[sl] if y is not None else None for y in ys]
            _, per, _, _ = r.gradients(bx, by)
            want = r.train_step(bx, by, adam)
            rows = bx[0].shape[0]
            assert losses[s][0][j] / rows == pytest.approx(want, rel=1e-4), (s, j)
            for o, p in enumerate(per):
                if p is not None:
                    assert losses[s][1][j, o] / rows == pytest.approx(p, rel=1e-4)
    for i, d in enumerate(nodes):
        for k in ("W", "b", "gamma", "beta", "moving_mean", "moving_variance"):
            if d.get(k) is not None:
                assert_close(d[k], r.p[i][k], 2e-3, 2e-4, f"{name} node {i} {k}")


# the second: the top layer keeps packed copies of W and W^T in both (no depth split: see train.c's split_at)
@pytest.mark.parametrize("d,h,c", [(31, 17, 6), (20, 128, 128)], ids=["small", "packed-copies"])
def test_chain_graph_is_bit_identical_to_network(d, h, c, threads):
    n = 70
    g = G()
    x = g.input(d)
    g.out(g.dense(g.dense(x, h, "relu"), c, "softmax"), "sparse_categorical_crossentropy", metric="sparse")
    X, y = rand(n, d), RNG.integers(0, c, n).astype(np.int32)
    opt = {"name": "adam", "learning_rate": 0.01}
    nodes, losses, graph = core_train(g, [X], [y], opt, steps=3, batch_size=16)
    chain = with_slots(g.nodes, opt)
    net = _core.Network(
        [dict(W=nd["W"], b=nd["b"], activation=nd["activation"], slots=nd["slots"]) for nd in chain[1:]],
        "sparse_categorical_crossentropy",
        False,
        "sparse",
        opt,
    )
    for s in range(3):
        bl, bc = np.zeros(5), np.zeros(5)
        net.train_run(X, y, np.arange(n, dtype=np.int32), 0, 5, 16, s * 5, 0, bl, bc)
        assert np.array_equal(bl, losses[s][0]) and np.array_equal(bc, losses[s][2][:, 0])
    for a, b in zip(nodes[1:], chain[1:]):
        assert np.array_equal(a["W"], b["W"]) and np.array_equal(a["b"], b["b"])
    assert np.array_equal(graph.predict([X])[0], net.predict(X))


def big_bn_mlp():
    g = G()
    x = g.input(100)
    h = g.add("activation", [g.bn(g.dense(x, 64))], (64,), activation="relu")
    h = g.add("dropout", [h], (64,), rate=0.3, seed_offset=1)
    h = g.add("activation", [g.ln(g.dense(h, 33))], (33,), activation="relu")
    h = g.add("gaussian_noise", [h], (33,), stddev=0.1, seed_offset=2)
    g.out(g.dense(h, 10, "softmax"), "sparse_categorical_crossentropy", metric="sparse")
    return g


def test_one_and_two_threads_bit_identical():
    g = big_bn_mlp()
    n = 200
    xs, ys = [rand(n, 100)], [RNG.integers(0, 10, n).astype(np.int32)]
    results = []
    for t in (1, 2, 1):
        prev = _core.get_num_threads()
        _core.set_num_threads(t)
        try:
            nodes, losses, net = core_train(
                g, xs, ys, {"name": "adam", "learning_rate": 0.01}, steps=2, batch_size=64, seed=7
            )
            results.append((nodes, losses, net.predict(xs)[0]))
        finally:
            _core.set_num_threads(prev)
    for other in results[1:]:
        for a, b in zip(results[0][0], other[0]):
            for k in ("W", "b", "gamma", "beta", "moving_mean", "moving_variance"):
                if a.get(k) is not None:
                    assert np.array_equal(a[k], b[k]), k
        for (l1, o1, c1), (l2, o2, c2) in zip(results[0][1], other[1]):
            assert np.array_equal(l1, l2) and np.array_equal(c1, c2)
        assert np.array_equal(results[0][2], other[2])


def test_frozen_nodes_keep_their_bits(threads):
    g = G()
    x = g.input(300)
    d1 = g.dense(x, 64, "relu", trainable=False)  # big enough for a packed copy of W
    b1 = g.bn(d1, trainable=False)
    d2 = g.dense(b1, 8, "relu")
    l1 = g.ln(d2, trainable=False)
    d3 = g.dense(l1, 3, trainable=False)
    g.out(d3)
    n = 50
    xs, ys = [rand(n, 300)], [rand(n, 3)]
    nodes, _, _ = core_train(g, xs, ys, {"name": "adam", "learning_rate": 0.05}, steps=3, batch_size=16)
    for i in (d1, b1, l1, d3):
        for k in ("W", "b", "gamma", "beta", "moving_mean", "moving_variance"):
            if g.nodes[i].get(k) is not None:
                assert np.array_equal(nodes[i][k], g.nodes[i][k]), (i, k)
    assert not np.array_equal(nodes[d2]["W"], g.nodes[d2]["W"])
    # and the trainable one moved as the oracle says (frozen BN in inference mode)
    r = ref_graph(g)
    adam = ref.Adam(0.05)
    for _ in range(3):
        for s in range(0, n, 16):
            r.train_step([xs[0][s : s + 16]], [ys[0][s : s + 16]], adam)
    assert_close(nodes[d2]["W"], r.p[d2]["W"], 2e-3, 2e-4, "trainable W between frozen nodes")


def test_frozen_layer_in_chain_network_keeps_its_bits(threads):
    n, d = 64, 40
    X, y = rand(n, d), RNG.integers(0, 4, n).astype(np.int32)
    opt = {"name": "adam", "learning_rate": 0.01}
    Ws = [rand(d, 32, scale=0.2), rand(32, 16, scale=0.2), rand(16, 4, scale=0.2)]
    layers = []
    for k, W in enumerate(Ws):
        W = W.copy()
        b = np.zeros(W.shape[1], np.float32)
        layers.append(
            dict(
                W=W,
                b=b,
                activation="softmax" if k == 2 else "relu",
                trainable=k != 1,
                slots=[np.zeros_like(W), np.zeros_like(W), np.zeros_like(b), np.zeros_like(b)],
            )
        )
    net = _core.Network(layers, "sparse_categorical_crossentropy", False, "sparse", opt)
    net.train_run(X, y, np.arange(n, dtype=np.int32), 0, 4, 16, 0, 0, np.zeros(4), np.zeros(4))
    assert np.array_equal(layers[1]["W"], Ws[1]) and not layers[1]["b"].any()
    assert not np.array_equal(layers[0]["W"], Ws[0]) and not np.array_equal(layers[2]["W"], Ws[2])
    # the frozen layer still passes gradients down: the first layer moves as the oracle says
    g = G()
    x = g.input(d)
    prev = x
    for k, W in enumerate(Ws):
        prev = g.add(
            "dense",
            [prev],
            (W.shape[1],),
            W=W.copy(),
            b=np.zeros(W.shape[1], np.float32),
            activation="softmax" if k == 2 else "relu",
            trainable=k != 1,
        )
    g.out(prev, "sparse_categorical_crossentropy")
    r = ref_graph(g)
    adam = ref.Adam(0.01)
    for s in range(0, n, 16):
        r.train_step([X[s : s + 16]], [y[s : s + 16]], adam)
    assert_close(layers[0]["W"], r.p[1]["W"], 2e-3, 2e-4, "first layer below a frozen one")


def test_all_frozen_graph_trains_nothing_but_reports_loss():
    g = G()
    x = g.input(5)
    g.out(g.dense(x, 2, trainable=False))
    xs, ys = [rand(10, 5)], [rand(10, 2)]
    nodes, losses, _ = core_train(g, xs, ys, {"name": "adam"}, steps=2)
    assert np.array_equal(nodes[1]["W"], g.nodes[1]["W"])
    assert losses[0][0][0] / 10 == pytest.approx(ref_graph(g).losses(xs, ys)[0], rel=1e-5)


# ------------------------------------------------------------ masks


def test_dropout_masks_are_keyed_and_consistent():
    """input(ones) -> dropout -> Dense(1, no bias) -> mse(0), batch 1, SGD: W moves where kept."""
    d, n, rate = 300, 12, 0.4
    g = G()
    x = g.input(d)
    dr = g.add("dropout", [x], (d,), rate=rate, seed_offset=5)
    g.out(g.add("dense", [dr], (1,), W=f32(np.full((d, 1), 0.01)), b=None, activation="linear"))
    X, y = np.ones((n, d), np.float32), np.zeros((n, 1), np.float32)
    masks = []
    for seed in (3, 3, 4):
        net, nodes = core_graph(g, {"name": "sgd", "learning_rate": 0.1})
        W0 = nodes[2]["W"].copy()
        net.train_run([X], [y], np.arange(n, dtype=np.int32), 0, 1, 1, 0, seed, np.zeros(1), np.zeros((1, 1)))
        kept = nodes[2]["W"] != W0
        masks.append(kept[:, 0])
        # the oracle with that mask gives the same step
        r = ref_graph(g)
        r.train_step([X[:1]], [y[:1]], ref.SGD(0.1), masks={1: kept[:, 0] / (1 - rate)})
        assert_close(nodes[2]["W"], r.p[2]["W"], 1e-5, 1e-7, "dropout step")
    assert np.array_equal(masks[0], masks[1]) and not np.array_equal(masks[0], masks[2])
    assert abs((1 - masks[0].mean()) - rate) < 4 * np.sqrt(rate * (1 - rate) / d)


def test_gaussian_noise_statistics():
    """input(0) -> noise -> Dense(1) -> mse(0): W moves along the noise, dW = 2 (W.v) v."""
    d, sd = 4000, 0.5
    g = G()
    x = g.input(d)
    nz = g.add("gaussian_noise", [x], (d,), stddev=sd, seed_offset=1)
    g.out(g.add("dense", [nz], (1,), W=rand(d, 1, scale=0.01), b=None, activation="linear"))
    net, nodes = core_graph(g, {"name": "sgd", "learning_rate": 1e-3})
    W0 = nodes[2]["W"].astype(np.float64).copy()
    net.train_run(
        [np.zeros((1, d), np.float32)],
        [np.zeros((1, 1), np.float32)],
        np.zeros(1, np.int32),
        0,
        1,
        1,
        0,
        9,
        np.zeros(1),
        np.zeros((1, 1)),
    )
    dW = (W0 - nodes[2]["W"])[:, 0] / 1e-3  # = 2 (W0 . v) v
    c2 = (W0[:, 0] @ dW) / 2  # (W0 . v)^2
    v2 = dW**2 / (4 * c2)
    assert v2.mean() == pytest.approx(sd**2, rel=0.1)
    kurt = (v2**2).mean() / v2.mean() ** 2  # E v^4 / (E v^2)^2 = 3 for a normal
    assert 2.5 < kurt < 3.5


# ------------------------------------------------------------ errors


def test_nonfinite_batch_stops_before_its_update():
    g = G()
    x = g.input(4)
    g.out(g.bn(g.dense(x, 3)))
    X, Y = rand(32, 4), rand(32, 3)
    X[20, 1] = np.nan
    net, nodes = core_graph(g, {"name": "sgd", "learning_rate": 0.1})
    mm = nodes[2]["moving_mean"].copy()
    with pytest.raises(_core.NonFiniteInputError, match="row 20"):
        net.train_run([X], [Y], np.arange(32, dtype=np.int32), 0, 4, 8, 0, 0, np.zeros(4), np.zeros((4, 1)))
    assert net.steps_done == 2
    ref_nodes, _, _ = core_train(g, [X[:16]], [Y[:16]], {"name": "sgd", "learning_rate": 0.1}, batch_size=8)
    assert np.array_equal(nodes[1]["W"], ref_nodes[1]["W"])
    assert not np.array_equal(nodes[2]["moving_mean"], mm)
    assert np.array_equal(nodes[2]["moving_mean"], ref_nodes[2]["moving_mean"])


def bad(nodes, inputs=None, outputs=None, opt=None):
    return _core.Graph(
        nodes,
        inputs if inputs is not None else [0],
        outputs if outputs is not None else [dict(node=len(nodes) - 1, loss="mean_squared_error")],
        opt or {"name": "sgd"},
    )


def inp(*shape):
    return dict(op="input", inputs=[], shape=shape)


def dense(src, i, o, **kw):
    return dict(op="dense", inputs=[src], shape=(o,), W=np.zeros((i, o), np.float32), b=None, **kw)


@pytest.mark.parametrize(
    "nodes,inputs,match",
    [
        ([inp(3), dict(op="conv", inputs=[0], shape=(3,))], None, "unknown op 'conv'"),
        ([inp(3), dense(1, 3, 2)], None, "not an earlier node"),
        ([inp(3), dense(0, 4, 2)], None, r"Invalid shape for argument `nodes\[1\].W`"),
        ([inp(2, 3), dense(0, 3, 5)], None, "gives shape"),
        ([inp(3), inp(4), dict(op="add", inputs=[0, 1], shape=(3,))], [0, 1], "one shape"),
        ([inp(3), dict(op="add", inputs=[0], shape=(3,))], None, "2 to 64 inputs"),
        ([inp(3), dict(op="subtract", inputs=[0, 0, 0], shape=(3,))], None, "exactly 2"),
        (
            [inp(2, 3), inp(3, 3), dict(op="concatenate", inputs=[0, 1], shape=(2, 6))],
            [0, 1],
            "differ only in the last",
        ),
        ([inp(3), inp(4), dict(op="concatenate", inputs=[0, 1], shape=(8,))], [0, 1], "gives shape"),
        ([inp(6), dict(op="reshape", inputs=[0], shape=(4, 2))], None, "cannot reshape"),
        ([inp(3), dict(op="dropout", inputs=[0], shape=(3,), rate=1.0)], None, "rate"),
        ([inp(3), dict(op="gaussian_noise", inputs=[0], shape=(3,), stddev=-1.0)], None, "stddev"),
        ([inp(3), dict(op="batchnorm", inputs=[0], shape=(3,), gamma=None, beta=None)], None, "moving_mean"),
        (
            [
                inp(3),
                dict(op="affine", inputs=[0], shape=(3,), scale=np.ones(2, np.float32), offset=np.ones(1, np.float32)),
            ],
            None,
            "1 or 3 values",
        ),
        ([inp(0)], None, "positive dimensions"),
        ([dict(op="reshape", inputs=[], shape=(3,))], [], "exactly 1 input"),
        ([inp(3), inp(3), dict(op="add", inputs=[0, 1], shape=(3,))], [0], "each input node once"),
    ],
)
def test_bad_descriptions_are_refused(nodes, inputs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        bad(nodes, inputs)


def test_bad_arrays_and_outputs_are_refused():
    W = np.zeros((3, 2), np.float64)
    with pytest.raises(TypeError, match="float32"):
        bad([inp(3), dict(dense(0, 3, 2), W=W)])
    W = np.zeros((2, 3), np.float32).T
    with pytest.raises(ValueError, match="C-contiguous"):
        bad([inp(3), dict(dense(0, 3, 2), W=W)])
    with pytest.raises(ValueError, match="Unknown loss"):
        bad([inp(3), dense(0, 3, 2)], outputs=[dict(node=1, loss="dice")])
    with pytest.raises(ValueError, match="node index"):
        bad([inp(3), dense(0, 3, 2)], outputs=[dict(node=5, loss=None)])
    shared = dense(0, 3, 3)
    with pytest.raises(ValueError, match="used twice"):
        bad([inp(3), shared, dict(shared, inputs=[1])])
    with pytest.raises(ValueError, match="slot arrays"):
        bad([inp(3), dense(0, 3, 2)], opt={"name": "adam"})
    g = bad(
        [inp(3), dense(0, 3, 2, activation="softmax")], outputs=[dict(node=1, loss="sparse_categorical_crossentropy")]
    )
    x = np.zeros((4, 3), np.float32)
    with pytest.raises(ValueError, match=r"labels in `ys\[0\]`"):
        g.train_run(
            [x], [np.full(4, 2, np.int32)], np.arange(4, dtype=np.int32), 0, 1, 4, 0, 0, np.zeros(1), np.zeros((1, 1))
        )
    with pytest.raises(ValueError, match="list of 1 array"):
        g.predict(x)
    with pytest.raises(ValueError, match=r"xs\[0\]"):
        g.predict([np.zeros((4, 5), np.float32)])
    with pytest.raises(ValueError, match="batch_correct"):
        g.train_run([x], [np.zeros(4, np.int32)], np.arange(4, dtype=np.int32), 0, 1, 4, 0, 0, np.zeros(1), np.zeros(1))


def test_predict_big_enough_for_two_threads_is_bit_identical():
    """Inference splits chunks over threads only past 2^24 flops a chunk: a graph that big."""
    g = G()
    x = g.input(784)
    h = g.ln(g.bn(g.dense(x, 512, "relu")))
    g.out(g.dense(h, 10, "softmax"), "sparse_categorical_crossentropy", metric="sparse")
    n = 600
    X, y = rand(n, 784), RNG.integers(0, 10, n).astype(np.int32)
    net, _ = core_graph(g, {"name": "sgd"})
    got = []
    prev = _core.get_num_threads()
    try:
        for t in (1, 2):
            _core.set_num_threads(t)
            got.append(net.predict([X], batch_size=256, ys=[y]))
    finally:
        _core.set_num_threads(prev)
    assert np.array_equal(got[0][0][0], got[1][0][0])
    assert np.array_equal(got[0][1], got[1][1]) and np.array_equal(got[0][2], got[1][2])
    r = ref_graph(g)
    vals, _ = r.forward([X], training=False)
    assert_close(got[0][0][0], vals[-1], 1e-4, 1e-6, "predict")
    assert got[0][1][0] / n == pytest.approx(r.losses([X], [y])[0], rel=1e-4)


# ------------------------------------------------------------ activity regularizers


def activity_graph(where, rows=1):
    """input -> Dense(tanh) -> [op] -> Dense -> softmax/mse, an activity penalty on node `where`."""
    g = G()
    x = g.input(*((rows, 5) if rows > 1 else (5,)))
    h = g.dense(x, 7, "tanh")
    nodes = {"dense": h}
    nodes["act_relu"] = g.add("activation", [h], g.shape(h), activation="relu", alpha=0.0)
    nodes["reshape"] = g.add("reshape", [nodes["act_relu"]], (int(np.prod(g.shape(h))),))
    nodes["bn"] = g.bn(nodes["reshape"])
    z = g.dense(nodes["bn"], 3, "softmax")
    nodes["output"] = z
    g.out(z, loss="categorical_crossentropy")
    g.nodes[nodes[where]]["activity"] = {"l1": 0.01, "l2": 0.05}
    return g


ACTIVITY_WHERE = ["dense", "act_relu", "reshape", "bn", "output"]


def _onehot(n, k=3, seed=0):
    return f32(np.eye(k)[np.random.default_rng(seed).integers(0, k, n)])


@pytest.mark.parametrize("rows", [1, 3])
@pytest.mark.parametrize("where", ACTIVITY_WHERE)
def test_activity_regularizer_loss_and_gradients_match_reference(where, rows, threads):
    g = activity_graph(where, rows)
    n = 29
    x, y = rand(n, 5 * rows), _onehot(n)
    grads, batch_loss = core_grads(g, [x], [y])
    total, _, want, _ = ref_graph(g).gradients([x], [y], training=True)
    plain = copy.deepcopy(g)
    del plain.nodes[[k for k, d in enumerate(g.nodes) if d.get("activity")][0]]["activity"]
    # the penalty is really there: the loss differs from the plain graph's by it
    assert abs(total - ref_graph(plain).gradients([x], [y], training=True)[0]) > 1e-3
    assert batch_loss / n == pytest.approx(total, rel=1e-5)
    assert set(grads) == set(want)
    for key in grads:
        scale = np.abs(want[key]).max() + 1e-3
        assert_close(grads[key], want[key], 1e-3, 2e-5 * scale + 1e-6, f"{where} grad {key}")


@pytest.mark.parametrize("where", ["dense", "bn", "output"])
def test_activity_regularizer_gradient_finite_differences(where):
    """The core's gradient against central differences of the core's own loss (penalty included)."""
    g = activity_graph(where)
    n = 16
    x, y = rand(n, 5), _onehot(n, seed=1)
    grads, _ = core_grads(g, [x], [y])
    W = g.nodes[1]["W"]
    h = 1e-3  # the ReLU and L1 kinks: a wider step crosses one for about 1 seed in 8
    for r, c in [(0, 0), (2, 3), (4, 6)]:
        old = W[r, c]
        W[r, c] = old + h
        lp = core_loss(g, [x], [y])
        W[r, c] = old - h
        lm = core_loss(g, [x], [y])
        W[r, c] = old
        assert grads[(1, "W")][r, c] == pytest.approx((lp - lm) / (2 * h), rel=2e-2, abs=2e-4), (where, r, c)


def test_activity_regularizer_bit_identical_on_one_and_two_threads():
    """Wide enough (6 * 64 * (64 * 128 + 128 * 3) flops a step) for the core to use both threads."""
    g = G()
    h = g.dense(g.input(64), 128, "relu")
    h = g.add("dropout", [h], (128,), rate=0.2, seed_offset=2, activity={"l1": 0.003, "l2": 0.01})
    z = g.dense(h, 3, "softmax")
    g.nodes[z]["activity"] = {"l2": 0.02}
    g.out(z, loss="categorical_crossentropy")
    x, y = rand(300, 64), _onehot(300, seed=2)
    runs = []
    for nt in (1, 2):
        prev = _core.get_num_threads()
        _core.set_num_threads(nt)
        try:
            nodes, losses, _ = core_train(g, [x], [y], {"name": "adam", "learning_rate": 0.01}, steps=3, batch_size=64)
        finally:
            _core.set_num_threads(prev)
        runs.append((nodes, losses))
    for (n1, l1), (n2, l2) in zip([runs[0]], [runs[1]]):
        for a, b in zip(l1, l2):
            assert np.array_equal(a[0], b[0])
        for d1, d2 in zip(n1, n2):
            for k in ("W", "b", "gamma", "beta", "moving_mean", "moving_variance"):
                if d1.get(k) is not None:
                    assert np.array_equal(d1[k], d2[k]), k
