"""Drain before stop: with DRAIN_SECONDS, SIGTERM first turns /ready to 503, and the graceful
stop follows only DRAIN_SECONDS later.

A balancer that health-checks /ready takes the replica out of rotation meanwhile, while it still
accepts and answers every request it is sent; when gunicorn then closes its socket, no request is
on its way to it, and none meets a refused or reset connection, even with the balancer's
retries off. The state lives in one byte of anonymous shared memory made in the gunicorn master
before it forks, so every worker sees the master's write without files or signals.
"""

from __future__ import annotations

import mmap
import signal

# MAP_SHARED and anonymous: forked workers share this page with the master.
_state = mmap.mmap(-1, 1)


def is_draining() -> bool:
    """True once this server has been asked to stop and is waiting out its drain period."""
    return _state[0] == 1


def install(arbiter, seconds: int) -> None:
    """Make the gunicorn ``arbiter``'s first SIGTERM start a drain of ``seconds``, after which
    the normal graceful stop runs. A second SIGTERM, or SIGINT / SIGQUIT, stops at once."""
    graceful_stop = arbiter.handle_term

    def handle_term() -> None:
        if is_draining():
            return graceful_stop()  # raises StopIteration: the arbiter's graceful stop
        _state[0] = 1
        arbiter.log.info("SIGTERM: draining for %s s (/ready answers 503), then the graceful stop", seconds)
        # SIGALRM re-queues SIGTERM in the arbiter's own loop: no thread in a process that forks.
        signal.signal(signal.SIGALRM, lambda *_: arbiter.signal(signal.SIGTERM, None))
        signal.alarm(seconds)

    arbiter.handle_term = handle_term
