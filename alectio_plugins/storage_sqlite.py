"""The embedded default backend: one SQLite file in WAL mode.

URLs follow SQLAlchemy and MLflow: ``sqlite:///alectio.db`` is relative to
the working directory, ``sqlite:////abs/path/alectio.db`` is absolute.
Checkpoints live beside the database in ``<name>-checkpoints/<experiment>/``.

Infer outputs are stored as chunks of raw little-endian arrays (int64
indices, float32 values and embeddings), one row per chunk: neither one row
per record nor one giant blob; the labeled records' outputs (the ``labeled``
part) in a table of their own of the same shape. A loop's results are rows tagged with an attempt id; a
loop's ``committed_attempt`` says which attempt readers see, and it is set in
the same transaction that marks the loop done.
"""

from __future__ import annotations

import functools
import inspect
import json
import os
import shutil
import sqlite3
import threading
import time
import uuid
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np

from alectio_core.errors import ConflictError, NotFoundError, StorageError, ValidationError
from alectio_core.hookspecs import hookimpl
from alectio_core.storage import URL_FORMS, OutputSink, Storage, check_id, check_loop, check_part, check_session_digest, parse_url

SCHEMA = """
CREATE TABLE IF NOT EXISTS experiments (
    id TEXT PRIMARY KEY, seq INTEGER NOT NULL, data TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS loops (
    experiment_id TEXT NOT NULL, loop INTEGER NOT NULL, data TEXT NOT NULL,
    committed_attempt TEXT, PRIMARY KEY (experiment_id, loop));
CREATE TABLE IF NOT EXISTS selections (
    experiment_id TEXT NOT NULL, loop INTEGER NOT NULL, indices BLOB NOT NULL, scores BLOB,
    PRIMARY KEY (experiment_id, loop));
CREATE TABLE IF NOT EXISTS labels (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, experiment_id TEXT NOT NULL, data TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS labels_by_experiment ON labels (experiment_id, seq);
CREATE TABLE IF NOT EXISTS index_maps (
    experiment_id TEXT PRIMARY KEY, data TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS results (
    experiment_id TEXT NOT NULL, loop INTEGER NOT NULL, attempt TEXT NOT NULL,
    name TEXT NOT NULL, data TEXT NOT NULL,
    PRIMARY KEY (experiment_id, loop, attempt, name));
CREATE TABLE IF NOT EXISTS output_chunks (
    experiment_id TEXT NOT NULL, loop INTEGER NOT NULL, attempt TEXT NOT NULL,
    seq INTEGER NOT NULL, rows INTEGER NOT NULL, width INTEGER NOT NULL,
    indices BLOB NOT NULL, vals BLOB NOT NULL,
    PRIMARY KEY (experiment_id, loop, attempt, seq));
CREATE TABLE IF NOT EXISTS labeled_chunks (
    experiment_id TEXT NOT NULL, loop INTEGER NOT NULL, attempt TEXT NOT NULL,
    seq INTEGER NOT NULL, rows INTEGER NOT NULL, width INTEGER NOT NULL,
    indices BLOB NOT NULL, vals BLOB NOT NULL, embedding_width INTEGER, embeddings BLOB,
    PRIMARY KEY (experiment_id, loop, attempt, seq));
CREATE TABLE IF NOT EXISTS tokens (
    name TEXT PRIMARY KEY, data TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS sessions (
    digest TEXT PRIMARY KEY, expires REAL NOT NULL, data TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS leases (
    experiment_id TEXT NOT NULL, loop INTEGER NOT NULL, version TEXT NOT NULL, data TEXT NOT NULL,
    PRIMARY KEY (experiment_id, loop));
"""


#: Seconds a loop state read stays fresh for readers in this process.
STATE_TTL = 0.25

#: The table holding each part of a loop's infer outputs.
CHUNK_TABLES = {"pool": "output_chunks", "labeled": "labeled_chunks"}
#: Every table keyed by experiment, loop and attempt.
ATTEMPT_TABLES = ("results", *CHUNK_TABLES.values())


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), allow_nan=False)


def _storage_error(path: Path, exc: sqlite3.Error) -> StorageError:
    return StorageError(f"SQLite database {path} failed: {exc}")


def _sqlite_errors(cls):
    """Every ``sqlite3.Error`` a public method raises (a generator's too, as
    it is read) becomes a ``StorageError`` naming the database file: a
    damaged or locked file is a 503 and one CLI line, not a traceback."""

    def wrap(fn):
        if inspect.isgeneratorfunction(fn):

            @functools.wraps(fn)
            def generator(self, *args, **kwargs):
                try:
                    return (yield from fn(self, *args, **kwargs))
                except sqlite3.Error as exc:
                    raise _storage_error(self.path, exc) from exc

            return generator

        @functools.wraps(fn)
        def method(self, *args, **kwargs):
            try:
                return fn(self, *args, **kwargs)
            except sqlite3.Error as exc:
                raise _storage_error(self.path, exc) from exc

        return method

    for name, value in list(vars(cls).items()):
        if not name.startswith("_") and inspect.isfunction(value):
            setattr(cls, name, wrap(value))
    return cls


@_sqlite_errors
class SQLiteStorage(Storage):
    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.url = f"sqlite:///{self.path}"
        self.checkpoint_root = self.path.with_name(self.path.stem + "-checkpoints")
        self._local = threading.local()
        self._states: dict[tuple[str, int], tuple[str, float]] = {}  # see get_loop_state
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db().executescript(SCHEMA)
            self._add_columns("output_chunks", {"embedding_width": "INTEGER", "embeddings": "BLOB"})
            self._add_columns("selections", {"scores": "BLOB"})
        except (OSError, sqlite3.Error) as exc:
            raise StorageError(f"cannot open SQLite database {self.path}: {exc}") from exc

    def _add_columns(self, table: str, columns: Mapping[str, str]) -> None:
        """A database made before ``columns`` (name -> type) of ``table``
        existed gets them (in a write transaction, so two processes opening
        it add them once): embeddings, selection scores."""

        def missing(db: sqlite3.Connection) -> list[str]:
            have = {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
            return [c for c in columns if c not in have]

        if missing(self._db()):
            with self._tx() as db:
                for column in missing(db):
                    db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {columns[column]}")

    # -- connections ----------------------------------------------------

    def _db(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            # 64 KiB pages for a new file (an existing one keeps its own): an
            # infer chunk is a few MB of blob, on 16x fewer overflow pages, and
            # the WAL reaches its checkpoint (and its fsyncs) 16x less often.
            db.execute("PRAGMA page_size=65536")
            db.execute("PRAGMA journal_mode=WAL")
            # WAL + NORMAL: a commit survives a process crash; only power loss can lose the last ones.
            db.execute("PRAGMA synchronous=NORMAL")
            self._local.db = db
        return db

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        db = self._db()
        try:
            # BEGIN inside the try: a Ctrl-C landing just after it must not
            # leave this thread's connection in an open write transaction.
            db.execute("BEGIN IMMEDIATE")
            yield db
            db.execute("COMMIT")
        except BaseException:
            # A failed COMMIT (disk full, I/O error) leaves the transaction
            # open: roll it back, or every later write on this thread's
            # connection fails; a failing rollback must not hide the cause.
            if db.in_transaction:
                with suppress(sqlite3.Error):
                    db.execute("ROLLBACK")
            raise

    def _one(self, sql: str, args: tuple, missing: str) -> tuple:
        row = self._db().execute(sql, args).fetchone()
        if row is None:
            raise NotFoundError(missing)
        return row

    def close(self) -> None:
        db = getattr(self._local, "db", None)
        if db is not None:
            db.close()
            self._local.db = None

    # -- experiments ----------------------------------------------------

    def create_experiment(self, experiment: Mapping[str, Any], index_map: list[str] | None = None) -> None:
        eid = check_id(experiment.get("id"))
        data = _dumps(dict(experiment))
        pool = None if index_map is None else _dumps(list(index_map))
        with self._tx() as db:
            if db.execute("SELECT 1 FROM experiments WHERE id = ?", (eid,)).fetchone():
                raise ConflictError(f"experiment {eid!r} already exists")
            seq = db.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM experiments").fetchone()[0]
            db.execute("INSERT INTO experiments VALUES (?, ?, ?)", (eid, seq, data))
            # Rows of an id without an experiment can only be orphans (a write
            # that raced a delete): a new experiment starts from scratch.
            for table in ("loops", "selections", "labels", *ATTEMPT_TABLES, "leases"):
                db.execute(f"DELETE FROM {table} WHERE experiment_id = ?", (eid,))
            if pool is not None:  # REPLACE: a pool left by an older version's failed create
                db.execute("INSERT OR REPLACE INTO index_maps VALUES (?, ?)", (eid, pool))
        for key in [k for k in self._states if k[0] == eid]:
            self._states.pop(key, None)

    def get_experiment(self, experiment_id: str) -> dict:
        check_id(experiment_id)
        row = self._one("SELECT data FROM experiments WHERE id = ?", (experiment_id,), f"unknown experiment {experiment_id!r}")
        return json.loads(row[0])

    def list_experiments(self) -> list[dict]:
        return [json.loads(r[0]) for r in self._db().execute("SELECT data FROM experiments ORDER BY seq")]

    def update_experiment(self, experiment_id: str, changes: Mapping[str, Any]) -> dict:
        with self._tx() as db:
            experiment = self.get_experiment(experiment_id)
            experiment.update(changes)
            db.execute("UPDATE experiments SET data = ? WHERE id = ?", (_dumps(experiment), experiment_id))
        return experiment

    def delete_experiment(self, experiment_id: str) -> None:
        check_id(experiment_id)
        with self._tx() as db:
            if db.execute("DELETE FROM experiments WHERE id = ?", (experiment_id,)).rowcount == 0:
                raise NotFoundError(f"unknown experiment {experiment_id!r}")
            for table in ("loops", "selections", "labels", "index_maps", *ATTEMPT_TABLES, "leases"):
                db.execute(f"DELETE FROM {table} WHERE experiment_id = ?", (experiment_id,))
        for key in list(self._states):
            if key[0] == experiment_id:
                self._states.pop(key, None)
        shutil.rmtree(self.checkpoint_root / experiment_id, ignore_errors=True)

    # -- loop state -----------------------------------------------------

    def put_loop_state(self, experiment_id: str, loop: int, state: Mapping[str, Any]) -> None:
        check_id(experiment_id)
        data = _dumps(dict(state))
        with self._tx() as db:
            db.execute(
                "INSERT INTO loops (experiment_id, loop, data) VALUES (?, ?, ?) "
                "ON CONFLICT (experiment_id, loop) DO UPDATE SET data = excluded.data",
                (experiment_id, check_loop(loop), data),
            )
        self._states[(experiment_id, loop)] = (data, time.monotonic())

    def get_loop_state(self, experiment_id: str, loop: int) -> dict:
        # Status polling is the hot path: a state read within STATE_TTL of
        # the last one is served from memory (this process's own writes
        # update it at once; another process's show within STATE_TTL).
        key = (experiment_id, check_loop(loop))
        cached = self._states.get(key)
        if cached is not None and time.monotonic() - cached[1] < STATE_TTL:
            return json.loads(cached[0])
        row = self._one(
            "SELECT data FROM loops WHERE experiment_id = ? AND loop = ?", key, f"experiment {experiment_id!r} has no loop {loop}"
        )
        self._states[key] = (row[0], time.monotonic())
        return json.loads(row[0])

    def list_loop_states(self, experiment_id: str) -> list[dict]:
        rows = self._db().execute("SELECT data FROM loops WHERE experiment_id = ? ORDER BY loop", (experiment_id,))
        return [json.loads(r[0]) for r in rows]

    def list_all_loop_states(self) -> dict[str, list[dict]]:
        states: dict[str, list[dict]] = {}
        for experiment_id, data in self._db().execute("SELECT experiment_id, data FROM loops ORDER BY experiment_id, loop"):
            states.setdefault(experiment_id, []).append(json.loads(data))
        return states

    # -- selections and index map ---------------------------------------

    def put_selection(self, experiment_id: str, loop: int, indices: np.ndarray, scores: np.ndarray | None = None) -> None:
        blob = np.ascontiguousarray(indices, dtype="<i8").tobytes()
        values = None if scores is None else np.ascontiguousarray(scores, dtype="<f8").tobytes()
        with self._tx() as db:
            db.execute(
                "INSERT OR REPLACE INTO selections (experiment_id, loop, indices, scores) VALUES (?, ?, ?, ?)",
                (check_id(experiment_id), check_loop(loop), blob, values),
            )

    def get_selection(self, experiment_id: str, loop: int) -> np.ndarray:
        row = self._one(
            "SELECT indices FROM selections WHERE experiment_id = ? AND loop = ?",
            (experiment_id, check_loop(loop)),
            f"experiment {experiment_id!r} has no selection for loop {loop}",
        )
        return np.frombuffer(row[0], dtype="<i8").astype(np.int64)

    def get_selection_scores(self, experiment_id: str, loop: int) -> np.ndarray | None:
        row = self._one(
            "SELECT scores FROM selections WHERE experiment_id = ? AND loop = ?",
            (experiment_id, check_loop(loop)),
            f"experiment {experiment_id!r} has no selection for loop {loop}",
        )
        return None if row[0] is None else np.frombuffer(row[0], dtype="<f8").astype(np.float64)

    # -- labels -----------------------------------------------------------

    def add_labels(self, experiment_id: str, events: list[dict]) -> None:
        check_id(experiment_id)
        rows = [(experiment_id, _dumps(dict(e))) for e in events]  # not JSON: refused before anything is written
        with self._tx() as db:  # one transaction: every event or none
            if not db.execute("SELECT 1 FROM experiments WHERE id = ?", (experiment_id,)).fetchone():
                raise NotFoundError(f"unknown experiment {experiment_id!r}")
            db.executemany("INSERT INTO labels (experiment_id, data) VALUES (?, ?)", rows)

    def list_labels(self, experiment_id: str) -> list[dict]:
        rows = self._db().execute("SELECT data FROM labels WHERE experiment_id = ? ORDER BY seq", (check_id(experiment_id),))
        return [json.loads(r[0]) for r in rows]

    def put_index_map(self, experiment_id: str, references: list[str]) -> None:
        with self._tx() as db:
            db.execute("INSERT OR REPLACE INTO index_maps VALUES (?, ?)", (check_id(experiment_id), _dumps(references)))

    def get_index_map(self, experiment_id: str) -> list[str]:
        row = self._one(
            "SELECT data FROM index_maps WHERE experiment_id = ?", (experiment_id,), f"experiment {experiment_id!r} has no index map"
        )
        return json.loads(row[0])

    # -- results --------------------------------------------------------

    def put_result(self, experiment_id: str, loop: int, attempt: str, name: str, value: Any) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT OR REPLACE INTO results VALUES (?, ?, ?, ?, ?)",
                (check_id(experiment_id), check_loop(loop), check_id(attempt, "attempt"), name, _dumps(value)),
            )

    def open_output_sink(self, experiment_id: str, loop: int, attempt: str, part: str = "pool") -> OutputSink:
        table = CHUNK_TABLES[check_part(part)]
        return _SQLiteSink(self, table, check_id(experiment_id), check_loop(loop), check_id(attempt, "attempt"))

    def commit_loop(
        self, experiment_id: str, loop: int, attempt: str, state: Mapping[str, Any], lease_version: str | None = None
    ) -> None:
        key = (check_id(experiment_id), check_loop(loop))
        data = _dumps(dict(state))
        with self._tx() as db:
            if lease_version is not None:
                row = db.execute("SELECT version FROM leases WHERE experiment_id = ? AND loop = ?", key).fetchone()
                if row is None or row[0] != lease_version:
                    raise ConflictError(f"experiment {experiment_id!r} loop {loop}: the lease changed; not committed")
            db.execute(
                "INSERT INTO loops VALUES (?, ?, ?, ?) ON CONFLICT (experiment_id, loop) "
                "DO UPDATE SET data = excluded.data, committed_attempt = excluded.committed_attempt",
                (*key, data, attempt),
            )
            for table in ATTEMPT_TABLES:
                db.execute(f"DELETE FROM {table} WHERE experiment_id = ? AND loop = ? AND attempt != ?", (*key, attempt))
        self._states[key] = (data, time.monotonic())
        self._drop_checkpoints(*key, keep=attempt)

    def discard_attempt(self, experiment_id: str, loop: int, attempt: str) -> None:
        with self._tx() as db:
            for table in ATTEMPT_TABLES:
                db.execute(
                    f"DELETE FROM {table} WHERE experiment_id = ? AND loop = ? AND attempt = ? AND attempt IS NOT "
                    "(SELECT committed_attempt FROM loops WHERE experiment_id = ? AND loop = ?)",
                    (experiment_id, loop, attempt, experiment_id, loop),
                )
        try:
            committed = self._committed_attempt(experiment_id, loop)
        except NotFoundError:
            committed = None
        if attempt != committed:
            self._drop_checkpoints(experiment_id, loop, only=attempt)

    def _committed_attempt(self, experiment_id: str, loop: int) -> str:
        row = self._db().execute(
            "SELECT committed_attempt FROM loops WHERE experiment_id = ? AND loop = ?", (experiment_id, check_loop(loop))
        ).fetchone()
        if row is None or row[0] is None:
            raise NotFoundError(f"experiment {experiment_id!r} loop {loop} has no finished results")
        return row[0]

    def get_result(self, experiment_id: str, loop: int, name: str) -> Any:
        attempt = self._committed_attempt(experiment_id, loop)
        row = self._one(
            "SELECT data FROM results WHERE experiment_id = ? AND loop = ? AND attempt = ? AND name = ?",
            (experiment_id, loop, attempt, name),
            f"experiment {experiment_id!r} loop {loop} has no {name}",
        )
        return json.loads(row[0])

    def iter_outputs(
        self, experiment_id: str, loop: int, attempt: str | None = None, *, part: str = "pool", embeddings: bool = False
    ) -> Iterator[tuple]:
        table = CHUNK_TABLES[check_part(part)]
        attempt = attempt or self._committed_attempt(experiment_id, loop)
        key = (experiment_id, loop, attempt)
        # Read chunk by chunk on a private connection so a long scan holds
        # one chunk in memory and never blocks this thread's writes.
        db = sqlite3.connect(self.path, timeout=30)
        try:
            seqs = [
                r[0]
                for r in db.execute(
                    f"SELECT seq FROM {table} WHERE experiment_id = ? AND loop = ? AND attempt = ? ORDER BY seq", key
                )
            ]
            columns = "rows, width, indices, vals" + (", embedding_width, embeddings" if embeddings else "")
            for seq in seqs:
                row = db.execute(
                    f"SELECT {columns} FROM {table} WHERE experiment_id = ? AND loop = ? AND attempt = ? AND seq = ?", (*key, seq)
                ).fetchone()
                rows, width, idx, vals = row[:4]
                chunk = (
                    np.frombuffer(idx, dtype="<i8").astype(np.int64, copy=False),
                    np.frombuffer(vals, dtype="<f4").reshape(rows, width),
                )
                if not embeddings:
                    yield chunk
                    continue
                emb_width, emb = row[4:]
                yield (*chunk, None if emb is None else np.frombuffer(emb, dtype="<f4").reshape(rows, emb_width))
        finally:
            db.close()

    # -- leases: compare-and-swap inside one write transaction ----------

    def read_lease(self, experiment_id: str, loop: int) -> tuple[dict, str] | None:
        row = self._db().execute(
            "SELECT data, version FROM leases WHERE experiment_id = ? AND loop = ?", (check_id(experiment_id), check_loop(loop))
        ).fetchone()
        return None if row is None else (json.loads(row[0]), row[1])

    def write_lease(self, experiment_id: str, loop: int, record: Mapping[str, Any], version: str | None) -> str:
        key = (check_id(experiment_id), check_loop(loop))
        new = uuid.uuid4().hex
        with self._tx() as db:
            row = db.execute("SELECT version FROM leases WHERE experiment_id = ? AND loop = ?", key).fetchone()
            if (row[0] if row else None) != version:
                raise ConflictError(f"experiment {experiment_id!r} loop {loop}: the lease changed")
            db.execute("INSERT OR REPLACE INTO leases VALUES (?, ?, ?, ?)", (*key, new, _dumps(dict(record))))
        self._states.pop(key, None)  # whoever takes a loop's lease next reads its state fresh
        return new

    # -- checkpoints ----------------------------------------------------

    def _checkpoints(self, experiment_id: str, loop: int) -> Path:
        return self.checkpoint_root / check_id(experiment_id) / f"loop_{check_loop(loop)}"

    def checkpoint_path(self, experiment_id: str, loop: int, attempt: str) -> str:
        folder = self._checkpoints(experiment_id, loop)
        folder.mkdir(parents=True, exist_ok=True)
        return str(folder / f"{check_id(attempt, 'attempt')}.ckpt")

    def _drop_checkpoints(self, experiment_id: str, loop: int, keep: str | None = None, only: str | None = None) -> None:
        """Remove attempts' checkpoint files of a loop (best effort): all but
        ``keep``'s, or only ``only``'s."""
        folder = self._checkpoints(experiment_id, loop)
        for path in folder.glob("*.ckpt") if folder.is_dir() else ():
            name = path.name[: -len(".ckpt")]
            if name != keep and only in (None, name):
                shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)

    def save_checkpoint(self, experiment_id: str, loop: int, attempt: str) -> dict | None:
        path = Path(self.checkpoint_path(experiment_id, loop, attempt))
        if not path.exists():
            return None
        size = path.stat().st_size if path.is_file() else sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
        return {"path": str(path), "bytes": size}

    def fetch_checkpoint(self, experiment_id: str, loop: int) -> str | None:
        try:
            attempt = self._committed_attempt(experiment_id, loop)
            ref = self.get_result(experiment_id, loop, "checkpoint")
        except NotFoundError:
            return None
        # The path comes from the checked id, loop and attempt, not from the
        # stored reference: a stored name never becomes a path here.
        path = self.checkpoint_path(experiment_id, loop, attempt)
        if ref is not None and not os.path.exists(path):
            legacy = self._checkpoints(experiment_id, loop).with_suffix(".ckpt")  # alectio 0.1.0: one per loop
            path = str(legacy) if legacy.exists() else path
        if ref is None or not os.path.exists(path):
            return None
        return path

    # -- tokens ---------------------------------------------------------

    def put_token(self, record: Mapping[str, Any]) -> None:
        with self._tx() as db:
            if db.execute("SELECT 1 FROM tokens WHERE name = ?", (record["name"],)).fetchone():
                raise ConflictError(f"a token named {record['name']!r} exists")
            db.execute("INSERT INTO tokens VALUES (?, ?)", (record["name"], _dumps(dict(record))))

    def list_tokens(self) -> list[dict]:
        return [{"last_used": None, **json.loads(r[0])} for r in self._db().execute("SELECT data FROM tokens ORDER BY name")]

    def get_token(self, name: str) -> dict | None:
        row = self._db().execute("SELECT data FROM tokens WHERE name = ?", (name,)).fetchone()
        return json.loads(row[0]) if row else None

    def delete_token(self, name: str) -> None:
        with self._tx() as db:
            if db.execute("DELETE FROM tokens WHERE name = ?", (name,)).rowcount == 0:
                raise NotFoundError(f"no token named {name!r}")

    def touch_token(self, name: str, when: str) -> None:
        # One statement: it changes an existing row or nothing, never brings a deleted one back.
        with self._tx() as db:
            db.execute("UPDATE tokens SET data = json_set(data, '$.last_used', ?) WHERE name = ?", (when, name))

    # -- dashboard sessions ----------------------------------------------

    def put_session(self, digest: str, record: Mapping[str, Any]) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM sessions WHERE expires < ?", (time.time(),))
            db.execute(
                "INSERT OR REPLACE INTO sessions VALUES (?, ?, ?)",
                (check_session_digest(digest), float(record["expires"]), _dumps(dict(record))),
            )

    def get_session(self, digest: str) -> dict | None:
        row = self._db().execute("SELECT data FROM sessions WHERE digest = ?", (check_session_digest(digest),)).fetchone()
        return json.loads(row[0]) if row else None

    def delete_session(self, digest: str) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM sessions WHERE digest = ?", (check_session_digest(digest),))


@_sqlite_errors
class _SQLiteSink(OutputSink):
    def __init__(self, storage: SQLiteStorage, table: str, experiment_id: str, loop: int, attempt: str):
        self.storage, self.table, self.key, self.seq = storage, table, (experiment_id, loop, attempt), 0
        self.path = storage.path

    def write(self, indices: np.ndarray, values: np.ndarray, embeddings: np.ndarray | None = None) -> None:
        rows, width = values.shape
        emb = None if embeddings is None else np.ascontiguousarray(embeddings, dtype="<f4")
        with self.storage._tx() as db:
            db.execute(
                f"INSERT OR REPLACE INTO {self.table} (experiment_id, loop, attempt, seq, rows, width, indices, vals, "
                "embedding_width, embeddings) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    *self.key,
                    self.seq,
                    rows,
                    width,
                    np.ascontiguousarray(indices, dtype="<i8").data,
                    np.ascontiguousarray(values, dtype="<f4").data,
                    None if emb is None else emb.shape[1],
                    None if emb is None else emb.data,
                ),
            )
        self.seq += 1


def open_sqlite(url: str, options: Mapping[str, Any]) -> SQLiteStorage:
    scheme, rest = parse_url(url)
    if not rest.startswith("/"):  # sqlite://a.db would read the file name as a host
        raise ValidationError(f"malformed storage URL {url!r}; use one of: {URL_FORMS}")
    path = rest[1:]  # sqlite:///rel.db, sqlite:////abs.db
    if not path:
        raise StorageError(f"storage URL {url!r} names no database file; try sqlite:///alectio.db")
    if options:
        raise ValidationError(
            f"storage_options {', '.join(map(repr, sorted(options)))} given, but the sqlite backend takes none ({url})"
        )
    return SQLiteStorage(os.path.expanduser(path))


@hookimpl(trylast=True)  # a third-party plugin registering the same name is called first, and wins
def register_storage(register):
    register("sqlite", open_sqlite)
