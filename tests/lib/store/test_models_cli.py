"""``python -m lib.store``: list, show, verify, use (and roll back), add, seed; refusals exit 1
naming the problem."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from lib.core.artifacts import SCALER_FILE
from lib.store.cli import main
from lib.store.versions import ModelStore
from tests.lib.core.test_artifacts import flip_byte
from tests.support.live_server import PROJECT_DIR


def run(capsys, store, *args) -> tuple[int, str, str]:
    code = main(["--store", str(store.root), *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_list_marks_the_active_version_and_shows_each_ones_metrics(two_versions, capsys):
    store, a, b = two_versions
    code, out, _ = run(capsys, store, "list")
    assert code == 0
    lines = {line.split()[1] if line.startswith("*") else line.split()[0]: line for line in out.splitlines()[2:]}
    assert lines[a].startswith(f"* {a}") and lines[b].startswith(f"  {b}")
    test_auc = store.describe(b)["auc"]["test"]
    assert f"{test_auc:.4f}" in lines[b] and "0.6" in lines[b] and "12000 rows" in lines[b]
    run(capsys, store, "use", b)
    _, out, _ = run(capsys, store, "list")
    assert any(line.startswith(f"  {a}") and line.endswith("(previous)") for line in out.splitlines())


def test_list_shows_an_unusable_version_with_its_problem(two_versions, capsys):
    (two_versions.store.directory(two_versions.b) / "manifest.json").write_text("{}")
    _, out, _ = run(capsys, two_versions.store, "list")
    assert f"{two_versions.b}" in out and "UNUSABLE: manifest.json does not match its own checksum" in out


def test_show_prints_the_card_of_a_version(two_versions, capsys):
    store, _, b = two_versions
    code, out, _ = run(capsys, store, "show", b)
    manifest = json.loads((store.directory(b) / "manifest.json").read_text())
    assert code == 0 and out.startswith(f"version      {b}\n")
    assert manifest["training_data"]["sha256"] in out
    for variable in manifest["variables"]:
        assert f"{variable['coefficient']:.6f} ({variable['std_error']:.6f})" in out
    code, out, _ = run(capsys, store, "show", b, "--json")
    card = json.loads(out)
    assert code == 0 and card["model_version"] == b and "golden" not in card


def test_verify_passes_a_good_version_and_refuses_a_tampered_one(two_versions, capsys):
    store, _, b = two_versions
    assert run(capsys, store, "verify", b) == (
        0, f"version {b}: verified (sha256 of every file, library versions, golden row)\n", "")
    flip_byte(store.directory(b) / SCALER_FILE)
    assert run(capsys, store, "verify", b) == (
        1, "", f"refused: version {b}: scaler.pkl: sha256 does not match manifest.json; refusing to unpickle it\n")


def test_use_switches_and_use_previous_rolls_back(two_versions, capsys):
    store, a, b = two_versions
    code, out, _ = run(capsys, store, "use", b)
    assert code == 0 and out.startswith(f"active version: {b} (was {a});")
    assert store.pointer().version == b
    code, out, _ = run(capsys, store, "use", "previous")
    assert code == 0 and out.startswith(f"active version: {a} (was {b});")
    assert store.pointer().version == a


def test_use_refuses_a_missing_version_and_the_pointer_stays(two_versions, capsys):
    store, a, _ = two_versions
    code, out, err = run(capsys, store, "use", "2020-01-01-000000000000")
    assert (code, out) == (1, "")
    assert err.startswith("refused: no version 2020-01-01-000000000000 in the model store (versions: ")
    assert store.pointer().version == a


def test_add_copies_a_trained_directory_once(other_model_dir, tmp_path, capsys):
    store = ModelStore(tmp_path / "store")
    version = json.loads((other_model_dir / "manifest.json").read_text())["model_version"]
    assert run(capsys, store, "add", str(other_model_dir)) == (0, f"added version {version}\n", "")
    assert run(capsys, store, "add", str(other_model_dir)) == (0, f"version {version} is already in the store\n", "")
    assert store.versions() == [version]


def test_seed_copies_another_store(two_versions, tmp_path, capsys):
    target = ModelStore(tmp_path / "target")
    code, out, _ = run(capsys, target, "seed", str(two_versions.store.root))
    assert code == 0 and out.endswith(f"; active: {two_versions.a}\n")
    assert sorted(target.versions()) == sorted([two_versions.a, two_versions.b])


@pytest.mark.parametrize("args", [[], ["use"], ["frobnicate"], ["show"]])
def test_bad_usage_exits_2(args, capsys):
    with pytest.raises(SystemExit) as exited:
        main(args)
    assert exited.value.code == 2


def test_it_runs_as_a_module(two_versions):
    done = subprocess.run([sys.executable, "-m", "lib.store", "--store", str(two_versions.store.root), "list"],
                          cwd=PROJECT_DIR, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and f"* {two_versions.a}" in done.stdout


def test_a_reader_that_stops_early_is_no_failure(two_versions, monkeypatch):
    # `show VERSION | head -1`: stdout is a pipe whose reader has gone.
    read_end, write_end = os.pipe()
    os.close(read_end)
    with open(write_end, "w") as gone:
        monkeypatch.setattr(sys, "stdout", gone)
        assert main(["--store", str(two_versions.store.root), "show", two_versions.a]) == 0



def test_path_prints_a_versions_directory(two_versions, capsys):
    store, a, b = two_versions
    assert run(capsys, store, "path") == (0, f"{store.directory(a)}\n", "")
    assert run(capsys, store, "path", b) == (0, f"{store.directory(b)}\n", "")
    code, out, err = run(capsys, store, "path", "nope")
    assert (code, out) == (1, "")
    assert "no version nope in the model store" in err
