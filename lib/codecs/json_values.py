"""How every JSON codec (rows, columns, NDJSON) decodes what its typed decoder refuses, and words
what is wrong with a body, without echoing it."""

from __future__ import annotations

import json

from lib.codecs.text import describe_invalid_utf8
from lib.core.errors import PayloadError


def decode_generic(body: bytes, one_line: bool = False) -> object:
    """Decode any JSON value with the standard library, for bodies a typed decoder refused:
    out-of-range numbers come through as infinities for the normaliser to reject. ``one_line``:
    ``body`` is a line of a stream, which the caller names."""
    try:
        return json.loads(body, parse_constant=reject_constant, parse_int=parse_int)
    except RecursionError:
        raise PayloadError("malformed JSON: nested too deeply") from None
    except UnicodeDecodeError as exc:
        what = "the line is" if one_line else "the body is"
        raise PayloadError(f"{what} {describe_invalid_utf8(body, exc, one_line)}") from None
    except ValueError as exc:
        raise PayloadError(f"malformed JSON: {exc}") from None


def parse_int(text: str) -> int | float:
    """``json.loads``' ``parse_int``: an integer, or an infinity beyond Python's digit limit."""
    # Python refuses to convert integers of more than 4,300 digits; as a float such a number is an
    # infinity, which the normaliser reports as an invalid cell, as the API does.
    try:
        return int(text)
    except ValueError:
        return float(text)


def reject_constant(name: str) -> None:
    """``json.loads``' ``parse_constant``: NaN and Infinity are not JSON."""
    raise ValueError(f"{name} is not valid JSON")


def json_type(value: object) -> str:
    """The JSON name of a decoded value's type, for messages."""
    return {list: "array", str: "string", bool: "boolean", type(None): "null"}.get(type(value), "number")


def describe_syntax_error(exc: Exception, n_bytes: int | None = None) -> str:
    """msgspec's syntax message without its own "JSON is malformed: " prefix (the caller says
    so already), with the body length (``n_bytes``) when the body was cut short."""
    message = str(exc).removeprefix("JSON is malformed: ")
    if n_bytes is not None and "truncated" in message:
        return f"{message.rstrip('.')} (the body ends after {n_bytes} bytes)"
    return message

