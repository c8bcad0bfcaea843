"""``python -m cdnn``, the main job, end to end in a subprocess."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import cdnn

HAVE_FASHION = Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz").exists() or bool(
    os.environ.get("CDNN_DATA"))
needs_data = pytest.mark.skipif(not HAVE_FASHION, reason="Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)")


# the subprocess imports the same cdnn as this test process, wherever it runs from
PACKAGE_ROOT = str(Path(cdnn.__file__).resolve().parent.parent)


def run_main(*args: str, env: dict | None = None, cwd=None) -> subprocess.CompletedProcess:
    path = os.pathsep.join(p for p in (PACKAGE_ROOT, os.environ.get("PYTHONPATH", "")) if p)
    return subprocess.run([sys.executable, "-m", "cdnn", *args], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONPATH": path, **(env or {})}, cwd=cwd)


def test_help_lists_the_options():
    out = run_main("--help")
    assert out.returncode == 0
    for option in ("--epochs", "--batch-size", "--hidden", "--activation", "--optimizer", "--learning-rate",
                   "--threads", "--seed", "--dataset", "--limit", "--save", "--plot", "--quiet"):
        assert option in out.stdout


@pytest.mark.parametrize("args", [["--epochs", "0"], ["--hidden", "256,x"], ["--optimizer", "nope"],
                                  ["--learning-rate", "-1"], ["--dropout", "1.5"],
                                  # refused by argparse too, not by the API after loading the data (exit 1)
                                  ["--learning-rate", "inf"], ["--learning-rate", "1e39"], ["--lr-decay", "inf"],
                                  ["--lr-decay", "1.5"], ["--threads", "1000"], ["--seed", "-1"],
                                  ["--hidden", "256,,128"], ["--hidden", "100000000"], ["--save", ""],
                                  ["--plot", " "]])
def test_bad_options_exit_2_with_one_line(args):
    out = run_main(*args)
    assert out.returncode == 2
    assert "Traceback" not in out.stderr
    assert "error:" in out.stderr.strip().splitlines()[-1]


@pytest.mark.parametrize("option, target, message", [
    ("--save", "missing/model.keras", "folder {tmp}/missing does not exist"),
    ("--save", ".", "is a folder, expected a file path"),
    ("--plot", "missing/curves.png", "folder {tmp}/missing does not exist"),
])
def test_an_output_that_cannot_be_written_is_refused_before_training(tmp_path, option, target, message):
    # no data at all: the check must come before loading it, let alone training
    env = {"CDNN_DATA": str(tmp_path / "no-data"), "XDG_CACHE_HOME": str(tmp_path / "cache"), "HOME": str(tmp_path)}
    out = run_main("--epochs", "1", option, target, env=env, cwd=tmp_path)
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert out.stderr.strip().splitlines()[-1] == (f"python -m cdnn: error: {option} {target}: "
                                                   + message.format(tmp=tmp_path))
    assert out.stdout == "" and list(tmp_path.iterdir()) == []


def test_missing_data_is_one_line_exit_1(tmp_path):
    empty = tmp_path / "data"
    empty.mkdir()
    env = {"CDNN_DATA": str(empty), "XDG_CACHE_HOME": str(tmp_path / "cache"), "HOME": str(tmp_path)}
    out = run_main("--dataset", "mnist", "--epochs", "1", env=env)
    assert out.returncode == 1, out.stderr
    lines = [l for l in out.stderr.strip().splitlines() if not l.startswith("Downloading ")]
    assert len(lines) == 1 and "Traceback" not in out.stderr
    assert lines[0].startswith("python -m cdnn: error:") and "CDNN_DATA" in lines[0]


@needs_data
def test_quick_run_reports_and_saves(tmp_path):
    model_path = tmp_path / "model.cdnn"
    out = run_main("--epochs", "1", "--limit", "2000", "--save", str(model_path), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert "threads" in text and "SIMD" in text
    assert 'Model: "fashion_mnist_mlp"' in text and "Total params: 377,290" in text
    assert "16/16 ━━━━━━━━━━━━━━━━━━━━" in text and "val_accuracy" in text
    line = [l for l in text.splitlines() if l.startswith("test accuracy:")][0]
    accuracy = float(line.split()[2])
    assert 0.6 < accuracy < 1.0
    model = cdnn.load_model(model_path)
    assert [l.name for l in model.layers][-1] == "dense_2"
    x = np.zeros((3, 784), np.float32)
    np.testing.assert_allclose(model.predict(x, verbose=0).sum(axis=1), 1.0, rtol=1e-5)


@needs_data
def test_quiet_prints_only_the_result(tmp_path):
    out = run_main("--epochs", "1", "--limit", "500", "--quiet", "--hidden", "32", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().startswith("test accuracy:") and len(out.stdout.strip().splitlines()) == 1


@needs_data
@pytest.mark.slow
def test_default_run_passes_089_test_accuracy(tmp_path):
    out = run_main("--quiet", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    accuracy = float(out.stdout.split()[2])
    assert accuracy >= 0.89, out.stdout
