"""Arrow IPC bodies (lib/codecs/arrow.py) and the cell types of every columnar form (lib/codecs/columnar.py):
a crafted body is a 400 naming what is wrong and never crashes a worker or is scored
from bytes it does not hold; a small body never grows a worker past the decoded-size budget; every
cell type is converted exactly as its JSON twin or refused naming the column and the type.

The crafted bodies go to a real gunicorn worker (a crash there fails the test, not pytest), and
every test checks the worker is the one that was there before. Every body is built here with
pyarrow (tests/support/arrow_bodies.py): a valid stream, then its flatbuffer fields patched in the bytes.
"""

from __future__ import annotations

import decimal

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import requests

from bench.memory import status_mb, worker_pids
from tests.support import arrow_bodies, forms
from tests.support.forms import ARROW, PARQUET, outcomes
from tests.support.live_server import LiveServer

INLINE = "errors=inline"
#: MAX_DECODED_MB of the test server: small, so that a bomb over it stays cheap to build.
BUDGET_MB = 64
#: What one of these requests may grow the worker by (its peak resident set): the largest is the
#: 422 that lists 100,000 invalid rows (about 80 MB), where main grew it by 300 MB to 1.1 GB.
GROWTH_MB = 150
ROWS = [{"id": f"r{i}", "x5": day, "x12": amount, "x44": float(i), "x81": "July"}
        for i, (day, amount) in enumerate([("monday", "$1.00"), ("sun", "($2.50)"), ("Tue", "$5,547.78")] * 259)]


@pytest.fixture(scope="module")
def live(model_dir, tmp_path_factory):
    """One gunicorn worker with a small decoded-size budget."""
    log = tmp_path_factory.mktemp("arrow") / "gunicorn.log"
    server = LiveServer(env={"MODEL_DIR": str(model_dir), "MAX_DECODED_MB": str(BUDGET_MB)}, workers=1,
                        log_path=log).start()
    yield server
    server.stop()


@pytest.fixture()
def worker(live):
    """The worker's pid before the test; after it, the same worker must still be serving."""
    (pid,) = worker_pids(live.process.pid)
    yield pid
    assert requests.get(live.url + "/health", timeout=10).status_code == 200
    assert worker_pids(live.process.pid) == [pid], "the worker died and was replaced"


def send(live, body: bytes, query: str = "", accept: str | None = None) -> requests.Response:
    headers = {"Content-Type": ARROW, **({"Accept": accept} if accept else {})}
    return requests.post(f"{live.url}/predict?{query}", data=body, headers=headers, timeout=120)


def json_outcomes(live, rows: list[dict]) -> list[tuple]:
    answer = requests.post(f"{live.url}/predict?{INLINE}", data=forms.dumps(rows),
                           headers={"Content-Type": forms.JSON}, timeout=120)
    return outcomes(answer.status_code, answer.headers["Content-Type"], answer.content)


def arrow_outcomes(live, body: bytes) -> list[tuple]:
    answer = send(live, body, INLINE)
    return outcomes(answer.status_code, answer.headers["Content-Type"], answer.content)


def refused(answer: requests.Response, status: int = 400) -> str:
    """The message of an error answer, checked to be JSON of ``status``."""
    assert answer.status_code == status, answer.text[:300]
    assert answer.headers["Content-Type"].startswith("application/json")
    return answer.json()["message"]


# -- Lengths that claim more than the buffers hold -----------------------------------------------------

def _lying_batch(file: bool) -> bytes:
    # 777 rows: no buffer's offset or size in the header is 777 (they are multiples of 8, or
    # the text's size, 777 * 6 here), so patching 777 changes the lengths and nothing else.
    data = pa.table({"x5": ["monday"] * 777, "x44": pa.array(np.arange(777), type=pa.int64())})
    return arrow_bodies.patch_int64(arrow_bodies.stream(data, file=file), "record batch", 777, 100_000)


@pytest.mark.parametrize("file", [False, True], ids=["stream", "file"])
def test_a_batch_whose_lengths_claim_more_rows_than_its_buffers_hold_is_a_400(live, worker, file):
    # main: the worker got SIGSEGV (text), or scored 100,000 rows from bytes past the buffer (int64).
    message = refused(send(live, _lying_batch(file)))
    assert message.startswith("record batch 0 of the Arrow body is invalid: column 'x5': "), message
    assert "100000" in message and len(message) < 300


def test_a_column_shorter_than_its_batch_is_a_400(live, worker):
    data = pa.table({"x44": pa.array(np.arange(777), type=pa.int64())})
    body = arrow_bodies.patch_int64(arrow_bodies.stream(data), "record batch", 777, 100_000, occurrence=1)
    assert refused(send(live, body)) == ("the body is not a valid Arrow IPC stream: "
                                         "Array length did not match record batch length")


# -- Dictionaries ---------------------------------------------------------------------------------------

def _x5_dictionary(indices: list[int | None], values: list[str], index_type: pa.DataType | None = None) -> pa.Array:
    # safe=False: pyarrow does not check the indices, as a hostile writer would not.
    return pa.DictionaryArray.from_arrays(pa.array(indices, type=index_type or pa.int32()), pa.array(values),
                                          safe=False)


@pytest.mark.parametrize(("index", "index_type"), [(7, pa.int32()), (3, pa.int8()), (-1, pa.int8()),
                                                   (-(2**31), pa.int32())])
def test_a_dictionary_index_out_of_range_is_a_400(live, worker, index, index_type):
    # main: scored as another level, as missing, or an IndexError 500, depending on the index.
    data = pa.table({"x5": _x5_dictionary([0, index, 1], ["monday", "sunday", "tue"], index_type)})
    message = refused(send(live, arrow_bodies.stream(data)))
    assert message.startswith("record batch 0 of the Arrow body is invalid: column 'x5': "), message
    assert f"out of bounds: {index} (should be in [0, 2])" in message


def test_an_index_is_read_against_the_dictionary_in_force_for_its_batch(live, worker):
    # Batch 0 uses index 3 while its dictionary has 3 values; the delta that gives it a 4th comes
    # after it: index 3 means nothing in batch 0 (main scored it as the later value, or garbage).
    first = pa.record_batch({"x5": _x5_dictionary([0, 3], ["monday", "sunday", "tue"])})
    second = pa.record_batch({"x5": _x5_dictionary([3, 1], ["monday", "sunday", "tue", "wed"])})
    body = arrow_bodies.stream([first, second], deltas=True)
    assert [kind for kind, _, _ in arrow_bodies.message_spans(body)].count("dictionary") == 2
    message = refused(send(live, body))
    assert message.startswith("record batch 0 of the Arrow body is invalid: column 'x5': "), message


@pytest.mark.parametrize("deltas", [True, False], ids=["delta", "replacement"])
def test_delta_and_replacement_dictionaries_score_each_batch_with_its_own(live, worker, deltas):
    days = [["monday", "sun"], ["monday", "sun", "Tue", "friday"], ["saturday", "THU"]]
    batches = [pa.record_batch({"x5": pa.array(values).dictionary_encode(), "x44": [float(len(v)) for v in values]})
               for values in days]
    if deltas:  # each dictionary extends the one before it: the writer sends the new values only
        batches = [pa.record_batch({"x5": pa.DictionaryArray.from_arrays(
            pa.array(list(range(len(values))), type=pa.int32()), pa.array(values)),
            "x44": [1.0] * len(values)}) for values in days[:2]]
    body = arrow_bodies.stream(batches, deltas=deltas)
    rows = [{"x5": day, "x44": value} for batch in batches
            for day, value in zip(batch.column(0).to_pylist(), batch.column(1).to_pylist(), strict=True)]
    assert arrow_outcomes(live, body) == json_outcomes(live, rows)


# -- The decoded-size budget -----------------------------------------------------------------------------

def _peak_growth(live, pid: int, body: bytes, query: str = "") -> tuple[requests.Response, float]:
    warm = send(live, forms.arrow_stream(ROWS[:2]))
    assert warm.status_code == 200
    before = status_mb(pid, "VmHWM")
    answer = send(live, body, query)
    return answer, status_mb(pid, "VmHWM") - before


def test_an_unused_compressed_column_is_never_decompressed(live, worker):
    # 300 MB of an unused column in a few KB of ZSTD: main decompressed it (1.4 GB: +1.5 GB).
    body = arrow_bodies.unused_column_bomb(ROWS, 300)
    assert len(body) < 1024 * 1024
    answer, grown = _peak_growth(live, worker, body, INLINE)
    assert outcomes(answer.status_code, answer.headers["Content-Type"], answer.content) == json_outcomes(live, ROWS)
    assert grown < GROWTH_MB


def test_a_consumed_column_that_decompresses_past_the_budget_is_a_413_before_it_is(live, worker):
    body = arrow_bodies.consumed_text_bomb("x12", 100_000, 2048, dictionary=False)
    answer, grown = _peak_growth(live, worker, body)
    message = refused(answer, 413)
    # the text, its offsets (large: 8 bytes a row, and one), the ids (int64)
    decoded = 100_000 * 2048 + 800_008 + 800_000
    assert message == (f"the Arrow body (at record batch 0) would decode to {decoded:,} bytes, "
                       f"over the limit of {BUDGET_MB} MB per request (MAX_DECODED_MB)")
    assert grown < GROWTH_MB


@pytest.mark.parametrize("encoding", ["dictionary", "views"])
def test_one_long_text_repeated_is_converted_once_and_never_expanded(live, worker, encoding):
    # main: +1.1 GB before its 422 (the dictionary expanded to a 2 KB string per row).
    if encoding == "dictionary":
        body = arrow_bodies.consumed_text_bomb("x12", 100_000, 2048, dictionary=True)
        expected = "<text of 2,048 bytes>"
    else:  # 100,000 views of one 500-byte text: 50 MB once cast, under the budget; each cell refused unread
        body = arrow_bodies.view_text_bomb("x12", 100_000, 500)
        expected = "<text of 500 bytes>"
    answer, grown = _peak_growth(live, worker, body)
    payload = answer.json()
    assert answer.status_code == 422, payload
    assert payload["invalid_row_count"] == 100_000
    cell = payload["errors"][0]
    assert cell["column"] == "x12" and expected in cell["message"], cell
    assert grown < GROWTH_MB


def test_an_id_dictionary_is_charged_as_the_ids_it_spells(live, worker):
    # Each row echoes its id: a 2 KB id in a dictionary is 200 MB of answer for 100 KB of body.
    body = arrow_bodies.consumed_text_bomb("id", 100_000, 2048, dictionary=True)
    message = refused(send(live, body), 413)
    # the dictionary (its text and 2 offsets), the indices (int32), then each row's id spelt out
    decoded = 2048 + 16 + 400_000 + 100_000 * 2048
    assert message.startswith(f"the Arrow body (at column 'id' of record batch 0) would decode to {decoded:,} bytes")


# -- Text that is not UTF-8, views, ids past int64 ---------------------------------------------------------

def _text_column(cells: list[bytes]) -> pa.Array:
    offsets = np.cumsum([0, *map(len, cells)]).astype(np.int32)
    return pa.Array.from_buffers(pa.string(), len(cells), [None, pa.py_buffer(offsets), pa.py_buffer(b"".join(cells))])


def test_invalid_utf8_in_a_text_cell_is_a_400_naming_the_column(live, worker):
    # main: 500.
    data = pa.table({"x44": [1.0, 2.0], "x5": _text_column([b"monday", b"mon\xffday"])})
    message = refused(send(live, arrow_bodies.stream(data)))
    assert message.startswith("record batch 0 of the Arrow body is invalid: column 'x5': ")
    assert "utf8" in message.lower().replace("-", "")


def test_dictionaries_of_string_views_score_as_json(live, worker):
    # main: 500 (a numeric column or the ids: their dictionary was cast to its value type).
    columns = {"id": ["a", "b", None, "b", "c"], "x5": ["monday", "sun", None, "Tue", "funday"],
               "x12": ["$1", "($2.50)", None, "$1", "$-3"]}
    view = pa.dictionary(pa.int32(), pa.string_view())
    body = arrow_bodies.stream(pa.table({name: pa.array(cells).dictionary_encode().cast(view)
                                         for name, cells in columns.items()}))
    rows = [dict(zip(columns, cells, strict=True)) for cells in zip(*columns.values(), strict=True)]
    assert arrow_outcomes(live, body) == json_outcomes(live, rows)


@pytest.mark.parametrize(("ids", "expected"), [
    (pa.array([2**63, 2**64 - 1, None], type=pa.uint64()), [2**63, 2**64 - 1, None]),
    (pa.array([decimal.Decimal(10**30), decimal.Decimal(-5), None], type=pa.decimal128(38, 0)),
     [str(10**30), "-5", None]),
    (pa.array([decimal.Decimal("12.50"), None, decimal.Decimal("-0.01")], type=pa.decimal128(10, 2)),
     ["12.50", None, "-0.01"]),
])
@pytest.mark.parametrize("accept", [ARROW, PARQUET])
def test_ids_beyond_int64_are_answered_exactly_in_arrow_and_parquet(live, worker, ids, expected, accept):
    # main: 500 (the answer's id column overflowed int64).
    answer = send(live, arrow_bodies.stream(pa.table({"id": ids, "x44": [1.0, 2.0, 3.0]})), accept=accept)
    assert answer.status_code == 200, answer.text[:300]
    table = pa.ipc.open_stream(answer.content).read_all() if accept == ARROW else pq.read_table(pa.BufferReader(
        answer.content))
    assert table.column("id").to_pylist() == expected
    assert table.column("probability_positiveclass").null_count == 0


def test_an_arrow_file_scores_as_its_stream(live, worker):
    data = forms.table(ROWS)
    assert arrow_outcomes(live, arrow_bodies.stream(data, file=True)) == json_outcomes(live, ROWS)


# -- Every cell type (lib/codecs/columnar.py, shared by Arrow, Parquet, CSV and the file command) ----------------------

def _dictionary(values: list, index_type: pa.DataType, value_type: pa.DataType | None = None) -> pa.Array:
    encoded = pa.array(values).dictionary_encode()
    return encoded.cast(pa.dictionary(index_type, value_type or encoded.type.value_type))


UNSUPPORTED = "unsupported Arrow type {}"  # then the type's parameters (Parquet names a list's item "element")
#: (column, Arrow cells, the JSON cells they must score as, or the start of the error of each present cell)
CELL_TYPES = [
    ("x12", pa.array(["$1,234.50", None, " 7 "]), ["$1,234.50", None, " 7 "]),
    ("x12", pa.array(["$1,234.50", None, " 7 "], type=pa.large_string()), ["$1,234.50", None, " 7 "]),
    ("x12", pa.array(["$1,234.50", None, " 7 "], type=pa.string_view()), ["$1,234.50", None, " 7 "]),
    ("x5", pa.array(["MONDAY", None, "funday"], type=pa.string_view()), ["MONDAY", None, "funday"]),
    ("x5", pa.array(["sun", None, "Tue"], type=pa.large_string()), ["sun", None, "Tue"]),
    *[(column, _dictionary(cells, index_type), cells)
      for index_type in (pa.int8(), pa.int16(), pa.int32(), pa.int64(), pa.uint8(), pa.uint16(), pa.uint32(),
                         pa.uint64())
      for column, cells in (("x5", ["sun", None, "sun", "Smarch"]), ("x12", ["$5", "($1.5)", None, "$5"]))],
    *[(column, _dictionary(cells, pa.int16(), value_type), cells)
      for value_type in (pa.string_view(), pa.large_string())
      for column, cells in (("x81", ["Sept", "dec", None, "dec"]), ("x44", [" 1.5", "x", None, " 1.5"]))],
    ("x44", _dictionary([1.5, None, 2.25, 1.5], pa.int8()), [1.5, None, 2.25, 1.5]),
    ("x44", _dictionary([3, None, -7, 3], pa.uint32()), [3, None, -7, 3]),
    ("x5", _dictionary([3, None, 3], pa.int8()), [3, None, 3]),
    ("x44", pa.array([2**63 - 1, None, -(2**63)], type=pa.int64()), [2**63 - 1, None, -(2**63)]),
    ("x44", pa.array([2**64 - 1, None, 0], type=pa.uint64()), [2**64 - 1, None, 0]),
    ("x44", pa.array([1.5, None, -2.0], type=pa.float16()), [1.5, None, -2.0]),
    ("x44", pa.array([decimal.Decimal("0.1"), None, decimal.Decimal("-123456789.123456789")],
                     type=pa.decimal128(20, 9)), [0.1, None, -123456789.123456789]),
    ("x12", pa.array([decimal.Decimal("1" * 40 + ".3"), None, decimal.Decimal("2E-30")], type=pa.decimal256(76, 30)),
     [float("1" * 40 + ".3"), None, 2e-30]),
    ("x5", pa.array([decimal.Decimal("1.5"), None], type=pa.decimal128(5, 1)), [1.5, None]),
    ("x44", pa.nulls(3), [None, None, None]),
    ("x44", pa.array([True, None, False]), UNSUPPORTED.format("bool")),
    ("x44", pa.array([b"1", None, b"2"]), UNSUPPORTED.format("binary")),
    ("x12", pa.array([b"1", None], type=pa.large_binary()), UNSUPPORTED.format("large_binary")),
    ("x12", pa.array([b"1", None], type=pa.binary_view()), UNSUPPORTED.format("binary_view")),
    ("x44", pa.array([1, None], type=pa.timestamp("ms")), UNSUPPORTED.format("timestamp[ms]")),
    ("x44", pa.array([1, None], type=pa.date32()), UNSUPPORTED.format("date32[day]")),
    ("x44", pa.array([1, None], type=pa.duration("s")), UNSUPPORTED.format("duration[s]")),
    ("x5", pa.array([["monday"], None]), UNSUPPORTED.format("list<")),
    ("x44", pa.array([{"a": 1}, None]), UNSUPPORTED.format("struct<a: int64>")),
    ("x44", pa.array([[("a", 1)], None], type=pa.map_(pa.string(), pa.int64())),
     UNSUPPORTED.format("map<string, int64")),
    ("x44", pa.ExtensionArray.from_storage(pa.uuid(), pa.array([b"0" * 16, None], type=pa.binary(16))),
     UNSUPPORTED.format("extension<arrow.uuid>")),
    ("x44", pa.ExtensionArray.from_storage(pa.bool8(), pa.array([1, None], type=pa.int8())),
     UNSUPPORTED.format("extension<arrow.bool8>")),
]


@pytest.mark.parametrize(("column", "array", "expected"), CELL_TYPES,
                         ids=[f"{column}-{array.type}" for column, array, _ in CELL_TYPES])
@pytest.mark.parametrize("form", ["arrow", "parquet"])
def test_every_cell_type_scores_as_json_or_is_refused_naming_column_and_type(client, column, array, expected, form):
    ids = [f"r{i}" for i in range(len(array))]
    data = pa.table({column: array, "id": ids})
    if form == "parquet":
        if pa.types.is_null(array.type) or "view" in str(array.type) or isinstance(array.type, pa.BaseExtensionType):
            pytest.skip("Parquet stores this type as another one")
        body, content_type = forms.parquet(data), PARQUET
    else:
        body, content_type = arrow_bodies.stream(data), ARROW
    answer = client.post(f"/predict?{INLINE}", data=body, content_type=content_type)
    got = outcomes(answer.status_code, answer.content_type, answer.data)
    if isinstance(expected, list):
        rows = [{"id": row_id, column: cell} for row_id, cell in zip(ids, expected, strict=True)]
        json_answer = client.post(f"/predict?{INLINE}", data=forms.dumps(rows), content_type=forms.JSON)
        assert got == outcomes(json_answer.status_code, json_answer.content_type, json_answer.data)
        return
    present = [i for i, cell in enumerate(array.to_pylist()) if cell is not None]
    assert [i for i, outcome in enumerate(got) if outcome[0] == "invalid"] == present
    refusal = client.post("/predict", data=body, content_type=content_type)
    assert refusal.status_code == 422
    cells = [(error["index"], error["column"], error["message"]) for error in refusal.json["errors"]]
    assert [(index, name) for index, name, _ in cells] == [(i, column) for i in present]
    for _, _, message in cells:
        assert message.startswith(expected) and message.endswith(": send numbers or strings"), message
    assert [outcome[1] for outcome in got if outcome[0] == "invalid"] == [((column, text),) for _, _, text in cells]


# -- Framing -------------------------------------------------------------------------------------------------

def _framing_cases() -> list[tuple[str, bytes, str]]:
    data = pa.table({"x44": [1.0, 2.0]})
    body, file = arrow_bodies.stream(data), arrow_bodies.stream(data, file=True)
    schema_only = arrow_bodies.stream([pa.record_batch({"x44": pa.array([], type=pa.float64())})])
    [(_, _, schema_end), *_] = arrow_bodies.message_spans(body)
    # The file's second batch once more at the end of its stream, where the footer does not list it.
    two = arrow_bodies.stream([pa.record_batch({"x44": [1.0]}), pa.record_batch({"x44": [2.0]})], file=True)
    end_of_stream = len(two) - 10 - int.from_bytes(two[-10:-6], "little") - 8
    repeated = two[:end_of_stream] + pa.record_batch({"x44": [2.0]}).serialize().to_pybytes() + two[end_of_stream:]
    return [
        ("truncated", body[:-20], "the body is not a valid Arrow IPC stream: "),
        ("garbage", b"\xff\xff\xff\xff\x10\x00\x00\x00" + b"\x00" * 16, "the body is not a valid Arrow IPC stream: "),
        ("no rows", schema_only, "the body holds no rows"),
        ("a batch first", body[:8] + body[schema_end:], "the body is not a valid Arrow IPC stream: "),
        ("file without its end", file[:-6],
         "the body is not a valid Arrow IPC file: it does not end with the ARROW1 magic"),
        ("file footer out of range", file[:-10] + b"\xff\xff\xff\x7f" + file[-6:],
         "the body is not a valid Arrow IPC file: its footer length is out of range"),
        ("file stream with a batch its footer does not list", repeated,
         "the body is not a valid Arrow IPC file: its footer lists 2 record batches, its stream holds 3"),
    ]


@pytest.mark.parametrize(("case", "body", "message"), _framing_cases(), ids=[case for case, _, _ in _framing_cases()])
def test_a_malformed_stream_or_file_is_a_400_naming_the_problem(client, case, body, message):
    answer = client.post("/predict", data=body, content_type=ARROW)
    assert answer.status_code == 400, answer.json
    assert answer.json["message"].startswith(message), answer.json["message"]


def test_many_small_batches_score_as_json_and_too_many_are_a_413(client):
    rows = ROWS[:40]
    batches = forms.table(rows).to_batches(max_chunksize=3)
    answer = client.post(f"/predict?{INLINE}", data=arrow_bodies.stream(batches), content_type=ARROW)
    expected = client.post(f"/predict?{INLINE}", data=forms.dumps(rows), content_type=forms.JSON)
    assert outcomes(answer.status_code, answer.content_type, answer.data) == outcomes(
        200, expected.content_type, expected.data)
    empty = pa.record_batch({"x44": pa.array([], type=pa.float64())})
    answer = client.post("/predict", data=arrow_bodies.stream([empty] * 10_001), content_type=ARROW)
    assert answer.status_code == 413
    assert answer.json["message"] == ("the Arrow body holds more than 10,000 record batches and dictionaries: "
                                      "send fewer, larger batches")


@pytest.mark.parametrize("text_type", [pa.string(), pa.large_string(), pa.string_view()])
@pytest.mark.parametrize(("name", "message"), [
    ("x12", "not an amount: <text of 300 bytes>; accepted: 5032.58, 5,032.58, $5,032.58, -$5,032.58, $-5,032.58, "
            "($5,032.58)"),
    ("x5", "unknown value <text of 300 bytes>; accepted: monday, tuesday, wednesday, thursday, friday, saturday, "
           "sunday"),
])
def test_a_text_cell_over_256_bytes_is_refused_unread_in_every_table_reader(name, message, text_type):
    # Handed on as a value the normaliser refuses: a reader that keeps only the values (the file
    # command's CSV) refuses it too, instead of finding it missing.
    from lib.codecs.columnar import column_values
    from lib.core.normalize import normalize_column

    cells = ["9" * 300, "$1" if name == "x12" else "monday", None, " " * 150 + "7" + " " * 149]
    values, problems = column_values(pa.array(cells, type=text_type), name)
    assert problems == []
    _, errors = normalize_column(name, values)
    assert errors == {0: message, 3: message}


def test_a_schema_read_before_changes_nothing_of_what_a_later_body_may_do():
    # The decoder keeps the schemas it read (a client sends one schema body after body): a body
    # with a known schema is still validated batch by batch, and many schemas keep the right one.
    from lib.codecs.arrow import ArrowDecoder
    from lib.codecs.limits import DecodeLimits
    from lib.core.errors import PayloadError

    decoder = ArrowDecoder(["x5", "x44"], DecodeLimits(max_rows=200_000, max_decoded_bytes=96 << 20))
    honest = pa.table({"x5": ["monday"] * 777, "x44": pa.array(np.arange(777), type=pa.int64())})
    assert decoder.decode(arrow_bodies.stream(honest)).num_rows == 777
    with pytest.raises(PayloadError, match="record batch 0 of the Arrow body is invalid"):
        decoder.decode(_lying_batch(file=False))
    for n in range(40):  # more schemas than are kept, each answered with its own columns
        data = pa.table({f"c{n}": [n], "x44": pa.array([float(n)]), "x5": [f"day{n}"]})
        table = decoder.decode(arrow_bodies.stream(data))
        assert table.column_names == ["x44", "x5"] and table.to_pylist() == [{"x44": float(n), "x5": f"day{n}"}]
    assert decoder.decode(arrow_bodies.stream(honest)).to_pylist()[776] == {"x5": "monday", "x44": 776}
