"""Small file-system helpers shared by model saving and the dataset cache (stdlib only)."""

from __future__ import annotations

import errno
import os


def process_exists(pid: int) -> bool:
    """Whether process ``pid`` is alive (True when it cannot be told, so its files are kept)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, OSError):
        return True  # another user's process, or we cannot tell: keep its file
    return True


def create_temporary(directory, prefix: str, suffix: str) -> tuple[int, str]:
    """Create a new empty file ``prefix + random + suffix`` in ``directory``, open for writing.

    Unlike ``tempfile.mkstemp`` (mode 0600), the file gets the mode an ``open``
    would give (0666 less the umask): the model or dataset that replaces its
    target with it stays as readable as a file Keras writes (0644 under the
    usual umask), e.g. for other users of a shared cache or volume.
    Returns ``(fd, path)``; the random part has no dots.
    """
    import secrets

    for _ in range(100):
        path = os.path.join(os.fspath(directory), f"{prefix}{secrets.token_hex(6)}{suffix}")
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
        except FileExistsError:
            continue
        return fd, path
    raise FileExistsError(f"no free temporary name {prefix}*{suffix} in {directory}")


def filename(path, argument: str = "filepath") -> str:
    """``path`` (str, bytes or path-like) as a str, refusing an empty one with a message naming ``argument``."""
    try:
        name = os.fsdecode(os.fspath(path))
    except TypeError:
        raise TypeError(
            f"Invalid argument `{argument}`: expected a file path (str, bytes or os.PathLike), "
            f"received {type(path).__name__}"
        ) from None
    if not name:
        raise ValueError(f"Invalid value for argument `{argument}`: expected a file path, received an empty string")
    return name


def file_kind(mode: int) -> str:
    """What ``stat``'s ``st_mode`` says a file is, in words ("a folder", "a named pipe (FIFO)", ...)."""
    import stat

    for test, kind in (
        (stat.S_ISDIR, "a folder"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISFIFO, "a named pipe (FIFO)"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISREG, "a regular file"),
    ):
        if test(mode):
            return kind
    return "not a regular file"


class NotRegularFileError(OSError):
    """A path that names a folder, a device, a pipe or a socket where a regular file is needed."""

    def __init__(self, path: str, kind: str) -> None:
        super().__init__(errno.EINVAL, f"{path} is {kind}, not a regular file")
        self.path, self.kind = path, kind

    def __str__(self) -> str:
        return self.strerror


def open_regular(path: str):
    """``path`` opened for binary reading, refused before any byte is read unless it is a regular file.

    ``/dev/zero`` or ``/dev/urandom`` never end and a named pipe blocks until
    someone writes to it: the file is opened without blocking and checked with
    ``fstat`` on the descriptor itself (no window in which the path can change).
    """
    import stat

    fd = os.open(
        path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0) | getattr(os, "O_CLOEXEC", 0)
    )
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise NotRegularFileError(path, file_kind(st.st_mode))
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def save_target(path: str) -> tuple[str, int | None]:
    """Where a save to ``path`` writes, and the permission bits to give the new file (None: a new file).

    A symbolic link is written through: the file it points to is replaced (as
    ``open(path, "w")`` would do), the link stays. A folder, a device, a pipe
    or a socket is refused: a save replaces its target by renaming a new file
    over it, which must never replace ``/dev/null`` or a pipe someone reads.
    """
    import stat

    target = os.path.realpath(path) if os.path.islink(path) else path
    try:
        st = os.stat(target)
    except FileNotFoundError:
        return target, None
    if stat.S_ISDIR(st.st_mode):
        raise IsADirectoryError(errno.EISDIR, "is a folder, expected a file path", path)
    if not stat.S_ISREG(st.st_mode):
        raise NotRegularFileError(path, file_kind(st.st_mode))
    return target, stat.S_IMODE(st.st_mode) & 0o777


#: a temporary file's name keeps this many bytes of its target's name; longer names are shortened
#: (with a hash, so that the name stays unique) to keep the temporary within 255 bytes
TEMP_NAME_BYTES = 100


def temp_stem(name: str) -> str:
    """The part of a temporary file's name that stands for its target ``name`` (at most ~100 bytes)."""
    raw = os.fsencode(name)
    if len(raw) <= TEMP_NAME_BYTES:
        return name
    import hashlib

    head = raw[: TEMP_NAME_BYTES - 20]
    while head and head[-1] & 0xC0 == 0x80:  # not inside a UTF-8 character
        head = head[:-1]
    if head and head[-1] >= 0xC0:
        head = head[:-1]
    return os.fsdecode(head) + "~" + hashlib.sha256(raw).hexdigest()[:16]
