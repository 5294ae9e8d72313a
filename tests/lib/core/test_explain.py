"""Reason codes (``?explain=``): each row's logit split into one contribution per model variable.

Property-based over random valid rows, on the trained model and on a probe model that gives all
121 features a coefficient (every level and ``_nan`` dummy); then through the HTTP endpoint.
"""

from __future__ import annotations

import csv
import io
import math

import numpy as np
import orjson
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lib.core.explain import METHOD, Explainer
from lib.core.features import NAN_LEVEL, design_matrix, normalize_frame
from lib.core.raw_batch import RawBatch
from lib.core.schema import CATEGORICAL_COLUMNS, LEVELS, kind_of
from lib.core.scorer import compile_plan, score_batch

TOLERANCE = 1e-9
FUZZ = settings(max_examples=60, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture])
REASON_KEYS = ["variable", "column", "value", "contribution", "direction"]


@pytest.fixture(scope="module", params=["trained", "probe"])
def model(request, stages):
    """(stages, plan, explainer) of the trained model, then of the probe model."""
    chosen = stages if request.param == "trained" else request.getfixturevalue("probe_stages")
    plan = compile_plan(chosen)
    return chosen, plan, Explainer(plan)


#: Consumed columns of the trained model and a few only the probe model reads.
VARIED = ["x5", "x12", "x31", "x44", "x53", "x58", "x81", "x82", "x91", "x0"]


def cell(column: str):
    """A valid value of ``column``: missing, or a level, or a number (of any size the scaler takes)."""
    if column in CATEGORICAL_COLUMNS:
        return st.one_of(st.none(), st.sampled_from(LEVELS[kind_of(column)]))
    return st.one_of(st.none(), st.floats(-200, 200, allow_nan=False))


def random_rows(test_rows):
    """1 to 6 test rows, each with some cells replaced by random valid values."""
    row = st.builds(lambda base, changes: {**base, **changes}, st.sampled_from(test_rows[:500]),
                    st.fixed_dictionaries({}, optional={c: cell(c) for c in VARIED}))
    return st.lists(row, min_size=1, max_size=6)


def scores_of(plan, rows):
    return score_batch(plan, RawBatch.from_records(rows, plan.consumed_columns))


def reference_logits(stages, rows) -> np.ndarray:
    """The linear predictor of the pickled stages (pandas + statsmodels), as the reference path builds it."""
    design = design_matrix(normalize_frame(pd.DataFrame(rows)), stages.imputer, stages.scaler, stages.levels)
    return np.asarray(stages.model.predict(design[stages.model.model.exog_names], which="linear"))


@FUZZ
@given(data=st.data())
def test_contributions_of_all_sum_to_the_logit(model, test_rows, data):
    stages, plan, explainer = model
    rows = data.draw(random_rows(test_rows))
    scores = scores_of(plan, rows)
    assert scores.errors == []
    reasons = explainer.reasons(scores, len(explainer.variables))
    logits = reference_logits(stages, rows)
    for row_reasons, probability, logit in zip(reasons, scores.probabilities.tolist(), logits, strict=True):
        assert sorted(r["variable"] for r in row_reasons) == sorted(explainer.variables)
        total = math.fsum(r["contribution"] for r in row_reasons)
        assert abs(total - logit) <= TOLERANCE
        if 1e-6 < probability < 1 - 1e-6:  # beyond, a float64 probability no longer pins its logit to 1e-9
            assert abs(total - math.log(probability / (1 - probability))) <= TOLERANCE


@FUZZ
@given(data=st.data())
def test_top_n_is_the_first_n_of_all(model, test_rows, data):
    _, plan, explainer = model
    rows = data.draw(random_rows(test_rows))
    top = data.draw(st.integers(1, len(explainer.variables)))
    scores = scores_of(plan, rows)
    everything = explainer.reasons(scores, len(explainer.variables))
    assert explainer.reasons(scores, top) == [r[:top] for r in everything]


@FUZZ
@given(data=st.data())
def test_a_row_gets_the_same_reasons_alone_and_in_a_batch(model, test_rows, data):
    _, plan, explainer = model
    rows = data.draw(random_rows(test_rows))
    index = data.draw(st.integers(0, len(rows) - 1))
    together = explainer.reasons(scores_of(plan, rows), len(explainer.variables))[index]
    alone = explainer.reasons(scores_of(plan, [rows[index]]), len(explainer.variables))[0]
    assert alone == together


def test_reasons_are_ordered_by_size_then_name_and_carry_their_values(model, test_rows):
    _, plan, explainer = model
    rows = [*test_rows[:300], {c: None for c in plan.consumed_columns}]
    scores = scores_of(plan, rows)
    for row, row_reasons in zip(rows, explainer.reasons(scores, len(explainer.variables)), strict=True):
        keys = [(-abs(r["contribution"]), r["variable"]) for r in row_reasons]
        assert keys == sorted(keys)
        for reason in row_reasons:
            assert list(reason) == REASON_KEYS
            column, value, contribution = reason["column"], reason["value"], reason["contribution"]
            assert reason["direction"] == ("raises" if contribution > 0 else "lowers" if contribution < 0 else "none")
            raw = row.get(column)
            if column in CATEGORICAL_COLUMNS:
                assert value == raw
                level = reason["variable"].split("_", 1)[1]
                if value != level and not (value is None and level == NAN_LEVEL):
                    assert contribution == 0.0
            else:
                assert value == (None if raw is None else pytest.approx(float(str(raw).strip("$%").replace(",", ""))))
    last = explainer.reasons(scores, len(explainer.variables))[-1]
    assert all(r["value"] is None for r in last)


def test_invalid_rows_get_no_reasons(model, test_rows):
    _, plan, explainer = model
    rows = [test_rows[0], {**test_rows[1], "x5": "someday"}, test_rows[2]]
    scores = scores_of(plan, rows)
    reasons = explainer.reasons(scores, 3, scores.invalid_rows)
    assert reasons[1] is None and len(reasons[0]) == len(reasons[2]) == 3


# --- over HTTP -----------------------------------------------------------------------------


def test_explain_adds_reasons_to_json_rows(client, test_rows):
    body = orjson.dumps(test_rows[:20])
    plain = client.post("/predict", data=body).get_json()
    explained = client.post("/predict?explain=3", data=body).get_json()
    everything = client.post("/predict?explain=all", data=body).get_json()
    assert all("reasons" not in row for row in plain)
    for row, with_three, with_all in zip(plain, explained, everything, strict=True):
        assert {k: v for k, v in with_three.items() if k != "reasons"} == row
        assert with_three["reasons"] == with_all["reasons"][:3]
        assert len(with_all["reasons"]) == 25


def test_explain_in_columns_and_from_csv(client, test_rows):
    rows = test_rows[:5]
    rows_answer = client.post("/predict?explain=2", json=rows).get_json()
    columns = client.post("/predict?explain=2&format=columns", json=rows).get_json()
    assert columns["reasons"] == [row["reasons"] for row in rows_answer]
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows({k: "" if v is None else v for k, v in row.items()} for row in rows)
    from_csv = client.post("/predict?explain=2", data=text.getvalue(), content_type="text/csv").get_json()
    assert [row["reasons"] for row in from_csv] == [row["reasons"] for row in rows_answer]


def test_inline_errors_carry_no_reasons(client, test_rows):
    rows = [test_rows[0], {**test_rows[1], "x31": "mars"}]
    answer = client.post("/predict?explain=2&errors=inline", json=rows).get_json()
    assert len(answer[0]["reasons"]) == 2
    assert "reasons" not in answer[1] and answer[1]["errors"][0]["column"] == "x31"
    columns = client.post("/predict?explain=2&errors=inline&format=columns", json=rows).get_json()
    assert columns["reasons"][1] is None and len(columns["reasons"][0]) == 2


@pytest.mark.parametrize("value", ["0", "26", "-1", "3.5", "abc", "", "ALL", "٣"])
def test_invalid_explain_values_are_refused(client, test_rows, value):
    answer = client.post(f"/predict?explain={value}", json=test_rows[0])
    assert answer.status_code == 400
    assert answer.get_json()["message"].startswith("explain must be an integer from 1 to 25 or 'all'")


def test_model_card_and_openapi_describe_the_method(client):
    assert client.get("/model").get_json()["explanation_method"] == METHOD
    document = client.get("/openapi.json").get_json()
    parameters = document["paths"]["/predict"]["post"]["parameters"]
    (explain,) = [p for p in parameters if p["name"] == "explain"]
    assert METHOD in explain["description"]
    assert "reasons" in orjson.dumps(document["components"]["schemas"]).decode()
