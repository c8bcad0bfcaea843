"""Text of ``model.summary()``, laid out exactly as Keras 3 prints it.

Keras 3 (``keras/src/utils/summary_utils.py``) renders the summary as a
``rich`` table; this module reproduces that table with the standard library
only.  The layout rules, all taken from Keras and ``rich``:

* The table is ``line_length`` cells wide.  By default that is
  ``min(88, terminal columns - 4)``, i.e. 76 when the output is not a
  terminal (``shutil`` then reports 80 columns).
* Keras asks for columns of ``45 %``, ``35 %`` and ``20 %`` of that width.
  ``rich`` adds one cell of padding on each side of every cell and four
  border cells, sees that the table is 10 cells too wide and takes those 10
  cells back from the columns, as evenly as it can (3, 4 and 3).
* The box is ``rich.box.HEAVY_HEAD``: heavy lines around the header, light
  lines below, and a light rule between rows (``show_lines=True``).
* "Param #" is right-aligned, the other columns left-aligned.  Text longer
  than its column is word-wrapped onto extra lines within the cell.
* Parameter counts use thousands separators; memory sizes count 4 bytes per
  float32 parameter and use units of 1024 with two decimals.

Widths are measured in terminal cells (see :func:`_cell_width`), so names in
Korean, Chinese or Japanese keep the columns aligned.
"""

from __future__ import annotations

import re
import shutil
import unicodedata

__all__ = ["format_summary"]

_HEADER = ("Layer (type)", "Output Shape", "Param #")
_RIGHT_ALIGNED = (False, False, True)
_POSITIONS = (0.45, 0.80, 1.0)  # Keras' column boundaries, as fractions
_DEFAULT_LINE_LENGTH = 88
# a graph that is not a plain chain gets a fourth column, a wider default and other boundaries
_GRAPH_HEADER = _HEADER + ("Connected to",)
_GRAPH_RIGHT_ALIGNED = _RIGHT_ALIGNED + (False,)
_GRAPH_POSITIONS = (0.3, 0.56, 0.74, 1.0)
_GRAPH_DEFAULT_LINE_LENGTH = 108
_CELL_PADDING = 1  # rich's default: one space each side of a cell
_BYTES_PER_PARAM = 4  # float32
_ITERATIONS_EXTRA_BYTES = 4  # an optimizer's iteration count is an int64 (TensorFlow backend): 8 bytes, not 4

# rich.box.HEAVY_HEAD, one row of (left, horizontal, crossing, right) per rule.
_TOP = ("┏", "━", "┳", "┓")
_HEAD_ROW = ("┃", " ", "┃", "┃")
_HEAD_RULE = ("┡", "━", "╇", "┩")
_BODY_ROW = ("│", " ", "│", "│")
_ROW_RULE = ("├", "─", "┼", "┤")
_BOTTOM = ("└", "─", "┴", "┘")

_WORD = re.compile(r"\s*\S+\s*")  # a word with the whitespace around it


def format_summary(
    model_name: str,
    rows: list[tuple],
    trainable_params: int,
    non_trainable_params: int,
    line_length: int | None = None,
    optimizer_params: int | None = None,
) -> str:
    """Return the text that Keras 3's ``model.summary()`` prints.

    Parameters
    ----------
    model_name : str
        The model's name, printed as ``Model: "name"``.
    rows : list of tuple (str, str, str, int or None)
        One ``(layer_name, class_name, output_shape, param_count)`` per layer,
        e.g. ``("hidden", "Dense", "(None, 100)", 78500)``; ``None`` for a
        layer not built yet (Keras prints ``0 (unbuilt)``). Rows of five
        items add the ``Connected to`` text (``"dense[0][0], input_b[0][0]"``
        or ``"-"``), which Keras shows for graphs that are not plain chains.
    trainable_params, non_trainable_params : int
        Parameter counts for the lines below the table.
    line_length : int, optional
        Total width of the table in terminal cells.  Defaults, as in Keras,
        to ``min(88, terminal columns - 4)``.
    optimizer_params : int, optional
        Number of optimizer variables (its slots, its iteration count and
        its learning rate).  When given, Keras adds an ``Optimizer params``
        line and counts them in the total; the iteration count is an int64.

    Returns
    -------
    str
        The summary, one line per ``\\n``, without a trailing newline.

    Raises
    ------
    ValueError
        If ``line_length`` is too small to hold the three columns.
    """
    graph = bool(rows) and len(rows[0]) == 5
    header, right = (_GRAPH_HEADER, _GRAPH_RIGHT_ALIGNED) if graph else (_HEADER, _RIGHT_ALIGNED)
    if line_length is None:
        columns = shutil.get_terminal_size().columns
        line_length = min(_GRAPH_DEFAULT_LINE_LENGTH if graph else _DEFAULT_LINE_LENGTH, columns - 4)
    widths = _column_widths(line_length, _GRAPH_POSITIONS if graph else _POSITIONS)

    lines = [f'Model: "{model_name}"']
    lines.append(_rule(_TOP, widths))
    lines.extend(_table_row(header, widths, _HEAD_ROW, right, align_bottom=True))
    lines.append(_rule(_HEAD_RULE, widths))
    for index, (name, class_name, shape, params, *connected) in enumerate(rows):
        if index:
            lines.append(_rule(_ROW_RULE, widths))
        cells = (
            f"{name} ({class_name})",
            shape,
            _format_count(params) if params is not None else "0 (unbuilt)",
            *connected,
        )
        lines.extend(_table_row(cells, widths, _BODY_ROW, right))
    lines.append(_rule(_BOTTOM, widths))

    counts = [("Trainable", trainable_params), ("Non-trainable", non_trainable_params)]
    sizes = [trainable_params * _BYTES_PER_PARAM, non_trainable_params * _BYTES_PER_PARAM]
    if optimizer_params is not None:
        counts.append(("Optimizer", optimizer_params))
        sizes.append(optimizer_params * _BYTES_PER_PARAM + _ITERATIONS_EXTRA_BYTES)
    total = sum(count for _, count in counts)
    for (label, count), size in zip([("Total", total)] + counts, [sum(sizes)] + sizes):
        lines.append(f" {label} params: {_format_count(count)} ({_readable_size(size)})")
    return "\n".join(lines)


def _format_count(count: int) -> str:
    """Format a parameter count with thousands separators: ``78,500``."""
    return f"{count:,}"


def _readable_size(num_bytes: float) -> str:
    """Format a size in bytes as Keras does: ``310.59 KB``, ``0.00 B``."""
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if num_bytes / 1024 < 1:
            return f"{num_bytes:.2f} {unit}"
        num_bytes /= 1024
    return f"{num_bytes:.2f} PB"


def _cell_width(text: str) -> int:
    """Return how many terminal cells ``text`` occupies.

    East-Asian wide and full-width characters take two cells; combining
    marks, format characters (such as the zero-width joiner) and Hangul
    medial/final jamo take none; everything else takes one.
    """
    if text.isascii():
        return len(text)
    width = 0
    for char in text:
        if unicodedata.category(char) in ("Mn", "Me", "Cf"):  # combining, format
            continue
        if "\u1160" <= char <= "\u11ff":  # jamo that join the preceding syllable
            continue
        width += 2 if unicodedata.east_asian_width(char) in ("W", "F") else 1
    return width


def _column_widths(line_length: int, positions: tuple = _POSITIONS) -> list[int]:
    """Return the content width of each column for a table ``line_length`` wide."""
    requested = []
    boundary = 0
    for position in positions:
        width = int(position * line_length) - boundary
        if width < 4:
            raise _too_narrow(line_length)
        requested.append(width)
        boundary += width

    # rich cannot fit the padded columns and the borders into line_length, so
    # it removes the excess from the columns in equal shares, rounding each
    # share with Python's round() and carrying the remainder to the right.
    padded = [width + 2 * _CELL_PADDING for width in requested]
    excess = sum(padded) + len(padded) + 1 - line_length
    widths = []
    for index, width in enumerate(padded):
        share = min(width, round(excess / (len(padded) - index)))
        excess -= share
        widths.append(width - share - 2 * _CELL_PADDING)
    if min(widths) < 1:
        raise _too_narrow(line_length)
    return widths


def _too_narrow(line_length: int) -> ValueError:
    return ValueError(
        "Insufficient console width to print summary: expected a larger "
        f"`line_length`, received line_length={line_length}"
    )


def _rule(chars: tuple[str, str, str, str], widths: list[int]) -> str:
    """Return a horizontal border line such as ``├────┼────┤``."""
    left, line, cross, right = chars
    spans = [line * (width + 2 * _CELL_PADDING) for width in widths]
    return left + cross.join(spans) + right


def _table_row(
    cells: tuple[str, ...],
    widths: list[int],
    chars: tuple[str, str, str, str],
    right_aligned: tuple = _RIGHT_ALIGNED,
    align_bottom: bool = False,
) -> list[str]:
    """Return the text lines of one table row, wrapping cells that are too long.

    Cells shorter than the row are filled with blank lines below their text,
    or above it when ``align_bottom`` is true (rich does that for headers).
    """
    left, _, cross, right = chars
    columns = [_wrap(text, width, align_right) for text, width, align_right in zip(cells, widths, right_aligned)]
    height = max(len(column) for column in columns)
    for column, width in zip(columns, widths):
        blank = [" " * width] * (height - len(column))
        if align_bottom:
            column[:0] = blank
        else:
            column.extend(blank)
    pad = " " * _CELL_PADDING
    separator = f"{pad}{cross}{pad}"
    return [left + pad + separator.join(parts) + pad + right for parts in zip(*columns)]


def _wrap(text: str, width: int, align_right: bool) -> list[str]:
    """Word-wrap ``text`` into lines of exactly ``width`` cells.

    Words go onto the next line when they do not fit, as in ``rich``; a word
    longer than the whole width gets a line of its own, cut short with an
    ellipsis (rich's ``overflow="ellipsis"``, Keras' setting).
    """
    lines: list[str] = []
    for paragraph in text.split("\n"):
        current = ""
        for word in _WORD.findall(paragraph):
            if _cell_width(current + word.rstrip()) <= width:
                current += word
                continue
            if current:
                lines.append(current)
            current = word
            if _cell_width(word.rstrip()) > width:
                lines.append(_split_at_width(word, width - 1)[0] + "…")
                current = ""
        if current or not lines:
            lines.append(current)

    aligned = []
    for line in lines:
        line = line.rstrip()
        padding = " " * (width - _cell_width(line))
        aligned.append(padding + line if align_right else line + padding)
    return aligned


def _split_at_width(text: str, width: int) -> tuple[str, str]:
    """Split ``text`` after as many characters as fit in ``width`` cells."""
    used = 0
    for index, char in enumerate(text):
        used += _cell_width(char)
        if used > width:
            split = max(index, 1)  # always make progress
            return text[:split], text[split:]
    return text, ""
