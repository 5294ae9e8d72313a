"""Why decoding bounds the 10,000-row request: JSON decoders and msgspec variants on one body.

    .venv/bin/python -m bench.decoders [--rows 10000] [--repeats 9]

Times each way of getting the consumed columns out of a body of the first ``--rows`` rows of
lib/data/test.json: the full decoders (what the floor app and the reference path use), the
service's typed decoder, and msgspec structs that isolate what that decoder spends its time on
(skipping the body, looking keys up, decoding values). Decoders outside requirements.txt
(pysimdjson, cysimdjson, pydantic-core, pyarrow) are timed when importable, for instance after
``pip install --target /tmp/extra pysimdjson`` with ``PYTHONPATH=/tmp/extra``, and listed as
not installed otherwise. Prints the minimum and the median of the repeats, in ms.
"""

from __future__ import annotations

import argparse
import importlib
import io
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec
import orjson

from bench.run import TEST_JSON, batch_job, model_dir
from bench.stress import encode_rows, request_body
from lib.codecs.limits import DecodeLimits
from lib.codecs.media import JSON
from lib.core.artifacts import load_artifacts
from lib.core.schema import ID_KEY
from service.http.readers.body_formats import BodyReader
from service.scoring.predictor import Predictor

#: Decoders outside requirements.txt, timed when importable.
OPTIONAL = ("simdjson", "cysimdjson", "pydantic_core", "pyarrow.json")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.decoders", description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000, help="rows in the body (default 10,000)")
    parser.add_argument("--repeats", type=int, default=9, help="timed decodes per variant (default 9)")
    return parser.parse_args(argv)


def _struct_decoder(fields: Sequence[str], name: str = "Row") -> msgspec.json.Decoder:
    row = msgspec.defstruct(name, [(f, Any, None) for f in fields])
    return msgspec.json.Decoder(list[row])


def variants(body: bytes, first_row: dict, reader: BodyReader) -> dict[str, Callable[[], object] | str]:
    """Each variant as a callable that decodes ``body`` (rows like ``first_row``), or why it cannot run;
    ``reader`` is the service's."""
    keys = list(first_row)
    wanted = [*reader.columns, ID_KEY]
    # Names no row has: of the same lengths as the wanted keys, then of a length no key has.
    same_length = [(f"q{chr(ord('a') + i)}" + "z" * 8)[: len(c)] for i, c in enumerate(wanted)]
    other_length = [f"q{chr(ord('a') + i)}zzzzzzzz" for i in range(len(wanted))]
    decoders = {
        "orjson.loads (floor app, reference path)": orjson.loads,
        "msgspec, untyped, every key": msgspec.json.decode,
        "served: typed struct of the consumed columns + id": reader.readers[JSON]._decoder.decode,
        "served: BodyReader.read (decode + columns)": lambda b: reader.read(b, "application/json"),
        "msgspec struct with no field (skips every key)": _struct_decoder([]).decode,
        f"msgspec struct, {len(wanted)} unknown names of the same lengths": _struct_decoder(same_length).decode,
        f"msgspec struct, {len(wanted)} unknown names of other lengths": _struct_decoder(other_length).decode,
        "msgspec struct of every key of the rows": _struct_decoder([*keys, ID_KEY]).decode,
    }
    out: dict[str, Callable[[], object] | str] = {name: (lambda d=d: d(body)) for name, d in decoders.items()}
    out.update(_optional_variants(body, first_row, wanted))
    return out


def _optional_variants(body: bytes, first_row: dict, wanted: Sequence[str]) -> dict[str, Callable[[], object] | str]:
    out: dict[str, Callable[[], object] | str] = {}
    modules = {}
    for name in OPTIONAL:
        try:
            modules[name] = importlib.import_module(name)
        except ImportError:
            modules[name] = None
    simdjson, cysimdjson, core, pa_json = (modules[n] for n in OPTIONAL)

    def columns_of(objects) -> list[list]:
        objects = list(objects)
        return [[o.get(c) for o in objects] for c in wanted]

    if simdjson:
        parser = simdjson.Parser()
        out["pysimdjson: parse + get the consumed keys"] = lambda: columns_of(parser.parse(body))
    if cysimdjson:
        cy_parser = cysimdjson.JSONParser()
        out["cysimdjson: parse + get the consumed keys"] = lambda: columns_of(cy_parser.parse(body))
    if core:
        schema = core.core_schema
        fields = {c: schema.typed_dict_field(schema.any_schema(), required=False) for c in wanted}
        validator = core.SchemaValidator(schema.list_schema(schema.typed_dict_schema(fields, extra_behavior="ignore")))
        out["pydantic-core: typed dict of the consumed keys"] = lambda: validator.validate_json(body)
    if pa_json:
        import pyarrow as pa

        # A column type per key, taken from the first row: pyarrow refuses a column whose cells
        # mix numbers and strings, which messy input does.
        types = [(c, pa.string() if isinstance(first_row.get(c), str) else pa.float64()) for c in wanted if c != ID_KEY]
        options = pa_json.ParseOptions(explicit_schema=pa.schema(types), unexpected_field_behavior="ignore")
        lines = orjson_lines(body)
        out["pyarrow.json: NDJSON of the same rows, typed consumed keys"] = (
            lambda: pa_json.read_json(io.BytesIO(lines), parse_options=options))
    for name in OPTIONAL:
        if modules[name] is None:
            out[f"{name}: not installed"] = "not installed"
    return out


def orjson_lines(body: bytes) -> bytes:
    """The rows of a JSON array body as newline-delimited JSON (pyarrow reads only that)."""
    return b"\n".join(orjson.dumps(row) for row in orjson.loads(body))


def time_variant(run: Callable[[], object], repeats: int) -> list[float]:
    """The seconds of each of ``repeats`` runs, after one untimed run."""
    run()
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        seconds.append(time.perf_counter() - started)
    return seconds


@dataclass(frozen=True)
class Survey:
    """What one survey measured: the body, and per variant the raw seconds of every timed run
    (None for a variant that is not installed)."""

    rows: int
    body_bytes: int
    columns: tuple[str, ...]
    seconds: dict[str, list[float] | None]


def survey(n_rows: int, repeats: int) -> Survey:
    """Time every variant ``repeats`` times on a body of the first ``n_rows`` test rows."""
    rows = encode_rows(TEST_JSON)
    body = request_body(batch_job(n_rows, len(rows)), rows)
    limits = DecodeLimits(max(n_rows, 1))
    reader = Predictor(load_artifacts(model_dir()), lambda columns: BodyReader(columns, limits)).reader
    seconds = {name: None if isinstance(run, str) else time_variant(run, repeats)
               for name, run in variants(body, orjson.loads(rows[0]), reader).items()}
    return Survey(n_rows, len(body), tuple(reader.columns), seconds)


WIDTH = 62  # of the variant column


def print_table(result: Survey) -> None:
    """The body, then the minimum and the median of each variant's runs in ms."""
    print(f"body: {result.rows:,} rows, {result.body_bytes / 1e6:.1f} MB; "
          f"consumed columns: {', '.join(result.columns)}")
    print(f"{'variant':<{WIDTH}} {'min ms':>8} {'median ms':>10}")
    for name, seconds in result.seconds.items():
        if seconds is None:
            print(f"{name:<{WIDTH}} {'–':>8} {'–':>10}")
        else:
            print(f"{name:<{WIDTH}} {min(seconds) * 1000:8.1f} {statistics.median(seconds) * 1000:10.1f}")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    print_table(survey(args.rows, args.repeats))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
