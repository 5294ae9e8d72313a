"""Property-based fuzzing of POST /predict through the real gunicorn server.

Every generated request must get a 2xx or a 4xx with a JSON body ({"error", "message"} for a
4xx), never a 5xx, a hang or a dropped connection, and the server must stay healthy. Where
the rows are well-formed, the answer is also checked against the scalar rules of
lib/core/normalize.py: exactly one result per row, in order, an error for exactly the invalid cells.

Runs are deterministic (derandomized, no example database) and together generate well over
2,000 cases.
"""

from __future__ import annotations

import csv
import functools
import io
import json
import random
import re
from pathlib import Path

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lib.codecs.media import CSV
from lib.core.errors import InvalidValue
from lib.core.normalize import parse_category, parse_currency, parse_number, parse_percent
from lib.core.schema import (
    ALIASES,
    COLUMNS,
    CURRENCY,
    ID_KEY,
    LEVELS,
    NULL_TOKENS,
    NUMERIC,
    PERCENT,
    kind_of,
)
from service.http.readers import accepted_names
from service.ops import keys
from service.scoring.answers import PREDICTED_CLASS as CLASS
from service.scoring.answers import PROBABILITY
from service.scoring.answers import SELECTED_FEATURES as FEATURES
from tests.support.live_server import PROJECT_DIR, LiveServer

pytestmark = pytest.mark.server

CSV_MIMETYPES = accepted_names(CSV)

INLINE = {"errors": "inline"}
TIMEOUT = (5, 60)  # connect, read: a hang fails the test instead of stalling it
# Columns the fuzzed rows carry: the consumed ones are added per test; these are not consumed
# (percent, gender, plain numeric) and must change nothing.
UNCONSUMED_SAMPLE = ("x0", "x63", "x82")
# Ids are echoed as JSON numbers of at most 64 bits.
ID_INT_RANGE = (-(2**63), 2**64 - 1)
# A JSON-compatible content type that is not CSV: JSON is accepted whatever it says.
JSON_CONTENT_TYPES = (None, "application/json", "application/x-www-form-urlencoded", "text/plain",
                      "application/octet-stream", "APPLICATION/JSON; charset=utf-8", "application/vnd.x+json")
ODD_CONTENT_TYPES = (*JSON_CONTENT_TYPES, *sorted(CSV_MIMETYPES), "multipart/form-data; boundary=xyz",
                     "text/html", "image/png", "application/xml", "text/csv; charset=latin-1", "*/*", ";;")


def fuzz_settings(max_examples: int) -> settings:
    """Deterministic, database-less hypothesis settings for tests that talk to a server."""
    return settings(max_examples=max_examples, deadline=None, derandomize=True, database=None, print_blob=False,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.filter_too_much])


# -- Strategies ---------------------------------------------------------------------------------

# Bounded so that seven standardised terms cannot overflow a float (see
# test_numbers_near_the_float_limit_score_to_a_probability for what happens beyond).
finite = st.floats(min_value=-1e300, max_value=1e300, allow_nan=False)
json_scalars = st.none() | st.booleans() | finite | st.integers(-(2**70), 2**70) | st.text(max_size=12)
json_values = st.recursive(
    json_scalars,
    lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=4), kids, max_size=3),
    max_leaves=6,
)
padding = st.sampled_from(["", " ", "  ", "\t", "\n", "\u00a0", "\u3000"])
json_space = st.sampled_from(["", " ", "\t", "\n", "\r\n  "])
null_tokens = st.sampled_from(sorted(NULL_TOKENS)).flatmap(
    lambda token: st.sampled_from([token, token.upper(), token.title()])
)
decimal_text = st.one_of(finite.map(repr), st.integers(-(10**25), 10**25).map(str),
                         st.decimals(allow_nan=False, allow_infinity=False, places=4).map(str))
odd_numbers = st.sampled_from([
    "1e400", "-1e400", "1e-400", "1E5", ".5", "5.", "+3", "-0", "0x1A", "1_000", "1,5", "1.2.3", "e5", "--1",
    "1e", "٣", "１２", "Infinity", "-inf", "NaN", "$5", "5%", "(5)", "½", "⁵",
])


def _cased(word: str):
    return st.sampled_from([word, word.upper(), word.title(), word.swapcase(), word.lower()])


def numeric_cells():
    """Plain numeric cells: numbers, decimal strings (padded), odd strings, other JSON values."""
    return st.one_of(
        finite, st.integers(-(10**30), 10**30), st.tuples(padding, decimal_text, padding).map("".join),
        odd_numbers, null_tokens, st.none(), st.booleans(), st.text(max_size=10), json_values,
    )


_EUROPEAN = str.maketrans(",.", ".,")


def currency_cells():
    """x12: amounts in every notation the source systems use, malformed ones that the strict
    grammar refuses and a lenient reading would misread (European "5.547,78", commas out of
    threes, two signs or two "$", "$" last), and numeric cells."""
    grouped = st.floats(min_value=0, max_value=1e12, allow_nan=False).map(lambda x: f"{x:,.2f}")
    amount = st.one_of(grouped, grouped, grouped.map(lambda a: a.translate(_EUROPEAN)),
                       st.from_regex(r"\A[0-9]{1,4}(,[0-9]{1,4}){1,3}(\.[0-9]{0,2})?\Z"))
    notation = st.sampled_from(["${}", "${} ", "$-{}", "-${}", "(${})", "{}", "$ {}", "$$-{}", "({}", "${})",
                                "$({})", "{}$", "$-({})", "$$${}", "--{}", "+-${}", "$-$ {}", "$ ({})", "${}$"])
    return numeric_cells() | st.builds(lambda fmt, a, pad: pad + fmt.format(a) + pad, notation, amount, padding)


def percent_cells():
    """x63: percent points with and without the sign, broken ones, and numeric cells."""
    notation = st.sampled_from(["{}%", "{} %", "{}", "{}%%", "%{}", "{} % ", "+-{}%", "{}%{}", "{},5%"])
    return numeric_cells() | st.builds(lambda fmt, x: fmt.format(x, x), notation, decimal_text)


def category_cells(kind: str):
    """Categorical cells: every alias in any case and padding, unknown words, other JSON values."""
    words = sorted(set(ALIASES[kind]) | set(LEVELS[kind]))
    known = st.builds(lambda pad, word, pad2: pad + word + pad2, padding, st.sampled_from(words).flatmap(_cased),
                      padding)
    return st.one_of(known, known, null_tokens, st.none(), st.text(max_size=10), finite, st.booleans(), json_values)


def cells(column: str):
    kind = kind_of(column)
    if kind == NUMERIC:
        return numeric_cells()
    if kind == CURRENCY:
        return currency_cells()
    if kind == PERCENT:
        return percent_cells()
    return category_cells(kind)


ids = st.one_of(st.none(), st.text(max_size=10), st.integers(-(2**65), 2**65), finite, st.booleans(),
                st.lists(st.integers(), max_size=2), st.sampled_from([2**63 - 1, -(2**63), 2**64 - 1, 2**64, -1.5]))


def rows_strategy(consumed: list[str]):
    optional = {column: cells(column) for column in (*consumed, *UNCONSUMED_SAMPLE)}
    optional[ID_KEY] = ids
    optional["unknown key ü"] = json_values
    return st.fixed_dictionaries({}, optional=optional)


# Literals that json.dumps never writes: out-of-range and odd-looking numbers.
RAW_NUMBERS = ["1e400", "-1e400", "1e-400", "-0", "0.0e0", "1E+300", "123456789012345678901234567890",
               "-98765432109876543210", "9" * 400, "2.5e-320", "1.0", "-0.0", "18446744073709551616"]


@st.composite
def raw_rows_body(draw, consumed: list[str]) -> bytes:
    """A JSON array of objects written by hand: duplicate keys, raw number literals, odd spacing."""
    rows = []
    for _ in range(draw(st.integers(1, 6))):
        pairs = []
        for _ in range(draw(st.integers(0, 8))):
            key = draw(st.sampled_from([*consumed, ID_KEY, "x0", "other"]))
            value = draw(st.one_of(st.sampled_from(RAW_NUMBERS), cells(key).map(json.dumps)
                                   if key in consumed else json_values.map(json.dumps)))
            pairs.append(f"{json.dumps(key)}{draw(json_space)}:{draw(json_space)}{value}")
        rows.append("{" + ",".join(pairs) + "}")
    return ("[" + ",\n".join(rows) + "]").encode()


# -- The oracle: the scalar parsers of lib/core/normalize.py -----------------------------------------

SCALAR_PARSERS = {NUMERIC: parse_number, CURRENCY: parse_currency, PERCENT: parse_percent}


def cell_is_valid(column: str, value: object) -> bool:
    kind = kind_of(column)
    try:
        if kind in SCALAR_PARSERS:
            SCALAR_PARSERS[kind](value)
        else:
            parse_category(kind, value)
    except InvalidValue:
        return False
    return True


def id_is_valid(value: object) -> bool:
    if value is None:
        return True
    if isinstance(value, str):
        return not any(0xD800 <= ord(ch) <= 0xDFFF for ch in value)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    if isinstance(value, int):
        return ID_INT_RANGE[0] <= value <= ID_INT_RANGE[1]
    return abs(value) != float("inf")


def invalid_columns(row: dict, consumed: list[str]) -> set[str]:
    """The columns of ``row`` the service must report as invalid."""
    bad = {c for c in consumed if not cell_is_valid(c, row.get(c))}
    if not id_is_valid(row.get(ID_KEY)):
        bad.add(ID_KEY)
    return bad


# -- Helpers --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def api_key(tmp_path_factory) -> tuple[Path, str]:
    """A key file with one key: the fuzzing runs with API keys on."""
    path = tmp_path_factory.mktemp("fuzz-keys") / "api-keys"
    key, _ = keys.add(path, "fuzz")
    return path, key


@pytest.fixture(scope="module")
def server(model_dir, api_key, tmp_path_factory):
    """This module's own 2-worker server, with API keys on."""
    live = LiveServer(env={"MODEL_DIR": str(model_dir), "API_KEYS_FILE": str(api_key[0])}, workers=2,
                      log_path=tmp_path_factory.mktemp("fuzz-server") / "gunicorn.log").start()
    yield live
    live.stop()


@pytest.fixture(scope="module")
def http(api_key):
    """A session that sends the key with every request."""
    with requests.Session() as session:
        session.headers["Authorization"] = f"Bearer {api_key[1]}"
        yield session


@pytest.fixture(scope="module")
def consumed(stages) -> list[str]:
    return list(stages.manifest["consumed_columns"])


def post(http, server, body: bytes, content_type: str | None = "application/json", params=None,
         headers=None) -> requests.Response:
    all_headers = dict(headers or {})
    if content_type is not None:
        all_headers["Content-Type"] = content_type
    response = http.post(server.url + "/predict", data=body, params=params, headers=all_headers, timeout=TIMEOUT)
    check_common(response)
    return response


def check_common(response: requests.Response) -> None:
    """What every answer of the app must be: no 5xx, our headers, a JSON error body for a 4xx."""
    text = response.text[:300]
    assert response.status_code < 500, text
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["X-Request-ID"]
    if response.status_code >= 400:
        assert response.headers["Content-Type"].startswith("application/json"), text
        body = response.json()
        assert isinstance(body["error"], str) and body["error"], text
        assert isinstance(body["message"], str) and body["message"], text
        assert "Traceback" not in response.text and "site-packages" not in response.text


def check_prediction(result: dict, row: dict, threshold: float) -> None:
    assert set(result) - {ID_KEY} == {PROBABILITY, FEATURES, CLASS}, result
    probability = result[PROBABILITY]
    assert isinstance(probability, float) and 0.0 <= probability <= 1.0, result
    assert result[CLASS] == int(probability >= threshold)
    if row.get(ID_KEY) is not None:
        assert result[ID_KEY] == row[ID_KEY]
    else:
        assert ID_KEY not in result


def check_rows_answer(response, rows: list[dict], consumed: list[str], threshold: float, inline: bool) -> None:
    """The answer to well-formed rows: one result per row in order, errors exactly where due."""
    if not rows:
        assert response.status_code == 400, response.text[:300]
        return
    context = f"rows {str(rows)[:1500]} answered {response.status_code} {response.text[:500]}"
    expected_bad = [invalid_columns(row, consumed) for row in rows]
    invalid_rows = [i for i, bad in enumerate(expected_bad) if bad]
    if invalid_rows and not inline:
        assert response.status_code == 422, context
        body = response.json()
        assert body["error"] == "invalid_rows"
        assert body["invalid_row_count"] == len(invalid_rows)
        assert body["error_count"] == sum(len(bad) for bad in expected_bad)
        listed = {(e["index"], e["column"]) for e in body["errors"]}
        assert listed <= {(i, c) for i, bad in enumerate(expected_bad) for c in bad}, context
        assert len(listed) == len(body["errors"]) == min(body["error_count"], 100)
        return
    assert response.status_code == 200, context
    results = response.json()
    assert isinstance(results, list) and len(results) == len(rows)
    for i, (result, row, bad) in enumerate(zip(results, rows, expected_bad, strict=True)):
        if bad:
            assert result["index"] == i
            assert {e["column"] for e in result["errors"]} == bad, context
            assert all(isinstance(e["message"], str) and e["message"] for e in result["errors"])
        else:
            assert "errors" not in result, context
            check_prediction(result, row, threshold)


class ServerWatch:
    """Checks after a fuzz run that the server is healthy and logged no unhandled error."""

    def __init__(self, http, server):
        self.http, self.server = http, server
        self.log_start = len(server.log_text())

    def assert_healthy(self) -> None:
        assert self.http.get(self.server.url + "/health", timeout=TIMEOUT).status_code == 200
        assert self.http.get(self.server.url + "/ready", timeout=TIMEOUT).status_code == 200
        new_log = self.server.log_text()[self.log_start:]
        for sign in ("unhandled error", "Traceback", "WORKER TIMEOUT", "was sent SIGKILL", "Error handling request"):
            assert sign not in new_log, new_log[new_log.find(sign) - 200:][:3000]


def fuzzed(http, server, examples: int, **strategies):
    """Run the decorated check at once over ``examples`` cases drawn from ``strategies``
    against ``server``; then make sure that many were generated (they count toward the
    module's well over 2,000) and that the server stayed healthy and logged no unhandled error."""

    def run(check):
        watch = ServerWatch(http, server)
        cases = []

        @functools.wraps(check)
        def counted(*args, **kwargs):
            cases.append(None)
            return check(*args, **kwargs)

        fuzz_settings(max_examples=examples)(given(**strategies)(counted))()
        assert len(cases) >= examples
        watch.assert_healthy()

    return run


# -- Fuzz tests -------------------------------------------------------------------------------------


def test_fuzzed_rows_get_one_answer_each_and_errors_exactly_where_due(http, server, consumed, stages):
    threshold = stages.threshold

    @fuzzed(
        http, server, 700,
        rows=st.lists(rows_strategy(consumed), max_size=8),
        inline=st.booleans(),
        as_object=st.booleans(),
        content_type=st.sampled_from(JSON_CONTENT_TYPES),
        fmt=st.sampled_from(["rows", "rows", "rows", "columns", "csv", "Rows", ""]),
        request_id=st.one_of(st.none(), st.text(st.characters(min_codepoint=33, max_codepoint=126), max_size=140)),
    )
    def check(rows, inline, as_object, content_type, fmt, request_id):
        body = json.dumps(rows[0] if as_object and len(rows) == 1 else rows).encode()
        params = {**(INLINE if inline else {}), **({"format": fmt} if fmt != "rows" else {})}
        headers = {"X-Request-ID": request_id} if request_id is not None else {}
        response = post(http, server, body, content_type, params, headers)
        if request_id is not None and 1 <= len(request_id) <= 128 and all(
                ch.isalnum() or ch in "._:-" for ch in request_id):
            assert response.headers["X-Request-ID"] == request_id
        if fmt not in ("rows", "columns"):
            assert response.status_code == 400 and "format" in response.json()["message"]
            return
        if fmt == "columns" and response.status_code == 200:
            columns = response.json()
            assert len(columns[PROBABILITY]) == len(columns[CLASS]) == len(rows)
            return
        if as_object and len(rows) == 1 and looks_like_columns(rows[0], consumed):
            # One object whose every consumed cell is an array: told to add ?input=columns.
            assert response.status_code == 400 and "?input=columns" in response.json()["message"]
            return
        check_rows_answer(response, rows, consumed, threshold, inline)


def looks_like_columns(row: dict, consumed: list[str]) -> bool:
    """Whether a one-row body's consumed cells (at least one) are all arrays, as JSON columns' are."""
    cells = [row[name] for name in consumed if row.get(name) is not None]
    return bool(cells) and all(isinstance(cell, list) for cell in cells)



def test_hand_written_json_with_duplicate_keys_and_raw_numbers(http, server, consumed, stages):
    @fuzzed(http, server, 300, body=raw_rows_body(consumed), inline=st.booleans())
    def check(body, inline):
        response = post(http, server, body, params=INLINE if inline else None)
        pairs: dict[int, list[str]] = {}

        def remember(items):
            row = dict(items)
            pairs[id(row)] = [key for key, _ in items]
            return row

        rows = json.loads(body, object_pairs_hook=remember)
        # A consumed key or id given twice in the first row is a 400 naming it (the service looks
        # in the first row only); in other rows the last one wins, as the standard library reads it.
        first = pairs[id(rows[0])]
        twice = [key for key in first if first.count(key) > 1 and key in {*consumed, ID_KEY}]
        if twice:
            assert response.status_code == 400, (body, response.text)
            assert "twice" in response.json()["message"]
            return
        check_rows_answer(response, rows, consumed, stages.threshold, inline)



def test_fuzzed_keys_get_a_json_401_unless_they_are_the_key(server, api_key):
    """Any Authorization and X-API-Key values (visible Latin-1, as HTTP carries them): a 401 with a
    JSON body unless one of them presents the key, never a 5xx, never the value in the log."""
    key = api_key[1]
    header_text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"),
                          max_size=80).map(str.lstrip)  # requests refuses a value that starts with a space
    authorization = st.one_of(st.none(), header_text, header_text.map("Bearer ".__add__),
                              st.sampled_from([key[:-1], key + "=", " " + key.upper()]).map("Bearer ".__add__))
    body = (PROJECT_DIR / "docs" / "examples" / "row.json").read_bytes()
    presented: list[str] = []

    with requests.Session() as anonymous:
        @fuzzed(anonymous, server, 200, authorization=authorization, x_api_key=st.one_of(st.none(), header_text))
        def check(authorization, x_api_key):
            headers = {name: value for name, value in (("Authorization", authorization), ("X-API-Key", x_api_key))
                       if value is not None}
            response = post(anonymous, server, body, headers=headers)
            assert response.status_code == 401, (headers, response.text[:200])
            assert response.headers["WWW-Authenticate"].startswith("Bearer")
            presented.extend(value for value in headers.values() if len(value.strip()) >= 12)

    log = server.log_text()
    assert key not in log and not [value for value in presented if value.strip() in log]


def test_arbitrary_json_values_get_200_or_a_json_4xx(http, server):
    anything = st.recursive(
        st.none() | st.booleans() | st.floats() | st.integers() | st.text(),
        lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=6), kids, max_size=4),
        max_leaves=20,
    )

    @fuzzed(http, server, 300, value=anything, content_type=st.sampled_from(JSON_CONTENT_TYPES))
    def check(value, content_type):
        # Non-finite floats come out as NaN and Infinity, literals that JSON does not have.
        response = post(http, server, json.dumps(value).encode(), content_type, params=INLINE)
        rows = value if isinstance(value, list) else [value]
        well_shaped = bool(rows) and all(isinstance(row, dict) for row in rows)
        if has_non_finite(value):
            assert response.status_code == 400
        elif well_shaped:
            assert response.status_code == 200 and len(response.json()) == len(rows)
        else:
            assert response.status_code == 400, response.text[:300]



def has_non_finite(value: object) -> bool:
    if isinstance(value, float):
        return value != value or value in (float("inf"), float("-inf"))
    if isinstance(value, list):
        return any(has_non_finite(v) for v in value)
    if isinstance(value, dict):
        return any(has_non_finite(v) for v in value.values())
    return False


def test_garbage_truncated_and_deeply_nested_bodies(http, server, test_rows):
    valid_body = json.dumps(test_rows[:3]).encode()
    nested = st.builds(lambda opener, closer, depth: (opener * depth + closer * depth).encode(),
                       st.sampled_from(["[", '{"x44":', '[{"x5":', '{"a":[']),
                       st.sampled_from(["]", "}", "]}", "}]"]), st.integers(1, 120_000))
    bodies = st.one_of(
        st.binary(max_size=300),
        st.text(max_size=200).map(str.encode),
        st.integers(1, len(valid_body) - 1).map(lambda cut: valid_body[:cut]),
        nested,
        st.sampled_from([b"", b" ", b"\x00", b"\xef\xbb\xbf[{}]", b"[{}]\x00", b"{}{}", b"[{}][{}]", b"[{},]",
                         b"[,{}]", b"{'x5': 'mon'}", b'{"x5": "mon"', b"[{}", b"nan", b"\xff\xfe[\x00]\x00",
                         b'{"x5": "\\ud800"}', b'{"x5": "\\x41"}', b"[" + b"{}," * 5000 + b"{}]"]),
    )

    @fuzzed(http, server, 450, body=bodies, content_type=st.sampled_from(ODD_CONTENT_TYPES), inline=st.booleans())
    def check(body, content_type, inline):
        response = post(http, server, body, content_type, params=INLINE if inline else None)
        assert response.status_code in (200, 400, 415, 422), response.text[:300]
        is_csv = content_type is not None and content_type.split(";")[0].lower() in CSV_MIMETYPES
        if valid_body.startswith(body) and body and not is_csv:
            assert response.status_code == 400 and "malformed JSON" in response.json()["message"]



def test_fuzzed_csv_bodies_get_one_answer_per_line(http, server, consumed, stages):
    printable = st.text(st.characters(blacklist_categories=("Cc", "Cs")), max_size=12)
    csv_cell = st.one_of(printable, decimal_text, st.none(), null_tokens)

    @fuzzed(
        http, server, 300,
        columns=st.lists(st.sampled_from([*consumed, ID_KEY, "x0", "y"]), unique=True, min_size=1),
        data=st.data(),
        content_type=st.sampled_from(sorted(CSV_MIMETYPES)),
    )
    def check(columns, data, content_type):
        n = data.draw(st.integers(0, 8))
        rows = [{c: data.draw(csv_cell if c not in consumed else st.one_of(cells(c).filter(
            lambda v: isinstance(v, str)), csv_cell)) for c in columns} for _ in range(n)]
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(columns)
        writer.writerows([["" if row[c] is None else row[c] for c in columns] for row in rows])
        response = post(http, server, buffer.getvalue().encode(), content_type, params=INLINE)
        # A CSV cell is text: an absent value is the empty string.
        as_read = [{c: "" if v is None else v for c, v in row.items()} for row in rows]
        check_rows_answer(response, as_read, consumed, stages.threshold, inline=True)



def test_fuzzed_paths_and_methods_answer_json(http, server):
    segment = st.text(st.characters(min_codepoint=33, max_codepoint=126, blacklist_characters="/?#%"), max_size=12)

    @fuzzed(http, server, 150, method=st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"]),
           path=st.lists(segment, max_size=3).map("/".join))
    def check(method, path):
        response = http.request(method, f"{server.url}/{path}", data=b"{}", timeout=TIMEOUT)
        assert response.status_code < 500
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        if response.status_code >= 400 and method != "HEAD":
            check_common(response)



def test_numbers_near_the_float_limit_score_or_are_named(http, server):
    # One huge term alone saturates the probability; opposite infinite terms cannot be scored.
    one_sided = post(http, server, json.dumps({"x91": 1e308}).encode())
    assert one_sided.status_code == 200 and one_sided.json()[0][PROBABILITY] in (0.0, 1.0)
    both = post(http, server, json.dumps({"x91": 1e308, "x53": 1e308}).encode())
    assert both.status_code == 422, both.text
    (error,) = both.json()["errors"]
    assert error["column"] in ("x91", "x53") and "too large" in error["message"]


# -- Nothing lost -----------------------------------------------------------------------------------

BAD_CELLS = [("x5", "funday"), ("x12", "twelve dollars"), ("x31", ["asia"]), ("x81", "Smarch"), ("x44", True),
             ("x91", "1e400")]


@pytest.fixture(scope="module")
def mixed_rows(test_rows) -> tuple[list[dict], set[int]]:
    """400 test rows with ids, one in eight made invalid."""
    rng = random.Random(66)
    rows, invalid = [], set()
    for i, row in enumerate(rng.sample(test_rows, 400)):
        row = {**row, ID_KEY: f"row-{i}" if i % 3 else i}
        if rng.random() < 0.125:
            column, value = rng.choice(BAD_CELLS)
            row[column] = value
            invalid.add(i)
        rows.append(row)
    return rows, invalid


def as_comparable(result: dict, offset: int) -> tuple:
    """A result of the rows format as a tuple, the error index made batch-independent."""
    if "errors" in result:
        return ("error", result["index"] + offset, result[ID_KEY], tuple(e["column"] for e in result["errors"]))
    return ("ok", result[PROBABILITY], result[CLASS], result.get(ID_KEY))


def columns_as_rows(answer: dict, n: int) -> list[dict]:
    """The ?format=columns answer turned back into the rows format."""
    errors = {e["index"]: e for e in answer.get("errors", [])}
    ids = answer.get(ID_KEY, [None] * n)
    rows = []
    for i in range(n):
        if i in errors:
            rows.append(errors[i])
            continue
        row = {PROBABILITY: answer[PROBABILITY][i], FEATURES: answer[FEATURES], CLASS: answer[CLASS][i]}
        if ids[i] is not None:
            row[ID_KEY] = ids[i]
        rows.append(row)
    return rows


@pytest.fixture(scope="module")
def one_by_one(http, server, mixed_rows) -> list[tuple]:
    rows, _ = mixed_rows
    answers = []
    for row in rows:
        response = post(http, server, json.dumps(row).encode(), params=INLINE)
        assert response.status_code == 200
        (result,) = response.json()
        answers.append(result)
    return [as_comparable(result, i) for i, result in enumerate(answers)]


def test_one_by_one_answers_flag_exactly_the_spoiled_rows(mixed_rows, one_by_one):
    _, invalid = mixed_rows
    assert {i for i, answer in enumerate(one_by_one) if answer[0] == "error"} == invalid


def test_whole_batch_in_reject_mode_lists_every_invalid_row(http, server, mixed_rows):
    rows, invalid = mixed_rows
    response = post(http, server, json.dumps(rows).encode())
    body = response.json()
    assert response.status_code == 422
    assert body["invalid_row_count"] == len(invalid)
    assert [e["index"] for e in body["errors"]] == sorted(invalid)
    assert [e["id"] for e in body["errors"]] == [rows[i][ID_KEY] for i in sorted(invalid)]


def test_random_batch_splits_answer_exactly_as_one_row_per_request(http, server, mixed_rows, one_by_one):
    rows, _ = mixed_rows

    @fuzzed(http, server, 40, cuts=st.lists(st.integers(1, len(rows) - 1), max_size=12, unique=True),
            fmt=st.sampled_from(["rows", "columns"]))
    def check(cuts, fmt):
        bounds = [0, *sorted(cuts), len(rows)]
        answers = []
        for start, stop in zip(bounds, bounds[1:], strict=False):
            params = {**INLINE, "format": fmt}
            response = post(http, server, json.dumps(rows[start:stop]).encode(), params=params)
            assert response.status_code == 200
            results = response.json()
            if fmt == "columns":
                results = columns_as_rows(results, stop - start)
            assert len(results) == stop - start
            answers += [as_comparable(result, start) for result in results]
        assert answers == one_by_one



def test_fuzzed_rows_carry_every_consumed_column_and_every_kind_of_column(consumed):
    # What rows_strategy really draws, not what it is given: every consumed column and a column
    # of every kind in the schema turn up in the generated rows.
    drawn: set[str] = set()

    @fuzz_settings(max_examples=200)
    @given(rows_strategy(consumed))
    def draw(row):
        drawn.update(row)

    draw()
    assert set(consumed) <= drawn
    assert {kind_of(c) for c in drawn & set(COLUMNS)} == {kind_of(c) for c in COLUMNS}


def test_fuzzed_amounts_hold_well_formed_and_malformed_ones():
    # The strategy draws amounts the grammar accepts and amounts it refuses that the lenient
    # reading of old ("$", "," and spaces dropped anywhere) would have turned into a number.
    seen = {"well-formed": 0, "refused, once misread": 0}

    @fuzz_settings(max_examples=300)
    @given(currency_cells())
    def draw(cell):
        if not isinstance(cell, str):
            return
        lenient = re.sub(r"\s+", "", cell).replace("$", "").replace(",", "")
        if cell_is_valid("x12", cell):
            seen["well-formed"] += 1
        elif re.fullmatch(r"\(?[+-]?[0-9.]+\)?", lenient):
            seen["refused, once misread"] += 1

    draw()
    assert min(seen.values()) >= 10, seen
