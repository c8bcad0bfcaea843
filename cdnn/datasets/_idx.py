"""Read IDX files (the MNIST format), raw or gzip-compressed.

An IDX file is a 4-byte magic number ``00 00 TT NN`` (``TT`` the element
type, ``NN`` the number of dimensions), then ``NN`` big-endian unsigned
32-bit dimension sizes, then the elements in C order. Only the unsigned-byte
type (``TT = 0x08``) is supported: it is the only one MNIST-like datasets use.

The file must hold exactly the number of bytes its header promises: a short
file is truncated, a longer one has trailing garbage, and both are errors.
"""

from __future__ import annotations

import gzip
import hashlib
import math
import os
import struct
import zlib
from typing import BinaryIO

import numpy as np

from cdnn._files import NotRegularFileError, open_regular

GZIP_MAGIC = b"\x1f\x8b"
UBYTE = 0x08
TYPE_NAMES = {
    0x08: "unsigned byte",
    0x09: "signed byte",
    0x0B: "int16",
    0x0C: "int32",
    0x0D: "float32",
    0x0E: "float64",
}
# No dataset read here comes near this; a header asking for more is corrupt
# (and would otherwise make us allocate it before noticing).
MAX_BYTES = 1 << 32
# Bytes read from a gzip stream at a time.
READ_CHUNK = 1 << 22


class IdxError(ValueError):
    """An IDX file is malformed. The message says what is wrong with it."""


def read_idx(path: str | os.PathLike[str], shape: tuple[int, ...] | None = None) -> tuple[np.ndarray, str]:
    """Read an IDX file of unsigned bytes, gzip-compressed or not.

    Parameters
    ----------
    path : str or os.PathLike
        The file. Compression is recognised by its first two bytes (the gzip
        magic number), not by its name.
    shape : tuple of int, optional
        The shape the header must give. Checked before the data is read.

    Returns
    -------
    array : numpy.ndarray
        Writable ``uint8`` array of the shape the header gives.
    sha256 : str
        Hex SHA-256 of the decompressed file (header and data).

    Raises
    ------
    IdxError
        The file is not a well-formed IDX file of unsigned bytes, is not a
        valid gzip stream, or its header does not give `shape`.
    """
    try:  # a named pipe would block, a device would never end: refused before reading
        raw = open_regular(os.fspath(path))
    except NotRegularFileError as exc:
        raise IdxError(str(exc)) from None
    with raw:
        compressed = raw.read(2) == GZIP_MAGIC
        raw.seek(0)
        if not compressed:
            return _read_stream(raw, shape, os.fstat(raw.fileno()).st_size)
        try:
            with gzip.GzipFile(fileobj=raw, mode="rb") as stream:
                return _read_stream(stream, shape, None)
        except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
            # CRC or length mismatch, cut-off stream, bad deflate data.
            raise IdxError(f"it is not a valid gzip file ({exc})") from exc


def _read_stream(stream: BinaryIO, shape: tuple[int, ...] | None, file_size: int | None) -> tuple[np.ndarray, str]:
    magic = stream.read(4)
    if len(magic) < 4:
        raise IdxError(f"it is {len(magic)} bytes long, too short for an IDX header")
    type_code, ndim = magic[2], magic[3]
    if magic[:2] != b"\x00\x00":
        raise IdxError(
            f"its magic number is 0x{magic.hex()}, which does not start with two zero bytes: it is not an IDX file"
        )
    if type_code != UBYTE:
        name = TYPE_NAMES.get(type_code, "unknown")
        raise IdxError(f"its element type code is 0x{type_code:02X} ({name}), expected 0x{UBYTE:02X} (unsigned byte)")
    if ndim == 0:
        raise IdxError("its header gives 0 dimensions, expected at least 1")
    dims_bytes = stream.read(4 * ndim)
    if len(dims_bytes) < 4 * ndim:
        raise IdxError(
            f"it is truncated inside its header ({4 + len(dims_bytes)} bytes, "
            f"the header of a {ndim}-dimensional IDX file is {4 + 4 * ndim})"
        )
    dims = struct.unpack(f">{ndim}I", dims_bytes)
    if shape is not None and dims != tuple(shape):
        raise IdxError(f"its header gives shape {dims}, expected {tuple(shape)}")

    header_size = 4 + 4 * ndim
    size = math.prod(dims)
    total = header_size + size
    if file_size is not None and file_size != total:
        what = "is truncated" if file_size < total else "has trailing bytes"
        raise IdxError(
            f"it {what}: its header gives shape {dims}, so it should be {total} bytes long, but it is {file_size}"
        )
    if total > MAX_BYTES:
        raise IdxError(f"its header gives shape {dims}: {total} bytes is implausible")
    # An empty shape's other dimensions are bounded too: NumPy refuses a shape such as
    # (0, 2**24, 2**24, 2**24) as too big, even with no element (found by fuzzing).
    if math.prod(d for d in dims if d) > MAX_BYTES:
        raise IdxError(f"its header gives shape {dims}, which is implausible")

    if file_size is not None:
        # The file is as long as the header says: read it into place.
        buffer = bytearray(total)
        buffer[:header_size] = magic + dims_bytes
        view = memoryview(buffer)[header_size:]
        got = 0
        while got < size:
            n = stream.readinto(view[got:])
            if not n:
                break
            got += n
        del view  # a live memoryview would pin the bytearray's size
    else:
        # A gzip stream's length is known only once it is read: grow the
        # buffer as data arrives, so that a small file whose header promises
        # gigabytes is refused as truncated without allocating them.
        buffer = bytearray(magic + dims_bytes)
        while len(buffer) < total:
            chunk = stream.read(min(total - len(buffer), READ_CHUNK))
            if not chunk:
                break
            buffer += chunk
        got = len(buffer) - header_size
    if got < size:
        raise IdxError(f"it is truncated: its header gives shape {dims} ({size} data bytes) but it holds only {got}")
    # Reading past the end also makes gzip check its CRC and length trailer.
    if stream.read(1):
        raise IdxError(f"it has trailing bytes after the {size} data bytes its header (shape {dims}) promises")
    digest = hashlib.sha256(buffer).hexdigest()
    array = np.frombuffer(buffer, dtype=np.uint8, offset=header_size).reshape(dims)
    return array, digest


def write_idx(path: str | os.PathLike[str], array: np.ndarray, *, compress: bool = False) -> None:
    """Write a ``uint8`` array as an IDX file (used by the tests and tools).

    Parameters
    ----------
    path : str or os.PathLike
        Destination file; overwritten.
    array : numpy.ndarray
        Array of dtype ``uint8`` with at least one dimension.
    compress : bool, default False
        Write it gzip-compressed.
    """
    array = np.ascontiguousarray(array)
    if array.dtype != np.uint8 or array.ndim == 0:
        raise ValueError(
            "Invalid value for argument `array`: expected a uint8 array with "
            f"at least one dimension, received dtype={array.dtype}, ndim={array.ndim}"
        )
    data = bytes([0, 0, UBYTE, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()
    if compress:
        data = gzip.compress(data)
    with open(path, "wb") as f:
        f.write(data)
