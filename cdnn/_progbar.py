"""The training progress bar, drawn exactly as Keras 3's ``keras.utils.Progbar``.

On a terminal (``verbose=1``) the bar is redrawn in place, at most once per
``interval`` seconds::

    1500/1500 ━━━━━━━━━━━━━━━━━━━━ 4s 3ms/step - accuracy: 0.8492 - loss: 0.4244

The step count is bold, the done part of the bar green and the rest white
(ANSI colours, as Keras writes them).  While the epoch runs the first time
field is the estimated time left (``12s``, ``1:02``, ``1:00:05``); the final
line shows the elapsed time instead.

When the output is not a terminal (a file, a pipe, a CI log) only the final
line of each bar is written, once, without colours or carriage returns.
``verbose=2`` writes one line per bar in Keras' plain format::

    1500/1500 - 4s - 3ms/step - accuracy: 0.8492 - loss: 0.4244

Metric values are averaged over the steps (weighted by each update's step
increment), except names listed in ``stateful_metrics``, which are shown as
given.  A finalizing update always shows the values it is given.

The time per step leaves out the first step's time, as Keras does: it pays
for start-up work (in Keras the tracing, in cdnn the core's workspace and
threads).  ``fit`` updates the bar once per run of batches, not per batch, so
it marks the first run with :meth:`Progbar.warm_up` instead: the bar is first
drawn after it, with an estimate from the steps that followed.  The ETA
comes from the pace of about the last second (``ETA_WINDOW``), where Keras
uses the average since the start: the two agree while the pace is steady,
and when it changes (``fit`` moving to one thread on a busy machine) the ETA
follows within a second instead of staying off for the rest of the epoch.

While interactive logging is off (``cdnn.utils.disable_interactive_logging()``)
the bar writes each line it would draw to the ``cdnn`` logger instead.
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections import deque
from typing import Iterable, TextIO

import numpy as np

from cdnn import _io_utils

__all__ = ["Progbar", "epoch_header"]

# The clock, read through this module so that tests can replace it.
_clock = time.time

_BOLD = "\x1b[1m"
_GREEN = "\x1b[32m"
_WHITE = "\x1b[37m"
_RESET = "\x1b[0m"
_BAR_CHAR = "━"
#: seconds of recent progress the ETA is estimated from
ETA_WINDOW = 1.0


def epoch_header(epoch: int, epochs: int) -> str:
    """Return the line Keras prints before each epoch, e.g. ``Epoch 1/5``.

    Parameters
    ----------
    epoch : int
        The epoch number as shown, counting from 1.
    epochs : int
        The total number of epochs.

    Notes
    -----
    Keras prints this line only when ``epochs > 1`` and ``verbose`` is not 0.
    """
    return f"Epoch {epoch}/{epochs}"


class Progbar:
    """A progress bar for a known or unknown number of steps.

    Parameters
    ----------
    target : int or None
        Total number of steps expected, ``None`` if unknown.
    width : int, default 20
        Width of the bar, in characters.
    verbose : int, default 1
        0 silent, 1 progress bar, 2 one line when the bar is finalized.
    interval : float, default 0.05
        Minimum time in seconds between two redraws on a terminal.
    stateful_metrics : iterable of str, optional
        Names of values to display as given instead of averaging them.
    unit_name : str, default "step"
        Name of a step in the time-per-step field (``3ms/step``).
    stream : file-like, optional
        Where to write; ``sys.stdout`` (looked up at each write) by default.
        Whether it is a terminal is checked once, here.
    """

    def __init__(
        self,
        target: int | None,
        width: int = 20,
        verbose: int = 1,
        interval: float = 0.05,
        stateful_metrics: Iterable[str] | None = None,
        unit_name: str = "step",
        stream: TextIO | None = None,
    ) -> None:
        self.target = target
        self.width = width
        self.verbose = verbose
        self.interval = interval
        self.stateful_metrics = set(stateful_metrics or ())
        self.unit_name = unit_name
        self._stream = stream
        self._dynamic_display = _io_utils.is_interactive_logging_enabled() and _is_interactive(self.stream)
        # name -> [weighted sum, weight]; dicts keep the order names arrive in.
        self._values: dict[str, list[float]] = {}
        self._seen_so_far = 0
        self._start = _clock()
        self._last_update = -math.inf
        # (time, steps) the time per step is measured from: after the first step, or the warm-up
        self._rate_origin: tuple[float, int] | None = None
        # (time, steps) of the updates in the last ETA_WINDOW seconds, and the newest one before them
        self._recent: deque[tuple[float, int]] = deque([(self._start, 0)])
        self._prev_total_width = 0

    @property
    def stream(self) -> TextIO:
        """The stream the bar is written to."""
        return self._stream if self._stream is not None else sys.stdout

    def update(
        self,
        current: int,
        values: list[tuple[str, float]] | None = None,
        finalize: bool | None = None,
    ) -> None:
        """Record progress up to step ``current`` and redraw if it is time to.

        Parameters
        ----------
        current : int
            Number of steps done so far.
        values : list of (str, float), optional
            ``(name, value_for_last_step)`` pairs.  Names in
            ``stateful_metrics`` are displayed as given; the others are
            averaged over the steps seen so far.
        finalize : bool, optional
            Whether this is the last update of the bar.  Defaults to
            ``current >= target`` (never, when the target is unknown).
        """
        if finalize is None:
            finalize = self.target is not None and current >= self.target
        for name, value in values or ():
            # a metric with one value per class or threshold shows their mean, as Keras' bar
            self._record(name, float(np.mean(value)), current, finalize)
        self._seen_so_far = current

        now = _clock()
        time_per_unit = self._estimate_step_duration(current, now)
        recent_time_per_unit = self._recent_step_duration(current, now, time_per_unit)
        if self.verbose == 1:
            if not finalize and (not self._dynamic_display or now - self._last_update < self.interval):
                return
            self._write(self._redraw(current, now, time_per_unit, finalize, recent_time_per_unit))
        elif self.verbose == 2 and finalize and self._has_target():
            self._write(self._summary_line(current, now, time_per_unit))
        self._last_update = now

    def warm_up(self, current: int) -> None:
        """Record that the first ``current`` steps are done, without drawing.

        They paid for start-up work, so the time per step is measured from
        here on; the bar is drawn at the next update with that estimate.
        """
        self._seen_so_far = current
        self._rate_origin = (_clock(), current)
        self._recent = deque([self._rate_origin])

    def add(self, n: int, values: list[tuple[str, float]] | None = None) -> None:
        """Advance the bar by ``n`` steps (see :meth:`update`)."""
        self.update(self._seen_so_far + n, values)

    # -- bookkeeping -------------------------------------------------------

    def _record(self, name: str, value: float, current: int, finalize: bool) -> None:
        """Store one metric value, accumulating the average if it is stateless."""
        if name in self.stateful_metrics or finalize:
            self._values[name] = [value, 1]
            return
        steps = max(current - self._seen_so_far, 1)
        if name in self._values:
            self._values[name][0] += value * steps
            self._values[name][1] += steps
        else:
            self._values[name] = [value * steps, steps]

    def _estimate_step_duration(self, current: int, now: float) -> float:
        """Return the estimated seconds per step, ignoring the (slow) first step or warm-up."""
        if not current:
            return 0.0
        origin = self._rate_origin
        if origin is not None and current > origin[1]:
            time_per_unit = (now - origin[0]) / (current - origin[1])
        else:
            time_per_unit = (now - self._start) / current
        if current == 1 and origin is None:
            self._rate_origin = (now, 1)
            self._recent = deque()
        return time_per_unit

    def _recent_step_duration(self, current: int, now: float, average: float) -> float:
        """Return the seconds per step over about the last ``ETA_WINDOW`` seconds, and record this update."""
        recent = self._recent
        while len(recent) > 1 and now - recent[1][0] >= ETA_WINDOW:
            recent.popleft()
        time_per_unit = average
        if recent and current > recent[0][1]:
            time_per_unit = (now - recent[0][0]) / (current - recent[0][1])
        recent.append((now, current))
        return time_per_unit

    def _has_target(self) -> bool:
        return self.target is not None and self.target > 0

    # -- rendering ---------------------------------------------------------

    def _redraw(
        self,
        current: int,
        now: float,
        time_per_unit: float,
        finalize: bool,
        recent_time_per_unit: float | None = None,
    ) -> str:
        """Return the ``verbose=1`` output for this update."""
        colour = self._dynamic_display
        if self._has_target():
            count = _format_count(current, self.target)
            done = int(self.width * (current / self.target))
            done_bar = _BAR_CHAR * done
            rest_bar = _BAR_CHAR * (self.width - done)
            bar = _style(count, _BOLD, colour) + " "
            if done_bar:
                bar += _style(done_bar, _GREEN, colour)
            bar += _style(rest_bar, _WHITE, colour)
            visible = len(count) + 1 + len(done_bar) + len(rest_bar)
        else:
            bar = "%7d/Unknown" % current
            visible = len(bar)

        if self._has_target() and not finalize:
            pace = time_per_unit if recent_time_per_unit is None else recent_time_per_unit
            clock_text = _format_eta(pace * (self.target - current))
        else:
            clock_text = f"{now - self._start:.0f}s"  # elapsed time
        rest = _format_time(time_per_unit, self.unit_name)
        rest += self._format_values(signed=True)
        visible += 1 + len(clock_text) + len(rest)
        message = bar + " " + _style(clock_text, _BOLD, colour) + rest

        if self._dynamic_display:
            # Back to the start of the line, and blank out what the previous,
            # longer line left behind.
            message = "\b" * self._prev_total_width + "\r" + message
            message += " " * max(self._prev_total_width - visible, 0)
            self._prev_total_width = visible
        if finalize:
            message += "\n"
        return message

    def _summary_line(self, current: int, now: float, time_per_unit: float) -> str:
        """Return the ``verbose=2`` line written when the bar is finalized."""
        count = _format_count(current, self.target)
        line = f"{count} - {now - self._start:.0f}s -"
        line += _format_time(time_per_unit, self.unit_name)
        # Keras' verbose=2 line compares the value itself, not its magnitude,
        # with 1e-3 when choosing the number format.
        return line + self._format_values(signed=False) + "\n"

    def _format_values(self, signed: bool) -> str:
        """Return ``" - name: value"`` for every metric, in arrival order."""
        text = ""
        for name, (total, weight) in self._values.items():
            average = total / max(1, weight)
            magnitude = abs(average) if signed else average
            number = f"{average:.4f}" if magnitude > 1e-3 else f"{average:.4e}"
            text += f" - {name}: {number}"
        return text

    def _write(self, message: str) -> None:
        if not _io_utils.is_interactive_logging_enabled():
            text = message.replace("\b", "").replace("\r", "").strip()
            if text:
                _io_utils.logger.info(text)
            return
        stream = self.stream
        if stream is None:  # sys.stdout is None when the program runs with stdout closed (`>&-`), or pythonw
            return
        try:
            stream.write(message)
        except UnicodeEncodeError:  # e.g. a legacy Windows console code page
            encoding = getattr(stream, "encoding", None) or "ascii"
            message = message.replace(_BAR_CHAR, "=")
            stream.write(message.encode(encoding, "replace").decode(encoding))
        flush = getattr(stream, "flush", None)
        if flush is not None:
            flush()


def _is_interactive(stream: TextIO) -> bool:
    """Whether ``stream`` shows carriage returns and colours as a terminal does."""
    try:
        if stream.isatty():
            return True
    except (AttributeError, ValueError):  # no isatty(), or a closed file
        return False
    # Jupyter and PyCharm consoles are not TTYs but handle "\r" and ANSI codes.
    return stream is sys.stdout and ("ipykernel" in sys.modules or "PYCHARM_HOSTED" in os.environ)


def _style(text: str, code: str, colour: bool) -> str:
    """Wrap ``text`` in an ANSI style when ``colour`` is on."""
    return f"{code}{text}{_RESET}" if colour else text


def _format_count(current: int, target: int) -> str:
    """Return ``current/target`` with ``current`` padded to the target's width."""
    digits = int(math.log10(target)) + 1
    return f"%{digits}d/%d" % (current, target)


def _format_eta(seconds: float) -> str:
    """Format the estimated time left: ``42s``, ``1:02`` or ``1:00:05``."""
    if seconds > 3600:
        return "%d:%02d:%02d" % (seconds // 3600, (seconds % 3600) // 60, seconds % 60)
    if seconds > 60:
        return "%d:%02d" % (seconds // 60, seconds % 60)
    return "%ds" % seconds


def _format_time(time_per_unit: float, unit_name: str) -> str:
    """Format the time per step: `` 3ms/step``, `` 1s/step``, `` 12us/step``."""
    if time_per_unit >= 1 or time_per_unit == 0:
        return f" {time_per_unit:.0f}s/{unit_name}"
    if time_per_unit >= 1e-3:
        return f" {time_per_unit * 1e3:.0f}ms/{unit_name}"
    return f" {time_per_unit * 1e6:.0f}us/{unit_name}"
