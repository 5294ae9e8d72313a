"""The README's commands, run as written against a live server, so that the README cannot drift.

Every indented code line of README.md that starts with ``curl `` and targets ``localhost:1313``
is run with ``bash`` from the project's directory, the address replaced by the test server's;
its exit code must be 0 and its output (or the file it writes with ``-o``) of the shape the
README describes. The README's ``.venv/bin/python -c`` lines, which make the input files of
those commands, run first; ``/tmp/`` in any of them stands for a private directory of the test. The one-row answer must
be the one the README prints. The files the README sends with ``@`` must exist after setup, and
every module it runs with ``.venv/bin/python -m`` must be importable.

Skipped: the curl of the training section, whose file is a placeholder for the exercise's own
test file (``@/path/to/exercise_26_test.csv``), which is not part of the repository;
tests/lib/training/test_real_data.py runs that command on a file of the same layout.
"""

from __future__ import annotations

import csv
import hashlib
import importlib.util
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lib.core.schema import ID_KEY
from lib.store.versions import ModelStore
from service.ops.settings import MB, Settings
from tests.support.live_server import PROJECT_DIR, wait_for
from tests.support.metrics_text import metric_families

README = (PROJECT_DIR / "README.md").read_text()
#: The address the README's examples use.
README_ADDRESS = re.compile(r"\b(?:localhost|127\.0\.0\.1):1313\b")
#: A path that stands for the reader's own file (the exercise's data), not a file of this project.
PLACEHOLDER = "/path/to/"
DATA_OPTIONS = ("-d", "--data", "--data-binary", "--data-raw")
ROW_KEYS = {"probability_positiveclass", "selected_features", "predicted_class"}
#: ``GET /model``'s ``limits``, as the README names them, with the defaults it documents.
DEFAULT_LIMITS = {"max_rows": 100_000, "max_body_bytes": 400 * MB, "timeout_seconds": 300,
                  "graceful_timeout_seconds": 30, "max_listed_errors": 100}

needs_curl = pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")


def code_lines(text: str) -> list[str]:
    """The indented code lines of a Markdown text, stripped, a line ending in ``\\`` joined with
    the next one."""
    lines, pending = [], ""
    for line in text.splitlines():
        if not (line.startswith("    ") or line.startswith("\t")):
            pending = ""
            continue
        code = pending + line.strip()
        if code.endswith("\\"):
            pending = code[:-1]
            continue
        pending = ""
        lines.append(code)
    return lines


def service_commands(text: str) -> list[str]:
    """The README's curl commands against the service."""
    return [line for line in code_lines(text) if line.startswith("curl ") and README_ADDRESS.search(line)]


def setup_commands(text: str) -> list[str]:
    """The README's one-line Python programs that make the input files of the curl commands."""
    return [line for line in code_lines(text) if line.startswith(".venv/bin/python -c ")]


#: The README's section on API keys: its commands need a server with keys on, and run in
#: test_the_api_keys_section_runs_as_written; every other curl runs against a server without.
ACCESS_CONTROL = README[README.index("## Access control\n"):README.index("### Rate limits\n")]
COMMANDS = service_commands(README.replace(ACCESS_CONTROL, ""))
SETUP = setup_commands(README)
#: Where the README's commands keep their files.
README_TMP = "/tmp/"
NDJSON = "application/x-ndjson"
TABLE_TYPES = ("application/vnd.apache.parquet", "application/vnd.apache.arrow.stream")


def command_param(command: str):
    needs_own_file = PLACEHOLDER in command
    marks = [pytest.mark.skip(reason=f"needs the reader's own file ({PLACEHOLDER}...)")] if needs_own_file else []
    return pytest.param(command, id=command[:90], marks=marks)


def url_of(command: str) -> str:
    """The URL a README command requests (the ``localhost:1313`` word of its first part)."""
    words = shlex.split(command.split("|")[0])
    return next(word for word in words if README_ADDRESS.search(word))


def sent_rows(command: str, tmp: Path) -> list[dict]:
    """The rows a ``POST /predict`` command sends: its JSON object, array or columns, its CSV's
    rows, its NDJSON lines, its Parquet file's rows."""
    words = shlex.split(command.split("|")[0])
    data = next(words[i + 1] for i, word in enumerate(words) if word in (*DATA_OPTIONS, "-T"))
    path = Path(data.removeprefix("@").replace(README_TMP, f"{tmp}/"))
    if data.endswith(".parquet"):
        return pd.read_parquet(PROJECT_DIR / path).to_dict(orient="records")
    body = (PROJECT_DIR / path).read_text() if data.startswith("@") or "-T" in words else data
    if "text/csv" in command or data.endswith(".csv"):
        return list(csv.DictReader(body.splitlines()))
    if NDJSON in command:
        return [json.loads(line) for line in body.splitlines() if line.strip()]
    rows = json.loads(body)
    if "input=columns" in command:
        return [dict(zip(rows, cells, strict=True)) for cells in zip(*rows.values(), strict=True)]
    return [rows] if isinstance(rows, dict) else rows


def written_file(command: str, tmp: Path) -> Path | None:
    """The file a command writes its answer to (``-o``), if any."""
    words = shlex.split(command)
    return Path(words[words.index("-o") + 1].replace(README_TMP, f"{tmp}/")) if "-o" in words else None


def printed_answer(command: str) -> list[dict]:
    """The answer the README prints after ``command``: the first indented line after it that is JSON."""
    after = README[README.index(command) + len(command):]
    line = next(line for line in code_lines(after) if line.startswith(("[", "{")))
    return json.loads(line)


@pytest.fixture(scope="module")
def readme_tmp(tmp_path_factory, data_dir) -> Path:
    """The test's stand-in for the README's /tmp/, holding the files its setup lines make."""
    tmp = tmp_path_factory.mktemp("readme")
    for command in SETUP:
        done = subprocess.run(["bash", "-c", command.replace(README_TMP, f"{tmp}/")], cwd=PROJECT_DIR,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, f"{command!r} exited with {done.returncode}: {done.stderr[-2000:]}"
    return tmp


@pytest.fixture(scope="module")
def run(server, readme_tmp):
    """Runs a README command as written against the live server (once per command); returns its output."""
    outputs: dict[str, str] = {}
    address = server.url.removeprefix("http://")

    def run_command(command: str) -> str:
        if command not in outputs:
            runnable = README_ADDRESS.sub(address, command).replace(README_TMP, f"{readme_tmp}/")
            done = subprocess.run(["bash", "-o", "pipefail", "-c", runnable],
                                  cwd=PROJECT_DIR, capture_output=True, text=True, timeout=120)
            assert done.returncode == 0, f"{command!r} exited with {done.returncode}: {done.stderr[-2000:]}"
            outputs[command] = done.stdout
        return outputs[command]

    return run_command


def check_rows_answer(answer: object, rows: list[dict], reasons: int | None = None) -> None:
    """One result per row, in order: a prediction (with ``reasons`` of that many entries when
    asked for), or (``?errors=inline``) the row's error object."""
    assert isinstance(answer, list) and len(answer) == len(rows)
    for index, (result, row) in enumerate(zip(answer, rows, strict=True)):
        if "errors" in result:
            assert result["index"] == index and result["errors"]
            continue
        assert ROW_KEYS <= set(result) <= ROW_KEYS | {ID_KEY} | ({"reasons"} if reasons else set())
        assert len(result.get("reasons", ())) == (reasons or 0)
        assert 0.0 <= result["probability_positiveclass"] <= 1.0
        assert result["predicted_class"] in (0, 1)
        assert result.get(ID_KEY) == row.get(ID_KEY)


def check_columns_answer(answer: object, rows: list[dict]) -> None:
    """Parallel arrays of one entry per row."""
    assert isinstance(answer, dict) and ROW_KEYS <= set(answer)
    assert len(answer["probability_positiveclass"]) == len(answer["predicted_class"]) == len(rows)
    assert all(0.0 <= p <= 1.0 for p in answer["probability_positiveclass"] if p is not None)
    assert set(answer["predicted_class"]) <= {0, 1, None}
    if any(ID_KEY in row for row in rows):
        assert answer[ID_KEY] == [row.get(ID_KEY) for row in rows]


def check_table_answer(path: Path, rows: list[dict]) -> None:
    """A table of one row per input row: the scores, typed, and the ids when rows had them."""
    table = pq.read_table(path) if path.suffix == ".parquet" else pa.ipc.open_stream(path.read_bytes()).read_all()
    assert table.schema.field("probability_positiveclass").type == pa.float64()
    assert table.schema.field("predicted_class").type == pa.int8()
    assert table.num_rows == len(rows) > 0
    assert all(0.0 <= p <= 1.0 for p in table.column("probability_positiveclass").to_pylist())
    assert (ID_KEY in table.column_names) == any(row.get(ID_KEY) is not None for row in rows)


def check_answer(command: str, output: str, model_dir, tmp: Path) -> None:
    """``output`` has the shape the README describes for the path ``command`` requests."""
    url = urlsplit("http://" + url_of(command).removeprefix("http://"))
    if url.path == "/metrics":
        assert metric_families(output)["model_info"].type == "gauge"
        return
    if (path := written_file(command, tmp)) is not None:
        assert output == ""
        assert any(f"Accept: {media_type}" in command for media_type in TABLE_TYPES)
        check_table_answer(path, sent_rows(command, tmp))
        return
    if NDJSON in command:
        output = "[" + ",".join(output.splitlines()) + "]"
    answer = json.loads(output)
    manifest = json.loads((model_dir / "manifest.json").read_text())
    if url.path == "/predict":
        rows = sent_rows(command, tmp)
        query = parse_qs(url.query)
        explain = query.get("explain", [None])[0]
        reasons = len(manifest["variables"]) if explain == "all" else int(explain) if explain else None
        if query.get("format") == ["columns"]:
            check_columns_answer(answer, rows)
        else:
            check_rows_answer(answer, rows, reasons)
    elif url.path == "/health":
        assert answer == {"status": "ok"}
    elif url.path == "/ready":
        assert answer == {"status": "ready", "model_version": manifest["model_version"]}
    elif url.path == "/model":
        assert answer["model_version"] == manifest["model_version"]
        assert answer["limits"] == DEFAULT_LIMITS
        assert "golden" not in answer
    elif url.path == "/models":
        assert answer["active_version"] == answer["serving_version"] == manifest["model_version"]
        assert manifest["model_version"] in [entry["version"] for entry in answer["versions"]]
    elif url.path == "/openapi.json":
        assert answer["openapi"].startswith("3.1") and "/predict" in answer["paths"]
    else:
        pytest.fail(f"no expected answer for {url.path} (README command {command!r}): add one to this test")


@pytest.mark.server
@needs_curl
@pytest.mark.parametrize("command", [command_param(c) for c in COMMANDS])
def test_the_readme_command_answers_as_documented(command, run, model_dir, readme_tmp):
    check_answer(command, run(command), model_dir, readme_tmp)


def test_the_readme_shows_the_examples_of_the_quick_start():
    required = ["@docs/examples/row.json", "@docs/examples/rows.csv", "@lib/data/test.json", "?format=columns",
                "/model", "/metrics", "/ready", "/health", "@docs/examples/columns.json", "@/tmp/test.parquet",
                "Accept: application/vnd.apache.parquet", "@docs/examples/rows.ndjson", "-T /tmp/test.ndjson"]
    assert [part for part in required if not any(part in command for command in COMMANDS)] == []


def one_row_command() -> str:
    (command,) = [c for c in COMMANDS if "@docs/examples/row.json" in c and "?" not in c]
    return command


@pytest.mark.server
@needs_curl
@pytest.mark.parametrize("command", [c for c in COMMANDS if "@docs/examples/row.json" in c])
def test_every_example_of_the_one_row_answers_what_the_readme_prints(command, run):
    # Exactly: the README prints the floats as the service encodes them, and scoring is deterministic.
    assert json.loads(run(command)) == printed_answer(command)


def printed_probability() -> float:
    (result,) = printed_answer(one_row_command())
    return result["probability_positiveclass"]


@pytest.mark.server
@needs_curl
def test_the_one_row_example_answers_what_the_readme_prints(run):
    printed = printed_answer(one_row_command())
    answer = json.loads(run(one_row_command()))
    # Exactly: the README prints the float as the service encodes it, and scoring is deterministic.
    assert answer == printed


@pytest.mark.server
@needs_curl
def test_the_parquet_examples_score_the_test_rows_as_the_json_request_does(run, readme_tmp):
    # The README makes the Parquet file from lib/data/test.json; parsed exactly, every row must
    # score bit for bit as the JSON request of the same file does.
    [as_json] = [c for c in COMMANDS if c.endswith("--data-binary @lib/data/test.json") and "?" not in c]
    expected = [row["probability_positiveclass"] for row in json.loads(run(as_json))]
    table_commands = [c for c in COMMANDS if "@/tmp/test.parquet" in c]
    assert len(table_commands) == 2
    for command in table_commands:
        output = run(command)
        if (path := written_file(command, readme_tmp)) is not None:
            got = pq.read_table(path).column("probability_positiveclass").to_pylist()
        else:
            got = [row["probability_positiveclass"] for row in json.loads(output)]
        assert got == expected, command


@pytest.mark.server
@needs_curl
@pytest.mark.parametrize("example", ["@docs/examples/rows.csv", "@docs/examples/columns.json",
                                     "@docs/examples/rows.ndjson"])
def test_the_three_row_examples_score_the_one_row_example_as_row_r1_and_agree(run, example):
    (command,) = [c for c in COMMANDS if example in c]
    output = run(command)
    answer = [json.loads(line) for line in output.splitlines()] if NDJSON in command else json.loads(output)
    assert [result[ID_KEY] for result in answer] == ["r1", "r2", "r3"]
    assert answer[0]["probability_positiveclass"] == printed_probability()
    (csv_command,) = [c for c in COMMANDS if "@docs/examples/rows.csv" in c]
    assert answer == json.loads(run(csv_command))
    # The messy cells of r2 and r3 change the answer: the example shows more than one row's worth.
    assert len({result["probability_positiveclass"] for result in answer}) == 3


def test_the_example_row_file_is_the_documented_row():
    from lib.core.example_row import EXAMPLE_ROW, row_json
    from service.http.openapi_predict import EXAMPLE_ROW as SHOWN_ROW

    # Byte for byte: the file is lib.core.example_row's row serialised (python -m lib.core.example_row writes it).
    assert (PROJECT_DIR / "docs" / "examples" / "row.json").read_text() == row_json()
    assert json.loads(row_json()) == EXAMPLE_ROW
    assert SHOWN_ROW is EXAMPLE_ROW


# Files in /tmp/ are made by the README's setup lines (checked by running them).
SENT_FILES = sorted({path for line in code_lines(README) for path in re.findall(r"(?<![\w/])@([\w./-]+)", line)
                     if not path.startswith((PLACEHOLDER, README_TMP))})


def test_the_readme_sends_the_example_files():
    assert {"docs/examples/row.json", "docs/examples/rows.csv", "lib/data/test.json"} <= set(SENT_FILES)


@pytest.mark.parametrize("path", SENT_FILES)
def test_every_file_the_readme_sends_exists_after_setup(path, data_dir):
    assert (PROJECT_DIR / path).is_file()


MODULES = sorted(set(re.findall(r"\.venv/bin/python -m ([A-Za-z_][\w.]*)", README)))


def test_the_readme_names_the_tools_to_run():
    assert {"lib.training.train", "lib.training.synth", "bench.run", "bench.overhead", "bench.decoders"} <= set(MODULES)


@pytest.mark.parametrize("module", MODULES)
def test_every_module_the_readme_runs_is_importable(module):
    assert importlib.util.find_spec(module) is not None


@pytest.mark.parametrize("variable", sorted(Settings.variables().values()))
def test_every_setting_is_documented(variable):
    assert f"`{variable}`" in README


@pytest.mark.parametrize("stale", ["KEEPALIVE", "FIGURES_DIR", "SPEC §", "predict_endpoint.py", "http_shared.py",
                                   "api_schema.py", "JSON is malformed"])
def test_the_readme_names_nothing_that_is_gone(stale):
    assert stale not in README


def models_commands() -> list[str]:
    """The commands of README "Models" that run the project's tools, in order, comments cut."""
    section = README[README.index("\n## Models\n"):README.index("\n## Benchmarks")]
    return [line.split("  #")[0].strip() for line in code_lines(section) if line.startswith(".venv/bin/python -m lib.")]


def test_the_models_commands_train_check_switch_and_roll_back_as_written(model_dir, tmp_path):
    """README "Models" as written, on a store and data of the test's own: `--store` and the data
    directory are the only words changed."""
    commands = models_commands()
    assert [c.split()[2] for c in commands] == ["lib.training.synth", "lib.training.train", "lib.store", "lib.store",
                                                "lib.store", "lib.store", "lib.store"]
    store = ModelStore(tmp_path / "store")
    first, _ = store.add(model_dir)
    store.use(first)  # as ./run_api.sh leaves a fresh clone
    outputs = []
    for command in commands:
        words = shlex.split(command.replace("lib/data/", f"{tmp_path}/data/"))
        words[0] = sys.executable
        if words[2] == "lib.store":
            words[3:3] = ["--store", str(store.root)]
        elif words[2] == "lib.training.train":
            words += ["--store", str(store.root)]
        done = subprocess.run(words, cwd=PROJECT_DIR, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, f"{command}: {done.stderr[-2000:]}"
        outputs.append(done.stdout)
        if words[2] == "lib.training.train":
            (new,) = set(store.versions()) - {first}
            assert store.pointer().version == first, "training must not switch"
    listed, shown, verified, used, rolled_back = outputs[2:]
    assert f"* {first}" in listed and f"  {new}" in listed
    assert shown.startswith(f"version      {new}\n")
    assert verified.startswith(f"version {new}: verified")
    assert used.startswith(f"active version: {new} (was {first})")
    assert rolled_back.startswith(f"active version: {first} (was {new})")
    assert store.pointer().version == first


def test_the_command_extraction_joins_continued_lines_and_ignores_prose():
    text = ("prose curl localhost:1313/x\n\n    curl -s localhost:1313/a \\\n        -d '{}'\n"
            "    # curl localhost:1313/b\n")
    assert service_commands(text) == ["curl -s localhost:1313/a -d '{}'"]


@pytest.mark.server
@needs_curl
def test_the_api_keys_section_runs_as_written(start_server, tmp_path):
    """The section's commands in order, as one reader would type them: make a key, start the server
    on the file (the test's server stands in for ``./run_api.sh``), call with the key two ways, be
    refused without it, rotate it. The repository's deploy/keys/ stands for the test's directory."""
    keys_dir = "deploy/keys/"
    lines = [line for line in code_lines(ACCESS_CONTROL)
             if line.startswith((".venv/bin/python", "NEW=", "curl ", "API_KEYS_FILE="))]
    start = next(i for i, line in enumerate(lines) if line.endswith("./run_api.sh"))
    compose = next(i for i, line in enumerate(lines) if "docker compose" in line)
    before, after = lines[:start], lines[start + 1:compose - 1]  # the compose example is the containers'

    def run(script: list[str], env: dict[str, str] | None = None, address: str = "") -> str:
        text = "\n".join(["set -euo pipefail", *script]).replace(keys_dir, f"{tmp_path}/")
        done = subprocess.run(["bash", "-c", README_ADDRESS.sub(address, text) if address else text],
                              cwd=PROJECT_DIR, capture_output=True, text=True, timeout=120,
                              env={**os.environ, **(env or {})})
        assert done.returncode == 0, done.stderr[-2000:]
        return done.stdout

    key = run(before).strip()  # what `add` printed
    assert key.startswith("bpk_") and key not in (tmp_path / "api-keys").read_text()
    served = lines[start].split("=", 1)[1].split()[0].replace(keys_dir, f"{tmp_path}/")
    server = start_server({"API_KEYS_FILE": served}, workers=2)
    address = server.url.removeprefix("http://")
    # A newline after each answer (curl prints none), so that each is a line of its own.
    out = run([line + "; echo" if line.startswith("curl ") else line for line in after] + ['echo "NEW=$NEW"'],
              {"KEY": key}, address)

    answers = [line for line in out.splitlines() if line.startswith(("[", "{"))]
    assert json.loads(answers[0])[0]["probability_positiveclass"] == 0.38306861582266416
    assert json.loads(answers[1])["active_version"]
    assert "HTTP/1.1 401 Unauthorized" in out and 'WWW-Authenticate: Bearer realm="batch-predict"' in out
    assert json.loads(answers[2])["error"] == "unauthorized"
    # The section's own 401 printout matches what the server said.
    printed = next(line for line in code_lines(ACCESS_CONTROL) if line.startswith('{"error":"unauthorized"'))
    assert json.loads(printed) == json.loads(answers[2])
    new = out.rsplit("NEW=", 1)[1].strip()
    listed = [line.split("\t") for line in out.splitlines() if line.startswith("alice\t")]
    assert listed == [["alice", hashlib.sha256(new.encode()).hexdigest()[:12]]]
    # Rotated: within a second or so, every worker takes the new key and refuses the old one.
    import requests

    def status(value: str) -> int:
        return requests.get(server.url + "/models", headers={"X-API-Key": value}, timeout=30).status_code

    wait_for(lambda: all(status(key) == 401 for _ in range(6)), 15, "the old key refused")
    assert all(status(new) == 200 for _ in range(6))


def github_anchor(heading: str) -> str:
    """The anchor GitHub makes of a heading: lower case, punctuation but '-' and '_' dropped,
    spaces to '-'."""
    text = re.sub(r"[`*]", "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors_of(path: Path) -> set[str]:
    headings = [line.lstrip("#").strip() for line in path.read_text().splitlines() if re.match(r"#{1,6} ", line)]
    return {github_anchor(heading) for heading in headings}


MARKDOWN = [PROJECT_DIR / "README.md", *sorted((PROJECT_DIR / "docs").glob("*.md"))]


@pytest.mark.parametrize("page", MARKDOWN, ids=lambda page: page.name)
def test_every_link_to_a_section_finds_it(page):
    """Links like [x](#section) and [x](docs/PAGE.md#section) name a heading that exists, and
    links to project files name files that exist."""
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
        if re.match(r"[a-z]+:", target):
            continue  # http:, https:, mailto:
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        if not linked.exists():
            broken.append(target)
        elif anchor and linked.suffix == ".md" and anchor not in anchors_of(linked):
            broken.append(target)
    assert broken == []
