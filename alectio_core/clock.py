"""The one clock every stored record's timestamps come from."""

from __future__ import annotations

from datetime import datetime, timezone


def now() -> str:
    """The current UTC time, ISO 8601 to the millisecond."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")
