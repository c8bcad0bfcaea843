"""Find a dataset's IDX files, check them, and download the missing ones.

Where each file is looked for, in order (the first copy found is used):

1. ``$CDNN_DATA/<dataset>/`` and then ``$CDNN_DATA/`` itself, so that
   ``CDNN_DATA`` may name either a directory that holds one folder per
   dataset (``fashion-mnist/``, ``mnist/``) or the dataset's files directly;
2. the user cache, ``$XDG_CACHE_HOME/cdnn/<dataset>/`` (``XDG_CACHE_HOME``
   defaults to ``~/.cache``);
3. the system copy, e.g. ``/usr/share/datasets/fashion-mnist/`` from Debian's
   ``dataset-fashion-mnist`` package;
4. a download from the dataset's mirrors into the cache.

In each directory a file may be gzip-compressed (``NAME.gz``) or not
(``NAME``); the uncompressed one is preferred, being faster to read.

Every file is checked: its IDX structure and shape, and the SHA-256 of its
decompressed bytes where that is known (so that recompressed copies, such as
Debian's, pass). A copy that fails is an error, never silently skipped in
favour of another copy or a download: a bad file in ``CDNN_DATA``, the cache
or the system directory is something to fix, and the error says how.

A download is written to a temporary file in the cache directory, checked,
and only then renamed (atomically) to its final name, so the cache never
holds a partial or unchecked file under a dataset file's name. A partial
download whose process was killed (``.NAME.HOST-PID.*.part``) is deleted by
the next download into that directory. Nothing here needs C or the rest of cdnn.
"""

from __future__ import annotations

import dataclasses
import hashlib
import http.client
import os
import socket
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable, Mapping

import numpy as np

from cdnn._files import create_temporary as _create_temporary
from cdnn._files import process_exists as _process_exists
from cdnn._io_utils import print_msg

from ._idx import IdxError, read_idx

# Seconds to wait for a mirror to connect or send more data. Short, so that
# a machine without a network learns so quickly.
TIMEOUT = 10.0
CHUNK = 1 << 20
# The download function; tests replace it to serve files without a network.
urlopen: Callable[..., object] = urllib.request.urlopen

Arrays = tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


class DatasetError(Exception):
    """Base class of the errors raised while loading a dataset."""


class DatasetNotFoundError(DatasetError, FileNotFoundError):
    """A dataset file is on this machine nowhere and could not be downloaded."""


class CorruptDatasetError(DatasetError, ValueError):
    """A dataset file was found but is malformed or has the wrong content.

    Attributes
    ----------
    path : pathlib.Path
        The file.
    problem : str
        What is wrong with it.
    """

    def __init__(self, path: Path, problem: str, fix: str) -> None:
        super().__init__(f"Bad dataset file {path}: {problem}. {fix}")
        self.path = path
        self.problem = problem


@dataclasses.dataclass(frozen=True)
class FileSpec:
    """One IDX file of a dataset.

    Attributes
    ----------
    name : str
        File name without ``.gz``, e.g. ``"train-images-idx3-ubyte"``.
    shape : tuple of int
        The shape its header must give.
    sha256 : str or None
        SHA-256 of the decompressed file, or None where it is not known.
    gz_sha256 : str or None
        SHA-256 of the original ``.gz`` on the mirrors. Used to check a
        download when `sha256` is None.
    """

    name: str
    shape: tuple[int, ...]
    sha256: str | None
    gz_sha256: str | None = None


@dataclasses.dataclass(frozen=True)
class Dataset:
    """Where a dataset lives and how to check it.

    Attributes
    ----------
    title : str
        Name for messages, e.g. ``"Fashion-MNIST"``.
    dirname : str
        Folder name under ``CDNN_DATA`` and the cache, e.g. ``"fashion-mnist"``.
    files : tuple of FileSpec
        ``x_train, y_train, x_test, y_test``, in that order.
    mirrors : tuple of str
        Base URLs (ending in ``/``) that serve ``NAME.gz``, tried in order.
    system_dir : str or None
        Directory where a system package installs the files.
    system_package : str or None
        The Debian package that installs `system_dir`.
    foreign_sha256 : Mapping of str to str
        Decompressed SHA-256 of files of *other* datasets, mapped to their
        description; a file matching one is rejected. Guards against
        ``CDNN_DATA`` pointing at the wrong dataset's files where this
        dataset's own hashes are not known.
    """

    title: str
    dirname: str
    files: tuple[FileSpec, ...]
    mirrors: tuple[str, ...]
    system_dir: str | None = None
    system_package: str | None = None
    foreign_sha256: Mapping[str, str] = dataclasses.field(default_factory=dict)


def cache_dir(dataset: Dataset) -> Path:
    """Return the user cache directory of `dataset` (it may not exist)."""
    base = os.environ.get("XDG_CACHE_HOME", "")
    # The XDG spec says to ignore a relative XDG_CACHE_HOME.
    root = Path(base) if os.path.isabs(base) else Path.home() / ".cache"
    return root / "cdnn" / dataset.dirname


def _search_dirs(dataset: Dataset) -> list[tuple[str, Path]]:
    """Return ``(kind, directory)`` pairs in look-up order."""
    dirs = []
    data = os.environ.get("CDNN_DATA", "")
    if data:
        dirs += [("CDNN_DATA", Path(data) / dataset.dirname), ("CDNN_DATA", Path(data))]
    dirs.append(("cache", cache_dir(dataset)))
    if dataset.system_dir:
        dirs.append(("system", Path(dataset.system_dir)))
    return dirs


def _find(dataset: Dataset, spec: FileSpec) -> tuple[str, Path] | None:
    for kind, directory in _search_dirs(dataset):
        for name in (spec.name, spec.name + ".gz"):
            path = directory / name
            if path.is_file():
                return kind, path
    return None


def locate(dataset: Dataset) -> list[tuple[str, Path] | None]:
    """Where each of `dataset`'s files is found now, in look-up order.

    Returns ``(kind, path)`` per file (kind ``"CDNN_DATA"``, ``"cache"`` or
    ``"system"``), ``None`` for a file found nowhere. Nothing is read or checked.
    """
    return [_find(dataset, spec) for spec in dataset.files]


def _fix(dataset: Dataset, kind: str, path: Path) -> str:
    if kind == "CDNN_DATA":
        return (
            f"Replace it with a good copy, or unset CDNN_DATA "
            f"(now {os.environ.get('CDNN_DATA')}) to use the other locations."
        )
    if kind == "cache":
        return f"Delete it (rm '{path}'); load_data() will then use another copy or download it again."
    if dataset.system_package:
        return (
            "Reinstall the package that provides it: "
            f"apt-get install --reinstall {dataset.system_package}; or set "
            "CDNN_DATA to a directory with good copies."
        )
    return "Replace it with a good copy, or set CDNN_DATA to a directory with good copies."


def _check(dataset: Dataset, spec: FileSpec, path: Path, gz_sha256: str | None = None) -> np.ndarray:
    """Read `path` and check it against `spec`; raise IdxError if it fails.

    `gz_sha256` is the SHA-256 of the file as downloaded; it is compared
    with ``spec.gz_sha256`` when ``spec.sha256`` is unknown.
    """
    array, digest = read_idx(path, spec.shape)
    if digest in dataset.foreign_sha256:
        raise IdxError(f"it is {dataset.foreign_sha256[digest]}, not {dataset.title}'s {spec.name}")
    if spec.sha256 is not None:
        if digest != spec.sha256:
            raise IdxError(f"the SHA-256 of its decompressed content is {digest}, expected {spec.sha256}")
    elif gz_sha256 is not None and spec.gz_sha256 is not None:
        if gz_sha256 != spec.gz_sha256:
            raise IdxError(f"its SHA-256 is {gz_sha256}, expected {spec.gz_sha256} (that of the original .gz)")
    return array


def _host() -> str:
    return socket.gethostname().replace(".", "_").replace("-", "_") or "host"


def _part_prefix(filename: str) -> str:
    """Prefix of a download's temporary file: ``.NAME.HOST-PID.`` (hidden, and says whose it is)."""
    return f".{filename}.{_host()}-{os.getpid()}."


def _remove_stale_parts(directory: Path) -> None:
    """Delete the partial downloads in `directory` whose process was killed on this host.

    A download in progress in another process keeps its file: only files
    whose writer no longer exists are removed.
    """
    host = _host()
    try:
        names = os.listdir(directory)
    except OSError:
        return
    for name in names:
        if not (name.startswith(".") and name.endswith(".part")) or name.count(".") < 4:
            continue
        owner = name[: -len(".part")].rsplit(".", 2)[1]  # .NAME.HOST-PID.RANDOM.part
        owner_host, _, pid = owner.rpartition("-")
        if owner_host != host or not pid.isdigit() or _process_exists(int(pid)):
            continue
        try:
            os.unlink(directory / name)
        except OSError:
            pass


def _download(dataset: Dataset, spec: FileSpec, dead: set[str], failures: list[str]) -> np.ndarray | None:
    """Download ``spec.name + '.gz'`` into the cache, checked; None if no mirror served it.

    Mirrors that could not be reached are added to `dead` and skipped from
    then on; every failure is appended to `failures`.
    """
    directory = cache_dir(dataset)
    filename = spec.name + ".gz"
    # A gzip stream is never much larger than its content.
    limit = 2 * (4 + 4 * len(spec.shape) + int(np.prod(spec.shape))) + (1 << 16)
    for base in dataset.mirrors:
        if base in dead:
            continue
        url = base + filename
        # stderr keeps stdout for results; silenced by cdnn.utils.disable_interactive_logging()
        print_msg(f"Downloading {url}", sys.stderr)
        try:
            response = urlopen(url, timeout=TIMEOUT)
        except urllib.error.HTTPError as exc:
            # The mirror answered; it may still serve the other files.
            failures.append(f"{url}: HTTP error {exc.code} {exc.reason}")
            continue
        except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
            dead.add(base)
            failures.append(f"{url}: {type(exc).__name__}: {getattr(exc, 'reason', exc)}")
            continue
        with response:
            try:
                directory.mkdir(parents=True, exist_ok=True)
                _remove_stale_parts(directory)
                fd, tmp = _create_temporary(directory, _part_prefix(filename), ".part")
            except OSError as exc:
                failures.append(f"cannot write to the cache directory {directory}: {exc}")
                return None
            try:
                gz_hash = hashlib.sha256()
                size = 0
                with os.fdopen(fd, "wb") as out:
                    while chunk := response.read(CHUNK):
                        size += len(chunk)
                        if size > limit:
                            raise IdxError(f"it is over {limit} bytes, too large")
                        gz_hash.update(chunk)
                        out.write(chunk)
                array = _check(dataset, spec, Path(tmp), gz_hash.hexdigest())
                os.replace(tmp, directory / filename)
                tmp = None
                return array
            except IdxError as exc:
                failures.append(f"{url}: download discarded: {exc}")
            except (http.client.HTTPException, OSError) as exc:
                # Cut off mid-transfer (timeout, reset): most likely the
                # network, so don't wait on this mirror again.
                dead.add(base)
                failures.append(f"{url}: download failed: {type(exc).__name__}: {exc}")
            finally:
                if tmp is not None:
                    try:
                        os.unlink(tmp)
                    except FileNotFoundError:
                        pass
    return None


def _not_found(dataset: Dataset, missing: list[FileSpec], failures: list[str], dead: set[str]) -> DatasetNotFoundError:
    if dataset.mirrors and len(dead) == len(dataset.mirrors):
        why = "no network: no mirror could be reached"
    else:
        why = "the download failed"
    cache = cache_dir(dataset)
    lines = [
        f"{dataset.title} is not on this machine and could not be downloaded ({why}).",
        "Missing: " + ", ".join(spec.name for spec in missing) + " (as NAME or NAME.gz)",
        "Looked in:",
    ]
    if not os.environ.get("CDNN_DATA"):
        lines.append("  CDNN_DATA: not set")
    for kind, directory in _search_dirs(dataset):
        state = "" if directory.is_dir() else " (does not exist)"
        lines.append(f"  {kind}: {directory}{state}")
    lines.append("Tried:")
    lines += [f"  {failure}" for failure in failures] or ["  no mirror"]
    lines.append("Provide the data in one of three ways:")
    if dataset.system_package:
        lines.append(f"  1. apt-get install {dataset.system_package}  (installs the files in {dataset.system_dir})")
    else:
        lines.append(f"  1. copy the four files (.gz or uncompressed) into {cache}")
    lines += [
        "  2. put the four files (.gz or uncompressed) in a directory and set CDNN_DATA"
        f" to it (or to its parent, with the files in {dataset.dirname}/)",
        f"  3. connect to the network and load again: the files are saved in {cache}",
    ]
    return DatasetNotFoundError("\n".join(lines))


def load(dataset: Dataset) -> Arrays:
    """Load `dataset` as ``((x_train, y_train), (x_test, y_test))``.

    Raises
    ------
    CorruptDatasetError
        A copy that was found is malformed or has the wrong content.
    DatasetNotFoundError
        Some files are on this machine nowhere and could not be downloaded.
    """
    arrays: dict[str, np.ndarray] = {}
    missing = []
    # Check every local copy before downloading anything.
    for spec in dataset.files:
        found = _find(dataset, spec)
        if found is None:
            missing.append(spec)
            continue
        kind, path = found
        try:
            arrays[spec.name] = _check(dataset, spec, path)
        except IdxError as exc:
            raise CorruptDatasetError(path, str(exc), _fix(dataset, kind, path)) from None
    dead: set[str] = set()
    failures: list[str] = []
    for spec in missing:
        array = None
        if len(dead) < len(dataset.mirrors):
            array = _download(dataset, spec, dead, failures)
        if array is None:
            raise _not_found(dataset, [s for s in missing if s.name not in arrays], failures, dead)
        arrays[spec.name] = array
    x_train, y_train, x_test, y_test = (arrays[spec.name] for spec in dataset.files)
    return (x_train, y_train), (x_test, y_test)
