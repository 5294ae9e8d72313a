#!/usr/bin/env bash
# Serve the model with gunicorn on 0.0.0.0:${PORT:-1313} (settings: README "Settings").
set -euo pipefail
cd "$(dirname "$0")"
scripts/bootstrap.sh requirements-train.txt
exec .venv/bin/gunicorn -c gunicorn.conf.py
