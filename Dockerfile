# syntax=docker/dockerfile:1.7
#
# The batch-prediction API image. Two ways to get the model artifacts into it:
#
# 1. Built into the image (default target). The generator's figures come from the sibling
#    directory shared/ through a BuildKit named context:
#        docker build --build-context shared=../shared -t batch-predict-api .
#    (docker compose passes it with `additional_contexts`).
# 2. Mounted at run time (target `runtime`, no shared/ needed to build):
#        docker build --target runtime -t batch-predict-api:runtime .
#        docker run -v "$PWD/lib/model_components:/models:ro" -e MODEL_DIR=/models \
#            -p 1313:1313 batch-predict-api:runtime
#    The app verifies every file's sha256 against manifest.json before it starts.

ARG PYTHON_IMAGE=python:3.11-slim

# --- builder: the virtualenv with the pinned requirements and the app's code ---------------
FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
# Every pinned requirement ships a manylinux wheel for this Python; should one ever need a
# compiler, install it here (apt-get install build-essential): this stage is thrown away.
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /app
COPY requirements.txt .
RUN pip install -r requirements.txt
# .dockerignore keeps out tests, benchmarks, deploy files, caches and any local artifacts.
COPY . .
# Bytecode compiled now (pip did the venv's), because the runtime filesystem is read-only.
RUN python -m compileall -q /app

# --- artifacts: generate the stand-in data and train, exactly as run_api.sh does -----------
FROM builder AS artifacts
# `shared` is a named build context (--build-context / additional_contexts), not a stage.
# hadolint ignore=DL3022
COPY --from=shared data /shared/data
RUN python -m lib.synth --figures /shared/data && python -m lib.train

# --- runtime: no compilers, no pip cache, no dev requirements, not root ----------------------
# XDG_RUNTIME_DIR: gunicorn's control socket goes to /tmp (writable: tmpfs in compose, emptyDir
# in Kubernetes) instead of $HOME, which does not exist and would be read-only anyway.
FROM ${PYTHON_IMAGE} AS runtime
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PORT=1313 \
    XDG_RUNTIME_DIR=/tmp \
    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1
RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin app
COPY --from=builder /opt/venv /opt/venv
COPY --from=builder /app /app
WORKDIR /app
# Numeric so that Kubernetes' runAsNonRoot can check it.
USER 10001:10001
EXPOSE 1313
# Liveness only (the process answers); readiness (/ready: artifacts verified, golden row
# scored) is what compose's and Kubernetes' own checks use.
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('PORT', '1313'), timeout=4)"]
# Same server as run_api.sh: gunicorn.conf.py binds 0.0.0.0:$PORT, one sync worker per CPU
# (WEB_CONCURRENCY overrides), app preloaded.
CMD ["gunicorn", "-c", "gunicorn.conf.py", "flaskapp:create_app()"]

# --- default target: runtime plus the artifacts built above ---------------------------------
FROM runtime AS app
# Owned by root: readable, not writable, by the app user.
COPY --from=artifacts /app/lib/model_components /app/lib/model_components
