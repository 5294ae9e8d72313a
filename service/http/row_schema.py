"""The input row of the HTTP API as a marshmallow schema, its cells' fields derived from ``lib.core.schema``.

The row schema derives from ``lib.core.schema`` (column names, kinds, vocabularies, null tokens)
and its fields convert cells with the same parsers as the serving path, so loading a row
with it gives the same values and the same messages. It is far too slow for every cell of a
large batch (about 1.5 s for 10,000 rows): serving uses the vectorised normaliser, and this
schema serves the docs (``service.http.openapi``) and the diagnosis of single rows.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from marshmallow import EXCLUDE, Schema, ValidationError, fields

from lib.core.errors import InvalidValue
from lib.core.normalize import (
    AMOUNT_PATTERN,
    NUMBER_PATTERN,
    PERCENT_PATTERN,
    parse_category,
    parse_currency,
    parse_number,
    parse_percent,
)
from lib.core.schema import (
    ALIASES,
    CURRENCY,
    ID_KEY,
    NULL_TOKENS,
    NUMERIC,
    PERCENT,
    SCHEMA,
    describe_kind,
)

# --- JSON Schema patterns (ECMA regex): lib/core/normalize.py's grammar, read as it is written ------


def _any_case(word: str) -> str:
    """``"nan"`` → ``"[Nn][Aa][Nn]"``: JSON Schema patterns have no case-insensitive flag."""
    return "".join(f"[{c.upper()}{c.lower()}]" if c.isalpha() else _escape(c) for c in word)


def _escape(char: str) -> str:
    return "\\" + char if char in r"\^$.|?*+()[]{}" else char


def _one_of_words(words) -> str:
    return "|".join(_any_case(w) for w in sorted(words, key=lambda w: (-len(w), w)))


_NULL_WORDS = sorted(t for t in NULL_TOKENS if t)
NULL_PATTERN = rf"^\s*({_one_of_words(_NULL_WORDS)})?\s*$"
_NUMBER_STRING = {kind: f"^(?:{pattern})$" for kind, pattern in
                  ((NUMERIC, NUMBER_PATTERN), (PERCENT, PERCENT_PATTERN), (CURRENCY, AMOUNT_PATTERN))}
_EXAMPLES = {NUMERIC: [0.042317, "14.75731742"], CURRENCY: ["$5,547.78", "($5,032.58)"], PERCENT: ["36.29%", 36.29]}
_PARSERS: dict[str, Callable[[object], float]] = {
    NUMERIC: parse_number, CURRENCY: parse_currency, PERCENT: parse_percent,
}


# --- Fields -------------------------------------------------------------------------------

class NumberCell(fields.Field):
    """A plain numeric, currency or percent cell; loads to a float (NaN = missing)."""

    def __init__(self, kind: str, **kwargs):
        self.kind = kind
        string = {"type": "string", "pattern": _NUMBER_STRING[kind]}
        metadata = {
            "description": f"{describe_kind(kind)}; missing: null, absent, or one of {', '.join(_NULL_WORDS)}",
            "anyOf": [{"type": "number"}, string, {"type": "string", "pattern": NULL_PATTERN}, {"type": "null"}],
            "examples": _EXAMPLES[kind],
        }
        super().__init__(allow_none=True, metadata=metadata, **kwargs)

    def _deserialize(self, value, attr, data, **kwargs) -> float:
        try:
            return _PARSERS[self.kind](value)
        except InvalidValue as exc:
            raise ValidationError(str(exc)) from exc


class CategoryCell(fields.Field):
    """A weekday, region, month or gender cell; loads to its canonical level (None = missing)."""

    def __init__(self, kind: str, **kwargs):
        self.kind = kind
        accepted = rf"^\s*({_one_of_words(ALIASES[kind])})\s*$"
        metadata = {
            "description": f"{describe_kind(kind)}; missing: null, absent, or one of {', '.join(_NULL_WORDS)}",
            "anyOf": [{"type": "string", "pattern": accepted}, {"type": "string", "pattern": NULL_PATTERN},
                      {"type": "null"}],
            "examples": sorted(set(ALIASES[kind].values()))[:2],
        }
        super().__init__(allow_none=True, metadata=metadata, **kwargs)

    def _deserialize(self, value, attr, data, **kwargs) -> str | None:
        try:
            return parse_category(self.kind, value)
        except InvalidValue as exc:
            raise ValidationError(str(exc)) from exc


class RowId(fields.Field):
    """A client's row id: a string or a finite number, echoed in that row's answer."""

    def __init__(self, **kwargs):
        metadata = {"description": "echoed in this row's result", "anyOf": [
            {"type": "string"}, {"type": "number"}, {"type": "null"}]}
        super().__init__(allow_none=True, metadata=metadata, **kwargs)

    def _deserialize(self, value, attr, data, **kwargs) -> str | float:
        if isinstance(value, str) or (
            isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        ):
            return value
        raise ValidationError("expected a string or a number")


# --- Schemas ------------------------------------------------------------------------------

class OpenSchema(Schema):
    """Unknown keys are ignored, and the OpenAPI document does not forbid them."""

    class Meta:
        unknown = EXCLUDE


def _cell(kind: str) -> fields.Field:
    return NumberCell(kind) if kind in _PARSERS else CategoryCell(kind)


#: One input row: x0..x99 by kind, plus the optional ``id``. Absent columns are missing values.
RowSchema = OpenSchema.from_dict(
    {**{c.name: _cell(c.kind) for c in SCHEMA}, ID_KEY: RowId()}, name="Row",
)
