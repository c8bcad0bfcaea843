"""One ``fit`` at a time per model.

Two Python threads that train one model at once would interleave their
steps on shared weights and optimizer slots, and the step count each reads
before its run would miss the other's: ``optimizer.iterations`` (Adam's bias
correction, the saved step count) would be wrong. A model's ``fit`` holds
the model's lock for the whole call, so a second ``fit`` waits for the first
to end; the lock is re-entrant, so a callback may still call ``evaluate``
or even ``fit`` on its own model.
"""

from __future__ import annotations

import functools
import threading

_guard = threading.Lock()


def model_lock(model, name: str = "_fit_lock") -> threading.RLock:
    """The lock that serializes ``fit`` calls on ``model`` (made on first use, never copied or pickled)."""
    lock = model.__dict__.get(name)
    if lock is None:
        with _guard:
            lock = model.__dict__.setdefault(name, threading.RLock())
    return lock


def one_at_a_time(method):
    """Decorate a model method (``fit``) so that it runs under :func:`model_lock`."""

    @functools.wraps(method)
    def serialized(self, *args, **kwargs):
        with model_lock(self):
            return method(self, *args, **kwargs)

    return serialized


def one_builder(method):
    """Decorate the method that makes a model's C network on first use (``_core_network``): a
    ``predict`` in one thread and a ``fit`` in another must not both build it (and the optimizer's
    slots twice). A lock of its own, held briefly, so that ``predict`` never waits for a whole ``fit``."""

    @functools.wraps(method)
    def serialized(self, *args, **kwargs):
        with model_lock(self, "_build_lock"):
            return method(self, *args, **kwargs)

    return serialized
