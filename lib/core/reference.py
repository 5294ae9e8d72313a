"""The reference scoring path: pandas + the pickled scikit-learn stages + statsmodels predict.

Slow but plainly correct; the served path in ``lib.core.scorer`` must agree with it to 1e-9.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from lib.core.artifacts import Stages
from lib.core.features import design_matrix, normalize_frame


def model_inputs(stages: Stages, raw: pd.DataFrame) -> pd.DataFrame:
    """The frame the statsmodels model predicts on for the raw table ``raw``: every row normalised,
    imputed, scaled and one-hot encoded, then the model's variables in the fitted order.

    Raises InputError listing every invalid cell (row position and column)."""
    frame = normalize_frame(raw)
    features = design_matrix(frame, stages.imputer, stages.scaler, stages.levels)
    # statsmodels predict is positional: select the variables in the fitted order by name.
    return features[stages.variables]


def reference_probabilities(stages: Stages, raw: pd.DataFrame) -> np.ndarray:
    """Positive-class probabilities for every row of the raw table ``raw``."""
    return np.asarray(stages.model.predict(model_inputs(stages, raw)), dtype=np.float64)


def reference_classes(stages: Stages, probabilities: np.ndarray) -> np.ndarray:
    """Predicted classes with the threshold stored at training."""
    return (probabilities >= stages.threshold).astype(np.int8)
