"""The served scorer (compiled plan + numpy) against the reference path (pandas + pickled stages).

Both run on the trained model and on a "probe" model that gives every one of the 121 features a
coefficient, so that levels and `_nan` indicators the 25-variable model leaves at zero are
exercised too.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from lib.core.artifacts import Stages
from lib.core.errors import ArtifactError, InputError
from lib.core.normalize import REASON_OVERFLOW, rejection_reason
from lib.core.raw_batch import RawBatch
from lib.core.reference import reference_classes, reference_probabilities
from lib.core.schema import ALIASES, CATEGORICAL_COLUMNS, COLUMNS, LEVELS, kind_of
from lib.core.scorer import GOLDEN_TOLERANCE, check_golden, compile_plan, score_batch

TOLERANCE = 1e-9
MISSING_FORMS = [None, "", "   ", "nan", " NaN ", "null", "NULL", "None", "na", "N/A"]
#: Raw forms of the numeric kinds (numbers, amounts, percentages), each with the value it stands for.
RAW_FORMS = {
    "x12": ["$6,882.34 ", "($5,032.58)", "$-5,032.58", "-$5,032.58", "5032.58", -12.5, " $ 1,000 "],
    "x63": ["62.59%", "36.29 %", "36.29", 36.29, 0],
    "x44": ["14.75731742", " -0.5 ", 3, "1e-2", "+.25"],
}


def served(plan, rows: list[dict], ids=None):
    """Score ``rows`` on the served path, reading only the consumed columns (as the API does)."""
    batch = RawBatch.from_records(rows, plan.consumed_columns)
    if ids is not None:
        batch.ids = ids
    return score_batch(plan, batch)


def assert_parity(model, rows: list[dict]) -> np.ndarray:
    """Both paths agree on ``rows`` (probabilities to 1e-9, classes exactly); return the served ones."""
    stages, plan = model
    scores = served(plan, rows)
    assert scores.errors == []
    expected = reference_probabilities(stages, pd.DataFrame(rows))
    assert scores.probabilities.shape == expected.shape == (len(rows),)
    np.testing.assert_allclose(scores.probabilities, expected, rtol=0, atol=TOLERANCE)
    np.testing.assert_array_equal(scores.classes, reference_classes(stages, expected))
    return scores.probabilities


def with_cell(row: dict, column: str, value) -> dict:
    return {**row, column: value}


@pytest.fixture(scope="module")
def plan(stages):
    return compile_plan(stages)


@pytest.fixture(scope="module", params=["trained", "probe"])
def model(request, stages, plan):
    """(stages, plan) of the trained model, then of the probe model."""
    if request.param == "trained":
        return stages, plan
    probe = request.getfixturevalue("probe_stages")
    return probe, compile_plan(probe)


@pytest.fixture(scope="module")
def base_row(test_rows) -> dict:
    """A test row without missing cells, to vary one cell at a time."""
    return next(row for row in test_rows if all(row.get(c) is not None for c in COLUMNS))


@pytest.fixture(scope="module")
def batch_scores(plan, test_rows):
    return served(plan, test_rows)


def test_plan_consumes_the_manifest_columns(stages, plan):
    assert plan.consumed_columns == tuple(stages.manifest["consumed_columns"])
    assert plan.threshold == stages.threshold


def test_all_test_rows_agree(model, test_rows):
    probabilities = assert_parity(model, test_rows)
    assert len(probabilities) == 10_000
    # Not a degenerate model: both classes and a wide spread of probabilities occur.
    assert 0.2 < (probabilities >= 0.5).mean() < 0.8
    assert probabilities.min() < 0.1 and probabilities.max() > 0.9


@pytest.mark.parametrize("row", [
    pytest.param({c: None for c in COLUMNS}, id="all-null"),
    pytest.param({}, id="all-absent"),
    pytest.param({c: "NaN" for c in COLUMNS}, id="all-null-token"),
])
def test_all_missing_row_agrees(model, row):
    probability = assert_parity(model, [row])[0]
    # Numeric cells are imputed to their training mean, which scales to 0: only the `_nan`
    # coefficients remain.
    stages, _ = model
    nan_sum = sum(float(stages.model.params[v]) for v in stages.variables if v.endswith("_nan"))
    assert probability == pytest.approx(1.0 / (1.0 + np.exp(-nan_sum)), abs=1e-12)


@pytest.mark.parametrize("column", CATEGORICAL_COLUMNS)
def test_every_level_and_spelling_agrees(model, base_row, column):
    kind = kind_of(column)
    spellings = [*LEVELS[kind], *ALIASES[kind]]
    spellings += [s.upper() for s in spellings] + [f"  {s.title()} " for s in spellings]
    rows = [with_cell(base_row, column, s) for s in spellings]
    probabilities = assert_parity(model, rows)
    # A spelling scores exactly as its canonical level.
    canonical = {level: p for level, p in zip(spellings, probabilities, strict=True) if level in LEVELS[kind]}
    for spelling, probability in zip(spellings, probabilities, strict=True):
        assert probability == canonical[ALIASES[kind][spelling.strip().lower()]], spelling


@pytest.mark.parametrize("column", CATEGORICAL_COLUMNS)
def test_each_nan_level_agrees(model, base_row, column):
    rows = [with_cell(base_row, column, value) for value in MISSING_FORMS]
    rows.append({k: v for k, v in base_row.items() if k != column})  # absent key
    probabilities = assert_parity(model, rows)
    assert len(set(probabilities.tolist())) == 1
    stages, _ = model
    # The `_nan` coefficient is applied, not a level's: compare with the base level.
    base_level = with_cell(base_row, column, stages.levels[column][0])
    shift = float(stages.model.params.get(f"{column}_nan", 0.0))
    logit = np.log(probabilities[0] / (1 - probabilities[0]))
    base_probability = served(model[1], [base_level]).probabilities[0]
    assert logit - np.log(base_probability / (1 - base_probability)) == pytest.approx(shift, abs=1e-9)


@pytest.mark.parametrize("column", sorted(RAW_FORMS))
def test_raw_numeric_forms_agree(model, base_row, column):
    rows = [with_cell(base_row, column, value) for value in RAW_FORMS[column]]
    assert_parity(model, rows)


@pytest.mark.parametrize("index", [0, 1, 4_999, 9_998, 9_999])
def test_one_row_alone_agrees_with_reference(model, test_rows, index):
    assert_parity(model, [test_rows[index]])


@pytest.mark.parametrize("size", [1, 7, 4_096])
def test_rows_score_the_same_in_any_batch_size(plan, test_rows, batch_scores, size):
    """Exact equality: a row scored alone (or in any chunk) equals the row inside 10,000."""
    chunks = [served(plan, test_rows[i:i + size]) for i in range(0, len(test_rows), size)]
    np.testing.assert_array_equal(np.concatenate([c.probabilities for c in chunks]), batch_scores.probabilities)
    np.testing.assert_array_equal(np.concatenate([c.classes for c in chunks]), batch_scores.classes)


EDGE_CELLS = [
    {}, {"x91": 1e300}, {"x91": -1e300}, {"x91": 1e308, "x53": 1e308}, {"x91": 900.0}, {"x91": -900.0},
    {"x91": 5e-324}, {"x12": "($1,000,000,000.00)"}, {"x5": "funday", "x12": "lots"}, {"x31": [1]},
    {"x44": True}, {"x81": "SEPT", "x5": " sun "}, {"x56": "nan", "x31": "NA"},
]


def test_one_row_path_equals_the_batch_path_on_edge_rows(plan, test_rows):
    """score_batch takes a scalar route for one row; it must answer exactly as the array route."""
    rows = [dict(test_rows[i], **cells) for i, cells in enumerate(EDGE_CELLS)]
    ids = [f"r{i}" for i in range(len(rows))]
    together = served(plan, rows, ids=ids)
    for i, row in enumerate(rows):
        alone = served(plan, [row], ids=[ids[i]])
        errors = [(e.column, e.message, e.id) for e in together.errors if e.index == i]
        assert [(e.column, e.message, e.id) for e in alone.errors] == errors
        if not errors:
            assert alone.probabilities[0] == together.probabilities[i]
            assert alone.classes[0] == together.classes[i]
        np.testing.assert_array_equal(alone.numeric[0], together.numeric[i])
        assert {c: int(v[0]) for c, v in alone.codes.items()} == {c: int(v[i]) for c, v in together.codes.items()}


@pytest.fixture()
def bad_rows(test_rows):
    rows = [dict(row) for row in test_rows[:10]]
    rows[3]["x12"] = "twelve dollars"
    rows[7]["x44"] = True
    rows[7]["x5"] = "funday"
    rows[9]["x81"] = ["May"]
    return rows


def test_invalid_cells_are_reported_by_row_and_column(plan, bad_rows, batch_scores):
    ids = [f"row-{i}" for i in range(len(bad_rows))]
    scores = served(plan, bad_rows, ids=ids)
    assert [(e.index, e.id, e.column) for e in scores.errors] == [
        (3, "row-3", "x12"), (7, "row-7", "x5"), (7, "row-7", "x44"), (9, "row-9", "x81"),
    ]
    assert scores.invalid_rows == {3, 7, 9}
    messages = {(e.index, e.column): e.message for e in scores.errors}
    assert "'twelve dollars'" in messages[3, "x12"] and "amount" in messages[3, "x12"]
    assert "'funday'" in messages[7, "x5"] and "monday" in messages[7, "x5"]
    assert "true" in messages[7, "x44"].lower() and "number" in messages[7, "x44"]
    assert "May" in messages[9, "x81"] and "January" in messages[9, "x81"]
    # The valid rows score exactly as they do in the clean batch.
    valid = [i for i in range(len(bad_rows)) if i not in scores.invalid_rows]
    np.testing.assert_array_equal(scores.probabilities[valid], batch_scores.probabilities[valid])


def test_reference_rejects_the_same_cells(stages, plan, bad_rows):
    with pytest.raises(InputError) as info:
        reference_probabilities(stages, pd.DataFrame(bad_rows))
    expected = {(e.index, e.column) for e in served(plan, bad_rows).errors}
    assert {(e.index, e.column) for e in info.value.errors} == expected
    assert info.value.invalid_rows == [3, 7, 9]


def test_unconsumed_columns_are_not_validated(plan, test_rows, batch_scores):
    unused = next(c for c in COLUMNS if c not in plan.consumed_columns)
    rows = [with_cell(test_rows[0], unused, "garbage"), with_cell(test_rows[1], "not_a_column", 1)]
    scores = served(plan, rows)
    assert scores.errors == []
    np.testing.assert_array_equal(scores.probabilities, batch_scores.probabilities[:2])


def test_compile_plan_refuses_variables_out_of_order(stages):
    manifest = {**stages.manifest, "variables": stages.manifest["variables"][::-1]}
    reordered = Stages(imputer=stages.imputer, scaler=stages.scaler, model=stages.model, manifest=manifest)
    with pytest.raises(ArtifactError, match="model.pkl variables"):
        compile_plan(reordered)


def test_check_golden_accepts_the_recorded_row(stages, plan):
    recorded = stages.manifest["golden"]["probability"]
    assert 0.0 < recorded < 1.0
    assert abs(check_golden(plan, stages.manifest) - recorded) <= GOLDEN_TOLERANCE


def golden_variant(manifest: dict, row_changes: dict | None = None, probability_shift: float = 0.0) -> dict:
    golden = manifest["golden"]
    return {**manifest, "golden": {
        "row": {**golden["row"], **(row_changes or {})},
        "probability": golden["probability"] + probability_shift,
    }}


@pytest.mark.parametrize(("row_changes", "shift"), [
    pytest.param(None, 1e-6, id="recorded-probability-drifted"),
    pytest.param(None, -1e-8, id="small-drift"),
    pytest.param({"x12": 123456.0}, 0.0, id="row-changed"),
    pytest.param({"x5": "funday"}, 0.0, id="row-invalid"),
])
def test_check_golden_refuses_a_drift(stages, plan, row_changes, shift):
    manifest = golden_variant(stages.manifest, row_changes, shift)
    with pytest.raises(ArtifactError, match="golden row scored .*, training recorded"):
        check_golden(plan, manifest)


def test_overflowing_rows_are_counted_as_overflow(plan, test_rows):
    scores = served(plan, [dict(test_rows[0], x91=1e308, x53=1e308)])
    (error,) = scores.errors
    assert "too large" in error.message
    assert rejection_reason(error.column, error.message) == REASON_OVERFLOW
