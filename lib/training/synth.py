"""Deterministic stand-in for the public exercise_26 files, drawn fresh from published figures.

The real files are not shipped. This module draws rows with the same schema, raw formats and
statistics from the published figures kept in ``lib/figures/`` (per-column distributions and
missing rates, level shares, the published model), so that a model trained on them behaves
realistically.

    python -m lib.training.synth [--seed 13] [--rows 40000] [--test-rows 10000] [--figures DIR] [--out DIR]
"""

from __future__ import annotations

import argparse
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import orjson
import pandas as pd
from scipy.special import expit, ndtr

from lib.core.schema import (
    CATEGORICAL_COLUMNS,
    COLUMNS,
    CURRENCY,
    LEVELS,
    NUMERIC_COLUMNS,
    PERCENT,
    SPECIAL_KINDS,
    TARGET,
    kind_of,
)

DEFAULT_SEED = 13
DEFAULT_TRAIN_ROWS = 40_000
DEFAULT_TEST_ROWS = 10_000
#: The published figures, kept in the repository (figures, not data): a clone sets itself up.
DEFAULT_FIGURES_DIR = Path(__file__).resolve().parents[1] / "figures"
DEFAULT_OUT_DIR = Path(__file__).resolve().parents[1] / "data"
TRAIN_FILE = "train.csv"
TEST_FILE = "test.json"
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


def _fixed(column: np.ndarray, decimals: int) -> list[str]:
    fmt = f"%.{decimals}f"
    return ["" if v != v else fmt % v for v in column.tolist()]


def _train_currency(column: np.ndarray) -> list[str]:
    # The training export wrote positives with a trailing space, negatives in accounting brackets.
    texts = ["" if v != v else f"(${-v:,.2f})" if v < 0 else f"${v:,.2f} " for v in column.tolist()]
    # Thousands commas are field separators too: quote those cells as csv's minimal quoting does.
    return [f'"{text}"' if "," in text else text for text in texts]


def _test_currency(column: np.ndarray) -> list[str | None]:
    return [None if v != v else f"${v:,.2f}" for v in column.tolist()]


def _percent(column: np.ndarray, missing: str | None) -> list[str | None]:
    return [missing if v != v else f"{v:.2f}%" for v in column.tolist()]


def _format_columns(frame: pd.DataFrame, *, currency: Callable[[np.ndarray], list],
                    percent: Callable[[np.ndarray], list], categorical: Callable[[np.ndarray], list],
                    number: Callable[[str, np.ndarray], list]) -> list[list]:
    """The cells of every column of ``frame``, in ``COLUMNS`` order, each written by the function of
    its kind (``number`` also gets the column's name)."""
    cells = []
    for name in COLUMNS:
        column = frame[name].to_numpy()
        kind = SPECIAL_KINDS.get(name)
        if kind == CURRENCY:
            cells.append(currency(column))
        elif kind == PERCENT:
            cells.append(percent(column))
        elif name in CATEGORICAL_COLUMNS:
            cells.append(categorical(column))
        else:
            cells.append(number(name, column))
    return cells


def format_train_csv(frame: pd.DataFrame, decimals: Mapping[str, int]) -> bytes:
    """The train file as written by the source system: ``y,x0..x99``, blanks for missing.

    Plain numbers in fixed notation with ``decimals[column]`` digits, x12 as ``$6,882.34 `` or
    ``($5,032.58)`` (double-quoted when it holds a comma), x63 as ``62.59%``, categoricals as
    their canonical text.
    """
    cells = [frame[TARGET].astype(int).astype(str).tolist(), *_format_columns(
        frame, currency=_train_currency, percent=lambda column: _percent(column, missing=""),
        categorical=lambda column: ["" if v is None else v for v in column.tolist()],
        number=lambda name, column: _fixed(column, decimals[name]))]
    lines = [",".join((TARGET, *COLUMNS)), *map(",".join, zip(*cells, strict=True))]
    return ("\n".join(lines) + "\n").encode()


def format_test_json(frame: pd.DataFrame) -> bytes:
    """The test file as served to the API: one JSON array of ``{"x0": .., .., "x99": ..}`` objects.

    Numbers as JSON numbers, x12 as ``$5,547.78`` or ``$-5,483.24``, x63 as ``36.29%``,
    categoricals as canonical strings, null for missing; no y, no id.
    """
    cells = _format_columns(frame, currency=_test_currency, percent=lambda column: _percent(column, missing=None),
                            categorical=lambda column: column.tolist(),
                            number=lambda name, column: [None if v != v else v for v in column.tolist()])
    rows = [dict(zip(COLUMNS, row, strict=True)) for row in zip(*cells, strict=True)]
    return orjson.dumps(rows, option=orjson.OPT_APPEND_NEWLINE)


def main(argv: Sequence[str] | None = None) -> None:
    """Command line: draw the train and test files and print a short summary."""
    parser = argparse.ArgumentParser(prog="python -m lib.training.synth", description=__doc__.splitlines()[0])
    add = parser.add_argument
    add("--seed", type=int, default=DEFAULT_SEED, help="random seed (default %(default)s)")
    add("--rows", type=int, default=DEFAULT_TRAIN_ROWS, help="train rows (default %(default)s)")
    add("--test-rows", type=int, default=DEFAULT_TEST_ROWS, help="test rows (default %(default)s)")
    add(
        "--figures",
        type=Path,
        default=DEFAULT_FIGURES_DIR,
        help="directory holding " + ", ".join(FIGURE_FILES) + " (default %(default)s)",
    )
    add("--out", type=Path, default=DEFAULT_OUT_DIR, help="output directory (default %(default)s)")
    args = parser.parse_args(argv)

    started = time.perf_counter()
    print(f"reading figures from {args.figures}")
    try:
        figures = read_figures(args.figures)
    except (FileNotFoundError, ValueError) as e:
        raise SystemExit(f"python -m lib.training.synth: {e}") from e

    print(f"drawing {args.rows} train rows and {args.test_rows} test rows (seed {args.seed})")
    train = generate(args.seed, args.rows, args.figures, stream=TRAIN_STREAM)
    test = generate(args.seed, args.test_rows, args.figures, stream=TEST_STREAM)

    args.out.mkdir(parents=True, exist_ok=True)
    train_path, test_path = args.out / TRAIN_FILE, args.out / TEST_FILE
    print(f"writing {train_path}")
    train_path.write_bytes(format_train_csv(train, figures.decimals))
    print(f"writing {test_path}")
    test_path.write_bytes(format_test_json(test))

    print(f"done in {time.perf_counter() - started:.1f} s")
    print(f"  {len(train)} train rows, {train[TARGET].mean():.1%} positive -> {train_path}")
    print(f"  {len(test)} test rows -> {test_path}")


if __name__ == "__main__":
    main()
