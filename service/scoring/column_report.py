"""The column report (``lib.core.columns``) on the wire: the answer's headers and the access-log field.

A 200 answer carries, only when there is something to say:

- ``X-Missing-Columns: x12, x5``: consumed columns absent from every row (scored as missing);
- ``X-Column-Suggestions: X12 -> x12, x_5 -> x5``: names of the body that nearly match one of
  them ("did you mean");
- ``X-Far-Outside-Training: x12=1``: per numeric column, how many values lie far outside the
  training range (lib.core.columns.FAR_SPANS).

A name the client gave is shown as ``lib.core.columns.shown`` makes it (printable ASCII, ``?`` for
anything else, 40 characters at most); a header value is cut at MAX_HEADER characters (ending
in ``...``). ``?columns=strict`` (or the setting REQUIRE_COLUMNS) refuses such a body with 422.
"""

from __future__ import annotations

from lib.core.columns import ColumnReport, shown

MISSING_HEADER = "X-Missing-Columns"
SUGGESTIONS_HEADER = "X-Column-Suggestions"
FAR_HEADER = "X-Far-Outside-Training"
#: ``?columns=`` values: report (the default) or refuse with 422.
COLUMN_MODES = ("report", "strict")
MAX_HEADER = 512


def _capped(items: list[str]) -> str:
    value = ", ".join(items)
    return value if len(value) <= MAX_HEADER else value[:MAX_HEADER - 3].rsplit(", ", 1)[0] + ", ..."


def column_headers(report: ColumnReport) -> list[tuple[str, str]]:
    """The answer's headers for ``report`` (none for an empty one)."""
    headers = []
    if report.absent:
        headers.append((MISSING_HEADER, _capped(list(report.absent))))
    if report.suggestions:
        headers.append((SUGGESTIONS_HEADER, _capped([f"{shown(given)} -> {column}"
                                                      for given, column in report.suggestions.items()])))
    if report.far:
        headers.append((FAR_HEADER, _capped([f"{column}={count}" for column, count in report.far.items()])))
    return headers


def log_field(report: ColumnReport) -> dict | None:
    """The access line's ``columns`` field: None for an empty report, names sanitised."""
    if not report:
        return None
    return {"absent": list(report.absent), "suggestions": {shown(g): c for g, c in report.suggestions.items()},
            "far": dict(report.far)}


def merged(first: ColumnReport, other: ColumnReport) -> ColumnReport:
    """The report of a stream so far and one more chunk: absent from every row of both, the
    suggestions of either, far counts added."""
    far = dict(first.far)
    for column, count in other.far.items():
        far[column] = far.get(column, 0) + count
    return ColumnReport(absent=tuple(c for c in first.absent if c in other.absent),
                        suggestions={**first.suggestions, **other.suggestions}, far=far)


def refusal_fields(report: ColumnReport) -> dict:
    """The fields of the 422 answer of a refused report, names sanitised."""
    return {"absent_columns": list(report.absent),
            "suggestions": [{"given": shown(g), "column": c, "message": f"did you mean {c!r}?"}
                            for g, c in report.suggestions.items()],
            "far_outside_training": dict(report.far)}
