"""The web layer: the ``POST /predict`` endpoint, the predictor, the wire formats (``readers/``),
errors and their status codes, what every request goes through, metrics, the access log,
settings, the OpenAPI document and docs page, and the gunicorn pieces (one-write responses,
drain before stop). It imports ``lib``, never the reverse, and never the root's modules.
"""
