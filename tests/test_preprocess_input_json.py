"""``preprocess_input_json``: input JSON → the model's input frame, which the statsmodels model
predicts on with the served scorer's probabilities; malformed bodies and invalid cells raise the
library's errors, naming the row and the column."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lib.core.errors import InputError, PayloadError
from lib.core.raw_batch import RawBatch
from lib.core.scorer import compile_plan, score_batch
from preprocess_input_json import preprocess_input_json

TOLERANCE = 1e-9
MESSY_ROWS = [
    {"id": "customer-1", "x12": "($5,032.58)", "x31": " ASIA ", "x5": "Sat", "x81": "sept", "x44": "0.5",
     "x53": "n/a", "x56": None},
    {"x12": " $ 1,000 ", "x63": "36.29 %", "x5": "MONDAY", "x81": "Oct", "unknown": [1, 2]},
    {},
]


def served_probabilities(stages, rows: list[dict]) -> np.ndarray:
    """The probabilities the service answers: the compiled plan on the consumed columns."""
    plan = compile_plan(stages)
    scores = score_batch(plan, RawBatch.from_records(rows, plan.consumed_columns))
    assert scores.errors == []
    return scores.probabilities


def test_the_model_predicts_the_served_probabilities_on_its_frame(stages, test_rows):
    frame = preprocess_input_json(test_rows, stages)
    assert list(frame.columns) == stages.variables
    assert len(frame) == len(test_rows) == 10_000
    assert frame.notna().all().all()
    predicted = np.asarray(stages.model.predict(frame), dtype=np.float64)
    np.testing.assert_allclose(predicted, served_probabilities(stages, test_rows), rtol=0, atol=TOLERANCE)


def test_every_feature_of_messy_rows_matches_the_served_path(probe_stages, test_rows):
    # The probe model consumes all 121 features: every dummy and missing indicator counts.
    rows = MESSY_ROWS + test_rows[:200]
    frame = preprocess_input_json(json.dumps(rows).encode(), probe_stages)
    assert frame.shape == (len(rows), 121)
    predicted = np.asarray(probe_stages.model.predict(frame), dtype=np.float64)
    np.testing.assert_allclose(predicted, served_probabilities(probe_stages, rows), rtol=0, atol=TOLERANCE)


def test_json_text_one_object_and_decoded_rows_give_the_same_frame(stages, test_rows):
    rows = test_rows[:5]
    expected = preprocess_input_json(rows, stages)
    assert preprocess_input_json(json.dumps(rows), stages).equals(expected)
    assert preprocess_input_json(json.dumps(rows).encode(), stages).equals(expected)
    one = preprocess_input_json(json.dumps(rows[3]), stages)
    assert one.shape == (1, len(stages.variables))
    np.testing.assert_array_equal(one.to_numpy(), expected.to_numpy()[3:4])


def test_the_default_stages_are_the_store_s_active_version(model_dir, stages, test_rows):
    # model_dir is the active version of lib/model_store/, as ``stages`` loads it.
    assert preprocess_input_json(test_rows[:20]).equals(preprocess_input_json(test_rows[:20], stages))


@pytest.mark.parametrize(("body", "message"), [
    ('[{"x12": "$5.00"', "malformed JSON at line 1 column 17"),
    (b"\xff\xfe not json", "malformed JSON"),
    ("[]", "no rows"),
    ("42", "got int"),
    ('[{"x12": 1}, "x12"]', "row 1: expected an object"),
    ([{"x12": 1}, 7], "row 1: expected an object"),
])
def test_a_body_that_is_not_rows_is_a_payload_error(stages, body, message):
    with pytest.raises(PayloadError, match=message) as raised:
        preprocess_input_json(body, stages)
    assert "$5.00" not in str(raised.value)


def test_an_invalid_cell_is_an_input_error_naming_row_and_column(stages, test_rows):
    rows = [test_rows[0], {**test_rows[1], "x12": "twelve dollars"}, {**test_rows[2], "x5": "someday"}]
    with pytest.raises(InputError) as raised:
        preprocess_input_json(rows, stages)
    assert [(e.index, e.column) for e in raised.value.errors] == [(1, "x12"), (2, "x5")]
    assert raised.value.invalid_rows == [1, 2]
    assert "twelve dollars" in raised.value.errors[0].message
