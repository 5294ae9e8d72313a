"""Every normalisation rule of SPEC §5, as scalar parsers and as column functions."""

import math

import numpy as np
import pytest

from lib.errors import InvalidValue
from lib.normalize import (
    normalize_categorical,
    normalize_column,
    normalize_numeric,
    parse_category,
    parse_currency,
    parse_number,
    parse_percent,
)
from lib.schema import GENDER, LEVELS, MONTH, REGION, WEEKDAY, kind_of

MISSING = [None, "", "   ", "nan", "NaN", "null", "NULL", "None", "na", "NA", "n/a", "N/A", " nan ", math.nan]
NOT_NUMBERS = [True, False, {}, [], [1], {"a": 1}, "abc", "1,5", "0x10", "1_000", "inf", "-Infinity", "1e",
               "..", "--1", float("inf"), float("-inf"), 10**400, "1e400"]


@pytest.mark.parametrize(("value", "expected"), [
    (1, 1.0), (-2.5, -2.5), (0, 0.0), ("14.75731742", 14.75731742), (" 3.5 ", 3.5), ("-0.25", -0.25),
    ("+7", 7.0), (".5", 0.5), ("5.", 5.0), ("1e3", 1000.0), ("-2.5E-2", -0.025), (1e300, 1e300),
])
def test_parse_number_valid(value, expected):
    assert parse_number(value) == expected


@pytest.mark.parametrize("value", MISSING)
def test_missing_tokens_are_nan_for_every_numeric_kind(value):
    assert math.isnan(parse_number(value))
    assert math.isnan(parse_currency(value))
    assert math.isnan(parse_percent(value))


@pytest.mark.parametrize("value", NOT_NUMBERS)
def test_parse_number_invalid(value):
    with pytest.raises(InvalidValue):
        parse_number(value)


@pytest.mark.parametrize(("value", "expected"), [
    ("$6,882.34", 6882.34), ("$6,882.34 ", 6882.34), ("$-5,032.58", -5032.58), ("-$5,032.58", -5032.58),
    ("($5,032.58)", -5032.58), ("5032.58", 5032.58), ("$ 1,000", 1000.0), (" $12 ", 12.0), (42, 42.0),
    (-3.5, -3.5), ("$1,234,567.89", 1234567.89), ("(12)", -12.0),
])
def test_parse_currency_valid(value, expected):
    assert parse_currency(value) == pytest.approx(expected, abs=0, rel=1e-15)


@pytest.mark.parametrize("value", ["$", "$abc", "(-$5)", "$5.0.0", "€5", "5 USD", True, [], "()", "$inf"])
def test_parse_currency_invalid(value):
    with pytest.raises(InvalidValue, match="amount|finite|range"):
        parse_currency(value)


@pytest.mark.parametrize(("value", "expected"), [
    ("62.59%", 62.59), ("36.29 %", 36.29), ("36.29", 36.29), (36.29, 36.29), (" 0% ", 0.0), ("-1.5%", -1.5),
    (100, 100.0),
])
def test_parse_percent_valid(value, expected):
    # Percent points: never divided by 100.
    assert parse_percent(value) == expected


@pytest.mark.parametrize("value", ["%", "36%.29", "abc%", "36.29%%", True, {}, "36,29%"])
def test_parse_percent_invalid(value):
    with pytest.raises(InvalidValue):
        parse_percent(value)


@pytest.mark.parametrize(("kind", "value", "expected"), [
    (WEEKDAY, "monday", "monday"), (WEEKDAY, "MONDAY", "monday"), (WEEKDAY, " Sun ", "sunday"),
    (WEEKDAY, "thu", "thursday"), (WEEKDAY, "Sat", "saturday"),
    (MONTH, "January", "January"), (MONTH, "jan", "January"), (MONTH, "SEPT", "September"),
    (MONTH, "sep", "September"), (MONTH, " december ", "December"), (MONTH, "May", "May"),
    (REGION, "germany", "germany"), (REGION, "ASIA", "asia"), (REGION, " Japan", "japan"),
    (REGION, "America", "america"),
    (GENDER, "Female", "Female"), (GENDER, "male", "Male"), (GENDER, "F", "Female"), (GENDER, " m ", "Male"),
])
def test_parse_category_valid(kind, value, expected):
    assert parse_category(kind, value) == expected


@pytest.mark.parametrize("kind", [WEEKDAY, MONTH, REGION, GENDER])
@pytest.mark.parametrize("value", MISSING)
def test_parse_category_missing(kind, value):
    assert parse_category(kind, value) is None


@pytest.mark.parametrize(("kind", "value"), [
    (WEEKDAY, "mondays"), (WEEKDAY, "mo"), (WEEKDAY, 1), (MONTH, "Janu"), (MONTH, 3), (REGION, "europe"),
    (REGION, "usa"), (GENDER, "other"), (GENDER, True), (WEEKDAY, ["monday"]), (MONTH, {"m": 1}),
])
def test_parse_category_invalid_names_accepted_values(kind, value):
    with pytest.raises(InvalidValue, match="accepted: ") as info:
        parse_category(kind, value)
    assert "unknown value" in str(info.value)


def test_error_message_truncates_long_values():
    with pytest.raises(InvalidValue) as info:
        parse_number("x" * 10_000)
    assert len(str(info.value)) < 200


def _scalar_code(column, value):
    """What the scalar parsers say about one cell, in the column functions' encoding."""
    kind = kind_of(column)
    if kind in LEVELS:
        level = parse_category(kind, value)
        return len(LEVELS[kind]) if level is None else LEVELS[kind].index(level)
    return {"x12": parse_currency, "x63": parse_percent}.get(column, parse_number)(value)


@pytest.mark.parametrize(("column", "values"), [
    ("x0", [1.5, None, 3, "4.25", " 5 ", "nan", True, "abc", 10**400, -0.0]),
    ("x12", ["$6,882.34 ", "($5,032.58)", "$-5,483.24", "-$1", 12, None, "", "$", "bad"]),
    ("x63", ["62.59%", "36.29 %", 36.29, None, "%", "1%%"]),
    ("x5", ["monday", "Sun", "FRI", None, "NA", "funday", 3, [1], {"a": 1}]),
    ("x81", ["Sept", "may", "December", "nope", None]),
    ("x31", ["germany", "JAPAN", None, "mars"]),
    ("x82", ["f", "M", "Female", "x"]),
])
def test_column_functions_agree_with_scalar_parsers(column, values):
    array, errors = normalize_column(column, values)
    for i, value in enumerate(values):
        try:
            want = _scalar_code(column, value)
        except InvalidValue as exc:
            assert errors[i] == str(exc)
            continue
        assert i not in errors
        assert (isinstance(want, float) and math.isnan(want) and math.isnan(array[i])) or array[i] == want


@pytest.mark.parametrize(("values", "expected"), [
    ([1.0, None, 2], [1.0, math.nan, 2.0]),  # bulk route: numbers and nulls
    (["1.5", "", "2"], [1.5, math.nan, 2.0]),  # bulk route: clean strings, blank = missing
])
def test_bulk_route(values, expected):
    array, errors = normalize_numeric("x1", values)
    np.testing.assert_array_equal(array, np.array(expected))
    assert errors == {}


def test_bulk_currency_rejects_blank_after_cleanup():
    # "$" cleans to "" like a blank cell, but is not a blank cell.
    _, errors = normalize_numeric("x12", ["$1", "$"])
    assert list(errors) == [1]


def test_unhashable_categorical_cells_are_reported_not_raised():
    codes, errors = normalize_categorical("x5", ["monday", [1, 2]])
    assert codes[0] == 0 and list(errors) == [1]
