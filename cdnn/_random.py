"""The global random state behind weight initialisation, shuffling and dropout."""
from __future__ import annotations

import numpy as np

_rng = np.random.default_rng()


def generator() -> np.random.Generator:
    """The generator every random draw in cdnn comes from."""
    return _rng


def seed(value: int) -> None:
    """Reset the generator from ``value`` (see :func:`cdnn.utils.set_random_seed`)."""
    global _rng
    _rng = np.random.default_rng(value)
