"""Tests for cdnn._progbar: Keras 3's Progbar output, character for character.

The expected strings follow keras/src/utils/progbar.py: a bold step count,
a green "done" bar and a white "to do" bar (ANSI codes) on a terminal,
"\\b" * previous width + "\\r" before each redraw, and plain text elsewhere.
"""

import io

import pytest

import cdnn._progbar as progbar_module
from cdnn._progbar import Progbar, _format_eta, _format_time, epoch_header

BOLD, GREEN, WHITE, RESET = "\x1b[1m", "\x1b[32m", "\x1b[37m", "\x1b[0m"
BAR = "━"


class TTY(io.StringIO):
    def isatty(self):
        return True


class Plain(io.StringIO):
    def isatty(self):
        return False


class FakeClock:
    def __init__(self, start=1000.0):
        self.now = start

    def __call__(self):
        return self.now


@pytest.fixture
def clock(monkeypatch):
    fake = FakeClock()
    monkeypatch.setattr(progbar_module, "_clock", fake)
    return fake


def run_epoch(bar, clock, steps=1500, seconds=4.4, values=None):
    """Step through an epoch: step 1 at 0.1 s, the rest evenly until `seconds`."""
    clock.now += 0.1
    bar.update(1, values)
    for step in range(2, steps + 1):
        clock.now += (seconds - 0.1) / (steps - 1)
        bar.update(step, values)


METRICS = [("accuracy", 0.8492), ("loss", 0.4244)]


def test_epoch_header():
    assert epoch_header(1, 5) == "Epoch 1/5"
    assert epoch_header(12, 100) == "Epoch 12/100"


def test_non_tty_writes_one_plain_line_at_the_end(clock):
    stream = Plain()
    bar = Progbar(1500, stateful_metrics=["accuracy", "loss"], stream=stream)
    run_epoch(bar, clock, values=METRICS)
    assert stream.getvalue() == ("1500/1500 ━━━━━━━━━━━━━━━━━━━━ 4s 3ms/step - accuracy: 0.8492 - loss: 0.4244\n")


def test_non_tty_writes_nothing_before_finalize(clock):
    stream = Plain()
    bar = Progbar(10, stream=stream)
    for step in range(1, 10):
        clock.now += 1.0
        bar.update(step, [("loss", 0.5)])
    assert stream.getvalue() == ""
    clock.now += 1.0
    bar.update(10, [("loss", 0.5)])
    assert stream.getvalue().count("\n") == 1
    assert "\r" not in stream.getvalue() and "\x1b" not in stream.getvalue()


def test_non_tty_one_line_per_epoch(clock):
    stream = Plain()
    for _ in range(3):
        bar = Progbar(100, stateful_metrics=["loss"], stream=stream)
        run_epoch(bar, clock, steps=100, seconds=2.0, values=[("loss", 0.25)])
    lines = stream.getvalue().split("\n")
    assert lines[-1] == ""
    assert lines[:-1] == ["100/100 ━━━━━━━━━━━━━━━━━━━━ 2s 19ms/step - loss: 0.2500"] * 3


def test_tty_redraws_in_place_with_colours(clock):
    stream = TTY()
    bar = Progbar(10, stateful_metrics=["loss"], stream=stream)
    clock.now += 1.0
    bar.update(1, [("loss", 0.75)])
    first = (
        f"\r{BOLD} 1/10{RESET} {GREEN}{BAR * 2}{RESET}{WHITE}{BAR * 18}{RESET} {BOLD}9s{RESET} 1s/step - loss: 0.7500"
    )
    assert stream.getvalue() == first
    visible = len(" 1/10 ") + 20 + len(" 9s 1s/step - loss: 0.7500")

    clock.now += 0.5
    bar.update(5, [("loss", 0.5)])
    second = (
        "\b" * visible + f"\r{BOLD} 5/10{RESET} {GREEN}{BAR * 10}{RESET}{WHITE}{BAR * 10}{RESET}"
        f" {BOLD}0s{RESET} 125ms/step - loss: 0.5000"
    )
    assert stream.getvalue() == first + second
    visible = len(" 5/10 ") + 20 + len(" 0s 125ms/step - loss: 0.5000")

    clock.now += 0.5
    bar.update(10, [("loss", 0.25)])
    third = stream.getvalue()[len(first + second) :]
    assert third.startswith("\b" * visible + "\r")
    assert third.endswith(
        f"{BOLD}10/10{RESET} {GREEN}{BAR * 20}{RESET}{WHITE}{RESET} {BOLD}2s{RESET} 111ms/step - loss: 0.2500\n"
    )


def test_tty_pads_a_shorter_line_with_spaces(clock):
    stream = TTY()
    bar = Progbar(10, stateful_metrics=["loss"], stream=stream)
    clock.now += 1.0
    bar.update(1, [("loss", 12345.0)])
    clock.now += 1.0
    stream.seek(0)
    stream.truncate()
    bar.update(2, [("loss", 0.5)])
    # "loss: 12345.0000" became "loss: 0.5000": four cells to blank out.
    assert stream.getvalue().endswith("loss: 0.5000    ")


def test_tty_redraw_is_rate_limited_but_finalize_always_draws(clock):
    stream = TTY()
    bar = Progbar(100, stream=stream)
    clock.now += 0.01
    bar.update(1)
    for step in range(2, 100):
        clock.now += 0.0001  # far below the 0.05 s interval
        bar.update(step)
    assert stream.getvalue().count("\r") == 1
    bar.update(100)
    assert stream.getvalue().count("\r") == 2
    assert stream.getvalue().endswith("\n")


def test_eta_while_in_progress_then_elapsed_time_at_the_end(clock):
    stream = TTY()
    bar = Progbar(1500, stream=stream)
    clock.now += 0.5
    bar.update(1)
    clock.now += 499 * 0.125  # the first step does not count in the estimate
    stream.seek(0)
    stream.truncate()
    bar.update(500)
    # 1000 steps left at 125 ms each.
    assert f" {BOLD}2:05{RESET} 125ms/step" in stream.getvalue()
    stream.seek(0)
    stream.truncate()
    clock.now += 1000 * 0.125
    bar.update(1500)
    assert stream.getvalue().endswith(f" {BOLD}188s{RESET} 125ms/step\n")


def test_verbose_2_writes_one_keras_line_at_the_end(clock):
    stream = TTY()
    bar = Progbar(1500, verbose=2, stateful_metrics=["accuracy", "loss"], stream=stream)
    clock.now += 0.1
    bar.update(1, METRICS)
    assert stream.getvalue() == ""
    run_epoch(bar, clock, values=METRICS)
    assert stream.getvalue() == ("1500/1500 - 4s - 3ms/step - accuracy: 0.8492 - loss: 0.4244\n")


def test_verbose_0_is_silent(clock):
    stream = TTY()
    bar = Progbar(10, verbose=0, stream=stream)
    run_epoch(bar, clock, steps=10, values=METRICS)
    assert stream.getvalue() == ""


def test_values_are_averaged_by_step_increments_unless_stateful(clock):
    stream = TTY()
    bar = Progbar(10, stateful_metrics=["acc"], stream=stream)
    clock.now += 1.0
    bar.update(1, [("loss", 1.0), ("acc", 0.1)])
    clock.now += 1.0
    bar.update(3, [("loss", 4.0), ("acc", 0.3)])  # loss weighted by 2 steps
    assert stream.getvalue().endswith(" - loss: 3.0000 - acc: 0.3000")


def test_finalize_shows_the_values_given(clock):
    stream = Plain()
    bar = Progbar(3, stream=stream)
    bar.update(1, [("loss", 1.0)])
    bar.update(2, [("loss", 1.0)])
    bar.update(3, [("loss", 0.125)])
    assert stream.getvalue().endswith(" - loss: 0.1250\n")


def test_tiny_and_negative_values(clock):
    stream = Plain()
    bar = Progbar(1, stateful_metrics=["a", "b", "c"], stream=stream)
    bar.update(1, [("a", 1e-4), ("b", -0.5), ("c", 0.0)])
    assert stream.getvalue().endswith(" - a: 1.0000e-04 - b: -0.5000 - c: 0.0000e+00\n")


def test_verbose_2_uses_scientific_format_for_negative_values_as_keras(clock):
    stream = Plain()
    bar = Progbar(1, verbose=2, stream=stream)
    bar.update(1, [("b", -0.5)])
    assert stream.getvalue() == "1/1 - 0s - 0s/step - b: -5.0000e-01\n"


def test_unknown_target(clock):
    stream = TTY()
    bar = Progbar(None, stream=stream)
    clock.now += 1.0
    bar.update(1, [("loss", 0.5)])
    clock.now += 2.75
    bar.update(12, [("loss", 0.5)])
    tail = stream.getvalue().split("\r")[-1]
    assert tail == f"     12/Unknown {BOLD}4s{RESET} 250ms/step - loss: 0.5000"
    bar.update(12, [("loss", 0.5)], finalize=True)
    assert stream.getvalue().endswith("\n")


def test_add_advances_by_n(clock):
    stream = Plain()
    bar = Progbar(4, stream=stream)
    clock.now += 1.0
    bar.add(2)
    clock.now += 1.0
    bar.add(2)
    assert stream.getvalue() == "4/4 ━━━━━━━━━━━━━━━━━━━━ 2s 500ms/step\n"


def test_default_stream_is_sys_stdout_at_call_time(clock, capsys):
    bar = Progbar(2)
    bar.update(1)
    bar.update(2)
    assert capsys.readouterr().out == "2/2 ━━━━━━━━━━━━━━━━━━━━ 0s 0s/step\n"


def test_stream_that_cannot_encode_the_bar(clock):
    class AsciiStream(Plain):
        encoding = "ascii"

        def write(self, text):
            text.encode(self.encoding)  # raises like a cp1252/ascii console
            return super().write(text)

    stream = AsciiStream()
    bar = Progbar(2, width=4, stream=stream)
    bar.update(2)
    assert stream.getvalue() == "2/2 ==== 0s 0s/step\n"


@pytest.mark.parametrize(
    "seconds, expected",
    [
        (0, " 0s/step"),
        (2.4, " 2s/step"),
        (1.0, " 1s/step"),
        (0.003, " 3ms/step"),
        (0.9996, " 1000ms/step"),
        (12e-6, " 12us/step"),
    ],
)
def test_format_time(seconds, expected):
    assert _format_time(seconds, "step") == expected


@pytest.mark.parametrize(
    "seconds, expected",
    [(0.4, "0s"), (42.9, "42s"), (60.0, "60s"), (62.5, "1:02"), (3605.0, "1:00:05")],
)
def test_format_eta(seconds, expected):
    assert _format_eta(seconds) == expected


def test_warm_up_is_not_drawn_and_left_out_of_the_estimate(clock):
    # fit's first run of batches also allocates the workspace and starts the threads: a
    # first ETA from it was far off (a 1 s epoch announced as 6 s)
    stream = TTY()
    bar = Progbar(375, stream=stream)
    clock.now += 0.02  # one batch, warm-up included
    bar.warm_up(1)
    assert stream.getvalue() == ""
    clock.now += 4 * 0.002  # the next run: 4 batches at 2 ms
    bar.update(5)
    assert f"{BOLD}  5/375{RESET}" in stream.getvalue()
    # 370 steps left at 2 ms each: 0.74 s, not 370 * 5.6 ms = 2 s
    assert f" {BOLD}0s{RESET} 2ms/step" in stream.getvalue()
    stream.seek(0)
    stream.truncate()
    clock.now += 370 * 0.002
    bar.update(375)
    # the final line's elapsed time includes the warm-up; the time per step leaves it out, as Keras
    assert stream.getvalue().endswith(f" {BOLD}1s{RESET} 2ms/step\n")


def test_without_a_warm_up_the_first_step_is_left_out_as_keras_does(clock):
    stream = TTY()
    bar = Progbar(100, stream=stream)
    clock.now += 1.0
    bar.update(1)
    assert f" {BOLD}1:39{RESET} 1s/step" in stream.getvalue()  # Keras: 99 steps at the first step's rate
    clock.now += 0.1
    bar.update(11)
    assert stream.getvalue().endswith(f" {BOLD}0s{RESET} 10ms/step")


def test_disabled_interactive_logging_sends_lines_to_the_logger(clock, caplog):
    import cdnn

    stream = TTY()
    cdnn.utils.disable_interactive_logging()
    try:
        with caplog.at_level("INFO", logger="cdnn"):
            bar = Progbar(10, stream=stream)
            for step in range(1, 11):
                clock.now += 1.0
                bar.update(step, [("loss", 0.5)])
    finally:
        cdnn.utils.enable_interactive_logging()
    assert stream.getvalue() == ""
    # one plain line, as on a file: no redraws, colours or carriage returns
    assert [r.getMessage() for r in caplog.records] == ["10/10 ━━━━━━━━━━━━━━━━━━━━ 10s 1s/step - loss: 0.5000"]


def test_fit_draws_its_bar_first_after_the_warm_up_run(monkeypatch):
    import re
    import sys

    import numpy as np

    import cdnn
    from cdnn.trainers import thread_chooser

    # a run-length target so long that runs grow RUN_GROWTH times each (1, 4, 16, ...) whatever the clock
    monkeypatch.setattr(thread_chooser, "RUN_SECONDS", 1e9)
    monkeypatch.setattr(progbar_module, "_is_interactive", lambda stream: True)
    screen = io.StringIO()
    monkeypatch.setattr(sys, "stdout", screen)
    rng = np.random.default_rng(0)
    x, y = rng.random((2000, 6)).astype(np.float32), rng.integers(0, 3, 2000)
    model = cdnn.Sequential([cdnn.layers.Input(shape=(6,)), cdnn.layers.Dense(3, activation="softmax")])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.fit(x, y, batch_size=10, epochs=2)
    monkeypatch.undo()
    epochs = screen.getvalue().split("Epoch ")[1:]
    drawn = [[int(n) for n in re.findall(r"\r\x1b\[1m\s*(\d+)/200", text)] for text in epochs]
    # epoch 1: not after the 1-batch warm-up run (its time per batch includes the start-up), but after
    # the next run of 4; epoch 2 runs warm, and draws after its first run
    assert drawn[0][0] == 5 and drawn[0][-1] == 200, drawn
    assert drawn[1][0] > 1 and drawn[1][-1] == 200, drawn


def test_fit_with_interactive_logging_off_prints_nothing(capsys, caplog):
    import numpy as np

    import cdnn

    x, y = np.random.default_rng(0).random((64, 4)).astype(np.float32), np.arange(64) % 2
    model = cdnn.Sequential([cdnn.layers.Input(shape=(4,)), cdnn.layers.Dense(2, activation="softmax")])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    cdnn.utils.disable_interactive_logging()
    try:
        with caplog.at_level("INFO", logger="cdnn"):
            model.fit(x, y, epochs=2, batch_size=16)
    finally:
        cdnn.utils.enable_interactive_logging()
    assert capsys.readouterr().out == ""
    messages = [r.getMessage() for r in caplog.records]
    assert messages[0] == "Epoch 1/2" and messages[2] == "Epoch 2/2" and len(messages) == 4
    assert messages[1].startswith("4/4 ━━━━━━━━━━━━━━━━━━━━ ") and "loss: " in messages[1]


def test_eta_follows_a_change_of_pace_within_a_second(clock):
    # on a busy machine fit may run its first batches on two threads at 100 ms each, then move to
    # one thread at 10 ms: the ETA follows the new pace, the time per step stays Keras' average
    stream = TTY()
    bar = Progbar(1000, stream=stream)
    clock.now += 0.1
    bar.warm_up(1)
    for step in range(2, 21):
        clock.now += 0.1
        bar.update(step)
    for step in range(30, 141, 10):
        clock.now += 0.1  # runs of 10 steps at 10 ms
        bar.update(step)
    line = stream.getvalue().split("\r")[-1]
    # 860 steps left at 10 ms: 8.6 s (the average since the warm-up, 22 ms, would say 18 s)
    assert f" {BOLD}8s{RESET} 22ms/step" in line, line
    # a steady pace gives the same ETA either way (see test_eta_while_in_progress_then_elapsed_time_at_the_end)
