"""Every setting of the service, read from environment variables in this one place.

gunicorn.conf.py and the Flask factory both read their values from here, so the proxy-facing
limits (body size, timeouts) cannot drift apart. Tests pass overrides to the factory instead.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, fields, replace
from pathlib import Path

from lib.codecs.limits import DecodeLimits

PROJECT_DIR = Path(__file__).resolve().parents[1]
MB = 1024 * 1024


def _cpu_count() -> int:
    # Honour CPU affinity / cgroup-limited containers where the OS offers it.
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not on Linux
        return max(1, os.cpu_count() or 1)


#: Settings without a default value whose variable, when set, is a path.
_OPTIONAL_PATHS = frozenset({"model_dir", "api_keys_file"})
#: The paths that need a key when API keys are on (API_KEYS_PATHS): scoring, the model's
#: coefficients and versions, and the counters. Probes (/health, /ready) and docs stay open.
DEFAULT_KEY_PATHS = "/predict,/model,/models,/metrics"


def _flag(value: str) -> bool:
    return value.strip().lower() in {"1", "true", "yes", "on"}


@dataclass(frozen=True)
class Settings:
    """Service settings; the environment variable of each field is its upper-case name."""

    port: int = 1313
    bind: str = ""
    web_concurrency: int = _cpu_count()
    gunicorn_timeout: int = 300
    graceful_timeout: int = 30
    # Seconds between SIGTERM and the graceful stop, with /ready answering 503 (drain.py); 0 off.
    drain_seconds: int = 0
    max_rows: int = 100_000
    max_body_mb: int = 400
    # What a body's consumed columns may decode to (decompression, dictionaries, repeated
    # strings), checked before it is materialised (lib/codecs/limits.py).
    max_decoded_mb: int = 96
    # The model store (lib/store.py): each worker serves its active version and follows its pointer.
    model_store: Path = PROJECT_DIR / "lib" / "model_store"
    # A plain artifact directory (`python -m lib.train --out DIR`) served instead of the store, and
    # never switched: when set, it wins over MODEL_STORE.
    model_dir: Path | None = None
    # Seconds between two reads of the store's pointer by each worker; 0: read only at start.
    model_poll_seconds: float = 2.0
    allow_version_mismatch: bool = False
    max_listed_errors: int = 100
    # Refuse (422) every /predict body whose column report is not empty (absent or nearly
    # matched consumed columns, values far outside training), as ?columns=strict does.
    require_columns: bool = False
    # NDJSON streams (service/streaming.py): body limit in MB (0: none), seconds for a whole
    # stream, seconds of waiting on the client in either direction, rows per chunk, and MB of
    # answers held for a client that sends before it reads (service/answer_hold.py: an answer
    # line is about 160 bytes, 2.7 kB with explain=all; 500,000 rows' answers are 76 MB).
    stream_max_body_mb: int = 0
    stream_timeout: int = 3600
    stream_idle_seconds: int = 60
    stream_chunk_rows: int = 10_000
    stream_hold_mb: int = 256
    # API keys (service/keys.py): off unless a key file is named; which paths need one (each
    # path and everything under it, comma-separated).
    api_keys_file: Path | None = None
    api_keys_paths: str = DEFAULT_KEY_PATHS
    # Slow clients (service/buffered_worker.py): seconds a connection has to deliver its request
    # (head and body, or CLIENT_BUFFER_MB of a larger body) before a 408, while no worker waits on
    # it; seconds a worker then waits for each further piece of a larger body; MB of a body
    # received before a worker takes over; connections each worker receives at once.
    client_read_timeout: int = 30
    client_idle_seconds: int = 5
    client_buffer_mb: int = 1
    client_max_pending: int = 100
    log_level: str = "info"
    # Off only to measure what observability costs (bench/overhead.py).
    metrics_enabled: bool = True
    access_log: bool = True

    @property
    def max_body_bytes(self) -> int:
        """Largest accepted request body in bytes."""
        return self.max_body_mb * MB

    @property
    def decode_limits(self) -> DecodeLimits:
        """The limits every codec checks while it decodes a body: MAX_ROWS and MAX_DECODED_MB."""
        return DecodeLimits(self.max_rows, self.max_decoded_mb * MB)

    @property
    def stream_hold_bytes(self) -> int:
        """The most answer bytes a stream holds for a client that has not read them."""
        return self.stream_hold_mb * MB

    @property
    def client_buffer_bytes(self) -> int:
        """Body bytes the worker receives itself before a request goes to its synchronous handling."""
        return self.client_buffer_mb * MB

    @property
    def deadline_seconds(self) -> float:
        """How long the app works on one /predict request before answering 504: a fifth less
        than GUNICORN_TIMEOUT, so that it answers before gunicorn kills the worker."""
        return self.gunicorn_timeout * 0.8

    @property
    def stream_idle_limit(self) -> float:
        """How long a stream waits on its client: STREAM_IDLE_SECONDS, but at most the request
        deadline, since gunicorn kills a worker that is silent (waiting) for GUNICORN_TIMEOUT."""
        return min(float(self.stream_idle_seconds), self.deadline_seconds)

    @property
    def key_paths(self) -> tuple[str, ...]:
        """API_KEYS_PATHS as a tuple of paths without trailing slashes."""
        return tuple(path.strip().rstrip("/") or "/" for path in self.api_keys_paths.split(",") if path.strip())

    @property
    def bind_address(self) -> str:
        """The address gunicorn listens on: BIND if set, else all interfaces on PORT."""
        return self.bind or f"0.0.0.0:{self.port}"

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Settings:
        """Settings from environment variables; unset ones keep their defaults."""
        environ = os.environ if environ is None else environ
        values = {}
        for field in fields(cls):
            raw = environ.get(field.name.upper())
            if raw is None or raw == "":
                continue
            default = getattr(cls, field.name)
            try:
                if isinstance(default, bool):
                    values[field.name] = _flag(raw)
                elif isinstance(default, int | float):
                    values[field.name] = type(default)(raw)
                elif isinstance(default, Path) or field.name in _OPTIONAL_PATHS:
                    values[field.name] = Path(raw)
                else:
                    values[field.name] = raw
            except ValueError:
                raise SystemExit(
                    f"environment variable {field.name.upper()}={raw!r} is not a valid {type(default).__name__}"
                ) from None
        settings = cls(**values)
        settings.validate()
        return settings

    def with_overrides(self, overrides: dict | None) -> Settings:
        """A copy with some fields replaced (the factory's ``test_config``)."""
        settings = replace(self, **(overrides or {}))
        settings.validate()
        return settings

    def validate(self) -> None:
        """Refuse nonsensical values with a message naming the variable."""
        for name in ("web_concurrency", "gunicorn_timeout", "max_rows", "max_body_mb", "max_decoded_mb",
                     "max_listed_errors",
                     "stream_timeout", "stream_idle_seconds", "stream_chunk_rows", "stream_hold_mb",
                     "client_read_timeout",
                     "client_idle_seconds", "client_buffer_mb", "client_max_pending"):
            if getattr(self, name) < 1:
                raise SystemExit(f"{name.upper()} must be at least 1, got {getattr(self, name)}")
        if self.stream_max_body_mb < 0:
            raise SystemExit(f"STREAM_MAX_BODY_MB must be 0 (no limit) or more, got {self.stream_max_body_mb}")
        bad_paths = [path for path in self.key_paths if not path.startswith("/")]
        if bad_paths:
            raise SystemExit(f"API_KEYS_PATHS must be paths starting with '/', got {', '.join(bad_paths)}")
        for name in ("drain_seconds", "model_poll_seconds"):
            if not 0 <= getattr(self, name) < math.inf:
                raise SystemExit(f"{name.upper()} must be a number, 0 or more, got {getattr(self, name)}")
