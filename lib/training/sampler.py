"""Draw stand-in rows from the published figures kept in ``lib/figures/``.

The figures are per-column distributions and missing rates, level shares and the published model;
the rows drawn from them have the schema and statistics of the public exercise_26 files, with
numeric columns correlated as published and y drawn from the published model, so that a model
trained on them behaves realistically. ``lib.training.synth`` writes them as the source files.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.special import expit, ndtr

from lib.core.schema import CATEGORICAL_COLUMNS, COLUMNS, LEVELS, NUMERIC_COLUMNS, TARGET, kind_of

#: The published figures, kept in the repository (figures, not data): a clone sets itself up.
DEFAULT_FIGURES_DIR = Path(__file__).resolve().parents[1] / "figures"
FIGURE_FILES = ("columns.csv", "categories.csv", "true_model.csv")

#: Independent random streams of one seed: test rows must be fresh rows, not a replay of train.
TRAIN_STREAM = 0
TEST_STREAM = 1

# Latent-normal correlations (Gaussian copula). r(x0, x3) is the published 0.80; the other pairs
# of that block are published as 0.47-0.60, and 0.55 for all of them keeps the matrix positive
# definite.
CORRELATED_BLOCK = ("x0", "x2", "x3", "x4")
BLOCK_PAIR_R = {("x0", "x3"): 0.80}
BLOCK_OTHER_R = 0.55
EQUICORRELATED_BLOCKS = tuple(
    tuple(f"x{i}" for i in range(first, last + 1)) for first, last in ((45, 52), (55, 62), (83, 90))
)
EQUICORRELATION = 0.22

_DISTRIBUTION = re.compile(r"^\s*([NU])\(\s*([-+0-9.eE]+)\s*,\s*([-+0-9.eE]+)\s*\)")


@dataclass(frozen=True)
class NumericFigures:
    """How one numeric column is drawn: ``N(a, b)`` (mean, sd) or ``U(a, b)`` (interval)."""

    family: str
    a: float
    b: float
    mean: float  # published sample mean and sd: the model standardises with these
    sd: float
    missing_rate: float
    decimals: int


@dataclass(frozen=True)
class Figures:
    """The published figures the generator draws from, checked against the schema."""

    numeric: dict[str, NumericFigures]
    levels: dict[str, tuple[str, ...]]
    shares: dict[str, np.ndarray]  # per categorical column, summing to 1 over ``levels``
    missing_rate: dict[str, float]  # every column
    coefficients: dict[str, float]

    @property
    def decimals(self) -> dict[str, int]:
        """Decimals each numeric column is rounded to (and written with in the train CSV)."""
        return {name: spec.decimals for name, spec in self.numeric.items()}


def read_figures(figures_dir: Path | str) -> Figures:
    """Read columns.csv, categories.csv and true_model.csv from ``figures_dir``.

    Raises FileNotFoundError naming the missing path, ValueError when a figure does not fit the
    schema.
    """
    figures_dir = Path(figures_dir)
    for name in FIGURE_FILES:
        if not (figures_dir / name).is_file():
            raise FileNotFoundError(
                f"generator figures not found: {figures_dir / name} is missing "
                f"(expected {', '.join(FIGURE_FILES)} in {figures_dir}; pass --figures DIR)"
            )
    columns = pd.read_csv(figures_dir / "columns.csv", dtype={"column": str}).set_index("column")
    if sorted(columns.index) != sorted(COLUMNS):
        raise ValueError(f"columns.csv lists {len(columns)} columns, expected x0..x{len(COLUMNS) - 1}")

    numeric = {}
    for name in NUMERIC_COLUMNS:
        row = columns.loc[name]
        if row["kind"] != kind_of(name):
            raise ValueError(f"columns.csv: {name} has kind {row['kind']!r}, expected {kind_of(name)!r}")
        match = _DISTRIBUTION.match(row["distribution"])
        if match is None:
            raise ValueError(
                f"columns.csv: {name} has distribution {row['distribution']!r}, expected N(mean,sd) or U(low,high)"
            )
        numeric[name] = NumericFigures(
            family=match[1],
            a=float(match[2]),
            b=float(match[3]),
            mean=float(row["mean"]),
            sd=float(row["sd"]),
            missing_rate=float(row["missing_rate"]),
            decimals=int(row["decimals"]),
        )

    categories = pd.read_csv(figures_dir / "categories.csv", dtype={"column": str, "level": str})
    levels, shares = {}, {}
    for name in CATEGORICAL_COLUMNS:
        rows = categories[categories["column"] == name]
        unknown = set(rows["level"]) - set(LEVELS[kind_of(name)])
        if rows.empty or unknown:
            raise ValueError(
                f"categories.csv: {name} has levels {sorted(unknown) or 'none'}, "
                f"expected some of {', '.join(LEVELS[kind_of(name)])}"
            )
        levels[name] = tuple(rows["level"])
        # x31's shares sum to 98.5: the rest is its missing rate, applied later like any blank.
        percent = rows["share_percent"].to_numpy(dtype=float)
        shares[name] = percent / percent.sum()

    model = pd.read_csv(figures_dir / "true_model.csv", dtype={"variable": str})
    coefficients = dict(zip(model["variable"], model["coefficient"].astype(float), strict=True))
    for variable in coefficients:
        column, _, level = variable.partition("_")
        if variable not in numeric and level not in levels.get(column, ()):
            raise ValueError(f"true_model.csv: {variable!r} is neither a numeric column nor column_level")

    return Figures(
        numeric=numeric,
        levels=levels,
        shares=shares,
        missing_rate={name: float(columns.loc[name, "missing_rate"]) for name in COLUMNS},
        coefficients=coefficients,
    )


def _correlation() -> np.ndarray:
    """Correlation of the latent normals, in NUMERIC_COLUMNS order."""
    position = {name: j for j, name in enumerate(NUMERIC_COLUMNS)}
    corr = np.eye(len(NUMERIC_COLUMNS))
    blocks = [(CORRELATED_BLOCK, BLOCK_OTHER_R)]
    blocks += [(block, EQUICORRELATION) for block in EQUICORRELATED_BLOCKS]
    for block, r in blocks:
        for i, first in enumerate(block):
            for second in block[i + 1 :]:
                j, k = position[first], position[second]
                corr[j, k] = corr[k, j] = BLOCK_PAIR_R.get((first, second), r)
    return corr


def _logit(values: Mapping[str, np.ndarray], figures: Figures) -> np.ndarray:
    """Linear predictor of the published model; base levels have no coefficient, so add 0."""
    n_rows = len(values[COLUMNS[0]])
    logit = np.zeros(n_rows)
    for variable, coefficient in figures.coefficients.items():
        if variable in figures.numeric:
            spec = figures.numeric[variable]
            logit += coefficient * (values[variable] - spec.mean) / spec.sd
        else:
            column, _, level = variable.partition("_")
            logit += coefficient * (values[column] == level)
    return logit


def generate(seed: int, n_rows: int, figures_dir: Path | str, stream: int = TRAIN_STREAM) -> pd.DataFrame:
    """Draw ``n_rows`` clean rows: columns ``y, x0..x99``.

    Numeric columns (x12 and x63 included) are floats rounded to their decimals with NaN for
    missing; categoricals are canonical strings or None (object dtype); y is 0/1. The same
    ``seed`` and ``stream`` give the same rows; use TEST_STREAM for rows that do not repeat the
    training rows.
    """
    figures = read_figures(figures_dir)
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(stream,)))

    cholesky = np.linalg.cholesky(_correlation())
    latent = rng.standard_normal((n_rows, len(NUMERIC_COLUMNS))) @ cholesky.T
    values: dict[str, np.ndarray] = {}
    for j, name in enumerate(NUMERIC_COLUMNS):
        spec = figures.numeric[name]
        if spec.family == "N":
            drawn = spec.a + spec.b * latent[:, j]
        else:
            drawn = spec.a + (spec.b - spec.a) * ndtr(latent[:, j])
        # + 0.0 turns -0.0 into 0.0, so no cell is ever written as "-0.000000".
        values[name] = np.round(drawn, spec.decimals) + 0.0
    for name in CATEGORICAL_COLUMNS:
        levels = np.array(figures.levels[name], dtype=object)
        values[name] = levels[rng.choice(len(levels), size=n_rows, p=figures.shares[name])]

    rates = np.array([figures.missing_rate[name] for name in COLUMNS])
    blank = rng.random((n_rows, len(COLUMNS))) < rates
    # A missing category is a level of its own whose effect is the base level's (all dummies
    # 0), so categoricals are blanked before y is drawn; numeric blanks are a recording
    # accident, so y sees the complete numeric values.
    for j, name in enumerate(COLUMNS):
        if name not in figures.numeric:
            values[name][blank[:, j]] = None
    y = (rng.random(n_rows) < expit(_logit(values, figures))).astype(np.int64)
    for j, name in enumerate(COLUMNS):
        if name in figures.numeric:
            values[name][blank[:, j]] = np.nan

    return pd.DataFrame(
        {TARGET: y}
        | {
            # object dtype explicitly: pandas 3 would otherwise turn None into NaN in a str column.
            name: pd.Series(values[name], dtype=float if name in figures.numeric else object)
            for name in COLUMNS
        }
    )
