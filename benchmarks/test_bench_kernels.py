"""cdnn's C kernels against the same operations in NumPy, one call per timed iteration.

- "dense 32x784->100 relu": the fused forward (GEMM + bias + ReLU) and the
  backward (ReLU mask, dW = xᵀ·dz, db = Σ dz; no dx, as for a first layer)
  against NumPy's ``x @ W + b``, ``np.maximum``, ``dy * (z > 0)``, ``x.T @ dz``,
  ``dz.sum(0)``. FLOPs: the two products, ``2 · 2·m·k·n``.
- "GEMM MxKxN": ``cdnn._core.gemm`` against ``numpy.matmul`` (both allocate
  their output), the shapes training actually runs. FLOPs ``2·m·k·n``.
- "Adam update 784x512": one optimizer step over a 784×512 kernel, in place,
  against the vectorised NumPy Adam of `tests/reference.py`. No FLOPs recorded
  (memory-bound); ``extra_info["bytes"]`` = 7 float32 streams (read w, g, m, v,
  write w, m, v).
- "sgemm-peak": NumPy's ``matmul`` and cdnn's GEMM of two 2048×2048 float32
  matrices (1024 under ``--quick``), on 1, 2 and all cores' threads: the
  machine's practical SGEMM peak at each thread count (the faster of the two),
  which ``report.py`` divides every row's GFLOP/s by (a 1-thread row by the
  1-thread peak).
"""

from __future__ import annotations

import numpy as np
import pytest

KERNEL_SEED = 1


def _rand(rng, *shape):
    return rng.standard_normal(shape, dtype=np.float32)


def _iterations(settings, flops, target=0.05):
    """Calls per round so that a round lasts about ``target`` s at ~10 GFLOP/s."""
    if settings.quick:
        return max(1, min(20, int(1e9 * target / 5 / max(flops, 1))))
    return max(1, int(10e9 * target / max(flops, 1)))


# ---- fused dense layer -----------------------------------------------------------------


def _dense_cdnn(x, W, b, dy):
    from cdnn import _core

    def call():
        y, _ = _core.dense_forward(x, W, b, "relu")
        return _core.dense_backward(x, W, y, dy, "relu", need_dx=False)

    return call


def _dense_numpy(x, W, b, dy):
    def call():
        z = x @ W + b
        a = np.maximum(z, 0)
        dz = dy * (z > 0)
        return a, x.T @ dz, dz.sum(axis=0)

    return call


@pytest.mark.parametrize("contender", ["cdnn", "numpy"])
def test_dense_forward_backward(run, settings, contender):
    m, k, n = 32, 784, 100
    rng = np.random.default_rng(KERNEL_SEED)
    x, W, b, dy = _rand(rng, m, k), _rand(rng, k, n) * 0.05, _rand(rng, n), _rand(rng, m, n)
    flops = 2 * (2 * m * k * n)
    call = {"cdnn": _dense_cdnn, "numpy": _dense_numpy}[contender](x, W, b, dy)
    run(
        call,
        group=f"dense {m}x{k}->{n} relu fwd+bwd",
        contender=contender,
        reference=contender == "cdnn",
        flops=flops,
        samples=m,
        iterations=_iterations(settings, flops),
        unit="call",
    )


# ---- GEMM ---------------------------------------------------------------------------

GEMM_SHAPES = [(32, 784, 100), (128, 784, 512), (128, 512, 256)]


@pytest.mark.parametrize("contender", ["cdnn", "numpy"])
@pytest.mark.parametrize("shape", GEMM_SHAPES, ids=[f"{m}x{k}x{n}" for m, k, n in GEMM_SHAPES])
def test_gemm(run, settings, shape, contender):
    from cdnn import _core

    m, k, n = shape
    rng = np.random.default_rng(KERNEL_SEED)
    a, b = _rand(rng, m, k), _rand(rng, k, n)
    fn = {"cdnn": _core.gemm, "numpy": np.matmul}[contender]
    flops = 2 * m * k * n
    run(
        lambda: fn(a, b),
        group=f"GEMM {m}x{k}x{n}",
        contender=contender,
        reference=contender == "cdnn",
        flops=flops,
        iterations=_iterations(settings, flops),
        unit="call",
    )


# ---- optimizer update -----------------------------------------------------------------


@pytest.mark.parametrize("contender", ["cdnn", "numpy"])
def test_adam_update(run, settings, contender):
    import reference

    from cdnn import _core

    rng = np.random.default_rng(KERNEL_SEED)
    shape = (784, 512)
    w, g = _rand(rng, *shape), _rand(rng, *shape) * 1e-2
    if contender == "cdnn":
        m, v = np.zeros_like(w), np.zeros_like(w)
        hp = dict(name="adam", learning_rate=1e-3, beta_1=0.9, beta_2=0.999, epsilon=1e-7)
        step = [0]

        def call():
            step[0] += 1
            _core.optimizer_update(hp, w, g, m, v, step[0])
    else:
        opt = reference.Adam(learning_rate=1e-3, epsilon=1e-7)

        def call():
            opt.step([w], [g])

    iterations = 5 if settings.quick else 200
    # One thread for both, and said so: _core.optimizer_update and NumPy's ufuncs are
    # single-threaded (in fit, each thread of the team updates its own rows of a gradient).
    run(
        call,
        group=f"Adam update {shape[0]}x{shape[1]}",
        contender=contender,
        threads=1,
        reference=contender == "cdnn",
        bytes=7 * 4 * w.size,
        iterations=iterations,
        unit="call",
    )


# ---- the machine's SGEMM peak -------------------------------------------------------------


@pytest.mark.parametrize("contender", ["numpy", "cdnn"])
def test_sgemm_peak(run, settings, contender, peak_threads):
    from cdnn import _core

    n = 1024 if settings.quick else 2048
    rng = np.random.default_rng(KERNEL_SEED)
    a, b = _rand(rng, n, n), _rand(rng, n, n)
    fn = {"cdnn": _core.gemm, "numpy": np.matmul}[contender]
    run(
        lambda: fn(a, b),
        group="sgemm-peak",
        contender=contender,
        threads=peak_threads,
        reference=contender == "cdnn" and peak_threads == settings.threads,
        peak=True,
        flops=2 * n**3,
        size=n,
        unit="call",
    )
