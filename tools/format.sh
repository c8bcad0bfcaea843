#!/usr/bin/env bash
# Apply cdnn's one Python style and one C style to the whole tree, or check them.
#
#   tools/format.sh           rewrite: ruff's safe fixes, ruff format, clang-format -i
#   tools/format.sh --check   change nothing; exit non-zero if a file is off style (CI runs this)
#
# The tools are pinned in pyproject.toml's `lint` extra (pip install -e ".[lint]" or the line
# below): a formatter's output changes between versions, and everyone must agree with CI.
# Configuration: [tool.ruff] in pyproject.toml, .clang-format for src_c/.
set -euo pipefail
cd "$(dirname "$0")/.."

python=${PYTHON:-python}
ruff=(${RUFF:-$python -m ruff})
# the pinned clang-format from PyPI (its executable is inside the package), else the one on PATH
clang_format=${CLANG_FORMAT:-$("$python" -c "import clang_format; print(clang_format.get_executable('clang-format'))" 2>/dev/null || echo clang-format)}
if ! "${ruff[@]}" --version >/dev/null 2>&1 || ! "$clang_format" --version >/dev/null 2>&1; then
    echo "format.sh: needs ruff and clang-format: $python -m pip install ruff==0.17.6 clang-format==23.1.5" >&2
    exit 2
fi
c_files=$(git ls-files 'src_c/*.c' 'src_c/*.h')

if [ "${1:-}" = "--check" ]; then
    status=0
    "${ruff[@]}" check . || status=1
    "${ruff[@]}" format --check --diff . || status=1
    # shellcheck disable=SC2086
    "$clang_format" --dry-run -Werror $c_files || status=1
    if [ $status -ne 0 ]; then
        echo "format.sh: off style; run tools/format.sh to fix what the tools can, then fix what ruff still reports" >&2
    fi
    exit $status
fi

"${ruff[@]}" check --fix --quiet . || true   # what cannot be fixed automatically is listed below
"${ruff[@]}" format .
# shellcheck disable=SC2086
"$clang_format" -i $c_files
echo "== left for a human (ruff check):"
"${ruff[@]}" check . && echo "nothing"
