"""Every setting of the service, read from environment variables in this one place.

gunicorn.conf.py reads them once at start and hands the one ``Settings`` object to the worker
class and, through ``from_env``'s cache, to the app factory it loads, so the proxy-facing limits
(body size, timeouts) cannot drift apart. Tests pass overrides to the factory instead.

pydantic types and checks every value; a bad one is never turned into a default or a false flag.
All the problems of an environment are reported at once, in one ``SettingsError`` naming each
variable, the value received (cut when long: it may be a secret) and what it accepts.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator

from lib.codecs.limits import DecodeLimits

PROJECT_DIR = Path(__file__).resolve().parents[2]
MB = 1024 * 1024
#: The paths that need a key when API keys are on (API_KEYS_PATHS): scoring, the model's
#: coefficients and versions, and the counters. Probes (/health, /ready) and docs stay open.
DEFAULT_KEY_PATHS = "/predict,/model,/models,/metrics"
#: The words a flag accepts (any case); anything else is an error, not "false".
FLAG_WORDS = {"1": True, "true": True, "yes": True, "on": True, "0": False, "false": False, "no": False, "off": False}
FLAG_EXPECTED = "expected one of 1/0, true/false, yes/no, on/off"
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
#: Longest value quoted whole in an error message; longer ones are cut, since a misplaced key or
#: password should not land in a log.
SHOWN_VALUE_CHARS = 24
#: The exit status of an entry point refused by its settings (a usage error, like argparse's).
EXIT_BAD_SETTINGS = 2


def _cpu_count() -> int:
    # Honour CPU affinity / cgroup-limited containers where the OS offers it.
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not on Linux
        return max(1, os.cpu_count() or 1)


def _flag(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in FLAG_WORDS:
        return FLAG_WORDS[value.strip().lower()]
    raise ValueError(FLAG_EXPECTED)


def _log_level(value: Any) -> str:
    if isinstance(value, str) and value.strip().lower() in LOG_LEVELS:
        return value.strip().lower()
    raise ValueError(f"expected one of {', '.join(LOG_LEVELS)}")


Flag = Annotated[bool, BeforeValidator(_flag)]
LogLevel = Annotated[str, BeforeValidator(_log_level)]
AtLeastOne = Annotated[int, Field(ge=1)]


class SettingsError(ValueError):
    """Settings refused: one line per bad variable, all of them at once."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        self.summary = f"{len(problems)} invalid setting{'s' * (len(problems) > 1)}"
        super().__init__(f"{self.summary}: " + "; ".join(problems))


class Settings(BaseModel):
    """Service settings; the environment variable of each field is its upper-case name.

    ``Settings(**values)`` is the defaults with ``values`` (tests); ``Settings.from_env()`` reads
    the environment."""

    model_config = ConfigDict(frozen=True, extra="forbid", protected_namespaces=())

    port: int = Field(1313, ge=1, le=65535, description="port to listen on, all interfaces")
    bind: str = Field("", description="full bind address instead of PORT, e.g. 127.0.0.1:8000")
    web_concurrency: AtLeastOne = Field(_cpu_count(), description="gunicorn workers: one per CPU available to the "
                                        "process, since scoring is CPU-bound")
    gunicorn_timeout: AtLeastOne = Field(300, description="seconds a worker may be silent before gunicorn kills "
                                         "it; the app answers 504 at four fifths of it")
    graceful_timeout: int = Field(30, ge=0, description="seconds in-flight requests get to finish after SIGTERM")
    drain_seconds: int = Field(0, ge=0, description="seconds between SIGTERM and the graceful stop, with /ready "
                               "answering 503 (service/worker/drain.py); 0: off")
    max_rows: AtLeastOne = Field(100_000, description="most rows per request")
    max_body_mb: AtLeastOne = Field(400, description="largest request body, in MB")
    max_decoded_mb: AtLeastOne = Field(96, description="what a body's consumed columns may decode to (decompression, "
                                       "dictionaries, repeated strings), checked before it is materialised "
                                       "(lib/codecs/limits.py)")
    model_store: Path = Field(PROJECT_DIR / "lib" / "model_store", description="the model store "
                              "(lib/store/versions.py): each worker serves its active version and follows its pointer")
    model_dir: Path | None = Field(None, description="a plain artifact directory (python -m lib.training.train "
                                   "--out DIR) served instead of the store, never switched: when set, it wins over "
                                   "MODEL_STORE")
    model_poll_seconds: float = Field(2.0, ge=0, allow_inf_nan=False, description="seconds between two reads of the "
                                      "store's pointer by each worker; 0: read only at start")
    allow_version_mismatch: Flag = Field(False, description="load artifacts pickled with other library versions")
    max_listed_errors: AtLeastOne = Field(100, description="most invalid cells listed in a 422 answer")
    require_columns: Flag = Field(False, description="refuse (422) every /predict body whose column report is not "
                                  "empty (absent or nearly matched consumed columns, values far outside training), "
                                  "as ?columns=strict does")
    # NDJSON streams (service/http/streaming.py). An answer line is about 160 bytes, 2.7 kB with
    # explain=all: 500,000 rows' answers are 76 MB, hence STREAM_HOLD_MB's default.
    stream_max_body_mb: int = Field(0, ge=0, description="body limit of an NDJSON stream in MB; 0: none")
    stream_timeout: AtLeastOne = Field(3600, description="seconds for a whole NDJSON stream")
    stream_idle_seconds: AtLeastOne = Field(60, description="seconds an NDJSON stream waits on its client in either "
                                            "direction")
    stream_chunk_rows: AtLeastOne = Field(10_000, description="rows per chunk of an NDJSON stream")
    stream_hold_mb: AtLeastOne = Field(256, description="MB of answers held for a client that sends before it reads "
                                       "(service/http/answer_hold.py)")
    api_keys_file: Path | None = Field(None, description="the key file (service/ops/keys.py): API keys are off unless "
                                       "it is named")
    api_keys_paths: str = Field(DEFAULT_KEY_PATHS, description="the paths that need a key, comma-separated, each "
                                "with everything below it")
    # Slow clients (service/worker/buffered_worker.py): no worker waits on a connection until its request is in.
    client_read_timeout: AtLeastOne = Field(30, description="seconds a connection has to deliver its request (head "
                                            "and body, or CLIENT_BUFFER_MB of a larger body) before a 408")
    client_idle_seconds: AtLeastOne = Field(5, description="seconds a worker then waits for each further piece of "
                                            "a larger body")
    client_buffer_mb: AtLeastOne = Field(1, description="MB of a body received before a worker takes over")
    client_max_pending: AtLeastOne = Field(100, description="connections each worker receives at once")
    log_level: LogLevel = Field("info", description="the app's and gunicorn's log level")
    metrics_enabled: Flag = Field(True, description="count requests and rows for /metrics; off only to measure what "
                                  "observability costs (bench/overhead.py)")
    access_log: Flag = Field(True, description="one JSON line per request")

    def __init__(self, **values: Any):
        try:
            super().__init__(**values)
        except ValidationError as exc:
            raise SettingsError([_problem(error) for error in exc.errors()]) from None

    @field_validator("api_keys_paths")
    @classmethod
    def _paths_start_with_a_slash(cls, value: str) -> str:
        bad = [path.strip() for path in value.split(",") if path.strip() and not path.strip().startswith("/")]
        if bad:
            raise ValueError(f"expected paths starting with '/', got {', '.join(bad)}")
        return value

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
    def variables(cls) -> dict[str, str]:
        """Each setting's environment variable, by field name."""
        return {name: name.upper() for name in cls.model_fields}

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Settings from environment variables (``os.environ`` by default); unset or empty ones
        keep their defaults. Raises ``SettingsError`` listing every bad value.

        Parsed once per distinct environment: gunicorn.conf.py and the factory it loads in the
        same process get the same object."""
        environ = os.environ if environ is None else environ
        given = tuple((name, environ[variable]) for name, variable in cls.variables().items()
                      if environ.get(variable, "") != "")
        return _parse(cls, given)

    def with_overrides(self, overrides: Mapping[str, Any] | None) -> Settings:
        """A copy with some fields replaced (the factory's ``test_config``), checked like the environment."""
        if not overrides:
            return self
        return type(self)(**{**{name: getattr(self, name) for name in type(self).model_fields}, **overrides})


@functools.lru_cache(maxsize=8)
def _parse(cls: type[Settings], given: tuple[tuple[str, str], ...]) -> Settings:
    return cls(**dict(given))


def _shown(value: Any) -> str:
    if isinstance(value, str) and len(value) > SHOWN_VALUE_CHARS:
        return repr(value[:SHOWN_VALUE_CHARS // 2]) + f"... ({len(value)} characters)"
    return repr(value)


#: pydantic's error types, said in the words of an environment variable.
_EXPECTED = {"int_parsing": "expected an integer", "int_from_float": "expected an integer",
             "int_type": "expected an integer", "float_parsing": "expected a number", "float_type": "expected a number",
             "finite_number": "expected a finite number", "string_type": "expected a string",
             "path_type": "expected a path", "extra_forbidden": "not a setting of this service"}
_BOUNDS = {"greater_than_equal": ("ge", "must be at least {}"), "less_than_equal": ("le", "must be at most {}")}


def _problem(error: dict) -> str:
    """One line of a SettingsError: ``NAME=value: what it accepts``."""
    name = ".".join(str(part) for part in error["loc"][:1]).upper() or "SETTINGS"
    value = error["input"]
    if error["type"] in _BOUNDS:
        # The value parsed (it is a number), only out of range: shown as the number it is.
        key, text = _BOUNDS[error["type"]]
        bound = error["ctx"][key]
        return f"{name}={str(value).strip()}: {text.format(f'{bound:g}')}"
    if error["type"] == "value_error":
        reason = str(error["ctx"]["error"])
    else:
        reason = _EXPECTED.get(error["type"], error["msg"])
    return f"{name}={_shown(value)}: {reason}"


def settings_or_exit(settings: Settings | None = None, overrides: Mapping[str, Any] | None = None) -> Settings:
    """The settings of an entry point (gunicorn.conf.py, the keys command, the app factories):
    ``settings``, or the environment's when None, with ``overrides``. On a bad value: every
    problem on stderr, one a line, and exit status 2, without a traceback."""
    try:
        return (settings or Settings.from_env()).with_overrides(overrides)
    except SettingsError as exc:
        lines = "\n".join(f"  {problem}" for problem in exc.problems)
        print(f"cannot start: {exc.summary}:\n{lines}", file=sys.stderr)
        raise SystemExit(EXIT_BAD_SETTINGS) from None
