"""Keras' default object names: ``dense``, ``dense_1``, ``dense_2``, ... per process."""

from __future__ import annotations

import collections
import re

_uids: collections.defaultdict[str, int] = collections.defaultdict(int)


def snake_case(name: str) -> str:
    """``"Sequential"`` -> ``"sequential"``, ``"LeakyReLU"`` -> ``"leaky_re_lu"`` (as Keras)."""
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


def unique_name(prefix: str) -> str:
    """The first ``prefix`` is returned as is, the next ones get ``_1``, ``_2``, ..."""
    name = prefix if _uids[prefix] == 0 else f"{prefix}_{_uids[prefix]}"
    _uids[prefix] += 1
    return name


def reset() -> None:
    """Forget the names handed out (``cdnn.utils.clear_session``)."""
    _uids.clear()
