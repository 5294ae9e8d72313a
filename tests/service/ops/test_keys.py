"""API keys: the key file's format, the ring's comparison, the file's re-reading, and the
``python -m service.ops.keys`` command. The keys at the door of a running server are in
tests/service/http/test_access_control.py."""

from __future__ import annotations

import hashlib
import hmac
import os
import subprocess
import sys

import pytest

from service.http.auth import presented_key, protected
from service.ops import keys
from service.ops.keys import KeyFile, KeyFileError, KeyLine, KeyRing, key_hash, parse_lines
from service.ops.settings import DEFAULT_KEY_PATHS, Settings, SettingsError
from tests.support.live_server import PROJECT_DIR, without_service_settings


def line_for(name: str, key: str) -> str:
    return f"{name}:{key_hash(key)}\n"


def test_key_file_lines_comments_and_blank_lines():
    text = "# comment\n\n" + line_for("alice", "k1") + "  " + line_for("bob.ci-2", "k2") + line_for("alice", "k3")
    assert parse_lines(text, "f") == [KeyLine("alice", key_hash("k1")), KeyLine("bob.ci-2", key_hash("k2")),
                                      KeyLine("alice", key_hash("k3"))]
    # Upper-case hex is the same hash.
    assert parse_lines(f"alice:{key_hash('k1').upper()}", "f") == [KeyLine("alice", key_hash("k1"))]


@pytest.mark.parametrize("bad", ["alice", "alice:", "alice:abc", f"al ice:{'0' * 64}", f":{'0' * 64}",
                                 f"alice:{'g' * 64}", f"alice:{'0' * 65}", f"-alice:{'0' * 64}",
                                 f"alice:{'0' * 64}:x", "bpk_plainkeyinsteadofahash"])
def test_a_malformed_line_is_named_by_its_number(bad):
    with pytest.raises(KeyFileError, match=r"keys\.txt, line 3: expected NAME:SHA256"):
        parse_lines(f"# head\n{line_for('ok', 'k')}{bad}\n", "keys.txt")


def test_the_ring_names_the_key_and_knows_no_other():
    ring = KeyRing(parse_lines(line_for("alice", "a-key") + line_for("bob", "b-key") + line_for("alice", "a-new"), "f"))
    assert ring.identify("a-key") == "alice" and ring.identify("a-new") == "alice" and ring.identify("b-key") == "bob"
    for wrong in ("a-ke", "a-keyy", "A-KEY", "", "b-key ", key_hash("a-key")):
        assert ring.identify(wrong) is None
    assert ring.names == {"alice", "bob"}


@pytest.mark.parametrize("presented", ["first", "last", "nobody"])
def test_the_ring_compares_every_hash_in_constant_time_whatever_matched(monkeypatch, presented):
    """No early exit: every stored hash is compared (with hmac.compare_digest, on digests of equal
    length), whether the key matches the first entry, the last, or none."""
    ring = KeyRing(parse_lines("".join(line_for(f"n{i}", name) for i, name in enumerate(["first", "b", "c", "last"])),
                               "f"))
    compared, real = [], hmac.compare_digest

    def counting(a, b):
        compared.append((len(a), len(b)))
        return real(a, b)

    monkeypatch.setattr(keys.hmac, "compare_digest", counting)
    ring.identify(presented)
    assert compared == [(32, 32)] * 4


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_the_key_file_is_re_read_when_it_changes_and_a_bad_one_keeps_the_last_good(tmp_path, caplog):
    path = tmp_path / "keys"
    path.write_text(line_for("alice", "k1"))
    clock, failures = Clock(), []
    keyfile = KeyFile(path, check_seconds=1.0, on_failure=lambda: failures.append(1), clock=clock)
    assert keyfile.ring().identify("k1") == "alice"

    keys.write_lines(path, [KeyLine("bob", key_hash("k2"))])
    assert keyfile.ring().identify("k1") == "alice", "looked again before check_seconds passed"
    clock.now = 1.0
    assert keyfile.ring().identify("k2") == "bob" and keyfile.ring().identify("k1") is None

    path.write_text("bob:not-a-hash\n")
    clock.now = 2.0
    with caplog.at_level("ERROR", logger="predict"):
        assert keyfile.ring().identify("k2") == "bob"
    assert "line 1: expected NAME:SHA256" in caplog.text and "keeping the 1 keys read before" in caplog.text
    clock.now = 3.0
    keyfile.ring()
    assert failures == [1], "a bad file is reported once per change, not at every look"

    path.unlink()
    clock.now = 4.0
    assert keyfile.ring().identify("k2") == "bob" and failures == [1, 1]

    path.write_text(line_for("carol", "k3"))
    clock.now = 5.0
    assert keyfile.ring().identify("k3") == "carol" and keyfile.ring().identify("k2") is None


def test_a_missing_or_malformed_key_file_refuses_to_start(tmp_path):
    with pytest.raises(KeyFileError, match="cannot read the API key file"):
        KeyFile(tmp_path / "nothing")
    (tmp_path / "bad").write_text("alice\n")
    with pytest.raises(KeyFileError, match="line 1"):
        KeyFile(tmp_path / "bad")


def test_an_empty_key_file_means_no_key_is_accepted(tmp_path):
    (tmp_path / "keys").write_text("# none yet\n")
    assert KeyFile(tmp_path / "keys").ring().identify("anything") is None


@pytest.mark.parametrize(("environ", "expected"), [
    ({"HTTP_AUTHORIZATION": "Bearer abc"}, "abc"),
    ({"HTTP_AUTHORIZATION": "bearer   abc  "}, "abc"),
    ({"HTTP_X_API_KEY": " abc "}, "abc"),
    ({"HTTP_AUTHORIZATION": "Bearer abc", "HTTP_X_API_KEY": "other"}, "abc"),
    ({"HTTP_AUTHORIZATION": "Basic YWxpY2U6cHc=", "HTTP_X_API_KEY": "abc"}, "abc"),
    ({"HTTP_AUTHORIZATION": "Basic YWxpY2U6cHc="}, ""),
    ({"HTTP_AUTHORIZATION": "Bearer "}, ""),
    ({"HTTP_AUTHORIZATION": "abc"}, ""),
    ({}, ""),
])
def test_the_presented_key(environ, expected):
    assert presented_key(environ) == expected


def test_protected_paths_cover_themselves_and_below_only():
    paths = Settings(api_keys_paths=DEFAULT_KEY_PATHS).key_paths
    assert paths == ("/predict", "/model", "/models", "/metrics")
    for path in ("/predict", "/model", "/model/", "/models", "/models/v1", "/metrics"):
        assert protected(path, paths), path
    for path in ("/health", "/ready", "/docs", "/docs/swagger-ui.css", "/openapi.json", "/modelsx", "/predictor", "/"):
        assert protected(path, paths) is None, path
    assert protected("/anything", Settings(api_keys_paths="/").key_paths) == "/"
    with pytest.raises(SettingsError, match="API_KEYS_PATHS='/predict,metrics': expected paths starting with '/', "
                                            "got metrics"):
        Settings(api_keys_paths="/predict,metrics")


# --- the command -------------------------------------------------------------------------------


def run_keys(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "service.ops.keys", *args], cwd=PROJECT_DIR, capture_output=True,
                          text=True, env={**without_service_settings(os.environ), **(env or {})}, check=False)


def test_add_prints_the_key_once_and_stores_only_its_hash(tmp_path):
    path = tmp_path / "sub" / "keys"
    added = run_keys("add", "alice", "--file", str(path))
    assert added.returncode == 0, added.stderr
    key = added.stdout.strip()
    assert key.startswith("bpk_") and len(key) == 4 + 43 and "\n" not in key
    text = path.read_text()
    assert key not in text and key_hash(key) in text
    assert KeyFile(path).ring().identify(key) == "alice"
    assert f"added key {key_hash(key)[:12]} for alice" in added.stderr and key not in added.stderr
    assert oct(path.stat().st_mode & 0o777) == "0o644"
    # Two keys are never the same.
    again = run_keys("add", "alice", "--file", str(path)).stdout.strip()
    assert again != key and KeyFile(path).ring().identify(again) == "alice"


def test_list_and_the_rotation_of_a_key(tmp_path):
    path = tmp_path / "keys"
    env = {"API_KEYS_FILE": str(path)}  # the default --file
    old = run_keys("add", "alice", env=env).stdout.strip()
    bob = run_keys("add", "bob", env=env).stdout.strip()
    new = run_keys("add", "alice", env=env).stdout.strip()
    listed = run_keys("list", env=env)
    assert listed.stdout.splitlines() == [f"alice\t{key_hash(old)[:12]}", f"bob\t{key_hash(bob)[:12]}",
                                          f"alice\t{key_hash(new)[:12]}"]
    assert old not in listed.stdout

    removed = run_keys("remove", "alice", "--old", env=env)
    assert removed.returncode == 0 and f"removed 1 key(s) of alice from {path}: {key_hash(old)[:12]}" in removed.stderr
    ring = KeyFile(path).ring()
    assert ring.identify(old) is None and ring.identify(new) == "alice" and ring.identify(bob) == "bob"

    assert run_keys("remove", "alice", env=env).returncode == 0
    assert KeyFile(path).ring().identify(new) is None
    missing = run_keys("remove", "alice", env=env)
    assert missing.returncode == 1 and "has no key named 'alice'" in missing.stderr


def test_the_command_refuses_bad_names_bad_files_and_no_file(tmp_path):
    bad = run_keys("add", "al ice", "--file", str(tmp_path / "keys"))
    assert bad.returncode == 1 and "invalid name 'al ice'" in bad.stderr and not (tmp_path / "keys").exists()
    (tmp_path / "broken").write_text("alice\n")
    broken = run_keys("add", "bob", "--file", str(tmp_path / "broken"))
    assert broken.returncode == 1 and "line 1: expected NAME:SHA256" in broken.stderr
    assert (tmp_path / "broken").read_text() == "alice\n", "a broken file is left as it was"
    nofile = run_keys("list")
    assert nofile.returncode == 2 and "give --file PATH or set API_KEYS_FILE" in nofile.stderr


def test_the_key_hash_is_the_sha256_of_the_key():
    assert key_hash("bpk_x") == hashlib.sha256(b"bpk_x").hexdigest()
