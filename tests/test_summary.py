"""Tests for cdnn._summary: the text of Keras 3's model.summary().

The expected tables were produced by Keras 3's own rendering code
(``keras/src/utils/summary_utils.py`` driving ``rich``) and are written out
literally, so any difference in a character, a space or a number fails.
"""

import unicodedata

import pytest

from cdnn._summary import _cell_width, _readable_size, format_summary

FASHION_ROWS = [
    ("hidden", "Dense", "(None, 100)", 78500),
    ("output", "Dense", "(None, 10)", 1010),
]

FASHION_SUMMARY = """\
Model: "패션 MNIST 모델"
┏━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━┳━━━━━━━━━━━━━━━━━━━━━━━━┳━━━━━━━━━━━━━━━┓
┃ Layer (type)                    ┃ Output Shape           ┃       Param # ┃
┡━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━╇━━━━━━━━━━━━━━━━━━━━━━━━╇━━━━━━━━━━━━━━━┩
│ hidden (Dense)                  │ (None, 100)            │        78,500 │
├─────────────────────────────────┼────────────────────────┼───────────────┤
│ output (Dense)                  │ (None, 10)             │         1,010 │
└─────────────────────────────────┴────────────────────────┴───────────────┘
 Total params: 79,510 (310.59 KB)
 Trainable params: 79,510 (310.59 KB)
 Non-trainable params: 0 (0.00 B)"""


def _display_width(text):
    """Terminal cells, computed independently of the module under test."""
    return sum(
        0
        if unicodedata.category(c) in ("Mn", "Me", "Cf")
        else 2
        if unicodedata.east_asian_width(c) in ("W", "F")
        else 1
        for c in text
    )


def _table_lines(summary):
    """The lines of the box: from the top border to the bottom border."""
    lines = summary.splitlines()
    return lines[1 : next(i for i, l in enumerate(lines) if l.startswith("└")) + 1]


def test_fashion_mnist_summary_is_exactly_what_keras_prints():
    text = format_summary("패션 MNIST 모델", FASHION_ROWS, 79510, 0, line_length=76)
    assert text == FASHION_SUMMARY


def test_default_width_follows_a_non_terminal_80_columns(monkeypatch):
    # shutil.get_terminal_size() reads COLUMNS first; Keras uses columns - 4.
    monkeypatch.setenv("COLUMNS", "80")
    assert format_summary("패션 MNIST 모델", FASHION_ROWS, 79510, 0) == FASHION_SUMMARY


def test_default_width_is_capped_at_88_on_wide_terminals(monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    rows = [
        ("flatten", "Flatten", "(None, 784)", 0),
        ("dense", "Dense", "(None, 300)", 235500),
        ("dropout", "Dropout", "(None, 300)", 0),
        ("dense_1", "Dense", "(None, 10)", 3010),
    ]
    expected = """\
Model: "sequential"
┏━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━┳━━━━━━━━━━━━━━━━━━━━━━━━━━━━━┳━━━━━━━━━━━━━━━━━┓
┃ Layer (type)                         ┃ Output Shape                ┃         Param # ┃
┡━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━╇━━━━━━━━━━━━━━━━━━━━━━━━━━━━━╇━━━━━━━━━━━━━━━━━┩
│ flatten (Flatten)                    │ (None, 784)                 │               0 │
├──────────────────────────────────────┼─────────────────────────────┼─────────────────┤
│ dense (Dense)                        │ (None, 300)                 │         235,500 │
├──────────────────────────────────────┼─────────────────────────────┼─────────────────┤
│ dropout (Dropout)                    │ (None, 300)                 │               0 │
├──────────────────────────────────────┼─────────────────────────────┼─────────────────┤
│ dense_1 (Dense)                      │ (None, 10)                  │           3,010 │
└──────────────────────────────────────┴─────────────────────────────┴─────────────────┘
 Total params: 238,510 (931.68 KB)
 Trainable params: 238,510 (931.68 KB)
 Non-trainable params: 0 (0.00 B)"""
    assert format_summary("sequential", rows, 238510, 0) == expected


def test_cjk_layer_names_keep_columns_aligned():
    rows = [
        ("은닉층", "Dense", "(None, 100)", 78500),
        ("出力層", "Dense", "(None, 10)", 1010),
    ]
    expected = """\
Model: "모델"
┏━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━┳━━━━━━━━━━━━━━━━━━━━━━━━┳━━━━━━━━━━━━━━━┓
┃ Layer (type)                    ┃ Output Shape           ┃       Param # ┃
┡━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━╇━━━━━━━━━━━━━━━━━━━━━━━━╇━━━━━━━━━━━━━━━┩
│ 은닉층 (Dense)                  │ (None, 100)            │        78,500 │
├─────────────────────────────────┼────────────────────────┼───────────────┤
│ 出力層 (Dense)                  │ (None, 10)             │         1,010 │
└─────────────────────────────────┴────────────────────────┴───────────────┘
 Total params: 79,510 (310.59 KB)
 Trainable params: 79,510 (310.59 KB)
 Non-trainable params: 0 (0.00 B)"""
    text = format_summary("모델", rows, 79510, 0, line_length=76)
    assert text == expected
    assert {_display_width(line) for line in _table_lines(text)} == {76}


@pytest.mark.parametrize("line_length", [40, 60, 76, 88, 120])
def test_every_table_line_has_the_same_width(line_length):
    rows = [
        ("パッション・ファッション・モデルの隠れ層", "Dense", "(None, 100)", 78500),
        ("e\u0301te\u0301 (combining accents)", "Dropout", "(None, 100)", 0),
        ("出力", "Dense", "(None, 10)", 1010),
    ]
    text = format_summary("日本語のモデル", rows, 79510, 0, line_length=line_length)
    widths = {_display_width(line) for line in _table_lines(text)}
    assert widths == {line_length}


def test_a_word_longer_than_its_cell_is_cut_with_an_ellipsis():
    # Keras 3.15's own output for this layer at line_length=60 (rich's overflow="ellipsis")
    name = "a_very_long_layer_name_for_the_hidden_part"
    rows = [(name, "Dense", "(None, 100)", 78500)]
    expected = """\
Model: "m"
┏━━━━━━━━━━━━━━━━━━━━━━━━━━┳━━━━━━━━━━━━━━━━━━━┳━━━━━━━━━━━┓
┃ Layer (type)             ┃ Output Shape      ┃   Param # ┃
┡━━━━━━━━━━━━━━━━━━━━━━━━━━╇━━━━━━━━━━━━━━━━━━━╇━━━━━━━━━━━┩
│ a_very_long_layer_name_… │ (None, 100)       │    78,500 │
│ (Dense)                  │                   │           │
└──────────────────────────┴───────────────────┴───────────┘
 Total params: 78,500 (306.64 KB)
 Trainable params: 78,500 (306.64 KB)
 Non-trainable params: 0 (0.00 B)"""
    assert format_summary("m", rows, 78500, 0, line_length=60) == expected


def test_long_name_wraps_at_spaces_like_rich():
    rows = [("the first hidden layer of the network", "Dense", "(None, 100)", 78500)]
    lines = format_summary("m", rows, 78500, 0, line_length=60).splitlines()
    assert lines[4] == "│ the first hidden layer   │ (None, 100)       │    78,500 │"
    assert lines[5] == "│ of the network (Dense)   │                   │           │"
    assert lines[6].startswith("└")


def test_zero_param_layers_and_no_layers():
    rows = [
        ("flatten", "Flatten", "(None, 784)", 0),
        ("dropout", "Dropout", "(None, 784)", 0),
    ]
    lines = format_summary("empty", rows, 0, 0, line_length=76).splitlines()
    assert lines[4] == ("│ flatten (Flatten)               │ (None, 784)            │             0 │")
    assert lines[-3:] == [
        " Total params: 0 (0.00 B)",
        " Trainable params: 0 (0.00 B)",
        " Non-trainable params: 0 (0.00 B)",
    ]
    no_layers = format_summary("empty", [], 0, 0, line_length=76).splitlines()
    assert no_layers[3].startswith("┡") and no_layers[4].startswith("└")


def test_sizes_in_mb_and_non_trainable_params():
    text = format_summary("big", [("dense", "Dense", "(None, 1000)", 1_001_000)], 1_000_000, 1_000, line_length=76)
    assert text.splitlines()[-3:] == [
        " Total params: 1,001,000 (3.82 MB)",
        " Trainable params: 1,000,000 (3.81 MB)",
        " Non-trainable params: 1,000 (3.91 KB)",
    ]


def test_optimizer_params_line_is_counted_in_total():
    text = format_summary("m", FASHION_ROWS, 79510, 0, line_length=76, optimizer_params=159022)
    assert text.splitlines()[-4:] == [
        " Total params: 238,532 (931.77 KB)",
        " Trainable params: 79,510 (310.59 KB)",
        " Non-trainable params: 0 (0.00 B)",
        " Optimizer params: 159,022 (621.18 KB)",
    ]


@pytest.mark.parametrize(
    "num_bytes, expected",
    [
        (0, "0.00 B"),
        (1023, "1023.00 B"),
        (1024, "1.00 KB"),
        (318040, "310.59 KB"),
        (4 * 1_000_000, "3.81 MB"),
        (4 * 1024**3, "4.00 GB"),
    ],
)
def test_readable_size(num_bytes, expected):
    assert _readable_size(num_bytes) == expected


@pytest.mark.parametrize(
    "text, width",
    [("dense", 5), ("패션", 4), ("出力層", 6), ("e\u0301", 1), ("ﾃｽﾄ", 3), ("", 0)],
)
def test_cell_width(text, width):
    assert _cell_width(text) == width


def test_too_narrow_line_length_is_an_error():
    with pytest.raises(ValueError, match="line_length=10"):
        format_summary("m", FASHION_ROWS, 79510, 0, line_length=10)


# ------------------------------------------------------------------ Sequential.summary


def _model_summary(model):
    lines = []
    model.summary(line_length=76, print_fn=lines.append)
    return lines[0].splitlines()


def _tutorial_model(keras, optimizer="adam"):
    model = keras.Sequential(
        [
            keras.layers.Input(shape=(28, 28)),
            keras.layers.Flatten(),
            keras.layers.Dense(128, activation="relu"),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )
    model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


@pytest.mark.parametrize("optimizer, slots", [("adam", 2), ("rmsprop", 1), ("adagrad", 1), ("sgd", 0)])
def test_after_training_the_optimizer_params_are_listed_as_keras_3(tmp_path, optimizer, slots):
    """Keras 3 builds its optimizer at the first step: its slots, its iteration count (int64) and
    its learning rate then join the total (the Fashion-MNIST tutorial with Adam: 203,542 of 305,312)."""
    import numpy as np

    import cdnn as keras

    model = _tutorial_model(keras, optimizer)
    x = np.random.default_rng(0).random((64, 28, 28), dtype=np.float32)
    y = np.arange(64) % 10
    before = _model_summary(model)
    model.evaluate(x, y, verbose=0)  # evaluating does not build Keras' optimizer
    assert _model_summary(model) == before
    assert before[-3:] == [
        " Total params: 101,770 (397.54 KB)",
        " Trainable params: 101,770 (397.54 KB)",
        " Non-trainable params: 0 (0.00 B)",
    ]
    model.fit(x, y, epochs=1, verbose=0)
    count = 2 + slots * 101_770
    after = _model_summary(model)
    assert after[-4] == f" Total params: {101_770 + count:,} ({_readable_size(4 * (101_770 + count) + 4)})"
    assert after[-1] == f" Optimizer params: {count:,} ({_readable_size(4 * count + 4)})"
    if optimizer == "adam":
        assert after[-4:] == [
            " Total params: 305,312 (1.16 MB)",
            " Trainable params: 101,770 (397.54 KB)",
            " Non-trainable params: 0 (0.00 B)",
            " Optimizer params: 203,542 (795.09 KB)",
        ]
    # the state comes back with the model: so does the line
    model.save(tmp_path / "m.keras")
    assert _model_summary(keras.models.load_model(tmp_path / "m.keras"))[-4:] == after[-4:]


def test_an_unbuilt_dense_layer_shows_0_unbuilt():
    import cdnn as keras

    model = keras.Sequential([keras.layers.Dense(4), keras.layers.Dropout(0.5), keras.layers.Dense(2)])
    rows = [line for line in _model_summary(model) if line.startswith("│")]
    assert [row.split("│")[3].strip() for row in rows] == ["0 (unbuilt)", "0", "0 (unbuilt)"]
    assert all(row.split("│")[2].strip() == "?" for row in rows)
