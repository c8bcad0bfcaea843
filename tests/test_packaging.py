"""Packaging: the version, the build's messages, the import error's words, and rules the build relies on."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

import cdnn
from cdnn import _config, _core
from cdnn._import_error import explain

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = Path(cdnn.__file__).resolve().parent
# setup.py and src_c/ exist in a checkout and in the sdist, not beside an installed wheel's tests
needs_source = pytest.mark.skipif(
    not (ROOT / "setup.py").exists() or not (ROOT / "src_c").is_dir(), reason="needs the source tree (setup.py, src_c/)"
)


def test_version_is_one_string_everywhere():
    from cdnn._version import __version__

    assert cdnn.__version__ == __version__
    assert re.fullmatch(r"\d+\.\d+\.\d+([abc]|rc)?\d*(\.dev\d+)?", __version__), __version__
    out = subprocess.run(
        [sys.executable, "-m", "cdnn", "--version"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=PACKAGE.parent,
        env={**os.environ, "PYTHONPATH": str(PACKAGE.parent)},
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"cdnn {__version__}"


def test_installed_metadata_matches_the_package():
    """An installed cdnn's metadata (pip show) says the version the package says, and is typed."""
    from importlib import metadata

    try:
        dist = metadata.distribution("cdnn")
    except metadata.PackageNotFoundError:
        pytest.skip("cdnn is not installed (an in-place build)")
    if dist.read_text("RECORD") is None:  # a checkout's cdnn.egg-info (pip's in-tree build), not an install
        pytest.skip("cdnn is not installed from a wheel")
    files = [dist.locate_file(f).resolve() for f in dist.files or []]
    if Path(cdnn.__file__).resolve() not in files:
        pytest.skip("the cdnn imported is not the installed one")
    assert dist.version == cdnn.__version__
    assert dist.metadata["License-Expression"] == "MIT"
    assert any(f.name == "LICENSE" for f in files)
    assert (PACKAGE / "py.typed").exists()
    shipped = {f.name for f in files}
    assert "_core.pyx" not in shipped and "_core.c" not in shipped


def test_build_info_says_why_a_build_is_serial():
    info = cdnn.build_info()
    assert isinstance(info["openmp_note"], str)
    if not info["openmp"]:
        assert info["openmp_note"], "a serial build must say why it is serial"


@pytest.mark.parametrize(
    "note, warns",
    [
        ("the compiler cannot build an OpenMP program (omp.h not found); cdnn runs on one core", True),
        ("OpenMP disabled by CDNN_NO_OPENMP", False),  # asked for: show_config says it, no warning
        ("", False),  # a build from before the note existed
    ],
)
def test_serial_build_warns_once_at_import_unless_asked_for(monkeypatch, note, warns):
    real = _core.build_info()
    monkeypatch.setattr(_core, "build_info", lambda: {**real, "openmp": False, "openmp_note": note})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _config._warn_if_serial()
    messages = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    if warns:
        assert len(messages) == 1 and "without OpenMP" in messages[0] and "omp.h not found" in messages[0]
    else:
        assert messages == []


def test_show_config_says_why_a_build_is_serial(monkeypatch, capsys):
    real = _core.build_info()
    monkeypatch.setattr(
        _core, "build_info", lambda: {**real, "openmp": False, "openmp_note": "OpenMP disabled by CDNN_NO_OPENMP"}
    )
    cdnn.show_config()
    assert "no (serial build: OpenMP disabled by CDNN_NO_OPENMP)" in capsys.readouterr().out


def test_import_error_shows_the_loaders_own_words():
    """A built extension that does not load says what the loader said, and what it means: not 'reinstall'."""
    exc = ImportError("/x/cdnn/_core.cpython-311-x86_64-linux-gnu.so: undefined symbol: cdnn_opt_update")
    message = explain(exc)
    assert "undefined symbol: cdnn_opt_update" in message
    assert "build defect" in message
    omp = explain(ImportError("libgomp.so.1: cannot open shared object file: No such file or directory"))
    assert "libgomp.so.1: cannot open shared object file" in omp and "OpenMP runtime" in omp
    other = explain(ImportError("something new"))
    assert "something new" in other


def test_import_error_for_an_unbuilt_tree_says_how_to_build():
    exc = ModuleNotFoundError("No module named 'cdnn._core'", name="cdnn._core")
    message = explain(exc)
    if (PACKAGE / "_core.pyx").exists():
        assert "build_ext --inplace" in message and "not built in this source tree" in message
    else:
        assert "missing" in message


@needs_source
def test_cloned_functions_are_static():
    """target_clones only on static functions: clang 14 names an exported clone's resolver `f.ifunc`,
    so a call from another file failed at import with `undefined symbol: cdnn_opt_update`."""
    offenders = []
    for path in sorted((ROOT / "src_c").glob("*.c")):
        lines = path.read_text().splitlines()
        for i, line in enumerate(lines):
            if line.strip() == "CDNN_VECTOR_CLONES":
                definition = lines[i + 1].strip()
                if not definition.startswith("static "):
                    offenders.append(f"{path.name}:{i + 2}: {definition}")
    assert offenders == []


@needs_source
def test_build_without_a_compiler_says_so_first_and_once(tmp_path):
    """No C compiler: the build's first words say a compiler is needed and how to get one, no traceback."""
    env = {**os.environ, "CC": str(tmp_path / "no-such-cc")}
    out = subprocess.run(
        [
            sys.executable,
            "setup.py",
            "build_ext",
            "--build-temp",
            str(tmp_path / "t"),
            "--build-lib",
            str(tmp_path / "l"),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode != 0
    text = (out.stdout + out.stderr).strip()
    assert text.startswith("cdnn builds a C extension, and this machine has no C compiler"), text[:500]
    assert text.count("no C compiler") == 1
    assert "build-essential" in text and "xcode-select --install" in text and "Build Tools" in text
    assert "Traceback" not in text and "cdnn build:" not in text


@needs_source
@pytest.mark.skipif(not (ROOT / "tools" / "perf_probe.sh").exists(), reason="needs tools/perf_probe.sh")
def test_perf_probe_builds_against_the_core(tmp_path):
    """tools/perf_probe.c (the per-part timings in docs/performance.md) calls the core's C functions
    directly: tools/perf_probe.sh must still build it against the current headers (at -O1 here, for time)."""
    import shutil

    if shutil.which(os.environ.get("CC", "gcc")) is None:
        pytest.skip(f"no C compiler ({os.environ.get('CC', 'gcc')})")
    env = {**os.environ, "TMPDIR": str(tmp_path), "PROBE_BUILD_ONLY": "1", "PROBE_OPT": "-O1"}
    out = subprocess.run(
        ["bash", str(ROOT / "tools" / "perf_probe.sh")], capture_output=True, text=True, timeout=300, env=env
    )
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "cdnn_perf_probe").is_file()
