"""What cdnn does in a process forked from one that has used it (``os.fork``, multiprocessing's
``fork`` start method).

GNU OpenMP's thread pool does not survive ``fork``: the child inherits the
pool's bookkeeping but not its threads, and its first parallel region with
more than one thread waits for them forever. As PyTorch does for its own
pool, a forked child runs cdnn on one thread: a region of one thread never
touches the pool, and several worker processes on one thread each use the
cores without oversubscribing them. Processes started with ``spawn`` or
``forkserver`` are fresh interpreters and use every thread.
"""
from __future__ import annotations

import os

from cdnn import _core

#: whether this process is a fork of one that imported cdnn (read by set_num_threads)
forked = False


def _after_fork_in_child() -> None:
    global forked
    forked = True
    _core.serial_after_fork()


if hasattr(os, "register_at_fork"):  # POSIX; Windows has no fork
    os.register_at_fork(after_in_child=_after_fork_in_child)
