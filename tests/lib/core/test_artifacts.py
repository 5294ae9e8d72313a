"""Artifacts load only after every file matches the manifest; nothing unverified is unpickled."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
from importlib import metadata

import pytest

from lib.core.artifacts import (
    MANIFEST_FILE,
    PINNED_LIBRARIES,
    STAGE_FILES,
    check_versions,
    library_versions,
    load_artifacts,
    save_artifacts,
    sha256_bytes,
)
from lib.core.errors import ArtifactError

ARTIFACT_FILES = (*STAGE_FILES, MANIFEST_FILE)
#: What save_artifacts adds to the manifest it is given.
COMPLETED_KEYS = ("model_version", "files", "library_versions", "manifest_sha256")


def flip_byte(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def truncate(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def delete(path):
    path.unlink()


DAMAGES = {"flip-one-byte": flip_byte, "truncate": truncate, "delete": delete}


def read_manifest_json(model_dir) -> dict:
    return json.loads((model_dir / MANIFEST_FILE).read_bytes())


def reseal(model_dir, manifest: dict) -> None:
    """Write ``manifest`` with a correct self checksum, as a hand edit by someone who knows the
    format would: sha256 of the compact, key-sorted JSON of every other field."""
    body = {k: v for k, v in manifest.items() if k != "manifest_sha256"}
    checksum = hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    (model_dir / MANIFEST_FILE).write_text(json.dumps({**body, "manifest_sha256": checksum}, indent=2))


class Canary:
    """Unpickling this creates ``path``: proof that the bytes were unpickled."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return os.mkdir, (self.path,)


@pytest.fixture()
def unpickled(monkeypatch) -> list[str]:
    """Every unpickling done through the pickle module, recorded (and still performed)."""
    calls = []
    real_loads, real_load = pickle.loads, pickle.load

    def loads(*args, **kwargs):
        calls.append("pickle.loads")
        return real_loads(*args, **kwargs)

    def load(*args, **kwargs):
        calls.append("pickle.load")
        return real_load(*args, **kwargs)

    class Unpickler(pickle.Unpickler):
        def load(self):
            calls.append("pickle.Unpickler")
            return super().load()

    monkeypatch.setattr(pickle, "loads", loads)
    monkeypatch.setattr(pickle, "load", load)
    monkeypatch.setattr(pickle, "Unpickler", Unpickler)
    return calls


def test_intact_copy_loads_after_unpickling_each_stage_once(model_copy, unpickled):
    stages = load_artifacts(model_copy)
    assert unpickled == ["pickle.loads"] * len(STAGE_FILES)
    assert stages.manifest == read_manifest_json(model_copy)
    assert len(stages.variables) == 25
    assert stages.version == stages.manifest["model_version"]


@pytest.mark.parametrize("damage", DAMAGES)
@pytest.mark.parametrize("name", ARTIFACT_FILES)
def test_damaged_artifact_is_refused_naming_the_file(model_copy, unpickled, name, damage):
    DAMAGES[damage](model_copy / name)
    with pytest.raises(ArtifactError) as info:
        load_artifacts(model_copy)
    assert name in str(info.value)
    assert unpickled == [], "a pickle was opened before every file was verified"


def test_missing_directory_is_refused(tmp_path):
    with pytest.raises(ArtifactError, match=f"{MANIFEST_FILE} is missing"):
        load_artifacts(tmp_path / "nowhere")


@pytest.mark.parametrize("name", STAGE_FILES)
def test_substituted_pickle_is_never_unpickled(model_copy, tmp_path, name):
    marker = tmp_path / "unpickled"
    # The canary works: unpickling it does leave the marker.
    pickle.loads(pickle.dumps(Canary(tmp_path / "control")))
    assert (tmp_path / "control").is_dir()

    (model_copy / name).write_bytes(pickle.dumps(Canary(marker)))
    with pytest.raises(ArtifactError, match=f"{name}: sha256 does not match"):
        load_artifacts(model_copy)
    assert not marker.exists()


def test_edited_manifest_is_refused_by_its_checksum(model_copy, unpickled):
    manifest = read_manifest_json(model_copy)
    manifest["threshold"] = 0.1  # valid JSON, plausible value, no reseal
    (model_copy / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2))
    with pytest.raises(ArtifactError, match=f"{MANIFEST_FILE} does not match its own checksum"):
        load_artifacts(model_copy)
    assert unpickled == []


def test_resealed_manifest_still_guards_the_pickles(model_copy, unpickled):
    """A manifest edited consistently loads; its hashes still decide which pickles do."""
    manifest = read_manifest_json(model_copy)
    reseal(model_copy, {**manifest, "threshold": 0.25})
    assert load_artifacts(model_copy).threshold == 0.25
    unpickled.clear()

    manifest["files"]["scaler.pkl"] = sha256_bytes(b"something else")
    reseal(model_copy, manifest)
    with pytest.raises(ArtifactError, match="scaler.pkl"):
        load_artifacts(model_copy)
    assert unpickled == []


@pytest.mark.parametrize("library", PINNED_LIBRARIES)
def test_library_version_mismatch_is_refused_unless_overridden(model_copy, unpickled, library):
    manifest = read_manifest_json(model_copy)
    manifest["library_versions"][library] = "0.0.1"
    reseal(model_copy, manifest)
    installed = metadata.version(library)

    with pytest.raises(ArtifactError) as info:
        load_artifacts(model_copy)
    assert f"{library} 0.0.1 at training, {installed} installed" in str(info.value)
    assert unpickled == []

    stages = load_artifacts(model_copy, allow_version_mismatch=True)
    assert stages.manifest["library_versions"][library] == "0.0.1"
    assert len(unpickled) == len(STAGE_FILES)


def test_override_does_not_skip_the_hash_check(model_copy, unpickled):
    manifest = read_manifest_json(model_copy)
    manifest["library_versions"]["numpy"] = "0.0.1"
    reseal(model_copy, manifest)
    flip_byte(model_copy / "model.pkl")
    with pytest.raises(ArtifactError, match="model.pkl"):
        load_artifacts(model_copy, allow_version_mismatch=True)
    assert unpickled == []


def test_check_versions_lists_every_mismatch_when_allowed():
    recorded = {**library_versions(), "numpy": "1.0", "statsmodels": "0.1"}
    problems = check_versions(recorded, allow_mismatch=True)
    assert problems == [
        f"numpy 1.0 at training, {metadata.version('numpy')} installed",
        f"statsmodels 0.1 at training, {metadata.version('statsmodels')} installed",
    ]
    assert check_versions(library_versions()) == []


@pytest.fixture()
def given_manifest(stages) -> dict:
    """The manifest as training hands it to save_artifacts (without what saving adds)."""
    return {k: v for k, v in stages.manifest.items() if k not in COMPLETED_KEYS}


def save(stages, out_dir, manifest: dict) -> dict:
    return save_artifacts(out_dir, stages.imputer, stages.scaler, stages.model, manifest)


def test_saved_artifacts_round_trip(stages, given_manifest, tmp_path):
    written = save(stages, tmp_path / "out", given_manifest)
    assert written["files"] == {name: sha256_bytes((tmp_path / "out" / name).read_bytes()) for name in STAGE_FILES}
    assert written["library_versions"] == library_versions()
    assert written["model_version"].startswith(given_manifest["created_at"][:10] + "-")
    loaded = load_artifacts(tmp_path / "out")
    assert loaded.manifest == written
    assert list(loaded.model.params) == list(stages.model.params)


def test_model_version_identifies_the_answers(stages, given_manifest, tmp_path):
    """Same stages and threshold: same version; another threshold changes the classes, so the version."""
    first = save(stages, tmp_path / "a", given_manifest)["model_version"]
    again = save(stages, tmp_path / "b", given_manifest)["model_version"]
    other = save(stages, tmp_path / "c", {**given_manifest, "threshold": 0.75})["model_version"]
    assert first == again
    assert other != first
