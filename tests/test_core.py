"""Tests of the C core (cdnn._core) against independent values.

- Every kernel against the NumPy oracle (tests/reference.py, float64) on odd
  shapes, with 1 and 2 threads and on every SIMD path this CPU runs; the
  tolerances are error bounds of float32 accumulation over K terms.
- The C gradients against central finite differences of the C forward
  pass and loss (independent of the oracle).
- Optimizer steps against Keras 3's formulas written out here in NumPy.
- Whole training runs against reference.MLP, determinism across thread
  counts and reruns, dropout, argument validation and build information.
"""

import functools
import math
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import reference as ref

from cdnn import _core

ACTS = ["linear", "relu", "sigmoid", "tanh", "softmax", "leaky_relu", "gelu"]
U = 2.0**-24  # float32 unit roundoff
INFO = _core.build_info()
SIMD_PATHS = INFO["simd_supported"]


# ---------------------------------------------------------------- fixtures


@pytest.fixture(params=SIMD_PATHS)
def simd(request):
    """Run the test on each SIMD path this CPU supports, then back to "auto"."""
    _core.simd_select(request.param)
    assert _core.build_info()["simd_selected"] == request.param
    yield request.param
    _core.simd_select("auto")


@pytest.fixture
def one_thread():
    """Many tiny calls (finite differences): one thread, then restore."""
    prev = _core.get_num_threads()
    _core.set_num_threads(1)
    yield
    _core.set_num_threads(prev)


def f32(a):
    return np.ascontiguousarray(a, dtype=np.float32)


def f64(a):
    return np.asarray(a, dtype=np.float64)


def assert_bounded(got, want, tol, what):
    """|got - want| <= tol elementwise, with a useful message."""
    got, want = f64(got), f64(want)
    assert got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape}"
    err = np.abs(got - want)
    bad = ~(err <= tol)  # NaN counts as bad
    if bad.any():
        i = np.unravel_index(np.argmax(np.where(bad, err - tol, -np.inf)), err.shape)
        raise AssertionError(
            f"{what}: {bad.sum()} of {err.size} elements outside the bound; at {i}: "
            f"got {got[i]!r}, want {want[i]!r}, |err| {err[i]:.3g} > tol {np.broadcast_to(tol, err.shape)[i]:.3g}"
        )


def gemm_bound(k, mag):
    """Error bound of a float32 dot product of k terms of magnitude sum ``mag``."""
    return 2.0 * (k + 4) * U * mag + 1e-30


# ---------------------------------------------------------------- gemm

GEMM_SHAPES = [  # (M, K, N)
    (1, 1, 1),
    (3, 7, 33),
    (33, 784, 7),
    (31, 1000, 3),
    (1000, 33, 1),
    (32, 784, 1000),
    (7, 3, 1000),
    (1000, 784, 7),  # tall: two threads split the rows
    # the blocking's boundaries, one past each: 145 rows = MC + 1 (a 1-row last A block), 257 deep =
    # AVX2's kc + 1 (AVX-512's 2 kc + 1), 1025 columns = NC + 1 (a 1-column last B block)
    (145, 257, 1025),
    (144, 255, 17),  # exactly MC rows, one short of AVX2's kc
    (9, 130, 57),  # AVX-512: a 1-row panel, a 2-deep second slice, a 25-column edge (second vector masked)
    # AVX-512 edges of at most 4 columns (4 columns x 4 depths or x 4 rows per vector):
    (13, 131, 100),  # W2's 100 units = 3 x 32 + 4; a 5-row panel; a 3-deep last slice
    (6, 9, 35),  # 3 edge columns, 6 rows (a 2-row second half), 9 deep (1-deep tail)
    (3, 4, 2),  # fewer than 4 rows, exactly 4 deep
]


@functools.lru_cache(maxsize=2)
def gemm_case(shape):
    """Operands and the oracle's product with its error bound (shared by the thread/SIMD variants)."""
    M, K, N = shape
    rng = np.random.default_rng(M * 7 + K * 13 + N)
    A = f32(rng.normal(size=(M, K)))
    B = f32(rng.normal(size=(K, N)))
    return A, B, f64(A) @ f64(B), gemm_bound(K, np.abs(f64(A)) @ np.abs(f64(B)))


# Thread and SIMD variants vary fastest, so the cached oracle values are reused.
EVERY_THREADS = pytest.mark.parametrize("threads", [1, 2], indirect=True, ids=lambda n: f"threads{n}")
EVERY_SIMD = pytest.mark.parametrize("simd", SIMD_PATHS, indirect=True)


@EVERY_SIMD
@EVERY_THREADS
@pytest.mark.parametrize("transb", [False, True], ids=["B", "Bt"])
@pytest.mark.parametrize("transa", [False, True], ids=["A", "At"])
@pytest.mark.parametrize("shape", GEMM_SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_gemm_matches_reference(shape, transa, transb, threads, simd):
    M, _, N = shape
    A, B, want, tol = gemm_case(shape)
    a = f32(A.T) if transa else A
    b = f32(B.T) if transb else B
    got = _core.gemm(a, b, transa=transa, transb=transb)
    assert got.dtype == np.float32 and got.shape == (M, N)
    assert_bounded(got, want, tol, "gemm")


def test_gemm_empty_inner_dimension_gives_zeros():
    out = _core.gemm(np.ones((3, 0), np.float32), np.ones((0, 5), np.float32))
    np.testing.assert_array_equal(out, np.zeros((3, 5), np.float32))


def test_gemm_exact_on_small_integers(simd):
    # Small integers: every partial sum is exact in float32, so the result must be too.
    rng = np.random.default_rng(5)
    A = f32(rng.integers(-8, 9, size=(37, 300)))
    B = f32(rng.integers(-8, 9, size=(300, 41)))
    np.testing.assert_array_equal(_core.gemm(A, B), (f64(A) @ f64(B)).astype(np.float32))


@pytest.mark.parametrize("transa", [False, True], ids=["A", "At"])
@pytest.mark.parametrize("N", [100, 36, 3, 1])
def test_gemm_narrow_edges_exact_on_small_integers(simd, N, transa):
    # the <= 4-column edge tiles sum in another order than the full tiles: exact all the same
    rng = np.random.default_rng(N)
    A = f32(rng.integers(-8, 9, size=(21, 259)))
    B = f32(rng.integers(-8, 9, size=(259, N)))
    a = f32(A.T) if transa else A
    np.testing.assert_array_equal(_core.gemm(a, B, transa=transa), (f64(A) @ f64(B)).astype(np.float32))


# ---------------------------------------------------------------- dense layer

DENSE_SHAPES = [  # (rows, in, units): batch sizes 1, 31, 32, 33; 784 inputs; 1000 units
    (1, 1, 1),
    (31, 784, 33),
    (32, 7, 1000),
    (33, 1000, 3),
    (33, 784, 1000),
    (1000, 33, 7),  # a large batch: two threads split the rows
]


def dense_inputs(shape, seed):
    rows, n_in, units = shape
    rng = np.random.default_rng(seed)
    x = f32(rng.normal(size=(rows, n_in)))
    W = f32(rng.normal(size=(n_in, units)) * np.sqrt(2.0 / (n_in + units)) * 1.5)
    b = f32(rng.normal(size=units) * 0.5)
    return x, W, b


def act_bound(act, y_ref, z_tol):
    """Bound on |act(z_c) - act(z_ref)| given the bound z_tol on |z_c - z_ref|."""
    if act == "softmax":
        cols = y_ref.shape[1]
        row = z_tol.max(axis=1, keepdims=True)
        return y_ref * (2.0 * row + 2 * (cols + 8) * U) + 1e-12
    # Lipschitz constants <= 1.13 (gelu), plus a few ulps of float32 libm.
    return 1.2 * z_tol + 1e-6 * np.maximum(np.abs(y_ref), 1e-3)


@functools.lru_cache(maxsize=2)
def forward_case(shape, act):
    x, W, b = dense_inputs(shape, seed=sum(shape))
    z_ref, y_ref = ref.dense_forward(f64(x), f64(W), f64(b), act)
    z_tol = gemm_bound(shape[1] + 1, np.abs(f64(x)) @ np.abs(f64(W)) + np.abs(f64(b)))
    return x, W, b, z_ref, y_ref, z_tol, act_bound(act, y_ref, z_tol)


@EVERY_SIMD
@EVERY_THREADS
@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("shape", DENSE_SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_dense_forward_matches_reference(shape, act, threads, simd):
    x, W, b, z_ref, y_ref, z_tol, y_tol = forward_case(shape, act)
    y, z = _core.dense_forward(x, W, b, act)
    assert_bounded(z, z_ref, z_tol, "z")
    assert_bounded(y, y_ref, y_tol, "y")


@pytest.mark.parametrize("act", ["relu", "softmax", "gelu"])
def test_dense_forward_without_bias(act):
    x, W, _ = dense_inputs((33, 70, 20), seed=1)
    y, z = _core.dense_forward(x, W, None, act)
    z_ref, y_ref = ref.dense_forward(f64(x), f64(W), None, act)
    z_tol = gemm_bound(70, np.abs(f64(x)) @ np.abs(f64(W)))
    assert_bounded(z, z_ref, z_tol, "z")
    assert_bounded(y, y_ref, act_bound(act, y_ref, z_tol), "y")


@pytest.mark.parametrize("alpha", [0.01, 0.2, 0.5])
def test_leaky_relu_alpha(alpha):
    x, W, b = dense_inputs((31, 9, 13), seed=2)
    y, z = _core.dense_forward(x, W, b, "leaky_relu", alpha=alpha)
    np.testing.assert_array_equal(y, np.where(z >= 0, z, np.float32(alpha) * z))
    dy = f32(np.random.default_rng(3).normal(size=y.shape))
    dW, db, dx = _core.dense_backward(x, W, y, dy, "leaky_relu", alpha=alpha)
    dz = f64(np.where(z > 0, dy, np.float32(alpha) * dy))
    np.testing.assert_allclose(db, dz.sum(0), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(dW, f64(x).T @ dz, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(dx, dz @ f64(W).T, rtol=1e-5, atol=1e-5)


def backward_case(shape, act, seed):
    """Inputs for dense_backward: x, W, a (z for gelu) as the C expects, z and dy."""
    x, W, b = dense_inputs(shape, seed)
    z = f32(f64(x) @ f64(W) + f64(b))
    a = z if act == "gelu" else f32(ref.activation(act, f64(z)))
    dy = f32(np.random.default_rng(seed + 1).normal(size=z.shape))
    return x, W, z, a, dy


@functools.lru_cache(maxsize=2)
def backward_reference(shape, act):
    rows, n_in, units = shape
    x, W, z, a, dy = backward_case(shape, act, seed=rows + n_in + units)
    dW_ref, db_ref, dx_ref = ref.dense_backward(f64(x), f64(W), f64(z), f64(dy), act)
    dz_ref = ref.activation_grad(act, f64(z), f64(dy))
    # dz itself is rounded: a few ulps of |dy| (softmax: its row dot product too).
    extra = units + 8 if act == "softmax" else 16
    D = np.abs(dz_ref) + np.abs(f64(dy))
    tols = (
        gemm_bound(rows + extra, np.abs(f64(x)).T @ D),
        gemm_bound(rows + extra, D.sum(axis=0)),
        gemm_bound(units + extra, D @ np.abs(f64(W)).T),
    )
    return (x, W, a, dy), (dW_ref, db_ref, dx_ref), tols


@EVERY_SIMD
@EVERY_THREADS
@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("shape", DENSE_SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_dense_backward_matches_reference(shape, act, threads, simd):
    (x, W, a, dy), wants, tols = backward_reference(shape, act)
    gots = _core.dense_backward(x, W, a, dy, act)
    for name, got, want, tol in zip(("dW", "db", "dx"), gots, wants, tols):
        assert_bounded(got, want, tol, name)


def test_dense_backward_need_dx_false():
    x, W, _, a, dy = backward_case((31, 7, 33), "tanh", seed=4)
    dW, db, dx = _core.dense_backward(x, W, a, dy, "tanh", need_dx=False)
    dW2, db2, _ = _core.dense_backward(x, W, a, dy, "tanh", need_dx=True)
    assert dx is None
    np.testing.assert_array_equal(dW, dW2)
    np.testing.assert_array_equal(db, db2)


# ---------------------------------------------------------------- losses

# (loss, activation of the output layer, from_logits, metric)
LOSS_CASES = [
    ("sparse_categorical_crossentropy", "softmax", False, "sparse"),  # fused
    ("categorical_crossentropy", "softmax", False, "categorical"),  # fused
    ("binary_crossentropy", "sigmoid", False, "binary"),  # fused
    ("sparse_categorical_crossentropy", "linear", True, "sparse"),
    ("categorical_crossentropy", "linear", True, "categorical"),
    ("binary_crossentropy", "linear", True, "binary"),
    ("sparse_categorical_crossentropy", "softmax", True, "sparse"),  # logits = the softmax output
    ("categorical_crossentropy", "sigmoid", False, "categorical"),  # probabilities, not fused
    ("binary_crossentropy", "softmax", False, "binary"),  # probabilities, not fused
] + [("mean_squared_error", act, False, None) for act in ACTS]

LOSS_SHAPES = [(1, 7), (31, 3), (32, 1000), (33, 1)]


def case_id(c):
    return f"{c[0].split('_')[0]}-{c[1]}{'-logits' if c[2] else ''}"


def labels_for(loss, rows, cols, rng):
    if loss == "sparse_categorical_crossentropy":
        return rng.integers(0, cols, size=rows).astype(np.int32)
    if loss == "categorical_crossentropy":
        return f32(rng.dirichlet(np.ones(cols) * 0.5, size=rows))  # soft targets, rows sum to 1
    if loss == "binary_crossentropy":
        return f32(rng.integers(0, 2, size=(rows, cols)))
    return f32(rng.normal(size=(rows, cols)))


def output_of(act, z):
    """The layer output for pre-activation z, computed by the C forward (W = identity)."""
    n = z.shape[1]
    y, z2 = _core.dense_forward(z, np.eye(n, dtype=np.float32), np.zeros(n, np.float32), act)
    assert np.array_equal(z2, z)
    return y


def is_fused(loss, act, from_logits):
    return not from_logits and (
        (loss.endswith("categorical_crossentropy") and act == "softmax")
        or (loss == "binary_crossentropy" and act == "sigmoid")
    )


def reference_loss_and_dz(loss, act, from_logits, z, out, y):
    """Per-row losses and d(mean loss)/dz from the oracle, in float64."""
    z, out = f64(z), f64(out)
    y64 = y if y.dtype == np.int32 else f64(y)
    if is_fused(loss, act, from_logits):
        # the fused loss reads the logits z: the oracle's from_logits formulas on z
        dz = ref.loss_grad(loss, y64, z, from_logits=True)
        per_row = [ref.loss(loss, y64[i : i + 1], z[i : i + 1], from_logits=True) for i in range(len(z))]
    else:
        dout = ref.loss_grad(loss, y64, out, from_logits=from_logits)
        dz = ref.activation_grad(act, z, dout)
        per_row = [ref.loss(loss, y64[i : i + 1], out[i : i + 1], from_logits=from_logits) for i in range(len(z))]
    return np.array(per_row), dz


@pytest.mark.parametrize("shape", LOSS_SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("case", LOSS_CASES, ids=case_id)
def test_loss_matches_reference(case, shape, threads):
    loss, act, from_logits, metric = case
    rows, cols = shape
    rng = np.random.default_rng(rows * 100 + cols)
    z = f32(rng.normal(size=shape) * 2)
    out = output_of(act, z)
    y = labels_for(loss, rows, cols, rng)
    row_loss, row_correct, dz = _core.loss_forward_backward(
        loss, out, z, y, activation=act, from_logits=from_logits, metric=metric
    )
    assert row_loss.dtype == np.float64 and row_correct.dtype == np.float64 and dz.dtype == np.float32
    want_loss, want_dz = reference_loss_and_dz(loss, act, from_logits, z, out, y)
    np.testing.assert_allclose(row_loss, want_loss, rtol=2e-5, atol=2e-6, err_msg="row loss")
    scale = np.abs(want_dz).max() + 1e-30
    np.testing.assert_allclose(dz, want_dz, rtol=1e-4, atol=1e-5 * scale, err_msg="dz")


@pytest.mark.parametrize("metric", ["sparse", "categorical", "binary", None])
def test_row_correct(metric):
    rng = np.random.default_rng(11)
    rows, cols = 33, 4 if metric != "binary" else 3
    z = f32(rng.normal(size=(rows, cols)))
    if metric == "sparse":
        loss, act = "sparse_categorical_crossentropy", "softmax"
        y = rng.integers(0, cols, size=rows).astype(np.int32)
    elif metric == "categorical":
        loss, act = "categorical_crossentropy", "softmax"
        y = f32(np.eye(cols)[rng.integers(0, cols, size=rows)])
    else:
        loss, act = "binary_crossentropy", "sigmoid"
        y = f32(rng.integers(0, 2, size=(rows, cols)))
    out = output_of(act, z)
    _, correct, _ = _core.loss_forward_backward(loss, out, z, y, activation=act, metric=metric)
    if metric == "sparse":
        want = out.argmax(1) == y
    elif metric == "categorical":
        want = out.argmax(1) == y.argmax(1)
    elif metric == "binary":
        want = ((out > 0.5) == (y > 0.5)).mean(axis=1)
    else:
        want = np.zeros(rows)
    np.testing.assert_array_equal(correct, f64(want))


@pytest.mark.parametrize("case", LOSS_CASES, ids=case_id)
def test_loss_gradient_finite_differences(case, one_thread):
    """dz from the C core against central differences of the C loss (no oracle involved)."""
    loss, act, from_logits, _ = case
    rng = np.random.default_rng(3)
    rows, cols = 3, 4
    z = f32(rng.normal(size=(rows, cols)))
    y = labels_for(loss, rows, cols, rng)

    def mean_loss(zz):
        return _core.loss_forward_backward(loss, output_of(act, zz), zz, y, activation=act, from_logits=from_logits)[
            0
        ].mean()

    _, _, dz = _core.loss_forward_backward(loss, output_of(act, z), z, y, activation=act, from_logits=from_logits)
    eps = 1e-2
    fd = np.zeros_like(dz, dtype=np.float64)
    for i in np.ndindex(z.shape):
        zp, zm = z.copy(), z.copy()
        zp[i] += eps
        zm[i] -= eps
        fd[i] = (mean_loss(zp) - mean_loss(zm)) / (f64(zp[i]) - f64(zm[i]))
    np.testing.assert_allclose(dz, fd, rtol=1e-2, atol=1e-2 * np.abs(fd).max() + 1e-6)


def two_layer_forward(x, W1, b1, W2, b2, act):
    a1, z1 = _core.dense_forward(x, W1, b1, act)
    out, z2 = _core.dense_forward(a1, W2, b2, "linear")
    return a1, z1, out, z2


@pytest.mark.parametrize("act", ACTS)
def test_dense_gradients_finite_differences(act, one_thread):
    """dense_backward + loss dz of a 2-layer net vs central differences of the C forward."""
    for seed in range(100):  # keep relu/leaky_relu kinks away from the differences
        rng = np.random.default_rng(seed)
        x = f32(rng.normal(size=(5, 4)))
        W1 = f32(rng.normal(size=(4, 6)) * 0.7)
        b1 = f32(rng.normal(size=6) * 0.3)
        z1 = f64(x) @ f64(W1) + f64(b1)
        if np.abs(z1).min() > 0.15:
            break
    W2 = f32(rng.normal(size=(6, 3)) * 0.7)
    b2 = f32(rng.normal(size=3) * 0.3)
    y = labels_for("categorical_crossentropy", 5, 3, rng)
    params = {"x": x, "W1": W1, "b1": b1, "W2": W2, "b2": b2}

    def mean_loss():
        z2 = two_layer_forward(x, W1, b1, W2, b2, act)[3]
        return _core.loss_forward_backward(
            "categorical_crossentropy", output_of("softmax", z2), z2, y, activation="softmax"
        )[0].mean()

    a1, z1, out, z2 = two_layer_forward(x, W1, b1, W2, b2, act)
    _, _, dz2 = _core.loss_forward_backward(
        "categorical_crossentropy", output_of("softmax", z2), z2, y, activation="softmax"
    )
    dW2, db2, da1 = _core.dense_backward(a1, W2, out, dz2, "linear")
    dW1, db1, dx = _core.dense_backward(x, W1, z1 if act == "gelu" else a1, da1, act)
    grads = {"x": dx, "W1": dW1, "b1": db1, "W2": dW2, "b2": db2}
    eps = 1e-2
    for name, p in params.items():
        fd = np.zeros(p.shape)
        for i in np.ndindex(p.shape):
            old = p[i]
            p[i] = old + eps
            fp = mean_loss()
            hi = f64(p[i])
            p[i] = old - eps
            fm = mean_loss()
            lo = f64(p[i])
            p[i] = old
            fd[i] = (fp - fm) / (hi - lo)
        np.testing.assert_allclose(
            grads[name], fd, rtol=1e-2, atol=1e-2 * np.abs(fd).max() + 1e-6, err_msg=f"d loss / d {name} ({act})"
        )


EXTREME_CASES = [
    ("sparse_categorical_crossentropy", "softmax", False),
    ("categorical_crossentropy", "softmax", False),
    ("binary_crossentropy", "sigmoid", False),
    ("sparse_categorical_crossentropy", "linear", True),
    ("categorical_crossentropy", "linear", True),
    ("binary_crossentropy", "linear", True),
    ("mean_squared_error", "softmax", False),
    ("mean_squared_error", "sigmoid", False),
    ("mean_squared_error", "tanh", False),
    ("mean_squared_error", "gelu", False),
]


@pytest.mark.parametrize("case", EXTREME_CASES, ids=lambda c: f"{c[0].split('_')[0]}-{c[1]}")
def test_extreme_logits_are_finite(case):
    loss, act, from_logits = case
    z = f32([[1e4, -1e4, 0.0], [-1e4, -1e4, -1e4], [1e4, 1e4, -1e4], [-1e4, 0.0, 1e4]])
    out = output_of(act, z)
    assert np.isfinite(out).all()
    rng = np.random.default_rng(0)
    y = labels_for(loss, 4, 3, rng)
    if loss == "sparse_categorical_crossentropy":
        y = np.array([1, 0, 2, 2], np.int32)
    if loss == "categorical_crossentropy":
        y = f32(np.eye(3)[[1, 0, 2, 2]])
    row_loss, _, dz = _core.loss_forward_backward(loss, out, z, y, activation=act, from_logits=from_logits)
    assert np.isfinite(row_loss).all() and np.isfinite(dz).all()
    if loss.endswith("categorical_crossentropy"):
        # exact values: logsumexp(z) - z[label]
        np.testing.assert_allclose(row_loss, [2e4, np.log(3), 2e4 + np.log(2), 0.0], rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(dz[0], [1 / 4, -1 / 4, 0], atol=1e-7)
    if loss == "binary_crossentropy":
        want = (np.maximum(f64(z), 0) - f64(z) * f64(y) + np.log1p(np.exp(-np.abs(f64(z))))).mean(axis=1)
        np.testing.assert_allclose(row_loss, want, rtol=1e-6)


def test_dense_forward_extreme_inputs_are_finite():
    x = f32([[1e4], [-1e4], [0.0]])
    for act in ACTS:
        y, z = _core.dense_forward(x, f32([[1.0, -1.0, 2.0]]), f32([0, 0, 0]), act)
        assert np.isfinite(y).all(), act
        y_ref = ref.activation(act, f64(z))
        np.testing.assert_allclose(y, y_ref, rtol=1e-6, atol=1e-30, err_msg=act)


#: grid of arguments for the core's own sigmoid, tanh and gelu: dense, tiny and huge, both sides
#: of their polynomials' edges (tanh's at 0.625; erfc's at 1 and 2, i.e. gelu's at -1.41 and -2.83),
#: exp's flush point, and the special values
ACT_GRID = np.concatenate(
    [
        np.linspace(-30, 30, 600_001),
        np.geomspace(1e-30, 1e3, 5000),
        -np.geomspace(1e-30, 1e3, 5000),
        np.linspace(0.62, 0.63, 10_001),
        -np.linspace(0.62, 0.63, 10_001),
        -np.linspace(1.40, 1.43, 10_001),
        -np.linspace(2.81, 2.85, 10_001),
        np.linspace(-110, -80, 30_001),
        [0.0, -0.0, 1e30, -1e30, np.inf, -np.inf, np.nan],
    ]
)


@pytest.mark.parametrize("act", ["sigmoid", "tanh", "gelu"])
def test_sigmoid_tanh_gelu_accurate_everywhere(act):
    """The core's branch-free sigmoid, tanh and gelu (polynomial e^x and erfc, tanh's own
    polynomial below |x| = 0.625) against float64 on ACT_GRID: sigmoid and tanh within 4 ulp,
    gelu within 16 ulp (where erfc is 1 - erf, and 1 - erf cancels), and beyond x = -2 within
    3e-5 relative (there x / sqrt 2 rounded alone costs 2t^2 ulp: the C library's erfcf gave
    1.2e-5); values below float32's normal range (gelu: below 1.2e-35) may be 0 or any smaller
    value; NaN and infinities as the oracle."""
    z = f32(ACT_GRID)[:, None]
    y, _ = _core.dense_forward(z, f32([[1.0]]), f32([0.0]), act)
    if act == "gelu":  # not the reference's 1 + erf(x / sqrt 2), which cancels for x << 0 (as Keras' does)
        with np.errstate(invalid="ignore"):
            want = 0.5 * f64(z) * np.vectorize(math.erfc)(-f64(z) / math.sqrt(2))
    else:
        want = ref.activation(act, f64(z))
    nan = np.isnan(want)
    assert np.array_equal(np.isnan(y), nan)
    finite = np.isfinite(want)
    np.testing.assert_array_equal(y[~finite & ~nan], want[~finite & ~nan])
    got, exp, x = f64(y[finite]), want[finite], f64(z[finite])
    # gelu's far tail: 0.5 x erfc(-x / sqrt 2) is normal a little longer than erfc is (to x = -13.2)
    tiny = np.abs(exp) < np.finfo(np.float32).tiny * (1e3 if act == "gelu" else 1)
    ulp = np.spacing(np.abs(exp).astype(np.float32)).astype(np.float64)
    err = np.abs(got - exp)
    if act == "gelu":
        tail = x < -2
        assert (err <= 16 * ulp)[~tiny & ~tail].all(), np.max((err / ulp)[~tiny & ~tail])
        assert (err <= 3e-5 * np.abs(exp))[~tiny & tail].all(), np.max((err / np.abs(exp))[~tiny & tail])
    else:
        assert (err <= 4 * ulp)[~tiny].all(), np.max((err / ulp)[~tiny])
    assert (np.abs(got[tiny]) <= np.abs(exp[tiny]) + np.finfo(np.float32).tiny).all()


def test_gelu_derivative_accurate_everywhere():
    """gelu' = Phi(x) + x phi(x), from the same erfc and exp polynomials, within 2e-7 of float64
    on ACT_GRID's finite values (it crosses zero at x = -0.75: an absolute bound)."""
    x = f32(ACT_GRID[np.isfinite(ACT_GRID)])
    n = x.size
    _, db, _ = _core.dense_backward(
        f32([[1.0]]), np.ones((1, n), np.float32), x[None, :], np.ones((1, n), np.float32), "gelu", need_dx=False
    )
    want = ref.activation_grad("gelu", f64(x), np.ones(n))
    np.testing.assert_allclose(db, want, rtol=0, atol=2e-7)


@pytest.mark.parametrize("act", ["relu", "leaky_relu", "linear"])
def test_dense_forward_keeps_nan_and_infinity_as_the_oracle(act):
    # NaN (inf * 0 in the product) stays NaN, as in NumPy's and TensorFlow's max(z, 0); inf stays inf
    x = f32([[-0.0, 2.0, -3.0, np.inf]])  # z = x @ I: inf * 0 = NaN in the first three columns
    y, z = _core.dense_forward(x, np.eye(4, dtype=np.float32), f32([0, 0, 0, 0]), act)
    np.testing.assert_array_equal(y, ref.activation(act, z), err_msg=act)
    assert np.isnan(y[0, :3]).all() and y[0, 3] == np.inf


# ---------------------------------------------------------------- optimizers


def keras_step(hp, w, g, s1, s2, t):
    """Keras 3's update formulas, in float32 NumPy, on copies; returns (w, s1, s2)."""
    f = np.float32
    lr = f(hp["learning_rate"])
    w, s1, s2 = w.copy(), s1.copy(), s2.copy()
    name = hp["name"]
    if name == "sgd":
        mu = f(hp.get("momentum", 0.0))
        if mu == 0:
            w = w - lr * g
        else:
            s1 = mu * s1 - lr * g
            w = w + (mu * s1 - lr * g if hp.get("nesterov") else s1)
    elif name == "adagrad":
        s1 = s1 + g * g
        w = w - lr * g / np.sqrt(s1 + f(hp.get("epsilon", 1e-7)))
    elif name == "rmsprop":
        rho, mu, eps = f(hp.get("rho", 0.9)), f(hp.get("momentum", 0.0)), f(hp.get("epsilon", 1e-7))
        s1 = rho * s1 + (f(1) - rho) * g * g
        inc = lr * g / np.sqrt(s1 + eps)
        if mu > 0:
            s2 = mu * s2 + inc
            inc = s2
        w = w - inc
    elif name == "adam":
        b1, b2, eps = f(hp.get("beta_1", 0.9)), f(hp.get("beta_2", 0.999)), f(hp.get("epsilon", 1e-7))
        alpha = lr * np.sqrt(f(1) - b2 ** f(t)) / (f(1) - b1 ** f(t))
        s1 = s1 + (g - s1) * (f(1) - b1)
        s2 = s2 + (g * g - s2) * (f(1) - b2)
        w = w - alpha * s1 / (np.sqrt(s2) + eps)
    return f32(w), f32(s1), f32(s2)


OPTIMIZERS = [
    dict(name="sgd", learning_rate=0.1),
    dict(name="sgd", learning_rate=0.1, momentum=0.9),
    dict(name="sgd", learning_rate=0.1, momentum=0.9, nesterov=True),
    dict(name="adagrad", learning_rate=0.1),
    dict(name="adagrad", learning_rate=0.05, epsilon=1e-3),
    dict(name="rmsprop", learning_rate=0.01),
    dict(name="rmsprop", learning_rate=0.01, rho=0.8, momentum=0.5),
    dict(name="adam", learning_rate=0.01),
    dict(name="adam", learning_rate=0.02, beta_1=0.5, beta_2=0.9, epsilon=1e-3),
]


def opt_id(hp):
    return "-".join(f"{v}" if k == "name" else f"{k}={v}" for k, v in hp.items() if k != "learning_rate")


@pytest.mark.parametrize("shape", [(1000,), (7, 33), (1, 1)], ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("hp", OPTIMIZERS, ids=opt_id)
def test_optimizer_matches_keras_formulas(hp, shape):
    rng = np.random.default_rng(len(shape) + shape[0])
    w = f32(rng.normal(size=shape))
    init = 0.1 if hp["name"] == "adagrad" else 0.0  # Keras' initial_accumulator_value
    s1 = np.full(shape, init, np.float32)
    s2 = np.zeros(shape, np.float32)
    w_k, s1_k, s2_k = w.copy(), s1.copy(), s2.copy()
    for t in range(1, 11):
        g = f32(rng.normal(size=shape) * (1 + t % 3))
        _core.optimizer_update(hp, w, g, s1, s2, t)
        w_k, s1_k, s2_k = keras_step(hp, w_k, g, s1_k, s2_k, t)
        np.testing.assert_allclose(w, w_k, rtol=1e-5, atol=1e-6, err_msg=f"w at step {t}")
        np.testing.assert_allclose(s1, s1_k, rtol=1e-5, atol=1e-6, err_msg=f"slot1 at step {t}")
        np.testing.assert_allclose(s2, s2_k, rtol=1e-5, atol=1e-6, err_msg=f"slot2 at step {t}")


def test_sgd_plain_and_momentum_by_hand():
    w = f32([1.0, -2.0])
    _core.optimizer_update(dict(name="sgd", learning_rate=0.5), w, f32([2.0, 4.0]), None, None, 1)
    np.testing.assert_allclose(w, [0.0, -4.0])
    w, m = f32([1.0]), f32([0.0])
    hp = dict(name="sgd", learning_rate=0.1, momentum=0.9)
    _core.optimizer_update(hp, w, f32([1.0]), m, None, 1)  # m = -0.1, w = 0.9
    _core.optimizer_update(hp, w, f32([1.0]), m, None, 2)  # m = -0.09 - 0.1 = -0.19, w = 0.71
    np.testing.assert_allclose(m, [-0.19], rtol=1e-6)
    np.testing.assert_allclose(w, [0.71], rtol=1e-6)
    w, m = f32([1.0]), f32([0.0])
    hp["nesterov"] = True
    _core.optimizer_update(hp, w, f32([1.0]), m, None, 1)  # m = -0.1; w += 0.9*-0.1 - 0.1
    np.testing.assert_allclose(w, [0.81], rtol=1e-6)


@pytest.mark.parametrize("steps", [1, 2, 10])
def test_adam_bias_correction(steps):
    """With the same gradient every step, m_hat = g and v_hat = g**2: each step moves ~lr."""
    lr, g0 = 0.01, 0.3
    w = np.zeros(3, np.float32)
    m = np.zeros(3, np.float32)
    v = np.zeros(3, np.float32)
    g = f32([g0, -g0, 2 * g0])
    for t in range(1, steps + 1):
        _core.optimizer_update(dict(name="adam", learning_rate=lr, epsilon=1e-7), w, g, m, v, t)
    # m_t = (1 - b1^t) g and v_t = (1 - b2^t) g^2, so Keras' step
    # lr * sqrt(1 - b2^t) / (1 - b1^t) * m_t / (sqrt(v_t) + eps) is lr * g * r / (r |g| + eps), r = sqrt(1 - b2^t):
    # about lr * sign(g), the bias correction undoing the zero start.
    g64 = f64(g)
    want = -sum(
        lr * g64 * np.sqrt(1 - 0.999**t) / (np.sqrt(1 - 0.999**t) * np.abs(g64) + 1e-7) for t in range(1, steps + 1)
    )
    np.testing.assert_allclose(w, want, rtol=1e-5)
    np.testing.assert_allclose(w, -lr * steps * np.sign(g), rtol=2e-4)
    np.testing.assert_allclose(m, (1 - 0.9**steps) * g, rtol=1e-5)
    np.testing.assert_allclose(v, (1 - 0.999**steps) * g * g, rtol=1e-4)


def test_adagrad_accumulates_squares():
    w = np.zeros(2, np.float32)
    acc = np.full(2, 0.1, np.float32)
    for t, g in enumerate([f32([1.0, 2.0]), f32([3.0, -1.0])], start=1):
        _core.optimizer_update(dict(name="adagrad", learning_rate=1.0), w, g, acc, None, t)
    np.testing.assert_allclose(acc, [0.1 + 1 + 9, 0.1 + 4 + 1], rtol=1e-6)
    want = -(np.array([1, 2]) / np.sqrt([1.1, 4.1]) + np.array([3, -1]) / np.sqrt([10.1, 5.1]))
    np.testing.assert_allclose(w, want, rtol=1e-5)


# ---------------------------------------------------------------- Network vs reference.MLP

REF_OPT = {"sgd": ref.SGD, "adagrad": ref.Adagrad, "rmsprop": ref.RMSprop, "adam": ref.Adam}


def ref_optimizer(hp):
    kw = {k: v for k, v in hp.items() if k != "name"}
    return REF_OPT[hp["name"]](**kw)


def make_network(params, acts, loss, from_logits, metric, hp, dropout=None, with_slots=False, alpha=0.2):
    """A Network over float32 copies of ``params`` (W0, b0, W1, b1, ...); returns (net, arrays),
    arrays holding each layer's W and b, and with ``with_slots`` its four optimizer slots after them."""
    init = hp.get("initial_accumulator_value", 0.1) if hp["name"] == "adagrad" else 0.0
    layers = []
    for i, act in enumerate(acts):
        W, b = f32(params[2 * i]).copy(), f32(params[2 * i + 1]).copy()
        slots = [np.full_like(W, init), np.zeros_like(W), np.full_like(b, init), np.zeros_like(b)]
        layers.append(
            dict(W=W, b=b, activation=act, alpha=alpha, dropout=0.0 if dropout is None else dropout[i], slots=slots)
        )
    net = _core.Network(layers, loss, from_logits, metric, hp)
    arrays = []
    for d in layers:
        arrays += [d["W"], d["b"]] + (d["slots"] if with_slots else [])
    return net, arrays


def assert_arrays_equal(got, want):
    """Two networks' arrays (make_network's), bit for bit, naming the first that differs."""
    assert len(got) == len(want)
    for i, (a, b) in enumerate(zip(got, want)):
        np.testing.assert_array_equal(a, b, err_msg=f"array {i}")


def init_params(sizes, seed):
    rng = np.random.default_rng(seed)
    params = []
    for n_in, n_out in zip(sizes[:-1], sizes[1:]):
        params.append(ref.glorot_uniform(n_in, n_out, rng).astype(np.float32).astype(np.float64))
        params.append(f32(rng.normal(size=n_out) * 0.1).astype(np.float64))
    return params


def dataset(loss, n, n_in, units, seed):
    rng = np.random.default_rng(seed)
    x = f32(rng.normal(size=(n, n_in)))
    return x, labels_for(loss, n, units, rng)


# (loss, C output activation, from_logits, metric, oracle output activation)
NET_CASES = [
    ("sparse_categorical_crossentropy", "softmax", False, "sparse", "softmax"),
    ("categorical_crossentropy", "softmax", False, "categorical", "softmax"),
    ("binary_crossentropy", "sigmoid", False, None, "sigmoid"),
    ("mean_squared_error", "linear", False, None, "linear"),
    # from_logits with a linear output is the fused softmax / sigmoid network
    ("sparse_categorical_crossentropy", "linear", True, "sparse", "softmax"),
    ("binary_crossentropy", "linear", True, None, "sigmoid"),
]
NET_OPTIMIZERS = [
    dict(name="sgd", learning_rate=0.05),
    dict(name="sgd", learning_rate=0.02, momentum=0.9, nesterov=True),
    dict(name="adagrad", learning_rate=0.1),
    dict(name="rmsprop", learning_rate=0.003, momentum=0.5),
    dict(name="adam", learning_rate=0.005),
]


def train_both(net, arrays, mlp, opt, x, y, loss, bs, epochs, seed, split=False):
    """Train the Network and the MLP on the same batches; return per-epoch (C, ref) mean losses and accuracies."""
    n = x.shape[0]
    nb = -(-n // bs)
    rng = np.random.default_rng(seed)
    step = 0
    hist = []
    for _ in range(epochs):
        perm = rng.permutation(n).astype(np.int32)
        bl, bc = np.zeros(nb), np.zeros(nb)
        if split and nb > 1:  # two calls continuing each other: first / step0 must line up
            net.train_run(x, y, perm, 0, 1, bs, step, 0, bl[:1], bc[:1])
            net.train_run(x, y, perm, 1, nb - 1, bs, step + 1, 0, bl[1:], bc[1:])
        else:
            net.train_run(x, y, perm, 0, nb, bs, step, 0, bl, bc)
        step += nb
        ref_loss, ref_acc = mlp.fit_epoch(f64(x), y, bs, opt, loss, perm=perm)
        hist.append((bl.sum() / n, ref_loss, bc.sum() / n, ref_acc))
    return hist


@pytest.mark.parametrize("hp", NET_OPTIMIZERS, ids=opt_id)
@pytest.mark.parametrize("case", NET_CASES, ids=lambda c: f"{c[0].split('_')[0]}-{c[1]}{'-logits' if c[2] else ''}")
def test_network_training_matches_reference(case, hp):
    loss, act, from_logits, metric, ref_act = case
    units = 5
    params = init_params([20, 16, units], seed=1)
    x, y = dataset(loss, 100, 20, units, seed=2)
    net, arrays = make_network(params, ["tanh", act], loss, from_logits, metric, hp)
    mlp = ref.MLP([(16, "tanh"), (units, ref_act)], 20)
    mlp.params = [p.copy() for p in params]
    # 100 rows in batches of 16: 7 batches per epoch, the last of 4 rows; 25 epochs = 175 steps.
    hist = train_both(
        net, arrays, mlp, ref_optimizer(hp), x, y, loss, bs=16, epochs=25, seed=3, split=hp["name"] == "adam"
    )
    for e, (c_loss, r_loss, c_acc, r_acc) in enumerate(hist):
        assert c_loss == pytest.approx(r_loss, rel=1e-4, abs=1e-6), f"epoch {e} loss"
        if metric in ("sparse", "categorical"):
            assert abs(c_acc - r_acc) <= 1.01 / len(x), f"epoch {e} accuracy {c_acc} vs {r_acc}"
    assert hist[-1][0] < hist[0][0], "training did not reduce the loss"
    for i, (w, w_ref) in enumerate(zip(arrays, mlp.params)):
        np.testing.assert_allclose(w, w_ref, rtol=1e-4, atol=1e-5 * np.abs(w_ref).max(), err_msg=f"param {i}")


@pytest.mark.parametrize("hidden", ACTS)
def test_network_hidden_activations_match_reference(hidden, simd):
    hp = dict(name="adam", learning_rate=0.01)
    loss = "sparse_categorical_crossentropy"
    params = init_params([20, 33, 7, 5], seed=4)
    x, y = dataset(loss, 99, 20, 5, seed=5)
    net, arrays = make_network(params, [hidden, "relu", "softmax"], loss, False, "sparse", hp)
    mlp = ref.MLP([(33, hidden), (7, "relu"), (5, "softmax")], 20)
    mlp.params = [p.copy() for p in params]
    hist = train_both(net, arrays, mlp, ref_optimizer(hp), x, y, loss, bs=32, epochs=30, seed=6)
    for e, (c_loss, r_loss, c_acc, r_acc) in enumerate(hist):
        assert c_loss == pytest.approx(r_loss, rel=1e-4, abs=1e-6), f"epoch {e} loss"
        assert abs(c_acc - r_acc) <= 1.01 / len(x), f"epoch {e} accuracy {c_acc} vs {r_acc}"
    for i, (w, w_ref) in enumerate(zip(arrays, mlp.params)):
        np.testing.assert_allclose(w, w_ref, rtol=1e-4, atol=1e-5 * np.abs(w_ref).max(), err_msg=f"param {i}")


@pytest.mark.parametrize("n,bs", [(50, 64), (50, 16), (33, 1), (64, 32)])
def test_network_batch_sizes(n, bs):
    """Last batch smaller, batch_size larger than n, batches of one row."""
    hp = dict(name="sgd", learning_rate=0.05, momentum=0.5)
    loss = "categorical_crossentropy"
    params = init_params([20, 16, 5], seed=7)
    x, y = dataset(loss, n, 20, 5, seed=8)
    net, arrays = make_network(params, ["relu", "softmax"], loss, False, "categorical", hp)
    mlp = ref.MLP([(16, "relu"), (5, "softmax")], 20)
    mlp.params = [p.copy() for p in params]
    hist = train_both(net, arrays, mlp, ref_optimizer(hp), x, y, loss, bs=bs, epochs=4, seed=9)
    for c_loss, r_loss, _, _ in hist:
        assert c_loss == pytest.approx(r_loss, rel=1e-5)
    for w, w_ref in zip(arrays, mlp.params):
        np.testing.assert_allclose(w, w_ref, rtol=1e-4, atol=1e-6)


def assert_trains_like_reference(
    sizes, acts, hp, n, bs, epochs, seed, loss_rel=1e-5, acc_rows=1.01, w_rtol=1e-4, w_atol=1e-5, split=False
):
    """Train a sparse-CCE Network and the oracle MLP on the same batches (params from ``seed``,
    data from ``seed + 1``, shuffles from ``seed + 2``); per epoch the losses agree within
    ``loss_rel`` and the accuracies within ``acc_rows`` rows; the final weights within ``w_rtol``
    and ``w_atol`` times each array's largest magnitude."""
    loss = "sparse_categorical_crossentropy"
    params = init_params(list(sizes), seed=seed)
    x, y = dataset(loss, n, sizes[0], sizes[-1], seed=seed + 1)
    net, arrays = make_network(params, list(acts), loss, False, "sparse", hp)
    mlp = ref.MLP(list(zip(sizes[1:], acts)), sizes[0])
    mlp.params = [p.copy() for p in params]
    hist = train_both(net, arrays, mlp, ref_optimizer(hp), x, y, loss, bs=bs, epochs=epochs, seed=seed + 2, split=split)
    for c_loss, r_loss, c_acc, r_acc in hist:
        assert c_loss == pytest.approx(r_loss, rel=loss_rel)
        assert abs(c_acc - r_acc) <= acc_rows / len(x)
    for w, w_ref in zip(arrays, mlp.params):
        np.testing.assert_allclose(w, w_ref, rtol=w_rtol, atol=w_atol * np.abs(w_ref).max())


def test_network_large_two_threads_matches_reference(threads):
    """784-64-10 (above the serial threshold): parallel training vs the oracle."""
    assert_trains_like_reference(
        [784, 64, 10], ["relu", "softmax"], dict(name="adam", learning_rate=0.001), n=320, bs=33, epochs=2, seed=10
    )


@pytest.mark.parametrize("bs", [37, 300], ids=["one-depth-slice", "several-depth-slices"])
def test_network_gradients_deeper_than_a_slice_match_reference(bs, threads, simd):
    """dW = X^T dZ is K = batch rows deep: batch 300 is deeper than every path's slice
    (kc 128 or 256), so the optimizer runs after several slices; 37 rows of W and 45
    columns leave partial micro-panels on every path."""
    assert_trains_like_reference(
        [37, 45, 5],
        ["tanh", "softmax"],
        dict(name="sgd", learning_rate=0.05, momentum=0.9, nesterov=False),
        n=700,
        bs=bs,
        epochs=3,
        seed=24,
    )


@pytest.mark.parametrize("bs", [64, 300], ids=["one-depth-slice", "several-depth-slices"])
def test_network_with_packed_weight_copies_matches_reference(bs, threads, simd):
    """784-128-256-10: both big layers keep packed copies of W (units a multiple of 64)
    and the second one of W^T (for dX), rewritten by the optimizer after each update;
    batch 300 takes the optimizer path for gradients deeper than one slice."""
    # SGD: Adam and RMSprop scale every update to about the learning rate, so the float32
    # rounding of near-zero gradients of a 3-layer net would outgrow any useful tolerance
    assert_trains_like_reference(
        [784, 128, 256, 10],
        ["relu", "relu", "softmax"],
        dict(name="sgd", learning_rate=0.05, momentum=0.9, nesterov=False),
        n=600,
        bs=bs,
        epochs=2,
        seed=15,
        loss_rel=1e-4,
        acc_rows=2.01,
        w_rtol=1e-3,
        w_atol=1e-4,
        split=True,
    )


@pytest.mark.parametrize("case", NET_CASES[:4], ids=lambda c: c[0].split("_")[0])
@pytest.mark.parametrize("batch_size", [1, 7, 256])
def test_predict_matches_reference(case, batch_size, threads):
    loss, act, from_logits, metric, _ = case
    params = init_params([20, 16, 5], seed=13)
    x, y = dataset(loss, 45, 20, 5, seed=14)
    net, _ = make_network(params, ["gelu", act], loss, from_logits, metric, dict(name="sgd", learning_rate=0.1))
    mlp = ref.MLP([(16, "gelu"), (5, act)], 20)
    mlp.params = [p.copy() for p in params]
    want = mlp.forward(f64(x))
    out = net.predict(x, batch_size=batch_size)
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-6)
    out2, loss_sum, correct_sum = net.predict(x, batch_size=batch_size, y=y)
    np.testing.assert_array_equal(out2, out)
    y_ref = y if y.dtype == np.int32 else f64(y)
    z_last = mlp._forward_saved(f64(x))[1][-1]  # the oracle's fused loss reads the logits
    if is_fused(loss, act, from_logits):
        grad = ref.softmax_cross_entropy_grad if act == "softmax" else ref.sigmoid_bce_grad
        want_loss = grad(z_last, y_ref)[0]
    else:
        want_loss = ref.loss(loss, y_ref, want)
    assert loss_sum == pytest.approx(want_loss * len(x), rel=1e-5)
    if metric in ("sparse", "categorical"):
        assert correct_sum == pytest.approx(ref.accuracy(y_ref, want) * len(x))
    elif metric is None:
        assert correct_sum == 0.0


@pytest.mark.parametrize(
    "case",
    [
        ("binary_crossentropy", "sigmoid", "binary"),
        ("categorical_crossentropy", "softmax", "categorical"),
        ("sparse_categorical_crossentropy", "softmax", "sparse"),
    ],
    ids=lambda c: c[2],
)
def test_train_run_loss_and_correct_sums(case):
    """With a zero learning rate, train_run's batch sums equal the loss and accuracy of predict's outputs."""
    loss, act, metric = case
    params = init_params([20, 16, 5], seed=24)
    x, y = dataset(loss, 50, 20, 5, seed=25)
    net, arrays = make_network(params, ["relu", act], loss, False, metric, dict(name="sgd", learning_rate=0.0))
    out = f64(net.predict(x))
    perm = np.random.default_rng(26).permutation(50).astype(np.int32)
    bl, bc = np.zeros(4), np.zeros(4)
    net.train_run(x, y, perm, 0, 4, 16, 0, 0, bl, bc)
    for j in range(4):
        idx = perm[16 * j : 16 * (j + 1)]
        o, t = out[idx], y[idx]
        if metric == "binary":
            correct = ((o > 0.5) == (t > 0.5)).mean(axis=1).sum()
            loss_sum = -(t * np.log(o) + (1 - t) * np.log(1 - o)).mean(axis=1).sum()
        elif metric == "categorical":
            correct = (o.argmax(1) == t.argmax(1)).sum()
            loss_sum = -(t * np.log(o)).sum()
        else:
            correct = (o.argmax(1) == t).sum()
            loss_sum = -np.log(o[np.arange(len(idx)), t]).sum()
        assert bc[j] == pytest.approx(correct, rel=1e-12), f"batch {j}"
        assert bl[j] == pytest.approx(loss_sum, rel=1e-5), f"batch {j}"


def test_predict_empty_input():
    net, _ = make_network(
        init_params([4, 3], 0),
        ["softmax"],
        "sparse_categorical_crossentropy",
        False,
        "sparse",
        dict(name="sgd", learning_rate=0.1),
    )
    assert net.predict(np.zeros((0, 4), np.float32)).shape == (0, 3)


def test_network_without_bias_matches_reference():
    """use_bias=False: no bias is read or updated; the kernels follow the oracle's gradients."""
    hp = dict(name="sgd", learning_rate=0.05, momentum=0.9)
    loss = "sparse_categorical_crossentropy"
    params = init_params([20, 16, 5], seed=15)
    params[1][:] = 0.0
    params[3][:] = 0.0
    x, y = dataset(loss, 64, 20, 5, seed=16)
    Ws = [f32(params[0]).copy(), f32(params[2]).copy()]
    slots = [np.zeros_like(W) for W in Ws]
    net = _core.Network(
        [
            dict(W=Ws[0], b=None, activation="relu", slots=[slots[0]]),
            dict(W=Ws[1], b=None, activation="softmax", slots=[slots[1]]),
        ],
        loss,
        False,
        "sparse",
        hp,
    )
    mlp = ref.MLP([(16, "relu"), (5, "softmax")], 20)
    mlp.params = [p.copy() for p in params]
    opt = ref_optimizer(hp)
    perm = np.random.default_rng(17).permutation(64).astype(np.int32)
    bl, bc = np.zeros(4), np.zeros(4)
    net.train_run(x, y, perm, 0, 4, 16, 0, 0, bl, bc)
    for j in range(4):
        idx = perm[16 * j : 16 * (j + 1)]
        value, grads = mlp.gradients(f64(x[idx]), y[idx], loss)
        opt.step([mlp.params[0], mlp.params[2]], [grads[0], grads[2]])
        assert bl[j] == pytest.approx(value * 16, rel=1e-5)
    np.testing.assert_allclose(Ws[0], mlp.params[0], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(Ws[1], mlp.params[2], rtol=1e-4, atol=1e-6)


# ---------------------------------------------------------------- determinism and dropout


def train_big(threads, dropout, seed=1234, simd_path=None):
    """300 steps of a 784-64-10 net; returns its parameters and batch losses."""
    _core.set_num_threads(threads)
    loss = "sparse_categorical_crossentropy"
    params = init_params([784, 64, 10], seed=20)
    rng = np.random.default_rng(21)
    x = f32(rng.random((3200, 784)))
    y = rng.integers(0, 10, size=3200).astype(np.int32)
    hp = dict(name="adam", learning_rate=0.001)
    net, arrays = make_network(params, ["relu", "softmax"], loss, False, "sparse", hp, dropout=dropout)
    losses = []
    bs, nb = 32, 100
    for epoch in range(3):
        perm = rng.permutation(3200).astype(np.int32)
        bl, bc = np.zeros(nb), np.zeros(nb)
        net.train_run(x, y, perm, 0, nb, bs, epoch * nb, seed, bl, bc)
        losses.append(bl)
    return arrays, np.concatenate(losses)


@pytest.mark.parametrize("dropout", [None, [0.0, 0.2], [0.1, 0.2]], ids=["no-dropout", "dropout1", "dropout01"])
def test_training_bit_identical_across_threads_and_reruns(dropout):
    prev = _core.get_num_threads()
    try:
        w1, l1 = train_big(1, dropout)
        w2, l2 = train_big(2, dropout)
        w2b, l2b = train_big(2, dropout)
    finally:
        _core.set_num_threads(prev)
    assert np.isfinite(l1).all()
    np.testing.assert_array_equal(l1, l2)
    np.testing.assert_array_equal(l2, l2b)
    for a, b, c in zip(w1, w2, w2b):
        assert np.array_equal(a, b), "1 vs 2 threads differ"
        assert np.array_equal(b, c), "rerun differs"


DEPTH_SPLIT_CASES = {
    # 200x96: W's rows split at 96 (a multiple of 16: not packed, 96 units)
    "gelu": dict(sizes=(200, 96, 7), acts=("gelu", "softmax"), bias=True, dropout=None, bs=40),
    "no-bias": dict(sizes=(200, 96, 7), acts=("tanh", "softmax"), bias=False, dropout=None, bs=40),
    "dropout": dict(sizes=(200, 96, 7), acts=("relu", "softmax"), bias=True, dropout=[0.0, 0.3], bs=40),
    # 784x128: W kept packed, each part's copy a packed matrix of its own
    "packed": dict(sizes=(784, 128, 10), acts=("relu", "softmax"), bias=True, dropout=None, bs=64),
    # a hidden layer split (200x96; the first, 60x200, too small): forward partials and dX by
    # columns, with dropout on its input (the dX epilogue's dropout keys take absolute columns)
    "hidden": dict(sizes=(60, 200, 96, 7), acts=("relu", "gelu", "softmax"), bias=True, dropout=[0.0, 0.3, 0.1], bs=40),
    # two split layers in a row, both with packed copies of W and the second of W^T
    "two-packed": dict(
        sizes=(784, 128, 256, 10), acts=("relu", "relu", "softmax"), bias=True, dropout=[0.1, 0.2, 0.0], bs=64
    ),
    # the same without dropout on the second's input, the first a gelu (its pre-activation kept
    # for the second's dX): the second reads the first's output straight from the combine
    "two-split": dict(
        sizes=(784, 128, 256, 10), acts=("gelu", "relu", "softmax"), bias=True, dropout=[0.1, 0.0, 0.0], bs=64
    ),
    # three in a row, each split at its own point (152 of 300, 64 of 128, 128 of 256), and a
    # short last batch of 44 rows
    "three-split": dict(
        sizes=(300, 128, 256, 128, 10), acts=("relu", "tanh", "relu", "softmax"), bias=True, dropout=None, bs=64
    ),
    # the first layer's output in blocks of 96 and 104 columns (the second split at 96 of 200):
    # the second block's last micro-panel a partial one
    "blocks-96-104": dict(sizes=(784, 200, 300, 10), acts=("relu", "relu", "softmax"), bias=True, dropout=None, bs=64),
    # a split layer (100x200) above one that is not (64x100): its dX columns must all be done
    # before the layer below's row-local dX (a barrier the layers above do not need)
    "split-above-unsplit": dict(
        sizes=(120, 64, 100, 200, 10), acts=("relu", "relu", "relu", "softmax"), bias=True, dropout=None, bs=48
    ),
}


def train_depth_split(threads, sizes, acts, bias, dropout, bs):
    """3 epochs of 300 rows on a net whose first layer is big enough for the depth
    split of its product; returns its parameters, batch losses and predictions."""
    _core.set_num_threads(threads)
    loss = "sparse_categorical_crossentropy"
    params = init_params(list(sizes), seed=30)
    rng = np.random.default_rng(31)
    x = f32(rng.normal(size=(300, sizes[0])))
    y = rng.integers(0, sizes[-1], size=300).astype(np.int32)
    hp = dict(name="adam", learning_rate=0.003)
    net, arrays = make_network(params, list(acts), loss, False, "sparse", hp, dropout=dropout)
    if not bias:  # the same network without the first layer's bias
        W0 = arrays[0]
        layers = [dict(W=W0, b=None, activation=acts[0], slots=[np.zeros_like(W0), np.zeros_like(W0), None, None])]
        W1, b1 = arrays[2], arrays[3]
        layers.append(
            dict(
                W=W1,
                b=b1,
                activation=acts[1],
                slots=[np.zeros_like(W1), np.zeros_like(W1), np.zeros_like(b1), np.zeros_like(b1)],
            )
        )
        net = _core.Network(layers, loss, False, "sparse", hp)
    nb = -(-300 // bs)
    losses = []
    for epoch in range(3):
        perm = rng.permutation(300).astype(np.int32)
        bl, bc = np.zeros(nb), np.zeros(nb)
        net.train_run(x, y, perm, 0, nb, bs, epoch * nb, 7, bl, bc)
        losses.append(bl)
    return arrays, np.concatenate(losses), net.predict(x), x


@pytest.mark.parametrize("case", list(DEPTH_SPLIT_CASES))
def test_depth_split_first_layer_is_thread_independent(case):
    """The first layer's product is two partial sums over W's rows: one thread
    computes both, two threads one each, three threads share the first part
    between two of them, four both parts. All give the same bits, in training
    and in predict, whose forward pass is checked against the oracle's."""
    kw = DEPTH_SPLIT_CASES[case]
    prev = _core.get_num_threads()
    try:
        runs = [train_depth_split(n, **kw) for n in (1, 2, 3, 4)]
    finally:
        _core.set_num_threads(prev)
    w1, l1, p1, x = runs[0]
    assert np.isfinite(l1).all()
    for w, l, p, _ in runs[1:]:
        np.testing.assert_array_equal(l, l1)
        np.testing.assert_array_equal(p, p1)
        for a, b in zip(w, w1):
            np.testing.assert_array_equal(a, b)
    sizes, acts = kw["sizes"], kw["acts"]
    mlp = ref.MLP(list(zip(sizes[1:], acts)), sizes[0])
    mlp.params = [f64(a) for a in w1]
    if not kw["bias"]:
        mlp.params[1] = np.zeros(sizes[1])
    np.testing.assert_allclose(p1, mlp.forward(f64(x)), rtol=1e-4, atol=1e-6)


def test_depth_split_training_matches_reference(threads):
    """200-96(gelu)-7: the depth-split first layer trains as the oracle does."""
    assert_trains_like_reference(
        [200, 96, 7], ["gelu", "softmax"], dict(name="adam", learning_rate=0.003), n=300, bs=40, epochs=3, seed=32
    )


def test_consecutive_depth_split_layers_train_as_reference(threads):
    """300-128(gelu)-256-128-10: three depth-split layers in a row (forward partials,
    dX by columns, dW by parts, each feeding the next) train as the oracle does."""
    assert_trains_like_reference(
        [300, 128, 256, 128, 10],
        ["gelu", "relu", "tanh", "softmax"],
        dict(name="adam", learning_rate=0.003),
        n=300,
        bs=64,
        epochs=3,
        seed=33,
    )


def test_relu_dropout_backward_reads_the_mask_back_from_the_forward(threads):
    """Under dropout, a ReLU layer's backward takes the mask from its dropped output (nonzero
    exactly where kept, wherever ReLU's derivative is 1) instead of hashing it again; leaky
    ReLU with slope 0 is the same function through the hash. 60-200-96-7 with dropout 0.3 and
    0.2 on the hidden layers' inputs (the 200x96 layer's dX split by columns): the same
    weights either way."""
    sizes, bs, n = [60, 200, 96, 7], 40, 400
    rng = np.random.default_rng(41)
    x = f32(rng.normal(size=(n, sizes[0])))
    y = rng.integers(0, sizes[-1], size=n).astype(np.int32)
    trained = []
    for act in ("relu", "leaky_relu"):
        net, arrays = make_network(
            init_params(sizes, seed=42),
            [act, act, "softmax"],
            "sparse_categorical_crossentropy",
            False,
            "sparse",
            dict(name="adam", learning_rate=0.003),
            dropout=[0.0, 0.3, 0.2],
            alpha=0.0,
        )
        for epoch in range(2):
            perm = np.random.default_rng(epoch).permutation(n).astype(np.int32)
            net.train_run(x, y, perm, 0, n // bs, bs, epoch * (n // bs), 5, np.zeros(n // bs), np.zeros(n // bs))
        trained.append(arrays)
    assert_arrays_equal(*trained)


def test_dropout_changes_training_and_depends_on_seed():
    prev = _core.get_num_threads()
    try:
        w0, _ = train_big(2, None)
        wd, _ = train_big(2, [0.0, 0.2])
        wd2, _ = train_big(2, [0.0, 0.2], seed=99)
    finally:
        _core.set_num_threads(prev)
    assert not np.array_equal(w0[2], wd[2])
    assert not np.array_equal(wd[2], wd2[2])


def test_predict_ignores_dropout():
    params = init_params([30, 20, 5], seed=22)
    x, _ = dataset("sparse_categorical_crossentropy", 40, 30, 5, seed=23)
    hp = dict(name="sgd", learning_rate=0.1)
    a, _ = make_network(
        params, ["relu", "softmax"], "sparse_categorical_crossentropy", False, "sparse", hp, dropout=[0.5, 0.5]
    )
    b, _ = make_network(params, ["relu", "softmax"], "sparse_categorical_crossentropy", False, "sparse", hp)
    np.testing.assert_array_equal(a.predict(x), b.predict(x))
    np.testing.assert_array_equal(a.predict(x), a.predict(x))


@pytest.mark.parametrize("rate", [0.1, 0.2, 0.5])
@pytest.mark.parametrize("layer", [0, 1])
def test_dropout_fraction_and_scale(rate, layer, threads):
    """One SGD step of a net whose update reveals the dropout mask on a layer's input.

    Input all ones, 1000 features; layer 0 is the identity (linear), layer 1 has
    W = 0, b = 0 and one linear unit; MSE against 1 gives dL/dz = -2, so with
    learning rate 1 the dropped input entries leave W = 0 and the kept ones
    become 2 / (1 - rate).
    """
    n_in = 1000
    dropout = [0.0, 0.0]
    dropout[layer] = rate
    W0 = np.eye(n_in, dtype=np.float32)
    params = [W0, np.zeros(n_in), np.zeros((n_in, 1)), np.zeros(1)]
    hp = dict(name="sgd", learning_rate=1.0)
    net, arrays = make_network(params, ["linear", "linear"], "mean_squared_error", False, None, hp, dropout)
    x = np.ones((3, n_in), np.float32)
    y = np.ones((3, 1), np.float32)
    bl, bc = np.zeros(1), np.zeros(1)
    net.train_run(x, y, np.array([2, 0, 1], np.int32), 1, 1, 2, 0, 7, bl, bc)  # batch = row [1]
    assert bl[0] == pytest.approx(1.0)  # (0 - 1)**2 before the update
    w = arrays[2].ravel()
    kept = w != 0
    np.testing.assert_allclose(w[kept], 2.0 / (1.0 - rate), rtol=1e-6)
    dropped = 1 - kept.mean()
    assert abs(dropped - rate) < 5 * np.sqrt(rate * (1 - rate) / n_in) + 1e-3, f"dropped {dropped} for rate {rate}"
    # dL/dz of layer 0 is dz W1^T = 0 (W1 was 0 before the step): layer 0 is untouched
    np.testing.assert_array_equal(arrays[0], W0)


def dropout_mask(layer, n_in, n_rows, row, step, seed, rate):
    """The keep-factors the core applies to ``layer``'s input for dataset ``row`` at ``step`` (1-based).

    Read off a probe network: the layer's input is all ones (layer 1: layer 0 has
    W = 0, b = 1), the layer has W = 0 and one linear unit, MSE against 1: one SGD
    step with learning rate 1 sets W = 2 * factor.
    """
    hp = dict(name="sgd", learning_rate=1.0)
    probe = [np.zeros((n_in, 1)), np.zeros(1)]
    if layer == 1:
        probe = [np.zeros((3, n_in)), np.ones(n_in)] + probe
    net, arrays = make_network(
        probe,
        ["linear"] * (layer + 1),
        "mean_squared_error",
        False,
        None,
        hp,
        dropout=[rate if i == layer else 0.0 for i in range(layer + 1)],
    )
    x = np.ones((n_rows, 3 if layer == 1 else n_in), np.float32)
    perm = np.roll(np.arange(n_rows, dtype=np.int32), -row)  # batch 0 of size 1 = [row]
    net.train_run(x, np.ones((n_rows, 1), np.float32), perm, 0, 1, 1, step - 1, seed, np.zeros(1), np.zeros(1))
    return f64(arrays[-2].ravel()) / 2.0


def test_dropout_backward_matches_masked_reference():
    """One training step with dropout on both layers' inputs equals the oracle's step on masked inputs."""
    rates, seed, step = (0.3, 0.5), 77, 5
    rows = np.array([3, 0, 5, 1])
    n = 6
    params = init_params([10, 8, 3], seed=30)
    x, y = dataset("sparse_categorical_crossentropy", n, 10, 3, seed=31)
    m0 = np.stack([dropout_mask(0, 10, n, r, step, seed, rates[0]) for r in rows])
    m1 = np.stack([dropout_mask(1, 8, n, r, step, seed, rates[1]) for r in rows])
    for m, rate in ((m0, rates[0]), (m1, rates[1])):
        assert np.all((m == 0) | np.isclose(m, 1 / (1 - rate), rtol=1e-6)) and (m == 0).any() and (m != 0).any()
    hp = dict(name="sgd", learning_rate=0.5)
    net, arrays = make_network(
        params, ["tanh", "softmax"], "sparse_categorical_crossentropy", False, "sparse", hp, dropout=list(rates)
    )
    perm = np.concatenate([rows, [2, 4]]).astype(np.int32)
    bl = np.zeros(1)
    net.train_run(x, y, perm, 0, 1, 4, step - 1, seed, bl, np.zeros(1))
    # the oracle on the masked batch, by hand
    W0, b0, W1, b1 = params
    xb = f64(x[rows]) * m0
    z0 = xb @ W0 + b0
    h = np.tanh(z0) * m1
    z1 = h @ W1 + b1
    value, dz1 = ref.softmax_cross_entropy_grad(z1, y[rows])
    dz0 = (dz1 @ W1.T) * m1 * (1 - np.tanh(z0) ** 2)
    want = [W0 - 0.5 * xb.T @ dz0, b0 - 0.5 * dz0.sum(0), W1 - 0.5 * h.T @ dz1, b1 - 0.5 * dz1.sum(0)]
    assert bl[0] == pytest.approx(value * 4, rel=1e-5)
    for i, (w, w_ref) in enumerate(zip(arrays, want)):
        np.testing.assert_allclose(w, w_ref, rtol=1e-5, atol=1e-6, err_msg=f"param {i}")


def test_dropout_on_a_depth_split_layer_matches_masked_reference():
    """Dropout on the input of a depth-split hidden layer (160x128, parts [0, 80) and
    [80, 160) of W's rows): its dX is computed by columns, each half with the dropout
    keys of its absolute columns; one step equals the oracle's on masked inputs."""
    rate, seed, step = 0.3, 78, 3
    rows = np.array([2, 0, 3])
    n = 5
    params = init_params([12, 160, 128, 3], seed=35)
    x, y = dataset("sparse_categorical_crossentropy", n, 12, 3, seed=36)
    m1 = np.stack([dropout_mask(1, 160, n, r, step, seed, rate) for r in rows])
    assert (m1[:, :80] == 0).any() and (m1[:, 80:] == 0).any() and (m1 != 0).any()
    hp = dict(name="sgd", learning_rate=0.5)
    net, arrays = make_network(
        params,
        ["tanh", "tanh", "softmax"],
        "sparse_categorical_crossentropy",
        False,
        "sparse",
        hp,
        dropout=[0.0, rate, 0.0],
    )
    perm = np.concatenate([rows, [1, 4]]).astype(np.int32)
    bl = np.zeros(1)
    net.train_run(x, y, perm, 0, 1, 3, step - 1, seed, bl, np.zeros(1))
    W0, b0, W1, b1, W2, b2 = params
    xb = f64(x[rows])
    z0 = xb @ W0 + b0
    h0 = np.tanh(z0) * m1
    z1 = h0 @ W1 + b1
    h1 = np.tanh(z1)
    value, dz2 = ref.softmax_cross_entropy_grad(h1 @ W2 + b2, y[rows])
    dz1 = (dz2 @ W2.T) * (1 - h1**2)
    dz0 = (dz1 @ W1.T) * m1 * (1 - np.tanh(z0) ** 2)
    want = [
        W0 - 0.5 * xb.T @ dz0,
        b0 - 0.5 * dz0.sum(0),
        W1 - 0.5 * h0.T @ dz1,
        b1 - 0.5 * dz1.sum(0),
        W2 - 0.5 * h1.T @ dz2,
        b2 - 0.5 * dz2.sum(0),
    ]
    assert bl[0] == pytest.approx(value * 3, rel=1e-5)
    for i, (w, w_ref) in enumerate(zip(arrays, want)):
        np.testing.assert_allclose(w, w_ref, rtol=1e-5, atol=1e-6, err_msg=f"param {i}")


# (layer sizes, batch size): a layer of one thread's rows, odd sizes, a depth-split first
# layer, and two depth-split layers in a row (the first's output in column blocks)
LOSS_STOP_CASES = [([7, 33, 3], 1), ([33, 1000, 1], 7), ([784, 100, 3], 33), ([784, 128, 128, 3], 31)]


@pytest.mark.parametrize("sizes,batch", LOSS_STOP_CASES, ids=["-".join(map(str, c[0])) for c in LOSS_STOP_CASES])
def test_train_run_stops_after_the_first_nonfinite_loss(sizes, batch, threads):
    """stop_nonfinite_loss (Keras' TerminateOnNaN): the run ends right after the update of
    the first batch whose loss is NaN or infinite, and returns the batches trained."""
    acts = ["relu"] * (len(sizes) - 2) + ["linear"]
    rng = np.random.default_rng(1)
    n, runs = batch * 12, 12
    x, y = f32(rng.normal(size=(n, sizes[0]))), f32(rng.normal(size=(n, sizes[-1])))
    perm = rng.permutation(n).astype(np.int32)

    def train(n_batches, stop):
        # SGD at learning rate 1000 on MSE: the loss overflows to inf or NaN within a few batches
        net, arrays = make_network(
            init_params(sizes, seed=2), acts, "mean_squared_error", False, None, dict(name="sgd", learning_rate=1e3)
        )
        losses = np.zeros(runs)
        done = net.train_run(x, y, perm, 0, n_batches, batch, 0, 0, losses, np.zeros(runs), 0, stop)
        assert net.steps_done == done
        return done, losses, arrays

    done, losses, weights = train(runs, True)
    full, all_losses, _ = train(runs, False)
    assert full == runs  # without the flag a run trains on, whatever its losses
    first_bad = int(np.flatnonzero(~np.isfinite(all_losses))[0])
    assert 0 < first_bad < runs - 1
    assert done == first_bad + 1
    np.testing.assert_array_equal(losses[:done], all_losses[:done])
    assert not losses[done:].any()  # nothing written past the stop
    _, _, want = train(done, False)  # the stopping batch's update is applied, as in Keras
    for got, exp in zip(weights, want):
        np.testing.assert_array_equal(got, exp)


def test_training_state_does_not_depend_on_how_runs_are_cut(threads):
    """784-128-128-10 with Adam: during a run, both big layers keep W's values in packed
    copies (written back at the run's end) and the first layer's output in column blocks.
    Runs of 1, 4, 1 and 6 batches; a network whose arrays, slots included, are overwritten
    between runs (as loading a model does); and a run stopped by a NaN in batch 5's images:
    W, b and every slot are those of one uninterrupted run, bit for bit."""
    sizes, acts, bs, n_batches = [784, 128, 128, 10], ["relu", "relu", "softmax"], 16, 12
    rng = np.random.default_rng(21)
    x = f32(rng.random((bs * n_batches, 784)))
    y = rng.integers(0, 10, size=bs * n_batches).astype(np.int32)
    perm = rng.permutation(bs * n_batches).astype(np.int32)

    def network():
        return make_network(
            init_params(sizes, seed=22),
            acts,
            "sparse_categorical_crossentropy",
            False,
            "sparse",
            dict(name="adam", learning_rate=0.01),
            with_slots=True,
        )

    def train(net, cuts, start=0, x=x):
        for done, n in zip(start + np.cumsum([0] + cuts), cuts):
            net.train_run(x, y, perm, int(done), n, bs, int(done), 3, np.zeros(n_batches), np.zeros(n_batches))

    net, whole = network()
    train(net, [n_batches])
    assert np.abs(whole[2]).max() > 0  # the first layer's Adam slots are trained
    net, cut = network()
    train(net, [1, 4, 1, 6])
    assert_arrays_equal(cut, whole)

    net, loaded = network()
    train(net, [3])
    other, six = network()
    train(other, [6])
    for a, b in zip(loaded, six):
        np.copyto(a, b)
    train(net, [n_batches - 6], start=6)
    assert_arrays_equal(loaded, whole)

    x_bad = x.copy()
    x_bad[perm[5 * bs + 3], 100] = np.nan
    net, stopped = network()
    with pytest.raises(_core.NonFiniteInputError) as err:
        train(net, [n_batches], x=x_bad)
    assert err.value.trained == 5
    net, five = network()
    train(net, [5])
    assert_arrays_equal(stopped, five)


# ---------------------------------------------------------------- validation


def _net_and_data(loss="sparse_categorical_crossentropy", n=10):
    params = init_params([4, 3], seed=0)
    net, arrays = make_network(params, ["softmax"], loss, False, "sparse", dict(name="sgd", learning_rate=0.1))
    x, y = dataset(loss, n, 4, 3, seed=0)
    return net, arrays, x, y


def _train(**over):
    net, arrays, x, y = _net_and_data()
    kw = dict(
        x=x,
        y=y,
        perm=np.arange(10, dtype=np.int32),
        first=0,
        n_batches=2,
        batch_size=5,
        step0=0,
        seed=0,
        batch_loss=np.zeros(2),
        batch_correct=np.zeros(2),
    )
    kw.update(over)
    before = [a.copy() for a in arrays]
    try:
        net.train_run(
            kw["x"],
            kw["y"],
            kw["perm"],
            kw["first"],
            kw["n_batches"],
            kw["batch_size"],
            kw["step0"],
            kw["seed"],
            kw["batch_loss"],
            kw["batch_correct"],
        )
    finally:
        for a, b in zip(arrays, before):  # a refused call changes nothing
            np.testing.assert_array_equal(a, b)


def _ro(a):
    a = a.copy()
    a.flags.writeable = False
    return a


def _layer(**over):
    d = dict(W=np.zeros((4, 3), np.float32), b=np.zeros(3, np.float32), activation="relu", dropout=0.0)
    d.update(over)
    return d


def _network(layers=None, loss="sparse_categorical_crossentropy", metric="sparse", opt=None):
    return _core.Network(
        [_layer()] if layers is None else layers, loss, False, metric, opt or dict(name="sgd", learning_rate=0.1)
    )


X = np.ones((5, 4), np.float32)
W = np.ones((4, 3), np.float32)
B = np.ones(3, np.float32)
Y3 = np.ones((5, 3), np.float32)
P3 = np.full((5, 3), 1 / 3, np.float32)
L5 = np.zeros(5, np.int32)
FORTRAN = np.asfortranarray(np.ones((4, 3), np.float32))

BAD_CALLS = {
    # gemm
    "gemm-a-float64": (lambda: _core.gemm(np.ones((2, 2)), W), TypeError, "`a`"),
    "gemm-b-int": (lambda: _core.gemm(X, np.ones((4, 2), np.int32)), TypeError, "`b`"),
    "gemm-a-list": (lambda: _core.gemm([[1.0]], W), TypeError, "`a`"),
    "gemm-a-strided": (lambda: _core.gemm(np.ones((3, 8), np.float32)[:, ::2], W), ValueError, "`a`"),
    "gemm-b-fortran": (lambda: _core.gemm(np.ones((2, 4), np.float32), FORTRAN), ValueError, "`b`"),
    "gemm-a-rank1": (lambda: _core.gemm(np.ones(4, np.float32), W), ValueError, "`a`"),
    "gemm-a-rank3": (lambda: _core.gemm(np.ones((1, 2, 4), np.float32), W), ValueError, "`a`"),
    "gemm-inner": (lambda: _core.gemm(np.ones((2, 5), np.float32), W), ValueError, "`a`"),
    # dense_forward
    "fwd-x-float64": (lambda: _core.dense_forward(np.ones((5, 4)), W, B), TypeError, "`x`"),
    "fwd-W-int": (lambda: _core.dense_forward(X, np.ones((4, 3), np.int64), B), TypeError, "`W`"),
    "fwd-b-float64": (lambda: _core.dense_forward(X, W, np.ones(3)), TypeError, "`b`"),
    "fwd-b-shape": (lambda: _core.dense_forward(X, W, np.ones(4, np.float32)), ValueError, "`b`"),
    "fwd-b-rank": (lambda: _core.dense_forward(X, W, np.ones((1, 3), np.float32)), ValueError, "`b`"),
    "fwd-x-shape": (lambda: _core.dense_forward(np.ones((5, 3), np.float32), W, B), ValueError, "`x`"),
    "fwd-x-strided": (lambda: _core.dense_forward(np.ones((5, 8), np.float32)[:, ::2], W, B), ValueError, "`x`"),
    "fwd-W-fortran": (lambda: _core.dense_forward(X, FORTRAN, B), ValueError, "`W`"),
    "fwd-x-rank3": (lambda: _core.dense_forward(np.ones((5, 4, 1), np.float32), W, B), ValueError, "`x`"),
    "fwd-activation": (lambda: _core.dense_forward(X, W, B, "celu"), ValueError, "activation"),
    # dense_backward
    "bwd-a-shape": (lambda: _core.dense_backward(X, W, np.ones((5, 4), np.float32), Y3, "relu"), ValueError, "`a`"),
    "bwd-dy-dtype": (lambda: _core.dense_backward(X, W, Y3, np.ones((5, 3)), "relu"), TypeError, "`dy`"),
    "bwd-dy-shape": (lambda: _core.dense_backward(X, W, Y3, np.ones((4, 3), np.float32), "relu"), ValueError, "`dy`"),
    "bwd-dy-strided": (
        lambda: _core.dense_backward(X, W, Y3, np.ones((5, 6), np.float32)[:, ::2], "relu"),
        ValueError,
        "`dy`",
    ),
    "bwd-x-shape": (lambda: _core.dense_backward(np.ones((5, 2), np.float32), W, Y3, Y3, "relu"), ValueError, "`x`"),
    "bwd-activation": (lambda: _core.dense_backward(X, W, Y3, Y3, "celu"), ValueError, "activation"),
    # loss_forward_backward
    "loss-name": (lambda: _core.loss_forward_backward("dice", P3, P3, L5), ValueError, "loss"),
    "loss-activation": (
        lambda: _core.loss_forward_backward("mean_squared_error", P3, P3, Y3, activation="celu"),
        ValueError,
        "activation",
    ),
    "loss-metric": (
        lambda: _core.loss_forward_backward("mean_squared_error", P3, P3, Y3, metric="auc"),
        ValueError,
        "metric",
    ),
    "loss-y-float": (
        lambda: _core.loss_forward_backward("sparse_categorical_crossentropy", P3, P3, np.zeros(5, np.float32)),
        TypeError,
        "`y`",
    ),
    "loss-y-int64": (
        lambda: _core.loss_forward_backward("sparse_categorical_crossentropy", P3, P3, np.zeros(5, np.int64)),
        TypeError,
        "`y`",
    ),
    "loss-y-negative": (
        lambda: _core.loss_forward_backward(
            "sparse_categorical_crossentropy", P3, P3, np.array([0, 1, -1, 0, 0], np.int32)
        ),
        ValueError,
        "`y`",
    ),
    "loss-y-too-big": (
        lambda: _core.loss_forward_backward(
            "sparse_categorical_crossentropy", P3, P3, np.array([0, 1, 3, 0, 0], np.int32)
        ),
        ValueError,
        "`y`",
    ),
    "loss-y-count": (
        lambda: _core.loss_forward_backward("sparse_categorical_crossentropy", P3, P3, np.zeros(4, np.int32)),
        ValueError,
        "`y`",
    ),
    "loss-y-dense-shape": (
        lambda: _core.loss_forward_backward("categorical_crossentropy", P3, P3, np.ones((5, 2), np.float32)),
        ValueError,
        "`y`",
    ),
    "loss-z-shape": (
        lambda: _core.loss_forward_backward("mean_squared_error", P3, np.ones((5, 2), np.float32), Y3),
        ValueError,
        "`z`",
    ),
    "loss-output-float64": (
        lambda: _core.loss_forward_backward("mean_squared_error", np.ones((5, 3)), P3, Y3),
        TypeError,
        "`output`",
    ),
    "loss-output-strided": (
        lambda: _core.loss_forward_backward("mean_squared_error", np.ones((5, 6), np.float32)[:, ::2], P3, Y3),
        ValueError,
        "`output`",
    ),
    "loss-empty": (
        lambda: _core.loss_forward_backward(
            "mean_squared_error", np.ones((0, 3), np.float32), np.ones((0, 3), np.float32), np.ones((0, 3), np.float32)
        ),
        ValueError,
        "`output`",
    ),
    # optimizer_update
    "opt-name": (
        lambda: _core.optimizer_update(dict(name="lamb"), W.copy(), W, None, None, 1),
        ValueError,
        "optimizer",
    ),
    "opt-w-readonly": (lambda: _core.optimizer_update(dict(name="sgd"), _ro(W), W, None, None, 1), ValueError, "`w`"),
    "opt-w-float64": (
        lambda: _core.optimizer_update(dict(name="sgd"), np.ones((4, 3)), W, None, None, 1),
        TypeError,
        "`w`",
    ),
    "opt-g-shape": (
        lambda: _core.optimizer_update(dict(name="sgd"), W.copy(), np.ones((3, 4), np.float32), None, None, 1),
        ValueError,
        "`g`",
    ),
    "opt-g-strided": (
        lambda: _core.optimizer_update(dict(name="sgd"), W.copy(), np.ones((4, 6), np.float32)[:, ::2], None, None, 1),
        ValueError,
        "`g`",
    ),
    "opt-slot1-readonly": (
        lambda: _core.optimizer_update(dict(name="adagrad"), W.copy(), W, _ro(W), None, 1),
        ValueError,
        "`slot1`",
    ),
    "opt-slot2-dtype": (
        lambda: _core.optimizer_update(dict(name="adam"), W.copy(), W, W.copy(), np.ones((4, 3)), 1),
        TypeError,
        "`slot2`",
    ),
    "opt-slot2-shape": (
        lambda: _core.optimizer_update(dict(name="adam"), W.copy(), W, W.copy(), np.ones((3, 4), np.float32), 1),
        ValueError,
        "`slot2`",
    ),
    "opt-slot-missing": (
        lambda: _core.optimizer_update(dict(name="adam"), W.copy(), W, W.copy(), None, 1),
        ValueError,
        "slot",
    ),
    "opt-step": (lambda: _core.optimizer_update(dict(name="sgd"), W.copy(), W, None, None, 0), ValueError, "`step`"),
    # Network
    "net-empty": (lambda: _network(layers=[]), ValueError, "`layers`"),
    "net-W-float64": (lambda: _network([_layer(W=np.zeros((4, 3)))]), TypeError, "layers[0].W"),
    "net-W-readonly": (lambda: _network([_layer(W=_ro(W))]), ValueError, "layers[0].W"),
    "net-W-fortran": (
        lambda: _network([_layer(W=np.asfortranarray(np.zeros((4, 3), np.float32)))]),
        ValueError,
        "layers[0].W",
    ),
    "net-W-chain": (lambda: _network([_layer(), _layer()]), ValueError, "layers[1].W"),
    "net-b-shape": (lambda: _network([_layer(b=np.zeros(4, np.float32))]), ValueError, "layers[0].b"),
    "net-b-readonly": (lambda: _network([_layer(b=_ro(B))]), ValueError, "layers[0].b"),
    "net-dropout": (lambda: _network([_layer(dropout=1.0)]), ValueError, "dropout"),
    "net-dropout-negative": (lambda: _network([_layer(dropout=-0.1)]), ValueError, "dropout"),
    "net-slot-shape": (
        lambda: _network([_layer(slots=[np.zeros((3, 4), np.float32)])]),
        ValueError,
        "layers[0].slots[0]",
    ),
    "net-slot-readonly": (lambda: _network([_layer(slots=[None, _ro(W)])]), ValueError, "layers[0].slots[1]"),
    "net-activation": (lambda: _network([_layer(activation="celu")]), ValueError, "activation"),
    "net-loss": (lambda: _network(loss="dice"), ValueError, "loss"),
    "net-metric": (lambda: _network(metric="f1"), ValueError, "metric"),
    "net-optimizer": (lambda: _network(opt=dict(name="lion")), ValueError, "optimizer"),
    # train_run
    "train-x-float64": (lambda: _train(x=np.ones((10, 4))), TypeError, "`x`"),
    "train-x-shape": (lambda: _train(x=np.ones((10, 5), np.float32)), ValueError, "`x`"),
    "train-x-fortran": (lambda: _train(x=np.asfortranarray(np.ones((10, 4), np.float32))), ValueError, "`x`"),
    "train-y-dtype": (lambda: _train(y=np.zeros(10, np.int64)), TypeError, "`y`"),
    "train-y-negative": (lambda: _train(y=np.array([0] * 9 + [-1], np.int32)), ValueError, "`y`"),
    "train-y-units": (lambda: _train(y=np.array([0] * 9 + [3], np.int32)), ValueError, "`y`"),
    "train-perm-dtype": (lambda: _train(perm=np.arange(10)), TypeError, "`perm`"),
    "train-perm-length": (lambda: _train(perm=np.arange(9, dtype=np.int32)), ValueError, "`perm`"),
    "train-perm-too-big": (
        lambda: _train(perm=np.array([0, 1, 2, 3, 4, 5, 6, 7, 8, 10], np.int32)),
        ValueError,
        "`perm`",
    ),
    "train-perm-negative": (
        lambda: _train(perm=np.array([-1, 1, 2, 3, 4, 5, 6, 7, 8, 9], np.int32)),
        ValueError,
        "`perm`",
    ),
    "train-batch-size-0": (lambda: _train(batch_size=0), ValueError, "batch_size"),
    "train-batch-size-negative": (lambda: _train(batch_size=-3), ValueError, "batch_size"),
    "train-n-batches": (lambda: _train(n_batches=3), ValueError, "n_batches"),
    "train-first": (lambda: _train(first=-1), ValueError, "first"),
    "train-loss-dtype": (lambda: _train(batch_loss=np.zeros(2, np.float32)), TypeError, "`batch_loss`"),
    "train-loss-readonly": (lambda: _train(batch_loss=_ro(np.zeros(2))), ValueError, "`batch_loss`"),
    "train-correct-short": (lambda: _train(batch_correct=np.zeros(1)), ValueError, "`batch_correct`"),
    # predict
    "predict-batch-size": (
        lambda: _net_and_data()[0].predict(_net_and_data()[2], batch_size=0),
        ValueError,
        "batch_size",
    ),
    "predict-x-int": (lambda: _net_and_data()[0].predict(np.ones((3, 4), np.int32)), TypeError, "`x`"),
    "predict-x-shape": (lambda: _net_and_data()[0].predict(np.ones((3, 5), np.float32)), ValueError, "`x`"),
    "predict-y-range": (
        lambda: _net_and_data()[0].predict(np.ones((3, 4), np.float32), y=np.array([0, 3, 1], np.int32)),
        ValueError,
        "`y`",
    ),
    # configuration
    "simd-name": (lambda: _core.simd_select("sse9"), ValueError, "sse9"),
}


@pytest.mark.parametrize("name", list(BAD_CALLS))
def test_bad_arguments_raise_naming_the_argument(name):
    call, exc, needle = BAD_CALLS[name]
    with pytest.raises(exc) as info:
        call()
    assert needle in str(info.value), f"message does not name {needle}: {info.value}"


def test_read_only_inputs_are_accepted():
    """Arrays the core only reads may be read-only."""
    x, W, b = (_ro(a) for a in dense_inputs((5, 4, 3), seed=0))
    y, _ = _core.dense_forward(x, W, b, "relu")
    np.testing.assert_allclose(y, np.maximum(f64(x) @ f64(W) + f64(b), 0), rtol=1e-5, atol=1e-6)
    assert _core.gemm(x, W).shape == (5, 3)
    net, arrays, xs, ys = _net_and_data()
    before = arrays[0].copy()
    net.train_run(_ro(xs), _ro(ys), _ro(np.arange(10, dtype=np.int32)), 0, 2, 5, 0, 0, np.zeros(2), np.zeros(2))
    assert not np.array_equal(arrays[0], before)
    assert net.predict(_ro(xs)).shape == (10, 3)


def test_unsupported_simd_path_raises_and_keeps_selection():
    before = _core.build_info()["simd_selected"]
    for path in INFO["simd_compiled"]:
        if path not in SIMD_PATHS:
            with pytest.raises(ValueError, match=path):
                _core.simd_select(path)
    assert _core.build_info()["simd_selected"] == before


# Calls whose labels do not fit the metric: the core must refuse them (or at least
# not crash). Run in a child process so that a crash fails one test, not the run.
MISMATCH_CALLS = {
    "sparse-labels-categorical-metric": """
        o = np.full((2, 3), 1 / 3, np.float32)
        _core.loss_forward_backward("sparse_categorical_crossentropy", o, o.copy(), np.zeros(2, np.int32),
                                    metric="categorical")""",
    "sparse-labels-binary-metric": """
        o = np.full((2, 3), 1 / 3, np.float32)
        _core.loss_forward_backward("sparse_categorical_crossentropy", o, o.copy(), np.zeros(2, np.int32),
                                    metric="binary")""",
    "dense-labels-sparse-metric": """
        o = np.full((2, 3), 1 / 3, np.float32)
        _core.loss_forward_backward("categorical_crossentropy", o, o.copy(), np.eye(3, dtype=np.float32)[[2, 1]],
                                    metric="sparse")""",
    "network-sparse-labels-categorical-metric": """
        W = np.zeros((4, 3), np.float32)
        net = _core.Network([dict(W=W, b=None, activation="softmax")], "sparse_categorical_crossentropy",
                            False, "categorical", dict(name="sgd", learning_rate=0.1))
        x = np.ones((4, 4), np.float32)
        net.train_run(x, np.zeros(4, np.int32), np.arange(4, dtype=np.int32), 0, 1, 4, 0, 0,
                      np.zeros(1), np.zeros(1))""",
}


@pytest.mark.parametrize("name", list(MISMATCH_CALLS))
def test_metric_label_mismatch_is_refused(name):
    script = "import numpy as np\nfrom cdnn import _core\n" + textwrap.dedent(f"""
        try:
{textwrap.indent(textwrap.dedent(MISMATCH_CALLS[name]).strip(), " " * 12)}
        except (TypeError, ValueError) as e:
            print("RAISED", e)
        else:
            print("ACCEPTED")
        """)
    r = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert r.returncode == 0, f"the interpreter died (exit code {r.returncode}): {r.stderr[-500:]}"
    assert r.stdout.startswith("RAISED") and "metric" in r.stdout, (
        f"a metric that does not fit the labels was not refused with a message naming `metric`: {r.stdout}"
    )


# ---------------------------------------------------------------- configuration


def test_build_info():
    info = _core.build_info()
    expected = {
        "compiler": str,
        "flags": str,
        "openmp": bool,
        "openmp_version": int,
        "simd_compiled": list,
        "simd_supported": list,
        "simd_selected": str,
        "micro_kernel": str,
        "threads": int,
    }
    assert set(expected) <= set(info)
    for k, t in expected.items():
        assert isinstance(info[k], t), f"{k}: {type(info[k]).__name__}"
    assert info["compiler"] and info["compiler"] != ""
    assert "generic" in info["simd_compiled"] and "generic" in info["simd_supported"]
    assert set(info["simd_supported"]) <= set(info["simd_compiled"])
    assert info["simd_selected"] in info["simd_supported"]
    mr, nr = info["micro_kernel"].split("x")
    assert int(mr) > 0 and int(nr) > 0
    assert info["threads"] == _core.get_num_threads() >= 1
    assert (info["openmp_version"] > 0) == info["openmp"]


def test_auto_selects_the_best_supported_path():
    _core.simd_select("generic")
    try:
        assert _core.build_info()["simd_selected"] == "generic"
    finally:
        _core.simd_select("auto")
    info = _core.build_info()
    assert info["simd_selected"] == info["simd_supported"][0]  # compiled lists the best first


def test_set_num_threads_round_trip():
    prev = _core.get_num_threads()
    try:
        for n in (1, 2, 3, 1):
            _core.set_num_threads(n)
            assert _core.get_num_threads() == (n if INFO["openmp"] else 1)
            assert _core.build_info()["threads"] == _core.get_num_threads()
        _core.set_num_threads(0)  # back to OpenMP's default
        assert _core.get_num_threads() >= 1
    finally:
        _core.set_num_threads(prev)


# ---- finiteness scan of the inputs ------------------------------------------------------

FINITE_SIZES = [1, 3, 7, 33, 784, 1000, (1 << 16) + 1, 5 * (1 << 16) + 7]  # incl. several scan blocks


@pytest.mark.parametrize("n", FINITE_SIZES)
def test_all_finite_matches_numpy(n, threads):
    rng = np.random.default_rng(n)
    x = rng.standard_normal(n).astype(np.float32) * np.float32(1e30)
    assert _core.all_finite(x) is True
    for pos in sorted({0, n // 2, n - 1}):
        for bad in (np.nan, np.inf, -np.inf):
            y = x.copy()
            y[pos] = bad
            assert _core.all_finite(y) is False, (pos, bad)


def test_all_finite_edge_values():
    tiny = np.float32(1e-45)  # the smallest denormal
    x = np.array([np.finfo(np.float32).max, -np.finfo(np.float32).max, tiny, -0.0, 0.0], np.float32)
    assert _core.all_finite(x) is True
    assert _core.all_finite(np.zeros((0, 784), np.float32)) is True
    assert _core.all_finite(np.ones((3, 4, 5), np.float32)) is True  # any shape
    quiet_nan_payload = np.array([0x7FC00001, 0xFF800000], np.uint32).view(np.float32)
    assert _core.all_finite(quiet_nan_payload[:1]) is False and _core.all_finite(quiet_nan_payload[1:]) is False


def test_all_finite_refuses_wrong_inputs():
    with pytest.raises(TypeError, match="float32"):
        _core.all_finite(np.zeros(4, np.float64))
    with pytest.raises(TypeError, match="numpy.ndarray"):
        _core.all_finite([1.0, 2.0])
    with pytest.raises(ValueError, match="C-contiguous"):
        _core.all_finite(np.zeros((4, 4), np.float32)[:, ::2])


def test_predict_chunks_do_not_race(threads):
    """Without labels, inference has no barrier between chunks: a thread one chunk ahead
    must not overwrite rows another thread still reads (the short last chunk included)."""
    rng = np.random.default_rng(5)
    params = [rng.standard_normal((784, 256)) * 0.05, np.zeros(256), rng.standard_normal((256, 10)) * 0.1, np.zeros(10)]
    net, _ = make_network(
        params,
        ["relu", "softmax"],
        "sparse_categorical_crossentropy",
        False,
        "sparse",
        dict(name="sgd", learning_rate=0.01, momentum=0.0, nesterov=False),
    )
    x = f32(rng.random((64 * 16 + 13, 784)))
    _core.set_num_threads(1)
    want = net.predict(x, batch_size=64)
    _core.set_num_threads(threads)
    for _ in range(150):
        np.testing.assert_array_equal(net.predict(x, batch_size=64), want)


def test_training_bit_identical_with_packed_weights_and_learned_split():
    """A net whose layers keep packed copies of W and W^T (784x128: units a multiple of 64;
    128x256 for dX), trained long enough for the thread split to be learned and to move:
    1 and 2 threads, several reruns, must give the same bits (a stale or torn split once
    updated some row panels twice)."""
    prev = _core.get_num_threads()
    sizes, acts = [784, 128, 256, 10], ["relu", "relu", "softmax"]
    rng = np.random.default_rng(8)
    x = f32(rng.random((2048, 784)))
    y = rng.integers(0, 10, size=2048).astype(np.int32)
    results = []
    try:
        for threads in (1, 2, 2, 2, 2):
            _core.set_num_threads(threads)
            net, arrays = make_network(
                init_params(sizes, seed=9),
                acts,
                "sparse_categorical_crossentropy",
                False,
                "sparse",
                dict(name="adam", learning_rate=0.001),
            )
            bl, bc = np.zeros(32), np.zeros(32)
            for epoch in range(4):
                perm = np.random.default_rng(epoch).permutation(2048).astype(np.int32)
                net.train_run(x, y, perm, 0, 32, 64, epoch * 32, 7, bl, bc)
            results.append([a.copy() for a in arrays] + [bl.copy()])
    finally:
        _core.set_num_threads(prev)
    for other in results[1:]:
        for a, b in zip(results[0], other):
            assert np.array_equal(a, b)
