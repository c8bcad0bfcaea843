"""Checks of the NumPy oracle itself (tests/reference.py).

Gradients against central finite differences in float64, optimizer steps
against numbers worked out by hand from Keras 3's update formulas, and a tiny
network that must learn a separable problem.
"""

import math

import numpy as np
import pytest
import reference as ref

ACTS = ["linear", "relu", "sigmoid", "tanh", "softmax", "leaky_relu", "gelu"]


def numeric_grad(f, x, h=1e-6):
    """Central differences of the scalar function f at x (x is perturbed in place)."""
    g = np.zeros_like(x)
    it = np.nditer(x, flags=["multi_index"])
    for _ in it:
        i = it.multi_index
        old = x[i]
        x[i] = old + h
        fp = f()
        x[i] = old - h
        fm = f()
        x[i] = old
        g[i] = (fp - fm) / (2 * h)
    return g


def away_from_zero(rng, shape, margin=0.05):
    # relu / leaky_relu have a kink at 0: keep finite differences off it.
    z = rng.normal(size=shape)
    return np.where(np.abs(z) < margin, np.sign(z + 1e-12) * margin * 2, z)


# ---------------------------------------------------------------- activations


@pytest.mark.parametrize("name", ACTS)
def test_activation_grad_matches_finite_differences(name):
    rng = np.random.default_rng(1)
    z = away_from_zero(rng, (4, 5)) * 2
    u = rng.normal(size=(4, 5))
    num = numeric_grad(lambda: float(np.sum(u * ref.activation(name, z))), z)
    np.testing.assert_allclose(ref.activation_grad(name, z, u), num, rtol=1e-6, atol=1e-8)


def test_activation_values():
    z = np.array([[-2.0, 0.0, 3.0]])
    np.testing.assert_array_equal(ref.activation(None, z), z)
    np.testing.assert_array_equal(ref.activation("relu", z), [[0.0, 0.0, 3.0]])
    np.testing.assert_allclose(ref.activation("leaky_relu", z), [[-0.4, 0.0, 3.0]])
    np.testing.assert_allclose(ref.activation("sigmoid", z), 1 / (1 + np.exp(-z)))
    gelu = [0.5 * v * (1 + math.erf(v / math.sqrt(2))) for v in (-2.0, 0.0, 3.0)]
    np.testing.assert_allclose(ref.activation("gelu", z), [gelu])
    # sigmoid does not overflow at extreme inputs
    with np.errstate(over="raise", divide="raise", invalid="raise"):
        np.testing.assert_array_equal(ref.activation("sigmoid", np.array([-1e4, 1e4])), [0.0, 1.0])


def test_activation_keeps_float32():
    z = np.linspace(-3, 3, 12, dtype=np.float32).reshape(3, 4)
    for name in ACTS:
        assert ref.activation(name, z).dtype == np.float32, name
        assert ref.activation_grad(name, z, np.ones_like(z)).dtype == np.float32, name


def test_softmax_rows_sum_to_one_and_are_stable():
    z = np.array([[1e4, 0.0, -1e4], [-1e4, -1e4, -1e4], [1.0, 2.0, 3.0]])
    with np.errstate(over="raise", divide="raise", invalid="raise"):
        s = ref.activation("softmax", z)
    np.testing.assert_allclose(s.sum(axis=1), 1.0, rtol=0, atol=1e-15)
    np.testing.assert_allclose(s[0], [1.0, 0.0, 0.0])
    np.testing.assert_allclose(s[1], [1 / 3] * 3)
    e = np.exp([1.0, 2.0, 3.0])
    np.testing.assert_allclose(s[2], e / e.sum())


def test_unknown_activation_is_rejected():
    with pytest.raises(ValueError, match="celu"):
        ref.activation("celu", np.zeros(3))


# --------------------------------------------------------------------- dense


def test_dense_backward_matches_finite_differences():
    rng = np.random.default_rng(2)
    x, W, b = rng.normal(size=(3, 4)), rng.normal(size=(4, 2)), rng.normal(size=2)
    u = rng.normal(size=(3, 2))

    def f():
        return float(np.sum(u * ref.dense_forward(x, W, b, "tanh")[1]))

    z, _ = ref.dense_forward(x, W, b, "tanh")
    dW, db, dx = ref.dense_backward(x, W, z, u, "tanh")
    np.testing.assert_allclose(dW, numeric_grad(f, W), rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(db, numeric_grad(f, b), rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(dx, numeric_grad(f, x), rtol=1e-6, atol=1e-9)
    assert ref.dense_backward(x, W, z, u, "tanh", need_dx=False)[2] is None
    z0, a0 = ref.dense_forward(x, W, None, None)
    np.testing.assert_array_equal(z0, x @ W)
    np.testing.assert_array_equal(a0, z0)


# -------------------------------------------------------------------- losses


def loss_case(name, from_logits, rng):
    n, k = 4, 3
    if name == "sparse_categorical_crossentropy":
        y = np.array([0, 2, 1, 2])
    elif name == "categorical_crossentropy":
        y = np.eye(k)[[1, 0, 2, 2]]
    elif name == "binary_crossentropy":
        y = rng.integers(0, 2, size=(n, k)).astype(float)
    else:
        y = rng.normal(size=(n, k))
    if from_logits or name == "mse":
        p = rng.normal(size=(n, k)) * 2
    elif name == "binary_crossentropy":
        p = rng.uniform(0.05, 0.95, size=(n, k))
    else:
        # unnormalised rows: exercises the division by the row sum
        p = rng.uniform(0.1, 2.0, size=(n, k))
    return y, p


LOSS_CASES = [
    ("sparse_categorical_crossentropy", False),
    ("sparse_categorical_crossentropy", True),
    ("categorical_crossentropy", False),
    ("categorical_crossentropy", True),
    ("binary_crossentropy", False),
    ("binary_crossentropy", True),
    ("mse", False),
]


@pytest.mark.parametrize("name,from_logits", LOSS_CASES)
def test_loss_grad_matches_finite_differences(name, from_logits):
    y, p = loss_case(name, from_logits, np.random.default_rng(3))
    num = numeric_grad(lambda: ref.loss(name, y, p, from_logits), p)
    np.testing.assert_allclose(ref.loss_grad(name, y, p, from_logits), num, rtol=1e-6, atol=1e-9)


def test_loss_values_follow_keras_formulas():
    # keras.losses.binary_crossentropy docstring example: [0.916, 0.714] per sample
    y, p = np.array([[0, 1], [0, 0]]), np.array([[0.6, 0.4], [0.4, 0.6]])
    per_sample = [
        -(math.log(1 - 0.6) + math.log(0.4)) / 2,
        -(math.log(1 - 0.4) + math.log(1 - 0.6)) / 2,
    ]
    assert ref.loss("binary_crossentropy", y, p) == pytest.approx(np.mean(per_sample))
    assert per_sample == pytest.approx([0.916, 0.714], abs=1e-3)
    # probabilities are divided by their row sum, then clipped to [1e-7, 1 - 1e-7]
    p = np.array([[2.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
    expected = (-math.log(0.5) - math.log(1e-7)) / 2
    assert ref.loss("sparse_categorical_crossentropy", [0, 1], p) == pytest.approx(expected)
    assert ref.loss("categorical_crossentropy", np.eye(3)[[0, 1]], p) == pytest.approx(expected)
    # clipped entries pass no gradient
    assert np.all(ref.loss_grad("sparse_categorical_crossentropy", [0, 1], p)[1] == 0)
    # mse averages over the last axis then the batch; the alias is accepted
    y, p = np.array([[1.0, 2.0], [0.0, 0.0]]), np.array([[1.0, 4.0], [3.0, 0.0]])
    assert ref.loss("mean_squared_error", y, p) == pytest.approx((4 / 2 + 9 / 2) / 2)
    # (batch,) targets against a (batch, 1) output
    assert ref.loss("mse", [1.0, 2.0], [[1.0], [4.0]]) == pytest.approx(2.0)
    with pytest.raises(ValueError, match="hinge"):
        ref.loss("hinge", y, p)
    with pytest.raises(ValueError, match="labels"):
        ref.loss("sparse_categorical_crossentropy", [0, 3], np.full((2, 3), 1 / 3))


def test_fused_softmax_cross_entropy_equals_composition():
    rng = np.random.default_rng(4)
    z, labels = rng.normal(size=(6, 5)) * 3, rng.integers(0, 5, size=6)
    value, dz = ref.softmax_cross_entropy_grad(z, labels)
    probs = ref.activation("softmax", z)
    name = "sparse_categorical_crossentropy"
    assert value == pytest.approx(ref.loss(name, labels, probs), rel=1e-12)
    assert value == pytest.approx(ref.loss(name, labels, z, from_logits=True), rel=1e-12)
    composed = ref.activation_grad("softmax", z, ref.loss_grad(name, labels, probs))
    np.testing.assert_allclose(dz, composed, rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(dz, ref.loss_grad(name, labels, z, from_logits=True), rtol=1e-12)
    # one-hot targets give the same answer as their indices
    v2, dz2 = ref.softmax_cross_entropy_grad(z, np.eye(5)[labels])
    assert v2 == pytest.approx(value)
    np.testing.assert_allclose(dz2, dz)
    # stable at huge logits: loss = 2e4 for the wrong class, finite gradient
    with np.errstate(over="raise", divide="raise", invalid="raise"):
        v, d = ref.softmax_cross_entropy_grad(np.array([[1e4, -1e4], [1e4, -1e4]]), [0, 1])
    assert v == pytest.approx(1e4)
    np.testing.assert_allclose(d, [[0, 0], [0.5, -0.5]])


def test_fused_sigmoid_bce_equals_composition():
    rng = np.random.default_rng(5)
    z, y = rng.normal(size=(6, 3)) * 3, rng.integers(0, 2, size=(6, 3)).astype(float)
    value, dz = ref.sigmoid_bce_grad(z, y)
    probs = ref.activation("sigmoid", z)
    assert value == pytest.approx(ref.loss("binary_crossentropy", y, probs), rel=1e-9)
    on_logits = ref.loss("binary_crossentropy", y, z, from_logits=True)
    assert value == pytest.approx(on_logits, rel=1e-12)
    composed = ref.activation_grad("sigmoid", z, ref.loss_grad("binary_crossentropy", y, probs))
    np.testing.assert_allclose(dz, composed, rtol=1e-9, atol=1e-14)
    with np.errstate(over="raise", divide="raise", invalid="raise"):
        v, d = ref.sigmoid_bce_grad(np.array([[1e4], [-1e4]]), np.array([0.0, 0.0]))
    assert v == pytest.approx(5e3)
    np.testing.assert_allclose(d, [[0.5], [0.0]])


# ------------------------------------------------------------------- metrics


def test_accuracy_follows_keras_choice():
    p = np.array([[0.2, 0.5, 0.3], [0.4, 0.4, 0.2], [0.1, 0.1, 0.8]])
    # sparse labels; the tie in row 2 goes to the first maximum (class 0)
    assert ref.accuracy(np.array([1, 0, 2]), p) == 1.0
    assert ref.accuracy(np.array([[1], [1], [2]]), p) == pytest.approx(2 / 3)
    # one-hot: argmax against argmax
    assert ref.accuracy(np.eye(3)[[1, 1, 0]], p) == pytest.approx(1 / 3)
    # one output column: threshold at 0.5
    assert ref.accuracy(np.array([1, 0, 1, 0]), np.array([[0.7], [0.2], [0.5], [0.51]])) == 0.5


# ---------------------------------------------------------------- optimizers
# One 2-element parameter w = [1, -2] with gradient g = [0.5, -1], lr = 0.1.
# Expected values are worked out by hand from the Keras 3 update rules.


def run(opt, grads):
    w = np.array([1.0, -2.0])
    for g in grads:
        opt.step([w], [np.array(g)])
    return w


G = [0.5, -1.0]


def test_sgd_plain():
    # w - lr*g = [1 - 0.05, -2 + 0.1]
    np.testing.assert_allclose(run(ref.SGD(learning_rate=0.1), [G]), [0.95, -1.9], rtol=1e-15)


def test_sgd_momentum_two_steps():
    # m1 = -lr*g = [-0.05, 0.1];            w1 = [0.95, -1.9]
    # m2 = 0.9*m1 - lr*g = [-0.095, 0.19];  w2 = [0.855, -1.71]
    w = run(ref.SGD(learning_rate=0.1, momentum=0.9), [G, G])
    np.testing.assert_allclose(w, [0.855, -1.71], rtol=1e-14)


def test_sgd_nesterov_two_steps():
    # m1 = [-0.05, 0.1];   w1 = w0 + 0.9*m1 - lr*g = [1 - 0.095, -2 + 0.19] = [0.905, -1.81]
    # m2 = [-0.095, 0.19]; w2 = w1 + 0.9*m2 - lr*g = [0.905 - 0.1355, -1.81 + 0.271]
    w = run(ref.SGD(learning_rate=0.1, momentum=0.9, nesterov=True), [G, G])
    np.testing.assert_allclose(w, [0.7695, -1.539], rtol=1e-14)


def test_adagrad_one_step():
    # a = 0.1 + g^2 = [0.35, 1.1];  w = w - 0.1*g / sqrt(a + 1e-7)
    #   = [1 - 0.05/sqrt(0.3500001), -2 + 0.1/sqrt(1.1000001)]
    w = run(ref.Adagrad(learning_rate=0.1), [G])
    np.testing.assert_allclose(w, [0.9154845866007779, -1.9046537454093613], rtol=1e-14)


def test_rmsprop_one_step():
    # v = 0.1*g^2 = [0.025, 0.1];  inc = 0.1*g / sqrt(v + 1e-7) ~ [0.316227, -0.316228]
    w = run(ref.RMSprop(learning_rate=0.1), [G])
    np.testing.assert_allclose(w, [0.6837728664367967, -1.6837723920969265], rtol=1e-14)


def test_rmsprop_keras_docstring_example():
    # keras.optimizers.RMSprop docstring: var = 10, loss = var^2/2, lr = 0.1 -> 9.683772
    w = np.array([10.0])
    ref.RMSprop(learning_rate=0.1).step([w], [w.copy()])
    assert w[0] == pytest.approx(9.683772, abs=1e-6)


def test_rmsprop_momentum_two_steps():
    # v1 = [0.025, 0.1];    inc1 = 0.1*g/sqrt(v1 + 1e-7) = [0.31622713, -0.31622761]; m1 = inc1
    # v2 = 0.9*v1 + 0.1*g^2 = [0.0475, 0.19]
    # inc2 = 0.1*g/sqrt(v2 + 1e-7) = [0.22941549, -0.22941567]
    # m2 = 0.5*m1 + inc2 = [0.38752906, -0.38752948];  w2 = w0 - m1 - m2
    w = run(ref.RMSprop(learning_rate=0.1, momentum=0.5), [G, G])
    np.testing.assert_allclose(w, [0.29624380727449817, -1.2962429146473657], rtol=1e-13)


def test_adam_two_steps():
    # t=1: alpha = 0.1*sqrt(1-0.999)/(1-0.9) = 0.0316227766
    #      m = 0.1*g = [0.05, -0.1]; v = 0.001*g^2 = [0.00025, 0.001]
    #      w -= alpha*m/(sqrt(v)+1e-7) -> [0.90000063245, -1.90000031623]
    # t=2, g = [-0.25, 2]: alpha = 0.1*sqrt(1-0.999^2)/(1-0.9^2) = 0.0235316725
    #      m = [0.05 + (-0.3)*0.1, -0.1 + 2.1*0.1] = [0.02, 0.11]
    #      v = [0.00025 + (0.0625-0.00025)*0.001, 0.001 + (4-0.001)*0.001] = [0.00031225, 0.004999]
    opt = ref.Adam(learning_rate=0.1)
    w = run(opt, [G])
    np.testing.assert_allclose(w, [0.9000006324515321, -1.900000316226766], rtol=1e-14)
    opt.step([w], [np.array([-0.25, 2.0])])
    np.testing.assert_allclose(w, [0.8733670792079219, -1.936610617150388], rtol=1e-13)
    assert opt.iterations == 2


def test_optimizer_defaults_are_keras_defaults():
    assert (ref.SGD().learning_rate, ref.SGD().momentum, ref.SGD().nesterov) == (0.01, 0.0, False)
    a = ref.Adagrad()
    assert (a.learning_rate, a.initial_accumulator_value, a.epsilon) == (0.001, 0.1, 1e-7)
    r = ref.RMSprop()
    assert (r.learning_rate, r.rho, r.momentum, r.epsilon) == (0.001, 0.9, 0.0, 1e-7)
    d = ref.Adam()
    assert (d.learning_rate, d.beta_1, d.beta_2, d.epsilon) == (0.001, 0.9, 0.999, 1e-7)


def test_optimizers_keep_float32():
    for opt in (ref.SGD(momentum=0.9), ref.Adagrad(), ref.RMSprop(momentum=0.5), ref.Adam()):
        w = np.ones(3, dtype=np.float32)
        opt.step([w], [np.full(3, 0.5, dtype=np.float32)])
        assert w.dtype == np.float32 and np.all(w < 1)


# ------------------------------------------------------------------- network


def test_glorot_uniform():
    rng = np.random.default_rng(6)
    W = ref.glorot_uniform(100, 50, rng)
    limit = math.sqrt(6 / 150)
    assert W.shape == (100, 50) and W.dtype == np.float64
    assert np.all(np.abs(W) <= limit) and np.abs(W).max() > 0.95 * limit
    assert ref.glorot_uniform(3, 2, rng, dtype=np.float32).dtype == np.float32


MLP_CASES = [
    ([(4, "tanh"), (3, "softmax")], "sparse_categorical_crossentropy", True),
    ([(4, "sigmoid"), (3, "softmax")], "sparse_categorical_crossentropy", False),
    ([(4, "gelu"), (3, "softmax")], "categorical_crossentropy", True),
    ([(4, "leaky_relu"), (3, "relu"), (2, "sigmoid")], "binary_crossentropy", True),
    ([(4, "relu"), (2, "sigmoid")], "binary_crossentropy", False),
    ([(4, "tanh"), (2, None)], "mse", True),
]


@pytest.mark.parametrize("layers,loss_name,fused", MLP_CASES)
def test_mlp_gradients_match_finite_differences(layers, loss_name, fused):
    rng = np.random.default_rng(7)
    net = ref.MLP(layers, input_dim=5, rng=rng, fused=fused)
    for b in net.params[1::2]:
        b[:] = rng.normal(size=b.shape) * 0.1  # non-zero biases: their gradient matters too
    x = rng.normal(size=(6, 5))
    out_units = layers[-1][0]
    if loss_name == "sparse_categorical_crossentropy":
        y = rng.integers(0, out_units, size=6)
    elif loss_name == "categorical_crossentropy":
        y = np.eye(out_units)[rng.integers(0, out_units, size=6)]
    elif loss_name == "binary_crossentropy":
        y = rng.integers(0, 2, size=(6, out_units)).astype(float)
    else:
        y = rng.normal(size=(6, out_units))
    value, grads = net.gradients(x, y, loss_name)
    assert value == pytest.approx(ref.loss(loss_name, y, net.forward(x)), rel=1e-9)
    for p, g in zip(net.params, grads):
        num = numeric_grad(lambda: net.gradients(x, y, loss_name)[0], p)
        np.testing.assert_allclose(g, num, rtol=1e-5, atol=1e-8)


def blobs(n, rng):
    centres = np.array([[2.0, 2.0], [-2.0, 2.0], [0.0, -2.5]])
    y = rng.integers(0, 3, size=n)
    return centres[y] + rng.normal(scale=0.5, size=(n, 2)), y


def test_mlp_learns_separable_blobs():
    rng = np.random.default_rng(8)
    x, y = blobs(300, rng)
    net = ref.MLP([(16, "relu"), (3, "softmax")], input_dim=2, rng=rng)
    opt = ref.Adam(learning_rate=0.01)
    for _ in range(5):
        loss_value, acc = net.fit_epoch(x, y, 32, opt, "sparse_categorical_crossentropy", perm=rng.permutation(300))
    assert acc > 0.95
    assert ref.accuracy(y, net.forward(x)) > 0.95
    assert loss_value < 0.3


def test_fit_epoch_weights_batches_by_size():
    # With lr = 0 nothing moves, so the size-weighted mean of the batch losses
    # (100 = 3*32 + 4: the last batch is smaller) is the loss on all the data.
    rng = np.random.default_rng(9)
    x, y = blobs(100, rng)
    net = ref.MLP([(8, "tanh"), (3, "softmax")], input_dim=2, rng=rng)
    before = [p.copy() for p in net.params]
    name = "sparse_categorical_crossentropy"
    loss_value, acc = net.fit_epoch(x, y, 32, ref.SGD(learning_rate=0.0), name, perm=rng.permutation(100))
    for p, q in zip(net.params, before):
        np.testing.assert_array_equal(p, q)
    assert loss_value == pytest.approx(ref.loss(name, y, net.forward(x)), rel=1e-12)
    assert acc == pytest.approx(ref.accuracy(y, net.forward(x)), rel=1e-12)


def test_mlp_train_step_and_float32():
    rng = np.random.default_rng(10)
    x, y = blobs(64, rng)
    net = ref.MLP([(8, "relu"), (3, "softmax")], input_dim=2, rng=0, dtype=np.float32)
    assert all(p.dtype == np.float32 for p in net.params)
    opt = ref.SGD(learning_rate=0.1)
    first = net.train_step(x, y, "sparse_categorical_crossentropy", opt)
    for _ in range(20):
        last = net.train_step(x, y, "sparse_categorical_crossentropy", opt)
    assert last < first
    assert net.forward(x).dtype == np.float32
    assert all(p.dtype == np.float32 for p in net.params)
