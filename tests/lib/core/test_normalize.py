"""Every normalisation rule of a cell (missing values, numbers, amounts, percentages, categories),
as scalar parsers and as column functions."""

import math
import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lib.core.errors import InvalidValue
from lib.core.normalize import (
    AMOUNT_PATTERN,
    PERCENT_PATTERN,
    normalize_categorical,
    normalize_column,
    normalize_numeric,
    normalize_numeric_columns,
    parse_category,
    parse_currency,
    parse_number,
    parse_percent,
    show_value,
)
from lib.core.schema import AMOUNT_FORMS, GENDER, LEVELS, MONTH, PERCENT_FORMS, REGION, WEEKDAY, kind_of

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


# The amount grammar: what is accepted is read exactly as before, the rest is
# refused, never guessed. Edge forms accepted as they were: a leading "+", ".5", "5.", an exponent
# on ungrouped digits, spaces between the tokens ($, sign, parentheses), "$" before or inside
# parentheses. Refused: commas but in groups of three before the point, two signs, two "$",
# "$" after the digits, spaces inside the digits, an exponent on grouped digits, unicode digits.
ACCEPTED_AMOUNTS = [
    ("$6,882.34", 6882.34), ("$6,882.34 ", 6882.34), ("$-5,032.58", -5032.58), ("-$5,032.58", -5032.58),
    ("($5,032.58)", -5032.58), ("5032.58", 5032.58), ("5,032.58", 5032.58), ("$ 1,000", 1000.0), (" $12 ", 12.0),
    (42, 42.0), (-3.5, -3.5), ("$1,234,567.89", 1234567.89), ("(12)", -12.0), ("1,000,000.5", 1000000.5),
    ("$(5,032.58)", -5032.58), ("$ ( 5,032.58 )", -5032.58), ("+$5", 5.0), ("$+5", 5.0), ("- $ 5", -5.0),
    (".5", 0.5), ("5.", 5.0), ("$.5", 0.5), ("1,000.", 1000.0), ("1e3", 1000.0), ("$1.5E-2", 0.015),
    ("\t$1,000.00\n", 1000.0), ("$\u00a05", 5.0), ("$0", 0.0), ("999", 999.0), ("$123,456,789", 123456789.0),
]
REFUSED_AMOUNTS = [
    "$5.547,78", "$1,00", "5,5,4,7", "$$5", "1,0000", ",100", "100,", "$-(5)", "--5", "$5$", "5$", "$", "$abc",
    "(-$5)", "(+5)", "-(5)", "-$-5", "+-5", "$5.0.0", "€5", "5 USD", "()", "(5", "5)", "$inf", "1,000e3",
    "5 0 3 2", "1 000", "1,000,00", "12,34.5", "1,000.000,5", "1,,000", "$5,", "$-", "٣", "$１２", "$(-5)",
    "$($5)", "$-$5", True, [], {"$": 5},
]


@pytest.mark.parametrize(("value", "expected"), ACCEPTED_AMOUNTS, ids=repr)
def test_parse_currency_valid(value, expected):
    assert parse_currency(value) == expected


@pytest.mark.parametrize("value", REFUSED_AMOUNTS, ids=repr)
def test_parse_currency_refuses_and_lists_the_accepted_forms(value):
    with pytest.raises(InvalidValue) as info:
        parse_currency(value)
    assert str(info.value) == f"not an amount: {show_value(value)}; accepted: {', '.join(AMOUNT_FORMS)}"


@pytest.mark.parametrize("value", ["$1e400", "-1e999", "(1e309)"])
def test_parse_currency_names_an_overflow(value):
    with pytest.raises(InvalidValue, match="^number out of range"):
        parse_currency(value)


def test_the_forms_that_messages_list_are_accepted():
    assert [parse_currency(form) for form in AMOUNT_FORMS] == [5032.58, 5032.58, 5032.58, -5032.58, -5032.58,
                                                              -5032.58]
    assert [parse_percent(form) for form in PERCENT_FORMS] == [36.29, 36.29, 36.29, -36.29]


def test_a_refused_amount_is_shown_cut_short():
    with pytest.raises(InvalidValue) as info:
        parse_currency("$" + "1,00" * 1000)
    assert len(str(info.value)) < 200 and "..." in str(info.value)


def _amount_before_issue_23(text: str) -> float:
    """x12 as read before the grammar: spaces, "$" and "," removed anywhere, "(…)" negative."""
    text = re.sub(r"\s+", "", text).replace("$", "").replace(",", "")
    if text.startswith("(") and text.endswith(")"):
        text = "-" + text[1:-1]
    return float(text)


def _percent_before_issue_23(text: str) -> float:
    text = text.strip()
    return float(text[:-1].rstrip() if text.endswith("%") else text)


# Near amounts: signs, "$", parentheses, commas and points in and out of place.
_NEAR_AMOUNT = r"\s*[-+]?\(?\$?\$?\s*[-+]?[0-9]{1,4}(,[0-9]{1,4}){0,3}(\.[0-9]{0,3})?(,[0-9]{1,2})?\)?\$?\s*"


@settings(max_examples=500, deadline=None, derandomize=True)
@given(st.one_of(st.from_regex(AMOUNT_PATTERN, fullmatch=True), st.from_regex(_NEAR_AMOUNT, fullmatch=True)))
def test_every_well_formed_amount_reads_as_before(text):
    # Each cell the grammar accepts scores exactly as it did (bit for bit); the rest is refused.
    try:
        before = _amount_before_issue_23(text)
    except ValueError:
        before = None
    if re.fullmatch(AMOUNT_PATTERN, text):
        assert before is not None, text  # the grammar accepts nothing that was refused
        if math.isfinite(before):
            got = parse_currency(text)
            assert (got, math.copysign(1, got)) == (before, math.copysign(1, before)), text
            return
    with pytest.raises(InvalidValue):
        parse_currency(text)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.from_regex(PERCENT_PATTERN, fullmatch=True))
def test_every_well_formed_percentage_reads_as_before(text):
    before = _percent_before_issue_23(text)
    if math.isfinite(before):
        assert parse_percent(text) == before
    else:
        with pytest.raises(InvalidValue, match="^number out of range"):
            parse_percent(text)


@pytest.mark.parametrize(("value", "expected"), [
    ("62.59%", 62.59), ("36.29 %", 36.29), ("36.29", 36.29), (36.29, 36.29), (" 0% ", 0.0), ("-1.5%", -1.5),
    (100, 100.0), ("5 %", 5.0), ("+5%", 5.0), (".5%", 0.5), ("5.%", 5.0), ("1e2%", 100.0), ("\t7.01 %\n", 7.01),
])
def test_parse_percent_valid(value, expected):
    # Percent points: never divided by 100.
    assert parse_percent(value) == expected


@pytest.mark.parametrize("value", ["%", "36%.29", "abc%", "36.29%%", True, {}, "36,29%", "5%%", "%5", "+-5%",
                                   "--5%", "5 %%", "5% %", "5%5", "٣%", "5 5%", "$5%", "(5%)"], ids=repr)
def test_parse_percent_refuses_and_lists_the_accepted_forms(value):
    with pytest.raises(InvalidValue) as info:
        parse_percent(value)
    assert str(info.value) == f"not a percentage: {show_value(value)}; accepted: {', '.join(PERCENT_FORMS)}"


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
    ("x12", ["$6,882.34 ", "($5,032.58)", "$-5,483.24", "-$1", 12, None, "", "$", "bad", "$1,00", "$$5"]),
    ("x63", ["62.59%", "36.29 %", 36.29, None, "%", "1%%"]),
    ("x5", ["monday", "Sun", "FRI", None, "NA", "funday", 3, [1], {"a": 1}]),
    ("x81", ["Sept", "may", "December", "nope", None]),
    ("x31", ["germany", "JAPAN", None, "mars"]),
    ("x82", ["f", "M", "Female", "x"]),
])
def test_column_functions_agree_with_scalar_parsers(column, values):
    _assert_column_agrees_with_scalar(column, values)


def _assert_column_agrees_with_scalar(column, values):
    array, errors = normalize_column(column, values)
    assert len(array) == len(values)
    for i, value in enumerate(values):
        try:
            want = _scalar_code(column, value)
        except InvalidValue as exc:
            assert errors[i] == str(exc)
            continue
        assert i not in errors, (value, errors[i])
        assert (isinstance(want, float) and math.isnan(want) and math.isnan(array[i])) or array[i] == want, value


# Cells close to valid numbers: the bulk route must accept exactly what the scalar parsers
# accept, and give the same floats, whichever mix of cells shares the column.
_NEAR_NUMBER = st.text(alphabet=st.sampled_from([*"0123456789" * 4, *".eE+-$,%() \t\n\r\xa0٣_"]), max_size=12)
_NUMBER_CELL = st.one_of(
    _NEAR_NUMBER,
    st.from_regex(r"\A\(?-?\$?[0-9]{1,3}(,[0-9]{3})*(\.[0-9]+)?\)?( ?%)?\Z"),
    st.from_regex(AMOUNT_PATTERN, fullmatch=True),
    st.sampled_from([value for value in REFUSED_AMOUNTS if isinstance(value, str)]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(10**20), max_value=10**20),
    st.sampled_from([None, "", " ", "NaN", "null", "n/a", True, False, 10**400]),
)


@settings(max_examples=400, deadline=None, derandomize=True)
@given(column=st.sampled_from(["x0", "x12", "x63"]), values=st.lists(_NUMBER_CELL, min_size=1, max_size=8))
def test_numeric_columns_agree_with_scalar_parsers_on_any_mix(column, values):
    _assert_column_agrees_with_scalar(column, values)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(column=st.sampled_from(["x0", "x12", "x63"]), values=st.lists(_NEAR_NUMBER, min_size=1, max_size=8))
def test_numeric_columns_of_strings_only_agree_with_scalar_parsers(column, values):
    _assert_column_agrees_with_scalar(column, values)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.integers(1, 6).flatmap(lambda n: st.lists(
    st.one_of(st.lists(st.one_of(st.floats(), st.integers(-(10**400), 10**400), st.none()), min_size=n, max_size=n),
              st.lists(_NUMBER_CELL, min_size=n, max_size=n)),
    min_size=1, max_size=4)))
def test_numeric_matrix_equals_its_columns_normalised_one_by_one(columns):
    names = ["x0", "x12", "x63", "x1"][: len(columns)]
    matrix, errors = normalize_numeric_columns(names, columns)
    for j, (name, values) in enumerate(zip(names, columns, strict=True)):
        array, column_errors = normalize_numeric(name, values)
        np.testing.assert_array_equal(matrix[:, j], array)
        assert errors.get(name, {}) == column_errors


_CATEGORY_CELL = st.one_of(
    st.sampled_from([alias for kind in LEVELS for alias in (*LEVELS[kind], "Sept", " MON ", "F", "")]),
    st.text(max_size=6),
    st.sampled_from([None, "NaN", "N/A", 1, 2.5, True]),
)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(column=st.sampled_from(["x5", "x31", "x81", "x82"]), values=st.lists(_CATEGORY_CELL, min_size=1, max_size=8))
def test_categorical_columns_agree_with_scalar_parsers_on_any_mix(column, values):
    _assert_column_agrees_with_scalar(column, values)


@pytest.mark.parametrize(("values", "expected"), [
    ([1.0, None, 2], [1.0, math.nan, 2.0]),  # bulk route: numbers and nulls
    (["1.5", "", "2"], [1.5, math.nan, 2.0]),  # bulk route: clean strings, blank = missing
])
def test_bulk_route(values, expected):
    array, errors = normalize_numeric("x1", values)
    np.testing.assert_array_equal(array, np.array(expected))
    assert errors == {}


@pytest.mark.parametrize(("column", "values", "bad"), [
    ("x1", ["1_000", "2"], [0]),  # float() takes underscores, the contract does not
    ("x1", ["1.5", "1\n2"], [1]),  # a newline inside a cell must not split it in two
    ("x1", ["1.2.3", "4"], [0]),
    ("x12", ["$1", "(2", "$3"], [1]),
    ("x12", ["$1,000", "$1,00", "$5.547,78", "5,5,4,7", "$$5", "5$", "1,0000", "$5,547.78"], [1, 2, 3, 4, 5, 6]),
    ("x63", ["5%", "5%%", "%"], [1, 2]),
    ("x1", ["٣", "1"], [0]),  # float() reads unicode digits; the contract wants ASCII decimals
])
def test_bulk_route_sends_odd_cells_to_the_careful_route(column, values, bad):
    _, errors = normalize_numeric(column, values)
    assert sorted(errors) == bad


def test_bulk_currency_rejects_blank_after_cleanup():
    # "$" cleans to "" like a blank cell, but is not a blank cell.
    _, errors = normalize_numeric("x12", ["$1", "$"])
    assert list(errors) == [1]


def test_unhashable_categorical_cells_are_reported_not_raised():
    codes, errors = normalize_categorical("x5", ["monday", [1, 2]])
    assert codes[0] == 0 and list(errors) == [1]
