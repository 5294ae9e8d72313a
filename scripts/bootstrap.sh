#!/usr/bin/env bash
# Create .venv, install the pinned requirements when they changed, and build the model
# (generated data + training) when the model store has no active version.
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

# MODEL_DIR, when set, is served instead of the store (README "Settings"): train into it if empty.
if [ -n "${MODEL_DIR:-}" ]; then
  built=$MODEL_DIR/manifest.json train=(--out "$MODEL_DIR")
else
  store=${MODEL_STORE:-lib/model_store}
  built=$store/active.json train=(--store "$store")
fi
if [ ! -f "$built" ]; then
  if [ ! -f lib/data/train.csv ]; then
    echo "[setup] generating the stand-in dataset (lib/data/)"
    .venv/bin/python -m lib.training.synth
  fi
  # Into a store, the first version trained becomes the active one.
  echo "[setup] training the model (${train[*]})"
  .venv/bin/python -m lib.training.train "${train[@]}"
fi
