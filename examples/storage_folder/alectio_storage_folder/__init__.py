"""An alectio storage plugin: everything in one folder of JSON and ``.npy`` files.

``folder:///abs/path`` or ``folder://relative/path``. Small on purpose: it
shows what a storage plugin has to do, and passes the same contract suite
(``alectio_core.testing.StorageContract``) as the built-in backends.

Layout::

    experiments/{id}/experiment.json          {"seq": ns, "experiment": {...}, "index_map": v}
    experiments/{id}/index_maps/{v}.json      the pool experiment.json names
    experiments/{id}/index_map.json           the pool, as stored before it had versions
    experiments/{id}/loops/{k}/loop.json      {"state": {...}, "committed": attempt|null}
    experiments/{id}/loops/{k}/selection.npy
    experiments/{id}/loops/{k}/selection-scores.npy  the strategy's scores, aligned (if it gave any)
    experiments/{id}/labels/{ns:020d}-{u}.json     {"events": [...]}: one add_labels call, one file
    experiments/{id}/loops/{k}/attempts/{a}/{name}.json
    experiments/{id}/loops/{k}/attempts/{a}/outputs/{seq:06d}.idx.npy, .val.npy, .emb.npy (if any)
    experiments/{id}/loops/{k}/attempts/{a}/labeled/...     the labeled part, laid out as outputs/
    experiments/{id}/loops/{k}/checkpoint      the working copy train writes
    experiments/{id}/loops/{k}/lease.json     {"version": v, "record": {...}}, changed under lease.lock
    tokens/{name}.json
    tokens/{name}.used.json                   {"last_used": ...}, beside the record
    sessions/{digest}.json                    a dashboard session: {"token": ..., "expires": ..., ...}
    .trash/                                   deleted experiments, while they are removed

Every file is written to a temporary name and renamed into place, so a
reader never sees half a file. An experiment is created by writing its pool
under a new version, then hard-linking ``experiment.json`` into place (a
link never replaces a file): a refused create removes its own pool and
leaves the stored one alone. A loop's results become visible when
``commit_loop`` renames ``loop.json`` naming the attempt: one atomic step.
Label events are only ever added, each ``add_labels`` call as one new file
(whole or absent); the history is the files in name order.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import tempfile
import threading
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Mapping
from urllib.parse import quote

import numpy as np

from alectio_core import hookimpl
from alectio_core.errors import ConflictError, NotFoundError, StorageError, ValidationError
from alectio_core.storage import OutputSink, Storage, check_id, check_loop, check_part, check_session_digest, contained, parse_url

#: The folder of an attempt holding each part of its infer outputs.
PART_FOLDERS = {"pool": "outputs", "labeled": "labeled"}


class FolderStorage(Storage):
    def __init__(self, root: str | os.PathLike):
        self.root = Path(root).expanduser().resolve()
        self.url = f"folder://{self.root}"
        self._lock = threading.Lock()  # read-modify-write of one file
        self._last_label = 0  # the time in the name of the last label file written
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"cannot create storage folder {self.root}: {exc}") from exc

    # -- files ------------------------------------------------------------

    def _exp(self, experiment_id: str) -> Path:
        return self.root / "experiments" / check_id(experiment_id)

    def _loop(self, experiment_id: str, loop: int) -> Path:
        return self._exp(experiment_id) / "loops" / str(check_loop(loop))

    def _attempt(self, experiment_id: str, loop: int, attempt: str) -> Path:
        return self._loop(experiment_id, loop) / "attempts" / check_id(attempt, "attempt")

    def _write(self, path: Path, data: bytes) -> None:
        """Write to a temporary file beside ``path``, then rename it into place."""
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        except BaseException:
            os.unlink(tmp)
            raise

    def _create(self, path: Path, data: bytes) -> bool:
        """Write a new file whole, unless ``path`` exists (then False): a
        hard link, unlike a rename, never replaces what is there."""
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.link(tmp, path)
            return True
        except FileExistsError:
            return False
        finally:
            os.unlink(tmp)

    def _write_json(self, path: Path, value: Any) -> None:
        self._write(path, json.dumps(value, allow_nan=False).encode())

    def _read_json(self, path: Path, missing: str) -> Any:
        try:
            return json.loads(path.read_bytes())
        except FileNotFoundError:
            raise NotFoundError(missing) from None

    def _write_array(self, path: Path, array: np.ndarray) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".npy")
        with os.fdopen(fd, "wb") as f:
            np.save(f, array, allow_pickle=False)
        os.replace(tmp, path)

    def _read_array(self, path: Path, missing: str) -> np.ndarray:
        try:
            return np.load(path, allow_pickle=False)
        except FileNotFoundError:
            raise NotFoundError(missing) from None

    # -- experiments ------------------------------------------------------

    def _index_map(self, experiment_id: str, version: str | None) -> Path:
        if version is None:  # a pool stored before pools had versions
            return self._exp(experiment_id) / "index_map.json"
        return self._exp(experiment_id) / "index_maps" / f"{check_id(version, 'index map version')}.json"

    def create_experiment(self, experiment: Mapping[str, Any], index_map: list[str] | None = None) -> None:
        eid = check_id(experiment.get("id"))
        record = {"seq": time.time_ns(), "experiment": dict(experiment)}
        if index_map is not None:
            record["index_map"] = uuid.uuid4().hex
        data = json.dumps(record, allow_nan=False).encode()  # not JSON: refused before anything is written
        pool = None if index_map is None else self._index_map(eid, record["index_map"])
        if pool:
            self._write_json(pool, list(index_map))
        created = False
        try:
            created = self._create(self._exp(eid) / "experiment.json", data)
        finally:
            if pool and not created:
                pool.unlink(missing_ok=True)
        if not created:
            raise ConflictError(f"experiment {eid!r} already exists")

    def get_experiment(self, experiment_id: str) -> dict:
        path = self._exp(experiment_id) / "experiment.json"
        return self._read_json(path, f"unknown experiment {experiment_id!r}")["experiment"]

    def list_experiments(self) -> list[dict]:
        stored = [json.loads(p.read_bytes()) for p in (self.root / "experiments").glob("*/experiment.json")]
        return [s["experiment"] for s in sorted(stored, key=lambda s: (s["seq"], s["experiment"]["id"]))]

    def update_experiment(self, experiment_id: str, changes: Mapping[str, Any]) -> dict:
        path = self._exp(experiment_id) / "experiment.json"
        with self._lock:
            stored = self._read_json(path, f"unknown experiment {experiment_id!r}")
            stored["experiment"].update(changes)
            self._write_json(path, stored)
        return stored["experiment"]

    def delete_experiment(self, experiment_id: str) -> None:
        folder = self._exp(experiment_id)
        # One rename takes the whole folder out of sight, then it is removed.
        trash = self.root / ".trash" / f"{experiment_id}-{uuid.uuid4().hex}"
        trash.parent.mkdir(exist_ok=True)
        with self._lock:
            if not (folder / "experiment.json").exists():
                raise NotFoundError(f"unknown experiment {experiment_id!r}")
            os.replace(folder, trash)
        shutil.rmtree(trash, ignore_errors=True)

    # -- loop state: loop.json holds the state and the committed attempt ---

    def _loop_record(self, experiment_id: str, loop: int) -> dict:
        path = self._loop(experiment_id, loop) / "loop.json"
        return self._read_json(path, f"experiment {experiment_id!r} has no loop {loop}")

    def put_loop_state(self, experiment_id: str, loop: int, state: Mapping[str, Any]) -> None:
        with self._lock:
            try:
                committed = self._loop_record(experiment_id, loop)["committed"]
            except NotFoundError:
                committed = None
            self._write_json(self._loop(experiment_id, loop) / "loop.json", {"state": dict(state), "committed": committed})

    def get_loop_state(self, experiment_id: str, loop: int) -> dict:
        return self._loop_record(experiment_id, loop)["state"]

    def list_loop_states(self, experiment_id: str) -> list[dict]:
        files = (self._exp(experiment_id) / "loops").glob("*/loop.json")
        records = sorted((int(p.parent.name), json.loads(p.read_bytes())) for p in files)
        return [record["state"] for _, record in records]

    # -- selections and the index map -------------------------------------

    def put_selection(self, experiment_id: str, loop: int, indices: np.ndarray, scores: np.ndarray | None = None) -> None:
        folder = self._loop(experiment_id, loop)
        # The scores first: a selection is never seen with the scores of the one it replaced.
        if scores is not None:
            self._write_array(folder / "selection-scores.npy", np.asarray(scores, dtype=np.float64))
        else:
            (folder / "selection-scores.npy").unlink(missing_ok=True)
        self._write_array(folder / "selection.npy", np.asarray(indices, dtype=np.int64))

    def get_selection(self, experiment_id: str, loop: int) -> np.ndarray:
        path = self._loop(experiment_id, loop) / "selection.npy"
        return self._read_array(path, f"experiment {experiment_id!r} has no selection for loop {loop}").astype(np.int64)

    def get_selection_scores(self, experiment_id: str, loop: int) -> np.ndarray | None:
        picked = self.get_selection(experiment_id, loop)
        try:
            scores = self._read_array(self._loop(experiment_id, loop) / "selection-scores.npy", "")
        except NotFoundError:
            return None
        return scores.astype(np.float64) if scores.shape == picked.shape else None  # torn write: none

    # -- labels: one file per add_labels call -------------------------------

    def add_labels(self, experiment_id: str, events: list[dict]) -> None:
        data = json.dumps({"events": [dict(e) for e in events]}, allow_nan=False).encode()  # not JSON: nothing written
        self.get_experiment(experiment_id)
        with self._lock:  # names in the order this process wrote them, even within one clock tick
            self._last_label = stamp = max(time.time_ns(), self._last_label + 1)
        self._write(self._exp(experiment_id) / "labels" / f"{stamp:020d}-{uuid.uuid4().hex[:8]}.json", data)

    def list_labels(self, experiment_id: str) -> list[dict]:
        events: list[dict] = []
        for path in sorted((self._exp(experiment_id) / "labels").glob("*.json")):
            try:
                events.extend(json.loads(path.read_bytes())["events"])
            except FileNotFoundError:  # the experiment was deleted meanwhile
                continue
        return events

    def put_index_map(self, experiment_id: str, references: list[str]) -> None:
        path = self._exp(experiment_id) / "experiment.json"
        with self._lock:
            try:
                stored = self._read_json(path, "")
            except NotFoundError:  # no experiment (yet): the unversioned file, as before
                self._write_json(self._index_map(experiment_id, None), list(references))
                return
            old, stored["index_map"] = stored.get("index_map"), uuid.uuid4().hex
            self._write_json(self._index_map(experiment_id, stored["index_map"]), list(references))
            self._write_json(path, stored)
        self._index_map(experiment_id, old).unlink(missing_ok=True)

    def get_index_map(self, experiment_id: str) -> list[str]:
        try:
            version = self._read_json(self._exp(experiment_id) / "experiment.json", "").get("index_map")
        except NotFoundError:
            version = None
        return self._read_json(self._index_map(experiment_id, version), f"experiment {experiment_id!r} has no index map")

    # -- results ------------------------------------------------------------

    def put_result(self, experiment_id: str, loop: int, attempt: str, name: str, value: Any) -> None:
        data = json.dumps(value, allow_nan=False).encode()  # TypeError/ValueError: not JSON
        self._write(self._attempt(experiment_id, loop, attempt) / f"{check_id(name, 'result name')}.json", data)

    def open_output_sink(self, experiment_id: str, loop: int, attempt: str, part: str = "pool") -> OutputSink:
        return FolderSink(self, self._attempt(experiment_id, loop, attempt) / PART_FOLDERS[check_part(part)])

    def commit_loop(
        self, experiment_id: str, loop: int, attempt: str, state: Mapping[str, Any], lease_version: str | None = None
    ) -> None:
        folder = self._loop(experiment_id, loop)
        with self._lock, self._lease_lock(experiment_id, loop):
            if lease_version is not None and (self.read_lease(experiment_id, loop) or ({}, None))[1] != lease_version:
                raise ConflictError(f"experiment {experiment_id!r} loop {loop}: the lease changed; not committed")
            self._write_json(folder / "loop.json", {"state": dict(state), "committed": check_id(attempt, "attempt")})
        for other in (folder / "attempts").glob("*"):
            if other.name != attempt:
                shutil.rmtree(other, ignore_errors=True)

    def discard_attempt(self, experiment_id: str, loop: int, attempt: str) -> None:
        try:
            committed = self._loop_record(experiment_id, loop)["committed"]
        except NotFoundError:
            committed = None
        if attempt != committed:
            shutil.rmtree(self._attempt(experiment_id, loop, attempt), ignore_errors=True)

    def _committed(self, experiment_id: str, loop: int) -> str:
        try:
            attempt = self._loop_record(experiment_id, loop)["committed"]
        except NotFoundError:
            attempt = None
        if attempt is None:
            raise NotFoundError(f"experiment {experiment_id!r} loop {loop} has no finished results")
        return attempt

    def get_result(self, experiment_id: str, loop: int, name: str) -> Any:
        folder = self._attempt(experiment_id, loop, self._committed(experiment_id, loop))
        return self._read_json(folder / f"{check_id(name, 'result name')}.json", f"experiment {experiment_id!r} loop {loop} has no {name}")

    def iter_outputs(
        self, experiment_id: str, loop: int, attempt: str | None = None, *, part: str = "pool", embeddings: bool = False
    ) -> Iterator[tuple]:
        name = PART_FOLDERS[check_part(part)]
        folder = self._attempt(experiment_id, loop, attempt or self._committed(experiment_id, loop)) / name
        for idx_file in sorted(folder.glob("*.idx.npy")):
            val_file = idx_file.with_name(idx_file.name.replace(".idx.", ".val."))
            missing = f"experiment {experiment_id!r} loop {loop}: {val_file.name} is missing"
            chunk = self._read_array(idx_file, missing).astype(np.int64), self._read_array(val_file, missing).astype(np.float32)
            if not embeddings:
                yield chunk
                continue
            emb_file = idx_file.with_name(idx_file.name.replace(".idx.", ".emb."))
            yield (*chunk, self._read_array(emb_file, "").astype(np.float32) if emb_file.exists() else None)

    # -- leases: compare-and-swap under an exclusive file lock (other processes too)

    @contextmanager
    def _lease_lock(self, experiment_id: str, loop: int):
        folder = self._loop(experiment_id, loop)
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / "lease.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def read_lease(self, experiment_id: str, loop: int) -> tuple[dict, str] | None:
        try:
            stored = self._read_json(self._loop(experiment_id, loop) / "lease.json", "")
        except NotFoundError:
            return None
        return stored["record"], stored["version"]

    def write_lease(self, experiment_id: str, loop: int, record: Mapping[str, Any], version: str | None) -> str:
        new = uuid.uuid4().hex
        with self._lease_lock(experiment_id, loop):
            if (self.read_lease(experiment_id, loop) or ({}, None))[1] != version:
                raise ConflictError(f"experiment {experiment_id!r} loop {loop}: the lease changed")
            self._write_json(self._loop(experiment_id, loop) / "lease.json", {"version": new, "record": dict(record)})
        return new

    # -- checkpoints: the working copy is the stored copy ---------------------

    def checkpoint_path(self, experiment_id: str, loop: int, attempt: str) -> str:
        # Inside the attempt's folder: it goes with the attempt on commit or discard.
        folder = self._attempt(experiment_id, loop, attempt)
        folder.mkdir(parents=True, exist_ok=True)
        return str(folder / "checkpoint")

    def save_checkpoint(self, experiment_id: str, loop: int, attempt: str) -> dict | None:
        path = Path(self.checkpoint_path(experiment_id, loop, attempt))
        if not path.exists():
            return None
        size = path.stat().st_size if path.is_file() else sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
        return {"path": str(path.relative_to(self.root)), "bytes": size}

    def fetch_checkpoint(self, experiment_id: str, loop: int) -> str | None:
        try:
            ref = self.get_result(experiment_id, loop, "checkpoint")
        except NotFoundError:
            return None
        if not ref:
            return None
        path = contained(self.root, ref["path"], f"checkpoint reference {ref['path']!r}")  # a stored name
        return str(path) if path.exists() else None

    # -- tokens ---------------------------------------------------------------

    def _token(self, name: str, suffix: str = ".json") -> Path:
        if not isinstance(name, str) or not name or "." in name:
            raise ValidationError(f"invalid token name {name!r}")
        return self.root / "tokens" / (quote(name, safe="") + suffix)

    def put_token(self, record: Mapping[str, Any]) -> None:
        path = self._token(record["name"])
        with self._lock:
            if path.exists():
                raise ConflictError(f"a token named {record['name']!r} exists")
            self._write_json(path, dict(record))
            self._token(record["name"], ".used.json").unlink(missing_ok=True)  # an earlier token's, if any

    def list_tokens(self) -> list[dict]:
        records = []
        for path in (self.root / "tokens").glob("*.json"):
            if path.name.endswith(".used.json"):
                continue
            try:
                record = {"last_used": None, **json.loads(path.read_bytes())}
                used = path.with_name(path.name[: -len(".json")] + ".used.json")
                if used.exists():
                    record["last_used"] = json.loads(used.read_bytes())["last_used"]
            except FileNotFoundError:  # revoked meanwhile
                continue
            records.append(record)
        return sorted(records, key=lambda r: r["name"])

    def get_token(self, name: str) -> dict | None:
        try:
            return json.loads(self._token(name).read_bytes())
        except FileNotFoundError:
            return None

    def delete_token(self, name: str) -> None:
        try:
            self._token(name).unlink()
        except FileNotFoundError:
            raise NotFoundError(f"no token named {name!r}") from None
        self._token(name, ".used.json").unlink(missing_ok=True)

    def touch_token(self, name: str, when: str) -> None:
        # Beside the record, never rewriting it: a touch racing a revoke
        # cannot bring the token back (a stray stamp belongs to no record).
        self._write_json(self._token(name, ".used.json"), {"last_used": when})

    # -- dashboard sessions ------------------------------------------------

    def put_session(self, digest: str, record: Mapping[str, Any]) -> None:
        now = time.time()
        for path in (self.root / "sessions").glob("*.json"):  # a handful: one per sign-in still running
            try:
                if json.loads(path.read_bytes())["expires"] < now:
                    path.unlink(missing_ok=True)
            except FileNotFoundError:  # signed out meanwhile
                continue
        self._write_json(self._session(digest), dict(record))

    def get_session(self, digest: str) -> dict | None:
        try:
            return json.loads(self._session(digest).read_bytes())
        except FileNotFoundError:
            return None

    def delete_session(self, digest: str) -> None:
        self._session(digest).unlink(missing_ok=True)

    def _session(self, digest: str) -> Path:
        return self.root / "sessions" / f"{check_session_digest(digest)}.json"


class FolderSink(OutputSink):
    """One ``{seq}.idx.npy`` + ``{seq}.val.npy`` pair per chunk, and a
    ``{seq}.emb.npy`` with embeddings."""

    def __init__(self, storage: FolderStorage, folder: Path):
        self.storage, self.folder, self.seq = storage, folder, 0

    def write(self, indices: np.ndarray, values: np.ndarray, embeddings: np.ndarray | None = None) -> None:
        # the index file last: readers look for .idx files, so a chunk is complete when it appears
        self.storage._write_array(self.folder / f"{self.seq:06d}.val.npy", np.asarray(values, dtype=np.float32))
        if embeddings is not None:
            self.storage._write_array(self.folder / f"{self.seq:06d}.emb.npy", np.asarray(embeddings, dtype=np.float32))
        self.storage._write_array(self.folder / f"{self.seq:06d}.idx.npy", np.asarray(indices, dtype=np.int64))
        self.seq += 1


def open_folder(url: str, options: Mapping[str, Any]) -> FolderStorage:
    _, path = parse_url(url)
    if not path:
        raise ValidationError(f"storage URL {url!r} names no folder; try folder:///abs/path or folder://relative/path")
    return FolderStorage(path)


@hookimpl
def register_storage(register):
    register("folder", open_folder)
