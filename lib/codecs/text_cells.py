"""Text cells of a columnar table (Arrow, Parquet, CSV): checked to be UTF-8, cells too long to
be a value left unread, and a column of numbers spelt as text converted by Arrow's kernels when
every cell is in its kind's accepted form (amounts and percentages matched against
``lib.core.normalize``'s grammar first), else handed to the normaliser cell by cell."""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from lib.core.errors import PayloadError
from lib.core.normalize import AMOUNT_PATTERN, PERCENT_PATTERN
from lib.core.schema import CURRENCY, NUMERIC, PERCENT

#: Bytes of text past which a cell of a consumed column is refused without being read: no number,
#: amount, percentage or category is spelt in more (JSON's longest honest forms are under 50).
MAX_CELL_TEXT = 256


def chunks_of(array: pa.ChunkedArray | pa.Array) -> list[pa.Array]:
    """The chunks of a chunked array, or the array alone."""
    return array.chunks if isinstance(array, pa.ChunkedArray) else [array]


@dataclass(frozen=True)
class LongText:
    """A text cell over MAX_CELL_TEXT bytes, handed on in place of its text: the normaliser refuses
    it as it refuses any value that is not text or a number, and its message shows the length."""

    size: int

    def __repr__(self) -> str:
        return f"<text of {self.size:,} bytes>"


def short_text(array: pa.ChunkedArray | pa.Array, name: str
                ) -> tuple[pa.ChunkedArray | pa.Array, dict[int, LongText]]:
    """A text column checked to be UTF-8, as UTF-8 strings (views cast to large strings), without
    its cells over MAX_CELL_TEXT bytes, which are never copied or read (a cast or a kernel over
    the whole column would copy every byte of them). Returns the shorter text and ``{row:
    LongText}`` for the cells left out (the text holds the other rows, in order)."""
    check_utf8(array, name)
    lengths = np.concatenate([value_lengths(chunk) for chunk in chunks_of(array)] or [np.empty(0, np.int64)])
    too_long = lengths > MAX_CELL_TEXT
    if too_long.any():  # a null slot may span bytes too: only the present cells count
        too_long &= pc.is_valid(array).to_numpy(zero_copy_only=False)
    if pa.types.is_string_view(array.type):
        array = _cast_views(array, too_long)
    if not too_long.any():
        return array, {}
    rows = np.flatnonzero(too_long)
    shared: dict[int, LongText] = {}  # one per length, shared by its rows
    long_cells = {row: shared.setdefault(size, LongText(size))
                  for row, size in zip(rows.tolist(), lengths[rows].tolist(), strict=True)}
    return array.filter(pa.array(~too_long)), long_cells


def _cast_views(array: pa.ChunkedArray | pa.Array, too_long: np.ndarray) -> pa.ChunkedArray | pa.Array:
    """A string_view column as large strings, its ``too_long`` cells null: views cannot be
    filtered, so those are nulled in place (the views and their text untouched, only the
    validity bitmap is new) and the cast copies the other cells only."""
    chunks, start = [], 0
    for chunk in chunks_of(array):
        dropped = too_long[start:start + len(chunk)]
        start += len(chunk)
        if dropped.any():
            kept = pc.is_valid(chunk).to_numpy(zero_copy_only=False) & ~dropped
            validity = pa.py_buffer(np.packbits(kept, bitorder="little"))
            views = chunk.buffers()[1].slice(chunk.offset * 16, len(chunk) * 16)  # a view is 16 bytes
            chunk = pa.Array.from_buffers(chunk.type, len(chunk), [validity, views, *chunk.buffers()[2:]])
        chunks.append(pc.cast(chunk, pa.large_string()))
    return pa.chunked_array(chunks, pa.large_string()) if isinstance(array, pa.ChunkedArray) else chunks[0]


def value_lengths(array: pa.Array) -> np.ndarray:
    """Each cell's length in bytes for a column of text (plain, large or view; whatever a null
    slot holds), read from its offsets or views without touching the text; zeros for other types."""
    t = pa.types
    span = slice(array.offset, array.offset + len(array))
    if not len(array):
        return np.zeros(0, dtype=np.int64)
    if t.is_string_view(array.type) or t.is_binary_view(array.type):
        views = np.frombuffer(array.buffers()[1], dtype=np.int32).reshape(-1, 4)
        return views[span, 0].astype(np.int64)
    narrow = t.is_string(array.type) or t.is_binary(array.type)
    if narrow or t.is_large_string(array.type) or t.is_large_binary(array.type):
        width = np.int32 if narrow else np.int64
        offsets = np.frombuffer(array.buffers()[1], dtype=width)[array.offset:array.offset + len(array) + 1]
        return np.diff(offsets).astype(np.int64, copy=False)
    return np.zeros(len(array), dtype=np.int64)


def check_utf8(array: pa.ChunkedArray | pa.Array, name: str) -> None:
    """Refuse text that is not UTF-8 (PayloadError naming the column): pyarrow converts and
    compares it as if it were, and a Python string cannot hold it."""
    for chunk in chunks_of(array):
        try:
            chunk.validate(full=True)
        except (pa.ArrowInvalid, pa.ArrowIndexError) as exc:
            reason = str(exc).strip().split("\n", 1)[0][:200]
            raise PayloadError(f"column {name!r} is not valid: {reason}") from None


# Amounts and percentages: every cell that is not blank must be well-formed before the clean-up,
# which would glue a malformed amount into a number ("$1,00" → 100). RE2 reads lib.core.normalize's
# patterns as they are written (its \s is narrower: a unicode space goes the careful route).
_GRAMMARS = {CURRENCY: f"^(?:{AMOUNT_PATTERN})$", PERCENT: f"^(?:{PERCENT_PATTERN})$"}


def clean_floats(array: pa.ChunkedArray | pa.Array, kind: str) -> np.ndarray | None:
    """A text column of a numeric kind converted by Arrow's kernels when every cell is a plain
    decimal in the kind's accepted form, or blank (missing); else None, and the normaliser's
    cell-by-cell route decides (a malformed amount, a null token, accounting parentheses,
    unicode, an overflow) and names what is wrong.

    Amounts and percentages are first matched against their grammar (lib.core.normalize's patterns);
    the clean-up is then lib.core.normalize's (numbers trimmed; amounts without ``$``, ``,`` and
    spaces; percent points trimmed, without a trailing ``%``); Arrow's parser then refuses every
    text that is not a decimal, except the names of NaN and infinity, which are sent back to the
    normaliser. Both parsers round correctly: the doubles are the same."""
    if kind not in (NUMERIC, CURRENCY, PERCENT):
        return None
    try:
        trimmed = pc.utf8_trim(array, " \t")
        blank = pc.equal(trimmed, "")
        shapes = pc.unique(_digit_shapes(trimmed)) if kind in _GRAMMARS else None
        if shapes is not None and not _well_formed(shapes, kind):
            return None
        text = trimmed
        if kind == CURRENCY:
            held = set("".join(filter(None, shapes.to_pylist()))) if len(shapes) <= _FEW_SHAPES else None
            for character in "$, \t":  # spaces inside an amount too; a pass only if needed
                if character in held if held is not None else pc.any(pc.match_substring(text, character)).as_py():
                    text = pc.replace_substring(text, character, "")
        elif kind == PERCENT:
            text = pc.utf8_rtrim(pc.if_else(pc.ends_with(text, "%"), pc.utf8_slice_codeunits(text, 0, -1), text),
                                 " \t")
        numbers = pc.cast(pc.if_else(blank, pa.scalar(None, text.type), text), pa.float64())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None
    values = numbers.to_numpy(zero_copy_only=False)
    missing = pc.fill_null(blank, True).to_numpy(zero_copy_only=False)
    # NaN from a cell that was not missing ("nan", a null token) and infinities ("1e999": out of
    # range, "inf": not a decimal) are the normaliser's to judge and report.
    if not np.array_equal(np.isnan(values), missing) or np.isinf(values).any():
        return None
    return values


def _well_formed(shapes: pa.Array, kind: str) -> bool:
    """Whether every cell shape that is not blank matches the kind's grammar. The grammars treat
    every ASCII digit alike, so a column is matched by its distinct shapes, its digits written as
    ``9`` (``"$-5,212.82"`` is ``"$-9,999.99"``): 10,000 amounts have a few dozen shapes, matched
    once each by Python's ``re`` (Arrow's RE2 compiles the pattern anew on every call)."""
    if len(shapes) > _FEW_SHAPES:  # a column of many shapes: RE2 over them all, in C
        matched = pc.or_kleene(pc.equal(shapes, ""), pc.match_substring_regex(shapes, _GRAMMARS[kind]))
        return pc.all(matched, skip_nulls=True, min_count=0).as_py()
    grammar = _GRAMMAR_RES[kind]
    return all(not shape or grammar.fullmatch(shape) for shape in shapes.to_pylist())


#: Distinct shapes past which a column is matched and searched by Arrow's kernels, not in Python.
_FEW_SHAPES = 1000
# The grammars for Python's re, with RE2's \s (tab, line feed, form feed, carriage return, space:
# not the vertical tab, which Python's \s takes) so that both accept exactly the same text.
_GRAMMAR_RES = {CURRENCY: re.compile(AMOUNT_PATTERN.replace(r"\s", "[\t\n\f\r ]")),
                PERCENT: re.compile(PERCENT_PATTERN.replace(r"\s", "[\t\n\f\r ]"))}


#: Byte -> byte: ASCII digits to ``9``, every other byte to itself (a UTF-8 sequence of more than
#: one byte never holds a byte below 0x80, so no character but a digit changes).
_DIGITS_AS_NINE = np.arange(256, dtype=np.uint8)
_DIGITS_AS_NINE[ord("0"):ord("9") + 1] = ord("9")


def _digit_shapes(text: pa.ChunkedArray | pa.Array) -> pa.ChunkedArray | pa.Array:
    """``text`` with its digits written as ``9``: its data buffer translated, its offsets and
    validity shared. Text of another layout than string or large_string is returned as it is."""
    shaped = []
    for chunk in chunks_of(text):
        if not (pa.types.is_string(chunk.type) or pa.types.is_large_string(chunk.type)):
            return text
        validity, offsets, data = chunk.buffers()
        if data is not None:
            data = pa.py_buffer(_DIGITS_AS_NINE[np.frombuffer(data, dtype=np.uint8)])
        shaped.append(pa.Array.from_buffers(chunk.type, len(chunk), [validity, offsets, data],
                                            chunk.null_count, chunk.offset))
    return pa.chunked_array(shaped, text.type) if isinstance(text, pa.ChunkedArray) else shaped[0]
