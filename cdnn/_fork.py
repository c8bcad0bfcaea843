"""What cdnn does in a process forked from one that has used it (``os.fork``, multiprocessing's
``fork`` start method).

GNU OpenMP's thread pool does not survive ``fork``: the child inherits the
pool's bookkeeping but not its threads, and its first parallel region with
more than one thread waits for them forever. As PyTorch does for its own
pool, a child forked from a process that has run cdnn on more than one
thread runs cdnn on one thread: a region of one thread never touches the
pool, and several worker processes on one thread each use the cores without
oversubscribing them. A child forked before any such run, and processes
started with ``spawn`` or ``forkserver``, use every thread.
"""

from __future__ import annotations

import os

from cdnn import _core

#: whether this process was forked after its parent ran cdnn on several threads (read by set_num_threads)
forked = False


def _after_fork_in_child() -> None:
    global forked
    forked = _core.serial_after_fork()


if hasattr(os, "register_at_fork"):  # POSIX; Windows has no fork
    os.register_at_fork(after_in_child=_after_fork_in_child)
