#!/usr/bin/env bash
# Set up the environment (as run_api.sh does, plus test tools) and run the whole suite.
# Extra arguments go to pytest, e.g. ./run_tests.sh -k normalize
set -euo pipefail
cd "$(dirname "$0")"
scripts/bootstrap.sh requirements-dev.txt
exec .venv/bin/python -m pytest "$@"
