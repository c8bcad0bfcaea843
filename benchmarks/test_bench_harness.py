"""The suite's own machinery: how many rounds a benchmark gets, and the order benchmarks run in.

These check ``benchmarks/conftest.py`` without timing anything (they run in a
plain ``pytest`` too). Test modules never import the conftest (``tests/`` has
one of its own); its module is found among pytest's plugins instead.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest


@pytest.fixture
def harness(request):
    """The module object of benchmarks/conftest.py, as pytest loaded it."""
    here = Path(__file__).with_name("conftest.py").resolve()
    for plugin in request.config.pluginmanager.get_plugins():
        path = getattr(plugin, "__file__", None)
        if path and Path(path).resolve() == here:
            return plugin
    pytest.fail("benchmarks/conftest.py is not loaded")


class _Config:
    """What Settings reads of a pytest config: options and the command line."""

    def __init__(self, *args, quick=False, min_rounds=5, max_time=1.0):
        self.invocation_params = SimpleNamespace(args=("benchmarks", "--benchmark-only", *args))
        self._options = {
            "benchmark_only": True,
            "--quick": quick,
            "benchmark_min_rounds": min_rounds,
            "benchmark_max_time": max_time,
        }

    def getoption(self, name, default=None):
        return self._options.get(name, default)


def test_fast_benchmarks_get_rounds_that_fill_the_suites_time(harness):
    s = harness.Settings(_Config())
    assert s.max_time == harness.SUITE_MAX_TIME == 2.0  # pytest-benchmark's 1 s default is not taken
    assert s.rounds_for(0.085) == 24  # ceil(2 / 0.085): a cdnn W2-b256 epoch
    assert s.rounds_for(0.25) == 8
    assert s.rounds_for(1.5) == 5  # never fewer than --benchmark-min-rounds
    assert s.rounds_for(0.0) == harness.MAX_ROUNDS == 100


def test_rounds_follow_pytest_benchmarks_own_options(harness):
    s = harness.Settings(_Config("--benchmark-max-time=0.5", min_rounds=3, max_time=0.5))
    assert s.max_time == 0.5
    assert s.rounds_for(0.2) == 3
    assert s.rounds_for(0.1) == 5
    quick = harness.Settings(_Config("--quick", quick=True))
    assert quick.rounds_for(0.001) == 1 and quick.warmup == 0


def _item(name, workload, contender=None, threads=None):
    params = {"workload": workload}
    if contender is not None:
        params["contender"] = contender
    return SimpleNamespace(
        originalname=name, callspec=SimpleNamespace(params=params), label=f"{name}[{workload}-{contender or threads}]"
    )


def test_thread_scaling_runs_right_after_cdnns_run_on_the_same_workload(harness):
    epoch, scaling = "test_train_epoch", "test_cdnn_thread_scaling"
    items = [_item(epoch, w, c) for w in ("A", "B") for c in ("cdnn", "numpy")]
    items += [_item(scaling, "A", threads=1), _item(scaling, "B", threads=1), _item(scaling, "C", threads=1)]
    items.insert(2, SimpleNamespace(originalname="test_gemm", label="test_gemm"))
    harness.pytest_collection_modifyitems(None, None, items)
    assert [i.label for i in items] == [
        "test_train_epoch[A-cdnn]",
        "test_cdnn_thread_scaling[A-1]",
        "test_train_epoch[A-numpy]",
        "test_gemm",
        "test_train_epoch[B-cdnn]",
        "test_cdnn_thread_scaling[B-1]",
        "test_train_epoch[B-numpy]",
        "test_cdnn_thread_scaling[C-1]",  # no cdnn run on C selected: kept, at the end
    ]


# ---- report.py: the README's tables from a --benchmark-json file -------------------------------


@pytest.fixture(scope="module")
def report():
    """benchmarks/report.py as a module (it is a script, not a package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("cdnn_bench_report", Path(__file__).with_name("report.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _bench(group, contender, median, threads=2, flops=None, reference=False, spread=0.0, **info):
    """A pytest-benchmark JSON entry: quartiles ``median ± spread``, min/max ``median ± 2·spread``."""
    extra = dict(contender=contender, threads=threads, reference=reference, **info)
    if flops is not None:
        extra["flops"] = flops
    stats = dict(
        median=median,
        q1=median - spread,
        q3=median + spread,
        min=median - 2 * spread,
        max=median + 2 * spread,
        rounds=5,
        iterations=1,
    )
    return dict(group=group, name=f"{group}-{contender}-{threads}", stats=stats, extra_info=extra)


def _run_file():
    epoch = dict(unit="epoch", samples=12_000)
    bn, wd = "BN-b128 (12k-image epoch)", "WD-b128 (12k-image epoch)"
    benches = [
        _bench("sgemm-peak", "numpy", 0.1, threads=2, flops=20e9, size=2048, peak=True, unit="call"),
        _bench("sgemm-peak", "cdnn", 0.08, threads=2, flops=20e9, size=2048, peak=True, unit="call"),
        _bench("sgemm-peak", "numpy", 0.2, threads=1, flops=20e9, size=2048, peak=True, unit="call"),
        _bench("sgemm-peak", "cdnn", 0.25, threads=1, flops=20e9, size=2048, peak=True, unit="call"),
        _bench(bn, "cdnn", 0.1, flops=10e9, reference=True, spread=0.01, describe="the BN MLP", **epoch),
        _bench(bn, "cdnn", 0.2, threads=1, flops=10e9, **epoch),
        _bench(bn, "torch", 0.3, flops=10e9, spread=0.03, **epoch),
        _bench(bn, "jax", 0.25, flops=10e9, **epoch),
        _bench(wd, "cdnn", 0.05, flops=5e9, reference=True, describe="wide and deep", **epoch),
        _bench(wd, "keras-jax", 0.5, flops=5e9, **epoch),
        _bench("inference W2 batch 1", "cdnn-predict", 20e-6, reference=True, unit="call", flops=159_000),
        _bench("inference W2 batch 1", "onnxruntime", 10e-6, unit="call", flops=159_000),
    ]
    return dict(benchmarks=benches, machine_info=dict(cdnn_bench=dict(threads=2, cpu_model="test CPU", cores=2)))


def test_report_takes_the_fastest_sgemm_on_each_thread_count_as_that_rows_peak(report):
    data = _run_file()
    peaks = report.find_peaks(data["benchmarks"])
    assert {t: (round(r / 1e9), who) for t, (r, who, _) in peaks.items()} == {2: (250, "cdnn"), 1: (100, "numpy")}
    out = report.render(data)
    assert "250.0 GFLOP/s on 2 threads (cdnn 2048×2048)" in out and "100.0 GFLOP/s on 1 thread (numpy" in out
    bn = out[out.index("### BN-b128") :].split("###")[1]
    # cdnn on 2 threads: 100 GFLOP/s = 40% of the 2-thread peak; on 1 thread: 50 GFLOP/s = 50% of the 1-thread one
    assert "| cdnn | 2 | 100 ms | 80–120 ms | 1.00 (0.82–1.22) | 100.0 | 40% |" in bn
    assert "| cdnn | 1 | 200 ms | 200–200 ms | 2.00 (1.82–2.22) | 50.0 | 50% |" in bn


def test_report_side_by_side_fits_are_measured_against_the_peak_of_all_their_threads(report):
    peaks = report.find_peaks(_run_file()["benchmarks"])
    two_fits = _bench("search-4pt", "n_jobs=2, 1 thread per fit", 1.0, threads=1, flops=100e9, n_jobs=2)
    assert report.fmt_share(two_fits, peaks) == "40%"  # 100 of the 2-thread 250 GFLOP/s
    del two_fits["extra_info"]["n_jobs"]
    assert report.fmt_share(two_fits, peaks) == "100%"


def test_report_ratios_carry_the_quartiles_spread(report):
    ref, other = _bench("g", "cdnn", 1.0, spread=0.1), _bench("g", "torch", 3.0, spread=0.3)
    med, lo, hi = report.ratio(other, ref)
    assert (med, round(lo, 4), round(hi, 4)) == (3.0, round(2.7 / 1.1, 4), round(3.3 / 0.9, 4))
    assert report.fmt_ratio((3.0, 2.4545, 3.6667)) == "3.00 (2.45–3.67)"
    assert report.fmt_ratio((3.0, 3.0, 3.0)) == "3.00"  # one round: no spread to show


def test_report_readme_tables_hold_every_training_workload_and_the_inference_groups(report):
    out = report.render(_run_file())
    training = out[out.index("### Training: seconds per epoch") : out.index("### Inference")]
    head = training.splitlines()[2]
    assert head.startswith("| workload | cdnn (s) | cdnn, 1 thread (s) | torch (s) | jax (s) | keras-jax (s) |")
    rows = training.splitlines()[4:6]
    # cdnn's time, its 1-thread time, PyTorch's, JAX's, no Keras; 100 GFLOP/s, 40% of the 2-thread peak;
    # JAX the fastest peer (the 1-thread cdnn is no peer)
    assert rows[0] == "| the BN MLP | 0.1 | 0.2 | 0.3 | 0.25 | — | 100.0 | 40% | 2.50× (2.27–2.78) over jax |"
    assert rows[1] == "| wide and deep | 0.05 | — | — | — | 0.5 | 100.0 | 40% | 10.00× over keras-jax |"
    inference = out[out.index("### Inference") :].split("\n\n")[1]
    assert "| inference W2 batch 1 | 20 µs | 10 µs |" in inference
    assert "0.50× over onnxruntime" in inference  # a peer faster than cdnn shows below 1


def test_report_without_a_peak_says_how_to_get_one(report):
    data = _run_file()
    data["benchmarks"] = [b for b in data["benchmarks"] if b["group"] != "sgemm-peak"]
    out = report.render(data)
    assert "not in this run (select test_sgemm_peak" in out
    assert "% of sgemm peak" not in out


def test_the_sgemm_peak_runs_on_every_thread_count_a_row_may_use(harness, monkeypatch):
    monkeypatch.setenv("CDNN_BENCH_THREADS", "4")
    calls = []
    metafunc = SimpleNamespace(fixturenames=["peak_threads"], parametrize=lambda *a, **k: calls.append((a, k)))
    harness.pytest_generate_tests(metafunc)
    assert calls == [(("peak_threads", [1, 2, 4]), {"ids": ["1t", "2t", "4t"]})]
