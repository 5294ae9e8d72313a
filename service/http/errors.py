"""Errors of the web layer: which status each exception is answered with, and the JSON error body.

``ERROR_STATUS`` is the one table from the domain's exceptions (``lib.core.errors``) to HTTP status.
Anything else that escapes is a bug: logged with its traceback, answered 500 without details.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from http import HTTPStatus

from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from lib.core.columns import ColumnError
from lib.core.errors import (
    ArtifactError,
    InputError,
    LimitError,
    PayloadError,
    ServiceError,
    UnsupportedMediaError,
)
from service.scoring.column_report import refusal_fields


class DeadlineError(ServiceError):
    """A request ran past its time budget; raised from SIGALRM by ``deadline``."""


class ClientTimeoutError(ServiceError):
    """The client stopped sending the body of a request before its end (CLIENT_IDLE_SECONDS)."""


ERROR_STATUS = {
    PayloadError: 400,
    ClientTimeoutError: 408,
    LimitError: 413,
    UnsupportedMediaError: 415,
    InputError: 422,
    ColumnError: 422,
    ArtifactError: 503,
    DeadlineError: 504,
}
ERROR_CODES = {400: "bad_request", 408: "request_timeout", 413: "too_large", 415: "unsupported_media_type",
               422: "invalid_rows", 503: "not_ready", 504: "deadline_exceeded"}
UNEXPECTED_MESSAGE = "internal server error; the request id identifies it in the logs"

log = logging.getLogger("predict")


def error_payload(status: int, message: str, **extra: object) -> dict:
    """The JSON error object every non-2xx answer carries."""
    return {"error": ERROR_CODES.get(status) or _status_code_name(status), "message": message, **extra}


#: Methods every route answers by itself (Flask adds them): listed last in ``Allow``.
_IMPLIED_METHODS = ("HEAD", "OPTIONS")


def allowed_methods(valid_methods: Iterable[str]) -> list[str]:
    """A route's methods as its ``Allow`` header lists them: the ones a client means (POST for
    /predict) first, then HEAD and OPTIONS, which Flask adds to every route."""
    valid = set(valid_methods)
    return sorted(valid - set(_IMPLIED_METHODS)) + [m for m in _IMPLIED_METHODS if m in valid]


def method_not_allowed(method: str, path: str, valid_methods: Iterable[str]) -> tuple[dict, str]:
    """The JSON error object of a 405, naming the method(s) to use, and its ``Allow`` header."""
    allowed = allowed_methods(valid_methods)
    meant = [m for m in allowed if m not in _IMPLIED_METHODS] or allowed
    message = f"{method[:20]} is not allowed on {path[:100]}: use {' or '.join(meant)}"
    return error_payload(405, message), ", ".join(allowed)


def _status_code_name(status: int) -> str:
    try:
        return re.sub(r"\W+", "_", HTTPStatus(status).phrase).lower()
    except ValueError:
        return "error"


def error_answer(exc: BaseException, max_body_mb: int, max_listed_errors: int,
                 request_id: str | None) -> tuple[int, dict]:
    """The status and JSON error object for an exception raised while answering a request.

    Anything that is neither a service error nor an HTTP error is a bug: it is logged with
    its traceback and the request id, and the client gets a bare 500.
    """
    if isinstance(exc, ServiceError):
        status = next(s for cls, s in ERROR_STATUS.items() if isinstance(exc, cls))
        if isinstance(exc, InputError):
            listed = exc.errors[:max_listed_errors]
            return status, error_payload(
                status, str(exc), invalid_row_count=len(exc.invalid_rows), error_count=len(exc.errors),
                errors=[e.as_dict() for e in listed], errors_truncated=len(listed) < len(exc.errors),
            )
        if isinstance(exc, ColumnError):
            return status, {**error_payload(status, str(exc)), "error": "invalid_columns",
                            **refusal_fields(exc.report)}
        return status, error_payload(status, str(exc))
    if isinstance(exc, RequestEntityTooLarge):
        return 413, error_payload(413, f"the body is over the limit of {max_body_mb} MB per request (MAX_BODY_MB)")
    if isinstance(exc, HTTPException):
        return exc.code or 500, error_payload(exc.code or 500, exc.description or exc.name)
    log.error("unhandled error in request %s", request_id, exc_info=exc)
    return 500, error_payload(500, UNEXPECTED_MESSAGE)
