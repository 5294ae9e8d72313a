"""Drain before stop: with DRAIN_SECONDS, SIGTERM first turns /ready to 503, and the graceful
stop follows only DRAIN_SECONDS later.

A balancer that health-checks /ready takes the replica out of rotation meanwhile, while it still
accepts and answers every request it is sent; when gunicorn then closes its socket, no request is
on its way to it, and none meets a refused or reset connection, even with the balancer's
retries off. The state lives in one byte of anonymous shared memory that a ``Drain`` makes in the
gunicorn master before it forks (gunicorn.conf.py's ``when_ready``, which hands it to the
preloaded app), so every worker sees the master's write without files or signals.
"""

from __future__ import annotations

import mmap
import signal

from service.seams.gunicorn_internals import queue_signal, wrap_term_handler

#: The key of the server's ``Drain`` in the app's ``extensions`` (absent when not draining ever:
#: DRAIN_SECONDS=0, or no gunicorn).
EXTENSION = "predict.drain"


class Drain:
    """The drain state of one server, shared by its master and the workers it forks afterwards."""

    def __init__(self):
        # MAP_SHARED and anonymous: workers forked after this share the page with the master.
        self._state = mmap.mmap(-1, 1)

    @property
    def draining(self) -> bool:
        """True once this server has been asked to stop and is waiting out its drain period."""
        return self._state[0] == 1

    def install(self, arbiter, seconds: int) -> None:
        """Make the gunicorn ``arbiter``'s first SIGTERM start a drain of ``seconds``, after which
        the normal graceful stop runs. A second SIGTERM, or SIGINT / SIGQUIT, stops at once."""

        def handle_term(graceful_stop) -> None:
            if self.draining:
                return graceful_stop()  # raises StopIteration: the arbiter's graceful stop
            self._state[0] = 1
            arbiter.log.info("SIGTERM: draining for %s s (/ready answers 503), then the graceful stop", seconds)
            # SIGALRM re-queues SIGTERM in the arbiter's own loop: no thread in a process that forks.
            signal.signal(signal.SIGALRM, lambda *_: queue_signal(arbiter, signal.SIGTERM))
            signal.alarm(seconds)

        wrap_term_handler(arbiter, handle_term)


def is_draining(app) -> bool:
    """Whether the server of the Flask ``app`` is draining (False without a ``Drain``)."""
    drain = app.extensions.get(EXTENSION)
    return drain is not None and drain.draining
