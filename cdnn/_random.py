"""The random state behind weight initialisation, shuffling and dropout.

Draws come from the calling thread's own generator once it has one (seeded
by :func:`cdnn.utils.set_random_seed` in that thread, or by :func:`seeded`,
e.g. a scikit-learn wrapper's ``random_state``), else from the process-wide
one. Each ``fit`` shuffles and drops out with a generator of its own, seeded
at its start by one draw from those (:func:`fit_generator`): a seeded fit
gives the same results whatever other threads draw meanwhile.
"""

from __future__ import annotations

import contextlib
import threading

import numpy as np

_rng = np.random.default_rng()
_local = threading.local()
#: one draw at a time from a shared generator (NumPy's own lock guards each draw, not our read-modify)
_lock = threading.Lock()


def generator() -> np.random.Generator:
    """The generator random draws in the calling thread come from."""
    own = getattr(_local, "rng", None)
    return own if own is not None else _rng


def seed(value: int) -> None:
    """Reset the process-wide generator, and the calling thread's, from ``value``
    (see :func:`cdnn.utils.set_random_seed`)."""
    global _rng
    _rng = np.random.default_rng(value)
    _local.rng = np.random.default_rng(value)


@contextlib.contextmanager
def seeded(value: int):
    """Within the block the calling thread draws from a generator seeded by ``value``, its own."""
    old = getattr(_local, "rng", None)
    _local.rng = np.random.default_rng(value)
    try:
        yield
    finally:
        _local.rng = old


def fit_generator() -> np.random.Generator:
    """A new generator for one ``fit``'s shuffling and dropout, seeded by one draw from :func:`generator`."""
    with _lock:
        return np.random.default_rng(int(generator().integers(0, 2**63)))
