"""``python -m cdnn``, the main job, end to end in a subprocess."""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import cdnn

HAVE_FASHION = Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz").exists() or bool(
    os.environ.get("CDNN_DATA")
)
needs_data = pytest.mark.skipif(
    not HAVE_FASHION, reason="Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)"
)


# the subprocess imports the same cdnn as this test process, wherever it runs from
PACKAGE_ROOT = str(Path(cdnn.__file__).resolve().parent.parent)


def run_main(*args: str, env: dict | None = None, cwd=None) -> subprocess.CompletedProcess:
    path = os.pathsep.join(p for p in (PACKAGE_ROOT, os.environ.get("PYTHONPATH", "")) if p)
    return subprocess.run(
        [sys.executable, "-m", "cdnn", *args],
        capture_output=True,
        text=True,
        timeout=600,
        # a build without OpenMP warns at import (tested in tests/test_packaging.py): these tests read
        # the job's own lines
        env={
            **os.environ,
            "PYTHONPATH": path,
            "PYTHONWARNINGS": "ignore:cdnn was built without OpenMP:RuntimeWarning",
            **(env or {}),
        },
        cwd=cwd,
    )


def test_help_lists_the_options():
    out = run_main("--help")
    assert out.returncode == 0
    for option in (
        "--epochs",
        "--batch-size",
        "--hidden",
        "--activation",
        "--optimizer",
        "--learning-rate",
        "--threads",
        "--seed",
        "--dataset",
        "--limit",
        "--save",
        "--plot",
        "--quiet",
        "--validation-split",
    ):
        assert option in out.stdout


@pytest.mark.parametrize(
    "args",
    [
        ["--epochs", "0"],
        ["--hidden", "256,x"],
        ["--optimizer", "nope"],
        ["--learning-rate", "-1"],
        ["--dropout", "1.5"],
        # refused by argparse too, not by the API after loading the data (exit 1)
        ["--learning-rate", "inf"],
        ["--learning-rate", "1e39"],
        ["--lr-decay", "inf"],
        ["--lr-decay", "1.5"],
        ["--threads", "1000"],
        ["--seed", "-1"],
        ["--hidden", "256,,128"],
        ["--hidden", "100000000"],
        ["--save", ""],
        ["--plot", " "],
        ["--validation-split", "0"],
        ["--validation-split", "1"],
        ["--validation-split", "-0.1"],
        ["--validation-split", "nan"],
    ],
)
def test_bad_options_exit_2_with_one_line(args):
    out = run_main(*args)
    assert out.returncode == 2
    assert "Traceback" not in out.stderr
    assert "error:" in out.stderr.strip().splitlines()[-1]


@pytest.mark.parametrize(
    "option, target, message",
    [
        ("--save", "missing/model.keras", "folder {tmp}/missing does not exist"),
        ("--save", ".", "is a folder, expected a file path"),
        ("--plot", "missing/curves.png", "folder {tmp}/missing does not exist"),
    ],
)
def test_an_output_that_cannot_be_written_is_refused_before_training(tmp_path, option, target, message):
    # no data at all: the check must come before loading it, let alone training
    env = {"CDNN_DATA": str(tmp_path / "no-data"), "XDG_CACHE_HOME": str(tmp_path / "cache"), "HOME": str(tmp_path)}
    out = run_main("--epochs", "1", option, target, env=env, cwd=tmp_path)
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert out.stderr.strip().splitlines()[-1] == (
        f"python -m cdnn: error: {option} {target}: " + message.format(tmp=tmp_path)
    )
    assert out.stdout == "" and list(tmp_path.iterdir()) == []


def test_quiet_prints_no_download_lines(tmp_path):
    empty = tmp_path / "data"
    empty.mkdir()
    env = {"CDNN_DATA": str(empty), "XDG_CACHE_HOME": str(tmp_path / "cache"), "HOME": str(tmp_path)}
    out = run_main("--dataset", "mnist", "--epochs", "1", "--quiet", env=env)
    assert out.returncode == 1 and out.stdout == ""
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr  # the error, and no "Downloading ..." before it
    assert out.stderr.startswith("python -m cdnn: error:")


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
    # where the data came from, and the split: 2000 images less the last 10% held out for validation
    assert re.search(
        r"^data: fashion_mnist from \S.* \((the system copy|the cache|\$CDNN_DATA)\): 1800 training "
        r"images, 200 held out for validation \(the last 10% of the training set\), 10000 test images$",
        text,
        re.M,
    ), text
    assert (
        "settings: hidden 512,256 relu, dropout 0.3, adam learning rate 0.001, x0.9 per epoch, batch 128, "
        "1 epochs, seed 42, validation split 0.1"
    ) in text
    assert 'Model: "fashion_mnist_mlp"' in text and "Total params: 535,818" in text
    assert "15/15 ━━━━━━━━━━━━━━━━━━━━" in text and "val_accuracy" in text
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


class _Spy:
    """Records what the main job gives fit and evaluate, on small synthetic data (no files, no C speed)."""

    def __init__(self, monkeypatch):
        from cdnn import datasets

        rng = np.random.default_rng(0)
        self.x_train = rng.integers(0, 256, (300, 28, 28), dtype=np.uint8)
        self.y_train = rng.integers(0, 10, 300).astype(np.uint8)
        self.x_test = rng.integers(0, 256, (50, 28, 28), dtype=np.uint8)
        self.y_test = rng.integers(0, 10, 50).astype(np.uint8)
        monkeypatch.setattr(
            datasets.fashion_mnist, "load_data", lambda: ((self.x_train, self.y_train), (self.x_test, self.y_test))
        )
        self.fits, self.evaluations = [], []
        fit, evaluate = cdnn.Sequential.fit, cdnn.Sequential.evaluate

        def spy_fit(model, x, y, **kwargs):
            self.fits.append((x, y, kwargs))
            return fit(model, x, y, **kwargs)

        def spy_evaluate(model, x, y, **kwargs):
            self.evaluations.append((x, y))
            return evaluate(model, x, y, **kwargs)

        monkeypatch.setattr(cdnn.Sequential, "fit", spy_fit)
        monkeypatch.setattr(cdnn.Sequential, "evaluate", spy_evaluate)


def parse(*argv: str) -> argparse.Namespace:
    from cdnn.__main__ import parse_args

    return parse_args(["--epochs", "2", "--hidden", "8", *argv])


def test_validation_comes_from_the_training_images_and_the_test_set_is_evaluated_once(monkeypatch, capsys):
    from cdnn.__main__ import run

    spy = _Spy(monkeypatch)
    result = run(parse("--validation-split", "0.2"))
    flat = lambda a: a.reshape(len(a), -1).astype(np.float32) / 255.0
    [(x, y, kwargs)] = spy.fits
    np.testing.assert_array_equal(x, flat(spy.x_train[:240]))
    np.testing.assert_array_equal(y, spy.y_train[:240])
    x_val, y_val = kwargs["validation_data"]
    np.testing.assert_array_equal(x_val, flat(spy.x_train[240:]))  # the last 20%, as fit's validation_split
    np.testing.assert_array_equal(y_val, spy.y_train[240:])
    [(x_test, y_test)] = spy.evaluations  # once, after training
    np.testing.assert_array_equal(x_test, flat(spy.x_test))
    np.testing.assert_array_equal(y_test, spy.y_test)
    assert len(result["history"]["val_accuracy"]) == 2
    out = capsys.readouterr().out
    assert "240 training images, 60 held out for validation (the last 20% of the training set), 50 test images" in out
    assert out.splitlines()[-1].startswith(f"test accuracy: {result['test_accuracy']:.4f}  test loss: ")


def test_the_plot_calls_the_held_out_curve_validation(monkeypatch, tmp_path):
    import cdnn.__main__ as main

    labels = []

    class Axes:
        def plot(self, *args, label=None, **kwargs):
            labels.append(label)

        def __getattr__(self, name):
            return lambda *args, **kwargs: None

    class Figure:
        def tight_layout(self):
            pass

        def savefig(self, path, **kwargs):
            open(path, "wb").close()

    class PyPlot:
        def subplots(self, *args, **kwargs):
            return Figure(), [Axes(), Axes()]

        def close(self, fig):
            pass

    monkeypatch.setattr(main, "_pyplot", lambda: PyPlot())
    _Spy(monkeypatch)
    main.run(parse("--plot", str(tmp_path / "curves.png"), "--quiet"))
    assert labels == ["train", "validation"] * 2  # loss, then accuracy; never "test"


def test_quiet_leaves_interactive_logging_as_it_was(monkeypatch):
    from cdnn.__main__ import run

    _Spy(monkeypatch)
    run(parse("--quiet"))
    assert cdnn.utils.is_interactive_logging_enabled()
