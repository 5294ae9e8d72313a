"""The reference feature pipeline: raw table → normalised frame → 121-column design matrix.

This is the pandas / scikit-learn path used by training and by the reference scorer. It
never fits anything on a request batch: dummy levels are fixed at training time, so a batch
of one row yields the same columns as a batch of 10,000.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from lib.core.errors import CellError, InputError
from lib.core.normalize import decode_levels, normalize_column
from lib.core.schema import CATEGORICAL_COLUMNS, COLUMNS, NUMERIC_COLUMNS

NAN_LEVEL = "nan"


def normalize_frame(raw: pd.DataFrame) -> pd.DataFrame:
    """Normalise every schema column of ``raw`` (absent columns count as missing).

    Numeric columns become float64 (NaN = missing); categoricals become canonical level
    strings (None = missing). Raises InputError listing every invalid cell.
    """
    n_rows = len(raw)
    data: dict[str, np.ndarray] = {}
    errors: list[CellError] = []
    for name in COLUMNS:
        values = raw[name].tolist() if name in raw.columns else [None] * n_rows
        array, cell_errors = normalize_column(name, values)
        errors.extend(CellError(i, name, msg) for i, msg in cell_errors.items())
        data[name] = decode_levels(name, array) if name in CATEGORICAL_COLUMNS else array
    if errors:
        raise InputError(sorted(errors, key=lambda e: e.index), n_rows)
    return pd.DataFrame(data, index=raw.index)


def one_hot(frame: pd.DataFrame, levels: dict[str, list[str]]) -> pd.DataFrame:
    """One-hot encode the categoricals against fixed training levels (first level dropped)."""
    out = {}
    for column in CATEGORICAL_COLUMNS:
        values = frame[column].to_numpy(dtype=object)
        for level in levels[column][1:]:
            out[f"{column}_{level}"] = (values == level).astype(np.float64)
        out[f"{column}_{NAN_LEVEL}"] = pd.isna(values).astype(np.float64)
    return pd.DataFrame(out, index=frame.index)


def scaled_numeric(frame: pd.DataFrame, imputer, scaler) -> pd.DataFrame:
    """Impute and scale the 96 numeric columns with the fitted (pickled) stages."""
    imputed = imputer.transform(frame[list(NUMERIC_COLUMNS)])
    scaled = scaler.transform(imputed)
    return pd.DataFrame(scaled, columns=list(NUMERIC_COLUMNS), index=frame.index)


def design_matrix(frame: pd.DataFrame, imputer, scaler, levels: dict[str, list[str]]) -> pd.DataFrame:
    """The 121 features: scaled numeric columns in file order, then the dummies."""
    return pd.concat([scaled_numeric(frame, imputer, scaler), one_hot(frame, levels)], axis=1)


def source_column(variable: str) -> str:
    """The raw column a model variable consumes: ``x5_saturday`` → ``x5``, ``x12`` → ``x12``."""
    column = variable.split("_", 1)[0]
    if column not in COLUMNS:
        raise ValueError(f"variable {variable!r} does not derive from a schema column")
    return column
