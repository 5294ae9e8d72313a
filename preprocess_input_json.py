"""Input JSON → the frame the model predicts on: the public entry of the preprocessing.

``preprocess_input_json(data, stages)`` takes rows as the source systems send them (JSON text or
bytes, one row object or an array of them, or the decoded dicts) and returns, one row per input
row and in order, the model's selected variables in their fitted order: the cells normalised
(messy spellings, null tokens), imputed and scaled with the fitted stages, the categoricals
one-hot encoded against the training levels. ``stages.model.predict`` on it gives the
probabilities the service answers. It is the reference pipeline of ``lib.core.reference`` (pandas
and the pickled stages), plainly correct rather than fast: the service scores with its compiled
plan, and reads request bodies with ``service.http.readers``.
"""

from __future__ import annotations

import json

import pandas as pd

from lib.core.artifacts import Stages, load_artifacts
from lib.core.errors import PayloadError
from lib.core.reference import model_inputs
from lib.store.versions import active_directory

__all__ = ["preprocess_input_json"]


def preprocess_input_json(data: str | bytes | dict | list[dict], stages: Stages | None = None) -> pd.DataFrame:
    """The model's input frame for the rows of ``data``, one row per input row, in order.

    ``data`` is JSON text or bytes (one row object or an array of them) or the decoded dict or
    list of dicts; keys outside the schema (``id`` among them) are ignored and absent columns are
    missing values. ``stages`` are the loaded model's stages; by default the model store's active
    version, loaded and verified (each file's sha256, the library versions) on every call.

    Raises PayloadError for malformed JSON or a body that is not rows, InputError listing every
    invalid cell (row position, column, what is wrong), ArtifactError for an unusable store.
    """
    rows = _rows(_decode(data) if isinstance(data, str | bytes | bytearray) else data)
    if stages is None:
        stages = load_artifacts(active_directory())
    # A row of only unknown keys still counts as a row (of missing values).
    raw = pd.DataFrame(rows, index=range(len(rows)))
    return model_inputs(stages, raw)


def _decode(text: str | bytes | bytearray) -> object:
    """``text`` decoded; PayloadError (with the parser's position, never the text) if it is not JSON."""
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:
        where = f" at line {exc.lineno} column {exc.colno}" if isinstance(exc, json.JSONDecodeError) else ""
        raise PayloadError(f"malformed JSON{where}: send one row object or an array of them") from None


def _rows(decoded: object) -> list[dict]:
    """The rows of a decoded body: one object, or a non-empty array of objects."""
    if isinstance(decoded, dict):
        return [decoded]
    if not isinstance(decoded, list):
        raise PayloadError(f"expected a row object or an array of row objects, got {type(decoded).__name__}")
    if not decoded:
        raise PayloadError("no rows: the array is empty")
    for index, row in enumerate(decoded):
        if not isinstance(row, dict):
            raise PayloadError(f"row {index}: expected an object of column name to cell, got {type(row).__name__}")
    return decoded
