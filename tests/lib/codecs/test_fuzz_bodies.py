"""Structural fuzzing of request bodies: valid Arrow IPC and Parquet bodies mutated field by
field (tests/support/mutators.py), JSON rows, JSON columns, CSV and NDJSON byte by byte, each sent to one
live gunicorn server (2 workers), then the same files given to the file command and a few to the
Spark job.

For every body: no 5xx, a JSON answer, the workers still the same processes, their memory grown
by no more than the decoded-size budget (MAX_DECODED_MB) plus a margin, and a 200 only where the
answer is the JSON answer for the rows the body really holds. What a body holds is decoded here,
independently of the service: Arrow with ``pa.ipc`` and ``validate(full=True)``, Parquet with
pyarrow plus the footer's counts checked against the data, both in a sandboxed child
(tests/support/sandbox.py) since a crafted body may crash the reader; the text formats with the stdlib,
strictly (UTF-8, no duplicate keys or header names, no NaN, rectangular CSV). Where that decoding
fails, the server must answer 4xx.

Each format gets FUZZ_BODIES bodies (default 250) from a fixed seed and as many from FUZZ_SEED
(default: random, printed in the test header and in every failure), so each run tries 500 bodies
per format. A failure names the format, seed, body index, mutation, status and message; the body
is rebuilt from them alone (``mutant(fmt, seed, index)``).
"""

from __future__ import annotations

import collections
import csv
import decimal
import io
import json
import os
import random
import resource
import shutil
import struct
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.ipc
import pyarrow.parquet as pq
import pytest
import requests

from lib.codecs.answer_table import ERROR, PREDICTED_CLASS, PROBABILITY
from lib.codecs.media import ARROW, CSV, JSON, NDJSON, PARQUET
from lib.core.schema import ID_KEY
from service.ops.settings import Settings
from tests.conftest import FUZZ_SEED, TEST_JSON
from tests.lib.spark.test_spark import spark  # noqa: F401 - the Spark part runs on test_spark.py's session
from tests.support.live_server import LiveServer, wait_for
from tests.support.mutators import (
    BOM,
    FMD_NUM_ROWS,
    UNSUPPORTED,
    ArrowBody,
    Holds,
    Mutant,
    ParquetBody,
    expectations,
    mutate_arrow,
    mutate_parquet,
    mutate_text,
)
from tests.support.sandbox import Died, Sandbox

pytestmark = pytest.mark.server

FIXED_SEED = 20261207
BODIES = int(os.environ.get("FUZZ_BODIES", "250"))
#: Per run, through the file command: this many mutated files of each seed and format.
FILES = {"parquet": 25, "csv": 13, "ndjson": 12}
#: Per run, through the Spark job (seconds each): this many mutated files of the random seed.
SPARK_FILES = {"parquet": 5, "csv": 5}
FORMATS = ("arrow", "parquet", "json_rows", "json_columns", "csv", "ndjson")
CONTENT_TYPES = {"arrow": ARROW, "parquet": PARQUET, "json_rows": JSON, "json_columns": JSON, "csv": CSV,
                 "ndjson": NDJSON}
QUERIES = {"json_columns": "?input=columns&format=columns&errors=inline", "ndjson": "?errors=inline"}
ROWS = 30
#: The consumed columns the bodies carry (x53 as an int64 column in the Arrow and Parquet bodies),
#: and one the model does not consume.
COLUMNS = ("x5", "x12", "x31", "x44", "x53", "x81", "x0")
#: The decoded-size budget (the setting's default) and the growth allowed above it: what the
#: worker holds besides the decoded columns while it scores them (the request's bytes, the
#: answer, allocator slack).
BUDGET_MB = Settings().max_decoded_mb
MARGIN_MB = 64
#: Address space a worker may take before the kernel refuses it more: far above budget + margin
#: (so the growth check, not this, finds a bomb), far below what would starve the other tests.
WORKER_ADDRESS_SPACE = 6 * 1024**3
TIMEOUT = (5, 60)
WORKERS = 2
#: Bodies sent at once: an NDJSON answer waits for the client's 0.2 s pause (service/http/streaming.py),
#: time the other worker can use; the others are CPU-bound and go one by one, so that a worker's
#: death or growth is the doing of one body.
LANES = {"ndjson": 2}
#: Failures listed in an assertion message (all are counted).
SHOWN = 25


# -- Valid bodies --------------------------------------------------------------------------------

def sample_rows() -> list[dict]:
    """ROWS test rows, the COLUMNS only, with an ``id`` and some missing cells."""
    rows = json.loads(TEST_JSON.read_bytes())[:ROWS]
    chosen = [{ID_KEY: f"r{i}", **{c: row.get(c) for c in COLUMNS}} for i, row in enumerate(rows)]
    for i in range(0, ROWS, 7):
        chosen[i]["x31"] = None
        chosen[i + 1]["x44"] = None
    return chosen


def _arrow_table(rows: list[dict], variant: str) -> pa.Table:
    table = pa.Table.from_pylist(rows)
    table = table.set_column(table.schema.get_field_index("x53"), "x53",
                             pa.array([None if r["x53"] is None else round(r["x53"] * 1000) for r in rows],
                                      pa.int64()))
    if variant in ("int_id", "compressed"):
        table = table.set_column(0, ID_KEY, pa.array(range(len(rows)), pa.int64()))
    if variant in ("dictionary", "delta", "replacement", "file", "index8"):
        index = pa.int8() if variant == "index8" else pa.int32()
        for name in ("x5", "x31"):
            position = table.schema.get_field_index(name)
            encoded = table.column(name).cast(pa.string()).dictionary_encode()
            table = table.set_column(position, name, encoded.cast(pa.dictionary(index, pa.string())))
    if variant == "views":
        for name, kind in (("x12", pa.string_view()), ("x81", pa.large_string()), ("x5", pa.string_view())):
            table = table.set_column(table.schema.get_field_index(name), name, table.column(name).cast(kind))
    return table


def _chunked_dictionaries(table: pa.Table, growing: bool) -> list[pa.RecordBatch]:
    """Batches of 10 rows whose dictionaries differ: each a prefix of the next (growing, for
    deltas) or each its own (replacements)."""
    batches = []
    for start in range(0, table.num_rows, 10):
        part = table.slice(start, 10)
        arrays = []
        for column in part.columns:
            if pa.types.is_dictionary(column.type):
                values = column.cast(pa.string()).combine_chunks()
                seen = sorted({v for v in values.to_pylist() if v is not None})
                if growing:
                    seen = [v for v in ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday",
                                        "sunday", "germany", "asia", "america", "japan") if v in seen
                            or start > 0] or seen
                dictionary = pa.array(seen, pa.string())
                indices = pa.array([None if v is None else seen.index(v) for v in values.to_pylist()],
                                   column.type.index_type)
                arrays.append(pa.DictionaryArray.from_arrays(indices, dictionary))
            else:
                arrays.append(column.combine_chunks())
        batches.append(pa.RecordBatch.from_arrays(arrays, names=part.column_names))
    return batches


def arrow_bodies(rows: list[dict]) -> dict[str, bytes]:
    """Valid Arrow bodies: plain, dictionary-encoded (int32 and int8 indices), with delta and with
    replacement dictionaries, compressed (ZSTD, LZ4), string views, and the file format."""
    bodies = {}
    for variant in ("plain", "int_id", "dictionary", "index8", "views", "delta", "replacement", "compressed",
                    "lz4", "file"):
        table = _arrow_table(rows, variant)
        options = pa.ipc.IpcWriteOptions(compression={"compressed": "zstd", "lz4": "lz4"}.get(variant),
                                          emit_dictionary_deltas=variant == "delta")
        sink = io.BytesIO()
        opener = pa.ipc.new_file if variant == "file" else pa.ipc.new_stream
        with opener(sink, table.schema, options=options) as writer:
            if variant in ("delta", "replacement"):
                for batch in _chunked_dictionaries(table, growing=variant == "delta"):
                    writer.write_batch(batch)
            else:
                writer.write_table(table, max_chunksize=10)
        bodies[variant] = sink.getvalue()
    return bodies


def parquet_bodies(rows: list[dict]) -> dict[str, bytes]:
    """Valid Parquet bodies: row groups of 10 (snappy), ZSTD, uncompressed with v2 data pages,
    one row group with GZIP, and no dictionary encoding."""
    table = _arrow_table(rows, "int_id")
    bodies = {}
    for variant, options in {"snappy": {}, "zstd": {"compression": "zstd"},
                             "v2": {"compression": "none", "data_page_version": "2.0"},
                             "gzip": {"compression": "gzip", "row_group_size": 100},
                             "plain": {"use_dictionary": False}}.items():
        sink = io.BytesIO()
        pq.write_table(table, sink, **{"row_group_size": 10, **options})
        bodies[variant] = sink.getvalue()
    return bodies


def text_bodies(rows: list[dict]) -> dict[str, bytes]:
    """The rows as JSON rows, JSON columns, CSV and NDJSON."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(rows[0])
    writer.writerows(["" if v is None else repr(v) if isinstance(v, float) else v for v in row.values()]
                     for row in rows)
    return {
        "json_rows": json.dumps(rows).encode(),
        "json_columns": json.dumps({name: [row[name] for row in rows] for name in rows[0]}).encode(),
        "csv": buffer.getvalue().encode(),
        "ndjson": b"".join(json.dumps(row).encode() + b"\n" for row in rows),
    }


_BASES: dict[str, list[bytes]] = {}


def bases(fmt: str) -> list[bytes]:
    if not _BASES:
        rows = sample_rows()
        _BASES.update(arrow=list(arrow_bodies(rows).values()), parquet=list(parquet_bodies(rows).values()))
        _BASES.update({name: [body] for name, body in text_bodies(rows).items()})
    return _BASES[fmt]


def mutant(fmt: str, seed: int, index: int) -> Mutant:
    """Body ``index`` of ``fmt`` for ``seed``: built from these three alone, so a failure replays."""
    rng = random.Random(f"{seed}/{fmt}/{index}")
    body = rng.choice(bases(fmt))
    if fmt == "arrow":
        return mutate_arrow(rng, body)
    if fmt == "parquet":
        return mutate_parquet(rng, body)
    return mutate_text(rng, body, fmt)


# -- What a body really holds --------------------------------------------------------------------

class Repeated(dict):
    """An object with a key given twice: its last values, as most decoders (msgspec too) keep."""

    repeated: list[str]


def _no_duplicates(pairs: list[tuple[str, object]]) -> dict:
    keys = [k for k, _ in pairs]
    if len(set(keys)) == len(keys):
        return dict(pairs)
    row = Repeated(pairs)
    row.repeated = sorted(k for k in set(keys) if keys.count(k) > 1)
    return row


def repeated_keys(value) -> list[str]:
    """Every key given twice in an object at any depth of ``value``."""
    if isinstance(value, dict):
        return [*getattr(value, "repeated", []), *(k for v in value.values() for k in repeated_keys(v))]
    if isinstance(value, list):
        return [k for v in value for k in repeated_keys(v)]
    return []


def with_repeated_keys(holds: Holds, rows: list[dict], wanted: tuple[str, ...]) -> Holds:
    """What a body holds whose objects have keys given twice: refused where a wanted key is given
    twice in the first row (the service checks it), else either refused or read as the last values."""
    first = rows[0] if rows else {}
    if set(getattr(first, "repeated", ())) & set(wanted):
        return Holds(invalid=f"ValueError: duplicated keys {first.repeated} in the first row")
    refused = Holds(invalid=f"ValueError: duplicated keys {repeated_keys(rows)}")
    return Holds(rows=holds.rows, invalid=holds.invalid, refusable=holds.refusable, alternatives=(refused,))


def _no_constant(name: str):
    raise ValueError(f"{name} is not JSON")


def strict_json(text: bytes):
    """JSON as RFC 8259 has it: UTF-8 (a leading BOM tolerated), no NaN or Infinity, no duplicate
    keys, no lone surrogates; numbers kept as written (decimal.Decimal)."""
    value = json.loads(text.removeprefix(b"\xef\xbb\xbf").decode("utf-8"), object_pairs_hook=_no_duplicates,
                       parse_float=decimal.Decimal, parse_constant=_no_constant)
    dump_json(value).encode("utf-8")  # lone surrogates (from \ud800 escapes) fail here
    return value


def dump_json(value) -> str:
    """JSON text of ``value``, numbers exactly as read (json.dumps would round a Decimal)."""
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, dict):
        return "{" + ",".join(f"{json.dumps(k, ensure_ascii=False)}:{dump_json(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ",".join(dump_json(v) for v in value) + "]"
    return json.dumps(value, ensure_ascii=False)


def _only(row: dict, wanted: tuple[str, ...]) -> dict:
    """The row's ``wanted`` cells, nested values replaced by a marker that is as invalid."""
    return {k: {UNSUPPORTED: "nested"} if isinstance(v, list | dict) else v for k, v in row.items() if k in wanted}


def decode_text(body: bytes, fmt: str, wanted: tuple[str, ...]) -> Holds:
    """The rows of a JSON rows, JSON columns, CSV or NDJSON body, decoded strictly with the stdlib."""
    if fmt == "ndjson":
        return _decode_ndjson(body, wanted)
    try:
        if fmt == "json_rows":
            value = strict_json(body)
            rows = [value] if isinstance(value, dict) else value
            if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
                raise ValueError("not a row object or an array of row objects")
            holds = Holds(rows=[_only(r, wanted) for r in rows])
            return with_repeated_keys(holds, rows, wanted) if repeated_keys(rows) else holds
        if fmt == "json_columns":
            value = strict_json(body)
            if set(getattr(value, "repeated", ())) & set(wanted):
                raise ValueError(f"duplicated keys {value.repeated}")  # a column given twice: a 400
            holds = _decode_columns(value, wanted)
            return with_repeated_keys(holds, [], wanted) if repeated_keys(value) else holds
        return _decode_csv(body, wanted)
    except RecursionError:
        return Holds()
    except (ValueError, csv.Error) as exc:
        return Holds(invalid=f"{type(exc).__name__}: {str(exc)[:200]}")


def _decode_columns(value, wanted: tuple[str, ...]) -> Holds:
    if not isinstance(value, dict):
        raise ValueError("not an object of columns")
    columns = {k: v for k, v in value.items() if k in wanted}
    if not all(isinstance(v, list) for v in columns.values()):
        raise ValueError("a column that is not an array")
    columns = {k: [_only({k: cell}, wanted)[k] for cell in v] for k, v in columns.items()}
    lengths = {len(v) for v in columns.values()}
    if len(lengths) > 1:
        raise ValueError(f"columns of different lengths {sorted(lengths)}")
    n = lengths.pop() if lengths else None
    if n is None:
        # Without a consumed column the row count is that of the other columns, if they agree.
        others = {len(v) for v in value.values() if isinstance(v, list)}
        if len(others) != 1:
            raise ValueError("no column tells the number of rows")
        n = others.pop()
    return Holds(rows=[{k: v[i] for k, v in columns.items()} for i in range(n)])


def _decode_csv(body: bytes, wanted: tuple[str, ...]) -> Holds:
    text = body.removeprefix(b"\xef\xbb\xbf").decode("utf-8")
    csv.field_size_limit(len(body) + 1)  # a cell as long as the body is a cell, not an error
    # Not strict: a quote closed before the end of its cell (`"1"x`) is read on, as Arrow reads it.
    lines = [line for line in csv.reader(io.StringIO(text, newline="")) if line]
    if not lines:
        raise ValueError("no header")
    header, records = lines[0], lines[1:]
    if len(set(header)) != len(header):
        raise ValueError(f"duplicated header names in {header}")
    ragged = [i for i, record in enumerate(records) if len(record) != len(header)]
    if ragged:
        raise ValueError(f"record {ragged[0]} has {len(records[ragged[0]])} fields, the header {len(header)}")
    return Holds(rows=[_only(dict(zip(header, record, strict=True)), wanted) for record in records])


def _decode_ndjson(body: bytes, wanted: tuple[str, ...]) -> Holds:
    rows: list[dict] = []
    # A line with a wanted key given twice: the first line is refused (the service checks it);
    # a later one may end the stream there or be read as its last values.
    ends: list[Holds] = []
    for number, line in enumerate(body.split(b"\n"), 1):
        if not line.strip(b" \t\r"):
            continue
        try:
            value = strict_json(line)
            if not isinstance(value, dict):
                raise ValueError("not a row object")
            repeated = sorted(set(getattr(value, "repeated", ())) & set(wanted))
            if repeated and not rows:
                raise ValueError(f"duplicated keys {repeated}")
        except RecursionError:
            return Holds()
        except ValueError as exc:
            return Holds(rows=rows, invalid=f"line {number}: {type(exc).__name__}: {str(exc)[:200]}",
                         alternatives=tuple(ends))
        if repeated:
            ends.append(Holds(rows=list(rows), invalid=f"line {number}: ValueError: duplicated keys {repeated}"))
        if line.startswith(BOM):
            # A JSON text may start with a byte-order mark, which a reader may refuse (the service
            # refuses it at the start of a JSON body with a 400): here, an end of the stream.
            ends.append(Holds(rows=list(rows), invalid=f"line {number}: a byte-order mark"))
        rows.append(_only(value, wanted))
    return Holds(rows=rows, alternatives=tuple(ends))


# -- The workers ---------------------------------------------------------------------------------

def parent_of(pid: int) -> int | None:
    """The parent's pid of a live process, None once it is gone (or dead and not yet reaped)."""
    try:
        state, parent = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[:2]
    except OSError:
        return None
    return None if state in "ZX" else int(parent)


def children(pid: int) -> set[int]:
    """The pids of ``pid``'s child processes (the gunicorn master's workers): a scan of /proc."""
    return {int(entry.name) for entry in Path("/proc").iterdir() if entry.name.isdigit()
            and parent_of(int(entry.name)) == pid}


def peak_mb(pid: int) -> float | None:
    """The process's peak resident memory (VmHWM) in MB, None once it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    return next((int(line.split()[1]) / 1024 for line in status.splitlines() if line.startswith("VmHWM:")), None)


@dataclass
class Failure:
    fmt: str
    seed: int
    index: int
    mutant: Mutant
    check: str
    status: int | None
    message: str

    def line(self) -> str:
        return (f"{self.check}: {self.fmt} seed {self.seed} body {self.index} [{self.mutant.kind}: "
                f"{self.mutant.detail[:120]}] -> {self.status}: {self.message[:300]}")


class Workers:
    """The live server's workers: their pids, and their peak memory before the fuzzing."""

    def __init__(self, server: LiveServer):
        self.server = server
        self.master = server.process.pid
        self.baseline: dict[int, float] = {}
        self.known: set[int] = set()
        self.watch()

    def watch(self) -> None:
        """Find the workers (after a death, their successors, once booted), take the baseline of
        new ones and cap their address space."""
        def all_up() -> set[int] | None:
            found = children(self.master)
            return found if len(found) >= WORKERS else None

        self.known = wait_for(all_up, 30, f"{WORKERS} workers")
        resource.prlimit(self.master, resource.RLIMIT_AS, (WORKER_ADDRESS_SPACE, WORKER_ADDRESS_SPACE))
        for pid in self.known - self.baseline.keys():
            self.baseline[pid] = peak_mb(pid) or 0.0
            resource.prlimit(pid, resource.RLIMIT_AS, (WORKER_ADDRESS_SPACE, WORKER_ADDRESS_SPACE))

    def check(self) -> list[tuple[str, str]]:
        """Whether the workers are all still there (a cheap look at each) and none grew past the
        budget; after a death, watch their successors."""
        problems = []
        gone = {pid for pid in self.known if parent_of(pid) != self.master}
        if gone:
            said = [line.strip() for line in self.server.log_text().splitlines()
                    if any(f"pid:{pid})" in line for pid in gone)]
            problems.append(("worker died", f"worker(s) {sorted(gone)} gone: {said[-2:]}"))
        for pid in self.known - gone:
            peak = peak_mb(pid)
            if peak is not None and peak - self.baseline[pid] > BUDGET_MB + MARGIN_MB:
                problems.append(("memory", f"worker {pid} grew {peak - self.baseline[pid]:.0f} MB, over "
                                           f"MAX_DECODED_MB {BUDGET_MB} + {MARGIN_MB}"))
                self.baseline[pid] = peak  # reported once, for the body that did it
        if gone:
            self.watch()
        return problems


@pytest.fixture(scope="module")
def fuzz_server(model_dir, tmp_path_factory):
    """One gunicorn server (2 workers) for the module; a hung worker is killed after 30 s."""
    log = tmp_path_factory.mktemp("fuzz-server") / "gunicorn.log"
    live = LiveServer(env={"MODEL_DIR": str(model_dir), "MAX_DECODED_MB": str(BUDGET_MB), "GUNICORN_TIMEOUT": "30"},
                      workers=WORKERS, log_path=log).start()
    yield live
    live.stop()


@pytest.fixture(scope="module")
def workers(fuzz_server, http):
    """The workers, warmed up with every valid body (each worker imports what a format needs)
    before their baseline is taken."""
    for _ in range(3):
        for fmt in FORMATS:
            for body in bases(fmt):
                answer = http.post(fuzz_server.url + "/predict" + QUERIES.get(fmt, "?format=columns&errors=inline"),
                                   data=body, headers={"Content-Type": CONTENT_TYPES[fmt]}, timeout=TIMEOUT)
                assert answer.status_code == 200, (fmt, answer.text[:300])
    return Workers(fuzz_server)


@pytest.fixture(scope="module")
def extra_sessions():
    """Sessions for the bodies sent beside the first (LANES)."""
    sessions = [requests.Session() for _ in range(max(LANES.values()) - 1)]
    yield sessions
    for session in sessions:
        session.close()


@pytest.fixture(scope="module")
def sandbox():
    box = Sandbox()
    yield box
    box.stop()


@pytest.fixture(scope="module")
def consumed(app) -> tuple[str, ...]:
    """The columns whose cells decide an answer: the consumed ones, and ``id``."""
    return (*app.test_client().get("/model").get_json()["consumed_columns"], ID_KEY)


def holds(fmt: str, body: bytes, wanted: tuple[str, ...], sandbox: Sandbox) -> Holds:
    """What ``body`` holds, decoded by the test (Arrow and Parquet in the sandbox)."""
    if fmt in ("arrow", "parquet"):
        found = sandbox.call(f"tests.support.mutators:decode_{fmt}", body, wanted)
        return Holds(invalid=f"the test's decoder died: {found.how}") if isinstance(found, Died) else found
    return decode_text(body, fmt, wanted)


class JsonAnswers:
    """The service's answers for JSON rows (in process), cached: many bodies hold the same rows."""

    def __init__(self, app):
        self.client = app.test_client()
        self.cache: dict[tuple[str, str], tuple[int, object]] = {}

    def answer(self, rows: list[dict], query: str) -> tuple[int, object]:
        body = dump_json(rows)
        if (body, query) not in self.cache:
            got = self.client.post(f"/predict{query}", data=body.encode(), content_type=JSON)
            self.cache[body, query] = got.status_code, got.get_json()
        return self.cache[body, query]


def comparable(answer: dict) -> dict:
    """A columns answer without what depends on the wire format (messages name its types)."""
    return {PROBABILITY: answer.get(PROBABILITY), PREDICTED_CLASS: answer.get(PREDICTED_CLASS),
            ID_KEY: answer.get(ID_KEY), "invalid cells": sorted((row["index"], cell["column"])
                                                                for row in answer.get("errors", [])
                                                                for cell in row["errors"])}


def judge(fmt: str, status: int, payload, found: Holds, json_answers: JsonAnswers) -> tuple[str, str] | None:
    """Whether a non-5xx JSON answer is right for what the body holds (or for one of its
    alternatives): (check, why), or None."""
    wrong = _judge_holds(fmt, status, payload, found, json_answers)
    for alternative in found.alternatives if wrong else ():
        if _judge_holds(fmt, status, payload, alternative, json_answers) is None:
            return None
    return wrong


def _judge_holds(fmt: str, status: int, payload, found: Holds, json_answers: JsonAnswers) -> tuple[str, str] | None:
    if found.rows is None and found.invalid is None:
        return None
    if fmt == "ndjson":
        return _judge_stream(status, payload, found, json_answers)
    if found.invalid is not None:
        return ("200 for a body that does not decode", found.invalid) if status == 200 else None
    if status != 200:
        return None
    got, wants = comparable(payload), []
    for rows in expectations(found):
        expected_status, expected = json_answers.answer(rows, "?format=columns&errors=inline")
        if expected_status != 200:
            return "200 where the JSON rows get " + str(expected_status), f"{expected}"[:300]
        if comparable(expected) == got:
            return None
        wants.append(comparable(expected))
    differ = {k: (got[k], wants[0][k]) for k in wants[0] if got[k] != wants[0][k]}
    return "200 differs from the rows the body holds", f"answer vs JSON rows: {differ}"[:600]


def comparable_line(answer: dict) -> tuple:
    """A stream's answer line without what depends on the wire format."""
    return (answer.get(PROBABILITY), answer.get(PREDICTED_CLASS), answer.get(ID_KEY),
            sorted(cell["column"] for cell in answer.get("errors", [])))


def _judge_stream(status: int, lines, found: Holds, json_answers: JsonAnswers) -> tuple[str, str] | None:
    if status != 200:
        return None
    if found.invalid is not None and not found.rows:
        return "200 for a stream whose first row does not decode", found.invalid
    closing = lines[-1] if lines and isinstance(lines[-1], dict) and "error" in lines[-1] else None
    answers = [comparable_line(line) for line in (lines[:-1] if closing else lines)]
    expected_status, expected = json_answers.answer(found.rows, "?errors=inline")
    expected = [comparable_line(line) for line in expected] if expected_status == 200 else []
    holds_text = f"the stream holds {len(found.rows)} rows" + (f", then {found.invalid}" if found.invalid else "")
    answered = f"{len(answers)} rows answered" + (f", then {closing}" if closing else "")
    if found.invalid is not None and closing is None:
        return "a stream that does not decode answered without an error line", f"{answered}; {holds_text}"[:600]
    if found.invalid is None and closing is not None:
        return "an error line for a stream that decodes", f"{answered}; {holds_text}"[:600]
    if answers != expected or (closing and closing.get("rows_answered") != len(found.rows)):
        first = next((i for i, (a, b) in enumerate(zip(answers, expected, strict=False)) if a != b), min(len(answers),
                                                                                            len(expected)))
        return "stream answers differ from the rows the lines hold", \
            f"{answered}; {holds_text}; first difference at row {first}"[:600]
    return None


def post(session: requests.Session, url: str, fmt: str, body: bytes) -> tuple[int | None, object, str]:
    """Send one body: (status, the decoded JSON answer, a failure check or "")."""
    query = QUERIES.get(fmt, "?format=columns&errors=inline")
    try:
        answer = session.post(f"{url}/predict{query}", data=body, headers={"Content-Type": CONTENT_TYPES[fmt]},
                              timeout=TIMEOUT)
        text = answer.content
    except requests.RequestException as exc:
        return None, f"{type(exc).__name__}: {exc}"[:300], "connection broken"
    try:
        if fmt == "ndjson" and answer.status_code == 200:
            payload = [json.loads(line) for line in text.splitlines() if line.strip()]
        else:
            payload = json.loads(text)
    except ValueError:
        return answer.status_code, text[:300].decode("utf-8", "replace"), "answer not JSON"
    if answer.status_code >= 500:
        return answer.status_code, payload, "5xx"
    return answer.status_code, payload, ""


def report(failures: list[Failure], what: str) -> str:
    """The failures counted by check and mutation kind, then the first SHOWN of them."""
    counts = collections.Counter((f.check, f.mutant.kind) for f in failures)
    first = failures[0]
    lines = [f"{len(failures)} {what} mishandled, seed {first.seed} (this run's random seed: FUZZ_SEED={FUZZ_SEED}; "
             f"a body is tests.lib.codecs.test_fuzz_bodies.mutant({first.fmt!r}, {first.seed}, index)):"]
    lines += [f"  {n:4d}  {check} <- {kind}" for (check, kind), n in counts.most_common()]
    lines += ["first ones:"] + [f"  {f.line()}" for f in failures[:SHOWN]]
    return "\n".join(lines)


def test_the_readers_of_the_mutators_find_the_fields_pyarrow_wrote():
    for body in bases("parquet"):
        parsed = ParquetBody(body)
        assert bytes(parsed) == body  # parsed and written back unchanged, offsets recomputed
        assert parsed.footer.value(FMD_NUM_ROWS) == ROWS
    for body in bases("arrow"):
        arrow = ArrowBody(body)
        lengths = [struct.unpack_from("<q", arrow.buf, arrow.record_batch(m).field(0))[0] for m in arrow.batches()]
        assert lengths == [10, 10, 10]
        assert [f.name for f in arrow.fields] == [ID_KEY, *COLUMNS]


@pytest.mark.parametrize("fmt", FORMATS)
def test_the_valid_bodies_pass_every_check(fmt, fuzz_server, workers, sandbox, consumed, app, http):
    """The checks themselves: each unmutated body decodes to the rows it was made of and gets
    their answer, so that what the fuzzing reports is the mutation's doing."""
    json_answers = JsonAnswers(app)
    for body in bases(fmt):
        found = holds(fmt, body, consumed, sandbox)
        assert found.invalid is None and len(found.rows) == ROWS
        status, payload, broken = post(http, fuzz_server.url, fmt, body)
        assert (status, broken) == (200, "")
        assert judge(fmt, status, payload, found, json_answers) is None
    assert workers.check() == []


@pytest.mark.parametrize("seed", [FIXED_SEED, FUZZ_SEED], ids=["fixed-seed", "random-seed"])
@pytest.mark.parametrize("fmt", FORMATS)
def test_mutated_bodies_get_a_json_4xx_or_the_answer_for_the_rows_they_hold(
        fmt, seed, fuzz_server, workers, sandbox, consumed, app, http, extra_sessions):
    print(f"FUZZ_SEED={FUZZ_SEED}: {fmt}, seed {seed}, {BODIES} bodies")
    json_answers = JsonAnswers(app)
    failures = []
    lanes = LANES.get(fmt, 1)
    with ThreadPoolExecutor(lanes) as pool:
        for first in range(0, BODIES, lanes):
            indices = range(first, min(first + lanes, BODIES))
            bodies = [mutant(fmt, seed, index) for index in indices]
            found = [holds(fmt, body.body, consumed, sandbox) for body in bodies]
            sessions = [http, *extra_sessions][:len(bodies)]
            answers = list(pool.map(lambda session, body: post(session, fuzz_server.url, fmt, body.body),
                                    sessions, bodies))
            shared = workers.check()  # the doing of one of the bodies sent together
            for index, body, holding, (status, payload, broken) in zip(indices, bodies, found, answers, strict=True):
                problems = [(broken, f"{payload}")] if broken else []
                verdict = None if broken else judge(fmt, status, payload, holding, json_answers)
                problems += ([verdict] if verdict else []) + shared
                failures += [Failure(fmt, seed, index, body, check, status, message) for check, message in problems]
    assert not failures, report(failures, f"{fmt} bodies of {BODIES}")


# -- The file command and the Spark job ----------------------------------------------------------

FILE_ENDINGS = {"parquet": ".parquet", "csv": ".csv", "ndjson": ".ndjson"}


def score_file(path: str, output: str) -> tuple[int, str, object]:
    """Run in the sandbox: ``python -m lib.batch PATH -o OUTPUT`` in process; (exit code, what it
    wrote to stderr, the output's scores or the traceback of an exception it let out)."""
    import traceback

    from lib.batch.command import main

    stderr = io.StringIO()
    try:
        code = main([path, "-o", output, "--progress-every", "3600"], stderr=stderr)
    except SystemExit as exc:
        return exc.code, stderr.getvalue(), None
    except BaseException:  # noqa: BLE001 - the point: an exception the command let out
        return -1, stderr.getvalue(), traceback.format_exc()
    if code != 0:
        return code, stderr.getvalue(), None
    table = pq.read_table(output)
    return code, stderr.getvalue(), {PROBABILITY: table.column(PROBABILITY).to_pylist(),
                                     PREDICTED_CLASS: table.column(PREDICTED_CLASS).to_pylist(),
                                     "invalid": [i for i, e in enumerate(table.column(ERROR).to_pylist()) if e]}


def file_expectations(found: Holds, json_answers: JsonAnswers) -> list[dict] | None:
    """The outputs the file command may write for what a file holds; none where it must refuse
    the file; None where the test cannot tell. An empty file gets an empty output."""
    if found.invalid is not None:
        return []
    if found.rows is None:
        return None
    if not found.rows:
        return [{PROBABILITY: [], PREDICTED_CLASS: [], "invalid": []}]
    outputs = []
    for rows in expectations(found):
        status, answer = json_answers.answer(rows, "?format=columns&errors=inline")
        assert status == 200, answer
        outputs.append({PROBABILITY: answer[PROBABILITY], PREDICTED_CLASS: answer[PREDICTED_CLASS],
                        "invalid": sorted(row["index"] for row in answer.get("errors", []))})
    return outputs


def judge_command(code, stderr: str, result, expected: list[dict] | None, found: Holds,
                  unreadable: int) -> tuple | None:
    """Whether a run of the file command (or the Spark job) did right by what the file holds."""
    if code == -1 or "Traceback" in stderr:
        text = result or stderr
        return "traceback", text[:300] if "let out of main()" in text else text[-600:]
    if code == 0:
        if expected is None:
            return None
        if not expected:
            return "scored a file that does not decode", found.invalid
        if result not in expected:
            return "scores differ from the API's", f"{result} vs {expected[0]}"[:600]
        return None
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    if code != unreadable:
        return f"exit code {code}, not {unreadable}", stderr[-400:]
    if len(lines) != 1 or ": error: " not in lines[0]:
        return "not a one-line error", stderr[-400:]
    return None


@pytest.mark.parametrize("seed", [FIXED_SEED, FUZZ_SEED], ids=["fixed-seed", "random-seed"])
@pytest.mark.parametrize("fmt", sorted(FILES))
def test_mutated_files_get_the_api_scores_or_a_one_line_error_from_the_file_command(
        fmt, seed, sandbox, consumed, app, tmp_path):
    from lib.batch.command import EXIT_UNREADABLE

    print(f"FUZZ_SEED={FUZZ_SEED}: {fmt} files, seed {seed}")
    json_answers = JsonAnswers(app)
    failures = []
    for index in range(FILES[fmt]):
        body = mutant(fmt, seed, index)
        path = tmp_path / f"body-{index}{FILE_ENDINGS[fmt]}"
        path.write_bytes(body.body)
        found = holds(fmt, body.body, consumed, sandbox)
        ran = sandbox.call("tests.lib.codecs.test_fuzz_bodies:score_file", str(path),
                           str(tmp_path / f"out-{index}.parquet"))
        if isinstance(ran, Died):
            failures.append(Failure(fmt, seed, index, body, "the command died", None, ran.how))
            continue
        code, stderr, result = ran
        verdict = None
        for holding in (found, *found.alternatives):
            if fmt == "ndjson" and holding.invalid is not None:
                holding = Holds(invalid=holding.invalid)  # a file is all or nothing: no valid prefix
            verdict = judge_command(code, stderr, result, file_expectations(holding, json_answers), holding,
                                    EXIT_UNREADABLE)
            if verdict is None:
                break
        if verdict:
            failures.append(Failure(fmt, seed, index, body, verdict[0], code, verdict[1]))
    assert not failures, report(failures, f"{fmt} files of {FILES[fmt]} through lib.batch.command")


@pytest.mark.skipif(shutil.which("java") is None,
                    reason="no Java runtime (apt-get install openjdk-17-jre-headless; .ci/run does)")
@pytest.mark.parametrize("fmt", sorted(SPARK_FILES))
def test_mutated_files_get_the_api_scores_or_a_one_line_error_from_the_spark_job(
        fmt, spark, sandbox, consumed, app, tmp_path, monkeypatch, capsys):  # noqa: F811 - the imported fixture
    import lib.spark.job

    # The job's own main(), on the module's session: main() stops the session it is given.
    monkeypatch.setattr(lib.spark.job, "spark_session", lambda *args, **kwargs: _Unstoppable(spark))
    json_answers = JsonAnswers(app)
    failures = []
    for index in range(SPARK_FILES[fmt]):
        body = mutant(fmt, FUZZ_SEED, index)
        path = tmp_path / f"body-{index}{FILE_ENDINGS[fmt]}"
        path.write_bytes(body.body)
        found = holds(fmt, body.body, consumed, sandbox)
        capsys.readouterr()
        output = tmp_path / f"out-{index}"
        try:
            code = lib.spark.job.main([str(path), str(output)])
        except Exception as exc:  # noqa: BLE001 - the point: an exception the job let out
            # The exception's first line says what it is; the rest is the JVM's stack.
            code, result = -1, f"{type(exc).__name__} let out of main(): {str(exc).strip()[:300]}"
        else:
            result = None
        stderr = capsys.readouterr().err
        if code == 0:
            table = pq.read_table(output)
            if fmt == "parquet":  # the ids of the Parquet bodies are their rows' numbers
                table = table.sort_by([(ID_KEY, "ascending")])
            # A small CSV file is one task's: its rows are written in the file's order.
            result = {PROBABILITY: table.column(PROBABILITY).to_pylist(),
                      PREDICTED_CLASS: table.column(PREDICTED_CLASS).to_pylist(),
                      "invalid": [i for i, error in enumerate(table.column(ERROR).to_pylist()) if error]}
        verdict = judge_command(code, stderr, result, file_expectations(found, json_answers), found,
                                lib.spark.job.EXIT_UNREADABLE)
        if verdict:
            failures.append(Failure(fmt, FUZZ_SEED, index, body, verdict[0], code, verdict[1]))
    assert not failures, report(failures, f"{fmt} files of {SPARK_FILES[fmt]} through lib.spark")


class _Unstoppable:
    """A SparkSession whose stop() does nothing (the module's session outlives each job)."""

    def __init__(self, session):
        self._session = session

    def stop(self) -> None:
        pass

    def __getattr__(self, name):
        return getattr(self._session, name)
