"""lib.codecs.columnar: Arrow tables and record batches become the same raw batch."""

from __future__ import annotations

import math

import pyarrow as pa
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from lib.codecs.columnar import batch_from_table, column_values


def test_a_record_batch_with_missing_numbers_reads_as_the_same_table():
    # Array.to_numpy() refuses nulls unless asked to copy; a RecordBatch's columns are Arrays.
    columns = {"x44": pa.array([1.5, None, 3.0]), "x12": pa.array([2, None, 4], type=pa.int32()),
               "id": pa.array(["a", "b", None])}
    from_batch = batch_from_table(pa.RecordBatch.from_pydict(columns), ["x12", "x44"])
    from_table = batch_from_table(pa.table(columns), ["x12", "x44"])
    for batch in (from_batch, from_table):
        assert [[None if math.isnan(v) else v for v in batch.columns[c]] for c in ("x12", "x44")] \
            == [[2.0, None, 4.0], [1.5, None, 3.0]]
        assert (list(batch.ids), batch.errors) == (["a", "b", None], [])


def test_categorical_columns_plain_or_dictionary_encoded_score_as_json_rows(stages):
    from lib.core.raw_batch import RawBatch
    from lib.core.scorer import compile_plan, score_batch

    plan = compile_plan(stages)
    x5 = [" SUNDAY ", None, "Tue", "funday", "monday", "nan", "funday", ""]
    x81 = ["Sept", "dec", None, "March", "Smarch", "june", "JUNE", "N/A"]
    rows = [{"x5": a, "x81": b, "x44": float(i), "id": f"r{i}"} for i, (a, b) in enumerate(zip(x5, x81, strict=True))]
    expected = score_batch(plan, RawBatch.from_records(rows, plan.consumed_columns))
    plain = pa.table({"x5": x5, "x81": x81, "x44": [float(i) for i in range(8)], "id": [r["id"] for r in rows]})
    # Two chunks with dictionaries of their own, as a Parquet file's row groups come.
    encoded = pa.Table.from_batches([batch.cast(pa.schema([
        ("x5", pa.dictionary(pa.int32(), pa.string())), ("x81", pa.dictionary(pa.int8(), pa.string())),
        ("x44", pa.float64()), ("id", pa.string())])) for batch in plain.to_batches(max_chunksize=3)])
    for table in (plain, encoded, encoded.combine_chunks()):
        scores = score_batch(plan, batch_from_table(table, plan.consumed_columns))
        assert scores.probabilities.tobytes() == expected.probabilities.tobytes()
        assert [(e.index, e.column, e.message) for e in scores.errors] \
            == [(e.index, e.column, e.message) for e in expected.errors]
        assert [e.id for e in scores.errors] == [f"r{e.index}" for e in scores.errors]
    assert {e.index for e in expected.errors} == {3, 4, 6}


TRICKY_CELLS = ["5032.58", " 5032.58 ", "\t-1.5e3", "+.5", "1.", "-0", "00012", "1E+05", "", "   ", None,
                "$5,547.78", "$-5,483.24", "-$1,204.10", "($5,032.58)", "$", ",", "1,2.3", "5 0 3 2",
                "36.29%", "36.29 %", " 7.01% ", "5%%", "%", "%5", "5 % %", "nan", " N/A ", "NULL", "inf",
                "1e999", "-1e999", "1e-400", "0x10", "1_000", "1.2.3", "e5", "５", "1\u00a0", "1\n",
                "123456789012345678901234567890.123456789e-10", "4.9e-324", "1.7976931348623157e308",
                ".", "+", "-", "1e", "e5", "1e5.5", "++1", "1-", "-nan", "Infinity", "INF", "+inf", "1e+",
                "1.e5", ".e5", "0e0", "$ ", "$$5", "5$", "1,,000", "NaN$", "\t$1,000.00\t", "1.5%", "  ",
                "1 2", "12 %", "١٢", "$5.547,78", "$1,00", "5,5,4,7", "1,0000", ",100", "100,", "$-(5)", "--5",
                "$5$", "$(5)", "$ ( 5 )", "- $5", "+$5", "1,000e3", "1,000,000.5", "+-5%", "%5", "5 %", "$\u00a05",
                "$\f5", "5\x1f%", "$\v5", "5\v%", "\v5", "1,000\v"]


@pytest.mark.parametrize("name", ["x44", "x12", "x63"])  # numeric, currency, percent
@pytest.mark.parametrize("cells", [[cell] for cell in TRICKY_CELLS] + [TRICKY_CELLS], ids=repr)
def test_text_cells_of_numeric_columns_normalise_as_json_strings(name, cells):
    # The vectorised route in Arrow must give the cell-by-cell route's numbers and errors, bit for bit.
    from lib.core.normalize import normalize_numeric

    expected, expected_errors = normalize_numeric(name, cells)
    for array in (pa.array(cells, type=pa.string()), pa.chunked_array([pa.array(cells, type=pa.large_string())])):
        values, problems = column_values(array, name)
        got, errors = normalize_numeric(name, values)
        assert (got.tobytes(), errors, problems) == (expected.tobytes(), expected_errors, [])


# Cells spelt from the characters amounts and percentages are made of: most are malformed, many
# are well-formed, and a column of them mixes shapes as real columns do.
_AMOUNT_TEXT = st.text(alphabet="0123456789$,.-+%() eE\t١", max_size=10)


@settings(max_examples=300, deadline=None)
@given(cells=st.lists(_AMOUNT_TEXT | st.none(), min_size=1, max_size=30), cut=st.integers(0, 3))
@example(cells=["$5", "$1,00"], cut=1)  # the malformed cell last, in a slice
@pytest.mark.parametrize("name", ["x12", "x63"])  # currency, percent
def test_a_column_of_amounts_normalises_as_its_cells_do_one_by_one(name, cells, cut):
    # The column is checked against the amount grammar as a whole (by the cells' shapes): it must
    # agree with the cell-by-cell route on every mix, sliced and chunked as readers hand it over.
    from lib.core.normalize import normalize_numeric

    expected, expected_errors = normalize_numeric(name, cells)
    sliced = pa.array(["$1"] * cut + cells, type=pa.string()).slice(cut)
    for array in (sliced, pa.chunked_array([sliced[:len(sliced) // 2], sliced[len(sliced) // 2:]])):
        values, problems = column_values(array, name)
        got, errors = normalize_numeric(name, values)
        assert (got.tobytes(), errors, problems) == (expected.tobytes(), expected_errors, [])
