"""Hostile Parquet: footers that lie about their rows, row groups that claim 2^34 or 2^40 rows, a
few KB that decode to millions of rows, no columns, text that is not UTF-8.

Every file is written by pyarrow, then its footer patched (tests/support/parquet_footer.py). Through a
live server: the status, the error naming the problem, the same worker answering (its pid, and no
worker booted again in the log); bodies that are accepted score as the same rows sent as JSON.
The same files through the file command: exit code 3 and one line saying why, no traceback.
"""

from __future__ import annotations

import io

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import requests

from bench.memory import worker_pids
from lib.batch import command as score
from lib.codecs.limits import DecodeLimits
from lib.codecs.parquet import ParquetDecoder
from lib.core.errors import LimitError, PayloadError
from tests.support import forms
from tests.support.live_server import LiveServer
from tests.support.parquet_footer import FILE_ROWS, chunk_field, patched, patched_page, row_group_rows

pytestmark = pytest.mark.server

TIMEOUT = (5, 120)
PARQUET = forms.PARQUET


def parquet(data: pa.Table, **options) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(data, sink, **options)
    return sink.getvalue().to_pybytes()


def many_rows(n: int) -> bytes:
    """``n`` rows of one consumed column, one repeated value: a few KB (RLE, ZSTD)."""
    return parquet(pa.table({"x44": pa.repeat(pa.scalar(0.25), n)}), compression="zstd", row_group_size=n)


def small_file() -> bytes:
    """1,000 honest rows in row groups of 400, 400 and 200."""
    data = pa.table({"x44": pa.array([i / 1000 for i in range(1000)]), "x5": pa.array(["monday"] * 1000),
                     "id": pa.array(range(1000))})
    return parquet(data, row_group_size=400, use_dictionary=["x5"])


def not_utf8() -> pa.Array:
    return pa.array([b"$1.50", b"\xff\xfe"], pa.binary()).view(pa.string())


#: name -> (body, status, words of the error message)
HOSTILE = {
    "file num_rows 1 over 500,000 rows": (lambda: patched(many_rows(500_000), {FILE_ROWS: 1}), 400,
                                          "the footer says the file holds 1 rows, its row groups 500000"),
    "file num_rows -1": (lambda: patched(many_rows(500_000), {FILE_ROWS: -1}), 400, "the file holds -1 rows"),
    "row group under-claims its rows": (
        lambda: patched(small_file(), {FILE_ROWS: 900, row_group_rows(0): 300}), 400,
        "the footer says row group 0 holds 300 rows, the data holds 400"),
    "row group over-claims its rows": (
        lambda: patched(small_file(), {FILE_ROWS: 1100, row_group_rows(0): 500}), 400,
        "the footer says row group 0 holds 500 rows, the data holds 400"),
    "5,000,000 rows in a few KB": (lambda: many_rows(5_000_000), 413, "MAX_ROWS"),
    "5,000,000 rows in a few KB, the footer saying 1": (
        lambda: patched(many_rows(5_000_000), {FILE_ROWS: 1, row_group_rows(0): 1}), 400,
        "the footer says row group 0 holds 1 rows, the data holds 5000000"),
    "a row group claiming 2^34 rows, the file 1,000": (
        lambda: patched(small_file(), {row_group_rows(0): 2**34}), 400,
        "the footer says the file holds 1000 rows, its row groups 17179869784"),
    "a row group claiming 2^34 rows": (
        lambda: patched(small_file(), {FILE_ROWS: 2**34 + 600, row_group_rows(0): 2**34}), 413, "MAX_ROWS"),
    "a row group claiming 2^40 rows": (
        lambda: patched(small_file(), {FILE_ROWS: 2**40 + 600, row_group_rows(0): 2**40}), 413, "MAX_ROWS"),
    "no columns, 5 rows": (lambda: patched(parquet(pa.table({"a": [1]}).select([])),
                                           {FILE_ROWS: 5, row_group_rows(0): 5}), 400, "no columns"),
    "text that is not UTF-8": (lambda: parquet(pa.table({"x12": not_utf8()})), 400,
                               "column 'x12' holds text that is not UTF-8"),
    "a column chunk past the end of the data": (
        lambda: patched(small_file(), {chunk_field(0, 0, 7): 10**6}), 400, "lies outside the file's data"),
    "one 2 KB amount repeated 100,000 times": (
        lambda: parquet(pa.table({"x12": pa.repeat(pa.scalar("9" * 2048), 100_000)}), compression="zstd"), 413,
        "MAX_DECODED_MB"),
}


@pytest.fixture(scope="module")
def live(model_dir, tmp_path_factory):
    """One worker, the default limits (MAX_ROWS 100,000, MAX_DECODED_MB 256)."""
    log = tmp_path_factory.mktemp("parquet") / "gunicorn.log"
    with LiveServer(env={"MODEL_DIR": str(model_dir)}, workers=1, log_path=log) as server:
        yield server


def booted(server: LiveServer) -> int:
    return server.log_text().count("Booting worker")


def post(server: LiveServer, body: bytes, query: str = "") -> requests.Response:
    return requests.post(f"{server.url}/predict{query}", data=body, headers={"Content-Type": PARQUET},
                         timeout=TIMEOUT)


@pytest.mark.parametrize("name", list(HOSTILE))
def test_a_hostile_parquet_body_is_a_clear_4xx_and_the_worker_serves_on(live, name):
    make, status, words = HOSTILE[name]
    (worker,) = worker_pids(live.process.pid)
    boots = booted(live)
    response = post(live, make())
    assert response.status_code == status, response.text[:300]
    assert words in response.json()["message"]
    assert worker_pids(live.process.pid) == [worker]
    assert booted(live) == boots
    assert post(live, small_file()).status_code == 200


def json_probabilities(server: LiveServer, rows: list[dict]) -> list:
    response = requests.post(f"{server.url}/predict?format=columns&errors=inline", json=rows, timeout=TIMEOUT)
    assert response.status_code == 200, response.text[:300]
    return response.json()["probability_positiveclass"]


def parquet_probabilities(server: LiveServer, body: bytes) -> list:
    response = post(server, body, "?format=columns&errors=inline")
    assert response.status_code == 200, response.text[:300]
    return response.json()["probability_positiveclass"]


def test_honest_row_groups_score_as_the_same_rows_in_json(live, test_rows):
    rows = test_rows[:1000]
    body = parquet(forms.table(rows), row_group_size=300, compression="zstd")
    assert pq.ParquetFile(io.BytesIO(body)).metadata.num_row_groups == 4
    assert parquet_probabilities(live, body) == json_probabilities(live, rows)


def test_rows_without_any_consumed_column_are_all_missing_as_in_csv(live):
    body = parquet(pa.table({"note": ["a", "b", "c"]}))
    assert parquet_probabilities(live, body) == json_probabilities(live, [{}, {}, {}])


def test_a_row_group_claim_over_the_limit_is_refused_before_its_pages_are_read():
    body = patched(small_file(), {FILE_ROWS: 2**40 + 600, row_group_rows(0): 2**40})
    with pytest.raises(LimitError, match="MAX_ROWS"):
        ParquetDecoder(body, ["x44"], DecodeLimits(max_rows=100_000))
    # Without a row limit (the file command), the pages say what the footer hides.
    with pytest.raises(PayloadError, match="holds 1099511627776 rows, the data holds 400"):
        ParquetDecoder(body, ["x44"], DecodeLimits(max_rows=2**62), whole=False)


def test_a_page_header_that_lies_about_its_values_is_refused():
    body = small_file()
    chunk = pq.ParquetFile(io.BytesIO(body)).metadata.row_group(0).column(0)  # x44: a data page, no dictionary
    assert not chunk.has_dictionary_page
    lying = patched_page(body, chunk.data_page_offset, (5, 1), 8000)  # DataPageHeader.num_values, 400 before
    with pytest.raises(PayloadError, match="row group 0 holds 400 rows, the data holds 8000"):
        ParquetDecoder(lying, ["x44"], DecodeLimits(max_rows=100_000))


@pytest.mark.parametrize(("field", "value", "words"), [
    (1, 11, "says it holds 11 values in 10 rows"),  # num_values: pyarrow shifted the values past a null
    (2, 11, "says 11 of its 10 values are null"),  # num_nulls
])
def test_a_v2_data_page_whose_counts_disagree_is_refused(field, value, words):
    body = parquet(pa.table({"x53": pa.array([1, 2, None, 4, 5, 6, 7, 8, 9, 10], pa.int64())}),
                   data_page_version="2.0", compression="none", use_dictionary=False)
    chunk = pq.ParquetFile(io.BytesIO(body)).metadata.row_group(0).column(0)
    lying = patched_page(body, chunk.data_page_offset, (8, field), value)  # DataPageHeaderV2
    with pytest.raises(PayloadError, match=words):
        ParquetDecoder(lying, ["x53"], DecodeLimits(max_rows=100_000))


def test_more_pages_than_rows_are_refused_before_they_are_all_walked():
    body = parquet(pa.table({"x44": pa.array([i / 7 for i in range(100)])}), data_page_size=1, write_batch_size=1)
    lying = patched(body, {FILE_ROWS: 1, row_group_rows(0): 1, chunk_field(0, 0, 5): 1})
    with pytest.raises(PayloadError, match="the pages of column 'x44' of row group 0 are more than its rows"):
        ParquetDecoder(lying, ["x44"], DecodeLimits(max_rows=100_000))


@pytest.mark.parametrize("factor", [0.5, 2])
def test_a_page_that_decompresses_to_more_or_less_than_its_header_says_is_refused(factor):
    # The budget is charged by the page headers' uncompressed sizes: pyarrow must hold pages to them.
    body = parquet(pa.table({"x44": pa.array([i / 7 for i in range(20_000)])}), compression="zstd",
                   use_dictionary=False)
    chunk = pq.ParquetFile(io.BytesIO(body)).metadata.row_group(0).column(0)
    size = 160_008  # PageHeader.uncompressed_page_size: 20,000 doubles and their levels
    lying = patched_page(body, chunk.data_page_offset, (2,), int(size * factor) - (factor > 1))
    with pytest.raises(PayloadError, match="unreadable Parquet data in row group 0: .*ZSTD"):
        ParquetDecoder(lying, ["x44"], DecodeLimits(max_rows=100_000)).table()


#: What the file command (no MAX_ROWS; MAX_DECODED_MB's default per chunk) says where the API says 413.
FILE_COMMAND_WORDS = {
    "a row group claiming 2^40 rows": "holds 1099511627776 rows, the data holds 400",
    "one 2 KB amount repeated 100,000 times": "MAX_DECODED_MB): score it with a smaller --chunk-rows",
}


@pytest.mark.parametrize("name", [name for name, (_, status, _) in HOSTILE.items() if status == 400]
                         + list(FILE_COMMAND_WORDS))
def test_the_file_command_refuses_hostile_files_with_exit_code_3(name, tmp_path, model_dir):
    make, status, words = HOSTILE[name]
    source = tmp_path / "hostile.parquet"
    source.write_bytes(make())
    stderr = io.StringIO()
    code = score.main([str(source), "-o", str(tmp_path / "out.parquet"), "--model-dir", str(model_dir),
                       "--chunk-rows", "50000"], stderr=stderr)
    assert code == score.EXIT_UNREADABLE, stderr.getvalue()
    assert "Traceback" not in stderr.getvalue()
    assert FILE_COMMAND_WORDS.get(name, words) in stderr.getvalue()
    assert not (tmp_path / "out.parquet").exists()


def test_a_schema_found_to_fit_lets_no_other_schema_through():
    # The API's reader keeps the footer schemas it checked (one schema body after body): a body
    # whose schema differs only by one annotation that does not fit is still refused after it.
    from lib.codecs.parquet import FittingSchemas
    from tests.support import mutators as m

    honest = parquet(pa.table({"x44": [1.5, 2.5], "x5": ["monday", "friday"]}))
    mutated = m.ParquetBody(honest)
    x44 = next(e for e in mutated.schema() if e.value(m.SE_NAME) == b"x44")
    date = m.ThriftField(m.LOGICAL_IDS["DATE"], m.C_STRUCT, m.LOGICAL_TYPES["DATE"])
    x44.set(m.SE_LOGICAL_TYPE, m.C_STRUCT, m.ThriftStruct([date]))
    # A footer without its schema first: what was read of it (the version alone, which every footer
    # starts with) must not count as a schema found to fit.
    schemaless = m.ParquetBody(honest)
    schemaless.footer.remove(m.FMD_SCHEMA)
    schemas, limits = FittingSchemas(), DecodeLimits(max_rows=100, max_decoded_bytes=1 << 26)
    for _ in range(2):
        with pytest.raises(PayloadError):
            ParquetDecoder(bytes(schemaless), ["x44", "x5"], limits, schemas=schemas)
        assert ParquetDecoder(honest, ["x44", "x5"], limits, schemas=schemas).table().num_rows == 2
        with pytest.raises(PayloadError, match="column 'x44' is annotated date but its values are stored as DOUBLE"):
            ParquetDecoder(bytes(mutated), ["x44", "x5"], limits, schemas=schemas)
