"""``POST /predict`` in the OpenAPI document: its query parameters, the body formats it reads and what it answers.

The service's main operation, described at length; ``service.http.openapi`` assembles it with
the other routes.
"""

from __future__ import annotations

from lib.codecs.media import ARROW, NDJSON, PARQUET
from lib.core.columns import FAR_SPANS
from lib.core.example_row import EXAMPLE_ROW
from lib.core.explain import METHOD
from service.http.answer_schemas import COMMON_HEADERS, binary_content, error_response, json_content, schema_ref
from service.http.readers import INPUT_LAYOUTS
from service.scoring.answers import COLUMNS_FORMAT, FORMATS, PREDICTED_CLASS, PROBABILITY, ROWS_FORMAT
from service.scoring.column_report import COLUMN_MODES, FAR_HEADER, MISSING_HEADER, SUGGESTIONS_HEADER
from service.scoring.predictor import EXPLAIN_ALL, PHASES


def predict_operation(max_rows: int, max_body_mb: int, errors_modes: tuple[str, ...], n_variables: int) -> dict:
    """``POST /predict``: what it takes (query parameters, body formats) and what it answers."""
    return {
        "summary": "Score 1 to N rows, answering in input order",
        "description": f"At most {max_rows:,} rows and {max_body_mb} MB per request (NDJSON streams excepted). "
                       "A JSON body is accepted whatever the Content-Type says; CSV needs a header row; Arrow "
                       "and Parquet columns are taken by name. `Accept: " + ARROW + "` or `" + PARQUET +
                       "` asks for the answer as a table: `" + PROBABILITY + "` (float64), `" + PREDICTED_CLASS +
                       "` (int8), `id` when rows have ids, `error` (text, null for scored rows) with "
                       "`errors=inline`, `reasons` (each row's JSON) with `explain`. An `" + NDJSON + "` body "
                       "is streamed: read, scored and answered in chunks, one answer line per row, in order.",
        "parameters": _predict_parameters(errors_modes, n_variables),
        "requestBody": _predict_body(max_rows),
        "responses": _predict_responses(),
    }


def _predict_parameters(errors_modes: tuple[str, ...], n_variables: int) -> list[dict]:
    """The query parameters of ``POST /predict``: answer layout, invalid rows, input layout, columns, explain."""
    return [
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
    ]


def _predict_body(max_rows: int) -> dict:
    """The body formats ``POST /predict`` reads, with examples."""
    rows = {"type": "array", "items": schema_ref("Row"), "minItems": 1, "maxItems": max_rows}
    return {"required": True, "content": {
        "application/json": {
            "schema": {"anyOf": [schema_ref("Row"), rows]},
            "examples": {
                "one_row": {"summary": "one row, as an array", "value": [EXAMPLE_ROW]},
                "one_row_object": {"summary": "one row, as an object", "value": EXAMPLE_ROW},
                "messy_row": {"summary": "messy spellings and missing values", "value": [
                    {"id": "customer-1", "x12": "($5,032.58)", "x31": " ASIA ", "x5": "Sat", "x81": "sept",
                     "x44": "0.5", "x53": "n/a", "x56": None}]},
            },
        },
        "text/csv": {"schema": {"type": "string"}, "example": "x5,x12,x81\nmonday,\"$5,547.78\",October\n"},
        ARROW: binary_content("an Arrow IPC stream: numeric columns as integers or floats, messy values as strings "
                       "(plain or dictionary-encoded)"),
        PARQUET: binary_content("a Parquet file, columns as for Arrow; also `application/x-parquet`"),
        NDJSON: {"schema": {"type": "array", "items": schema_ref("Row"), "minItems": 1, "description": (
            "the rows, one row object a line (NDJSON), streamed (chunked transfer encoding welcome); the "
            "row and body limits do not apply, STREAM_MAX_BODY_MB and STREAM_TIMEOUT do")}},
    }}


def _predict_responses() -> dict:
    """What ``POST /predict`` answers: the scores in each format, and every error status."""
    return {
        "200": {"description": "one answer per input row, in input order", "headers": {
            **COMMON_HEADERS,
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
            **json_content({"anyOf": [
                {"type": "array", "items": {"anyOf": [schema_ref("Prediction"), schema_ref("RowError")]}},
                schema_ref("PredictionColumns"),
            ]}),
            ARROW: binary_content("the answer table as an Arrow IPC stream"),
            PARQUET: binary_content("the answer table as a Parquet file"),
            NDJSON: {"schema": {"type": "array", "items": {"anyOf": [
                schema_ref("Prediction"), schema_ref("RowError"), schema_ref("StreamEnd")]}, "description": (
                "for an NDJSON body, one object a line: per row, in order, a Prediction or a RowError (its "
                "index counted over the whole stream); a stream that ends early (a malformed line, "
                "STREAM_MAX_BODY_MB, STREAM_TIMEOUT, STREAM_HOLD_MB, a stalled client) ends with a StreamEnd "
                "line")}},
        }},
        "400": error_response("malformed JSON or CSV, not Arrow or Parquet, wrong shape, no rows, bad query parameter; "
                      "a body that looks like another format than it was read as (CSV or NDJSON whose line "
                      "breaks `curl -d` removed, NDJSON without its Content-Type, JSON columns without "
                      "`?input=columns`) is told what to send"),
        "408": error_response("the request did not arrive within CLIENT_READ_TIMEOUT, or its body stopped for "
                      "CLIENT_IDLE_SECONDS"),
        "413": error_response("body or row count over the limit"),
        "415": error_response("the body is in none of the accepted formats"),
        "422": error_response("invalid rows (every one listed, up to a cap), or `invalid_columns` with "
                      "columns=strict or REQUIRE_COLUMNS (absent_columns, suggestions, far_outside_training); "
                      "nothing scored"),
        "500": error_response("unexpected error; the request id identifies it in the logs"),
        "504": error_response("the request ran out of time; send fewer rows per request"),
        "default": error_response("any other error (404, ...)"),
    }
