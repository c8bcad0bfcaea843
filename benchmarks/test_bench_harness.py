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
