"""Reliability II (issue 22): fork and thread safety, safe saves, checkpoints that always load.

The cases that a regression would turn into a hang or a multi-gigabyte
allocation run in a child process with a timeout (and an address-space
limit); the bad-file and refused-argument cases are in the robustness
sweep's table (tests/test_robustness.py, section "issue 22").
"""

from __future__ import annotations

import os
import pickle
import stat
import subprocess
import sys
import tempfile
import textwrap
import threading
import warnings
from pathlib import Path

import numpy as np
import pytest

import cdnn
from cdnn import keras

#: the fork and thread-count cases are about OpenMP's threads: a serial build has none
needs_openmp = pytest.mark.skipif(not cdnn.build_info()["openmp"], reason="a serial build (no OpenMP) has no threads")

REPO = Path(__file__).resolve().parent.parent
SCCE = "sparse_categorical_crossentropy"


def blobs(n=256, features=20, classes=4, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=3.0, size=(classes, features))
    y = rng.integers(0, classes, n)
    return (centres[y] + rng.normal(size=(n, features))).astype(np.float32), y


def model(hidden=32, features=20, classes=4, optimizer="adam", dropout=None):
    layers = [keras.layers.Input(shape=(features,)), keras.layers.Dense(hidden, activation="relu")]
    if dropout:
        layers.append(keras.layers.Dropout(dropout))
    layers.append(keras.layers.Dense(classes, activation="softmax"))
    m = keras.Sequential(layers)
    m.compile(optimizer=optimizer, loss=SCCE, metrics=["accuracy"])
    return m


def run_python(code: str, timeout: float = 60.0, env: dict | None = None, **kwargs) -> subprocess.CompletedProcess:
    """``code`` in a fresh interpreter that imports this checkout's cdnn; a hang fails the test."""
    full_env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]))
    full_env.update(env or {})
    try:
        if "stdout" not in kwargs:
            kwargs["capture_output"] = True
        return subprocess.run(
            [sys.executable, "-c", textwrap.dedent(code)], text=True, timeout=timeout, env=full_env, cwd=REPO, **kwargs
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"the child did not finish in {timeout} s (hung)")


# ---------------------------------------------------------------- fork after OpenMP

_FORK_PARENT = """
    import multiprocessing, os, warnings
    import numpy as np
    import cdnn
    from cdnn import keras

    cdnn.set_num_threads(2)
    rng = np.random.default_rng(0)
    x = rng.random((4096, 64), dtype=np.float32)
    y = rng.integers(0, 10, 4096)
    model = keras.Sequential([keras.layers.Input(shape=(64,)), keras.layers.Dense(256, activation="relu"),
                              keras.layers.Dense(10, activation="softmax")])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.fit(x, y, epochs=1, batch_size=256, verbose=0)     # the parent's OpenMP pool is running now
    want = model.predict(x, verbose=0)
"""


@needs_openmp
def test_a_fork_pool_worker_uses_a_model_trained_in_the_parent():
    code = (
        _FORK_PARENT
        + """
    def work(rows):
        out = model.predict(x[rows], verbose=0)                # used to wait forever here
        model.fit(x[rows], y[rows], epochs=1, verbose=0)       # training works too (serially)
        return out, cdnn.get_num_threads()

    if __name__ == "__main__":
        with multiprocessing.get_context("fork").Pool(2) as pool:
            results = pool.map(work, [slice(0, 2048), slice(2048, 4096)])
        got = np.concatenate([r[0] for r in results])
        assert np.array_equal(got, want), "the children's predictions differ from the parent's"
        assert [r[1] for r in results] == [1, 1]
        assert cdnn.get_num_threads() == 2                     # the parent keeps its threads
        print("ok")
    """
    )
    proc = run_python(code, timeout=90)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-3000:]


@needs_openmp
def test_os_fork_child_runs_serially_and_says_so_when_asked_for_threads():
    code = (
        _FORK_PARENT
        + """
    pid = os.fork()
    if pid == 0:
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                cdnn.set_num_threads(4)
            assert cdnn.get_num_threads() == 1
            assert any("fork" in str(w.message) for w in caught), [str(w.message) for w in caught]
            assert np.array_equal(model.predict(x, verbose=0), want)
            os._exit(0)
        except BaseException as exc:
            print(repr(exc), flush=True)
            os._exit(1)
    _, status = os.waitpid(pid, 0)
    assert os.WEXITSTATUS(status) == 0
    print("ok")
    """
    )
    proc = run_python(code, timeout=90)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stdout + proc.stderr[-3000:]


@needs_openmp
def test_a_child_forked_before_any_parallel_run_keeps_its_threads():
    code = """
    import os
    import numpy as np
    import cdnn
    from cdnn import keras

    pid = os.fork()              # cdnn imported, nothing run yet: OpenMP has no threads to lose
    if pid == 0:
        ok = cdnn.get_num_threads() == 2
        x = np.random.default_rng(0).random((4096, 64), dtype=np.float32)
        m = keras.Sequential([keras.layers.Input(shape=(64,)), keras.layers.Dense(256, activation="relu"),
                              keras.layers.Dense(10, activation="softmax")])
        m.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
        m.fit(x, np.arange(4096) % 10, batch_size=256, verbose=0)
        os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.WEXITSTATUS(status) == 0
    print("ok")
    """
    proc = run_python(code, env={"OMP_NUM_THREADS": "2"})
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stdout + proc.stderr[-3000:]


# ---------------------------------------------------------------- OMP_NUM_THREADS capped everywhere


@needs_openmp
def test_an_absurd_omp_num_threads_is_capped_in_every_entry_point():
    # at 100000 the kernels' per-thread buffers alone were 116 GiB; under a 4 GiB address space
    # an uncapped count fails with MemoryError instead of taking the machine down
    code = """
    import os, resource
    if "asan" not in os.environ.get("LD_PRELOAD", ""):   # ASan's shadow memory exceeds any such limit
        resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))
    import numpy as np
    import cdnn
    from cdnn import _core
    assert cdnn.get_num_threads() == _core.MAX_THREADS == 256, cdnn.get_num_threads()
    x = np.ones((3, 5), np.float32)
    layer = cdnn.layers.Dense(4)
    assert layer(x).shape == (3, 4)
    w = np.ones((5, 4), np.float32)
    assert _core.gemm(x, w).shape == (3, 4)
    y, z = _core.dense_forward(x, w, None)
    _core.dense_backward(x, w, y, np.ones_like(y))
    print("ok")
    """
    proc = run_python(code, env={"OMP_NUM_THREADS": "100000"})
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-3000:]


def test_set_num_threads_is_process_wide():
    """threadpoolctl's OpenMP limit is per Python thread; cdnn.set_num_threads is for all (docs/robustness.md)."""
    seen = []
    try:
        cdnn.set_num_threads(1)
        t = threading.Thread(target=lambda: seen.append(cdnn.get_num_threads()))
        t.start()
        t.join()
    finally:
        cdnn.set_num_threads(0)
    assert seen == [1]


# ---------------------------------------------------------------- threads and one model


def test_two_threads_fitting_one_model_count_every_step_once():
    x, y = blobs(2048)
    m = model(hidden=64)
    steps_per_fit, fits = 2048 // 32 * 3, 4
    barrier = threading.Barrier(fits)
    errors = []

    def fit():
        try:
            barrier.wait()
            m.fit(x, y, epochs=3, batch_size=32, verbose=0)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=fit) for _ in range(fits)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert m.optimizer.iterations == fits * steps_per_fit


def test_one_optimizer_in_two_models_is_refused_as_keras_does(tmp_path):
    x, y = blobs(64)
    opt = keras.optimizers.Adam()
    first, second = model(optimizer=opt), model(hidden=16, optimizer=opt)
    first.fit(x, y, epochs=2, verbose=0)
    iterations = opt.iterations
    with pytest.raises(ValueError, match="optimizer can only be called for the variables it was originally built"):
        second.fit(x, y, verbose=0)
    # the first model's optimizer state is untouched: it still trains on, and its file loads
    assert opt.iterations == iterations
    first.fit(x, y, verbose=0)
    first.save(tmp_path / "first.keras")
    assert keras.models.load_model(tmp_path / "first.keras").optimizer.iterations == opt.iterations
    # and the same shapes do not make it silently share the slots either
    twin = model(optimizer=opt)
    with pytest.raises(ValueError, match="Unknown variable"):
        twin.fit(x, y, verbose=0)


def test_apply_gradients_refuses_arrays_it_was_not_built_for():
    opt = keras.optimizers.SGD(momentum=0.9)
    w, g = np.ones(3, np.float32), np.ones(3, np.float32)
    opt.apply_gradients([(g, w)])
    with pytest.raises(ValueError, match="Unknown variable"):
        opt.apply_gradients([(g, np.ones(3, np.float32))])


# ---------------------------------------------------------------- seeded runs in threads


def _in_threads(jobs):
    barrier = threading.Barrier(len(jobs))
    results = [None] * len(jobs)

    def run(i):
        barrier.wait()
        results[i] = jobs[i]()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def test_seeded_sklearn_fits_in_threads_match_their_runs_one_after_another():
    from cdnn.wrappers import SKLearnClassifier

    x, y = blobs(1024)

    def job(seed):
        return lambda: (
            SKLearnClassifier(hidden=(32,), epochs=4, batch_size=16, random_state=seed, fit_kwargs={"verbose": 0})
            .fit(x, y)
            .predict_proba(x)
        )

    alone = [job(s)() for s in (0, 1, 0)]
    together = _in_threads([job(s) for s in (0, 1, 0)])
    for a, b in zip(alone, together):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(together[0], together[2])


def test_set_random_seed_in_two_threads_gives_the_results_of_one_thread():
    x, y = blobs(1024)

    def job():
        cdnn.utils.set_random_seed(7)
        m = model(hidden=32, dropout=0.2)
        m.fit(x, y, epochs=4, batch_size=16, verbose=0)
        return m.get_weights()

    alone = job()
    for got in _in_threads([job, job]):
        for a, b in zip(alone, got):
            np.testing.assert_array_equal(a, b)


# ---------------------------------------------------------------- saving


def test_resaving_keeps_the_files_permissions(tmp_path):
    m = model()
    for name in ("private.cdnn", "private.keras", "private.weights.h5"):
        path = tmp_path / name
        save = m.save_weights if name.endswith(".weights.h5") else m.save
        save(path)
        os.chmod(path, 0o600)
        save(path)
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600, name
    m.save_weights(tmp_path / "private.cdnn")
    assert stat.S_IMODE(os.stat(tmp_path / "private.cdnn").st_mode) == 0o600


def test_saving_through_a_symlink_replaces_its_target_and_keeps_the_link(tmp_path):
    x, y = blobs(64)
    m = model()
    (tmp_path / "runs").mkdir()
    m.save(tmp_path / "runs" / "run1.keras")
    (tmp_path / "latest.keras").symlink_to(Path("runs") / "run1.keras")
    m.fit(x, y, verbose=0)
    m.save(tmp_path / "latest.keras")
    assert (tmp_path / "latest.keras").is_symlink()
    back = keras.models.load_model(tmp_path / "runs" / "run1.keras")
    assert back.optimizer.iterations == m.optimizer.iterations > 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest.keras", "runs"]  # no temporaries left


def test_unpickling_needs_no_temporary_directory(monkeypatch):
    x, y = blobs(64)
    m = model()
    m.fit(x, y, verbose=0)
    data = pickle.dumps(m)
    monkeypatch.setattr(tempfile, "tempdir", "/nonexistent/cdnn-no-tmp")
    back = pickle.loads(data)
    np.testing.assert_array_equal(back.predict(x, verbose=0), m.predict(x, verbose=0))


# ---------------------------------------------------------------- checkpoints of a run that diverges


def _diverging(learning_rate=1e6):
    rng = np.random.default_rng(0)
    x, y = rng.random((256, 20), dtype=np.float32), rng.random((256, 3)).astype(np.float32)
    cdnn.utils.set_random_seed(0)
    m = keras.Sequential(
        [keras.layers.Input(shape=(20,)), keras.layers.Dense(16, activation="relu"), keras.layers.Dense(3)]
    )
    m.compile(optimizer=keras.optimizers.SGD(learning_rate=learning_rate), loss="mse")
    return m, x, y


def test_model_checkpoint_of_every_epoch_keeps_writing_files_that_load(tmp_path):
    m, x, y = _diverging()
    history = m.fit(
        x,
        y,
        epochs=4,
        batch_size=32,
        verbose=0,
        validation_split=0.25,
        callbacks=[keras.callbacks.ModelCheckpoint(tmp_path / "ck-{epoch}.keras")],
    )
    assert not np.isfinite(history.history["loss"][-1])
    for epoch in range(1, 5):  # as Keras: every epoch's file, NaN or not, and each loads
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            back = keras.models.load_model(tmp_path / f"ck-{epoch}.keras")
        assert back.optimizer.iterations == 6 * epoch


def test_model_checkpoint_save_best_only_never_picks_a_nan_epoch(tmp_path):
    m, x, y = _diverging(learning_rate=1e3)  # epoch 1 finite (and huge), then NaN
    best = keras.callbacks.ModelCheckpoint(tmp_path / "best.keras", monitor="loss", save_best_only=True)
    history = m.fit(x, y, epochs=4, batch_size=32, verbose=0, callbacks=[best])
    losses = history.history["loss"]
    assert np.isnan(losses).any()
    finite = [(l, i) for i, l in enumerate(losses) if np.isfinite(l)]
    back = keras.models.load_model(tmp_path / "best.keras")  # no warning: its weights are finite
    assert all(np.isfinite(w).all() for w in back.get_weights())
    assert best.best == min(finite)[0]


# ---------------------------------------------------------------- no stdout


def test_fit_with_stdout_closed_trains_without_a_progress_bar(tmp_path):
    code = f"""
    import sys
    import numpy as np
    from cdnn import keras
    assert sys.stdout is None
    x = np.random.default_rng(0).random((64, 4), dtype=np.float32)
    y = np.arange(64) % 2
    m = keras.Sequential([keras.layers.Input(shape=(4,)), keras.layers.Dense(2, activation="softmax")])
    m.compile("sgd", "sparse_categorical_crossentropy", metrics=["accuracy"])
    m.fit(x, y, epochs=2, validation_split=0.25, verbose="auto",
          callbacks=[keras.callbacks.ModelCheckpoint({str(tmp_path / "m.keras")!r}, verbose=1)])
    m.evaluate(x, y)
    m.predict(x)
    m.summary()
    sys.stderr.write("ok")
    """
    proc = run_python(code, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, preexec_fn=lambda: os.close(1))
    assert proc.returncode == 0 and proc.stderr.endswith("ok"), proc.stderr[-3000:]
