"""Fuzzing the readers of untrusted files: the IDX parser and the model loader.

Property: whatever the bytes, ``read_idx`` returns an array or raises
``IdxError`` (load_data turns it into ``CorruptDatasetError``), and
``load_model`` / ``load_weights`` return a model or raise ``ModelFileError``
(``FileNotFoundError`` for a missing path) - never another exception, a
hang or a crash.

Each target runs for ``CDNN_FUZZ_SECONDS`` (default 15) in a child process
limited to 3 GiB of address space (so that an input making a reader
allocate gigabytes fails with MemoryError): under atheris (libFuzzer,
coverage-guided) when it is installed (``pip install atheris``), else under
a seeded random-mutation fuzzer here (``CDNN_FUZZER=random`` forces it).
A failing input is left in the test's temporary directory; copy it into
``tests/fuzz_corpus/<target>/`` and ``test_fuzz_corpus_inputs`` keeps it
as a regression test (it runs without the ``fuzz`` marker).

Targets: ``idx`` (the bytes are an IDX file, raw or gzip), ``model`` (the bytes
are a model file), ``model_meta`` (the bytes are the JSON architecture record
of an otherwise valid file), ``model_npy`` (the bytes are one ``.npy`` member
of an otherwise valid file), ``keras`` (the bytes are a Keras ``.keras``
archive), ``keras_h5`` (the bytes are the ``model.weights.h5`` member of an
otherwise valid ``.keras`` archive, and also a ``.weights.h5`` file),
``keras_config`` (the bytes are the ``config.json`` of a functional model's
``.keras`` archive with every layer family: its graph and layer configs).
"""

from __future__ import annotations

import sys

if __name__ == "__main__" and sys.argv[1:2] == ["--atheris"]:
    # instrument the parsers before anything imports them
    import atheris

    with atheris.instrument_imports(include=["cdnn", "zipfile", "gzip", "json", "numpy.lib"]):
        import gzip  # noqa: F401
        import json  # noqa: F401
        import zipfile  # noqa: F401

        import numpy  # noqa: F401

        import cdnn._saving  # noqa: F401
        import cdnn.datasets._idx  # noqa: F401
        import cdnn.saving.keras_format  # noqa: F401

import gzip
import hashlib
import io
import json
import os
import random
import re
import struct
import subprocess
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
CORPUS = HERE / "fuzz_corpus"
TARGETS = ("idx", "model", "model_meta", "model_npy", "keras", "keras_h5", "keras_config")
SECONDS = float(os.environ.get("CDNN_FUZZ_SECONDS", "15"))


# ---------------------------------------------------------------------------- the targets (property checks)


class Target:
    """Writes each input to a file in `directory` and checks the property on it."""

    def __init__(self, name: str, directory: str):
        import cdnn

        cdnn.set_num_threads(1)
        self.name, self.dir = name, Path(directory)
        self.path = self.dir / "input"
        if name.startswith("model"):
            self.meta, self.arrays = template_model_parts(self.dir)
        if name in ("keras", "keras_h5"):
            self.config, self.h5 = template_keras_parts(self.dir)
        if name == "keras_config":
            self.config, self.h5 = template_functional_keras_parts(self.dir)

    def __call__(self, data: bytes) -> None:
        getattr(self, "_" + self.name)(data)

    def _idx(self, data):
        from cdnn.datasets._idx import IdxError, read_idx

        self.path.write_bytes(data)
        try:
            array, digest = read_idx(self.path)
        except IdxError:
            return
        assert array.dtype == np.uint8 and len(digest) == 64

    def _load(self):
        from cdnn import keras
        from cdnn._saving import ModelFileError

        try:
            model = keras.models.load_model(self.path)
        except ModelFileError:
            pass
        else:
            assert model.built
        try:
            template_model().load_weights(self.path)
        except ModelFileError:
            pass

    def _model(self, data):
        self.path.write_bytes(data)
        self._load()

    def _model_meta(self, data):
        write_parts(self.path, data, self.arrays)
        self._load()

    def _keras(self, data):
        self.path = self.dir / "input.keras"
        self.path.write_bytes(data)
        self._load()

    def _keras_h5(self, data):
        self.path = self.dir / "input.keras"
        write_keras_parts(self.path, self.config, data)
        self._load()
        self.path = self.dir / "input.weights.h5"
        self.path.write_bytes(data)
        self._load()

    def _keras_config(self, data):
        self.path = self.dir / "input.keras"
        write_keras_parts(self.path, data, self.h5)
        self._load()

    def _model_npy(self, data):
        write_parts(self.path, json.dumps(self.meta).encode(), self.arrays, raw={"weight_0.npy": data})
        self._load()


def template_model():
    from cdnn import keras

    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.layers.Input(shape=(4,)),
            keras.layers.Dense(3, activation="relu"),
            keras.layers.Dropout(0.1),
            keras.layers.Dense(2, activation="softmax"),
        ]
    )
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def template_model_file(path: Path) -> Path:
    model = template_model()
    rng = np.random.default_rng(0)
    model.fit(rng.random((8, 4), dtype=np.float32), rng.integers(0, 2, 8), verbose=0)
    model.save(path)
    return path


def template_functional_model_file(path: Path) -> Path:
    """A two-input, two-output graph with the new layer families: the functional loader's seed."""
    from cdnn import keras

    a, b = keras.Input((3,), name="a"), keras.Input((4,), name="b")
    h = keras.layers.LayerNormalization()(keras.layers.BatchNormalization()(keras.layers.Dense(4)(b)))
    h = keras.layers.concatenate([a, keras.layers.Flatten()(keras.layers.Reshape((2, 2))(h))])
    model = keras.Model(
        {"a": a, "b": b},
        [
            keras.layers.Dense(1, name="price")(keras.layers.Rescaling(0.5)(h)),
            keras.layers.Dense(2, activation="softmax", name="kind")(h),
        ],
    )
    model.compile(
        "adam", loss=["mse", "sparse_categorical_crossentropy"], metrics=[None, ["accuracy"]], loss_weights=[1.0, 0.5]
    )
    model.save(path)
    return path


def template_model_parts(directory: Path):
    path = template_model_file(Path(directory) / "template.cdnn")
    with np.load(path) as z:
        return json.loads(z["__cdnn__"].tobytes()), {k: z[k] for k in z.files if k != "__cdnn__"}


def template_keras_parts(directory: Path):
    path = Path(directory) / "template.keras"
    model = template_model()
    model.fit(np.random.default_rng(0).random((8, 4), dtype=np.float32), np.arange(8) % 2, verbose=0)
    model.save(path)
    with zipfile.ZipFile(path) as z:
        return z.read("config.json"), z.read("model.weights.h5")


def template_functional_keras_parts(directory: Path):
    """The functional template as a .keras archive, with every layer family Keras files may hold."""
    from cdnn import keras

    L = keras.layers
    keras.utils.set_random_seed(0)
    a, b = keras.Input((2, 3), name="a"), keras.Input((4,), name="b")
    x = L.Reshape((6,))(L.Normalization(mean=[0.5] * 3, variance=[2.0] * 3)(L.Rescaling(0.5)(a)))
    h = L.LayerNormalization()(L.BatchNormalization()(L.Dense(6)(L.GaussianNoise(0.1)(b))))
    h = L.RMSNormalization()(L.UnitNormalization()(h))
    h = L.Activation("relu")(L.Concatenate()([x, L.Flatten()(L.Reshape((2, 3))(h))]))
    h = L.Add()([L.ReLU()(h), L.LeakyReLU()(h), L.Identity()(h)])
    h = L.Maximum()([L.Subtract()([h, L.Softmax()(h)]), L.Minimum()([h, L.Average()([h, L.Multiply()([h, h])])])])
    noise = [L.GaussianDropout(0.1), L.AlphaDropout(0.1), L.ActivityRegularization(0.01), L.Dropout(0.2)]
    inner = keras.Sequential([keras.Input((12,)), L.Dense(3), L.PReLU(), L.ELU(), *noise], name="inner")
    model = keras.Model(
        {"a": a, "b": b},
        {"price": L.Dense(1, name="price")(L.Concatenate()([h, L.Dot(1, normalize=True)([h, h])])), "kind": inner(h)},
    )
    model.compile("nadam", loss={"price": "mse", "kind": "mse"})
    model.fit(
        {"a": np.ones((4, 2, 3), np.float32), "b": np.ones((4, 4), np.float32)},
        {"price": np.ones((4, 1), np.float32), "kind": np.ones((4, 3), np.float32)},
        verbose=0,
    )
    path = Path(directory) / "functional.keras"
    model.save(path)
    with zipfile.ZipFile(path) as z:
        return z.read("config.json"), z.read("model.weights.h5")


def write_keras_parts(path: Path, config: bytes, h5: bytes) -> None:
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("metadata.json", b'{"keras_version": "3.15.1"}')
        z.writestr("config.json", config)
        z.writestr("model.weights.h5", h5)


def write_parts(path: Path, meta: bytes, arrays: dict, raw: dict | None = None) -> None:
    with zipfile.ZipFile(path, "w") as z:
        buf = io.BytesIO()
        np.save(buf, np.frombuffer(meta, np.uint8))
        z.writestr("__cdnn__.npy", buf.getvalue())
        for name, a in arrays.items():
            if raw and name + ".npy" in raw:
                z.writestr(name + ".npy", raw[name + ".npy"])
                continue
            buf = io.BytesIO()
            np.save(buf, a)
            z.writestr(name + ".npy", buf.getvalue())


def seeds(target: str, directory: Path) -> list[bytes]:
    """Valid inputs to start from (the fuzzer mutates them)."""
    if target == "idx":
        rng = np.random.default_rng(0)
        out = []
        for shape in ((3,), (2, 3, 4), (5, 2)):
            raw = (
                bytes([0, 0, 8, len(shape)])
                + struct.pack(f">{len(shape)}I", *shape)
                + rng.integers(0, 256, shape, dtype=np.uint8).tobytes()
            )
            out += [raw, gzip.compress(raw, mtime=0)]
        return out
    if target == "keras_config":
        return [template_functional_keras_parts(directory)[0], template_keras_parts(directory)[0]]
    if target.startswith("keras"):
        config, h5 = template_keras_parts(directory)
        template_functional_keras_parts(directory)
        if target == "keras":
            return [(directory / "template.keras").read_bytes(), (directory / "functional.keras").read_bytes()]
        return [h5]
    meta, arrays = template_model_parts(directory)
    functional = template_functional_model_file(directory / "functional.cdnn")
    if target == "model":
        return [template_model_file(directory / "seed.cdnn").read_bytes(), functional.read_bytes()]
    if target == "model_meta":
        with np.load(functional) as z:
            return [json.dumps(meta).encode(), z["__cdnn__"].tobytes()]
    buf = io.BytesIO()
    np.save(buf, arrays["weight_0"])
    return [buf.getvalue()]


# ---------------------------------------------------------------------------- the fuzzers (child processes)


#: address-space limit of a fuzzing child: an input that makes a reader allocate gigabytes fails at once
#: with MemoryError (an undocumented exception), instead of going unnoticed in untouched virtual memory
FUZZ_ADDRESS_SPACE = 3 << 30


def limit_memory() -> None:
    import resource

    if "asan" not in os.environ.get("LD_PRELOAD", ""):
        resource.setrlimit(resource.RLIMIT_AS, (FUZZ_ADDRESS_SPACE, FUZZ_ADDRESS_SPACE))


def run_atheris(target: str, workdir: str, libfuzzer_args: list[str]) -> None:
    import atheris

    check = Target(target, workdir)
    limit_memory()
    atheris.Setup([sys.argv[0], *libfuzzer_args], check)
    atheris.Fuzz()


def mutate(data: bytes, rng: random.Random, pool: list[bytes]) -> bytes:
    """A few random edits in libFuzzer's style: flips, interesting values, inserts, deletes, splices, cuts."""
    b = bytearray(data)
    for _ in range(rng.choice((1, 1, 2, 3, 8))):
        op = rng.randrange(8)
        pos = rng.randrange(len(b) + 1)
        if op == 0 and b:
            b[pos % len(b)] ^= 1 << rng.randrange(8)
        elif op == 1 and b:
            b[pos % len(b)] = rng.choice((0, 1, 0x7F, 0x80, 0xFF, rng.randrange(256)))
        elif op == 2 and len(b) >= 4:
            p = pos % (len(b) - 3)
            b[p : p + 4] = struct.pack(">I", rng.choice((0, 1, 2**31 - 1, 2**31, 2**32 - 1, rng.randrange(2**32))))
        elif op == 3:
            b[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 16)))
        elif op == 4 and b:
            del b[pos : pos + rng.randrange(1, 64)]
        elif op == 5:
            b = b[:pos]
        elif op == 6 and pool:
            other = rng.choice(pool)
            q = rng.randrange(len(other) + 1)
            b[pos:] = other[q:]
        elif op == 7 and b:
            p = pos % len(b)
            b[p:p] = b[p : p + rng.randrange(1, 32)]
    return bytes(b)


def run_random(target: str, workdir: str, seconds: float, artifacts: str, seed: int = 0) -> None:
    """The fallback: mutate the seeds at random for `seconds`, in-process; save and re-raise a failing input."""
    check = Target(target, workdir)
    limit_memory()
    pool = seeds(target, Path(workdir)) + [p.read_bytes() for p in sorted((CORPUS / target).glob("*"))]
    rng = random.Random(seed)
    runs, deadline = 0, time.monotonic() + seconds
    while time.monotonic() < deadline:
        data = mutate(rng.choice(pool), rng, pool)
        try:
            check(data)
        except BaseException:
            name = Path(artifacts) / ("crash-" + hashlib.sha1(data).hexdigest())
            name.write_bytes(data)
            print(f"@@CRASH {name}", flush=True)
            raise
        runs += 1
        if runs % 50 == 0 and len(pool) < 500:
            pool.append(data)
    print(f"@@RUNS {runs}", flush=True)


# ---------------------------------------------------------------------------- the tests


def fuzzer() -> str:
    try:
        import atheris  # noqa: F401
    except ImportError:
        return "random"
    return "atheris"


@pytest.mark.fuzz
@pytest.mark.parametrize("target", TARGETS)
def test_fuzz(target, tmp_path):
    work, corpus, artifacts = tmp_path / "work", tmp_path / "corpus", tmp_path / "artifacts"
    for d in (work, corpus, artifacts):
        d.mkdir()
    for i, data in enumerate(seeds(target, work)):
        (corpus / f"seed-{i}").write_bytes(data)
    regressions = CORPUS / target
    env = dict(
        os.environ,
        OMP_NUM_THREADS="1",
        PYTHONPATH=os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]),
    )
    kind = os.environ.get("CDNN_FUZZER") or fuzzer()  # CDNN_FUZZER=random forces the fallback
    if kind == "atheris":
        cmd = [
            sys.executable,
            __file__,
            "--atheris",
            target,
            str(work),
            f"-max_total_time={int(SECONDS)}",
            "-timeout=10",
            "-rss_limit_mb=2048",
            "-max_len=65536",
            f"-artifact_prefix={artifacts}/",
            "-print_final_stats=1",
            str(corpus),
        ]
        if regressions.is_dir():
            cmd.append(str(regressions))
    else:
        cmd = [sys.executable, __file__, "--random", target, str(work), str(SECONDS), str(artifacts)]
    t0 = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO, timeout=SECONDS + 120)
    elapsed = time.monotonic() - t0
    output = proc.stdout + proc.stderr
    found = sorted(p.name for p in artifacts.iterdir())
    assert proc.returncode == 0 and not found, (
        f"{kind} fuzzing of {target} found a failing input ({found}, in {artifacts}; copy it into "
        f"{regressions}/ for a regression test):\n{output[-6000:]}"
    )
    runs = re.findall(r"Done (\d+) runs|@@RUNS (\d+)", output)
    assert runs, output[-3000:]
    count = int(next(filter(None, runs[-1])))
    print(f"fuzz {target} ({kind}): {count} executions in {elapsed:.0f} s")
    assert count > 100


def corpus_files():
    for target in TARGETS:
        for path in sorted((CORPUS / target).glob("*")) if (CORPUS / target).is_dir() else ():
            yield pytest.param(target, path, id=f"{target}/{path.name}")


@pytest.mark.parametrize("target, path", list(corpus_files()))
def test_fuzz_corpus_inputs(target, path, tmp_path):
    """Inputs that once broke a reader (found by fuzzing) keep raising only the documented errors.

    Under an address-space limit, as when fuzzing: some made a reader reserve gigabytes."""
    import resource

    check = Target(target, str(tmp_path))
    data = path.read_bytes()
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    if "asan" in os.environ.get("LD_PRELOAD", ""):
        check(data)
        return
    with open("/proc/self/statm") as f:
        used = int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    limit = used + (2 << 30)
    resource.setrlimit(resource.RLIMIT_AS, (limit if hard == resource.RLIM_INFINITY else min(limit, hard), hard))
    try:
        check(data)
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


if __name__ == "__main__" and sys.argv[1:2] == ["--atheris"]:
    run_atheris(sys.argv[2], sys.argv[3], sys.argv[4:])
elif __name__ == "__main__" and sys.argv[1:2] == ["--random"]:
    run_random(sys.argv[2], sys.argv[3], float(sys.argv[4]), sys.argv[5])
