"""A budget for the weights a model file's architecture may create while it is loaded.

A file's architecture record is a few bytes that can declare ``Dense(10**8)``:
building that layer would draw gigabytes of initial weights before the
file's arrays are compared with them. While ``load_model`` builds a model it
sets the budget to the number of values the file's weight arrays really hold
(their headers checked against the archive first; never less than
``MIN_VALUES``), and every initializer draw is charged to it: an
architecture that would create more is refused before allocating anything.
"""

from __future__ import annotations

import contextlib
import math
import threading

_local = threading.local()


#: a budget never below this many values (4 MB of float32): small architectures are never refused by it, so
#: a damaged small file is reported for what is wrong with its arrays; only giant declarations are stopped
MIN_VALUES = 1 << 20


class ArchitectureTooLargeError(ValueError):
    """The architecture creates more weights than the file being loaded holds."""


@contextlib.contextmanager
def weight_budget(values: int):
    """Within the block, initializers in this thread may create at most ``max(values, MIN_VALUES)`` values."""
    old = getattr(_local, "left", None)
    _local.left = max(int(values), MIN_VALUES)
    try:
        yield
    finally:
        _local.left = old


def charge(shape) -> None:
    """Account for a weight of ``shape`` about to be created (no-op outside :func:`weight_budget`)."""
    left = getattr(_local, "left", None)
    if left is None:
        return
    size = math.prod(int(d) for d in shape)
    if size > left:
        raise ArchitectureTooLargeError(
            f"the architecture creates a weight of shape {tuple(int(d) for d in shape)} ({size} values), more "
            f"than the file's weight arrays hold ({left} values left): the architecture and the weights do "
            f"not match"
        )
    _local.left = left - size
