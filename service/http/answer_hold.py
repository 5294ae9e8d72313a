"""The answers of an NDJSON stream that its socket will not take yet, held so that reading goes on.

Why: many clients (Python's ``requests`` among them) send the whole body before they read a byte
of the answer. gunicorn writes each answer chunk with ``sendall`` (``gunicorn.util.write_chunk``),
which blocks once the socket buffers are full: the worker then stopped reading the body, the
client could not finish sending it, and both waited until ``sendall`` gave up after
STREAM_IDLE_SECONDS (TimeoutError, "Socket error processing request"; the client got the 800-odd
answer lines the buffers held and ``IncompleteRead``).

How: ``service.worker.buffered_socket.HeldSocket`` (the socket gunicorn writes to and reads the body
from) hands a stream's writes and its waits for body bytes to an ``AnswerHold``:

- ``sendall`` sends what the socket takes now, without waiting, and holds the rest, in order,
  behind what is already held: in memory up to ``MEMORY_BYTES``, then in an unnamed temporary
  file (``tempfile.SpooledTemporaryFile`` in TMPDIR: the kernel frees it when it is closed or its
  process ends, however the request ends). So memory stays bounded whatever the stream's size.
- A wait for body bytes also waits for the socket to take held bytes and sends them as it does.
- ``make_room`` keeps the held bytes within STREAM_HOLD_MB: over it, it waits for the client to
  take some, as a blocking write would (a client that reads slowly is slowed, not cut off); a
  client that takes none for STREAM_IDLE_SECONDS is not reading, and the stream ends
  (service/http/streaming.py writes its final error line).
- ``finish`` (the stream's WSGI ``close``, after gunicorn's last write) sends everything still
  held, each wait bounded by STREAM_IDLE_SECONDS. A stream that ends before its body (an error)
  first reads and drops the rest of it (service/http/streaming.py): a client that sends before it
  reads takes its answers only once its body is out, and a socket closed with unread bytes is
  reset, losing the answers not yet delivered.
"""

from __future__ import annotations

import select
import socket
import tempfile
import time
from collections.abc import Callable

#: Held answers kept in memory; beyond this they go to the temporary file.
MEMORY_BYTES = 8 << 20
#: The most held bytes read back from the temporary file for one send.
SEND_BYTES = 1 << 20

_GONE = select.POLLERR | select.POLLHUP | select.POLLNVAL


class AnswerHold:
    """What one stream's socket has not taken yet, behind ``sock`` (the client's socket)."""

    def __init__(self, sock: socket.socket, limit_bytes: int, idle_seconds: float):
        self.sock = sock
        self.limit_bytes = limit_bytes
        self.idle_seconds = idle_seconds
        self._file: tempfile.SpooledTemporaryFile | None = None
        self._sent = 0  # the position in the file of the first held byte not sent
        self._end = 0  # the position after the last held byte
        self._finished = False

    @property
    def held(self) -> int:
        """Bytes held, not yet taken by the socket."""
        return self._end - self._sent

    def sendall(self, data: bytes) -> None:
        """Send ``data`` after what is held: what the socket takes now, the rest held."""
        if self._finished:
            self.sock.sendall(data)
            return
        self._send_held()
        sent = 0 if self.held else self._send_now(data)
        if sent < len(data):
            self._hold(memoryview(data)[sent:])

    def wait_readable(self) -> None:
        """Wait until the client has sent more (or gone), sending held bytes as the socket takes
        them; TimeoutError after STREAM_IDLE_SECONDS without a byte from the client."""
        if self._finished:
            return  # the socket's own timeout applies
        deadline = time.monotonic() + self.idle_seconds
        while True:
            events = self._poll(select.POLLIN | (select.POLLOUT if self.held else 0), deadline - time.monotonic())
            if not events:
                raise TimeoutError(f"no data from the client for {self.idle_seconds:g} s")
            if events & (select.POLLIN | _GONE):
                return
            self._send_held()

    def make_room(self, size: int, beat: Callable[[], None]) -> bool:
        """Whether ``size`` more bytes fit within the limit once the client has taken what it
        takes; False when it took nothing for STREAM_IDLE_SECONDS. Bytes that fit nowhere (one
        answer larger than the limit) fit when nothing is held."""
        self._send_held()
        while self.held and self.held + size > self.limit_bytes:
            beat()
            if not self._poll(select.POLLOUT, self.idle_seconds):
                return False
            self._send_held()
        return True

    def finish(self, deadline: float, beat: Callable[[], None]) -> None:
        """Send every byte held; give up at ``deadline``, when the client takes nothing for
        STREAM_IDLE_SECONDS, or when it is gone. The temporary file is closed (and so removed)
        whatever happens."""
        try:
            while self.held:
                beat()
                wait = min(self.idle_seconds, deadline - time.monotonic())
                if wait <= 0 or not self._poll(select.POLLOUT, wait):
                    return
                self._send_held()  # also after POLLERR or POLLHUP: it raises then
        except OSError:  # gone
            return
        finally:
            self._finished = True
            if self._file is not None:
                self._file.close()
                self._file = None

    def _send_now(self, data) -> int:
        """Bytes of ``data`` the socket took without waiting."""
        if not self._poll(select.POLLOUT, 0):
            return 0
        try:  # writable (or failed: then this raises): the socket takes some at once
            return self.sock.send(data, socket.MSG_DONTWAIT)
        except BlockingIOError:
            return 0

    def _send_held(self) -> None:
        """Send held bytes, in order, while the socket takes them without waiting."""
        while self.held:
            self._file.seek(self._sent)
            sent = self._send_now(self._file.read(min(self.held, SEND_BYTES)))
            if not sent:
                break
            self._sent += sent
        if not self.held and self._end:
            self._file.seek(0)
            self._file.truncate()
            self._sent = self._end = 0

    def _hold(self, data: memoryview) -> None:
        if self._file is None:
            self._file = tempfile.SpooledTemporaryFile(MEMORY_BYTES, prefix="predict-stream-")
        self._file.seek(self._end)
        self._file.write(data)
        self._end += len(data)

    def _poll(self, events: int, seconds: float) -> int:
        poller = select.poll()
        poller.register(self.sock, events)
        ready = poller.poll(max(0.0, seconds) * 1000)
        return ready[0][1] if ready else 0
