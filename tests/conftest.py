"""Fixtures shared by several test files."""

import pytest

import cdnn


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
