"""The README's promises: its examples run on what its install command installs, its commands are CI's."""

from __future__ import annotations

import ast
import contextlib
import io
import os
import re
from pathlib import Path

import numpy as np
import pytest

import cdnn

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")
BLOCKS = re.findall(r"```python\n(.*?)```", README, re.S)
HAVE_FASHION = Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz").exists() or bool(
    os.environ.get("CDNN_DATA")
)


def test_the_python_blocks_import_only_what_pip_install_installs():
    # `pip install .` installs cdnn and NumPy: an example importing scikit-learn crashed right after it
    assert BLOCKS
    for block in BLOCKS:
        for node in ast.walk(ast.parse(block)):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module]
            else:
                continue
            assert all(n.split(".")[0] in ("cdnn", "numpy") for n in names), (names, block)


def test_the_test_command_is_what_ci_runs():
    assert 'pip install ".[test]" && pytest ' in README
    ci = (ROOT / ".ci" / "run").read_text()
    assert "\npytest\n" in ci


def accuracy_in(text: str) -> float:
    [line] = [line for line in text.splitlines() if line.startswith("test accuracy: ")]
    return float(line.split()[-1])


def run_example(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(BLOCKS[0], "README.md", "exec"), {})
    assert (tmp_path / "fashion.cdnn").is_file()
    return out.getvalue()


def test_the_example_runs(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    classes = rng.random((10, 28, 28))  # ten class templates, so that there is something to learn

    def images(n):
        y = rng.integers(0, 10, n).astype(np.uint8)
        x = (255 * np.clip(classes[y] + 0.3 * rng.standard_normal((n, 28, 28)), 0, 1)).astype(np.uint8)
        return x, y

    monkeypatch.setattr(cdnn.datasets.fashion_mnist, "load_data", lambda: (images(600), images(100)))
    text = run_example(tmp_path, monkeypatch)
    assert 'Model: "fashion"' in text and "Epoch 5/5" in text and "val_accuracy" in text
    assert accuracy_in(text) > 0.5


@pytest.mark.slow
@pytest.mark.skipif(not HAVE_FASHION, reason="Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)")
def test_the_example_runs_on_fashion_mnist(tmp_path, monkeypatch):
    text = run_example(tmp_path, monkeypatch)
    assert accuracy_in(text) > 0.85
