"""The training report: metrics JSON plus ROC and calibration pictures next to the artifacts."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: training runs on servers and in image builds

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.calibration import calibration_curve  # noqa: E402
from sklearn.metrics import roc_curve  # noqa: E402

from lib.core.artifacts import CALIBRATION_FILE, REPORT_FILE, ROC_FILE  # noqa: E402


def write_report(out_dir: Path, manifest: dict, predictions: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
    """Write ``report.json``, ``roc.png`` and ``calibration.png`` for each split's predictions."""
    report = {
        "model_version": manifest["model_version"],
        "created_at": manifest["created_at"],
        "metrics": manifest["metrics"],
        "threshold": manifest["threshold"],
        "variables": manifest["variables"],
        "true_model_check": manifest["true_model_check"],
    }
    (out_dir / REPORT_FILE).write_text(json.dumps(report, indent=2) + "\n")

    fig, ax = plt.subplots(figsize=(5, 5))
    for split, (y, p) in predictions.items():
        fpr, tpr, _ = roc_curve(y, p)
        ax.plot(fpr, tpr, label=f"{split} (AUC {manifest['metrics']['auc'][split]:.3f})")
    ax.plot([0, 1], [0, 1], linestyle=":", color="grey")
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC")
    ax.legend(loc="lower right")
    fig.savefig(out_dir / ROC_FILE, dpi=100, bbox_inches="tight")
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(5, 5))
    for split, (y, p) in predictions.items():
        observed, predicted = calibration_curve(y, p, n_bins=10)
        ax.plot(predicted, observed, marker="o", label=split)
    ax.plot([0, 1], [0, 1], linestyle=":", color="grey")
    ax.set(xlabel="predicted probability", ylabel="observed share positive", title="Calibration")
    ax.legend(loc="upper left")
    fig.savefig(out_dir / CALIBRATION_FILE, dpi=100, bbox_inches="tight")
    plt.close(fig)
