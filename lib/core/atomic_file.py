"""Files replaced in one rename, so a reader sees the old content or the new one, never half of it.

A file is written under a hidden temporary name beside its path (the same file system, where a
rename is atomic) and renamed over the path only when complete; a failure removes the temporary
file and leaves the path as it was. Used by the file command's outputs, the model store's pointer
and the API key file.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path


class AtomicFile:
    """A temporary file beside ``path`` that becomes ``path`` on ``commit`` and vanishes on ``discard``."""

    def __init__(self, path: Path):
        self.path = Path(path)
        # Created here (mode "x": a new file, with the permissions the umask gives, unlike mkstemp's 0600).
        self.temporary = self.path.with_name(f".{self.path.name}.{secrets.token_hex(4)}.partial")
        self.temporary.open("xb").close()

    def commit(self) -> None:
        """Move the finished file to its place (atomically, on one file system)."""
        os.replace(self.temporary, self.path)

    def discard(self) -> None:
        """Remove the temporary file; the output path is left as it was."""
        self.temporary.unlink(missing_ok=True)


def replace_file(path: Path, data: bytes, mode: int | None = None, durable: bool = False) -> None:
    """Replace ``path`` with ``data`` in one rename, creating its directory if needed.

    ``mode`` sets the file's permissions (default: what the umask gives a new file). ``durable``
    syncs the file before the rename and the directory after it, so the new content survives a
    crash of the machine, not only of the process."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    file = AtomicFile(path)
    try:
        with open(file.temporary, "wb") as out:
            out.write(data)
            if durable:
                out.flush()
                os.fsync(out.fileno())
        if mode is not None:
            os.chmod(file.temporary, mode)
        file.commit()
    finally:
        file.discard()  # nothing left after a commit; the half-written file after a failure
    if durable:
        sync_directory(path.parent)


def sync_directory(directory: Path) -> None:
    """fsync ``directory`` itself: the names created or renamed in it are on disk afterwards."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
