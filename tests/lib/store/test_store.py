"""The model store (lib/store/versions.py): whole, immutable versions, and a pointer that moves in one step
and only to a version that verifies."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading

import pytest

from lib.core.artifacts import MANIFEST_FILE, MODEL_FILE, SCALER_FILE
from lib.core.errors import ArtifactError
from lib.store.versions import INCOMING_PREFIX, POINTER_FILE, ModelStore, parse_pointer
from tests.lib.core.test_artifacts import flip_byte, reseal
from tests.support.live_server import PROJECT_DIR

OLD_NAME = "2020-01-01-000000000000"


def test_a_version_is_added_whole_under_its_model_version(model_dir, tmp_path):
    store = ModelStore(tmp_path / "store")
    old_umask = os.umask(0o022)
    try:
        version, added = store.add(model_dir)
    finally:
        os.umask(old_umask)
    manifest = json.loads((model_dir / MANIFEST_FILE).read_text())
    assert (version, added) == (manifest["model_version"], True)
    assert store.versions() == [version]
    copied = store.directory(version)
    assert sorted(p.name for p in copied.iterdir()) == sorted(p.name for p in model_dir.iterdir())
    assert all((copied / p.name).read_bytes() == p.read_bytes() for p in model_dir.iterdir())
    # Nothing left of the write, and readable by another user (a container reading the store).
    assert sorted(p.name for p in store.root.iterdir()) == [version]
    assert copied.stat().st_mode & 0o777 == 0o755
    assert {p.stat().st_mode & 0o777 for p in copied.iterdir()} == {0o644}


def test_a_version_is_never_overwritten(two_versions, model_dir):
    store = two_versions.store
    marker = store.directory(two_versions.a) / "note.txt"
    marker.write_text("kept")
    assert store.add(model_dir) == (two_versions.a, False)
    assert marker.read_text() == "kept"
    assert [p.name for p in store.root.iterdir() if p.name.startswith(INCOMING_PREFIX)] == []


def test_a_failed_write_leaves_no_version_and_no_leftovers(tmp_path):
    store = ModelStore(tmp_path / "store")

    def write(directory):
        (directory / MANIFEST_FILE).write_text("{}")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        store.write_version(write)
    assert list(store.root.iterdir()) == []


def test_only_version_directories_are_listed(two_versions):
    root = two_versions.store.root
    (root / f"{INCOMING_PREFIX}abc").mkdir()
    (root / "latest").mkdir()
    (root / "notes.txt").write_text("x")
    assert two_versions.store.versions() == sorted([two_versions.a, two_versions.b])


def test_use_moves_the_pointer_and_remembers_the_previous_version(two_versions):
    store, a, b = two_versions
    assert store.pointer().version == a
    pointer = store.use(b)
    assert (pointer.version, pointer.previous) == (b, a)
    assert store.pointer() == pointer
    assert json.loads((store.root / POINTER_FILE).read_text())["version"] == b
    # Using the active version again keeps what came before it.
    assert (store.use(b).version, store.pointer().previous) == (b, a)
    assert sorted(p.name for p in store.root.iterdir()) == sorted([a, b, POINTER_FILE])


def test_latest_is_the_newest_version_and_previous_rolls_back(two_versions):
    store, a, b = two_versions
    newest = max(store.catalog(), key=lambda entry: entry["created_at"])["version"]
    assert store.resolve("latest") == newest
    with pytest.raises(ArtifactError, match="no previous version"):
        store.resolve("previous")
    store.use(b)
    assert store.resolve("previous") == a
    store.use(store.resolve("previous"))
    assert (store.pointer().version, store.resolve("previous")) == (a, b)


def test_the_catalog_marks_the_active_version_and_shows_each_ones_metrics(two_versions, model_dir):
    manifest = json.loads((model_dir / MANIFEST_FILE).read_text())
    entries = {entry["version"]: entry for entry in two_versions.store.catalog()}
    assert {v: e["active"] for v, e in entries.items()} == {two_versions.a: True, two_versions.b: False}
    assert entries[two_versions.a]["auc"] == manifest["metrics"]["auc"]
    assert entries[two_versions.a]["training_data"]["sha256"] == manifest["training_data"]["sha256"]
    assert entries[two_versions.b]["threshold"] == 0.6


def remove_model(directory):
    (directory / MODEL_FILE).unlink()


def tamper(directory):
    flip_byte(directory / SCALER_FILE)


def drift_golden(directory):
    manifest = json.loads((directory / MANIFEST_FILE).read_text())
    manifest["golden"]["probability"] += 1e-6
    reseal(directory, manifest)


@pytest.mark.parametrize(("damage", "message"), [
    (remove_model, "version {b}: model.pkl is missing from the model directory"),
    (tamper, "version {b}: scaler.pkl: sha256 does not match manifest.json; refusing to unpickle it"),
    (drift_golden, "version {b}: golden row scored"),
], ids=["half-written", "tampered", "golden-drift"])
def test_use_refuses_a_damaged_version_and_keeps_the_pointer(two_versions, damage, message):
    store, a, b = two_versions
    damage(store.directory(b))
    before = store.read_pointer()
    with pytest.raises(ArtifactError) as refused:
        store.use(b)
    assert str(refused.value).startswith(message.format(b=b))
    assert str(store.root) not in str(refused.value)
    assert store.read_pointer() == before


def test_use_refuses_a_missing_version_naming_the_ones_there_are(two_versions):
    store, a, b = two_versions
    with pytest.raises(ArtifactError) as refused:
        store.use(OLD_NAME)
    assert str(refused.value) == f"no version {OLD_NAME} in the model store (versions: {', '.join(sorted([a, b]))})"


def test_use_refuses_a_directory_holding_another_version(two_versions):
    store, a, _ = two_versions
    shutil.copytree(store.directory(a), store.root / OLD_NAME)
    with pytest.raises(ArtifactError, match=f"^version {OLD_NAME}: its manifest.json is model {a}$"):
        store.use(OLD_NAME)


@pytest.mark.parametrize("name", ["../store", "a/b", ".hidden", "", "latest", "x" * 200])
def test_names_that_could_leave_the_store_are_refused(two_versions, name):
    with pytest.raises(ArtifactError, match="is not a version name"):
        two_versions.store.directory(name)


@pytest.mark.parametrize(("raw", "message"), [
    (b"", "active.json is not valid JSON"),
    (b'{"version": "a"', "active.json is not valid JSON"),
    (b'["a"]', 'must be an object with a "version" string'),
    (b'{"version": 3}', 'must be an object with a "version" string'),
    (b'{"version": "../../etc"}', "is not a version name"),
    (b'{"version": "a", "previous": "/tmp"}', "is not a version name"),
])
def test_a_malformed_pointer_is_refused_naming_the_problem(raw, message):
    with pytest.raises(ArtifactError, match=message):
        parse_pointer(raw)


def test_an_empty_store_says_how_to_get_an_active_version(tmp_path):
    with pytest.raises(ArtifactError, match=r"no active version: train one \(python -m lib.training.train\)"):
        ModelStore(tmp_path / "nothing").active()


def test_a_reader_sees_the_old_pointer_or_the_new_one_never_a_mix(two_versions):
    store, a, b = two_versions
    seen, problems, done = set(), [], threading.Event()

    def read():
        while not done.is_set():
            try:
                seen.add(store.pointer().version)
            except Exception as exc:  # a partial file would fail to parse
                problems.append(repr(exc))

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for i in range(60):
            store.use(b if i % 2 == 0 else a)
    finally:
        done.set()
        reader.join()
    assert problems == []
    assert seen == {a, b}


def test_seed_adds_the_missing_versions_and_the_active_one(two_versions, tmp_path):
    target = ModelStore(tmp_path / "target")
    assert sorted(target.seed(two_versions.store)) == sorted([two_versions.a, two_versions.b])
    assert target.pointer().version == two_versions.a
    two_versions.store.use(two_versions.b)
    # Seeding again adds nothing and leaves the active version alone.
    assert target.seed(two_versions.store) == []
    assert target.pointer().version == two_versions.a


def test_training_adds_a_version_and_activates_only_the_first(other_model_dir, tmp_path):
    data = other_model_dir.parent / "data" / "train.csv"
    store = ModelStore(tmp_path / "store")

    def train(*args):
        done = subprocess.run([sys.executable, "-m", "lib.training.train", "--data", str(data),
                               "--store", str(store.root), *args],
                              cwd=PROJECT_DIR, capture_output=True, text=True, timeout=240)
        assert done.returncode == 0, done.stderr[-2000:]
        return done.stderr

    first_log = train()
    (first,) = store.versions()
    assert store.pointer().version == first
    assert f"active version: {first} (the store had none)" in first_log
    second_log = train("--threshold", "0.7")
    (second,) = set(store.versions()) - {first}
    assert store.pointer().version == first
    assert f"serve it with `python -m lib.store use {second}`" in second_log
    # The report is part of the version.
    assert {"report.json", "roc.png", "calibration.png"} <= {p.name for p in store.directory(second).iterdir()}
