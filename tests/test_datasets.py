"""Tests of cdnn.datasets: IDX parsing, look-up order, checks and downloads.

Everything but the last tests runs on tiny IDX files written here; the
download tests serve them from a local HTTP server on 127.0.0.1.
"""

import dataclasses
import gzip
import hashlib
import http.server
import os
import stat
import struct
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from cdnn.datasets import (
    CorruptDatasetError,
    DatasetError,
    DatasetNotFoundError,
    _fetch,
    fashion_mnist,
    mnist,
)
from cdnn.datasets._idx import IdxError, read_idx, write_idx

NAMES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
SHAPES = ((6, 3, 2), (6,), (4, 3, 2), (4,))
DEAD_MIRROR = "http://127.0.0.1:9/"  # the discard port: connection refused at once
DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")


def idx_bytes(array):
    array = np.asarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.tobytes()


def make_arrays(seed=0):
    rng = np.random.default_rng(seed)
    return {name: rng.integers(0, 256, shape, dtype=np.uint8) for name, shape in zip(NAMES, SHAPES)}


def make_dataset(tmp_path, arrays, **changes):
    """A four-file dataset like Fashion-MNIST's, with hashes of `arrays`."""
    files = tuple(
        _fetch.FileSpec(name, arrays[name].shape, hashlib.sha256(idx_bytes(arrays[name])).hexdigest()) for name in NAMES
    )
    fields = dict(
        title="Tiny",
        dirname="tiny",
        files=files,
        mirrors=(DEAD_MIRROR,),
        system_dir=str(tmp_path / "system"),
        system_package="dataset-tiny",
    )
    fields.update(changes)
    return _fetch.Dataset(**fields)


def write_set(directory, arrays, compress=True, names=NAMES):
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for name in names:
        data = idx_bytes(arrays[name])
        if compress:
            (directory / (name + ".gz")).write_bytes(gzip.compress(data))
        else:
            (directory / name).write_bytes(data)


def assert_loaded(result, arrays):
    (x_train, y_train), (x_test, y_test) = result
    for got, name in zip((x_train, y_train, x_test, y_test), NAMES):
        assert got.dtype == np.uint8
        np.testing.assert_array_equal(got, arrays[name])


@pytest.fixture
def env(tmp_path, monkeypatch):
    """No CDNN_DATA, an empty cache under tmp_path, a short timeout."""
    monkeypatch.delenv("CDNN_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setattr(_fetch, "TIMEOUT", 2.0)
    return tmp_path


@pytest.fixture
def tiny(env, monkeypatch):
    """Make fashion_mnist.load_data() load a tiny dataset; return its arrays."""
    arrays = make_arrays()
    dataset = make_dataset(env, arrays)
    monkeypatch.setattr(fashion_mnist, "DATASET", dataset)
    return arrays


@pytest.fixture
def server():
    """An HTTP server on 127.0.0.1 serving the dict it yields (path -> bytes)."""
    files = {}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = files.get(self.path)
            if body is None:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    httpd.base = f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.files = files
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def serve_set(server, prefix, arrays):
    for name in NAMES:
        server.files[f"/{prefix}/{name}.gz"] = gzip.compress(idx_bytes(arrays[name]))
    return f"{server.base}{prefix}/"


def cache_files(env):
    directory = env / "xdg" / "cdnn" / "tiny"
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


# --- the public API -------------------------------------------------------


def test_public_api():
    assert issubclass(CorruptDatasetError, DatasetError)
    assert issubclass(CorruptDatasetError, ValueError)
    assert issubclass(DatasetNotFoundError, DatasetError)
    assert issubclass(DatasetNotFoundError, FileNotFoundError)
    assert callable(fashion_mnist.load_data) and callable(mnist.load_data)
    for dataset in (fashion_mnist.DATASET, mnist.DATASET):
        assert [f.name for f in dataset.files] == list(NAMES)
        assert [f.shape for f in dataset.files] == [(60000, 28, 28), (60000,), (10000, 28, 28), (10000,)]
        assert all(base.endswith("/") for base in dataset.mirrors)


# --- IDX parsing ----------------------------------------------------------


@pytest.mark.parametrize("compress", [False, True], ids=["raw", "gz"])
def test_read_idx_round_trip(tmp_path, compress):
    array = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    path = tmp_path / "a"
    write_idx(path, array, compress=compress)
    got, digest = read_idx(path, (2, 3, 4))
    np.testing.assert_array_equal(got, array)
    assert got.dtype == np.uint8 and got.flags.writeable
    assert digest == hashlib.sha256(idx_bytes(array)).hexdigest()
    got, _ = read_idx(path)  # shape from the header alone
    assert got.shape == (2, 3, 4)


def bad_idx_cases():
    good = idx_bytes(np.arange(12, dtype=np.uint8).reshape(3, 4))
    return {
        "empty": (b"", "too short"),
        "short magic": (b"\x00\x00", "too short"),
        "wrong magic": (b"\x01\x02" + good[2:], "not an IDX file"),
        "gzip-like junk": (b"\x1f\x8b\x08\x00junk", "not a valid gzip file"),
        "float32 code": (good[:2] + b"\x0d" + good[3:], "0x0D (float32), expected 0x08"),
        "unknown code": (good[:2] + b"\x42" + good[3:], "0x42 (unknown)"),
        "zero dims": (b"\x00\x00\x08\x00", "0 dimensions"),
        "cut header": (good[:10], "truncated inside its header"),
        "truncated data": (good[:-1], "truncated"),
        "trailing bytes": (good + b"\x00", "trailing bytes"),
        "dims too big": (good[:4] + struct.pack(">2I", 3, 5) + good[12:], "truncated"),
        "dims too small": (good[:4] + struct.pack(">2I", 2, 4) + good[12:], "trailing bytes"),
    }


@pytest.mark.parametrize("case", sorted(bad_idx_cases()))
@pytest.mark.parametrize("compress", [False, True], ids=["raw", "gz"])
def test_read_idx_rejects_malformed(tmp_path, case, compress):
    data, message = bad_idx_cases()[case]
    if compress and case != "gzip-like junk":
        data = gzip.compress(data)
    path = tmp_path / "bad"
    path.write_bytes(data)
    with pytest.raises(IdxError, match=message.replace("(", r"\(").replace(")", r"\)")):
        read_idx(path)


def test_read_idx_checks_expected_shape(tmp_path):
    path = tmp_path / "a"
    write_idx(path, np.zeros((2, 3), np.uint8))
    with pytest.raises(IdxError, match=r"shape \(2, 3\), expected \(3, 2\)"):
        read_idx(path, (3, 2))


def test_read_idx_rejects_damaged_gzip(tmp_path):
    data = gzip.compress(idx_bytes(np.arange(200, dtype=np.uint8)))
    path = tmp_path / "a.gz"
    damaged = bytearray(data)
    damaged[-6] ^= 0xFF  # in the CRC-32 trailer
    path.write_bytes(bytes(damaged))
    with pytest.raises(IdxError, match="not a valid gzip file"):
        read_idx(path)
    path.write_bytes(data[: len(data) // 2])  # cut-off stream
    with pytest.raises(IdxError, match="not a valid gzip file|truncated"):
        read_idx(path)


def test_write_idx_validates_input(tmp_path):
    with pytest.raises(ValueError, match="`array`.*uint8"):
        write_idx(tmp_path / "a", np.zeros(3, np.float32))


# --- look-up order --------------------------------------------------------


@pytest.mark.parametrize("compress", [False, True], ids=["raw", "gz"])
def test_loads_from_system_dir(env, tiny, compress):
    write_set(env / "system", tiny, compress=compress)
    assert_loaded(fashion_mnist.load_data(), tiny)


def test_lookup_order(env, monkeypatch):
    # No hashes, so that each location may hold different (valid) data.
    sets = {where: make_arrays(seed) for seed, where in enumerate(["data", "cache", "system"])}
    dataset = make_dataset(env, sets["data"])
    dataset = dataclasses.replace(dataset, files=tuple(dataclasses.replace(f, sha256=None) for f in dataset.files))
    monkeypatch.setattr(fashion_mnist, "DATASET", dataset)

    write_set(env / "system", sets["system"])
    assert_loaded(fashion_mnist.load_data(), sets["system"])
    write_set(env / "xdg" / "cdnn" / "tiny", sets["cache"])
    assert_loaded(fashion_mnist.load_data(), sets["cache"])
    write_set(env / "data", sets["data"])
    monkeypatch.setenv("CDNN_DATA", str(env / "data"))
    assert_loaded(fashion_mnist.load_data(), sets["data"])
    # A per-dataset folder under CDNN_DATA comes before its top level.
    write_set(env / "data" / "tiny", sets["system"], compress=False)
    assert_loaded(fashion_mnist.load_data(), sets["system"])


def test_cdnn_data_dir_or_per_dataset_subdir(env, tiny, monkeypatch):
    monkeypatch.setenv("CDNN_DATA", str(env / "data"))
    write_set(env / "data" / "tiny", tiny, compress=False)
    assert_loaded(fashion_mnist.load_data(), tiny)
    monkeypatch.setenv("CDNN_DATA", str(env / "data" / "tiny"))
    assert_loaded(fashion_mnist.load_data(), tiny)


def test_files_may_come_from_different_places(env, tiny, monkeypatch):
    monkeypatch.setenv("CDNN_DATA", str(env / "data"))
    write_set(env / "data", tiny, compress=False, names=NAMES[:1])
    write_set(env / "xdg" / "cdnn" / "tiny", tiny, names=NAMES[1:2])
    write_set(env / "system", tiny, names=NAMES[2:])
    assert_loaded(fashion_mnist.load_data(), tiny)


def test_cache_defaults_to_home_dot_cache(env, tiny, monkeypatch):
    monkeypatch.delenv("XDG_CACHE_HOME")
    write_set(env / "home" / ".cache" / "cdnn" / "tiny", tiny)
    assert_loaded(fashion_mnist.load_data(), tiny)
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/path")  # ignored, per the XDG spec
    assert_loaded(fashion_mnist.load_data(), tiny)


def test_uncompressed_copy_preferred_to_gz(env, tiny):
    write_set(env / "system", tiny, compress=False)
    for name in NAMES:
        (env / "system" / (name + ".gz")).write_bytes(b"not gzip at all")
    assert_loaded(fashion_mnist.load_data(), tiny)


# --- bad local copies -----------------------------------------------------


@pytest.mark.parametrize(
    "where, fix",
    [
        ("data", "unset CDNN_DATA"),
        ("xdg/cdnn/tiny", "Delete it (rm '"),
        ("system", "apt-get install --reinstall dataset-tiny"),
    ],
)
def test_corrupt_copy_is_reported_with_its_fix(env, tiny, monkeypatch, where, fix):
    monkeypatch.setenv("CDNN_DATA", str(env / "data"))
    write_set(env / where, tiny)
    bad = tiny["train-labels-idx1-ubyte"].copy()
    bad[0] ^= 1  # valid IDX, wrong content
    path = env / where / "train-labels-idx1-ubyte.gz"
    path.write_bytes(gzip.compress(idx_bytes(bad)))
    with pytest.raises(CorruptDatasetError) as info:
        fashion_mnist.load_data()
    message = str(info.value)
    assert str(path) in message and fix in message
    assert "SHA-256 of its decompressed content" in message
    assert info.value.path == path


def test_corrupt_copy_is_not_skipped_for_a_later_location(env, tiny):
    write_set(env / "system", tiny)
    cache = env / "xdg" / "cdnn" / "tiny"
    write_set(cache, tiny, names=NAMES[:1])
    (cache / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(idx_bytes(tiny["train-images-idx3-ubyte"])[:-5]))
    with pytest.raises(CorruptDatasetError, match="truncated.*Delete it"):
        fashion_mnist.load_data()


def test_wrong_shape_copy_is_reported(env, tiny):
    write_set(env / "system", tiny)
    (env / "system" / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(np.zeros(5))))
    with pytest.raises(CorruptDatasetError, match=r"t10k-labels.*shape \(5,\), expected \(4,\)"):
        fashion_mnist.load_data()


def test_file_of_another_dataset_is_rejected(env, monkeypatch):
    # Where a dataset's own hashes are unknown (MNIST), a file of a dataset
    # whose hashes are known (Fashion-MNIST) is still recognised.
    arrays = make_arrays()
    dataset = make_dataset(env, arrays)
    other = make_arrays(seed=7)
    foreign = {hashlib.sha256(idx_bytes(other[n])).hexdigest(): f"the Other file {n}" for n in NAMES}
    dataset = dataclasses.replace(
        dataset,
        files=tuple(dataclasses.replace(f, sha256=None) for f in dataset.files),
        foreign_sha256=foreign,
    )
    monkeypatch.setattr(fashion_mnist, "DATASET", dataset)
    write_set(env / "system", other)
    with pytest.raises(CorruptDatasetError, match="it is the Other file train-images-idx3-ubyte"):
        fashion_mnist.load_data()


def test_mnist_rejects_fashion_mnist_files():
    fashion = {f.sha256 for f in fashion_mnist.DATASET.files}
    assert fashion <= set(mnist.DATASET.foreign_sha256)
    assert all(f.sha256 is None and len(f.gz_sha256) == 64 for f in mnist.DATASET.files)


# --- downloads ------------------------------------------------------------


def test_no_network_error_is_quick_and_says_what_to_do(env, tiny):
    start = time.perf_counter()
    with pytest.raises(DatasetNotFoundError) as info:
        fashion_mnist.load_data()
    assert time.perf_counter() - start < 5
    message = str(info.value)
    assert "not on this machine" in message and "no network" in message
    assert "train-images-idx3-ubyte" in message and "127.0.0.1:9" in message
    assert "apt-get install dataset-tiny" in message
    assert "CDNN_DATA" in message and str(env / "xdg" / "cdnn" / "tiny") in message
    assert isinstance(info.value, FileNotFoundError)
    assert cache_files(env) == []


def test_unresolvable_mirrors_fail_quickly(env, monkeypatch):
    # Name resolution failing is what a machine without network sees. ".invalid"
    # never resolves (RFC 2606), so this holds with or without a network.
    dataset = dataclasses.replace(mnist.DATASET, mirrors=("https://mirror-a.invalid/", "http://mirror-b.invalid/"))
    monkeypatch.setattr(mnist, "DATASET", dataset)
    start = time.perf_counter()
    with pytest.raises(DatasetNotFoundError) as info:
        mnist.load_data()
    assert time.perf_counter() - start < 10
    message = str(info.value)
    assert message.startswith("MNIST is not on this machine") and "no network" in message
    # Both mirrors tried once, not once per file.
    assert message.count("invalid/") == 2
    assert "copy the four files" in message and "CDNN_DATA" in message
    assert "apt-get" not in message  # no Debian package provides MNIST


def test_download_installs_checked_files(env, tiny, server, monkeypatch):
    base = serve_set(server, "good", tiny)
    dataset = dataclasses.replace(fashion_mnist.DATASET, mirrors=(DEAD_MIRROR, base))
    monkeypatch.setattr(fashion_mnist, "DATASET", dataset)
    old = os.umask(0o022)
    try:
        assert_loaded(fashion_mnist.load_data(), tiny)
    finally:
        os.umask(old)
    assert cache_files(env) == sorted(name + ".gz" for name in NAMES)
    # readable by all, as a file Keras' get_file writes (not mkstemp's 0600): caches are shared
    assert {stat.S_IMODE(p.stat().st_mode) for p in Path(env).rglob("*.gz")} == {0o644}
    # Now cached: loads with no mirror at all.
    server.files.clear()
    assert_loaded(fashion_mnist.load_data(), tiny)


def test_corrupt_download_leaves_nothing_in_cache(env, tiny, server, monkeypatch):
    bad = dict(tiny)
    bad["t10k-images-idx3-ubyte"] = tiny["t10k-images-idx3-ubyte"] + 1
    base = serve_set(server, "bad", bad)
    dataset = dataclasses.replace(fashion_mnist.DATASET, mirrors=(base,))
    monkeypatch.setattr(fashion_mnist, "DATASET", dataset)
    with pytest.raises(DatasetNotFoundError) as info:
        fashion_mnist.load_data()
    message = str(info.value)
    assert "download discarded" in message and "SHA-256" in message
    assert "t10k-images-idx3-ubyte.gz" in message
    # The files before it were good and are kept; the bad one left no trace.
    assert cache_files(env) == ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"]


def test_corrupt_mirror_falls_back_to_the_next(env, tiny, server, monkeypatch):
    bad = {name: array + 1 for name, array in tiny.items()}
    mirrors = (serve_set(server, "bad", bad), f"{server.base}nothing/", serve_set(server, "good", tiny))
    dataset = dataclasses.replace(fashion_mnist.DATASET, mirrors=mirrors)
    monkeypatch.setattr(fashion_mnist, "DATASET", dataset)
    assert_loaded(fashion_mnist.load_data(), tiny)
    assert cache_files(env) == sorted(name + ".gz" for name in NAMES)


def test_download_checked_by_gz_hash_when_content_hash_unknown(env, tiny, server, monkeypatch):
    base = serve_set(server, "good", tiny)
    gz = {n: hashlib.sha256(server.files[f"/good/{n}.gz"]).hexdigest() for n in NAMES}
    dataset = dataclasses.replace(fashion_mnist.DATASET, mirrors=(base,))
    files = tuple(dataclasses.replace(f, sha256=None, gz_sha256="0" * 64) for f in dataset.files)
    monkeypatch.setattr(fashion_mnist, "DATASET", dataclasses.replace(dataset, files=files))
    with pytest.raises(DatasetNotFoundError, match="expected 0000.*original .gz"):
        fashion_mnist.load_data()
    assert cache_files(env) == []
    files = tuple(dataclasses.replace(f, sha256=None, gz_sha256=gz[f.name]) for f in dataset.files)
    monkeypatch.setattr(fashion_mnist, "DATASET", dataclasses.replace(dataset, files=files))
    assert_loaded(fashion_mnist.load_data(), tiny)


class FlakyResponse:
    """A response that sends some bytes, then fails with `exc`."""

    def __init__(self, exc):
        self.exc = exc
        self.sent = False

    def read(self, n):
        if not self.sent:
            self.sent = True
            return b"\x1f\x8b partial"
        raise self.exc

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


@pytest.mark.parametrize("exc", [TimeoutError("timed out"), KeyboardInterrupt()], ids=["timeout", "interrupt"])
def test_interrupted_download_leaves_nothing_in_cache(env, tiny, monkeypatch, exc):
    monkeypatch.setattr(_fetch, "urlopen", lambda url, timeout: FlakyResponse(exc))
    expected = DatasetNotFoundError if isinstance(exc, Exception) else KeyboardInterrupt
    with pytest.raises(expected):
        fashion_mnist.load_data()
    assert cache_files(env) == []


def test_oversized_download_is_cut_off(env, tiny, server, monkeypatch):
    server.files["/big/train-images-idx3-ubyte.gz"] = b"\x1f\x8b" + bytes(200_000)
    dataset = dataclasses.replace(fashion_mnist.DATASET, mirrors=(f"{server.base}big/",))
    monkeypatch.setattr(fashion_mnist, "DATASET", dataset)
    with pytest.raises(DatasetNotFoundError, match="too large"):
        fashion_mnist.load_data()
    assert cache_files(env) == []


# --- the real data (Debian's dataset-fashion-mnist) -----------------------

needs_debian = pytest.mark.skipif(
    not DEBIAN_DIR.is_dir(),
    reason=f"{DEBIAN_DIR} absent: apt-get install dataset-fashion-mnist",
)


@needs_debian
def test_real_fashion_mnist(env):
    (x_train, y_train), (x_test, y_test) = fashion_mnist.load_data()
    assert x_train.shape == (60000, 28, 28) and y_train.shape == (60000,)
    assert x_test.shape == (10000, 28, 28) and y_test.shape == (10000,)
    assert {a.dtype for a in (x_train, y_train, x_test, y_test)} == {np.dtype(np.uint8)}
    np.testing.assert_array_equal(np.bincount(y_train), [6000] * 10)
    np.testing.assert_array_equal(np.bincount(y_test), [1000] * 10)
    assert y_train[0] == 9  # as keras.datasets.fashion_mnist gives it
    assert x_train.max() == 255 and x_train.min() == 0


@needs_debian
def test_real_fashion_mnist_uncompressed_copy_in_cdnn_data(env, monkeypatch):
    # Uncompressed copies pass the same (decompressed-content) hashes.
    data = env / "data" / "fashion-mnist"
    data.mkdir(parents=True)
    for name in ("train-labels-idx1-ubyte", "t10k-labels-idx1-ubyte"):
        with gzip.open(DEBIAN_DIR / (name + ".gz")) as f:
            (data / name).write_bytes(f.read())
    monkeypatch.setenv("CDNN_DATA", str(env / "data"))
    (_, y_train), (_, y_test) = fashion_mnist.load_data()
    assert y_train[0] == 9 and y_test.shape == (10000,)
    raw = bytearray((data / "t10k-labels-idx1-ubyte").read_bytes())
    raw[100] = (raw[100] + 1) % 10  # still valid labels, wrong content
    (data / "t10k-labels-idx1-ubyte").write_bytes(bytes(raw))
    with pytest.raises(CorruptDatasetError, match="t10k-labels-idx1-ubyte: the SHA-256.*unset CDNN_DATA"):
        fashion_mnist.load_data()


@needs_debian
def test_real_fashion_mnist_files_are_not_mnist(env, monkeypatch):
    monkeypatch.setenv("CDNN_DATA", str(DEBIAN_DIR))
    with pytest.raises(CorruptDatasetError, match="is the Fashion-MNIST file"):
        mnist.load_data()


def test_download_lines_on_stderr_unless_interactive_logging_is_off(env, tiny, server, monkeypatch, capsys, caplog):
    import cdnn

    base = serve_set(server, "good", tiny)
    dataset = dataclasses.replace(fashion_mnist.DATASET, mirrors=(base,))
    monkeypatch.setattr(fashion_mnist, "DATASET", dataset)
    cdnn.utils.disable_interactive_logging()
    try:
        with caplog.at_level("INFO", logger="cdnn"):
            assert_loaded(fashion_mnist.load_data(), tiny)
    finally:
        cdnn.utils.enable_interactive_logging()
    out = capsys.readouterr()
    assert out.out == "" and out.err == ""  # python -m cdnn --quiet prints its result line only
    assert [r.getMessage() for r in caplog.records] == [f"Downloading {base}{name}.gz" for name in NAMES]
    for path in Path(env).rglob("*.gz"):
        path.unlink()
    assert_loaded(fashion_mnist.load_data(), tiny)
    out = capsys.readouterr()
    assert out.out == "" and out.err.splitlines() == [f"Downloading {base}{name}.gz" for name in NAMES]


def test_locate_says_where_each_file_is(env, tiny, monkeypatch):
    dataset = fashion_mnist.DATASET
    assert _fetch.locate(dataset) == [None] * 4
    write_set(env / "system", tiny, names=NAMES[:2])
    write_set(env / "xdg" / "cdnn" / "tiny", tiny, names=NAMES[2:], compress=False)
    found = _fetch.locate(dataset)
    assert found == [
        ("system", env / "system" / (NAMES[0] + ".gz")),
        ("system", env / "system" / (NAMES[1] + ".gz")),
        ("cache", env / "xdg" / "cdnn" / "tiny" / NAMES[2]),
        ("cache", env / "xdg" / "cdnn" / "tiny" / NAMES[3]),
    ]
