"""Build of cdnn's C core and its Cython bridge.

OpenMP is detected the way scikit-learn does it
(sklearn/_build_utils/openmp_helpers.py): compile and run a tiny OpenMP
program with the compiler at hand. ``CDNN_NO_OPENMP=1`` builds the serial
core on purpose; a compiler without OpenMP builds it too, and says so.
``CDNN_SANITIZE=1`` adds AddressSanitizer and UBSan (for CI's memory check).
``CDNN_NATIVE=1`` adds -march=native (never the default: wheels must run on
any x86-64; SIMD paths are chosen at run time).
"""
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import textwrap

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

C_SOURCES = ["gemm.c", "dense.c", "activations.c", "losses.c", "optimizers.c", "threading.c", "train.c",
             "graph.c", "graph_ops.c", "normalization.c"]


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def _compiler() -> str:
    return os.environ.get("CC") or sysconfig.get_config_var("CC").split()[0] or "cc"


def _openmp_flags():
    """Return (compile_flags, link_flags, message) for OpenMP, or empty flags when unavailable."""
    if _flag("CDNN_NO_OPENMP"):
        return [], [], "OpenMP disabled by CDNN_NO_OPENMP: building the serial core."
    cc = _compiler()
    flags = ["-fopenmp"]
    code = textwrap.dedent(
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
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "omp_test.c")
        exe = os.path.join(tmp, "omp_test")
        with open(src, "w") as f:
            f.write(code)
        try:
            subprocess.run([cc, *flags, src, "-o", exe], check=True, capture_output=True)
            out = subprocess.run([exe], check=True, capture_output=True, text=True).stdout.split()
            if out and out[0] == "1":
                return flags, flags, f"OpenMP found ({cc}, _OPENMP={out[1]})."
        except (OSError, subprocess.CalledProcessError) as exc:
            reason = getattr(exc, "stderr", b"") or str(exc)
            if isinstance(reason, bytes):
                reason = reason.decode(errors="replace")
            return [], [], (
                f"WARNING: {cc} cannot build an OpenMP program ({reason.strip()[:200]}). "
                "cdnn builds serial: it works, on one core. For parallel training install "
                "an OpenMP runtime (e.g. libgomp with gcc, or libomp with clang)."
            )
    return [], [], "WARNING: OpenMP test program gave a wrong answer: building serial."


omp_compile, omp_link, omp_message = _openmp_flags()
print(f"cdnn build: {omp_message}", file=sys.stderr)

# -fno-trapping-math: cdnn never reads floating-point exception flags, so a select between two
# computed values (leaky ReLU, sigmoid, tanh) may compute both sides: GCC then vectorizes those
# loops (values unchanged; no reassociation, no contraction under -std=c11)
compile_args = ["-O3", "-std=c11", "-fno-math-errno", "-fno-trapping-math", "-fno-strict-aliasing", "-Wall",
                "-Wno-unused-function"] + omp_compile
link_args = list(omp_link)
if _flag("CDNN_NATIVE"):
    compile_args.append("-march=native")
if _flag("CDNN_SANITIZE"):
    san = ["-fsanitize=address,undefined", "-fno-omit-frame-pointer", "-fno-sanitize-recover=undefined"]
    compile_args = [a if a != "-O3" else "-O1" for a in compile_args] + san + ["-DCDNN_NO_CLONES"]
    link_args += san

cc = _compiler()
build_macros = [
    ("CDNN_BUILD_COMPILER", '"%s"' % (os.path.basename(cc) + " " + subprocess.run(
        [cc, "-dumpfullversion", "-dumpversion"], capture_output=True, text=True).stdout.split()[0]
        if shutil.which(cc) else cc)),
    ("CDNN_BUILD_FLAGS", '"%s"' % " ".join(compile_args)),
    ("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION"),
]

ext = Extension(
    "cdnn._core",
    sources=["cdnn/_core.pyx"] + [os.path.join("src_c", s) for s in C_SOURCES],
    include_dirs=["src_c", numpy.get_include()],
    define_macros=build_macros,
    extra_compile_args=compile_args,
    extra_link_args=link_args,
)

class build_ext_into_checkout(build_ext):
    """Build as usual, and also put the extension beside its sources in this checkout.

    ``python -m cdnn`` and ``python -m pytest`` run from a checkout put the
    checkout first on sys.path, so after ``pip install .`` they import this
    source tree: with the extension here too, they work as from anywhere else.
    """

    def finalize_options(self):
        super().finalize_options()
        # always compile: the build switches (CDNN_NO_OPENMP, CDNN_SANITIZE, ...) are not
        # file timestamps, and a build/ left by another configuration must not be reused
        self.force = True

    def run(self):
        super().run()
        if self.inplace:
            return
        here = os.path.dirname(os.path.abspath(__file__))
        for ext in self.extensions:
            built = self.get_ext_fullpath(ext.name)
            target = os.path.join(here, *ext.name.split(".")[:-1], os.path.basename(built))
            try:
                shutil.copyfile(built, target)
            except OSError as exc:  # a read-only checkout: the installed copy still works
                print(f"cdnn build: could not copy the extension into the checkout ({exc})", file=sys.stderr)


setup(
    cmdclass={"build_ext": build_ext_into_checkout},
    ext_modules=cythonize(
        [ext],
        compiler_directives={"language_level": "3", "boundscheck": False, "wraparound": False},
    ),
)
