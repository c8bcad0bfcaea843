#!/usr/bin/env bash
# Memory-safety check: build cdnn with AddressSanitizer + UBSan (CDNN_SANITIZE=1)
# in a throw-away copy of the repository, then run the fast core, model and
# robustness tests (and the losses, activations, sample weights, shared layers and new layers ones) against it.
#
#   tests/sanitize.sh [REPO]        (REPO defaults to this script's repository)
#
# Exits non-zero if the build fails, a test fails, or a sanitizer reports
# anything, also in the robustness tests' child processes (every report is
# written to a file in the work directory, printed at the end). The
# repository's own build is not touched. Takes about 2 minutes on 2 cores.
set -euo pipefail

repo=$(cd "${1:-$(dirname "$0")/..}" && pwd)
python=${PYTHON:-python}
cc=${CC:-gcc}
work=$(mktemp -d "${TMPDIR:-/tmp}/cdnn-sanitize.XXXXXX")
trap 'rm -rf "$work"' EXIT
start=$SECONDS

echo "== sanitizer build of $repo in $work"
# the sources, without build products or the checkout's own compiled extension
tar -C "$repo" -cf - --exclude=./.git --exclude=./build --exclude='*.so' --exclude=./cdnn/_core.c \
    --exclude=__pycache__ --exclude=.pytest_cache --exclude=./.benchmarks . | tar -C "$work" -xf -
cd "$work"
if ! "$python" -c "import Cython, numpy, setuptools" 2>/dev/null; then
    # pip install . builds in an isolated environment; an in-place build needs the build requirements here
    echo "== installing the build requirements (pyproject.toml [build-system])"
    "$python" -m pip install -q "Cython>=3.0" "setuptools>=77" "numpy>=1.25"
fi
if ! CDNN_SANITIZE=1 "$python" setup.py build_ext --inplace -f >build.log 2>&1; then
    tail -40 build.log
    echo "sanitize.sh: the CDNN_SANITIZE=1 build failed" >&2
    exit 1
fi

libasan=$("$cc" -print-file-name=libasan.so)
if [ ! -e "$libasan" ]; then
    echo "sanitize.sh: $cc has no libasan.so (install the compiler's ASan runtime, e.g. libasan8)" >&2
    exit 1
fi
# The Python interpreter is not instrumented, so the ASan runtime must be loaded first.
# detect_leaks=0: CPython leaks by design at exit. allocator_may_return_null=1: a huge request
# (the robustness tests make numpy ask for terabytes) fails with NULL -> MemoryError, as without ASan.
# NumPy's array buffers come from malloc, so the C core's reads and writes past an array are caught.
export LD_PRELOAD="$libasan${LD_PRELOAD:+:$LD_PRELOAD}"
# Reports go to files (log_path): pytest captures the stderr of the tests and of their child
# processes, and a process that aborts takes its captured output with it.
reports="$work/sanitizer-reports"
mkdir -p "$reports"
export ASAN_OPTIONS="detect_leaks=0:allocator_may_return_null=1:abort_on_error=1:halt_on_error=1:log_path=$reports/asan"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1:log_path=$reports/ubsan"
export PYTHONPATH="$work"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}"

"$python" - <<'EOF'
import cdnn
flags = cdnn.build_info()["flags"]
assert "-fsanitize=address,undefined" in flags, f"not a sanitizer build: {flags}"
print("sanitizer build:", flags)
EOF

echo "== tests under ASan + UBSan"
set +e
"$python" -m pytest -m "not slow" tests/test_core.py tests/test_graph_core.py tests/test_models.py tests/test_robustness.py \
    tests/test_reliability.py tests/test_losses.py tests/test_activations.py tests/test_sample_weight.py \
    tests/test_shared_layers.py tests/test_act_drop_layers.py -k "not real_keras and not onnxruntime" \
    -x -q -p no:cacheprovider -p no:randomly 2>&1 | tee pytest.log
status=${PIPESTATUS[0]}
set -e

found=$(find "$reports" -type f | wc -l)
found=$((found + $(grep -c -E "ERROR: AddressSanitizer|runtime error:|SUMMARY: (Address|UndefinedBehavior)Sanitizer" pytest.log || true)))
echo "== sanitize.sh: pytest exit $status, sanitizer reports: $found, $((SECONDS - start)) s"
if [ "$found" != 0 ]; then
    for f in "$reports"/*; do
        [ -e "$f" ] || continue
        echo "---- $f"
        head -60 "$f"
    done
    grep -n -A30 -E "ERROR: AddressSanitizer|runtime error:" pytest.log | head -60 || true
    exit 1
fi
exit "$status"
