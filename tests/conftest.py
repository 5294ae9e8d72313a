"""Shared fixtures: artifacts, the Flask app, a live gunicorn server, the test rows."""

from __future__ import annotations

import csv
import io
import json
import os
import random
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

import numpy as np
import orjson
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import requests
import statsmodels.api as sm

from lib.core.artifacts import Stages, load_artifacts
from lib.core.features import design_matrix, normalize_frame
from lib.core.schema import CATEGORICAL_COLUMNS
from lib.store.versions import DEFAULT_STORE, ModelStore
from lib.training.synth import TEST_FILE, TRAIN_FILE
from tests.support.live_server import PROJECT_DIR, LiveServer

DATA_DIR = PROJECT_DIR / "lib" / "data"
TEST_JSON = DATA_DIR / TEST_FILE
#: The random seed of the fuzzed bodies (tests/lib/codecs/test_fuzz_bodies.py): FUZZ_SEED, else drawn for this
#: run; printed in the header (and by .ci/run) so that a failure can be replayed.
FUZZ_SEED = int(os.environ.get("FUZZ_SEED") or random.SystemRandom().randrange(2**32))


def pytest_report_header() -> str:
    return f"fuzzed bodies: FUZZ_SEED={FUZZ_SEED}"


# run_tests.sh builds the data and the artifacts; these fixtures cover a bare `pytest` on a fresh
# clone. A test that reads either depends on its fixture, so that it also passes on its own.


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The generated data, lib/data/ (drawn once by lib.training.synth if absent)."""
    if not all((DATA_DIR / name).exists() for name in (TRAIN_FILE, TEST_FILE)):
        subprocess.run([sys.executable, "-m", "lib.training.synth"], cwd=PROJECT_DIR, check=True)
    return DATA_DIR


@pytest.fixture(scope="session")
def model_dir(data_dir) -> Path:
    """The directory of the project's served model: the active version of lib/model_store/
    (trained on lib/data/ once if the store has none)."""
    store = ModelStore(DEFAULT_STORE)
    if store.read_pointer() is None:
        subprocess.run([sys.executable, "-m", "lib.training.train"], cwd=PROJECT_DIR, check=True)
    return store.active()[1]


@pytest.fixture(scope="session")
def other_model_dir(tmp_path_factory) -> Path:
    """A second model, as ``python -m lib.training.train --out`` writes it: trained on 12,000 rows drawn
    with another seed and with another threshold, so its probabilities and classes differ from
    the project's model."""
    work = tmp_path_factory.mktemp("other-model")
    subprocess.run([sys.executable, "-m", "lib.training.synth", "--seed", "7", "--rows", "12000", "--test-rows", "10",
                    "--out", str(work / "data")], cwd=PROJECT_DIR, check=True, capture_output=True)
    subprocess.run([sys.executable, "-m", "lib.training.train", "--data", str(work / "data" / "train.csv"),
                    "--out", str(work / "model"), "--threshold", "0.6"], cwd=PROJECT_DIR, check=True,
                   capture_output=True)
    return work / "model"


class TwoVersions(NamedTuple):
    """A model store of a test's own holding two versions, ``a`` active."""

    store: ModelStore
    a: str
    b: str


@pytest.fixture()
def two_versions(model_dir, other_model_dir, tmp_path) -> TwoVersions:
    """A store in tmp_path: the project's model (``a``, active) and the other model (``b``)."""
    store = ModelStore(tmp_path / "store")
    a, _ = store.add(model_dir)
    b, _ = store.add(other_model_dir)
    store.use(a)
    return TwoVersions(store, a, b)


@pytest.fixture(scope="session")
def stages(model_dir):
    """The verified, unpickled stages."""
    return load_artifacts(model_dir)


@pytest.fixture(scope="session")
def probe_stages(stages, test_rows) -> Stages:
    """A logit on all 121 features over the trained imputer, scaler and levels: every level and
    `_nan` indicator that the 25-variable model leaves at zero gets a coefficient."""
    rng = np.random.default_rng(5)
    raw = pd.DataFrame(test_rows[:5000])
    for column in CATEGORICAL_COLUMNS:  # make every `_nan` indicator common enough to fit
        raw[column] = raw[column].astype(object).where(rng.random(len(raw)) >= 0.1, None)
    design = design_matrix(normalize_frame(raw), stages.imputer, stages.scaler, stages.levels)
    beta = rng.normal(0.0, 0.3, design.shape[1])
    y = (rng.random(len(design)) < 1.0 / (1.0 + np.exp(-design.to_numpy() @ beta))).astype(np.int64)
    model = sm.Logit(y, design).fit(disp=0)
    manifest = {**stages.manifest, "variables": [{"name": name} for name in design.columns]}
    return Stages(imputer=stages.imputer, scaler=stages.scaler, model=model, manifest=manifest)


@pytest.fixture(scope="session")
def test_body(data_dir) -> bytes:
    """lib/data/test.json as bytes."""
    return TEST_JSON.read_bytes()


@pytest.fixture(scope="session")
def test_rows(test_body) -> list[dict]:
    """The 10,000 generated test rows (lib/data/test.json)."""
    return json.loads(test_body)


@pytest.fixture(scope="module")
def http():
    """A requests session for the tests of one module."""
    with requests.Session() as session:
        yield session


@pytest.fixture()
def model_copy(model_dir, tmp_path) -> Path:
    """A private copy of the artifacts that a test may damage."""
    target = tmp_path / "model_components"
    shutil.copytree(model_dir, target)
    return target


@pytest.fixture(scope="session")
def app(model_dir):
    """The Flask app on the project's artifacts."""
    from flaskapp import create_app

    return create_app({"model_dir": model_dir})


@pytest.fixture()
def client(app):
    """Flask's test client (for fast, in-process checks)."""
    return app.test_client()


@pytest.fixture()
def refused_url():
    """The URL of a port that refuses connections throughout the test: bound here and never
    listened on, so no other server can take it meanwhile."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"


@pytest.fixture(scope="session")
def server(model_dir, tmp_path_factory):
    """A real gunicorn server (2 workers) on a port of its own, shared by the session."""
    log = tmp_path_factory.mktemp("server") / "gunicorn.log"
    live = LiveServer(env={"MODEL_DIR": str(model_dir)}, workers=2, log_path=log).start()
    yield live
    live.stop()


@pytest.fixture()
def start_server(model_dir, tmp_path):
    """A factory of private gunicorn servers (env overrides the defaults); each one is stopped
    after the test, passed or failed, even if it never became ready."""
    started: list[LiveServer] = []

    def start(env: dict[str, str] | None = None, workers: int = 1, wait: bool = True) -> LiveServer:
        live = LiveServer(env={"MODEL_DIR": str(model_dir), **(env or {})}, workers=workers,
                          log_path=tmp_path / f"gunicorn-{len(started)}.log")
        started.append(live)
        return live.start(wait=wait)

    yield start
    for live in started:
        live.stop()


# The 10,000 test rows as files, for the file command and the Spark job (tests/lib/batch/test_score.py,
# tests/lib/spark/test_spark.py), and what the API answers for them.

TABLE_FORMATS = ("csv", "ndjson", "parquet")


def csv_cell(value: object) -> str:
    """A JSON value as a CSV cell that the API's CSV reader turns back into the same value's text:
    floats in their shortest exact form, missing as an empty cell."""
    return "" if value is None else repr(value) if isinstance(value, float) else str(value)


def write_rows(rows: list[dict], path: Path) -> Path:
    """``rows`` (JSON objects) as CSV, NDJSON or Parquet, by ``path``'s ending."""
    if path.suffix == ".csv":
        names = list(dict.fromkeys(name for row in rows for name in row))
        with path.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(names)
            writer.writerows([csv_cell(row.get(name)) for name in names] for row in rows)
    elif path.suffix == ".ndjson":
        path.write_bytes(b"".join(orjson.dumps(row) + b"\n" for row in rows))
    else:
        pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=4096)
    return path


@pytest.fixture(scope="session")
def id_rows(test_rows) -> list[dict]:
    """The test rows, each with an ``id`` (``t0``, ``t1``, ...) first."""
    return [{"id": f"t{i}", **row} for i, row in enumerate(test_rows)]


@pytest.fixture(scope="session")
def table_files(id_rows, tmp_path_factory) -> dict[str, Path]:
    """The test rows with ids as CSV, NDJSON and Parquet files (row groups of 4,096 rows)."""
    folder = tmp_path_factory.mktemp("tables")
    return {fmt: write_rows(id_rows, folder / f"test.{fmt}") for fmt in TABLE_FORMATS}


def api_answer(app, rows: list[dict] | bytes, as_csv: bool = False) -> dict:
    """The API's answer for ``rows`` (as JSON, or as a CSV body; bytes: a JSON body as it is), in
    columns, invalid rows inline."""
    if isinstance(rows, bytes):
        body, content_type = rows, "application/json"
    elif as_csv:
        buffer = io.StringIO()
        names = list(dict.fromkeys(name for row in rows for name in row))
        csv.writer(buffer).writerows([names, *([csv_cell(row.get(n)) for n in names] for row in rows)])
        body, content_type = buffer.getvalue().encode(), "text/csv"
    else:
        body, content_type = json.dumps(rows).encode(), "application/json"
    answer = app.test_client().post("/predict?format=columns&errors=inline", data=body, content_type=content_type)
    assert answer.status_code == 200, answer.get_data(as_text=True)[:500]
    return answer.get_json()


def api_cell_errors(answer: dict) -> list[tuple[int, str, str, str]]:
    """The invalid cells of an API answer as ``(index, id, column, message)``, ids as text."""
    return [(row["index"], "" if row["id"] is None else str(row["id"]), cell["column"], cell["message"])
            for row in answer.get("errors", []) for cell in row["errors"]]


@pytest.fixture(scope="session")
def api_scores(app, id_rows) -> dict:
    """The API's answer for the test rows with ids (JSON rows), in columns."""
    return api_answer(app, id_rows)


# Cells in the forms the sources send, valid and invalid, each as text (so that CSV, NDJSON and
# Parquet carry the very same cells); row -> {column: cell}.
MESSY_CELLS = {
    0: {"x12": "($5,032.58)", "x5": " SUNDAY ", "x81": "Sept"},
    1: {"x12": " $-1,204.10 ", "x31": "America", "x44": " 1.5 "},
    2: {"x12": "abc", "x5": "funday"},  # two invalid cells in one row
    3: {"x31": "NaN", "x53": "N/A", "x81": "dec", "x44": "2e-3"},
    4: {"x31": "mars"},
    5: {"x56": "--1", "x91": "inf"},
    6: {"x12": "", "x5": "", "x82": "nobody reads x82"},
    7: {"x81": "Smarch", "x44": "1,5"},
}


@pytest.fixture(scope="session")
def messy_rows(id_rows) -> list[dict]:
    """40 test rows, every cell as text (floats in their shortest exact form), with MESSY_CELLS."""
    rows = [{name: None if value is None else csv_cell(value) for name, value in row.items()} for row in id_rows[:40]]
    for index, cells in MESSY_CELLS.items():
        rows[index].update(cells)
    return rows
