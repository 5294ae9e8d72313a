"""Settings (service/ops/settings.py): typed, every bad value refused and reported at once, one object
handed from gunicorn.conf.py to the worker class and the app, and the README's table in step."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from flaskapp import create_app
from service.ops.settings import MB, Settings, SettingsError, settings_or_exit
from service.worker.buffered_worker import BufferedWorker, configured
from tests.support.live_server import PROJECT_DIR, without_service_settings

README = (PROJECT_DIR / "README.md").read_text()
#: Every setting's default, as the README and deployments rely on them (WEB_CONCURRENCY: the CPUs).
DEFAULTS = {
    "port": 1313, "bind": "", "gunicorn_timeout": 300, "graceful_timeout": 30, "drain_seconds": 0,
    "max_rows": 100_000, "max_body_mb": 400, "max_decoded_mb": 96, "model_store": PROJECT_DIR / "lib" / "model_store",
    "model_dir": None, "model_poll_seconds": 2.0, "allow_version_mismatch": False, "max_listed_errors": 100,
    "require_columns": False, "stream_max_body_mb": 0, "stream_timeout": 3600, "stream_idle_seconds": 60,
    "stream_chunk_rows": 10_000, "stream_hold_mb": 256, "api_keys_file": None,
    "api_keys_paths": "/predict,/model,/models,/metrics", "client_read_timeout": 30, "client_idle_seconds": 5,
    "client_buffer_mb": 1, "client_max_pending": 100, "log_level": "info", "metrics_enabled": True,
    "access_log": True, "web_concurrency": len(os.sched_getaffinity(0)),
}
FLAG_EXPECTED = "expected one of 1/0, true/false, yes/no, on/off"
#: Read by numpy's BLAS and set by gunicorn.conf.py, documented in the same table; not settings.
BLAS_VARIABLES = {"OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"}


def test_the_defaults_are_unchanged():
    assert Settings().model_dump() == DEFAULTS
    assert Settings.from_env({}) == Settings()


@pytest.mark.parametrize(("raw", "expected"), [
    ("1", True), ("true", True), ("TRUE", True), ("Yes", True), ("on", True), (" on ", True),
    ("0", False), ("false", False), ("No", False), ("OFF", False),
])
def test_flags_take_the_usual_words_in_any_case(raw, expected):
    assert Settings.from_env({"METRICS_ENABLED": raw}).metrics_enabled is expected


@pytest.mark.parametrize("raw", ["ture", "y", "t", "2", "enabled", "-1"])
def test_a_mistyped_flag_is_refused_not_read_as_false(raw):
    with pytest.raises(SettingsError) as refused:
        Settings.from_env({"METRICS_ENABLED": raw})
    assert refused.value.problems == [f"METRICS_ENABLED={raw!r}: {FLAG_EXPECTED}"]


@pytest.mark.parametrize("raw", ["debug", "INFO", "Warning", "error", "critical"])
def test_known_log_levels_are_taken_in_any_case(raw):
    assert Settings.from_env({"LOG_LEVEL": raw}).log_level == raw.lower()


@pytest.mark.parametrize("raw", ["verbose", "warn", "trace", "10"])
def test_an_unknown_log_level_is_refused(raw):
    with pytest.raises(SettingsError) as refused:
        Settings.from_env({"LOG_LEVEL": raw})
    assert refused.value.problems == [f"LOG_LEVEL={raw!r}: expected one of debug, info, warning, error, critical"]


@pytest.mark.parametrize(("variable", "raw", "problem"), [
    ("MAX_ROWS", "abc", "MAX_ROWS='abc': expected an integer"),
    ("MAX_ROWS", "1.5", "MAX_ROWS='1.5': expected an integer"),
    ("MAX_ROWS", "0", "MAX_ROWS=0: must be at least 1"),
    ("WEB_CONCURRENCY", "-2", "WEB_CONCURRENCY=-2: must be at least 1"),
    ("STREAM_MAX_BODY_MB", "-1", "STREAM_MAX_BODY_MB=-1: must be at least 0"),
    ("DRAIN_SECONDS", "-1", "DRAIN_SECONDS=-1: must be at least 0"),
    ("MODEL_POLL_SECONDS", "-0.5", "MODEL_POLL_SECONDS=-0.5: must be at least 0"),
    ("MODEL_POLL_SECONDS", "inf", "MODEL_POLL_SECONDS='inf': expected a finite number"),
    ("MODEL_POLL_SECONDS", "nan", "MODEL_POLL_SECONDS='nan': expected a finite number"),
    ("MODEL_POLL_SECONDS", "soon", "MODEL_POLL_SECONDS='soon': expected a number"),
    ("API_KEYS_PATHS", "/predict,metrics", "API_KEYS_PATHS='/predict,metrics': expected paths starting with '/', "
                                           "got metrics"),
])
def test_a_bad_value_names_the_variable_the_value_and_what_it_accepts(variable, raw, problem):
    with pytest.raises(SettingsError) as refused:
        Settings.from_env({variable: raw})
    assert refused.value.problems == [problem]


def test_every_bad_value_is_reported_at_once():
    environ = {"METRICS_ENABLED": "ture", "LOG_LEVEL": "verbose", "MAX_ROWS": "abc", "CLIENT_MAX_PENDING": "0",
               "DRAIN_SECONDS": "-3", "PORT": "1313"}
    with pytest.raises(SettingsError) as refused:
        Settings.from_env(environ)
    assert sorted(refused.value.problems) == sorted([
        f"METRICS_ENABLED='ture': {FLAG_EXPECTED}",
        "LOG_LEVEL='verbose': expected one of debug, info, warning, error, critical",
        "MAX_ROWS='abc': expected an integer", "CLIENT_MAX_PENDING=0: must be at least 1",
        "DRAIN_SECONDS=-3: must be at least 0"])
    message = str(refused.value)
    assert message.startswith("5 invalid settings: ")
    for name in ("METRICS_ENABLED", "LOG_LEVEL", "MAX_ROWS", "CLIENT_MAX_PENDING", "DRAIN_SECONDS"):
        assert name in message
    assert "PORT" not in message


def test_a_long_value_is_cut_in_the_message():
    secret = "bpk_" + "s3cr3t" * 10
    with pytest.raises(SettingsError) as refused:
        Settings.from_env({"MAX_ROWS": secret})
    assert secret not in str(refused.value) and secret[:12] in str(refused.value)
    assert refused.value.problems == [f"MAX_ROWS={secret[:12]!r}... ({len(secret)} characters): expected an integer"]


def test_an_empty_variable_is_unset_and_other_variables_are_ignored():
    assert Settings.from_env({"MAX_ROWS": "", "API_KEYS_FILE": "", "HOME": "/root", "max_rows": "3"}) == Settings()


def test_overrides_are_checked_like_the_environment():
    assert Settings().with_overrides({"max_rows": 7}).max_rows == 7
    with pytest.raises(SettingsError) as refused:
        Settings().with_overrides({"max_rows": 0, "access_log": "sometimes", "max_rowz": 5})
    assert sorted(refused.value.problems) == ["ACCESS_LOG='sometimes': " + FLAG_EXPECTED,
                                              "MAX_ROWS=0: must be at least 1",
                                              "MAX_ROWZ=5: not a setting of this service"]


def test_one_environment_is_parsed_once():
    environ = {"MAX_ROWS": "17", "LOG_LEVEL": "debug"}
    assert Settings.from_env(environ) is Settings.from_env(dict(environ))
    assert Settings.from_env({"MAX_ROWS": "18"}).max_rows == 18


def test_the_entry_point_helper_prints_every_problem_and_exits_2(monkeypatch, capsys):
    monkeypatch.setenv("MAX_ROWS", "0")
    monkeypatch.setenv("METRICS_ENABLED", "ture")
    with pytest.raises(SystemExit) as exited:
        settings_or_exit()
    assert exited.value.code == 2
    # Exactly the README's example.
    printed = capsys.readouterr().err
    assert printed in README.replace("\n      ", "\n  ").replace("\n    cannot", "\ncannot")
    assert printed == ("cannot start: 2 invalid settings:\n  MAX_ROWS=0: must be at least 1\n"
                       f"  METRICS_ENABLED='ture': {FLAG_EXPECTED}\n")


def test_the_factory_checks_its_test_config_and_exits_2(capsys):
    with pytest.raises(SystemExit) as exited:
        create_app({"max_rows": 0, "log_level": "loud"})
    assert exited.value.code == 2
    printed = capsys.readouterr().err
    assert "MAX_ROWS=0: must be at least 1" in printed and "LOG_LEVEL='loud'" in printed


def test_the_factory_serves_the_settings_it_is_handed(model_dir):
    app = create_app({"access_log": False}, settings=Settings(model_dir=model_dir, max_body_mb=3))
    assert app.config["MAX_CONTENT_LENGTH"] == 3 * MB
    assert app.test_client().get("/model").status_code == 200


def test_the_worker_class_has_only_the_limits_it_is_configured_with():
    assert not hasattr(BufferedWorker, "limits")
    limits = configured(Settings(client_max_pending=7, client_buffer_mb=2, max_body_mb=5)).limits
    assert (limits.max_pending, limits.buffer_bytes, limits.max_body_bytes) == (7, 2 * MB, 5 * MB)


SERVICE_CODE = sorted([*(PROJECT_DIR / "service").glob("*.py"), PROJECT_DIR / "flaskapp.py",
                       PROJECT_DIR / "gunicorn.conf.py", PROJECT_DIR / "bench" / "floor_app.py"])


@pytest.mark.parametrize("path", SERVICE_CODE, ids=lambda path: str(path.relative_to(PROJECT_DIR)))
def test_only_the_entry_point_helper_reads_the_environment_settings(path):
    if path.name == "settings.py":
        return
    assert not re.search(r"\bSettings\(|\.from_env\(", path.read_text())


def run(args: list[str], env: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=PROJECT_DIR, capture_output=True, text=True, timeout=120,
                          env={**without_service_settings(os.environ), "PROMETHEUS_MULTIPROC_DIR": str(tmp_path),
                               **env}, check=False)


BAD = {"METRICS_ENABLED": "ture", "LOG_LEVEL": "verbose", "MAX_ROWS": "0"}


def test_gunicorn_refuses_to_start_with_every_bad_setting_named(tmp_path):
    done = run(["-m", "gunicorn", "-c", "gunicorn.conf.py"], BAD, tmp_path)
    assert done.returncode == 2, done.stderr[-2000:]
    assert done.stderr == ("cannot start: 3 invalid settings:\n"
                           "  MAX_ROWS=0: must be at least 1\n"
                           "  LOG_LEVEL='verbose': expected one of debug, info, warning, error, critical\n"
                           f"  METRICS_ENABLED='ture': {FLAG_EXPECTED}\n")


def test_the_keys_command_refuses_bad_settings(tmp_path):
    done = run(["-m", "service.ops.keys", "list", "--file", str(tmp_path / "keys")], BAD, tmp_path)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    for name in BAD:
        assert name in done.stderr


# --- the README's table --------------------------------------------------------------------------


def readme_table() -> dict[str, str]:
    """The README's settings table: each variable and the default written for it."""
    section = README[README.index("\n### Settings\n"):]
    rows = section[section.index("| variable |"):].split("\n\n")[0].splitlines()[2:]
    documented = {}
    for row in rows:
        names_cell, default_cell = (cell.strip() for cell in row.strip("|").split("|")[:2])
        names = re.findall(r"`([A-Z][A-Z_]+)`", names_cell)
        defaults = re.findall(r"`([^`]*)`", default_cell)
        if len(defaults) == 1 and len(names) > 1:
            defaults *= len(names)
        documented.update(zip(names, defaults or [default_cell] * len(names), strict=True))
    return documented


def test_the_readme_table_lists_exactly_the_settings():
    assert set(readme_table()) - BLAS_VARIABLES == set(Settings.variables().values())


@pytest.mark.parametrize(("name", "variable"), sorted(Settings.variables().items()))
def test_the_readme_default_of_every_setting_is_the_class_default(name, variable):
    written, default = readme_table()[variable], DEFAULTS[name]
    if name == "web_concurrency":
        assert written == "CPUs available to the process"
    elif written == "":
        assert default in ("", None)
    else:
        parsed = getattr(Settings.from_env({variable: written}), name)
        assert (PROJECT_DIR / parsed if isinstance(parsed, Path) else parsed) == default


@pytest.mark.parametrize("name", sorted(Settings.model_fields))
def test_every_setting_has_a_description(name):
    assert len(Settings.model_fields[name].description or "") > 10
