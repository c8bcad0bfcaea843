"""The thread chooser: runs of batches on all threads or on one, whichever is faster now."""

from __future__ import annotations

import os
import sys
from collections import deque
from typing import Optional

#: target wall time of one run of batches in C between two progress-bar updates
RUN_SECONDS = 0.1
#: a run is at most this many times longer (in batches) than the runs before it
RUN_GROWTH = 4
#: how often fit re-measures the thread count it is not using (seconds of training): first
#: FIRST_PROBE_SECONDS after measuring it, then at doubling intervals up to PROBE_SECONDS; the
#: intervals are CLEAR_GROWTH times longer each time a measurement finds one option CLEAR_RATIO
#: times slower per batch than the other, or more
FIRST_PROBE_SECONDS = 0.25
PROBE_SECONDS = 5.0
CLEAR_RATIO = 1.5
CLEAR_GROWTH = 4
#: a probe run is this fraction of a normal run's batches: about 12 ms, which costs about 10 ms
#: when one thread is the slower option (BIG-b128)
PROBE_FRACTION = 8  # (a divisor: probe runs have chunk // PROBE_FRACTION batches)
#: seconds of runs behind each thread count's timing before fit compares them: usually one probe
#: of an option no slower than the one in use (RUN_SECONDS / PROBE_FRACTION is 12.5 ms; shorter
#: where chunk // PROBE_FRACTION rounds down or an epoch ends), else probes back to back
MIN_MEASURED_SECONDS = 0.01
#: one thread must be this much faster per batch than all threads before fit uses it
SINGLE_THREAD_MARGIN = 1.15
#: an option's time per batch is the fastest of its last WINDOW runs (load only slows a run down)
WINDOW = 2
#: while one thread is in use, all threads are re-measured at least this often (seconds of training)
ONE_THREAD_PROBE_SECONDS = 1.0


class _ThreadChooser:
    """Chooses, run by run, between all of the core's threads and one thread.

    Both give bit-identical results. On an idle machine the threads win; on
    one whose cores are busy with other work, threads that wait for each
    other at every layer can be many times slower than one thread alone.
    So ``fit`` times both and uses the faster, re-measuring the other option
    with a short run ``FIRST_PROBE_SECONDS`` of training after it first
    measured it (itself after ``FIRST_PROBE_SECONDS`` of training on the
    option in use: short fits, such as a grid search's, are not worth a
    probe), then at doubling intervals up to every ``PROBE_SECONDS`` (a
    cost of about 1%). A probe of the slower option costs about half its
    length (10 ms in a 120 ms epoch at BIG-b128), so after a measurement
    that finds one option far behind (``CLEAR_RATIO``) the next interval is
    ``CLEAR_GROWTH`` times longer instead: a decision that clear is not
    overturned by noise, and early re-checks of it cost the most.

    Timings on shared machines are noisy: an option is trusted only after
    ``MIN_MEASURED_SECONDS`` of runs, its time per batch is the fastest of
    its last ``WINDOW`` runs (a run slowed by a moment of load moves no
    choice, and a probe after one does not inherit it), and one thread must
    beat all threads by ``SINGLE_THREAD_MARGIN``. A probe that changes the
    choice is checked again ``FIRST_PROBE_SECONDS`` later, and while one
    thread is in use the threads are re-measured at least every
    ``ONE_THREAD_PROBE_SECONDS``, in runs no longer than a probe's time on
    their last measured speed: a fit does not stay on one thread after one
    noisy probe. The model
    keeps its chooser from one ``fit`` to the next (same threads and batch
    size), so fitting epoch by epoch does not start from scratch each time:
    a single run timed during a moment of load would otherwise send whole epochs to one thread.

    It also sets how many batches each run trains (``run_batches``): as many
    as take about ``RUN_SECONDS``, learned from the runs so far (growing at
    most ``RUN_GROWTH`` times at once) and kept from one epoch and one ``fit``
    to the next. Each run costs a little on top of its batches (starting the
    threads, packing and unpacking the weights' copies, the Python between
    runs: about 0.4 ms at BIG-b128); learning it again at every epoch from one
    batch per run would take 7 runs of a 94-batch epoch instead of 2. Growing
    four times at once rather than two, it is learned in 4 runs (1, 4, 16, 64
    batches at BIG-b128), not 7.

    Each recorded run is kept in ``decisions`` (the last 256: threads,
    batches, seconds, whether a probe, the option chosen next and the probe
    interval); with the environment variable ``CDNN_THREAD_LOG`` set, each is
    also printed to standard error.
    """

    def __init__(self, threads: int) -> None:
        self.options = (threads, 1) if threads > 1 else (1,)
        self.per_batch: dict[int, float] = {}  # the fastest of each option's last WINDOW runs
        self.recent: dict[int, deque] = {t: deque(maxlen=WINDOW) for t in self.options}
        self.decisions: deque = deque(maxlen=256)
        self.log = bool(os.environ.get("CDNN_THREAD_LOG"))
        self.measured: dict[int, float] = {}
        self.since_probe = 0.0
        self.probe_interval: Optional[float] = None  # set once both options are measured
        self.probing = False  # the last pick was a probe of the option not in use
        self.warm = False  # the first run pays for allocating the workspace and starting threads
        self.chunk = 1  # batches per run that take about RUN_SECONDS with the option in use
        self.settled = False  # chunk has stopped growing: runs take about RUN_SECONDS

    def pick(self) -> int:
        """Threads for the next run of batches (a probe, short, when ``probing``)."""
        self.probing = False
        if len(self.options) == 1:
            return self.options[0]
        for t in self.options:
            if self.measured.get(t, 0.0) < MIN_MEASURED_SECONDS:
                first = self.measured.get(self.options[0], 0.0) < FIRST_PROBE_SECONDS
                if t != self.options[0] and (not self.settled or first):
                    # the option not in use is measured with probe-sized runs, and those are
                    # only long enough once the runs are: each run's fixed cost (0.4 ms at
                    # BIG-b128) makes 2-batch probes look 6-9% slower per batch. And not in the
                    # first FIRST_PROBE_SECONDS of training: a probe costs about half its length,
                    # 5% of a grid search's short fits if each fit measured one thread. After
                    # that, probes follow each other until the measurement is complete
                    return self.options[0]
                self.probing = t != self.options[0]
                return t
        best = self.best()
        if self.since_probe >= self.probe_interval:
            self.probing = True
            return next(t for t in self.options if t != best)
        return best

    def best(self) -> int:
        """The option to use now: one thread only when clearly faster."""
        if len(self.options) == 1 or any(t not in self.per_batch for t in self.options):
            return self.options[0]
        many, one = self.options
        return one if self.per_batch[one] * SINGLE_THREAD_MARGIN < self.per_batch[many] else many

    def run_batches(self, left: int) -> int:
        """Batches for the run just picked, ``left`` batches being left in the epoch."""
        if not self.probing:
            return min(self.chunk, left)
        k = max(1, self.chunk // PROBE_FRACTION)
        known = self.per_batch.get(self.options[0] if self.best() != self.options[0] else self.options[-1])
        if known and self.probe_interval is not None:  # a probe of a slower option takes no longer
            k = min(k, max(1, int(RUN_SECONDS / PROBE_FRACTION / known)))
        return min(k, left)

    def record(self, threads: int, seconds: float, batches: int) -> None:
        """Time of a run of ``batches`` batches on ``threads`` threads."""
        if not self.probing:
            # aim the next runs at RUN_SECONDS, growing at most RUN_GROWTH times at once (from
            # the learned length, not from an epoch's short last run); a probe says nothing of
            # the option in use
            target = int(batches * RUN_SECONDS / max(seconds, 1e-6))
            cap = RUN_GROWTH * max(batches, self.chunk)
            self.chunk = max(1, min(cap, target))
            # the warm-up run's time says nothing (allocation, starting threads)
            self.settled = self.settled or (self.warm and target <= cap)
        if not self.warm:
            self.warm = True
            self._log(threads, batches, seconds)
            return
        before = self.best()
        self.recent[threads].append(seconds / batches)
        self.per_batch[threads] = min(self.recent[threads])
        self.measured[threads] = self.measured.get(threads, 0.0) + seconds
        if self.probing and all(self.measured.get(t, 0.0) >= MIN_MEASURED_SECONDS for t in self.options):
            # early decisions rest on little: re-check soon, then less and less often; much less
            # often when the options are far apart; soon again after a change, and at least every
            # ONE_THREAD_PROBE_SECONDS on one thread
            many, one = self.options
            ratio = max(self.per_batch[one] / self.per_batch[many], self.per_batch[many] / self.per_batch[one])
            clear = ratio >= CLEAR_RATIO
            after = self.best()
            if self.probe_interval is None:  # the first measurement of the option not in use
                self.probe_interval = FIRST_PROBE_SECONDS * (CLEAR_GROWTH if clear else 1)
            elif after != before:
                self.probe_interval = FIRST_PROBE_SECONDS
            else:
                self.probe_interval = min(PROBE_SECONDS, (CLEAR_GROWTH if clear else 2) * self.probe_interval)
            if after == one:
                self.probe_interval = min(self.probe_interval, ONE_THREAD_PROBE_SECONDS)
        # the interval runs from the end of the last probe
        self.since_probe = 0.0 if self.probing else self.since_probe + seconds
        self._log(threads, batches, seconds)

    def _log(self, threads: int, batches: int, seconds: float) -> None:
        """Keep the run and the choice it leads to in ``decisions``; print it with ``CDNN_THREAD_LOG``."""
        self.decisions.append((threads, batches, seconds, self.probing, self.best(), self.probe_interval))
        if self.log:
            probe = " (probe)" if self.probing else ""
            print(
                f"cdnn threads: ran {threads} thread(s), {batches} batches in {seconds:.4f} s{probe}; "
                f"next {self.best()}, probe interval {self.probe_interval}",
                file=sys.stderr,
            )
