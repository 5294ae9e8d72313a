"""Where a text body (JSON, NDJSON, CSV) stops being UTF-8, said so that the sender can find the
place without the body being echoed: the byte, its line, and the key or column it belongs to."""

from __future__ import annotations

import re

from lib.core.errors import PayloadError

NEWLINE, COMMA = b"\n", b","
#: The last JSON key before a position: ``"name":`` (names of at most 64 plain characters).
_KEY_BEFORE = re.compile(rb'"([^"\\\x00-\x1f]{1,64})"\s*:\s*')
#: How far back from a bad byte to look for the key it belongs to.
_KEY_WINDOW = 4096


def require_utf8(body: bytes, what: str = "the body", csv: bool = False, one_line: bool = False) -> None:
    """Refuse ``body`` (PayloadError) unless all of it is UTF-8, the columns no one reads too: a
    body that is not text is not guessed at. ``csv`` and ``one_line`` (a line of a stream) choose
    how the place is named. Costs a pass over plain ASCII (the common case), a decode else."""
    if body.isascii():
        return
    try:
        body.decode("utf-8")
    except UnicodeDecodeError as exc:
        described = describe_invalid_csv_utf8(body) if csv else describe_invalid_utf8(body, exc, one_line)
        raise PayloadError(f"{what} is {described}") from None


def describe_invalid_utf8(body: bytes, exc: UnicodeDecodeError | None = None, one_line: bool = False) -> str:
    """Where JSON ``body`` stops being UTF-8: the byte, its line (unless ``body`` is ``one_line``
    of a stream, whose caller names the line), and the key whose value holds it when one precedes
    it; ``exc`` is the decoder's error if the caller has it."""
    start = _first_invalid(body, exc)
    if start is None:
        return _message(body, None, [])
    keys = _KEY_BEFORE.findall(body, max(0, start - _KEY_WINDOW), start)
    places = [] if one_line else [f"line {body.count(NEWLINE, 0, start) + 1}"]
    if keys:
        places.append(f"in the value of {keys[-1].decode('utf-8', 'replace')!r}")
    return _message(body, start, places)


def describe_invalid_csv_utf8(body: bytes) -> str:
    """Where CSV ``body`` stops being UTF-8: its line, and the header's name of its column
    (counted by commas, which is exact outside quoted cells)."""
    start = _first_invalid(body, None)
    if start is None:
        return _message(body, None, [])
    line = body.count(NEWLINE, 0, start) + 1
    places = [f"line {line}"]
    if line > 1:
        header = body[:body.find(NEWLINE)].decode("utf-8", "replace").split(",")
        column = body.count(COMMA, body.rfind(NEWLINE, 0, start) + 1, start)
        if column < len(header):
            places.append(f"column {header[column].strip()[:64]!r}")
    return _message(body, start, places)


def _first_invalid(body: bytes, exc: UnicodeDecodeError | None) -> int | None:
    if exc is not None and exc.object is body:
        return exc.start
    try:
        body.decode("utf-8")
    except UnicodeDecodeError as found:
        return found.start
    return None  # the decoder that refused it read something else (a copy): say no more


def _message(body: bytes, start: int | None, places: list[str]) -> str:
    if start is None:
        return "not valid UTF-8: send text as UTF-8"
    where = f" ({', '.join(places)})" if places else ""
    return f"not valid UTF-8: byte {start}{where} is 0x{body[start]:02x}; send text as UTF-8"
