"""Build of cdnn's C core and its Cython bridge (the metadata is in pyproject.toml).

The compiler flags are chosen in ``build_ext``, where the compiler is known:

- A missing C compiler (or missing Python headers) stops the build first,
  with one message that says what to install.
- OpenMP is detected the way scikit-learn does it
  (sklearn/_build_utils/openmp_helpers.py): compile and run a tiny OpenMP
  program with the compiler at hand. ``CDNN_NO_OPENMP=1`` builds the serial
  core on purpose; a compiler without OpenMP builds it too, says so here, and
  ``import cdnn`` warns once (pip hides this output when the build succeeds).
- Release builds carry no debug information (``-g0``, stripped, no unwind
  tables): the extension is a fifth of its size with it. ``CDNN_DEBUG=1``
  keeps ``-g`` and the unwind tables.
- ``CDNN_SANITIZE=1`` adds AddressSanitizer and UBSan (for CI's memory check).
- ``CDNN_NATIVE=1`` adds -march=native (never the default: wheels must run on
  any x86-64; SIMD paths are chosen at run time).

The build directory is reused while the sources and the configuration
(compiler, flags, Python, NumPy) are the same, so a second ``pip install .``
does not compile again; any change recompiles everything.
"""

import hashlib
import os
import shlex
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import textwrap

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

C_SOURCES = [
    "gemm.c",
    "dense.c",
    "activations.c",
    "losses.c",
    "optimizers.c",
    "threading.c",
    "train.c",
    "graph.c",
    "graph_ops.c",
    "normalization.c",
]
HERE = os.path.dirname(os.path.abspath(__file__))

NO_COMPILER_HELP = """\
cdnn builds a C extension, and this machine has no C compiler{what}.
Install one, then run pip again:
  Debian, Ubuntu:  sudo apt-get install build-essential python3-dev
  Fedora, RHEL:    sudo dnf install gcc python3-devel
  macOS:           xcode-select --install   (the Xcode command-line tools)
  Windows:         the Microsoft C++ Build Tools,
                   https://visualstudio.microsoft.com/visual-cpp-build-tools/
or point CC at a compiler (e.g. CC=clang pip install .)."""

NO_HEADERS_HELP = """\
cdnn builds a C extension, and Python's C headers are missing ({path} not found).
Install them, then run pip again:
  Debian, Ubuntu:  sudo apt-get install python3-dev
  Fedora, RHEL:    sudo dnf install python3-devel"""


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def _fail(message: str) -> None:
    """Stop the build with ``message`` alone (pip prints it; a traceback would bury it)."""
    sys.stderr.write("\n" + message + "\n\n")
    sys.exit(1)


def _check_build_tools() -> None:
    """Fail first and once, before any other build output, when no C compiler or no Python.h is found.

    Only on POSIX: on Windows setuptools finds MSVC itself, and its error names the Build Tools.
    """
    if os.name != "posix":
        return
    cc = shlex.split(os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc")
    # "ccache gcc" and the like: the compiler is the first word that is not a launcher
    exe = next((w for w in cc if os.path.basename(w) not in ("ccache", "sccache", "distcc")), cc[0] if cc else "cc")
    if not shutil.which(exe):
        _fail(NO_COMPILER_HELP.format(what=f" (`{exe}` was not found)"))
    header = os.path.join(sysconfig.get_paths()["include"], "Python.h")
    if not os.path.exists(header):
        _fail(NO_HEADERS_HELP.format(path=header))


# Only commands that compile need a compiler: `python -m build --sdist` must work without one.
if {"build", "build_ext", "bdist_wheel", "install", "develop", "editable_wheel"} & set(sys.argv[1:]):
    _check_build_tools()

import Cython  # noqa: E402
import numpy  # noqa: E402  (a build requirement: imported after the checks above so that they come first)
from Cython.Build import cythonize  # noqa: E402
from Cython.Compiler import Options  # noqa: E402

# the private wrapper module needs neither docstrings in the binary nor C line numbers in tracebacks
# (8 KB of the 1.5 MB installed-size target); its Python tracebacks keep the .pyx line
Options.docstrings = False
Options.c_line_in_traceback = False

OPENMP_TEST = textwrap.dedent(
    """
    #include <omp.h>
    #include <stdio.h>
    int main(void) {
        int n = 0;
        #pragma omp parallel reduction(+:n)
        n += 1;
        printf("%d %d\\n", n == omp_get_max_threads(), _OPENMP);
        return 0;
    }
    """
)


def _quiet_run(cmd, **kwargs):
    """``subprocess.run`` that returns None instead of raising when the program is missing or fails."""
    try:
        return subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=60, **kwargs)
    except (OSError, subprocess.SubprocessError):
        return None


class CdnnBuildExt(build_ext):
    """Choose the flags for the compiler found, then build; also put the extension in this checkout.

    ``python -m cdnn`` and ``python -m pytest`` run from a checkout put the
    checkout first on sys.path, so after ``pip install .`` they import this
    source tree: with the extension here too, they work as from anywhere else.
    """

    def build_extensions(self):
        compile_args, link_args, macros, summary = self._configure()
        for ext in self.extensions:
            ext.extra_compile_args = compile_args
            ext.extra_link_args = link_args
            ext.define_macros = list(ext.define_macros or []) + macros
        # setuptools compares timestamps, which an isolated pip build defeats (its NumPy headers are new
        # each time, so Cython regenerates _core.c): the build is skipped when the sources' contents and
        # the configuration are those of the last successful build, and redone whole when either differs
        summary += "\n" + _sources_digest()
        stamp = os.path.join(self.build_temp, "cdnn-build-configuration.txt")
        built = all(os.path.exists(self.get_ext_fullpath(e.name)) for e in self.extensions)
        if not self.force and built and _read(stamp) == summary:
            print("cdnn build: same sources and configuration as the last build: not recompiling", file=sys.stderr)
            return
        self.force = True
        if self.compiler.compiler_type != "msvc":
            self._compile_for_size()
        super().build_extensions()
        os.makedirs(self.build_temp, exist_ok=True)
        with open(stamp, "w") as f:  # written once the build succeeded
            f.write(summary)

    def _configure(self):
        """Return (compile_args, link_args, macros, summary) for self.compiler."""
        msvc = self.compiler.compiler_type == "msvc"
        omp_compile, omp_link, omp_note = self._openmp_flags(msvc)
        omp_message = f"OpenMP on ({omp_note})" if omp_compile else f"serial build: {omp_note}"
        print(f"cdnn build: {omp_message}", file=sys.stderr)
        if msvc:
            compile_args = ["/O2", "/std:c11", "/fp:precise"] + omp_compile
            link_args = list(omp_link)
        else:
            # -fno-trapping-math: cdnn never reads floating-point exception flags, so a select between
            # two computed values (leaky ReLU, sigmoid, tanh) may compute both sides: GCC then vectorizes
            # those loops (values unchanged; no reassociation, no contraction under -std=c11).
            # -fvisibility=hidden: the module exports PyInit__core only, not the core's C functions.
            compile_args = [
                "-O3",
                "-std=c11",
                "-fno-math-errno",
                "-fno-trapping-math",
                "-fno-strict-aliasing",
                "-fvisibility=hidden",
                "-Wall",
                "-Wno-unused-function",
            ] + omp_compile
            link_args = list(omp_link)
            if _flag("CDNN_NATIVE"):
                compile_args.append("-march=native")
            if _flag("CDNN_SANITIZE"):
                san = ["-fsanitize=address,undefined", "-fno-omit-frame-pointer", "-fno-sanitize-recover=undefined"]
                compile_args = [a if a != "-O3" else "-O1" for a in compile_args] + san + ["-g", "-DCDNN_NO_CLONES"]
                link_args += san
            elif _flag("CDNN_DEBUG"):
                compile_args.append("-g")
            else:
                # Python's own CFLAGS carry -g: the last flag wins. No unwind tables: nothing unwinds
                # through C frames in a release build (no C++ exceptions; debuggers use CDNN_DEBUG=1).
                compile_args += ["-g0", "-fno-asynchronous-unwind-tables", "-fno-unwind-tables"]
                if sys.platform.startswith("linux"):
                    # stripped; code and read-only data not padded apart to whole pages; each function and
                    # object in its own section, the unreferenced ones dropped (8 KB in all)
                    compile_args += ["-ffunction-sections", "-fdata-sections"]
                    link_args += ["-s", "-Wl,-z,noseparate-code", "-Wl,--gc-sections"]
        compiler = self._compiler_version(msvc)
        macros = [
            ("CDNN_BUILD_COMPILER", _c_string(compiler)),
            ("CDNN_BUILD_FLAGS", _c_string(" ".join(compile_args))),
            ("CDNN_BUILD_OPENMP_NOTE", _c_string(omp_note)),
            ("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION"),
        ]
        summary = "\n".join(
            [
                compiler,
                " ".join(self._compiler_command()),
                *compile_args,
                "--",
                *link_args,
                sys.version,
                numpy.__version__,
                Cython.__version__,
            ]
        )
        return compile_args, link_args, macros, summary

    def _compile_for_size(self):
        """Compile the Cython-generated _core.c with -Os, the C core with -O3 (gemm.c without a copy of code
        that no hot path runs).

        The wrapper checks arguments and calls C, with no loop over data: -Os makes its code 40% smaller
        for a few nanoseconds a call. Cython's inlined fast paths into CPython's internals (cached global
        lookups, unpacked method calls, list/int/str internals) go too: 28 KB less code, a dict lookup
        instead of a cached one where the wrapper reads a module global.

        gemm.c (a flag that GCC alone has; a compiler that refuses it goes without): no copy of the portable
        micro-kernel for a unit stride (it runs only on a CPU without AVX2 and keeps its vectorized loop): 7 KB.
        """
        compile_one = self.compiler._compile
        lean = [
            f"-DCYTHON_{name}=0"
            for name in (
                "USE_DICT_VERSIONS",
                "UNPACK_METHODS",
                "FAST_PYCALL",
                "USE_PYLONG_INTERNALS",
                "USE_PYLIST_INTERNALS",
                "USE_UNICODE_WRITER",
            )
        ]
        per_file = {
            "_core.c": lean,
            "gemm.c": [f for f in ["-fno-version-loops-for-strides"] if self._accepts(f)],
        }

        def _compile(obj, src, ext, cc_args, extra_postargs, pp_opts):
            name = os.path.basename(src)
            if "-O3" in extra_postargs and name in per_file:
                if name == "_core.c":
                    extra_postargs = ["-Os" if a == "-O3" else a for a in extra_postargs]
                extra_postargs = extra_postargs + per_file[name]
            compile_one(obj, src, ext, cc_args, extra_postargs, pp_opts)

        self.compiler._compile = _compile

    def _accepts(self, flag: str) -> bool:
        """Whether the compiler compiles an empty file with ``flag`` without a word of complaint."""
        with tempfile.TemporaryDirectory() as tmp:
            src = os.path.join(tmp, "flag.c")
            with open(src, "w") as f:
                f.write("int cdnn_flag_probe;\n")
            cmd = [*self._compiler_command(), "-Werror", flag, "-c", src, "-o", os.path.join(tmp, "flag.o")]
            run = _quiet_run(cmd)
            return run is not None and not run.stderr.strip()

    def _compiler_command(self):
        return list(getattr(self.compiler, "compiler_so", None) or [self.compiler.compiler_type])

    def _compiler_version(self, msvc: bool) -> str:
        """``gcc 12.2.0``, ``clang 14.0.6``: the compiler's name and version, or its name alone."""
        if msvc:
            return "msvc"
        cmd = [w for w in self._compiler_command() if not w.startswith("-")][:2]
        exe = next((w for w in cmd if os.path.basename(w) not in ("ccache", "sccache", "distcc")), cmd[0])
        name = os.path.basename(exe)
        banner = _quiet_run([exe, "--version"])
        if banner and "clang" in banner.stdout.lower() and "clang" not in name:
            name = f"{name} (clang)"
        version = _quiet_run([exe, "-dumpfullversion", "-dumpversion"])
        words = version.stdout.split() if version else []
        return f"{name} {words[0]}" if words else name

    def _openmp_flags(self, msvc: bool):
        """Return (compile_flags, link_flags, note): flags empty when OpenMP is off, the note says why."""
        if _flag("CDNN_NO_OPENMP"):
            return [], [], "OpenMP disabled by CDNN_NO_OPENMP"
        if msvc:
            candidates = [(["/openmp:llvm"], [])]
        elif sys.platform == "darwin":
            # Apple's clang takes OpenMP through the preprocessor, with Homebrew's or conda's libomp
            candidates = [(["-fopenmp"], ["-fopenmp"]), (["-Xpreprocessor", "-fopenmp"], ["-lomp"])]
        else:
            candidates = [(["-fopenmp"], ["-fopenmp"])]
        reason = ""
        for compile_flags, link_flags in candidates:
            ok, reason = self._try_openmp(compile_flags, link_flags)
            if ok:
                return compile_flags, link_flags, reason
        return (
            [],
            [],
            (
                f"the compiler cannot build an OpenMP program ({reason}); cdnn runs on one core. For parallel "
                "training install an OpenMP runtime (libgomp comes with gcc; for clang: libomp-dev on Debian, "
                "`brew install libomp` on macOS) and reinstall cdnn"
            ),
        )

    def _try_openmp(self, compile_flags, link_flags):
        """Compile, link and run the OpenMP test program: (works, what happened)."""
        with tempfile.TemporaryDirectory() as tmp:
            src = os.path.join(tmp, "omp_test.c")
            with open(src, "w") as f:
                f.write(OPENMP_TEST)
            exe = os.path.join(tmp, "omp_test" + (".exe" if sys.platform == "win32" else ""))
            if self.compiler.compiler_type == "msvc":
                try:
                    objects = self.compiler.compile([src], output_dir=tmp, extra_postargs=compile_flags)
                    self.compiler.link_executable(objects, "omp_test", output_dir=tmp, extra_postargs=link_flags)
                except Exception as exc:  # CompileError, LinkError
                    return False, " ".join(str(exc).split())[:200] or type(exc).__name__
            else:
                # the compiler's own command (with CFLAGS, CPPFLAGS), run here to keep its complaint
                cmd = [*self._compiler_command(), *compile_flags, src, "-o", exe, *link_flags]
                try:
                    subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=120)
                except subprocess.CalledProcessError as exc:
                    lines = [ln.strip() for ln in (exc.stderr or exc.stdout or "").splitlines() if ln.strip()]
                    said = next((ln for ln in lines if "error" in ln.lower()), lines[0] if lines else "failed")
                    return False, said[:200]
                except (OSError, subprocess.SubprocessError) as exc:
                    return False, str(exc)[:200]
            run = _quiet_run([exe])
            if run is None:  # cross-compiling (e.g. arm64 wheels on an x86 macOS): it compiled and linked
                return True, f"{' '.join(compile_flags)}, not run here"
            out = run.stdout.split()
            if out and out[0] == "1":
                return True, f"{' '.join(compile_flags)}, _OPENMP={out[1]}"
            return False, "the OpenMP test program gave a wrong answer"

    def copy_extensions_to_source(self):
        # --inplace: setuptools writes into the existing file, which crashes a process that has it loaded;
        # removed first, that process keeps the old file's pages and the copy is a new file
        for ext in self.extensions:
            package = ".".join(ext.name.split(".")[:-1])
            target = os.path.join(
                self.get_finalized_command("build_py").get_package_dir(package),
                os.path.basename(self.get_ext_filename(ext.name)),
            )
            if os.path.exists(target):
                os.unlink(target)
        super().copy_extensions_to_source()

    def run(self):
        super().run()
        if self.inplace:
            return
        for ext in self.extensions:
            built = self.get_ext_fullpath(ext.name)
            target = os.path.join(HERE, *ext.name.split(".")[:-1], os.path.basename(built))
            try:
                # a new file renamed over the old one: a process that has the old extension loaded keeps
                # its pages (copying into the same file crashes it, e.g. a test run during pip install .)
                tmp = f"{target}.{os.getpid()}.tmp"
                shutil.copyfile(built, tmp)
                os.replace(tmp, target)
            except OSError as exc:  # a read-only checkout: the installed copy still works
                print(f"cdnn build: could not copy the extension into the checkout ({exc})", file=sys.stderr)


def _sources_digest() -> str:
    """SHA-256 of the hand-written sources the extension is built from (not the generated _core.c), and of
    this file, which sets how they are translated and compiled."""
    digest = hashlib.sha256()
    names = ["setup.py", "cdnn/_core.pyx"] + sorted(
        os.path.join("src_c", n) for n in os.listdir(os.path.join(HERE, "src_c"))
    )
    for name in names:
        digest.update(name.encode() + b"\0")
        with open(os.path.join(HERE, name), "rb") as f:
            digest.update(f.read())
    return digest.hexdigest()


def _read(path: str):
    """The text of ``path``, or None if it cannot be read."""
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


def _c_string(text: str) -> str:
    """``text`` as a C string literal for a -D macro."""
    return '"%s"' % text.replace("\\", "\\\\").replace('"', '\\"')


ext = Extension(
    "cdnn._core",
    sources=["cdnn/_core.pyx"] + [os.path.join("src_c", s) for s in C_SOURCES],
    depends=[os.path.join("src_c", h) for h in sorted(os.listdir(os.path.join(HERE, "src_c"))) if h.endswith(".h")],
    include_dirs=["src_c", numpy.get_include()],
)

setup(
    cmdclass={"build_ext": CdnnBuildExt},
    ext_modules=cythonize(
        [ext],
        compiler_directives={
            "language_level": "3",
            "boundscheck": False,
            "wraparound": False,
            "binding": False,
            # the wrapper's classes hold C pointers: no generated pickling code that only refuses (2.5 KB)
            "auto_pickle": False,
        },
    ),
)
