"""Log records written by one background thread.

Request threads only put records on a queue; a listener thread formats and
writes them. Without it, 16 request threads and the loop workers queue up
on the stream handler's lock while one of them waits for the GIL after
its write: a lock convoy that shows up as tail latency.
"""

from __future__ import annotations

import atexit
import logging
import logging.handlers
import queue


def quiet_waitress_queue() -> None:
    """waitress warns "Task queue depth is N" from its I/O thread, holding
    its dispatcher lock, whenever more requests wait than threads are idle:
    under steady polling that is most requests, and the warning itself then
    slows the server down. Keep it for ``--log-level debug``."""
    if not logging.getLogger().isEnabledFor(logging.DEBUG):
        logging.getLogger("waitress.queue").setLevel(logging.ERROR)


def log_in_background() -> logging.handlers.QueueListener:
    """Move the root logger's handlers behind a queue; returns the started
    listener (stopped, flushing what is left, at exit)."""
    root = logging.getLogger()
    handlers = [h for h in root.handlers if not isinstance(h, logging.handlers.QueueHandler)]
    records: queue.SimpleQueue = queue.SimpleQueue()
    for handler in handlers:
        root.removeHandler(handler)
    root.addHandler(logging.handlers.QueueHandler(records))
    listener = logging.handlers.QueueListener(records, *handlers, respect_handler_level=True)
    listener.start()
    atexit.register(listener.stop)
    return listener
