"""What went wrong when ``cdnn._core`` (the compiled extension) does not import, in words a user can act on."""

from __future__ import annotations

import glob
import os
import sysconfig

_PACKAGE = os.path.dirname(os.path.abspath(__file__))

# (text in the loader's message, what it means); the loader's own message is always shown first
_CAUSES = [
    (
        "undefined symbol",
        "the extension was built incompletely: it needs a symbol that neither it nor a "
        "library it links provides. That is a build defect: please report it with the output of "
        "`pip install -v .` (it names the compiler and the flags).",
    ),
    (
        "libgomp",
        "the OpenMP runtime it was built against is missing: install your compiler's OpenMP "
        "runtime (e.g. `apt-get install libgomp1`), or reinstall cdnn with CDNN_NO_OPENMP=1 for a serial build.",
    ),
    (
        "libomp",
        "the OpenMP runtime it was built against is missing: install libomp (`apt-get install libomp5`, "
        "`brew install libomp`), or reinstall cdnn with CDNN_NO_OPENMP=1 for a serial build.",
    ),
    ("wrong ELF class", "the extension was built for another machine: reinstall cdnn on this one."),
    ("invalid ELF header", "the extension file is damaged or not for this system: reinstall cdnn."),
    ("incompatible architecture", "the extension was built for another processor: reinstall cdnn on this machine."),
    ("wrong architecture", "the extension was built for another processor: reinstall cdnn on this machine."),
    (
        "numpy",
        "the extension was built against another NumPy: reinstall cdnn "
        "(`pip install --force-reinstall --no-cache-dir cdnn` or `pip install .`) with the NumPy you use.",
    ),
]


def explain(exc: ImportError) -> str:
    """The message for ``import cdnn`` when ``cdnn._core`` failed to import with ``exc``."""
    if isinstance(exc, ModuleNotFoundError) and exc.name == "cdnn._core":
        return _not_built()
    text = str(exc)
    for needle, meaning in _CAUSES:
        if needle.lower() in text.lower():
            return f"cdnn's C extension could not be loaded: {text}\nThis means {meaning}"
    return (
        f"cdnn's C extension could not be loaded: {text}\n"
        "Reinstalling cdnn (`pip install --force-reinstall cdnn`, or `pip install .` from its source) "
        "rebuilds it for this Python and NumPy."
    )


def _not_built() -> str:
    suffix = sysconfig.get_config_var("EXT_SUFFIX") or ".so"
    others = sorted(
        os.path.basename(p)
        for p in glob.glob(os.path.join(_PACKAGE, "_core*"))
        if not p.endswith((".pyx", ".c", ".pxd"))
    )
    found = f" It holds {', '.join(others)}, built for another Python (this one needs _core{suffix})." if others else ""
    if os.path.exists(os.path.join(_PACKAGE, "_core.pyx")):  # a source tree, not an installed package
        return (
            f"cdnn's C extension is not built in this source tree ({_PACKAGE}).{found} "
            "Build it in place with `python setup.py build_ext --inplace` (or `pip install -e .`), "
            "or install cdnn with `pip install .` and run from outside the source tree: `python -m` "
            "and `python -c` put the current directory first on sys.path, so they import this tree."
        )
    return (
        f"cdnn's C extension is missing from {_PACKAGE}.{found} "
        "Reinstall cdnn (`pip install --force-reinstall cdnn`, or `pip install .` from its source)."
    )
