"""The HTTP API as marshmallow schemas, and the OpenAPI document generated from them.

The row schema derives from ``lib.core.schema`` (column names, kinds, vocabularies, null tokens)
and its fields convert cells with the same parsers as the serving path, so loading a row
with it gives the same values and the same messages. It is far too slow for every cell of a
large batch (about 1.5 s for 10,000 rows): serving uses the vectorised normaliser, and this
schema serves the docs and the diagnosis of single rows.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from marshmallow import EXCLUDE, Schema, ValidationError, fields, validate

from lib.codecs.media import ARROW, NDJSON, PARQUET
from lib.core.columns import FAR_SPANS
from lib.core.errors import InvalidValue
from lib.core.example_row import EXAMPLE_ROW
from lib.core.explain import LOWERS, METHOD, NEUTRAL, RAISES
from lib.core.normalize import (
    AMOUNT_PATTERN,
    NUMBER_PATTERN,
    PERCENT_PATTERN,
    parse_category,
    parse_currency,
    parse_number,
    parse_percent,
)
from lib.core.schema import (
    ALIASES,
    CURRENCY,
    ID_KEY,
    NULL_TOKENS,
    NUMERIC,
    PERCENT,
    SCHEMA,
    describe_kind,
)
from service.http.auth import protected
from service.http.docs_page import LINKS
from service.http.errors import allowed_methods
from service.http.readers import INPUT_LAYOUTS
from service.scoring.answers import (
    COLUMNS_FORMAT,
    FORMATS,
    PREDICTED_CLASS,
    PROBABILITY,
    REASONS,
    ROWS_FORMAT,
    SELECTED_FEATURES,
)
from service.scoring.column_report import COLUMN_MODES, FAR_HEADER, MISSING_HEADER, SUGGESTIONS_HEADER
from service.scoring.predictor import EXPLAIN_ALL, PHASES

OPENAPI_VERSION = "3.1.0"
API_TITLE = "Batch prediction API"
API_VERSION = "1.0.0"


# --- JSON Schema patterns (ECMA regex): lib/core/normalize.py's grammar, read as it is written ------


def _any_case(word: str) -> str:
    """``"nan"`` → ``"[Nn][Aa][Nn]"``: JSON Schema patterns have no case-insensitive flag."""
    return "".join(f"[{c.upper()}{c.lower()}]" if c.isalpha() else _escape(c) for c in word)


def _escape(char: str) -> str:
    return "\\" + char if char in r"\^$.|?*+()[]{}" else char


def _one_of_words(words) -> str:
    return "|".join(_any_case(w) for w in sorted(words, key=lambda w: (-len(w), w)))


_NULL_WORDS = sorted(t for t in NULL_TOKENS if t)
NULL_PATTERN = rf"^\s*({_one_of_words(_NULL_WORDS)})?\s*$"
_NUMBER_STRING = {kind: f"^(?:{pattern})$" for kind, pattern in
                  ((NUMERIC, NUMBER_PATTERN), (PERCENT, PERCENT_PATTERN), (CURRENCY, AMOUNT_PATTERN))}
_EXAMPLES = {NUMERIC: [0.042317, "14.75731742"], CURRENCY: ["$5,547.78", "($5,032.58)"], PERCENT: ["36.29%", 36.29]}
_PARSERS: dict[str, Callable[[object], float]] = {
    NUMERIC: parse_number, CURRENCY: parse_currency, PERCENT: parse_percent,
}


# --- Fields -------------------------------------------------------------------------------

class NumberCell(fields.Field):
    """A plain numeric, currency or percent cell; loads to a float (NaN = missing)."""

    def __init__(self, kind: str, **kwargs):
        self.kind = kind
        string = {"type": "string", "pattern": _NUMBER_STRING[kind]}
        metadata = {
            "description": f"{describe_kind(kind)}; missing: null, absent, or one of {', '.join(_NULL_WORDS)}",
            "anyOf": [{"type": "number"}, string, {"type": "string", "pattern": NULL_PATTERN}, {"type": "null"}],
            "examples": _EXAMPLES[kind],
        }
        super().__init__(allow_none=True, metadata=metadata, **kwargs)

    def _deserialize(self, value, attr, data, **kwargs) -> float:
        try:
            return _PARSERS[self.kind](value)
        except InvalidValue as exc:
            raise ValidationError(str(exc)) from exc


class CategoryCell(fields.Field):
    """A weekday, region, month or gender cell; loads to its canonical level (None = missing)."""

    def __init__(self, kind: str, **kwargs):
        self.kind = kind
        accepted = rf"^\s*({_one_of_words(ALIASES[kind])})\s*$"
        metadata = {
            "description": f"{describe_kind(kind)}; missing: null, absent, or one of {', '.join(_NULL_WORDS)}",
            "anyOf": [{"type": "string", "pattern": accepted}, {"type": "string", "pattern": NULL_PATTERN},
                      {"type": "null"}],
            "examples": sorted(set(ALIASES[kind].values()))[:2],
        }
        super().__init__(allow_none=True, metadata=metadata, **kwargs)

    def _deserialize(self, value, attr, data, **kwargs) -> str | None:
        try:
            return parse_category(self.kind, value)
        except InvalidValue as exc:
            raise ValidationError(str(exc)) from exc


class RowId(fields.Field):
    """A client's row id: a string or a finite number, echoed in that row's answer."""

    def __init__(self, **kwargs):
        metadata = {"description": "echoed in this row's result", "anyOf": [
            {"type": "string"}, {"type": "number"}, {"type": "null"}]}
        super().__init__(allow_none=True, metadata=metadata, **kwargs)

    def _deserialize(self, value, attr, data, **kwargs) -> str | float:
        if isinstance(value, str) or (
            isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        ):
            return value
        raise ValidationError("expected a string or a number")


# --- Schemas ------------------------------------------------------------------------------

class _OpenSchema(Schema):
    """Unknown keys are ignored, and the OpenAPI document does not forbid them."""

    class Meta:
        unknown = EXCLUDE


def _cell(kind: str) -> fields.Field:
    return NumberCell(kind) if kind in _PARSERS else CategoryCell(kind)


#: One input row: x0..x99 by kind, plus the optional ``id``. Absent columns are missing values.
RowSchema = _OpenSchema.from_dict(
    {**{c.name: _cell(c.kind) for c in SCHEMA}, ID_KEY: RowId()}, name="Row",
)

ReasonSchema = _OpenSchema.from_dict({
    "variable": fields.String(required=True, metadata={"description": "model variable, e.g. x12 or x81_October"}),
    "column": fields.String(required=True, metadata={"description": "the raw column it comes from"}),
    "value": fields.Raw(required=True, allow_none=True, metadata={
        "description": "the normalised input: a number, the row's level for a dummy, null where missing"}),
    "contribution": fields.Float(required=True, metadata={"description": "its term of the row's logit"}),
    "direction": fields.String(required=True, validate=validate.OneOf([RAISES, LOWERS, NEUTRAL]),
                               metadata={"description": "raises (> 0), lowers (< 0) or none (0)"}),
}, name="Reason")

PredictionSchema = _OpenSchema.from_dict({
    PROBABILITY: fields.Float(required=True, metadata={"description": "probability of the positive class"}),
    SELECTED_FEATURES: fields.List(fields.String(), required=True,
                                   metadata={"description": "the raw columns the model consumes, sorted"}),
    PREDICTED_CLASS: fields.Integer(required=True, validate=validate.OneOf([0, 1]),
                                    metadata={"description": "1 when the probability reaches the threshold"}),
    ID_KEY: RowId(),
    REASONS: fields.List(fields.Nested(ReasonSchema), metadata={
        "description": "with ?explain only: the largest contributions to the logit, largest first"}),
}, name="Prediction")

CellMessageSchema = _OpenSchema.from_dict({
    "column": fields.String(required=True), "message": fields.String(required=True),
}, name="CellMessage")

RowErrorSchema = _OpenSchema.from_dict({
    "index": fields.Integer(required=True, metadata={"description": "position of the row in the request"}),
    ID_KEY: RowId(required=True),
    "errors": fields.List(fields.Nested(CellMessageSchema), required=True),
}, name="RowError")

PredictionColumnsSchema = _OpenSchema.from_dict({
    SELECTED_FEATURES: fields.List(fields.String(), required=True),
    PROBABILITY: fields.List(fields.Float(allow_none=True), required=True,
                             metadata={"description": "null for an invalid row (errors=inline)"}),
    PREDICTED_CLASS: fields.List(fields.Integer(allow_none=True, validate=validate.OneOf([0, 1])), required=True),
    ID_KEY: fields.List(RowId(), metadata={"description": "present when some row has an id"}),
    "errors": fields.List(fields.Nested(RowErrorSchema), metadata={"description": "errors=inline only"}),
    REASONS: fields.List(fields.List(fields.Nested(ReasonSchema)), metadata={
        "description": "with ?explain only: each row's reasons, null for an invalid row"}),
}, name="PredictionColumns")

CellErrorSchema = _OpenSchema.from_dict({
    "index": fields.Integer(required=True), ID_KEY: RowId(required=True),
    "column": fields.String(required=True), "message": fields.String(required=True),
}, name="CellError")

ErrorSchema = _OpenSchema.from_dict({
    "error": fields.String(required=True, metadata={"description": "a short code: bad_request, too_large, ..."}),
    "message": fields.String(required=True, metadata={"description": "what is wrong; never the payload"}),
    "invalid_row_count": fields.Integer(metadata={"description": "422 only"}),
    "error_count": fields.Integer(metadata={"description": "422 only"}),
    "errors": fields.List(fields.Nested(CellErrorSchema), metadata={"description": "422 only, capped"}),
    "errors_truncated": fields.Boolean(metadata={"description": "422 only"}),
    "absent_columns": fields.List(fields.String(), metadata={
        "description": "422 invalid_columns only: consumed columns absent from every row"}),
    "suggestions": fields.List(fields.Nested(_OpenSchema.from_dict({
        "given": fields.String(required=True), "column": fields.String(required=True),
        "message": fields.String(required=True)}, name="ColumnSuggestion")), metadata={
        "description": "422 invalid_columns only: names that nearly match an absent column (did you mean)"}),
    "far_outside_training": fields.Dict(keys=fields.String(), values=fields.Integer(), metadata={
        "description": "422 invalid_columns only: per column, values far outside the training range"}),
}, name="Error")

StreamEndSchema = _OpenSchema.from_dict({
    "error": fields.String(required=True, metadata={"description": "a short code: bad_request, too_large, ..."}),
    "message": fields.String(required=True, metadata={"description": "why the stream ended; never the payload"}),
    "rows_answered": fields.Integer(required=True, metadata={"description": "rows answered before it ended"}),
}, name="StreamEnd")

HealthSchema = _OpenSchema.from_dict({"status": fields.String(required=True)}, name="Health")
IndexSchema = _OpenSchema.from_dict({
    "message": fields.String(required=True),
    "links": fields.Dict(keys=fields.String(), values=fields.String(), required=True,
                         metadata={"description": "where to go: name → path", "example": LINKS}),
}, name="Index")
ReadySchema = _OpenSchema.from_dict(
    {"status": fields.String(required=True), "model_version": fields.String(required=True)}, name="Ready")

VariableSchema = _OpenSchema.from_dict({
    "name": fields.String(required=True), "coefficient": fields.Float(required=True),
    "std_error": fields.Float(required=True),
}, name="Variable")

LimitsSchema = _OpenSchema.from_dict({
    "max_rows": fields.Integer(required=True), "max_body_bytes": fields.Integer(required=True),
    "timeout_seconds": fields.Integer(required=True), "graceful_timeout_seconds": fields.Integer(required=True),
    "max_listed_errors": fields.Integer(required=True),
}, name="Limits")

_MANIFEST_FIELDS = {
    "model_version": fields.String(required=True),
    "created_at": fields.String(required=True, metadata={"format": "date-time"}),
    "training_data": fields.Dict(required=True, metadata={"description": "file name, sha256 fingerprint, rows"}),
    "variables": fields.List(fields.Nested(VariableSchema), required=True),
    "consumed_columns": fields.List(fields.String(), required=True),
    "column_stats": fields.Dict(keys=fields.String(), values=fields.Dict(), required=True, metadata={
        "description": "per consumed column: kind, missing share, imputation value, centre, scale, "
                       "training min and max (numeric) or levels (categorical)"}),
    "threshold": fields.Float(required=True),
    "metrics": fields.Dict(required=True, metadata={"description": "AUC and rows per split"}),
    "library_versions": fields.Dict(keys=fields.String(), values=fields.String(), required=True),
    "files": fields.Dict(keys=fields.String(), values=fields.String(), required=True,
                         metadata={"description": "sha256 of each artifact"}),
}

FailedSwitchSchema = _OpenSchema.from_dict({
    "version": fields.String(required=True, allow_none=True, metadata={"description": "null: unreadable pointer"}),
    "error": fields.String(required=True), "at": fields.String(required=True, metadata={"format": "date-time"}),
}, name="FailedSwitch")

LifecycleSchema = _OpenSchema.from_dict({
    "active_version": fields.String(required=True, allow_none=True,
                                    metadata={"description": "the version the store's pointer names now"}),
    "loaded_at": fields.String(required=True, metadata={"format": "date-time"}),
    "poll_seconds": fields.Float(required=True, allow_none=True,
                                 metadata={"description": "MODEL_POLL_SECONDS; null with MODEL_DIR"}),
    "failed_switch": fields.Nested(FailedSwitchSchema, required=True, allow_none=True, metadata={
        "description": "the active version this worker could not load (it kept its model), else null"}),
}, name="Lifecycle")

ModelCardSchema = _OpenSchema.from_dict({
    **_MANIFEST_FIELDS,
    "limits": fields.Nested(LimitsSchema, required=True),
    "explanation_method": fields.String(required=True, metadata={"description": "how ?explain's reasons are made"}),
    "lifecycle": fields.Nested(LifecycleSchema, required=True),
}, name="ModelCard")

VersionCardSchema = _OpenSchema.from_dict({
    **_MANIFEST_FIELDS,
    "active": fields.Boolean(required=True, metadata={"description": "the store's active version"}),
    "serving": fields.Boolean(required=True, metadata={"description": "served by the worker that answered"}),
}, name="VersionCard")

VersionSchema = _OpenSchema.from_dict({
    "version": fields.String(required=True),
    "active": fields.Boolean(required=True), "serving": fields.Boolean(required=True),
    "created_at": fields.String(metadata={"format": "date-time"}),
    "threshold": fields.Float(), "auc": fields.Dict(keys=fields.String(), values=fields.Float()),
    "training_data": fields.Dict(metadata={"description": "file name, sha256 fingerprint, rows"}),
    "error": fields.String(metadata={"description": "why the version is unusable (instead of its figures)"}),
}, name="Version")

ModelListSchema = _OpenSchema.from_dict({
    "active_version": fields.String(required=True, allow_none=True),
    "serving_version": fields.String(required=True),
    "versions": fields.List(fields.Nested(VersionSchema), required=True),
}, name="ModelList")


# --- The OpenAPI document -----------------------------------------------------------------

def _binary(description: str) -> dict:
    return {"schema": {"type": "string", "format": "binary", "description": description}}




def _json(schema: object) -> dict:
    return {"application/json": {"schema": schema}}


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _error(description: str) -> dict:
    return {"description": description, "content": _json(_ref("Error")), "headers": _COMMON_HEADERS}


_COMMON_HEADERS = {
    "X-Request-ID": {"description": "the client's id when valid, else a generated one", "schema": {"type": "string"}},
    "X-Model-Version": {"description": "the model that answered", "schema": {"type": "string"}},
}


#: The two ways of sending an API key (service/http/auth.py), as OpenAPI security schemes.
SECURITY_SCHEMES = {
    "bearerAuth": {"type": "http", "scheme": "bearer", "description": "an API key as `Authorization: Bearer KEY`"},
    "apiKeyHeader": {"type": "apiKey", "in": "header", "name": "X-API-Key", "description": "an API key as `X-API-Key`"},
}


def openapi_document(max_rows: int, max_body_mb: int, errors_modes: tuple[str, ...], n_variables: int,
                     key_paths: tuple[str, ...] | None = None) -> dict:
    """The OpenAPI 3.1 document of the service (build once per process: it takes ~50 ms).

    The key schemes are always declared; with ``key_paths`` (API keys on) the operations under
    those paths require one of them and list the 401."""
    spec = APISpec(title=API_TITLE, version=API_VERSION, openapi_version=OPENAPI_VERSION,
                   plugins=[MarshmallowPlugin()], info={"description": _DESCRIPTION})
    for name, schema in (("Row", RowSchema), ("Prediction", PredictionSchema), ("RowError", RowErrorSchema),
                         ("PredictionColumns", PredictionColumnsSchema), ("Error", ErrorSchema),
                         ("StreamEnd", StreamEndSchema), ("Index", IndexSchema),
                         ("Health", HealthSchema), ("Ready", ReadySchema), ("ModelCard", ModelCardSchema),
                         ("VersionCard", VersionCardSchema), ("ModelList", ModelListSchema)):
        spec.components.schema(name, schema=schema)
    rows = {"type": "array", "items": _ref("Row"), "minItems": 1, "maxItems": max_rows}
    spec.path("/predict", operations={"post": {
        "summary": "Score 1 to N rows, answering in input order",
        "description": f"At most {max_rows:,} rows and {max_body_mb} MB per request (NDJSON streams excepted). "
                       "A JSON body is accepted whatever the Content-Type says; CSV needs a header row; Arrow "
                       "and Parquet columns are taken by name. `Accept: " + ARROW + "` or `" + PARQUET +
                       "` asks for the answer as a table: `" + PROBABILITY + "` (float64), `" + PREDICTED_CLASS +
                       "` (int8), `id` when rows have ids, `error` (text, null for scored rows) with "
                       "`errors=inline`, `reasons` (each row's JSON) with `explain`. An `" + NDJSON + "` body "
                       "is streamed: read, scored and answered in chunks, one answer line per row, in order.",
        "parameters": [
            {"name": "format", "in": "query", "schema": {"type": "string", "enum": list(FORMATS),
                                                          "default": ROWS_FORMAT},
             "description": f"`{ROWS_FORMAT}`: one object per row; `{COLUMNS_FORMAT}`: one object of parallel arrays"},
            {"name": "errors", "in": "query", "schema": {"type": "string", "enum": list(errors_modes),
                                                          "default": errors_modes[0]},
             "description": "`reject`: any invalid row answers 422 and nothing is scored; "
                            "`inline`: an error object stands in for each invalid row"},
            {"name": "input", "in": "query", "schema": {"type": "string", "enum": list(INPUT_LAYOUTS),
                                                         "default": INPUT_LAYOUTS[0]},
             "description": "how a JSON body lays out its rows: `rows` (an object or an array of objects) or "
                            "`columns` (one object of column name to array of cells, all of one length)"},
            {"name": "columns", "in": "query", "schema": {"type": "string", "enum": list(COLUMN_MODES),
                                                           "default": COLUMN_MODES[0]},
             "description": "`report`: consumed columns absent from every row are scored as missing values and "
                            "listed in X-Missing-Columns, names that nearly match one (case, spaces, `_`/`-`, "
                            "one edit) in X-Column-Suggestions, values far outside the training range "
                            f"(beyond {FAR_SPANS:g} training ranges from it) in X-Far-Outside-Training; "
                            "`strict` (the setting REQUIRE_COLUMNS=true makes it the rule): any of these is a "
                            "422 `invalid_columns` listing them, nothing scored"},
            {"name": "explain", "in": "query",
             "schema": {"type": "string", "enum": [*map(str, range(1, n_variables + 1)), EXPLAIN_ALL]},
             "description": f"`N` (1 to {n_variables}) or `{EXPLAIN_ALL}`: each scored row gains `reasons`, its N "
                            f"largest contributions to the logit, largest first (ties by variable name). {METHOD}"},
        ],
        "requestBody": {"required": True, "content": {
            "application/json": {
                "schema": {"anyOf": [_ref("Row"), rows]},
                "examples": {
                    "one_row": {"summary": "one row, as an array", "value": [EXAMPLE_ROW]},
                    "one_row_object": {"summary": "one row, as an object", "value": EXAMPLE_ROW},
                    "messy_row": {"summary": "messy spellings and missing values", "value": [
                        {"id": "customer-1", "x12": "($5,032.58)", "x31": " ASIA ", "x5": "Sat", "x81": "sept",
                         "x44": "0.5", "x53": "n/a", "x56": None}]},
                },
            },
            "text/csv": {"schema": {"type": "string"}, "example": "x5,x12,x81\nmonday,\"$5,547.78\",October\n"},
            ARROW: _binary("an Arrow IPC stream: numeric columns as integers or floats, messy values as strings "
                           "(plain or dictionary-encoded)"),
            PARQUET: _binary("a Parquet file, columns as for Arrow; also `application/x-parquet`"),
            NDJSON: {"schema": {"type": "array", "items": _ref("Row"), "minItems": 1, "description": (
                "the rows, one row object a line (NDJSON), streamed (chunked transfer encoding welcome); the "
                "row and body limits do not apply, STREAM_MAX_BODY_MB and STREAM_TIMEOUT do")}},
        }},
        "responses": {
            "200": {"description": "one answer per input row, in input order", "headers": {
                **_COMMON_HEADERS,
                "Server-Timing": {"description": "duration of each phase in ms: " + ", ".join(PHASES),
                                  "schema": {"type": "string"}},
                MISSING_HEADER: {"description": "only when some are: the consumed columns absent from every row "
                                                "(scored as missing values), e.g. `x12, x5`",
                                 "schema": {"type": "string"}},
                SUGGESTIONS_HEADER: {"description": "only when some are: names of the body that nearly match an "
                                                    "absent column, e.g. `X12 -> x12, x_5 -> x5` (names shown in "
                                                    "printable ASCII, `?` for other characters)",
                                     "schema": {"type": "string"}},
                FAR_HEADER: {"description": "only when some are: per numeric column, the count of values far "
                                            "outside the training range, e.g. `x12=1`",
                             "schema": {"type": "string"}},
            }, "content": {
                **_json({"anyOf": [
                    {"type": "array", "items": {"anyOf": [_ref("Prediction"), _ref("RowError")]}},
                    _ref("PredictionColumns"),
                ]}),
                ARROW: _binary("the answer table as an Arrow IPC stream"),
                PARQUET: _binary("the answer table as a Parquet file"),
                NDJSON: {"schema": {"type": "array", "items": {"anyOf": [
                    _ref("Prediction"), _ref("RowError"), _ref("StreamEnd")]}, "description": (
                    "for an NDJSON body, one object a line: per row, in order, a Prediction or a RowError (its "
                    "index counted over the whole stream); a stream that ends early (a malformed line, "
                    "STREAM_MAX_BODY_MB, STREAM_TIMEOUT, STREAM_HOLD_MB, a stalled client) ends with a StreamEnd "
                    "line")}},
            }},
            "400": _error("malformed JSON or CSV, not Arrow or Parquet, wrong shape, no rows, bad query parameter; "
                          "a body that looks like another format than it was read as (CSV or NDJSON whose line "
                          "breaks `curl -d` removed, NDJSON without its Content-Type, JSON columns without "
                          "`?input=columns`) is told what to send"),
            "408": _error("the request did not arrive within CLIENT_READ_TIMEOUT, or its body stopped for "
                          "CLIENT_IDLE_SECONDS"),
            "413": _error("body or row count over the limit"),
            "415": _error("the body is in none of the accepted formats"),
            "422": _error("invalid rows (every one listed, up to a cap), or `invalid_columns` with "
                          "columns=strict or REQUIRE_COLUMNS (absent_columns, suggestions, far_outside_training); "
                          "nothing scored"),
            "500": _error("unexpected error; the request id identifies it in the logs"),
            "504": _error("the request ran out of time; send fewer rows per request"),
            "default": _error("any other error (404, ...)"),
        },
    }})
    spec.path("/", operations={"get": {
        "summary": "Where to start: links to this documentation and the main routes",
        "responses": {
            "200": {"description": "the links", "content": _json(_ref("Index")), "headers": _COMMON_HEADERS},
            "302": {"description": "a browser (preferring text/html) is sent to /docs", "headers": {
                "Location": {"description": "/docs", "schema": {"type": "string"}}}},
        }}})
    _get(spec, "/health", "The process is alive", _ref("Health"))
    _get(spec, "/ready", "Artifacts verified and the golden row scores as recorded", _ref("Ready"),
         {"503": _error("not ready: artifacts changed or the golden row drifted")})
    _get(spec, "/model", "The served model's card: its manifest (minus the golden row), the limits, its lifecycle; "
         "an HTML page for a browser (Accept: text/html)", _ref("ModelCard"), html=True)
    _get(spec, "/models", "The versions of the model store, the active one and the one served", _ref("ModelList"))
    version = {"name": "version", "in": "path", "required": True, "schema": {"type": "string"}}
    _get(spec, "/models/{version}", "A version's card, to check it before a switch; an HTML page for a browser",
         _ref("VersionCard"), {"404": _error("no such version")}, html=True, parameters=[version])
    spec.path("/models/{version}/{picture}", operations={"get": {
        "summary": "A picture training drew for the version", "parameters": [version, {
            "name": "picture", "in": "path", "required": True,
            "schema": {"type": "string", "enum": ["roc.png", "calibration.png"]}}],
        "responses": {"200": {"description": "PNG", "content": {"image/png": {"schema": {
            "type": "string", "format": "binary"}}}, "headers": _COMMON_HEADERS},
            "404": _error("no such version or picture")}}})
    _get(spec, "/openapi.json", "This document", {"type": "object"})
    spec.path("/metrics", operations={"get": {"summary": "Prometheus metrics, summed over the workers",
                                              "responses": {"200": {"description": "text exposition format",
                                                                    "content": {"text/plain": {"schema": {
                                                                        "type": "string"}}}}}}})
    spec.path("/docs", operations={"get": {"summary": "This documentation as a page (works offline)",
                                           "responses": {"200": {"description": "HTML page",
                                                                 "content": {"text/html": {"schema": {
                                                                     "type": "string"}}}}}}})
    for name, scheme in SECURITY_SCHEMES.items():
        spec.components.security_scheme(name, scheme)
    document = spec.to_dict()
    _list_other_methods(document)
    if key_paths is not None:
        _require_keys(document, key_paths)
    return document


def _list_other_methods(document: dict) -> None:
    """Give every operation the 405 any other method on its path gets, with that path's ``Allow``."""
    for operations in document["paths"].values():
        methods = [method.upper() for method in operations]
        allow = ", ".join(allowed_methods([*methods, "OPTIONS", *(["HEAD"] if "GET" in methods else [])]))
        refused = _error(f"another method on this path; the message names the one to use, `Allow` lists "
                         f"them: `{allow}`")
        refused["headers"] = {**refused["headers"], "Allow": {"description": f"`{allow}`",
                                                              "schema": {"type": "string"}}}
        for operation in operations.values():
            operation["responses"]["405"] = refused


def _require_keys(document: dict, key_paths: tuple[str, ...]) -> None:
    """Mark the operations under ``key_paths`` as needing a key (either scheme), with their 401."""
    refused = _error("no API key, or not a valid one (the answer carries `WWW-Authenticate: Bearer`)")
    for path, operations in document["paths"].items():
        if protected(path, key_paths) is None:
            continue
        for operation in operations.values():
            operation["security"] = [{name: []} for name in SECURITY_SCHEMES]
            operation["responses"]["401"] = refused


def _get(spec: APISpec, path: str, summary: str, schema: dict, more: dict | None = None, html: bool = False,
         parameters: list | None = None) -> None:
    content = {**_json(schema), **({"text/html": {"schema": {"type": "string"}}} if html else {})}
    responses = {"200": {"description": summary, "content": content, "headers": _COMMON_HEADERS}, **(more or {})}
    spec.path(path, operations={"get": {"summary": summary, "responses": responses,
                                        **({"parameters": parameters} if parameters else {})}})


_DESCRIPTION = """\
Scores customers with the segmentation logistic model. `POST /predict` takes one row (a JSON
object) or many (a JSON array of rows or, with `?input=columns`, an object of columns; CSV with a
header row; an Arrow IPC stream; a Parquet file; an NDJSON stream) of the raw 100-column table
`x0..x99`, exactly as the source systems emit it, and answers for every row, in the same order,
the probability of the positive class and the predicted class: as JSON, or as an Arrow or
Parquet table when `Accept` asks for one, or as NDJSON lines for a stream.

Only the columns the model consumes are validated (`GET /model` lists them); other columns and
unknown keys are ignored. Missing values are imputed as at training.
"""
