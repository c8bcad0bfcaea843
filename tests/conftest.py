"""Fixtures shared by several test files."""

import pytest

import cdnn
from cdnn import _core


@pytest.fixture
def session(monkeypatch):
    """Default names restart at dense/functional (clear_session), a fixed seed, an 80-column terminal,
    and the thread count restored afterwards."""
    monkeypatch.setenv("COLUMNS", "80")
    cdnn.utils.clear_session()
    cdnn.utils.set_random_seed(1234)
    threads = cdnn.get_num_threads()
    yield
    cdnn.set_num_threads(threads)


@pytest.fixture(params=[1, 2], ids=lambda n: f"threads{n}")
def threads(request):
    """Run the test with the core set to 1 or 2 threads, then restore."""
    prev = _core.get_num_threads()
    _core.set_num_threads(request.param)
    yield request.param
    _core.set_num_threads(prev)
