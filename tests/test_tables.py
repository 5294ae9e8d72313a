"""lib.tables: Arrow tables and record batches become the same raw batch."""

from __future__ import annotations

import math

import pyarrow as pa

from lib.tables import batch_from_table


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
