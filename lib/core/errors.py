"""One small exception hierarchy for the whole service.

The web layer maps these to HTTP status codes; nothing here knows about HTTP.
"""

from __future__ import annotations

from dataclasses import dataclass


class ServiceError(Exception):
    """Base class of every error the service reports to a client or operator."""


class InvalidValue(ValueError):
    """A single cell could not be normalised; the message says what was expected."""


class PayloadError(ServiceError):
    """A request body or input file as a whole is unusable: malformed in its format, of the wrong
    shape, without rows, or claiming what its data does not hold."""


class UnsupportedMediaError(ServiceError):
    """The body is in no format the service reads: its Content-Type names none of them, and it
    looks like neither JSON nor CSV."""


class LimitError(ServiceError):
    """The body is over a configured limit: its size, its rows, or what it decodes to."""


class ArtifactError(ServiceError):
    """Model artifacts are missing, tampered with, or built with other library versions."""


@dataclass(frozen=True)
class CellError:
    """One invalid cell: which row (position and client id), which column, what is wrong."""

    index: int
    column: str
    message: str
    id: object = None

    def as_dict(self) -> dict:
        """The wire form used in 422 bodies and inline errors."""
        return {"index": self.index, "id": self.id, "column": self.column, "message": self.message}


class InputError(ServiceError):
    """One or more rows hold invalid values; ``errors`` lists every invalid cell."""

    def __init__(self, errors: list[CellError], n_rows: int):
        self.errors = errors
        self.n_rows = n_rows
        self.invalid_rows = sorted({e.index for e in errors})
        super().__init__(f"{len(self.invalid_rows)} of {n_rows} rows are invalid")
