"""The input table, written once: columns, their kinds, category vocabularies, null tokens.

Everything else (normaliser, generator, training, marshmallow schema, OpenAPI document,
docs) derives from the names defined here.
"""

from __future__ import annotations

from dataclasses import dataclass

N_COLUMNS = 100
COLUMNS: tuple[str, ...] = tuple(f"x{i}" for i in range(N_COLUMNS))
TARGET = "y"
ID_KEY = "id"

NUMERIC = "numeric"
CURRENCY = "currency"
PERCENT = "percent"
WEEKDAY = "weekday"
REGION = "region"
MONTH = "month"
GENDER = "gender"

#: Columns whose kind is not plain numeric; every other column is numeric.
SPECIAL_KINDS: dict[str, str] = {
    "x5": WEEKDAY,
    "x12": CURRENCY,
    "x31": REGION,
    "x63": PERCENT,
    "x81": MONTH,
    "x82": GENDER,
}

NUMERIC_KINDS = frozenset({NUMERIC, CURRENCY, PERCENT})
CATEGORICAL_KINDS = frozenset({WEEKDAY, REGION, MONTH, GENDER})

#: Strings that mean "missing", compared after trimming and lower-casing.
NULL_TOKENS = frozenset({"", "nan", "null", "none", "na", "n/a"})

WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
MONTHS = (
    "January", "February", "March", "April", "May", "June",
    "July", "August", "September", "October", "November", "December",
)
REGIONS = ("germany", "asia", "america", "japan")
GENDERS = ("Female", "Male")


def _aliases_weekday() -> dict[str, str]:
    out = {}
    for day in WEEKDAYS:
        out[day] = day
        out[day[:3]] = day
    return out


def _aliases_month() -> dict[str, str]:
    out = {}
    for month in MONTHS:
        out[month.lower()] = month
        out[month[:3].lower()] = month
    out["sept"] = "September"
    return out


#: Canonical levels per categorical kind, in the order of the source system.
LEVELS: dict[str, tuple[str, ...]] = {
    WEEKDAY: WEEKDAYS,
    REGION: REGIONS,
    MONTH: MONTHS,
    GENDER: GENDERS,
}

#: Accepted spellings (trimmed, lower-cased) → canonical level, per categorical kind.
ALIASES: dict[str, dict[str, str]] = {
    WEEKDAY: _aliases_weekday(),
    REGION: {r: r for r in REGIONS},
    MONTH: _aliases_month(),
    GENDER: {"female": "Female", "f": "Female", "male": "Male", "m": "Male"},
}


@dataclass(frozen=True)
class Column:
    """One input column: its name and kind."""

    name: str
    kind: str

    @property
    def is_numeric(self) -> bool:
        """True for plain numeric, currency and percent columns (imputed and scaled)."""
        return self.kind in NUMERIC_KINDS

    @property
    def is_categorical(self) -> bool:
        """True for weekday, region, month and gender columns (one-hot encoded)."""
        return self.kind in CATEGORICAL_KINDS


def kind_of(name: str) -> str:
    """Return the kind of column ``name``; raise KeyError for a name outside the schema."""
    if name not in _COLUMN_SET:
        raise KeyError(f"{name!r} is not a column of the schema (x0..x{N_COLUMNS - 1})")
    return SPECIAL_KINDS.get(name, NUMERIC)


_COLUMN_SET = frozenset(COLUMNS)
SCHEMA: tuple[Column, ...] = tuple(Column(name, kind_of(name)) for name in COLUMNS)
#: The 96 numeric columns in file order (x12 and x63 included): the imputer's input.
NUMERIC_COLUMNS: tuple[str, ...] = tuple(c.name for c in SCHEMA if c.is_numeric)
#: The 4 categorical columns in file order.
CATEGORICAL_COLUMNS: tuple[str, ...] = tuple(c.name for c in SCHEMA if c.is_categorical)


#: What an amount (x12) and percent points (x63) may look like as text, for messages and docs; the
#: grammar they follow is written in lib.core.normalize (AMOUNT_PATTERN, PERCENT_PATTERN).
AMOUNT_FORMS = ("5032.58", "5,032.58", "$5,032.58", "-$5,032.58", "$-5,032.58", "($5,032.58)")
PERCENT_FORMS = ("36.29", "36.29%", "36.29 %", "-36.29%")


def describe_kind(kind: str) -> str:
    """One line for error messages and docs: what a column of ``kind`` accepts."""
    if kind == NUMERIC:
        return "a number or a string holding a decimal number"
    if kind == CURRENCY:
        return ("an amount: a number, or text such as " + ", ".join(AMOUNT_FORMS)
                + " (commas only between groups of three digits, one sign, one $)")
    if kind == PERCENT:
        return "percent points: a number, or text such as " + ", ".join(PERCENT_FORMS) + " (one sign, one % at the end)"
    return "one of " + ", ".join(LEVELS[kind]) + " (any case" + (
        ", three-letter abbreviations allowed)" if kind in (WEEKDAY, MONTH) else
        (", f/m allowed)" if kind == GENDER else ")")
    )
