"""The model store: one immutable directory per model version, and an active pointer.

    MODEL_STORE/
      active.json                  {"version": ..., "previous": ..., "switched_at": ...}
      2026-12-01-0c5a1e574655/     a version: manifest.json, the pickles, report.json, the pictures
      .incoming-5f1c.../           a version being written: never listed, never served

A version is written under a hidden temporary name; every file and the directory are synced to
disk, then the directory is renamed to its version name in one step, so a reader sees all of a
version or none of it. Nothing changes a version afterwards. The pointer is a small JSON file,
replaced in one step (written beside it, synced, ``os.replace``): a server reading it sees the
old pointer or the new one, never a mix. ``use`` verifies a version exactly as a server loads it
(the sha256 of every file, the library versions, the golden row) before it moves the pointer.

A version's name is the ``model_version`` its manifest records (training date and a hash of its
files and threshold), so the same model trained twice is the same version.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from lib.core.artifacts import Stages, load_artifacts, read_manifest
from lib.core.atomic_file import replace_file, sync_directory
from lib.core.errors import ArtifactError
from lib.core.scorer import check_golden, compile_plan

DEFAULT_STORE = Path(__file__).resolve().parents[1] / "model_store"
POINTER_FILE = "active.json"
INCOMING_PREFIX = ".incoming-"
#: Names that stand for a version: the newest one, and the one active before the current one.
LATEST = "latest"
PREVIOUS = "previous"
ALIASES = (LATEST, PREVIOUS)
_VERSION_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


@dataclass(frozen=True)
class Pointer:
    """What the store serves: the active version, the one before it, and when it was set."""

    version: str
    previous: str | None
    switched_at: str

    def encode(self) -> bytes:
        """The pointer file's bytes."""
        return json.dumps({"version": self.version, "previous": self.previous,
                           "switched_at": self.switched_at}, indent=2).encode() + b"\n"


def parse_pointer(raw: bytes) -> Pointer:
    """The pointer in ``raw`` (the bytes of ``active.json``); ArtifactError naming what is wrong."""
    try:
        fields = json.loads(raw)
    except ValueError as exc:
        raise ArtifactError(f"{POINTER_FILE} is not valid JSON: {exc}") from None
    if not isinstance(fields, dict) or not isinstance(fields.get("version"), str):
        raise ArtifactError(f'{POINTER_FILE} must be an object with a "version" string')
    version, previous = fields["version"], fields.get("previous")
    check_version_name(version)
    if previous is not None:
        check_version_name(previous)
    return Pointer(version, previous, str(fields.get("switched_at", "")))


def check_version_name(name: str) -> str:
    """``name`` if it can name a version directory; ArtifactError otherwise (it could escape the store)."""
    if not isinstance(name, str) or not _VERSION_NAME.fullmatch(name) or name in ALIASES:
        raise ArtifactError(f"{str(name)[:60]!r} is not a version name (letters, digits, '.', '_', '-')")
    return name


def load_version(directory: Path, version: str, allow_version_mismatch: bool = False) -> Stages:
    """Verify and unpickle the version in ``directory`` (lib.core.artifacts.load_artifacts), and check
    that its manifest is the version the directory is named after."""
    try:
        stages = load_artifacts(directory, allow_version_mismatch)
    except ArtifactError as exc:
        raise ArtifactError(f"version {version}: {exc}") from None
    if stages.version != version:
        raise ArtifactError(f"version {version}: its manifest.json is model {stages.version}")
    return stages


class ModelStore:
    """A model store directory (see the module's docstring); every method names the problem in
    an ArtifactError, by version and file name, never by path."""

    def __init__(self, root: Path):
        self.root = Path(root)

    # -- reading ----------------------------------------------------------------------------

    def versions(self) -> list[str]:
        """The names of the version directories, sorted (names start with the training date)."""
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and _VERSION_NAME.fullmatch(p.name)
                      and p.name not in ALIASES)

    def directory(self, version: str) -> Path:
        """The directory of ``version``; ArtifactError if there is no such version."""
        path = self.root / check_version_name(version)
        if not path.is_dir():
            known = self.versions()
            listed = ", ".join(known[-5:]) if known else "none"
            raise ArtifactError(f"no version {version} in the model store (versions: {listed})")
        return path

    def read_pointer(self) -> bytes | None:
        """The raw bytes of the pointer file, or None if the store has none yet."""
        try:
            return (self.root / POINTER_FILE).read_bytes()
        except FileNotFoundError:
            return None

    def pointer(self) -> Pointer | None:
        """The active pointer, None if the store has none yet; ArtifactError if it is malformed."""
        raw = self.read_pointer()
        return None if raw is None else parse_pointer(raw)

    def active(self) -> tuple[str, Path]:
        """The active version and its directory; ArtifactError if there is none or it is missing."""
        pointer = self.pointer()
        if pointer is None:
            raise ArtifactError("the model store has no active version: train one (python -m lib.training.train) "
                                "or choose one (python -m lib.store use VERSION)")
        return pointer.version, self.directory(pointer.version)

    def resolve(self, name: str) -> str:
        """The version ``name`` stands for: itself, or ``latest`` (newest by training time) or
        ``previous`` (the version active before the current one)."""
        if name == PREVIOUS:
            pointer = self.pointer()
            if pointer is None or pointer.previous is None:
                raise ArtifactError("no previous version: the pointer has been set only once")
            return pointer.previous
        if name == LATEST:
            dated = [(entry["created_at"], entry["version"]) for entry in self.catalog() if "created_at" in entry]
            if not dated:
                raise ArtifactError("the model store holds no readable version")
            return max(dated)[1]
        return check_version_name(name)

    def describe(self, version: str) -> dict:
        """What a listing shows of ``version``, from its (self-checked) manifest; the pickles are
        not read. An unreadable version is ``{"version", "error"}``."""
        try:
            manifest = read_manifest(self.directory(version))
        except ArtifactError as exc:
            return {"version": version, "error": str(exc)}
        data = manifest["training_data"]
        return {"version": version, "created_at": manifest["created_at"], "threshold": manifest["threshold"],
                "auc": manifest["metrics"]["auc"],
                "training_data": {"file": data["file"], "sha256": data["sha256"], "rows": data["rows"]}}

    def catalog(self) -> list[dict]:
        """Every version, oldest first, as ``describe`` shows it, with ``active`` true for the
        pointer's version."""
        try:
            pointer = self.pointer()
        except (ArtifactError, OSError):
            pointer = None
        entries = [{**self.describe(v), "active": pointer is not None and v == pointer.version}
                   for v in self.versions()]
        return sorted(entries, key=lambda e: (e.get("created_at", ""), e["version"]))

    def verify(self, version: str, allow_version_mismatch: bool = False) -> Stages:
        """Load ``version`` as a server does: every file's sha256 against the manifest, the
        library versions, then the golden row through the compiled plan. Returns the stages."""
        stages = load_version(self.directory(version), version, allow_version_mismatch)
        try:
            check_golden(compile_plan(stages), stages.manifest)
        except ArtifactError as exc:
            raise ArtifactError(f"version {version}: {exc}") from None
        return stages

    # -- writing ----------------------------------------------------------------------------

    def use(self, version: str, allow_version_mismatch: bool = False) -> Pointer:
        """Verify ``version``, then make it the active one in one step; return the new pointer.

        The version active until now becomes ``previous`` (kept as it was when ``version`` is
        already active)."""
        self.verify(version, allow_version_mismatch)
        try:
            old = self.pointer()
        except ArtifactError:
            old = None  # a damaged pointer is what this call repairs
        previous = old.previous if old is not None and old.version == version else old.version if old else None
        pointer = Pointer(version, previous, datetime.now(UTC).isoformat(timespec="milliseconds"))
        replace_file(self.root / POINTER_FILE, pointer.encode(), durable=True)
        return pointer

    def write_version(self, write: Callable[[Path], str]) -> tuple[str, bool]:
        """Add a version: ``write(directory)`` fills a new, empty directory and returns the
        version name; the directory is then synced and renamed to that name in one step.

        Returns the version and whether it was added (False: the store already held it, and
        keeps its copy; a version is never overwritten)."""
        self.root.mkdir(parents=True, exist_ok=True)
        incoming = self.root / f"{INCOMING_PREFIX}{secrets.token_hex(8)}"
        # Not mkdtemp's 0700: a container reading the store runs as another user.
        incoming.mkdir()
        try:
            version = check_version_name(write(incoming))
            target = self.root / version
            if target.exists():
                return version, False
            _sync_tree(incoming)
            try:
                os.rename(incoming, target)
            except OSError:
                if target.is_dir():  # written by someone else meanwhile
                    return version, False
                raise
            sync_directory(self.root)
            return version, True
        finally:
            if incoming.exists():
                shutil.rmtree(incoming, ignore_errors=True)

    def add(self, source: Path, allow_version_mismatch: bool = False) -> tuple[str, bool]:
        """Copy the version directory ``source`` (as ``lib.training.train --out`` writes it) into the
        store, after verifying it as ``use`` would. Returns the version and whether it was added."""
        source = Path(source)
        manifest = read_manifest(source)
        version = check_version_name(manifest.get("model_version", ""))
        stages = load_version(source, version, allow_version_mismatch)
        check_golden(compile_plan(stages), stages.manifest)

        def copy(directory: Path) -> str:
            for path in sorted(source.iterdir()):
                if path.is_file():
                    shutil.copyfile(path, directory / path.name)
            return version

        return self.write_version(copy)

    def seed(self, other: ModelStore) -> list[str]:
        """Add every version of ``other`` that this store lacks and, if this store has no
        active version, make ``other``'s active version active. Returns the versions added."""
        added = [version for version in other.versions() if version not in self.versions()
                 and self.add(other.directory(version))[1]]
        theirs = other.pointer()
        if self.read_pointer() is None and theirs is not None:
            self.use(theirs.version)
        return added

def _sync_tree(directory: Path) -> None:
    """fsync every file of ``directory``, then the directory itself: on disk before the rename."""
    for path in directory.iterdir():
        with open(path, "rb") as f:
            os.fsync(f.fileno())
    sync_directory(directory)


def active_directory(root: Path = DEFAULT_STORE) -> Path:
    """The directory of the active version of the store at ``root``: the model the servers of that
    store serve, which the file command and the Spark job read by default. ArtifactError if the
    store has no active version (the message says how to make one)."""
    return ModelStore(root).active()[1]
