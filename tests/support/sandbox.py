"""A child Python process that runs one function at a time for the fuzz tests, with a memory limit.

Crafted Arrow and Parquet bodies may crash the reader that decodes them (the reason the service
must validate them), or make it allocate gigabytes: what the test itself decodes is decoded here,
so that a crash or a memory bomb fails one body instead of the test run. The child stays up between
calls (importing pyarrow for every body would cost more than the decoding); a call that kills it
is answered ``Died`` and the next call starts a new one.

Run as ``python -m tests.support.sandbox``; requests and answers are length-prefixed pickles on
stdin/stdout. Only the fuzz tests send it anything.
"""

from __future__ import annotations

import importlib
import io
import os
import pickle
import resource
import select
import struct
import subprocess
import sys
from dataclasses import dataclass

from tests.support.live_server import PROJECT_DIR

#: Address space of the child: room for pyarrow and a decoded test body, not for a memory bomb.
MEMORY_LIMIT = 3 * 1024**3


@dataclass(frozen=True)
class Died:
    """The call killed the child (a signal, an exit), or outlived its time."""

    how: str


class Sandbox:
    """Calls ``module:function(*args)`` in the child; returns its result, or Died."""

    def __init__(self, timeout: float = 60):
        self.timeout = timeout
        self.process: subprocess.Popen | None = None

    def _start(self) -> subprocess.Popen:
        if self.process is None or self.process.poll() is not None:
            self.process = subprocess.Popen([sys.executable, "-m", "tests.support.sandbox"], cwd=PROJECT_DIR,
                                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                            stderr=subprocess.DEVNULL)
        return self.process

    def call(self, target: str, *args):
        """Run ``target`` ("module:function") with ``args``; its return value, or Died."""
        process = self._start()
        request = pickle.dumps((target, args))
        try:
            process.stdin.write(struct.pack("<Q", len(request)) + request)
            process.stdin.flush()
            header = self._read(process, 8)
            return pickle.loads(self._read(process, struct.unpack("<Q", header)[0]))
        except (BrokenPipeError, EOFError, TimeoutError) as exc:
            self.stop()
            code = process.returncode
            return Died(f"timed out after {self.timeout} s" if isinstance(exc, TimeoutError)
                        else f"signal {-code}" if code is not None and code < 0 else f"exit code {code}")

    def _read(self, process: subprocess.Popen, n: int) -> bytes:
        data = b""
        while len(data) < n:
            ready, _, _ = select.select([process.stdout], [], [], self.timeout)
            if not ready:
                raise TimeoutError
            chunk = os.read(process.stdout.fileno(), n - len(data))
            if not chunk:
                process.wait(5)
                raise EOFError
            data += chunk
        return data

    def stop(self) -> None:
        if self.process is not None:
            if self.process.poll() is None:
                self.process.kill()
            self.process.wait(10)
            for stream in (self.process.stdin, self.process.stdout):
                stream.close()
            self.process = None


def _serve() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = io.StringIO()  # what a called function prints must not corrupt the answers
    while header := stdin.read(8):
        target, args = pickle.loads(stdin.read(struct.unpack("<Q", header)[0]))
        module, function = target.split(":")
        answer = pickle.dumps(getattr(importlib.import_module(module), function)(*args))
        stdout.write(struct.pack("<Q", len(answer)) + answer)
        stdout.flush()


if __name__ == "__main__":
    _serve()
