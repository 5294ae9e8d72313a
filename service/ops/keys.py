"""API keys: the key file, the keys a worker checks requests against, and the command that edits it.

    python -m service.ops.keys add NAME [--file PATH]      # a new key for NAME, printed once
    python -m service.ops.keys list [--file PATH]          # names and key ids, never keys
    python -m service.ops.keys remove NAME [--old] [--file PATH]

``--file`` defaults to ``API_KEYS_FILE``. The file holds one ``name:sha256-of-key`` line per key
(hex; blank lines and ``#`` comments are ignored) and never a key itself. A name may have several
keys: rotating one is ``add NAME`` (the old and the new key both work), moving the client to the
new key, then ``remove NAME --old`` (only the newest stays). A key's id is the first 12 hex digits
of its hash: enough to tell a name's keys apart, useless to guess the key.

Every edit replaces the file in one rename, so a worker that re-reads it (``KeyFile``, at most
once a second, when its modification time, size or inode changed) never sees half of it.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import logging
import re
import secrets
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from lib.core.atomic_file import replace_file

log = logging.getLogger("predict")

NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
HASH_RE = re.compile(r"[0-9a-f]{64}")
#: A new key: a recognisable prefix (secret scanners, logs a user pastes) and 256 random bits.
KEY_PREFIX = "bpk_"
KEY_ID_LENGTH = 12
#: How often a worker looks at the key file for a change, in seconds.
CHECK_SECONDS = 1.0


class KeyFileError(ValueError):
    """A key file that cannot be read or does not follow the format; the message says where."""


def key_hash(key: str) -> str:
    """The hex SHA-256 of a key, as the key file stores it."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class KeyLine:
    name: str
    hash: str

    @property
    def key_id(self) -> str:
        return self.hash[:KEY_ID_LENGTH]


def parse_lines(text: str, source: str) -> list[KeyLine]:
    """The key lines of a key file's text; KeyFileError names the first bad line."""
    lines = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, digest = line.partition(":")
        if not sep or not NAME_RE.fullmatch(name) or not HASH_RE.fullmatch(digest.lower()):
            raise KeyFileError(f"{source}, line {number}: expected NAME:SHA256 (a name of letters, digits, "
                               "'.', '_' or '-', then 64 hex digits)")
        lines.append(KeyLine(name, digest.lower()))
    return lines


def read_lines(path: Path) -> list[KeyLine]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise KeyFileError(f"cannot read the API key file {path}: {exc}") from None
    return parse_lines(text, str(path))


class KeyRing:
    """The keys one worker accepts: a presented key is hashed and compared with every stored hash."""

    def __init__(self, lines: Sequence[KeyLine]):
        self.entries = tuple((line.name, bytes.fromhex(line.hash)) for line in lines)
        self.names = frozenset(name for name, _ in self.entries)

    def identify(self, key: str) -> str | None:
        """The name whose key ``key`` is, or None.

        Hashes are compared, not keys, each in constant time, and the loop goes over every entry
        whatever matched: how long it takes depends on the number of keys, never on how much of
        a stored key the presented one shares.
        """
        digest = hashlib.sha256(key.encode("utf-8", "surrogateescape")).digest()
        found = None
        for name, stored in self.entries:
            if hmac.compare_digest(digest, stored):
                found = name
        return found


def _signature(path: Path) -> tuple[int, int, int] | None:
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_mtime_ns, stat.st_size, stat.st_ino


class KeyFile:
    """The key file of ``API_KEYS_FILE`` and the ring read from it, re-read when it changes.

    It must be readable and well-formed at start (KeyFileError otherwise: the service refuses to
    start rather than serve with no keys or all). Later, ``ring()`` looks at the file at most every
    ``check_seconds``; a changed file replaces the ring, and a missing or malformed one keeps the
    last good ring, logged (and counted by ``on_failure``) once per change of the file.
    """

    def __init__(self, path: Path, check_seconds: float = CHECK_SECONDS,
                 on_failure: Callable[[], None] | None = None, clock: Callable[[], float] = time.monotonic):
        self.path = path
        self.check_seconds = check_seconds
        self.on_failure = on_failure
        self.clock = clock
        self._signature = _signature(path)
        self._ring = KeyRing(read_lines(path))
        self._next_check = clock() + check_seconds

    def ring(self) -> KeyRing:
        now = self.clock()
        if now >= self._next_check:
            self._next_check = now + self.check_seconds
            self._reload_if_changed()
        return self._ring

    def _reload_if_changed(self) -> None:
        signature = _signature(self.path)
        if signature == self._signature:
            return
        self._signature = signature
        try:
            if signature is None:
                raise KeyFileError(f"the API key file {self.path} is gone")
            ring = KeyRing(read_lines(self.path))
        except KeyFileError as exc:
            log.error("%s; keeping the %d keys read before", exc, len(self._ring.entries))
            if self.on_failure is not None:
                self.on_failure()
            return
        self._ring = ring
        log.info("API keys re-read from %s: %d keys of %d names", self.path, len(ring.entries), len(ring.names))


# --- the command ------------------------------------------------------------------------------


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def write_lines(path: Path, lines: Sequence[KeyLine]) -> None:
    """Replace ``path`` with ``lines`` in one rename, keeping its mode (new: 0644). The file holds
    only hashes of 256-bit random keys, nothing to guess a key from, and the service may run as
    another user than the one who edits it (the image's uid 10001)."""
    header = "# API keys (python -m service.ops.keys): NAME:SHA256 of the key; the keys themselves are not kept\n"
    text = header + "".join(f"{line.name}:{line.hash}\n" for line in lines)
    replace_file(path, text.encode(), mode=path.stat().st_mode & 0o777 if path.exists() else 0o644)


def add(path: Path, name: str) -> tuple[str, KeyLine]:
    """A new key for ``name``, appended to the file (created if missing); returns the key."""
    if not NAME_RE.fullmatch(name):
        raise KeyFileError(f"invalid name {name[:70]!r}: use 1 to 64 letters, digits, '.', '_' or '-'")
    lines = read_lines(path) if path.exists() else []
    key = new_key()
    line = KeyLine(name, key_hash(key))
    write_lines(path, [*lines, line])
    return key, line


def remove(path: Path, name: str, old_only: bool) -> list[KeyLine]:
    """Remove ``name``'s keys (with ``old_only``, all but its newest); returns the removed lines."""
    lines = read_lines(path)
    own = [line for line in lines if line.name == name]
    if not own:
        raise KeyFileError(f"{path} has no key named {name!r}")
    removed = own[:-1] if old_only else own
    write_lines(path, [line for line in lines if line not in removed])
    return removed


def parse_args(argv: Sequence[str] | None, default_file: Path | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m service.ops.keys", description=__doc__.splitlines()[0])
    now = f", now {default_file}" if default_file else ""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--file", type=Path, default=default_file, help=f"the key file (default: API_KEYS_FILE{now})")
    commands = parser.add_subparsers(dest="command", required=True)
    add_ = commands.add_parser("add", parents=[common],
                               help="make a new key for NAME, store its hash, print the key once")
    add_.add_argument("name")
    commands.add_parser("list", parents=[common], help="the names and key ids in the file")
    remove_ = commands.add_parser("remove", parents=[common], help="remove NAME's keys")
    remove_.add_argument("name")
    remove_.add_argument("--old", action="store_true", help="keep NAME's newest key (the last step of a rotation)")
    args = parser.parse_args(argv)
    if args.file is None:
        parser.error("no key file: give --file PATH or set API_KEYS_FILE")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    from service.ops.settings import settings_or_exit

    args = parse_args(argv, settings_or_exit().api_keys_file)
    try:
        if args.command == "add":
            key, line = add(args.file, args.name)
            # The key on stdout alone (for scripts: KEY=$(python -m service.ops.keys add NAME)); the rest on stderr.
            print(key)
            print(f"added key {line.key_id} for {args.name} to {args.file}; the key is shown only this once",
                  file=sys.stderr)
        elif args.command == "list":
            for line in read_lines(args.file):
                print(f"{line.name}\t{line.key_id}")
        else:
            removed = remove(args.file, args.name, args.old)
            print(f"removed {len(removed)} key(s) of {args.name} from {args.file}: "
                  f"{', '.join(line.key_id for line in removed) or 'none'}", file=sys.stderr)
    except KeyFileError as exc:
        print(f"service.ops.keys: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
