"""Ctrl-C for a command that runs loops in the foreground (``alectio run``).

Python's own SIGINT handling raises ``KeyboardInterrupt`` wherever the main
thread is, including inside a finalizer (``__del__``, a weakref callback:
the garbage collector, an import releasing its module lock), where the
exception can only be printed ("Exception ignored in ...") and dropped: the
Ctrl-C is lost and a long ``train`` goes on as if nothing was pressed.
:func:`ctrl_c` raises such a dropped interrupt again outside the
finalizer, and makes a second Ctrl-C end the process at once, whatever the
cleanup of the first is waiting for.
"""

from __future__ import annotations

import _thread
import contextlib
import os
import signal
import sys
import threading
from typing import Callable, Iterator


@contextlib.contextmanager
def ctrl_c(on_second: Callable[[], None] | None = None) -> Iterator[None]:
    """While the block runs: the first Ctrl-C raises ``KeyboardInterrupt``
    (again, if a finalizer swallowed it); the next calls ``on_second()``
    and exits with status 130 (128 + SIGINT) without any more cleanup.

    Nothing changes outside the main thread, or when SIGINT is ignored
    (a command started with ``nohup``)."""
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        yield
        return
    pressed = 0
    redeliver = False

    def handler(signum, frame):
        nonlocal pressed, redeliver
        if redeliver:  # the first Ctrl-C, once more: not a second one
            redeliver = False
            raise KeyboardInterrupt
        pressed += 1
        if pressed > 1:
            if on_second is not None:
                on_second()
            os._exit(130)
        raise KeyboardInterrupt

    def unraisable(args) -> None:
        nonlocal redeliver
        if pressed and isinstance(args.exc_value, KeyboardInterrupt):
            # Raised in a finalizer and dropped: signal the main thread
            # again, from another thread, so that the handler runs once this
            # finalizer is over (signalled from here, it would run in here).
            # (A raw thread: ``Thread.start`` waits for it, and would be
            # interrupted right here.) Should the signal land in a
            # finalizer again, this hook sends it again.
            redeliver = True
            main = threading.main_thread().ident
            assert main is not None  # a started thread has one
            _thread.start_new_thread(signal.pthread_kill, (main, signal.SIGINT))
            return
        previous_hook(args)

    previous_handler = signal.signal(signal.SIGINT, handler)
    previous_hook, sys.unraisablehook = sys.unraisablehook, unraisable
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous_handler)
        sys.unraisablehook = previous_hook
