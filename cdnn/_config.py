"""Threads and build information of the C core."""

from __future__ import annotations

import os
import warnings
from typing import Any

import numpy as np

from cdnn import _core, _fork

__all__ = ["build_info", "show_config", "get_num_threads", "set_num_threads"]


def _select_simd() -> None:
    """Honour ``CDNN_SIMD`` (e.g. ``generic``, ``avx2``) to force a code path; default: the best this CPU runs."""
    wanted = os.environ.get("CDNN_SIMD", "auto").strip().lower() or "auto"
    _core.simd_select(wanted)


_select_simd()


def _warn_if_serial() -> None:
    """Warn once, at import, when OpenMP was wanted but the compiler had none (pip hides the build's note)."""
    info = _core.build_info()
    note = info.get("openmp_note", "")
    if not info["openmp"] and note and "CDNN_NO_OPENMP" not in note:
        warnings.warn(
            f"cdnn was built without OpenMP: {note}. cdnn.show_config() shows how it was built.",
            RuntimeWarning,
            stacklevel=2,
        )


_warn_if_serial()


def get_num_threads() -> int:
    """Threads the C core uses (``OMP_NUM_THREADS`` by default, else all cores)."""
    return _core.get_num_threads()


#: the lowest thread count accepted (any n <= 0 means the default; the C core takes an int)
_MIN_THREADS = -(2**31)


def set_num_threads(n: int) -> None:
    """Use ``n`` threads in the C core (``n <= 0``: back to the default).

    The setting is process-wide: it applies to ``fit`` and ``predict`` called
    from any Python thread. In a process forked from one that used cdnn the
    core runs on one thread whatever ``n`` (see ``cdnn/_fork.py``).
    """
    if (
        isinstance(n, (bool, np.bool_))
        or not isinstance(n, (int, np.integer))
        or not _MIN_THREADS <= n <= _core.MAX_THREADS
    ):
        raise ValueError(
            f"Invalid value for argument `n`: expected an integer up to {_core.MAX_THREADS} "
            f"(<= 0 for the default), received n={n!r}"
        )
    if _fork.forked and n > 1:
        warnings.warn(
            f"set_num_threads({n}): this process was forked from one that used cdnn, whose OpenMP "
            f"threads do not survive fork; cdnn runs on one thread here (start worker processes "
            f"with the 'spawn' or 'forkserver' method to use more)",
            RuntimeWarning,
            stacklevel=2,
        )
    _core.set_num_threads(int(n))


def build_info() -> dict[str, Any]:
    """The compiler, OpenMP, the SIMD paths compiled and the one selected on this CPU, and threads."""
    info = _core.build_info()
    info["cpu"] = _cpu_name()
    info["cores"] = os.cpu_count()
    return info


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


def show_config() -> None:
    """Print :func:`build_info` as ``key: value`` lines."""
    info = build_info()
    omp = (
        f"yes (version {info['openmp_version']})"
        if info["openmp"]
        else f"no (serial build: {info.get('openmp_note') or 'reason not recorded'})"
    )
    print(f"cdnn {_version()}")
    print(f"  compiler:        {info['compiler']}")
    print(f"  OpenMP:          {omp}")
    print(f"  SIMD compiled:   {', '.join(info['simd_compiled'])}")
    print(
        f"  SIMD on this CPU: {info['simd_selected']} (micro-kernel {info['micro_kernel']}); "
        f"supported: {', '.join(info['simd_supported'])}"
    )
    print(f"  CPU:             {info['cpu']} ({info['cores']} cores)")
    print(f"  threads:         {info['threads']}")


def _version() -> str:
    from cdnn import __version__

    return __version__
