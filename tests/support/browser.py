"""A real headless browser for tests: Debian's ``chromium``, driven over the DevTools protocol.

The protocol goes through a pipe (``--remote-debugging-pipe``: the browser reads commands from
its descriptor 3 and writes answers and events to descriptor 4, one JSON message each, ended by
a NUL byte), so no port is opened and no client library is needed.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import select
import shutil
import subprocess
import time
from pathlib import Path

#: The flags that make chromium run here: no sandbox (root in a container), no GPU, nothing
#: fetched from Google's services, a profile of its own.
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--hide-scrollbars", "--remote-debugging-pipe")


def chromium_path() -> str | None:
    """The chromium binary on the PATH, if any."""
    return shutil.which("chromium") or shutil.which("chromium-browser")


def _above(fd: int, highest_taken: int) -> int:
    """``fd`` moved to a descriptor number above ``highest_taken``."""
    moved = fcntl.fcntl(fd, fcntl.F_DUPFD, highest_taken + 1)
    os.close(fd)
    return moved


class BrowserError(RuntimeError):
    """The browser answered a command with an error, died, or did not answer in time."""


class Browser:
    """One headless chromium and one page in it."""

    def __init__(self, profile_dir: Path, width: int = 1280, height: int = 1024, timeout: float = 60):
        binary = chromium_path()
        if binary is None:
            raise BrowserError("chromium is not installed")
        self.timeout = timeout
        commands_read, self._commands = os.pipe()
        self._answers, answers_write = os.pipe()
        # Above 4, so that putting them on 3 and 4 cannot close one of them.
        commands_read, answers_write = (_above(fd, 4) for fd in (commands_read, answers_write))
        # bash puts the two pipe ends on descriptors 3 and 4, where chromium expects them.
        script = f'exec "$0" "$@" 3<&{commands_read} 4>&{answers_write} {commands_read}<&- {answers_write}>&-'
        self.process = subprocess.Popen(
            ["bash", "-c", script, binary, *FLAGS, f"--user-data-dir={profile_dir}",
             f"--window-size={width},{height}", "about:blank"],
            pass_fds=(commands_read, answers_write), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        os.close(commands_read)
        os.close(answers_write)
        self._buffer = b""
        self._next_id = 0
        self._events: list[dict] = []
        target = self._call("Target.createTarget", {"url": "about:blank"})["targetId"]
        self._session = self._call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        self.call("Page.enable")
        self.call("Runtime.enable")

    def call(self, method: str, params: dict | None = None) -> dict:
        """One command to the page; its result."""
        return self._call(method, params, self._session)

    def open(self, url: str) -> None:
        """Load ``url`` and wait for its load event (every image loaded or failed)."""
        self._events.clear()
        navigation = self.call("Page.navigate", {"url": url})
        if navigation.get("errorText"):
            raise BrowserError(f"cannot open {url}: {navigation['errorText']}")
        self._wait_event("Page.loadEventFired")

    def evaluate(self, expression: str):
        """The JSON value of a JavaScript ``expression`` in the page."""
        result = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True})
        if "exceptionDetails" in result:
            raise BrowserError(f"{expression[:80]}: {result['exceptionDetails'].get('text')}")
        return result["result"].get("value")

    def screenshot(self, path: Path) -> bytes:
        """A PNG of the whole page, written to ``path``."""
        data = base64.b64decode(self.call("Page.captureScreenshot",
                                          {"format": "png", "captureBeyondViewport": True})["data"])
        path.write_bytes(data)
        return data

    def close(self) -> None:
        """Close the browser (and kill it if it lingers)."""
        try:
            if self.process.poll() is None:
                self._call("Browser.close", timeout=10)
        except (BrowserError, OSError):
            pass
        finally:
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, 9)
                self.process.wait(10)
            for fd in (self._commands, self._answers):
                try:
                    os.close(fd)
                except OSError:
                    pass

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _call(self, method: str, params: dict | None = None, session: str | None = None,
              timeout: float | None = None) -> dict:
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._commands, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            answer = self._read(deadline, method)
            if answer.get("id") == self._next_id:
                if "error" in answer:
                    raise BrowserError(f"{method}: {answer['error'].get('message')}")
                return answer.get("result", {})
            if "method" in answer:
                self._events.append(answer)

    def _wait_event(self, name: str) -> dict:
        deadline = time.monotonic() + self.timeout
        while True:
            for event in self._events:
                if event["method"] == name:
                    return event
            self._events.append(self._read(deadline, name))

    def _read(self, deadline: float, waiting_for: str) -> dict:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or self.process.poll() is not None:
                raise BrowserError(f"no answer to {waiting_for} (browser exit code {self.process.poll()})")
            ready, _, _ = select.select([self._answers], [], [], left)
            if ready:
                chunk = os.read(self._answers, 1 << 20)
                if not chunk:
                    raise BrowserError(f"the browser closed its pipe while {waiting_for} was pending")
                self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)
