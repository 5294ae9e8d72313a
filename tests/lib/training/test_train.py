"""Training on the generated data: the published variables, the AUC, the manifest, the CLI.

The full run happens once per module, as a user runs it (`python -m lib.training.train`), with warnings
as errors; the other tests read what it wrote.
"""

from __future__ import annotations

import csv
import itertools
import json
import math
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from lib.core.artifacts import (
    CALIBRATION_FILE,
    MANIFEST_FILE,
    REPORT_FILE,
    ROC_FILE,
    STAGE_FILES,
    library_versions,
    load_artifacts,
    sha256_bytes,
)
from lib.core.features import source_column
from lib.core.raw_batch import RawBatch
from lib.core.schema import CATEGORICAL_COLUMNS, COLUMNS, NUMERIC_COLUMNS, TARGET
from lib.core.scorer import check_golden, compile_plan, score_batch
from lib.training import sampler, synth
from lib.training.train import choose_threshold, load_training_table, main, parse_args
from tests.support.live_server import PROJECT_DIR

TRUE_MODEL = sampler.DEFAULT_FIGURES_DIR / "true_model.csv"
QUANTILE = 0.75
AUC_RANGE = (0.78, 0.83)
SPLITS = {"train": 32_000, "val": 4_000, "test": 4_000}
BASE_LEVELS = {"x5": "friday", "x31": "america", "x81": "April", "x82": "Female"}


@dataclass(frozen=True)
class Run:
    out: Path
    stdout: str
    stderr: str
    manifest: dict


@pytest.fixture(scope="module")
def train_csv(data_dir) -> Path:
    """lib/data/train.csv (generated if absent)."""
    return data_dir / synth.TRAIN_FILE


@pytest.fixture(scope="module")
def run(train_csv, tmp_path_factory) -> Run:
    """`python -m lib.training.train --threshold-quantile 0.75` on lib/data/train.csv (its default), once."""
    out = tmp_path_factory.mktemp("train") / "model_components"
    done = subprocess.run(
        [sys.executable, "-W", "error", "-m", "lib.training.train", "--out", str(out),
         "--threshold-quantile", str(QUANTILE)],
        cwd=PROJECT_DIR, capture_output=True, text=True, timeout=240,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    manifest = json.loads((out / MANIFEST_FILE).read_text())
    return Run(out, done.stdout, done.stderr, manifest)


@pytest.fixture(scope="module")
def true_model() -> dict[str, float]:
    with open(TRUE_MODEL, newline="") as f:
        return {row["variable"]: float(row["coefficient"]) for row in csv.DictReader(f)}


def selected(manifest: dict) -> list[str]:
    return [v["name"] for v in manifest["variables"]]


def test_selects_the_published_variables(run, true_model):
    variables = selected(run.manifest)
    assert len(variables) == len(set(variables)) == 25
    assert set(variables) == set(true_model)
    assert run.manifest["true_model_check"] == {
        "file": TRUE_MODEL.name, "same_variables": True, "missing": [], "extra": [],
    }


def test_coefficients_match_the_generating_model(run, true_model):
    """Each fitted coefficient is within 4 standard errors of the one the data was drawn from."""
    for variable in run.manifest["variables"]:
        assert 0 < variable["std_error"] < 0.1, variable
        z = (variable["coefficient"] - true_model[variable["name"]]) / variable["std_error"]
        assert abs(z) < 4, variable


@pytest.mark.parametrize("split", SPLITS)
def test_auc_is_realistic(run, split):
    auc = run.manifest["metrics"]["auc"][split]
    assert AUC_RANGE[0] <= auc <= AUC_RANGE[1]


def test_manifest_records_data_splits_and_columns(run, train_csv):
    manifest = run.manifest
    assert manifest["metrics"]["split_rows"] == SPLITS
    assert manifest["training_data"]["file"] == train_csv.name
    assert manifest["training_data"]["rows"] == sum(SPLITS.values())
    assert manifest["training_data"]["sha256"] == sha256_bytes(train_csv.read_bytes())
    assert 0.45 < manifest["training_data"]["positive_share"] < 0.55
    assert manifest["numeric_columns"] == list(NUMERIC_COLUMNS)
    assert manifest["categorical_columns"] == list(CATEGORICAL_COLUMNS)
    assert {c: levels[0] for c, levels in manifest["category_levels"].items()} == BASE_LEVELS
    consumed = {source_column(v) for v in selected(manifest)}
    assert manifest["consumed_columns"] == [c for c in COLUMNS if c in consumed]


def test_manifest_records_versions_hashes_and_model_version(run):
    manifest = run.manifest
    assert manifest["library_versions"] == library_versions()
    assert manifest["files"] == {name: sha256_bytes((run.out / name).read_bytes()) for name in STAGE_FILES}
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}-[0-9a-f]{12}", manifest["model_version"])
    assert manifest["model_version"][:10] == manifest["created_at"][:10]


def test_golden_row_is_recorded_and_rescored(run):
    golden = run.manifest["golden"]
    assert set(golden["row"]) == set(COLUMNS)
    assert 0.0 < golden["probability"] < 1.0
    stages = load_artifacts(run.out)
    assert check_golden(compile_plan(stages), stages.manifest) == pytest.approx(golden["probability"], abs=1e-9)


def test_report_is_written_next_to_the_artifacts(run):
    report = json.loads((run.out / REPORT_FILE).read_text())
    assert report["metrics"] == run.manifest["metrics"]
    assert report["model_version"] == run.manifest["model_version"]
    for picture in (ROC_FILE, CALIBRATION_FILE):
        assert (run.out / picture).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_summary_names_variables_and_aucs(run):
    auc = run.manifest["metrics"]["auc"]
    aucs = ", ".join(f"{split} {auc[split]:.4f}" for split in SPLITS)
    assert run.stdout.strip() == f"model {run.manifest['model_version']}: AUC {aucs}"
    assert f"AUC {aucs}" in run.stderr
    assert "rows: train 32000, val 4000, test 4000 (all 40000)" in run.stderr
    listed = re.search(r"selected 25 variables: (.+)", run.stderr).group(1).split(", ")
    assert listed == selected(run.manifest)


def test_threshold_quantile_marks_the_top_quarter(run, test_rows):
    """The 0.75 quantile of the training scores: about a quarter of fresh rows score above it."""
    manifest = run.manifest
    assert manifest["threshold_rule"] == f"quantile {QUANTILE} of training probabilities"
    plan = compile_plan(load_artifacts(run.out))
    assert plan.threshold == manifest["threshold"] > 0.5
    scores = score_batch(plan, RawBatch.from_records(test_rows, plan.consumed_columns))
    assert scores.classes.mean() == pytest.approx(1 - QUANTILE, abs=0.02)


@pytest.mark.parametrize(("argv", "expected"), [
    ([], (0.5, "fixed")),
    (["--threshold", "0.3"], (0.3, "fixed")),
    (["--threshold", "0"], (0.0, "fixed")),
    (["--threshold-quantile", "0.5"], (2.5, "quantile 0.5 of training probabilities")),
])
def test_threshold_options(train_csv, argv, expected):
    probabilities = np.array([1.0, 2.0, 3.0, 4.0])  # not probabilities: makes the quantile obvious
    assert choose_threshold(parse_args(["--data", str(train_csv), *argv]), probabilities) == expected


@pytest.mark.parametrize(("argv", "message"), [
    (["--threshold", "0.3", "--threshold-quantile", "0.75"], "not allowed with"),
    (["--threshold", "1.5"], "--threshold must be within [0, 1]"),
    (["--threshold-quantile", "1"], "--threshold-quantile must be within (0, 1)"),
    (["--threshold-quantile", "0"], "--threshold-quantile must be within (0, 1)"),
    (["--data", "/nonexistent/train.csv"], "not found"),
])
def test_bad_options_are_refused(train_csv, capsys, argv, message):
    with pytest.raises(SystemExit) as info:
        parse_args(["--data", str(train_csv), *argv] if "--data" not in argv else argv)
    assert info.value.code == 2
    assert message in capsys.readouterr().err


def write_csv(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    """Write as Excel / pandas do: quotes where needed, CRLF line ends."""
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


@pytest.fixture(scope="module")
def train_table(train_csv) -> tuple[list[str], list[list[str]]]:
    """The first 8,000 rows of lib/data/train.csv, as raw strings."""
    with open(train_csv, newline="") as f:
        header, *rows = itertools.islice(csv.reader(f), 8_001)
    return header, rows


def test_real_layout_is_read_by_name_with_messy_cells(train_table, tmp_path):
    header, rows = train_table
    assert header == [TARGET, *COLUMNS]  # the exercise file's layout
    cells = {"x12": ["$1,306.52 ", "($5,032.58)", "", "$-7.5"], "x63": ["0.62%", "", "36.29 %", "NA"],
             "x31": ["", "japan", "asia", "germany"], "x5": ["monday", "sun", "", "friday"]}
    rows = [list(row) for row in rows[:4]]
    for column, values in cells.items():
        for row, value in zip(rows, values, strict=True):
            row[header.index(column)] = value
    frame, y = load_training_table(write_csv(tmp_path / "layout.csv", header, rows))
    np.testing.assert_array_equal(frame["x12"].to_numpy()[[0, 1, 3]], [1306.52, -5032.58, -7.5])
    np.testing.assert_array_equal(frame["x63"].to_numpy()[[0, 2]], [0.62, 36.29])
    assert math.isnan(frame["x12"].iloc[2]) and math.isnan(frame["x63"].iloc[1]) and math.isnan(frame["x63"].iloc[3])
    assert frame["x31"].isna().tolist() == [True, False, False, False]
    assert frame["x31"].iloc[1:].tolist() == ["japan", "asia", "germany"]
    assert frame["x5"].isna().tolist() == [False, False, True, False]
    assert frame["x5"].iloc[[0, 1, 3]].tolist() == ["monday", "sunday", "friday"]
    assert y.tolist() == [int(row[0]) for row in rows]


def test_a_missing_column_is_named(train_table, tmp_path):
    header, rows = train_table
    keep = [i for i, name in enumerate(header) if name != "x63"]
    path = write_csv(tmp_path / "short.csv", [header[i] for i in keep], [[row[i] for i in keep] for row in rows[:3]])
    with pytest.raises(SystemExit, match=r"missing columns \['x63'\]"):
        load_training_table(path)


def test_an_invalid_cell_is_named(train_table, tmp_path):
    header, rows = train_table
    rows = [list(row) for row in rows[:3]]
    rows[1][header.index("x81")] = "Smarch"
    with pytest.raises(SystemExit, match="first at data row 2, column x81: .*'Smarch'"):
        load_training_table(write_csv(tmp_path / "bad.csv", header, rows))


def test_trains_on_a_reordered_crlf_csv_with_a_fixed_threshold(train_table, tmp_path, capsys):
    """Columns are found by name (y last here) and CRLF line ends are fine; --threshold is stored."""
    header, rows = train_table
    order = [*range(1, len(header)), 0]
    data = write_csv(tmp_path / "reordered.csv", [header[i] for i in order], [[row[i] for i in order] for row in rows])
    assert b"\r\n" in data.read_bytes()[:2_000]
    out = tmp_path / "out"
    assert main(["--data", str(data), "--out", str(out), "--threshold", "0.3"]) == 0
    stages = load_artifacts(out)
    assert stages.threshold == 0.3 and stages.manifest["threshold_rule"] == "fixed"
    assert stages.manifest["training_data"]["rows"] == len(rows)
    assert f"model {stages.version}: AUC" in capsys.readouterr().out
