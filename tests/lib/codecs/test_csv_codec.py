"""CSV bodies and files (lib/codecs/csv.py), as the API and the file command read them: a byte-order
mark is skipped, a row whose cell count differs from the header's and a name given twice are
refused with the row or the name, quoted cells keep their commas and line breaks."""

from __future__ import annotations

import pytest

from lib.batch import command as score
from tests.lib.batch.test_score import run_score

ROW = "x5,x12,x44\nMonday,\"$1,000.50\",0.5\n"


def post_csv(client, body: bytes):
    return client.post("/predict", data=body, content_type="text/csv")


def test_a_byte_order_mark_is_not_part_of_the_first_name(client):
    plain = post_csv(client, ROW.encode())
    marked = post_csv(client, b"\xef\xbb\xbf" + ROW.encode())
    assert (plain.status_code, marked.status_code) == (200, 200)
    assert marked.json == plain.json
    # x5 read as a value, not as missing: Monday is not what a missing x5 scores.
    missing = post_csv(client, b"x12,x44\n\"$1,000.50\",0.5\n")
    assert missing.json[0]["probability_positiveclass"] != plain.json[0]["probability_positiveclass"]


@pytest.mark.parametrize(("body", "message"), [
    # An amount's grouping comma left unquoted: four cells under three names.
    (b"x5,x12,x44\nMonday,$1,000.50,0.5\n",
     "row 2 of the CSV (the header is row 1) has 4 cells but the header has 3 (a comma inside an unquoted cell"),
    (b"x5,x12,x44\nMonday,1,0.5\nTuesday,0.5\n",
     "row 3 of the CSV (the header is row 1) has 2 cells but the header has 3 (a cell left out"),
    (b"x5,x12,x5\nMonday,1,Tuesday\n", "column 'x5' appears 2 times in the CSV header: send each column once"),
    (b"x7,x7,x12\n1,2,3\n", "column 'x7' appears 2 times in the CSV header"),
])
def test_rows_that_would_shift_cells_and_repeated_names_are_refused(client, body, message):
    response = post_csv(client, body)
    assert response.status_code == 400, response.data
    assert response.json["message"].startswith(message)


def test_quoted_cells_keep_commas_quotes_and_line_breaks_and_blank_lines_are_skipped(client):
    body = b'x5,x12,id\n"Monday","$1,000.50","a ""quoted""\nid"\n\nTuesday,"2,000",b\n'
    response = post_csv(client, body)
    assert response.status_code == 200, response.data
    assert [row["id"] for row in response.json] == ['a "quoted"\nid', "b"]
    rows = [{"x5": "Monday", "x12": "$1,000.50"}, {"x5": "Tuesday", "x12": "2,000"}]
    expected = client.post("/predict", json=rows).json
    assert [r["probability_positiveclass"] for r in response.json] == [r["probability_positiveclass"] for r in expected]


def test_a_header_without_rows_is_no_rows(client):
    response = post_csv(client, b"x5,x12\n")
    assert response.status_code == 400
    assert response.json["message"] == "the body holds no rows: send at least one row"


@pytest.mark.parametrize(("text", "message"), [
    ("x5,x12,x44\nMonday,$1,000.50,0.5\n", "malformed CSV after row 0: row 2 of the CSV (the header is row 1) has 4"),
    ("x5,x12,x5\nMonday,1,Tuesday\n", "column 'x5' appears 2 times in the CSV header"),
])
def test_the_file_command_refuses_the_same_files(tmp_path, text, message):
    source = tmp_path / "rows.csv"
    source.write_text(text)
    code, stderr = run_score(source, "-o", tmp_path / "out.csv")
    assert code == score.EXIT_UNREADABLE, stderr
    assert message in stderr
    assert "Traceback" not in stderr
    assert not (tmp_path / "out.csv").exists()


def test_the_file_command_skips_a_byte_order_mark(tmp_path):
    plain, marked = tmp_path / "plain.csv", tmp_path / "marked.csv"
    plain.write_bytes(ROW.encode())
    marked.write_bytes(b"\xef\xbb\xbf" + ROW.encode())
    outputs = []
    for source in (plain, marked):
        code, stderr = run_score(source, "-o", source.with_suffix(".out.csv"))
        assert code == 0, stderr
        outputs.append(source.with_suffix(".out.csv").read_text())
    assert outputs[0] == outputs[1]
