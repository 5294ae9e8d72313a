"""The stand-in data generator (lib.training.sampler draws, lib.training.synth writes): determinism, raw
formats, and the published statistics."""

from __future__ import annotations

import csv
import json
import re

import numpy as np
import pandas as pd
import pytest

from lib.core.schema import CATEGORICAL_COLUMNS, COLUMNS, LEVELS, NUMERIC_COLUMNS, TARGET, kind_of
from lib.training import sampler, synth

FIGURES = sampler.DEFAULT_FIGURES_DIR
SEED = 7
TRAIN_ROWS = 3_000
TEST_ROWS = 2_000
PLAIN_NUMERIC = [c for c in NUMERIC_COLUMNS if c not in ("x12", "x63")]

TRAIN_CURRENCY = re.compile(r"^(\$\d{1,3}(,\d{3})*\.\d{2} |\(\$\d{1,3}(,\d{3})*\.\d{2}\))$")
TEST_CURRENCY = re.compile(r"^\$-?\d{1,3}(,\d{3})*\.\d{2}$")
PERCENT = re.compile(r"^\d{1,3}\.\d{2}%$")


def parse_train_currency(text: str) -> float:
    if text.startswith("($"):
        return -float(text[2:-1].replace(",", ""))
    return float(text[1:].replace(",", ""))


@pytest.fixture(scope="module")
def figures():
    return sampler.read_figures(FIGURES)


@pytest.fixture(scope="module")
def frame():
    """Enough rows for the statistics to be tight."""
    return sampler.generate(13, 20_000, FIGURES)


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    synth.main(
        ["--seed", str(SEED), "--rows", str(TRAIN_ROWS), "--test-rows", str(TEST_ROWS)]
        + ["--figures", str(FIGURES), "--out", str(out)]
    )
    return out


@pytest.fixture(scope="module")
def train_cells(written):
    """The train CSV as a column → list of raw strings table, plus its header."""
    with open(written / synth.TRAIN_FILE, newline="") as f:
        header, *rows = list(csv.reader(f))
    return header, dict(zip(header, map(list, zip(*rows, strict=True)), strict=True))


@pytest.fixture(scope="module")
def test_rows(written):
    return json.loads((written / synth.TEST_FILE).read_bytes())


def run_cli(out, seed, rows=300, test_rows=200):
    synth.main(
        ["--seed", str(seed), "--rows", str(rows), "--test-rows", str(test_rows)]
        + ["--figures", str(FIGURES), "--out", str(out)]
    )
    return [(out / name).read_bytes() for name in (synth.TRAIN_FILE, synth.TEST_FILE)]


def test_same_seed_gives_identical_bytes_and_another_seed_differs(tmp_path):
    first = run_cli(tmp_path / "a", seed=3)
    again = run_cli(tmp_path / "b", seed=3)
    other = run_cli(tmp_path / "c", seed=4)
    assert first == again
    assert first[0] != other[0]
    assert first[1] != other[1]


def test_streams_give_fresh_rows():
    train = sampler.generate(SEED, 500, FIGURES, stream=sampler.TRAIN_STREAM)
    test = sampler.generate(SEED, 500, FIGURES, stream=sampler.TEST_STREAM)
    assert (train["x0"] == test["x0"]).sum() == 0
    pd.testing.assert_frame_equal(train, sampler.generate(SEED, 500, FIGURES))


def test_clean_frame_types(frame):
    assert list(frame.columns) == [TARGET, *COLUMNS]
    assert set(frame[TARGET].unique()) == {0, 1}
    assert all(frame[c].dtype == np.float64 for c in NUMERIC_COLUMNS)
    for column in CATEGORICAL_COLUMNS:
        values = set(frame[column])
        assert values <= set(LEVELS[kind_of(column)]) | {None}, column
    # Missing categoricals are None, not NaN, so they can be written as JSON null.
    assert sum(v is None for v in frame["x31"]) == frame["x31"].isna().sum() > 0


def test_train_header_and_target(train_cells):
    header, cells = train_cells
    assert header == [TARGET, *COLUMNS]
    assert len(cells["x0"]) == TRAIN_ROWS
    assert set(cells[TARGET]) == {"0", "1"}


def test_train_csv_reads_back_with_pandas(written):
    # Training reads the file with pandas: quoted amounts must stay one field, spaces kept.
    table = pd.read_csv(written / synth.TRAIN_FILE)
    assert table.shape == (TRAIN_ROWS, 1 + len(COLUMNS))
    assert table[TARGET].dtype == np.int64
    assert table["x12"].str.match(TRAIN_CURRENCY).all()
    assert table["x0"].dtype == np.float64


def test_train_numbers_have_their_decimals_and_round_trip(train_cells, figures):
    _, cells = train_cells
    clean = sampler.generate(SEED, TRAIN_ROWS, FIGURES)
    for column in PLAIN_NUMERIC:
        pattern = re.compile(rf"^-?\d+\.\d{{{figures.numeric[column].decimals}}}$")
        bad = [v for v in cells[column] if v and not pattern.match(v)]
        assert bad == [], f"{column}: {bad[:3]}"
        parsed = np.array([float(v) if v else np.nan for v in cells[column]])
        np.testing.assert_array_equal(parsed, clean[column].to_numpy(), err_msg=column)


def test_train_currency_uses_both_train_styles_and_round_trips(train_cells):
    _, cells = train_cells
    bad = [v for v in cells["x12"] if not TRAIN_CURRENCY.match(v)]
    assert bad == []
    assert any(v.startswith("($") for v in cells["x12"])
    assert any(v.endswith(" ") for v in cells["x12"])
    parsed = np.array([parse_train_currency(v) for v in cells["x12"]])
    clean = sampler.generate(SEED, TRAIN_ROWS, FIGURES)["x12"].to_numpy()
    np.testing.assert_array_equal(parsed, clean)


def test_train_percent_and_categoricals(train_cells):
    _, cells = train_cells
    assert [v for v in cells["x63"] if not PERCENT.match(v)] == []
    for column in CATEGORICAL_COLUMNS:
        allowed = set(LEVELS[kind_of(column)]) | ({""} if column == "x31" else set())
        assert set(cells[column]) <= allowed, column
    assert "" in cells["x31"]


def test_json_is_one_array_of_rows_in_column_order(test_rows):
    assert isinstance(test_rows, list)
    assert len(test_rows) == TEST_ROWS
    assert all(list(row) == list(COLUMNS) for row in test_rows)


def test_json_values_and_formats(test_rows):
    clean = sampler.generate(SEED, TEST_ROWS, FIGURES, stream=sampler.TEST_STREAM)
    table = {c: [row[c] for row in test_rows] for c in COLUMNS}
    for column in PLAIN_NUMERIC:
        assert all(v is None or type(v) is float for v in table[column]), column
        parsed = np.array([np.nan if v is None else v for v in table[column]])
        np.testing.assert_array_equal(parsed, clean[column].to_numpy(), err_msg=column)
    assert [v for v in table["x12"] if not TEST_CURRENCY.match(v)] == []
    assert any(v.startswith("$-") for v in table["x12"])
    parsed = np.array([float(v[1:].replace(",", "")) for v in table["x12"]])
    np.testing.assert_array_equal(parsed, clean["x12"].to_numpy())
    assert [v for v in table["x63"] if not PERCENT.match(v)] == []
    assert None in table["x31"]
    assert set(table["x31"]) <= set(LEVELS["region"]) | {None}
    assert table["x5"] == clean["x5"].tolist()


def test_missing_rates_follow_the_figures(frame, figures):
    observed = frame[list(COLUMNS)].isna().mean()
    for column in COLUMNS:
        rate = figures.missing_rate[column]
        tolerance = 4 * np.sqrt(rate * (1 - rate) / len(frame)) + 0.001
        assert abs(observed[column] - rate) <= tolerance, (column, observed[column], rate)
        if rate == 0:
            assert observed[column] == 0, column
    assert 0.015 < observed[PLAIN_NUMERIC].mean() < 0.021


def test_numeric_columns_match_published_mean_and_sd(frame, figures):
    for column in NUMERIC_COLUMNS:
        spec = figures.numeric[column]
        values = frame[column].dropna()
        assert abs(values.mean() - spec.mean) < 5 * spec.sd / np.sqrt(len(values)), column
        assert values.std() == pytest.approx(spec.sd, rel=0.04), column
    assert frame["x7"].dropna().between(0, 100).all()
    assert frame["x12"].between(-10_000, 10_000).all()


def test_categorical_shares_follow_the_figures(frame, figures):
    for column in CATEGORICAL_COLUMNS:
        # Shares of all rows: x31's listed shares sum to 98.5 % and leave the rest missing.
        observed = frame[column].value_counts(dropna=True) / len(frame)
        listed = figures.shares[column] * (1 - figures.missing_rate[column])
        for level, share in zip(figures.levels[column], listed, strict=True):
            assert observed[level] == pytest.approx(share, abs=0.012), (column, level)


def test_correlations(frame):
    corr = frame[list(NUMERIC_COLUMNS)].corr()
    assert corr.loc["x0", "x3"] == pytest.approx(0.80, abs=0.02)
    for a, b in [("x0", "x2"), ("x0", "x4"), ("x2", "x3"), ("x2", "x4"), ("x3", "x4")]:
        assert 0.47 <= corr.loc[a, b] <= 0.60, (a, b)
    for a, b in [("x45", "x52"), ("x55", "x62"), ("x83", "x90"), ("x47", "x48")]:
        assert corr.loc[a, b] == pytest.approx(0.22, abs=0.04), (a, b)
    for a, b in [("x0", "x1"), ("x52", "x55"), ("x44", "x91"), ("x12", "x63")]:
        assert abs(corr.loc[a, b]) < 0.04, (a, b)


def test_target_follows_the_published_model(frame):
    assert 0.4 <= frame[TARGET].mean() <= 0.6
    by_day = frame.groupby("x5")[TARGET].mean()
    # Saturday has the largest negative coefficient against the friday base.
    assert by_day["friday"] - by_day["saturday"] > 0.15
    by_y = frame.groupby(TARGET)[["x91", "x53"]].mean()
    assert by_y.loc[1, "x91"] > by_y.loc[0, "x91"]  # coefficient +0.77
    assert by_y.loc[1, "x53"] < by_y.loc[0, "x53"]  # coefficient -0.62


def test_missing_figures_fail_with_the_path(tmp_path):
    missing = tmp_path / "no-figures"
    with pytest.raises(FileNotFoundError, match=re.escape(str(missing / "columns.csv"))):
        sampler.generate(1, 10, missing)
    with pytest.raises(SystemExit) as exc:
        synth.main(["--figures", str(missing), "--out", str(tmp_path / "out")])
    assert str(missing / "columns.csv") in str(exc.value.code)
    assert not (tmp_path / "out").exists()


def test_incomplete_figures_name_the_missing_file(tmp_path):
    (tmp_path / "columns.csv").write_bytes((FIGURES / "columns.csv").read_bytes())
    with pytest.raises(FileNotFoundError, match="categories.csv"):
        sampler.read_figures(tmp_path)
