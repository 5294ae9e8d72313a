# The batch-prediction API image. Builds with the classic builder or BuildKit, Compose v1 or v2.
#
#     docker build -t batch-predict-api .
#
# The default target trains the model inside the build (the generator's figures are in
# lib/figures/) and bakes a model store holding that one version in (lib/model_store/, the
# default MODEL_STORE). Target `runtime` has no store; mount one (README "Models"):
#     docker build --target runtime -t batch-predict-api:runtime .
#     docker run -v "$PWD/lib/model_store:/app/lib/model_store:ro" -p 1313:1313 batch-predict-api:runtime
# The app verifies every file's sha256 against manifest.json before it serves a version.
#
# Offline (no registry, no PyPI): wheels in wheels/ and a local base image, both made by
# deploy/offline_images.sh:
#     docker build --build-arg PYTHON_IMAGE=batch-predict/python:3.11-debian \
#         --build-arg PIP_NO_INDEX=1 -t batch-predict-api .

ARG PYTHON_IMAGE=python:3.11-slim

# --- builder: the runtime virtualenv (requirements.txt only) and the app's code ------------
FROM ${PYTHON_IMAGE} AS builder
# PIP_NO_INDEX=1 installs from wheels/ alone; by default pip also reads the index.
ARG PIP_NO_INDEX=0
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_FIND_LINKS=/wheels \
    PIP_NO_INDEX=${PIP_NO_INDEX}
# Every pinned requirement ships a manylinux wheel for this Python; should one ever need a
# compiler, install it here (apt-get install build-essential): this stage is thrown away.
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /app
COPY wheels/ /wheels/
COPY requirements.txt requirements-train.txt ./
# The packages' own test suites and pip itself are never run in the container; nor are pyarrow's
# Flight RPC and S3 filesystem (about 50 MB, loaded only on demand) or its C++ headers: the import
# check proves that what the service and the file command (lib.batch) use still loads.
RUN pip install -r requirements.txt \
    && find /opt/venv/lib -depth -type d -name tests -path '*/site-packages/*/tests' -exec rm -rf {} + \
    && arrow=$(python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/pyarrow \
    && rm -rf "$arrow"/include "$arrow"/*flight* "$arrow"/libarrow_s3.so* "$arrow"/_s3fs.* \
    && python -c "import pyarrow.compute, pyarrow.csv, pyarrow.dataset, pyarrow.fs, pyarrow.ipc, pyarrow.parquet" \
    && pip uninstall --yes --quiet pip setuptools
# The entry points, the web layer and the library; .dockerignore keeps local data and
# artifacts out of lib/.
COPY *.py ./
COPY service/ service/
COPY lib/ lib/
# Bytecode compiled now (pip did the venv's), because the runtime filesystem is read-only.
RUN python -m compileall -q /app

# --- artifacts: generate the stand-in data and train, exactly as run_api.sh does -----------
# Training's own packages (plots for the report) go into this throwaway stage only, with the
# same pins for everything the pickles depend on.
FROM builder AS artifacts
RUN python -m ensurepip --upgrade >/dev/null && python -m pip install -r requirements-train.txt
RUN python -m lib.training.synth && python -m lib.training.train

# --- runtime: no compilers, no pip, no training or dev requirements, not root --------------
FROM ${PYTHON_IMAGE} AS runtime
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PORT=1313 \
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

# --- default target: runtime plus the model store built above --------------------------------
FROM runtime AS app
# Owned by root: readable, not writable, by the app user. A volume mounted here (compose) is
# seeded with it the first time.
COPY --from=artifacts /app/lib/model_store /app/lib/model_store
