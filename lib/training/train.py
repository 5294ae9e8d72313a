"""Training pipeline: messy CSV → imputer, scaler, statsmodels logit, manifest, report.

    python -m lib.training.train [--data PATH] [--store DIR | --out DIR] [--threshold X | --threshold-quantile Q]

Each run adds a version to the model store (lib/store/versions.py; ``--store``, default lib/model_store/)
and makes it active only if the store had no active version yet: switching is ``python -m
lib.store use VERSION``. ``--out DIR`` writes a plain artifact directory instead (MODEL_DIR).
Works unchanged on the public ``exercise_26_train.csv``.
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import statsmodels.api as sm
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

from lib.core.artifacts import Stages, load_artifacts, save_artifacts, sha256_bytes
from lib.core.errors import InputError
from lib.core.features import design_matrix, normalize_frame, source_column
from lib.core.reference import reference_probabilities
from lib.core.schema import CATEGORICAL_COLUMNS, COLUMNS, NUMERIC_COLUMNS, TARGET, kind_of
from lib.store.versions import DEFAULT_STORE, ModelStore
from lib.training.report import write_report

PACKAGE_DIR = Path(__file__).resolve().parents[1]
DEFAULT_DATA = PACKAGE_DIR / "data" / "train.csv"
DEFAULT_TRUE_MODEL = PACKAGE_DIR / "figures" / "true_model.csv"
N_SELECTED = 25
SPLIT_SEED = 13
HOLDOUT_ROWS = 4000


def log(message: str) -> None:
    """Progress line on stderr, flushed so it shows while training runs."""
    print(f"[train] {message}", file=sys.stderr, flush=True)


def load_training_table(path: Path) -> tuple[pd.DataFrame, np.ndarray]:
    """Read the raw CSV, normalise every column (x12, x63 to floats) and return (frame, y)."""
    raw = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = [c for c in (*COLUMNS, TARGET) if c not in raw.columns]
    if missing:
        raise SystemExit(f"{path}: missing columns {missing[:5]}{'...' if len(missing) > 5 else ''}")
    try:
        frame = normalize_frame(raw)
    except InputError as exc:
        first = exc.errors[0]
        raise SystemExit(
            f"{path}: {len(exc.errors)} invalid cells, first at data row {first.index + 1}, "
            f"column {first.column}: {first.message}"
        ) from None
    y = pd.to_numeric(raw[TARGET], errors="raise").to_numpy(dtype=np.int64)
    return frame, y


def split(frame: pd.DataFrame, y: np.ndarray) -> dict[str, tuple[pd.DataFrame, np.ndarray]]:
    """The notebook's splits: 10 % validation, then 4,000 test rows, the rest train."""
    x_rest, x_val, y_rest, y_val = train_test_split(frame, y, test_size=0.1, random_state=SPLIT_SEED)
    x_train, x_test, y_train, y_test = train_test_split(
        x_rest, y_rest, test_size=HOLDOUT_ROWS, random_state=SPLIT_SEED
    )
    return {"train": (x_train, y_train), "val": (x_val, y_val), "test": (x_test, y_test)}


def fixed_levels(frame: pd.DataFrame) -> dict[str, list[str]]:
    """Sorted levels of each categorical column seen in training; the first is the base."""
    return {c: sorted(frame[c].dropna().unique().tolist()) for c in CATEGORICAL_COLUMNS}


def screen_variables(features: pd.DataFrame, y: np.ndarray, n: int = N_SELECTED) -> list[str]:
    """L1 logistic screen on all features; keep the ``n`` largest squared coefficients."""
    # scikit-learn 1.8 spells the L1 penalty as l1_ratio=1 (penalty="l1" is deprecated).
    lasso = LogisticRegression(l1_ratio=1.0, C=1.0, fit_intercept=False, solver="liblinear")
    lasso.fit(features, y)
    order = np.argsort(-(lasso.coef_[0] ** 2), kind="stable")[:n]
    return [features.columns[i] for i in order]


def fit_logit(features: pd.DataFrame, y: np.ndarray):
    """statsmodels Logit without a constant, as in the notebook."""
    return sm.Logit(y, features).fit(disp=0)


def compare_true_model(variables: list[str], path: Path) -> dict | None:
    """Compare the selection with the generator's true model, when its file is present."""
    if not path.is_file():
        return None
    truth = set(pd.read_csv(path)["variable"])
    return {
        "file": path.name,
        "same_variables": truth == set(variables),
        "missing": sorted(truth - set(variables)),
        "extra": sorted(set(variables) - truth),
    }


def choose_threshold(args: argparse.Namespace, probabilities: np.ndarray) -> tuple[float, str]:
    """The class threshold: fixed, or a quantile of the final model's training scores."""
    if args.threshold_quantile is not None:
        value = float(np.quantile(probabilities, args.threshold_quantile))
        return value, f"quantile {args.threshold_quantile} of training probabilities"
    return args.threshold, "fixed"


def column_stats(frame: pd.DataFrame, imputer, scaler, levels: dict[str, list[str]], columns: list[str]) -> dict:
    """Per consumed column, what the model card and the drift counters need, from the train split.

    Numeric columns: imputation value, scaling centre and scale, and the range seen in
    training (values outside it are counted at serving time as a cheap drift signal).
    Categorical columns: the fixed levels, the first being the dropped base level.
    """
    stats = {}
    for column in columns:
        values = frame[column]
        entry = {"kind": kind_of(column), "missing_share": float(values.isna().mean())}
        if column in CATEGORICAL_COLUMNS:
            entry["levels"] = levels[column]
        else:
            j = NUMERIC_COLUMNS.index(column)
            entry.update(impute_value=float(imputer.statistics_[j]), center=float(scaler.mean_[j]),
                         scale=float(scaler.scale_[j]), min=float(values.min()), max=float(values.max()))
        stats[column] = entry
    return stats


def golden_row(frame: pd.DataFrame) -> dict:
    """One normalised row, JSON-ready, recorded with its probability to re-check at load."""
    row = frame.iloc[0]
    return {c: (None if pd.isna(row[c]) else (row[c] if c in CATEGORICAL_COLUMNS else float(row[c])))
            for c in COLUMNS}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m lib.training.train", description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="training CSV (default: %(default)s)")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--store", type=Path, default=DEFAULT_STORE,
                       help="model store to add the version to (default: %(default)s)")
    where.add_argument("--out", type=Path, default=None,
                       help="write a plain artifact directory instead of a store version (for MODEL_DIR)")
    parser.add_argument("--true-model", type=Path, default=DEFAULT_TRUE_MODEL,
                        help="generator's true model, compared with the selection when present")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--threshold", type=float, default=0.5, help="class threshold (default 0.5)")
    group.add_argument("--threshold-quantile", type=float, default=None,
                       help="set the threshold to this quantile of training probabilities (0.75 = top quarter)")
    args = parser.parse_args(argv)
    if not 0.0 <= args.threshold <= 1.0:
        parser.error("--threshold must be within [0, 1]")
    if args.threshold_quantile is not None and not 0.0 < args.threshold_quantile < 1.0:
        parser.error("--threshold-quantile must be within (0, 1)")
    if not args.data.is_file():
        parser.error(f"training data {args.data} not found (generate it with `python -m lib.training.synth`)")
    return args


def train(args: argparse.Namespace) -> dict:
    """Run the whole pipeline and return the manifest written next to the artifacts."""
    started = time.perf_counter()
    log(f"reading {args.data}")
    frame, y = load_training_table(args.data)
    splits = split(frame, y)
    x_train, y_train = splits["train"]
    log("rows: " + ", ".join(f"{k} {len(v[0])}" for k, v in splits.items()) + f" (all {len(frame)})")

    numeric = list(NUMERIC_COLUMNS)
    imputer = SimpleImputer(strategy="mean").fit(x_train[numeric])
    scaler = StandardScaler().fit(imputer.transform(x_train[numeric]))
    levels = fixed_levels(x_train)
    design = {k: design_matrix(x, imputer, scaler, levels) for k, (x, _) in splits.items()}
    log(f"features: {design['train'].shape[1]} ({len(numeric)} numeric + dummies)")

    variables = screen_variables(design["train"], y_train)
    log(f"selected {len(variables)} variables: {', '.join(variables)}")
    truth = compare_true_model(variables, args.true_model)
    if truth is not None:
        log(f"same variables as {truth['file']}: {truth['same_variables']}"
            + ("" if truth["same_variables"] else f" (missing {truth['missing']}, extra {truth['extra']})"))

    fitted = fit_logit(design["train"][variables], y_train)
    auc = {k: float(roc_auc_score(splits[k][1], fitted.predict(design[k][variables]))) for k in splits}
    log("AUC " + ", ".join(f"{k} {v:.4f}" for k, v in auc.items()))

    final, coefficients, threshold, threshold_rule = refit_on_all_rows(args, frame, y, imputer, scaler, levels,
                                                                         variables)
    consumed = [c for c in COLUMNS if c in {source_column(v) for v in variables}]

    manifest = {
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "training_data": {
            "file": args.data.name,
            "sha256": sha256_bytes(args.data.read_bytes()),
            "rows": len(frame),
            "positive_share": float(y.mean()),
        },
        "numeric_columns": numeric,
        "categorical_columns": list(CATEGORICAL_COLUMNS),
        "category_levels": levels,
        "variables": coefficients,
        "consumed_columns": consumed,
        "column_stats": column_stats(x_train, imputer, scaler, levels, consumed),
        "threshold": threshold,
        "threshold_rule": threshold_rule,
        "metrics": {
            "auc": auc,
            "split_rows": {k: len(v[0]) for k, v in splits.items()},
            "auc_model": "fitted on the train split; the served model is refit on all rows",
        },
        "true_model_check": truth,
        "golden": {"row": golden_row(splits["test"][0]), "probability": None},
    }
    golden_frame = pd.DataFrame([manifest["golden"]["row"]])
    stages = Stages(imputer=imputer, scaler=scaler, model=final, manifest=manifest)
    manifest["golden"]["probability"] = float(reference_probabilities(stages, golden_frame)[0])

    predictions = {k: (splits[k][1], fitted.predict(design[k][variables])) for k in splits}

    save_model(args, imputer, scaler, final, manifest, predictions, started)
    return manifest


def refit_on_all_rows(args: argparse.Namespace, frame: pd.DataFrame, y: pd.Series, imputer: SimpleImputer,
                      scaler: StandardScaler, levels: dict, variables: list[str]) -> tuple:
    """Refit the selected variables on every row: the served model, its coefficients and its threshold.

    Returns ``(model, coefficients, threshold, threshold_rule)``; the model keeps no training data."""
    all_design = design_matrix(frame, imputer, scaler, levels)[variables]
    final = fit_logit(all_design, y)
    final_probabilities = np.asarray(final.predict(all_design))
    threshold, threshold_rule = choose_threshold(args, final_probabilities)
    log(f"refit on all {len(frame)} rows; threshold {threshold:.6f} ({threshold_rule})")
    coefficients = [
        {"name": v, "coefficient": float(final.params[v]), "std_error": float(final.bse[v])}
        for v in variables
    ]
    final.remove_data()
    return final, coefficients, threshold, threshold_rule


def save_model(args: argparse.Namespace, imputer: SimpleImputer, scaler: StandardScaler, final, manifest: dict,
               predictions: dict, started: float) -> None:
    """Write the artifacts and the report to ``args.out``, or as a new version of the store ``args.store``."""

    def write(out_dir: Path) -> str:
        saved = save_artifacts(out_dir, imputer, scaler, final, manifest)
        # Prove the saved files load and verify before calling the run a success.
        load_artifacts(out_dir)
        write_report(out_dir, saved, predictions)
        manifest.update(saved)
        return saved["model_version"]

    if args.out is not None:
        write(args.out)
        log(f"wrote {args.out} (model {manifest['model_version']}) in {time.perf_counter() - started:.1f} s")
    else:
        store_version(ModelStore(args.store), write)
        log(f"done in {time.perf_counter() - started:.1f} s")


def store_version(store: ModelStore, write) -> None:
    """Add the version ``write`` makes to ``store``; make it active if the store had no active
    version (a fresh clone's first run), else say how to switch to it."""
    version, added = store.write_version(write)
    log(f"model {version} {'added to' if added else 'was already in'} the model store {store.root}")
    if store.read_pointer() is None:
        store.use(version)
        log(f"active version: {version} (the store had none)")
        return
    active = store.pointer().version
    if active == version:
        log(f"active version: {version}")
    else:
        log(f"active version stays {active}; check the new one with `python -m lib.store show {version}`, "
            f"serve it with `python -m lib.store use {version}`")


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    manifest = train(parse_args(argv))
    print(f"model {manifest['model_version']}: AUC "
          + ", ".join(f"{k} {v:.4f}" for k, v in manifest["metrics"]["auc"].items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
