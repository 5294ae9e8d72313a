"""The model store's command line: list, show, verify and switch versions (lib/store/versions.py).

    python -m lib.store [--store DIR] list
    python -m lib.store [--store DIR] show VERSION [--json]
    python -m lib.store [--store DIR] verify VERSION
    python -m lib.store [--store DIR] use VERSION          # verify, then move the active pointer
    python -m lib.store [--store DIR] add DIRECTORY        # copy in a version trained elsewhere
    python -m lib.store [--store DIR] seed OTHER_STORE     # add OTHER's versions; its active one if none

VERSION is a version name, ``latest`` (the newest) or ``previous`` (the one active before the
current one: ``use previous`` rolls back). Servers that read the store follow its pointer by
themselves. Exit status: 0 done, 1 refused (the message names the problem), 2 bad usage.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from lib.core.artifacts import read_manifest
from lib.core.errors import ArtifactError
from lib.store.versions import ALIASES, DEFAULT_STORE, ModelStore, Pointer


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m lib.store", description=__doc__.splitlines()[0])
    parser.add_argument("--store", type=Path, default=DEFAULT_STORE,
                        help="the model store (default: %(default)s; a server's MODEL_STORE)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser("list", help="every version, * marking the active one, with its metrics")
    version_help = f"a version name, or {' or '.join(ALIASES)}"
    show = commands.add_parser("show", help="a version's model card: data, metrics, variables")
    show.add_argument("version", help=version_help)
    show.add_argument("--json", action="store_true", help="the whole manifest (less the golden row) as JSON")
    for name, text in (("verify", "check a version as a server loads it: sha256, library versions, golden row"),
                       ("use", "verify a version, then make it the active one")):
        command = commands.add_parser(name, help=text)
        command.add_argument("version", help=version_help)
        command.add_argument("--allow-version-mismatch", action="store_true",
                             help="accept pickles written by other library versions (as ALLOW_VERSION_MISMATCH=1)")
    path = commands.add_parser("path", help="the directory of a version (default: the active one), for tools "
                                            "that read a model directory (spark-submit --files)")
    path.add_argument("version", nargs="?", help=version_help + " (default: the active version)")
    add = commands.add_parser("add", help="copy a version directory (python -m lib.training.train --out DIR) "
                                          "into the store")
    add.add_argument("directory", type=Path)
    seed = commands.add_parser("seed", help="add another store's missing versions; use its active one if none is")
    seed.add_argument("other", type=Path)
    return parser.parse_args(argv)


def list_versions(store: ModelStore) -> str:
    """The ``list`` table: one line per version, oldest first, ``*`` on the active one."""
    entries = store.catalog()
    if not entries:
        return f"no versions in {store.root}: train one with `python -m lib.training.train`"
    pointer = _pointer_or_none(store)
    lines = [f"model store {store.root}",
             f"  {'VERSION':<26}{'CREATED':<27}{'AUC TEST':>9}{'THRESHOLD':>11}  TRAINING DATA"]
    for entry in entries:
        mark = "*" if entry["active"] else " "
        if "error" in entry:
            lines.append(f"{mark} {entry['version']:<26}UNUSABLE: {entry['error']}")
            continue
        data = entry["training_data"]
        note = "  (previous)" if pointer is not None and entry["version"] == pointer.previous else ""
        lines.append(f"{mark} {entry['version']:<26}{entry['created_at']:<27}{entry['auc']['test']:>9.4f}"
                     f"{entry['threshold']:>11.4g}  {data['file']}, {data['rows']} rows, sha256 {data['sha256'][:12]}"
                     f"{note}")
    if pointer is None:
        lines.append("no active version: python -m lib.store use VERSION")
    return "\n".join(lines)


def show_version(store: ModelStore, version: str, as_json: bool) -> str:
    """The ``show`` text: what the model card says, for a version in the store."""
    manifest = read_manifest(store.directory(version))
    card = {key: value for key, value in manifest.items() if key != "golden"}
    if as_json:
        return json.dumps(card, indent=2)
    data, metrics = manifest["training_data"], manifest["metrics"]
    lines = [
        f"version      {manifest['model_version']}",
        f"created at   {manifest['created_at']}",
        f"trained on   {data['file']}: {data['rows']} rows, {data['positive_share']:.1%} positive, "
        f"sha256 {data['sha256']}",
        "AUC          " + ", ".join(f"{split} {auc:.4f}" for split, auc in metrics["auc"].items()),
        f"threshold    {manifest['threshold']:.6g} ({manifest['threshold_rule']})",
        "libraries    " + ", ".join(f"{name} {v}" for name, v in manifest["library_versions"].items()),
        f"variables    {len(manifest['variables'])}, coefficient (standard error):",
    ]
    lines += [f"  {v['name']:<16}{v['coefficient']:>12.6f} ({v['std_error']:.6f})" for v in manifest["variables"]]
    return "\n".join(lines)


def _pointer_or_none(store: ModelStore) -> Pointer | None:
    try:
        return store.pointer()
    except ArtifactError:
        return None


def run(args: argparse.Namespace) -> str:
    """Carry out one command; return what to print. Raises ArtifactError when refused."""
    store = ModelStore(args.store)
    if args.command == "list":
        return list_versions(store)
    if args.command == "add":
        version, added = store.add(args.directory)
        return f"added version {version}" if added else f"version {version} is already in the store"
    if args.command == "seed":
        added = store.seed(ModelStore(args.other))
        return f"added {len(added)} versions: {', '.join(added) or 'none'}; active: {store.pointer().version}"
    if args.command == "path":
        return str(store.active()[1] if args.version is None else store.directory(store.resolve(args.version)))
    version = store.resolve(args.version)
    if args.command == "show":
        return show_version(store, version, args.json)
    if args.command == "verify":
        store.verify(version, args.allow_version_mismatch)
        return f"version {version}: verified (sha256 of every file, library versions, golden row)"
    before = _pointer_or_none(store)
    pointer = store.use(version, args.allow_version_mismatch)
    was = f" (was {before.version})" if before is not None and before.version != version else ""
    return (f"active version: {pointer.version}{was}; servers reading this store switch to it within "
            f"their MODEL_POLL_SECONDS")


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point."""
    args = parse_args(argv)
    try:
        output = run(args)
    except ArtifactError as exc:
        print(f"refused: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # e.g. a store this user may read but not write
        print(f"failed: {exc}", file=sys.stderr)
        return 1
    try:
        print(output, flush=True)
    except BrokenPipeError:  # `show VERSION | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


if __name__ == "__main__":
    sys.exit(main())
