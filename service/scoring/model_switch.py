"""Which model version a worker serves, and its switch to the version the store's pointer names.

A worker holds one ``ServedModel``: a version's verified stages compiled into a Predictor. A
request reads ``ModelSwitch.current`` once, at its start, and uses that object to its end, so it
finishes on the model it started with whatever happens meanwhile, and its ``X-Model-Version``
names that model.

A daemon thread of each worker reads the store's pointer (lib/store/versions.py) every
MODEL_POLL_SECONDS. When it names another version, the thread loads that version beside the
current one and verifies it as at start (the sha256 of every file, the library versions, the
golden row through the compiled plan), then swaps it in with one assignment: the next request
gets it. A version that fails keeps the worker on its model: the log says why, the
``model_switch_failures_total`` counter counts it and ``/model`` shows it, until the pointer
changes again (``python -m lib.store use`` rewrites it, which also retries a failed version).

The thread starts in each gunicorn worker after the fork (``post_worker_init`` in
gunicorn.conf.py), never in the master that preloads the app: a forked process keeps only the
thread that forked. Its first read happens before the worker takes a request, so a worker
started after a switch (a replacement for a dead one, or after SIGHUP) never serves the version
the master preloaded at start.

With MODEL_DIR, the worker serves that directory and never switches.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from lib.core.artifacts import Stages, load_artifacts, read_manifest
from lib.core.errors import ArtifactError
from lib.core.scorer import check_golden
from lib.store.versions import ModelStore, load_version, parse_pointer
from service.ops.metrics import Metrics
from service.ops.settings import Settings
from service.scoring.predictor import Predictor

#: The key of the app's ``extensions`` that holds its ModelSwitch (gunicorn.conf.py reads it).
EXTENSION = "model_switch"

log = logging.getLogger("predict")


@dataclass(frozen=True)
class ServedModel:
    """One loaded, verified model version and the predictor compiled from it."""

    version: str
    directory: Path
    manifest: dict
    predictor: Predictor
    loaded_at: str


@dataclass(frozen=True)
class FailedSwitch:
    """A version the pointer names that this worker could not load."""

    version: str | None
    error: str
    at: str

    def as_dict(self) -> dict:
        """The JSON form ``/model`` shows."""
        return {"version": self.version, "error": self.error, "at": self.at}


def _unreadable(exc: OSError) -> str:
    """What to say of a pointer that cannot be read: the error's kind, never the path."""
    return f"the pointer cannot be read ({type(exc).__name__}: {exc.strerror})"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


class ModelSwitch:
    """The model this worker serves (``current``) and the watch on the store's pointer."""

    def __init__(self, store: ModelStore | None, first: ServedModel, pointer: bytes | None,
                 build_predictor: Callable[[Stages], Predictor], metrics: Metrics, settings: Settings):
        """Prefer ``open``. ``pointer``: the pointer's bytes when ``first`` was chosen."""
        self.store = store
        self.current = first
        self.failed: FailedSwitch | None = None
        self.poll_seconds = settings.model_poll_seconds
        self._seen = pointer
        self._build_predictor = build_predictor
        self._allow_version_mismatch = settings.allow_version_mismatch
        self._metrics = metrics
        self._stop = threading.Event()
        metrics.set_model(first.version, first.manifest["created_at"], first.manifest["consumed_columns"])

    @classmethod
    def open(cls, settings: Settings, build_predictor: Callable[[Stages], Predictor], metrics: Metrics) -> ModelSwitch:
        """Load what to serve at start: MODEL_DIR's model if set, else the store's active version.
        ArtifactError (naming the version and the problem) if it cannot be served."""
        if settings.model_dir is not None:
            stages = load_artifacts(settings.model_dir, settings.allow_version_mismatch)
            first = _serve(stages, Path(settings.model_dir), build_predictor)
            return cls(None, first, None, build_predictor, metrics, settings)
        store = ModelStore(settings.model_store)
        try:
            raw = store.read_pointer()
        except OSError as exc:
            raise ArtifactError(_unreadable(exc)) from None
        if raw is None:
            store.active()  # raises the message that says how to make a version active
        version = parse_pointer(raw).version
        directory = store.directory(version)
        stages = load_version(directory, version, settings.allow_version_mismatch)
        return cls(store, _serve(stages, directory, build_predictor), raw, build_predictor, metrics, settings)

    @property
    def active_version(self) -> str | None:
        """The version the store's pointer names now (this worker's, with MODEL_DIR); None if
        the pointer cannot be read."""
        if self.store is None:
            return self.current.version
        try:
            pointer = self.store.pointer()
        except (ArtifactError, OSError):
            return None
        return None if pointer is None else pointer.version

    def catalog(self) -> list[dict]:
        """The versions this server can see (lib.store.versions's ``catalog``), ``serving`` marking this
        worker's."""
        if self.store is None:
            served = self.current
            entries = [{"version": served.version, "created_at": served.manifest["created_at"], "active": True}]
        else:
            entries = self.store.catalog()
        return [{**entry, "serving": entry["version"] == self.current.version} for entry in entries]

    def manifest_of(self, version: str) -> dict:
        """The manifest of a version this server can see (ArtifactError if there is none)."""
        if version == self.current.version:
            return self.current.manifest
        if self.store is None:
            raise ArtifactError(f"no version {version[:60]} here: this server serves one model directory")
        return read_manifest(self.store.directory(version))

    def directory_of(self, version: str) -> Path:
        """The directory of a version this server can see (ArtifactError if there is none)."""
        if version == self.current.version:
            return self.current.directory
        if self.store is None:
            raise ArtifactError(f"no version {version[:60]} here: this server serves one model directory")
        return self.store.directory(version)

    def check(self) -> bool:
        """Read the pointer once; if it changed and names another version, load that version
        and swap it in. Returns whether this worker switched."""
        if self.store is None:
            return False
        try:
            raw = self.store.read_pointer()
        except OSError as exc:  # kept as a marker, so that the same trouble is reported once
            raw = _unreadable(exc)
        if raw == self._seen:
            return False
        self._seen = raw
        version = None
        try:
            if raw is None:
                raise ArtifactError("the model store has no active pointer any more")
            if isinstance(raw, str):
                raise ArtifactError(raw)
            version = parse_pointer(raw).version
            if version == self.current.version:
                self.failed = None
                return False
            started = time.perf_counter()
            model = self._load(version)
        except ArtifactError as exc:
            self._fail(version, str(exc))
            return False
        except Exception as exc:  # anything else must not stop the watch: it is a failed attempt too
            log.exception("unexpected error loading model %s", version)
            self._fail(version, f"unexpected error ({type(exc).__name__}); the server log has the details")
            return False
        old, self.current = self.current, model
        self.failed = None
        self._metrics.set_model(model.version, model.manifest["created_at"], model.manifest["consumed_columns"])
        self._metrics.count_switch(model.version)
        log.info("switched from model %s to %s (loaded and verified in %.3f s)", old.version, model.version,
                 time.perf_counter() - started)
        return True

    def start(self) -> None:
        """Follow the pointer in this process: one check now, then one every MODEL_POLL_SECONDS
        in a daemon thread. Call it once per worker, after the fork. No-op with MODEL_DIR or a
        poll interval of 0."""
        if self.store is None or self.poll_seconds <= 0:
            return
        self.check()
        threading.Thread(target=self._watch, name="model-switch", daemon=True).start()

    def stop(self) -> None:
        """End the watch thread (it finishes the check it may be in)."""
        self._stop.set()

    def _watch(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            try:
                self.check()
            except Exception:  # the watch goes on: the next read may succeed
                log.exception("reading the model store's pointer failed")

    def _load(self, version: str) -> ServedModel:
        directory = self.store.directory(version)
        stages = load_version(directory, version, self._allow_version_mismatch)
        return _serve(stages, directory, self._build_predictor)

    def _fail(self, version: str | None, error: str) -> None:
        self.failed = FailedSwitch(version, error, _now())
        self._metrics.count_switch(version or "", failed=True)
        log.error("cannot switch to model %s: %s; still serving %s", version or "(unreadable pointer)", error,
                  self.current.version)


def _serve(stages: Stages, directory: Path, build_predictor: Callable[[Stages], Predictor]) -> ServedModel:
    """Compile ``stages`` and check the golden row; ArtifactError if it drifted."""
    predictor = build_predictor(stages)
    try:
        check_golden(predictor.plan, stages.manifest)
    except ArtifactError as exc:
        raise ArtifactError(f"version {stages.version}: {exc}") from None
    return ServedModel(stages.version, directory, stages.manifest, predictor, _now())
