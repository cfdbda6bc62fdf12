"""Migration path for infer code written for the seed SDK's SQL client.

The seed's pattern was::

    conn = create_database(path)
    for index, output in ...:
        add_index(conn, index, output)

It runs unchanged. Inside an ``infer`` hook that alectio is calling, every
row goes straight to that loop's :class:`~alectio_core.outputs.OutputWriter`
(validated, streamed in chunks, stored with the loop) and the file is not
used. Called anywhere else, rows go to a real SQLite file at ``path``, as
float32 bytes (never pickled), readable with :func:`read_outputs`.

New code should call ``writer.add(index, array)`` on the hook's ``writer``
argument instead.
"""

from __future__ import annotations

import sqlite3
from typing import Iterator

import numpy as np

from .outputs import current_writer


class Connection:
    """What ``create_database`` returns: routes rows to the active writer,
    or to a SQLite file outside a loop."""

    def __init__(self, path: str):
        self.path = path
        self.writer = current_writer.get()
        self._db: sqlite3.Connection | None = None
        if self.writer is None:
            self._db = sqlite3.connect(path)
            self._db.execute("CREATE TABLE IF NOT EXISTS outputs (idx INTEGER PRIMARY KEY, output BLOB NOT NULL)")

    def add(self, index: int, array) -> None:
        if self.writer is not None:
            self.writer.add(index, array)
        else:
            assert self._db is not None, "add() after close()"
            row = np.ascontiguousarray(array, dtype="<f4").ravel()
            self._db.execute("INSERT OR REPLACE INTO outputs VALUES (?, ?)", (int(index), row.tobytes()))

    def commit(self) -> None:
        if self._db is not None:
            self._db.commit()

    def close(self) -> None:
        if self._db is not None:
            self._db.commit()
            self._db.close()
            self._db = None

    def __enter__(self) -> "Connection":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def create_database(path: str) -> Connection:
    """Open (or create) the outputs database the seed's infer code writes to."""
    return Connection(str(path))


def add_index(conn: Connection, index: int, array) -> None:
    """Store one record's pre-activation output (the seed's ``add_index``)."""
    conn.add(index, array)


def read_outputs(path: str) -> Iterator[tuple[int, np.ndarray]]:
    """Read back a file written outside a loop: ``(index, float32 row)``."""
    db = sqlite3.connect(path)
    try:
        for index, blob in db.execute("SELECT idx, output FROM outputs ORDER BY idx"):
            yield index, np.frombuffer(blob, dtype="<f4")
    finally:
        db.close()
