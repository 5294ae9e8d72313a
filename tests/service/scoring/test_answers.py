"""The encoders of service/scoring/answers.py: the fast template writes exactly what orjson writes, in a JSON
array and as NDJSON lines."""

from __future__ import annotations

import numpy as np
import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from service.scoring.answers import PREDICTED_CLASS, PROBABILITY, SELECTED_FEATURES, RowsTemplate

FEATURES = ["x12", "x31", "x44", "x5"]


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.lists(st.tuples(st.floats(min_value=0.0, max_value=1.0), st.integers(0, 1)), min_size=1, max_size=50))
def test_rows_template_is_byte_identical_to_orjson(pairs):
    probabilities = np.array([p for p, _ in pairs], dtype=np.float64)
    classes = np.array([c for _, c in pairs], dtype=np.int8)
    objects = [
        {PROBABILITY: p, SELECTED_FEATURES: FEATURES, PREDICTED_CLASS: c}
        for p, c in zip(probabilities.tolist(), classes.tolist(), strict=True)
    ]
    assert b"[" + RowsTemplate(FEATURES, b",").encode(probabilities, classes) + b"]" == orjson.dumps(objects)
    assert RowsTemplate(FEATURES, b"\n").encode(probabilities, classes) == b"\n".join(map(orjson.dumps, objects))


def test_rows_template_keeps_tiny_and_extreme_probabilities_exact():
    probabilities = np.array([5e-324, 1e-300, 1.0 - 2**-53, 0.0, 1.0])
    answer = orjson.loads(b"[" + RowsTemplate(FEATURES, b",").encode(probabilities, np.array([0, 0, 1, 0, 1])) + b"]")
    assert [row[PROBABILITY] for row in answer] == probabilities.tolist()
    assert [row[PREDICTED_CLASS] for row in answer] == [0, 0, 1, 0, 1]
