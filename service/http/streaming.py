"""NDJSON streamed through ``POST /predict``: rows are read, scored and answered chunk by chunk
while the body is still arriving, so memory stays bounded whatever the row count.

- The body is read as it arrives; once a chunk of ``STREAM_CHUNK_ROWS`` complete lines (or
  64 MiB) is in, or the client pauses for 0.2 s, the lines in are decoded
  (``service.http.readers.ndjson``), scored and their answer lines written, in order, with chunked
  transfer encoding.
- The status is sent with the first answer: a stream whose first chunk already fails (an empty
  body, a malformed first line, a body over the limit) gets an ordinary JSON error answer.
  After that an invalid row becomes an error object in its place, and anything that ends the
  stream (a malformed line, the body limit, the deadline, a stalled client) a final error line
  ``{"error": ..., "message": ..., "rows_answered": N}``.
- ``STREAM_MAX_BODY_MB`` (0: no limit) and ``STREAM_TIMEOUT`` replace MAX_BODY_MB, MAX_ROWS and
  the request deadline; ``STREAM_IDLE_SECONDS`` bounds each wait on the client, both ways.
- A client that sends before it reads (Python's ``requests``) is served too: answers the socket
  will not take yet are held (memory, then a temporary file; ``service.http.answer_hold``) and the
  body keeps being read; they go out in order as the socket takes them, and the rest at the end
  (WSGI ``close``). Past ``STREAM_HOLD_MB`` held, the stream waits for the client to take some;
  one that takes none for ``STREAM_IDLE_SECONDS`` gets the final error line (``too_large``)
  after the answers before it.
- A client that goes away stops the work: gunicorn closes this iterator at the failed write.
- gunicorn's arbiter kills a sync worker that has not reported for GUNICORN_TIMEOUT; a stream may
  last longer, so each chunk reports through the app's ``Heartbeat``, which gunicorn.conf.py
  connects to each worker.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import orjson

from lib.core.columns import ColumnError, ColumnReport
from lib.core.errors import LimitError, PayloadError
from service.http.answer_hold import AnswerHold
from service.http.errors import DeadlineError, error_answer, error_payload
from service.http.readers.ndjson import NdjsonReader
from service.http.request_steps import ArrivingBody
from service.scoring.column_report import merged
from service.scoring.predictor import Prediction, Predictor
from service.seams.gunicorn_internals import ParseException

#: A chunk is cut at this size even before it holds STREAM_CHUNK_ROWS lines (very wide rows).
CHUNK_BYTES = 64 << 20
#: A pause this long in the body answers the rows received so far, without waiting for a full
#: chunk: a client that sends a few rows and waits for their answers gets them.
PAUSE_SECONDS = 0.2

log = logging.getLogger("predict")

#: The key of the app's ``Heartbeat`` in ``app.extensions`` (gunicorn.conf.py connects it).
HEARTBEAT_EXTENSION = "predict.heartbeat"


class Heartbeat:
    """How a long stream tells gunicorn's arbiter that its worker is alive: the worker's
    ``notify``, connected once per worker after the fork (gunicorn.conf.py's post_worker_init).
    Until then (the master, Flask's test client, another server) a beat does nothing."""

    def __init__(self):
        self._notify: Callable[[], None] | None = None

    def connect(self, notify: Callable[[], None]) -> None:
        """Beat with ``notify`` from now on (this process's worker's)."""
        self._notify = notify

    def __call__(self) -> None:
        if self._notify is not None:
            self._notify()


@dataclass(frozen=True)
class StreamLimits:
    """The limits of one stream: body bytes (0: none), seconds in all, seconds of waiting on the
    client, rows per chunk."""

    max_body_bytes: int
    timeout_seconds: float
    idle_seconds: float
    chunk_rows: int


@dataclass
class StreamTotals:
    """What a stream did, for metrics and the access line once it is over."""

    rows: int = 0
    invalid_rows: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    ended_by: str | None = None
    status: int = 200
    #: The column report of the rows so far (service.scoring.column_report.merged), None before any.
    columns: ColumnReport | None = None


class TooLarge(LimitError):
    """The stream's body went over STREAM_MAX_BODY_MB."""


class AnswersUnread(LimitError):
    """The answers held for a client that does not read them went over STREAM_HOLD_MB."""


def _cut(pieces: list[bytes]) -> tuple[bytes, bytes]:
    """The pieces joined, up to their last newline, and what follows it."""
    data = pieces[0] if len(pieces) == 1 else b"".join(pieces)
    cut = data.rfind(b"\n") + 1
    if cut == len(data):
        return data, b""
    return data[:cut], data[cut:]


class NdjsonStream:
    """The answer of one streamed request: an iterator of NDJSON answer chunks.

    ``start(status, error_body, report)`` is called once, before the first chunk: with 200, None
    and the first chunk's column report when rows were scored, or with an error status and its
    JSON body when the stream failed before its first answer (then that body is the whole answer).
    ``on_chunk(prediction)`` sees every scored chunk (metrics), ``on_end(totals)`` runs once at the
    end, whatever ended it. ``hold`` (None without a socket of the buffered worker) holds the
    answers the client's socket does not take yet; the server's call of ``close`` sends what it
    still holds. ``beat`` is called after each chunk and while waiting on the client (a
    ``Heartbeat``).
    """

    def __init__(self, *, predictor: Predictor, reader: NdjsonReader, body: ArrivingBody, limits: StreamLimits,
                 explain: int | None, start: Callable[[int, bytes | None], None],
                 on_chunk: Callable[[Prediction], None], on_end: Callable[[StreamTotals], None],
                 beat: Callable[[], None], request_id: str = "", hold: AnswerHold | None = None,
                 strict_columns: bool = False):
        self.predictor = predictor
        self.reader = reader
        self.body = body
        self.limits = limits
        self.explain = explain
        self.start = start
        self.on_chunk = on_chunk
        self.on_end = on_end
        self.request_id = request_id
        self.hold = hold
        self.strict_columns = strict_columns
        self.beat = beat
        self.totals = StreamTotals()
        self._lines_done = 0  # lines of the body handed to the reader so far
        self._started = False
        self._pieces = iter(body)
        self._deadline = time.monotonic() + limits.timeout_seconds

    def __iter__(self) -> Iterator[bytes]:
        deadline = self._deadline
        try:
            for chunk in self._chunks():
                answer = self._answer(chunk)
                if answer:
                    yield self._send(answer)
                if self.totals.ended_by is not None:
                    break
                if time.monotonic() > deadline:
                    raise DeadlineError(f"the stream did not finish within {self.limits.timeout_seconds:g} s "
                                        "(STREAM_TIMEOUT); send fewer rows per stream")
            else:
                if not self._started:
                    raise PayloadError("the body holds no rows: send one JSON object a line")
        except Exception as exc:  # noqa: BLE001 - a bug too ends with the final line (error_answer logs it)
            if isinstance(exc, ColumnError):
                self._add_columns(exc.report)
            yield self._end_with(exc)
        finally:  # also when gunicorn closes the stream at a failed write (the client is gone)
            self.on_end(self.totals)

    def close(self) -> None:
        """WSGI's close, after the server's last write: the answers still held go out, within the
        stream's deadline (or STREAM_IDLE_SECONDS from now once that has passed). When the stream
        ended before its body did, the rest of the body is read and dropped first: a client that
        sends before it reads takes its answers only once it has sent everything, and closing
        with its bytes unread would reset the connection under them."""
        if self.hold is None:
            return
        until = max(self._deadline, time.monotonic() + self.limits.idle_seconds)
        try:
            if self.hold.held:
                self._drop_body(until)
        finally:
            self.hold.finish(until, self.beat)

    def _drop_body(self, until: float) -> None:
        try:
            while time.monotonic() < until and next(self._pieces, b""):
                self.beat()
        except (OSError, ParseException):  # the client stopped sending or went away: nothing to wait for
            pass

    def _chunks(self) -> Iterator[bytes]:
        """The body in chunks of whole lines (the last may lack its newline). The pieces are
        kept as they came and joined once per chunk."""
        pieces: list[bytes] = []
        size = newlines = 0
        while True:
            if newlines and self.body.paused(PAUSE_SECONDS):
                chunk, rest = _cut(pieces)
                pieces, size, newlines = [rest], len(rest), 0
                yield chunk
            block = self._read()
            if not block:
                break
            pieces.append(block)
            size += len(block)
            newlines += block.count(b"\n")
            if newlines >= self.limits.chunk_rows or size >= CHUNK_BYTES:
                chunk, rest = _cut(pieces)
                if not chunk:
                    raise PayloadError(f"line {self._lines_done + 1} is longer than {CHUNK_BYTES >> 20} MiB")
                pieces, size, newlines = [rest], len(rest), 0
                yield chunk
        rest = b"".join(pieces)
        if rest.strip():
            yield rest

    def _read(self) -> bytes:
        """The next piece of the body as it arrives; b"" at its end."""
        self.beat()
        try:
            block = next(self._pieces, b"")
        except TimeoutError:
            raise PayloadError(f"no data from the client for {self.limits.idle_seconds:g} s "
                               "(STREAM_IDLE_SECONDS)") from None
        except (OSError, ParseException):
            raise PayloadError("the body ended before its end of stream (chunked transfer encoding "
                               "cut short or malformed)") from None
        self.totals.bytes_in += len(block)
        if self.limits.max_body_bytes and self.totals.bytes_in > self.limits.max_body_bytes:
            raise TooLarge(f"the stream is over the limit of {self.limits.max_body_bytes >> 20} MB "
                           "(STREAM_MAX_BODY_MB)")
        return block

    def _answer(self, chunk: bytes) -> bytes:
        """Score one chunk; record a malformed line as the end of the stream."""
        read = self.reader.read_chunk(chunk, self._lines_done + 1)
        self._lines_done += chunk.count(b"\n")
        answer = b""
        if read.batch.n_rows:
            prediction = self.predictor.predict_batch(read.batch, self.totals.rows, self.explain, self.strict_columns)
            self._add_columns(prediction.columns)
            if self.hold is not None and not self.hold.make_room(len(prediction.body), self.beat):
                raise AnswersUnread(
                    f"the client read no answers for {self.limits.idle_seconds:g} s while over "
                    f"{self.hold.limit_bytes >> 20} MB of them waited for it (STREAM_HOLD_MB): read the answer "
                    "while sending the rows, or send fewer rows per stream")
            self.on_chunk(prediction)
            self.totals.rows += prediction.n_rows
            self.totals.invalid_rows += prediction.n_invalid
            answer = prediction.body
        self.beat()
        if read.malformed is not None:
            if not answer:
                raise read.malformed
            return answer + self._final_line(read.malformed)
        return answer

    def _add_columns(self, report: ColumnReport) -> None:
        self.totals.columns = report if self.totals.columns is None else merged(self.totals.columns, report)

    def _send(self, answer: bytes) -> bytes:
        if not self._started:
            self._started = True
            self.start(200, None, self.totals.columns)
        self.totals.bytes_out += len(answer)
        return answer

    def _end_with(self, exc: Exception) -> bytes:
        """The last bytes of a stream that an error ended: a final error line, or the whole
        error answer when nothing was sent yet."""
        if not self._started:
            status, payload = error_answer(exc, 0, 0, self.request_id)
            self.totals.status = status
            self.totals.ended_by = str(exc)
            body = orjson.dumps(payload)
            self._started = True
            self.start(status, body)
            self.totals.bytes_out += len(body)
            return body
        return self._send(self._final_line(exc))

    def _final_line(self, exc: Exception) -> bytes:
        status, payload = error_answer(exc, 0, 0, self.request_id)
        self.totals.ended_by = str(exc)
        log.info("stream %s ended after %d rows: %s", self.request_id, self.totals.rows, exc)
        return orjson.dumps(error_payload(status, payload["message"], rows_answered=self.totals.rows)) + b"\n"
