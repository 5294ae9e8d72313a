"""Deterministic stand-in for the public exercise_26 files, drawn fresh from published figures.

The real files are not shipped. This module writes rows drawn by ``lib.training.sampler`` (same
schema and statistics as the real files, from the published figures kept in ``lib/figures/``) in
the raw formats of the source files, so that a model trained on them behaves realistically.

    python -m lib.training.synth [--seed 13] [--rows 40000] [--test-rows 10000] [--figures DIR] [--out DIR]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import orjson
import pandas as pd

from lib.core.schema import CATEGORICAL_COLUMNS, COLUMNS, CURRENCY, PERCENT, SPECIAL_KINDS, TARGET
from lib.training.sampler import (
    DEFAULT_FIGURES_DIR,
    FIGURE_FILES,
    TEST_STREAM,
    TRAIN_STREAM,
    generate,
    read_figures,
)

DEFAULT_SEED = 13
DEFAULT_TRAIN_ROWS = 40_000
DEFAULT_TEST_ROWS = 10_000
DEFAULT_OUT_DIR = Path(__file__).resolve().parents[1] / "data"
TRAIN_FILE = "train.csv"
TEST_FILE = "test.json"


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
