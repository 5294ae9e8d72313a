"""Saving and loading the pickled stages, verified against a manifest before unpickling.

Loading reads each file's bytes once, checks their sha256 against the manifest, and only
then unpickles those same bytes: nothing unverified is ever unpickled, and the file cannot
change between the check and the load.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import platform
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from lib.core.errors import ArtifactError

IMPUTER_FILE = "imputer.pkl"
SCALER_FILE = "scaler.pkl"
MODEL_FILE = "model.pkl"
MANIFEST_FILE = "manifest.json"
STAGE_FILES = (IMPUTER_FILE, SCALER_FILE, MODEL_FILE)
#: The training report beside the artifacts (lib/training/report.py draws it; the model card shows it).
REPORT_FILE = "report.json"
ROC_FILE = "roc.png"
CALIBRATION_FILE = "calibration.png"
#: Libraries whose pickles must be read by the exact version that wrote them.
PINNED_LIBRARIES = ("numpy", "pandas", "scikit-learn", "scipy", "statsmodels")
_CHECKSUM_KEY = "manifest_sha256"


@dataclass(frozen=True)
class Stages:
    """The verified, unpickled stages and their manifest."""

    imputer: object
    scaler: object
    model: object
    manifest: dict

    @property
    def variables(self) -> list[str]:
        """Model variables in the column order the statsmodels results expect."""
        return [v["name"] for v in self.manifest["variables"]]

    @property
    def levels(self) -> dict[str, list[str]]:
        """Categorical levels fixed at training, first level = dropped base level."""
        return self.manifest["category_levels"]

    @property
    def threshold(self) -> float:
        """Probability at or above which a row is predicted positive."""
        return float(self.manifest["threshold"])

    @property
    def version(self) -> str:
        """The model version string reported in ``X-Model-Version``."""
        return self.manifest["model_version"]


def sha256_bytes(data: bytes) -> str:
    """Hex sha256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def library_versions() -> dict[str, str]:
    """Versions of Python and of the libraries whose objects are pickled."""
    versions = {"python": platform.python_version()}
    versions.update({name: metadata.version(name) for name in PINNED_LIBRARIES})
    return versions


def _manifest_checksum(manifest: dict) -> str:
    body = {k: v for k, v in manifest.items() if k != _CHECKSUM_KEY}
    return sha256_bytes(json.dumps(body, sort_keys=True, separators=(",", ":")).encode())


def seal_manifest(manifest: dict) -> dict:
    """``manifest`` with its self-checksum (re)computed."""
    return {**{k: v for k, v in manifest.items() if k != _CHECKSUM_KEY}, _CHECKSUM_KEY: _manifest_checksum(manifest)}


def save_artifacts(out_dir: Path, imputer, scaler, model, manifest: dict) -> dict:
    """Pickle the stages into ``out_dir`` and write the manifest with their hashes.

    ``manifest`` holds everything but hashes, versions and the model version; the
    completed manifest is returned.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    hashes = {}
    for name, stage in zip(STAGE_FILES, (imputer, scaler, model), strict=True):
        data = pickle.dumps(stage, protocol=pickle.HIGHEST_PROTOCOL)
        (out_dir / name).write_bytes(data)
        hashes[name] = sha256_bytes(data)
    # The threshold lives only in the manifest but changes the answers: it is part of the version.
    combined = sha256_bytes(("".join(hashes[n] for n in STAGE_FILES) + repr(float(manifest["threshold"]))).encode())
    manifest = {
        **manifest,
        "model_version": f"{manifest['created_at'][:10]}-{combined[:12]}",
        "files": hashes,
        "library_versions": library_versions(),
    }
    manifest = seal_manifest(manifest)
    (out_dir / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def read_manifest(model_dir: Path) -> dict:
    """Read and self-check ``manifest.json``; raise ArtifactError naming the problem."""
    path = model_dir / MANIFEST_FILE
    try:
        manifest = json.loads(path.read_bytes())
    except FileNotFoundError:
        raise ArtifactError(f"{MANIFEST_FILE} is missing from the model directory") from None
    except ValueError as exc:
        raise ArtifactError(f"{MANIFEST_FILE} is not valid JSON: {exc}") from None
    return check_manifest(manifest)


def check_manifest(manifest: object) -> dict:
    """``manifest`` if it matches its own checksum; raise ArtifactError otherwise."""
    if not isinstance(manifest, dict) or manifest.get(_CHECKSUM_KEY) != _manifest_checksum(manifest):
        raise ArtifactError(f"{MANIFEST_FILE} does not match its own checksum: it was modified")
    return manifest


def check_versions(recorded: dict[str, str], allow_mismatch: bool = False) -> list[str]:
    """Compare recorded library versions with the installed ones.

    Returns the mismatches as messages; raises ArtifactError on any unless ``allow_mismatch``.
    """
    installed = library_versions()
    problems = [
        f"{name} {recorded.get(name)} at training, {installed[name]} installed"
        for name in PINNED_LIBRARIES
        if recorded.get(name) != installed[name]
    ]
    if problems and not allow_mismatch:
        raise ArtifactError(
            "artifacts were built with other library versions: " + "; ".join(problems)
            + " (rebuild them with `python -m lib.training.train`, or set ALLOW_VERSION_MISMATCH=1)"
        )
    return problems


def verify_files(model_dir: Path, manifest: dict) -> dict[str, bytes]:
    """Read every stage file and check its sha256 against ``manifest``; return the bytes."""
    return verify_bytes(read_files(model_dir), manifest)


def read_files(model_dir: Path) -> dict[str, bytes]:
    """The bytes of every stage file, unchecked; raise ArtifactError naming a missing file."""
    files = {}
    for name in STAGE_FILES:
        try:
            files[name] = (Path(model_dir) / name).read_bytes()
        except FileNotFoundError:
            raise ArtifactError(f"{name} is missing from the model directory") from None
    return files


def verify_bytes(files: dict[str, bytes], manifest: dict) -> dict[str, bytes]:
    """Check the sha256 of every stage file's bytes against ``manifest``; return them."""
    for name in STAGE_FILES:
        if name not in files:
            raise ArtifactError(f"{name} is missing from the model directory")
        if sha256_bytes(files[name]) != manifest["files"].get(name):
            raise ArtifactError(f"{name}: sha256 does not match {MANIFEST_FILE}; refusing to unpickle it")
    return files


def load_artifacts(model_dir: Path, allow_version_mismatch: bool = False) -> Stages:
    """Verify every file against the manifest, then unpickle the verified bytes."""
    model_dir = Path(model_dir)
    manifest = read_manifest(model_dir)
    check_versions(manifest["library_versions"], allow_version_mismatch)
    return _unpickle(manifest, read_files(model_dir))


def stages_from_bytes(manifest: dict, files: dict[str, bytes], allow_version_mismatch: bool = False) -> Stages:
    """The stages of artifact files read elsewhere (shipped to a Spark executor, say): the manifest,
    the library versions and every file are checked as ``load_artifacts`` does, before anything is
    unpickled."""
    check_manifest(manifest)
    check_versions(manifest["library_versions"], allow_version_mismatch)
    return _unpickle(manifest, files)


def _unpickle(manifest: dict, files: dict[str, bytes]) -> Stages:
    verified = verify_bytes(files, manifest)
    # Only bytes whose hash matched are unpickled, and only after every file passed.
    imputer, scaler, model = (pickle.loads(verified[name]) for name in STAGE_FILES)
    return Stages(imputer=imputer, scaler=scaler, model=model, manifest=manifest)
