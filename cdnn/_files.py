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
