"""A user with the real exercise files: train on exercise_26_train.csv with the README's command,
then score exercise_26_test.csv as CSV with the README's curl.

The real files are not here; these are written in exactly their layout by the generator: the
train file with `y` first and the `"$6,882.34 "` / `"($5,032.58)"` currency forms, the test file
without `y` and with `"$5,547.78"` / `"$-5,483.24"`, blanks for missing cells.
"""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys

import pandas as pd
import pytest

from lib.core.schema import COLUMNS, TARGET
from lib.training import sampler, synth
from tests.support.live_server import PROJECT_DIR

SEED = 29
# lib.training.train holds out 4,000 validation and 4,000 test rows, as the notebook does.
TRAIN_ROWS = 12_000
TEST_ROWS = 300


@pytest.fixture(scope="module")
def exercise_files(tmp_path_factory):
    """exercise_26_train.csv and exercise_26_test.csv in the original layout."""
    folder = tmp_path_factory.mktemp("exercise")
    figures = sampler.read_figures(sampler.DEFAULT_FIGURES_DIR)
    train = sampler.generate(SEED, TRAIN_ROWS, sampler.DEFAULT_FIGURES_DIR)
    (folder / "exercise_26_train.csv").write_bytes(synth.format_train_csv(train, figures.decimals))
    test = sampler.generate(SEED, TEST_ROWS, sampler.DEFAULT_FIGURES_DIR, stream=sampler.TEST_STREAM)
    rows = json.loads(synth.format_test_json(test))
    pd.DataFrame(rows, columns=COLUMNS).to_csv(folder / "exercise_26_test.csv", index=False)
    return folder


def test_the_files_have_the_original_layout(exercise_files):
    with open(exercise_files / "exercise_26_train.csv", newline="") as f:
        train = list(csv.reader(f))
    assert train[0] == [TARGET, *COLUMNS]
    x12 = [row[1 + COLUMNS.index("x12")] for row in train[1:]]
    assert any(v.startswith("$") and v.endswith(" ") and "," in v for v in x12)
    assert any(v.startswith("($") and v.endswith(")") for v in x12)
    with open(exercise_files / "exercise_26_test.csv", newline="") as f:
        test = list(csv.reader(f))
    assert test[0] == list(COLUMNS) and len(test) == TEST_ROWS + 1
    x12 = [row[COLUMNS.index("x12")] for row in test[1:]]
    assert any(v.startswith("$-") for v in x12) and any(v.startswith("$") and "," in v for v in x12)
    assert all(v.endswith("%") for v in (row[COLUMNS.index("x63")] for row in test[1:]) if v)


@pytest.fixture(scope="module")
def trained(exercise_files, tmp_path_factory):
    """The README's training command on exercise_26_train.csv, into a model directory of its own."""
    out = tmp_path_factory.mktemp("real-model")
    subprocess.run([sys.executable, "-m", "lib.training.train", "--data", str(exercise_files / "exercise_26_train.csv"),
                    "--out", str(out)], cwd=PROJECT_DIR, check=True, capture_output=True)
    return out


def test_training_on_the_train_file_writes_a_verified_model(trained):
    manifest = json.loads((trained / "manifest.json").read_text())
    val = TRAIN_ROWS // 10  # test_size=0.1, then 4,000 test rows, as the published notebook splits
    assert manifest["metrics"]["split_rows"] == {"train": TRAIN_ROWS - val - 4000, "val": val, "test": 4000}
    assert manifest["training_data"]["rows"] == TRAIN_ROWS
    assert 0.75 < manifest["metrics"]["auc"]["test"] < 0.85
    assert len(manifest["variables"]) == 25


@pytest.mark.server
@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_the_test_file_scores_as_csv_with_curl(trained, exercise_files, start_server):
    server = start_server({"MODEL_DIR": str(trained)})
    answer = subprocess.run(
        ["curl", "-s", "-f", f"{server.url}/predict", "-H", "Content-Type: text/csv", "--data-binary",
         f"@{exercise_files / 'exercise_26_test.csv'}"],
        capture_output=True, check=True,
    )
    results = json.loads(answer.stdout)
    assert len(results) == TEST_ROWS
    # The same rows as JSON objects get the same answers, in the same order.
    as_json = pd.read_csv(exercise_files / "exercise_26_test.csv", dtype=str, keep_default_na=False)
    body = json.dumps(as_json.to_dict(orient="records")).encode()
    expected = json.loads(subprocess.run(
        ["curl", "-s", "-f", f"{server.url}/predict", "-H", "Content-Type: application/json", "--data-binary", "@-"],
        input=body, capture_output=True, check=True,
    ).stdout)
    assert results == expected
    assert {row["predicted_class"] for row in results} == {0, 1}
