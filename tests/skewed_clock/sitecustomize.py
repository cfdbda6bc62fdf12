"""Imported at start-up by a Python process with this folder on its path:
moves its wall clock ``$ALECTIO_TEST_CLOCK_SKEW`` seconds (a server on a
machine whose clock is off)."""

import os
import time

_skew = float(os.environ.get("ALECTIO_TEST_CLOCK_SKEW") or 0)
if _skew:
    _time, _time_ns = time.time, time.time_ns
    time.time = lambda: _time() + _skew
    time.time_ns = lambda: _time_ns() + int(_skew * 1e9)
