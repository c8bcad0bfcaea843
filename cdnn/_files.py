"""Small file-system helpers shared by model saving and the dataset cache (stdlib only)."""
from __future__ import annotations

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
