"""Check what `python -m build` made: the sdist holds what the build needs, the wheel what runs.

    python tools/check_dist.py DIST_DIR      (CI runs it; exits non-zero and says what is wrong)

Compared with the files git tracks, so that a new module, subpackage or C file that would not
ship is caught here rather than by a user.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def tracked(*patterns: str) -> set[str]:
    out = subprocess.run(["git", "ls-files", *patterns], cwd=ROOT, capture_output=True, text=True, check=True)
    return set(out.stdout.split())


def main(dist: Path) -> list[str]:
    problems: list[str] = []
    sdists, wheels = sorted(dist.glob("cdnn-*.tar.gz")), sorted(dist.glob("cdnn-*.whl"))
    if len(sdists) != 1 or len(wheels) != 1:
        return [f"expected one sdist and one wheel in {dist}, found {[p.name for p in sdists + wheels]}"]
    version = re.search(r'__version__ = "([^"]+)"', (ROOT / "cdnn" / "_version.py").read_text()).group(1)

    with tarfile.open(sdists[0]) as tar:
        top = f"cdnn-{version}/"
        names = {n[len(top) :] for n in tar.getnames() if n.startswith(top)}
    needed = tracked("cdnn", "src_c", "tests", "benchmarks") | {
        "setup.py",
        "pyproject.toml",
        "MANIFEST.in",
        "LICENSE",
        "README.md",
        "CHANGELOG.md",
        "CONTRIBUTING.md",
    }
    problems += [f"sdist lacks {n}" for n in sorted(needed - names)]
    problems += [
        f"sdist holds a build product: {n}"
        for n in sorted(names)
        if n == "cdnn/_core.c" or n.endswith((".so", ".pyd", ".o")) or n.startswith("build/")
    ]

    with zipfile.ZipFile(wheels[0]) as whl:
        names = set(whl.namelist())
        meta = whl.read(f"cdnn-{version}.dist-info/METADATA").decode()
    modules = {n for n in tracked("cdnn") if n.endswith(".py")} | {"cdnn/py.typed"}
    problems += [f"wheel lacks {n}" for n in sorted(modules - names)]
    if not any(re.fullmatch(r"cdnn/_core\..*(so|pyd)", n) for n in names):
        problems.append("wheel lacks the compiled extension cdnn/_core")
    problems += [f"wheel holds a source or build file: {n}" for n in sorted(names) if n.endswith((".pyx", ".c", ".h"))]
    if f"cdnn-{version}.dist-info/licenses/LICENSE" not in names:
        problems.append("wheel lacks dist-info/licenses/LICENSE")
    for line in ("License-Expression: MIT", f"Version: {version}", "Requires-Python: >=3.10"):
        if line not in meta.splitlines():
            problems.append(f"wheel METADATA lacks the line {line!r}")
    return problems


if __name__ == "__main__":
    found = main(Path(sys.argv[1]))
    for p in found:
        print(f"check_dist: {p}", file=sys.stderr)
    if not found:
        print("check_dist: sdist and wheel hold what they should")
    sys.exit(1 if found else 0)
