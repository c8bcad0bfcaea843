"""Where cdnn's messages go: stdout/stderr while interactive logging is on, Python's logging otherwise.

Keras 3's switch of the same name (``keras.config.disable_interactive_logging``)
sends its download messages and progress bars to a logger instead of the
terminal; cdnn's does the same for its download lines and progress bars,
through the ``cdnn`` logger. Pure Python: ``cdnn.datasets`` uses it without the C core.
"""

from __future__ import annotations

import logging
import sys
from typing import Optional, TextIO

__all__ = ["enable_interactive_logging", "disable_interactive_logging", "is_interactive_logging_enabled", "print_msg"]

# the one process-wide switch, as Keras keeps it in its global state
_state = {"interactive": True}

logger = logging.getLogger("cdnn")


def enable_interactive_logging() -> None:
    """Write cdnn's messages (downloads, progress bars) to the terminal (the default)."""
    _state["interactive"] = True


def disable_interactive_logging() -> None:
    """Send cdnn's messages (downloads, progress bars) to the ``cdnn`` logger instead of the terminal."""
    _state["interactive"] = False


def is_interactive_logging_enabled() -> bool:
    """Whether cdnn writes its messages to the terminal (see :func:`disable_interactive_logging`)."""
    return _state["interactive"]


def print_msg(message: str, stream: Optional[TextIO] = None) -> None:
    """Write ``message`` and a line break to ``stream`` (stdout by default), or log it at INFO level."""
    if is_interactive_logging_enabled():
        out = stream if stream is not None else sys.stdout
        out.write(message + "\n")
        out.flush()
    else:
        logger.info(message)
