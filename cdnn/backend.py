"""``keras.backend``: the session helpers Keras scripts call (``clear_session``)."""

from __future__ import annotations

from cdnn.utils import clear_session

__all__ = ["clear_session"]
