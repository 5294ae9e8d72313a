"""The HTTP API's answers as marshmallow schemas: predictions, errors, and the health and model pages.

They describe what the service sends, for the OpenAPI document (``service.http.openapi``), with
the pieces of its responses that refer to them (content, error response, common headers); the
answers themselves are built in ``service.scoring.answers`` and the model pages.
"""

from __future__ import annotations

from marshmallow import fields, validate

from lib.core.explain import LOWERS, NEUTRAL, RAISES
from lib.core.schema import ID_KEY
from service.http.docs_page import LINKS
from service.http.row_schema import OpenSchema, RowId
from service.scoring.answers import PREDICTED_CLASS, PROBABILITY, REASONS, SELECTED_FEATURES

ReasonSchema = OpenSchema.from_dict({
    "variable": fields.String(required=True, metadata={"description": "model variable, e.g. x12 or x81_October"}),
    "column": fields.String(required=True, metadata={"description": "the raw column it comes from"}),
    "value": fields.Raw(required=True, allow_none=True, metadata={
        "description": "the normalised input: a number, the row's level for a dummy, null where missing"}),
    "contribution": fields.Float(required=True, metadata={"description": "its term of the row's logit"}),
    "direction": fields.String(required=True, validate=validate.OneOf([RAISES, LOWERS, NEUTRAL]),
                               metadata={"description": "raises (> 0), lowers (< 0) or none (0)"}),
}, name="Reason")

PredictionSchema = OpenSchema.from_dict({
    PROBABILITY: fields.Float(required=True, metadata={"description": "probability of the positive class"}),
    SELECTED_FEATURES: fields.List(fields.String(), required=True,
                                   metadata={"description": "the raw columns the model consumes, sorted"}),
    PREDICTED_CLASS: fields.Integer(required=True, validate=validate.OneOf([0, 1]),
                                    metadata={"description": "1 when the probability reaches the threshold"}),
    ID_KEY: RowId(),
    REASONS: fields.List(fields.Nested(ReasonSchema), metadata={
        "description": "with ?explain only: the largest contributions to the logit, largest first"}),
}, name="Prediction")

CellMessageSchema = OpenSchema.from_dict({
    "column": fields.String(required=True), "message": fields.String(required=True),
}, name="CellMessage")

RowErrorSchema = OpenSchema.from_dict({
    "index": fields.Integer(required=True, metadata={"description": "position of the row in the request"}),
    ID_KEY: RowId(required=True),
    "errors": fields.List(fields.Nested(CellMessageSchema), required=True),
}, name="RowError")

PredictionColumnsSchema = OpenSchema.from_dict({
    SELECTED_FEATURES: fields.List(fields.String(), required=True),
    PROBABILITY: fields.List(fields.Float(allow_none=True), required=True,
                             metadata={"description": "null for an invalid row (errors=inline)"}),
    PREDICTED_CLASS: fields.List(fields.Integer(allow_none=True, validate=validate.OneOf([0, 1])), required=True),
    ID_KEY: fields.List(RowId(), metadata={"description": "present when some row has an id"}),
    "errors": fields.List(fields.Nested(RowErrorSchema), metadata={"description": "errors=inline only"}),
    REASONS: fields.List(fields.List(fields.Nested(ReasonSchema)), metadata={
        "description": "with ?explain only: each row's reasons, null for an invalid row"}),
}, name="PredictionColumns")

CellErrorSchema = OpenSchema.from_dict({
    "index": fields.Integer(required=True), ID_KEY: RowId(required=True),
    "column": fields.String(required=True), "message": fields.String(required=True),
}, name="CellError")

ErrorSchema = OpenSchema.from_dict({
    "error": fields.String(required=True, metadata={"description": "a short code: bad_request, too_large, ..."}),
    "message": fields.String(required=True, metadata={"description": "what is wrong; never the payload"}),
    "invalid_row_count": fields.Integer(metadata={"description": "422 only"}),
    "error_count": fields.Integer(metadata={"description": "422 only"}),
    "errors": fields.List(fields.Nested(CellErrorSchema), metadata={"description": "422 only, capped"}),
    "errors_truncated": fields.Boolean(metadata={"description": "422 only"}),
    "absent_columns": fields.List(fields.String(), metadata={
        "description": "422 invalid_columns only: consumed columns absent from every row"}),
    "suggestions": fields.List(fields.Nested(OpenSchema.from_dict({
        "given": fields.String(required=True), "column": fields.String(required=True),
        "message": fields.String(required=True)}, name="ColumnSuggestion")), metadata={
        "description": "422 invalid_columns only: names that nearly match an absent column (did you mean)"}),
    "far_outside_training": fields.Dict(keys=fields.String(), values=fields.Integer(), metadata={
        "description": "422 invalid_columns only: per column, values far outside the training range"}),
}, name="Error")

StreamEndSchema = OpenSchema.from_dict({
    "error": fields.String(required=True, metadata={"description": "a short code: bad_request, too_large, ..."}),
    "message": fields.String(required=True, metadata={"description": "why the stream ended; never the payload"}),
    "rows_answered": fields.Integer(required=True, metadata={"description": "rows answered before it ended"}),
}, name="StreamEnd")

HealthSchema = OpenSchema.from_dict({"status": fields.String(required=True)}, name="Health")
IndexSchema = OpenSchema.from_dict({
    "message": fields.String(required=True),
    "links": fields.Dict(keys=fields.String(), values=fields.String(), required=True,
                         metadata={"description": "where to go: name → path", "example": LINKS}),
}, name="Index")
ReadySchema = OpenSchema.from_dict(
    {"status": fields.String(required=True), "model_version": fields.String(required=True)}, name="Ready")

VariableSchema = OpenSchema.from_dict({
    "name": fields.String(required=True), "coefficient": fields.Float(required=True),
    "std_error": fields.Float(required=True),
}, name="Variable")

LimitsSchema = OpenSchema.from_dict({
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

FailedSwitchSchema = OpenSchema.from_dict({
    "version": fields.String(required=True, allow_none=True, metadata={"description": "null: unreadable pointer"}),
    "error": fields.String(required=True), "at": fields.String(required=True, metadata={"format": "date-time"}),
}, name="FailedSwitch")

LifecycleSchema = OpenSchema.from_dict({
    "active_version": fields.String(required=True, allow_none=True,
                                    metadata={"description": "the version the store's pointer names now"}),
    "loaded_at": fields.String(required=True, metadata={"format": "date-time"}),
    "poll_seconds": fields.Float(required=True, allow_none=True,
                                 metadata={"description": "MODEL_POLL_SECONDS; null with MODEL_DIR"}),
    "failed_switch": fields.Nested(FailedSwitchSchema, required=True, allow_none=True, metadata={
        "description": "the active version this worker could not load (it kept its model), else null"}),
}, name="Lifecycle")

ModelCardSchema = OpenSchema.from_dict({
    **_MANIFEST_FIELDS,
    "limits": fields.Nested(LimitsSchema, required=True),
    "explanation_method": fields.String(required=True, metadata={"description": "how ?explain's reasons are made"}),
    "lifecycle": fields.Nested(LifecycleSchema, required=True),
}, name="ModelCard")

VersionCardSchema = OpenSchema.from_dict({
    **_MANIFEST_FIELDS,
    "active": fields.Boolean(required=True, metadata={"description": "the store's active version"}),
    "serving": fields.Boolean(required=True, metadata={"description": "served by the worker that answered"}),
}, name="VersionCard")

VersionSchema = OpenSchema.from_dict({
    "version": fields.String(required=True),
    "active": fields.Boolean(required=True), "serving": fields.Boolean(required=True),
    "created_at": fields.String(metadata={"format": "date-time"}),
    "threshold": fields.Float(), "auc": fields.Dict(keys=fields.String(), values=fields.Float()),
    "training_data": fields.Dict(metadata={"description": "file name, sha256 fingerprint, rows"}),
    "error": fields.String(metadata={"description": "why the version is unusable (instead of its figures)"}),
}, name="Version")

ModelListSchema = OpenSchema.from_dict({
    "active_version": fields.String(required=True, allow_none=True),
    "serving_version": fields.String(required=True),
    "versions": fields.List(fields.Nested(VersionSchema), required=True),
}, name="ModelList")


# --- Pieces of the OpenAPI document's responses that refer to these schemas ---------------

def binary_content(description: str) -> dict:
    return {"schema": {"type": "string", "format": "binary", "description": description}}




def json_content(schema: object) -> dict:
    return {"application/json": {"schema": schema}}


def schema_ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def error_response(description: str) -> dict:
    return {"description": description, "content": json_content(schema_ref("Error")), "headers": COMMON_HEADERS}


COMMON_HEADERS = {
    "X-Request-ID": {"description": "the client's id when valid, else a generated one", "schema": {"type": "string"}},
    "X-Model-Version": {"description": "the model that answered", "schema": {"type": "string"}},
}
