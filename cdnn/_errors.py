"""Error messages in Keras' shape: the argument, the value received, what is expected."""

from __future__ import annotations


def invalid(argument: str, value: object, expected: str) -> ValueError:
    """``Invalid value for argument `units`: expected a positive integer, received units=0``."""
    return ValueError(f"Invalid value for argument `{argument}`: expected {expected}, received {argument}={value!r}")


def unknown(kind: str, value: object, known) -> ValueError:
    """An unknown name of an optimizer, loss, activation, ... with the known ones listed."""
    return ValueError(f"Could not interpret {kind} identifier: {value!r}. Expected one of: {', '.join(sorted(known))}")
