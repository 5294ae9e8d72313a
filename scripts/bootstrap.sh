#!/usr/bin/env bash
# Create .venv, install the pinned requirements when they changed, and build the model
# artifacts (generated data + training) when they are absent.
# Usage: scripts/bootstrap.sh REQUIREMENTS_FILE
set -euo pipefail
cd "$(dirname "$0")/.."
requirements=${1:-requirements-train.txt}
python=${PYTHON:-python3}

if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv with $($python --version)"
  "$python" -m venv .venv
fi
stamp=.venv/.installed-$(cat requirements*.txt | sha256sum | cut -c1-16)-$(basename "$requirements")
if [ ! -f "$stamp" ]; then
  echo "[setup] installing $requirements"
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -r "$requirements"
  touch "$stamp"
fi

model_dir=${MODEL_DIR:-lib/model_components}
if [ ! -f "$model_dir/manifest.json" ]; then
  if [ ! -f lib/data/train.csv ]; then
    echo "[setup] generating the stand-in dataset (lib/data/)"
    .venv/bin/python -m lib.synth
  fi
  echo "[setup] training the model ($model_dir/)"
  .venv/bin/python -m lib.train --out "$model_dir"
fi
