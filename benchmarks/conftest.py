"""Shared setup for the speed suite: data, sizes, threads, running a benchmark.

    pytest benchmarks --benchmark-only --benchmark-group-by=group   # full suite
    pytest benchmarks --benchmark-only --quick                      # CI smoke run, < 60 s
    pytest benchmarks --benchmark-only --benchmark-json=out.json && python benchmarks/report.py out.json

Without ``--benchmark-only`` (i.e. inside a plain ``pytest`` run) every
benchmark runs once on the quick sizes, as a cheap smoke test.

Rounds: a full run times one warm-up round, then as many rounds as fill
``--benchmark-max-time`` (2 s unless given), at least
``--benchmark-min-rounds`` (5) and at most 100.

Test modules get everything through fixtures (``settings``, ``run``,
``fashion``) and never import this file: ``tests/`` may have a
``conftest`` module of its own.

Each benchmark records in ``extra_info``: ``contender``, ``threads``,
``flops`` (useful FLOPs of one timed call, see each module for the
definition), ``samples`` (training images per timed call) and
``reference`` (true for the cdnn entry the others are compared to).
"""

from __future__ import annotations

import contextlib
import gzip
import math
import os
import struct
import sys
import time
from pathlib import Path

import numpy as np
import pytest

# the NumPy contender is the tests' oracle, tests/reference.py, which the package does not ship
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

#: Pause before each benchmark: the previous contender's idle BLAS/OpenMP threads
#: busy-wait for a while after their last call (OpenBLAS ~0.1 s) and would
#: take a core from the next contender. Measured: cdnn's 128x784x512 GEMM right
#: after NumPy's ran at 25-39 GFLOP/s, after a 0.2 s pause at 82-94.
SETTLE_SECONDS = 0.3
#: Seconds that a benchmark's rounds fill when ``--benchmark-max-time`` is not given
#: (pytest-benchmark's default, 1 s, is for its own calibrated mode, which pedantic
#: runs skip). A fast benchmark gets more than the minimum 5 rounds: on this
#: noisy machine a median of 5 moved with one or two slow rounds (W2-b256, cdnn vs
#: NumPy: 2.47-2.95x over 18 suite runs of 5 rounds each).
SUITE_MAX_TIME = 2.0
#: No more rounds than this, however fast a call is (kernels time ~50 ms per round anyway).
MAX_ROUNDS = 100
TRAIN_IMAGES = 48_000  # Keras' validation_split=0.2 of Fashion-MNIST's 60,000
QUICK_IMAGES = 2_000  # --quick: images per epoch, and one round per benchmark
SYSTEM_DATA = Path("/usr/share/datasets/fashion-mnist")


def pytest_addoption(parser):
    parser.addoption(
        "--quick",
        action="store_true",
        default=False,
        help="cdnn benchmarks: shrink every workload to a small slice and one round (CI smoke run)",
    )


def pytest_report_header(config):
    if config.getoption("benchmark_only", False):
        mode = "quick" if config.getoption("--quick") else "full"
        return f"cdnn benchmarks: {mode} sizes, {default_threads()} thread(s)"
    return None


def cpu_model() -> str:
    """The CPU's model name, as cdnn.build_info() reports it."""
    import cdnn

    return cdnn.build_info()["cpu"]


def pytest_benchmark_update_machine_info(config, machine_info):
    """Record what report.py prints: the CPU, cores, threads, and the libraries' versions."""
    import importlib

    machine_info["cdnn_bench"] = info = {
        "cpu_model": cpu_model(),
        "cores": os.cpu_count(),
        "threads": default_threads(),
        "quick": Settings(config).quick,
    }
    for name in ("numpy", "sklearn", "torch", "threadpoolctl"):
        try:
            info[name] = importlib.import_module(name).__version__
        except Exception:  # noqa: BLE001 - absent or broken: just not recorded
            pass
    try:
        import cdnn

        info["cdnn_build"] = cdnn._core.build_info()
    except Exception:  # noqa: BLE001
        pass


def pytest_benchmark_update_json(config, benchmarks, output_json):
    import shlex

    args = config.invocation_params.args
    output_json["command"] = "pytest " + " ".join(shlex.quote(str(a)) for a in args)


# ---- sizes and threads ----------------------------------------------------------


def default_threads() -> int:
    """Threads every contender gets: ``CDNN_BENCH_THREADS`` or all cores."""
    env = os.environ.get("CDNN_BENCH_THREADS")
    if env:
        return max(1, int(env))
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def scaling_threads() -> list[int]:
    """Thread counts of cdnn's scaling runs: 1, 2 and all cores."""
    return sorted({1, 2, default_threads()})


class Settings:
    """Sizes for this session: quick under ``--quick`` or outside ``--benchmark-only``."""

    def __init__(self, config):
        only = config.getoption("benchmark_only", False)
        self.quick = bool(config.getoption("--quick")) or not only
        self.threads = default_threads()
        self.rounds = 1 if self.quick else max(1, int(config.getoption("benchmark_min_rounds", 5)))
        self.warmup = 0 if self.quick else 1
        given = any(str(a).startswith("--benchmark-max-time") for a in config.invocation_params.args)
        self.max_time = float(config.getoption("benchmark_max_time", 1.0)) if given else SUITE_MAX_TIME

    def rounds_for(self, seconds: float) -> int:
        """Rounds of a benchmark whose call takes ``seconds``: enough to fill ``max_time``,
        at least ``--benchmark-min-rounds`` (5), at most ``MAX_ROUNDS``; one under ``--quick``."""
        if self.quick:
            return self.rounds
        fill = math.ceil(self.max_time / max(seconds, 1e-9))
        return max(self.rounds, min(MAX_ROUNDS, fill))

    def epoch_images(self, full: int) -> int:
        """Images in one timed epoch of a workload whose full-run epoch is ``full``."""
        return min(full, QUICK_IMAGES) if self.quick else full

    @staticmethod
    def thread_limit(n: int):
        return thread_limit(n)


def pytest_generate_tests(metafunc):
    """``scaling_threads``: cdnn's extra thread counts, besides the one every contender gets;
    ``peak_threads``: every thread count a row may run on (1, 2, all cores), for the SGEMM peak."""
    if "scaling_threads" in metafunc.fixturenames:
        counts = [t for t in scaling_threads() if t != default_threads()]
        metafunc.parametrize("scaling_threads", counts, ids=[f"{t}t" for t in counts])
    if "peak_threads" in metafunc.fixturenames:
        counts = scaling_threads()
        metafunc.parametrize("peak_threads", counts, ids=[f"{t}t" for t in counts])


def pytest_collection_modifyitems(session, config, items):
    """Run cdnn's other thread counts on a workload right after cdnn's own run on it.

    A thread-scaling ratio compares two benchmarks; on a shared machine whose
    speed drifts over minutes, timing them a minute apart (after every other
    contender) measured the drift as much as the threads: BIG-b128's
    2-vs-1-thread ratio spread 1.72-2.00 over 16 suite runs, where 1- and
    2-thread epochs timed back to back spread 1.82-1.93.
    """
    scaling = {}
    for item in items:
        params = getattr(item, "callspec", None)
        if item.originalname == "test_cdnn_thread_scaling" and params is not None:
            scaling.setdefault(params.params["workload"], []).append(item)
    if not scaling:
        return
    moved = {id(i) for group in scaling.values() for i in group}
    ordered = []
    for item in items:
        if id(item) in moved:
            continue
        ordered.append(item)
        params = getattr(item, "callspec", None)
        if item.originalname == "test_train_epoch" and params is not None and params.params.get("contender") == "cdnn":
            ordered.extend(scaling.pop(params.params["workload"], []))
    for group in scaling.values():  # deselected cdnn runs: keep the scaling runs, at the end
        ordered.extend(group)
    items[:] = ordered


@pytest.fixture(scope="session")
def settings(pytestconfig) -> Settings:
    return Settings(pytestconfig)


@contextlib.contextmanager
def thread_limit(n: int):
    """Run NumPy's BLAS, scikit-learn, PyTorch and cdnn on ``n`` threads."""
    restore = []
    with contextlib.ExitStack() as stack:
        try:
            from threadpoolctl import threadpool_limits
        except ImportError:  # the sklearn/NumPy numbers would use every core
            threadpool_limits = None
        if threadpool_limits is not None:
            stack.enter_context(threadpool_limits(limits=n))
        import cdnn

        set_threads = getattr(cdnn, "set_num_threads", None) or cdnn._core.set_num_threads
        get_threads = getattr(cdnn, "get_num_threads", None) or cdnn._core.get_num_threads
        restore.append((set_threads, get_threads()))
        set_threads(n)
        torch = _torch_if_imported()
        if torch is not None:
            restore.append((torch.set_num_threads, torch.get_num_threads()))
            torch.set_num_threads(n)
        try:
            yield
        finally:
            for setter, value in restore:
                setter(value)


def _torch_if_imported():
    import sys

    return sys.modules.get("torch")


# ---- running one benchmark ----------------------------------------------------------


class Runner:
    """``benchmark.pedantic`` with the group, the metadata and the thread limit set."""

    def __init__(self, benchmark, settings: Settings):
        self.benchmark = benchmark
        self.settings = settings

    def __call__(
        self,
        fn,
        *,
        group,
        contender,
        threads=None,
        flops=None,
        samples=None,
        setup=None,
        rounds=None,
        iterations=1,
        reference=False,
        **info,
    ):
        s = self.settings
        threads = s.threads if threads is None else threads
        bm = self.benchmark
        bm.group = group
        bm.extra_info.update(contender=contender, threads=threads, quick=s.quick, reference=reference, **info)
        if flops is not None:
            bm.extra_info["flops"] = int(flops)
        if samples is not None:
            bm.extra_info["samples"] = int(samples)
        with thread_limit(threads):
            if not s.quick:
                time.sleep(SETTLE_SECONDS)
            if rounds is None and s.warmup:  # the warm-up round, timed: how many rounds fill max_time
                seconds = _time_call(fn, setup, iterations)
                rounds = s.rounds_for(seconds)
                bm.extra_info["rounds_from_warmup_s"] = round(seconds, 6)
                warmup = 0
            else:
                warmup = s.warmup
            return bm.pedantic(fn, setup=setup, rounds=rounds or s.rounds, iterations=iterations, warmup_rounds=warmup)


def _time_call(fn, setup, iterations: int) -> float:
    """Seconds that one round (``iterations`` calls of ``fn`` after ``setup``) takes."""
    args, kwargs = (), {}
    if setup is not None:
        made = setup()
        if made is not None:
            args, kwargs = made
    start = time.perf_counter()
    for _ in range(iterations):
        fn(*args, **kwargs)
    return time.perf_counter() - start


@pytest.fixture
def run(benchmark, settings) -> Runner:
    return Runner(benchmark, settings)


# ---- data ------------------------------------------------------------------------


def _read_idx(path: Path) -> np.ndarray:
    """A minimal IDX reader (fallback while ``cdnn.datasets`` is unavailable)."""
    with gzip.open(path, "rb") as f:
        data = f.read()
    zero, dtype_code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype_code != 0x08:
        raise ValueError(f"{path}: not an unsigned-byte IDX file")
    shape = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(shape)


def _load_train() -> tuple[np.ndarray, np.ndarray]:
    try:
        from cdnn.datasets import fashion_mnist
    except ImportError:
        fashion_mnist = None
    if fashion_mnist is not None:
        try:
            (x, y), _ = fashion_mnist.load_data()
            return x, y
        except Exception as exc:  # noqa: BLE001 - e.g. no copy and no network
            reason = f"cdnn.datasets.fashion_mnist.load_data() failed: {exc}"
    else:
        reason = "cdnn.datasets.fashion_mnist is not importable"
    images = SYSTEM_DATA / "train-images-idx3-ubyte.gz"
    labels = SYSTEM_DATA / "train-labels-idx1-ubyte.gz"
    if not (images.exists() and labels.exists()):
        pytest.skip(
            f"No Fashion-MNIST data ({reason}; and no {SYSTEM_DATA}: "
            "apt-get install dataset-fashion-mnist, or set CDNN_DATA)"
        )
    return _read_idx(images), _read_idx(labels)


@pytest.fixture(scope="session")
def fashion() -> tuple[np.ndarray, np.ndarray]:
    """The first 48,000 Fashion-MNIST training images as float32 (n, 784) in [0, 1], labels uint8."""
    x, y = _load_train()
    x = np.ascontiguousarray(x[:TRAIN_IMAGES].reshape(-1, 784), dtype=np.float32) / np.float32(255)
    return x, np.ascontiguousarray(y[:TRAIN_IMAGES])
