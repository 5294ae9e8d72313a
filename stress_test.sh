#!/usr/bin/env bash
# Single-row loops and random batches of lib/data/test.json against a running server, every
# answer checked, then a summary; exits non-zero on any failed request. Options: --help.
# Example: ./stress_test.sh --url http://127.0.0.1:1313 --requests 10000 --batches 200 --concurrency 4
set -euo pipefail
root=$(cd "$(dirname "$0")" && pwd)
python=$root/.venv/bin/python
[ -x "$python" ] || python=python3  # the tool needs only the standard library
PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}" exec "$python" -m bench.stress "$@"
