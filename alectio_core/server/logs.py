"""Log records written by one background thread.

Request threads only put records on a queue, taking no lock; a listener
thread formats and writes them. Without it, 16 request threads and the
loop workers queue up on the stream handler's lock while one of them waits
for the GIL after its write: a lock convoy that shows up as tail latency.
"""

from __future__ import annotations

import logging
import logging.handlers
import queue
from typing import Callable


class _QueueHandler(logging.handlers.QueueHandler):
    """Enqueueing is thread-safe on its own: no handler lock to queue up on."""

    def createLock(self) -> None:
        self.lock = None  # Handler.acquire/release do nothing without one


def log_in_background() -> Callable[[], None]:
    """Move the root logger's handlers behind a queue and a listener thread.
    Returns ``restore``: it writes what is queued and puts them back."""
    root = logging.getLogger()
    handlers = list(root.handlers)
    records: queue.SimpleQueue = queue.SimpleQueue()
    handler = _QueueHandler(records)
    listener = logging.handlers.QueueListener(records, *handlers, respect_handler_level=True)
    listener.start()
    for h in handlers:
        root.removeHandler(h)
    root.addHandler(handler)

    def restore() -> None:
        root.removeHandler(handler)
        listener.stop()
        for h in handlers:
            root.addHandler(h)

    return restore


def quiet_waitress_queue() -> None:
    """waitress warns "Task queue depth is N" from its I/O thread, holding
    its dispatcher lock, whenever more requests wait than threads are idle:
    under steady polling that is most requests, and the warning itself then
    slows the server down. Keep it for ``--log-level debug``."""
    if not logging.getLogger().isEnabledFor(logging.DEBUG):
        logging.getLogger("waitress.queue").setLevel(logging.ERROR)
