"""The benchmark's floor: the least a Flask app under our gunicorn settings can do per request.

POST /predict decodes the body with ``orjson.loads`` and answers, without scoring, one result
per row of the same shape and about the same size as the real service's (the selected
features of the trained model, a 17-digit probability). The benchmark serves it with the
project's gunicorn.conf.py, so workers, preload and timeouts are the real server's:

    gunicorn -c gunicorn.conf.py 'bench.floor_app:create_app()'
"""

from __future__ import annotations

import orjson
from flask import Flask, Response, request

from bench.client import PREDICT_PATH, PREDICTED_CLASS, PROBABILITY, SELECTED_FEATURES
from lib.core.artifacts import read_manifest
from lib.store.versions import ModelStore
from service.ops.settings import Settings, settings_or_exit

#: A probability with as many digits as a real one usually has, so answers weigh the same.
PROBABILITY_VALUE = 0.12345678901234568


def create_app(test_config: dict | None = None, settings: Settings | None = None) -> Flask:
    """The floor app; it reads only the manifest (for the selected features), never a pickle.
    Its settings come as the real app's do (flaskapp.create_app)."""
    settings = settings_or_exit(settings, test_config)
    directory = settings.model_dir or ModelStore(settings.model_store).active()[1]
    features = sorted(read_manifest(directory)["consumed_columns"])
    answer = {PROBABILITY: PROBABILITY_VALUE, SELECTED_FEATURES: features, PREDICTED_CLASS: 0}

    app = Flask(__name__)
    app.config.update(MAX_CONTENT_LENGTH=settings.max_body_bytes)

    @app.post(PREDICT_PATH)
    def predict() -> Response:
        rows = orjson.loads(request.get_data(cache=False))
        count = len(rows) if isinstance(rows, list) else 1
        return Response(orjson.dumps([answer] * count), mimetype="application/json")

    @app.get("/ready")
    @app.get("/health")
    def ready() -> Response:
        return Response(b'{"status":"ready"}', mimetype="application/json")

    return app
