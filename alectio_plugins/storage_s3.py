"""S3 backend: ``s3://bucket/prefix`` on AWS or any S3-compatible store.

Credentials, region and endpoint come from boto3's standard chain
(``AWS_ACCESS_KEY_ID``, ``AWS_PROFILE``, ``AWS_ENDPOINT_URL``, instance
roles, ...). ``storage_options`` may add ``endpoint_url``, ``region_name``,
``addressing_style``, ``max_attempts``, ``connect_timeout``,
``read_timeout`` and ``cache_dir`` (local working copies of checkpoints).

Layout under the prefix, all JSON or ``.npy`` (read with
``allow_pickle=False``)::

    experiments/{id}/experiment.json            {"seq": ns, "experiment": {...}, "index_map": v}
    experiments/{id}/index_maps/{v}.json        the pool experiment.json names
    experiments/{id}/index_map.json             the pool, as stored before it had versions
    experiments/{id}/loops/{k}/loop.json        {"state": {...}, "committed": attempt|null}
    experiments/{id}/loops/{k}/selection.npy
    experiments/{id}/loops/{k}/selection-scores.npy   the strategy's scores, aligned (if it gave any)
    experiments/{id}/labels/{n:020d}-{u}.json   {"events": [...]}: one add_labels call, in one PUT
    experiments/{id}/loops/{k}/attempts/{a}/{name}.json
    experiments/{id}/loops/{k}/attempts/{a}/outputs/{seq:06d}.idx.npy, .val.npy, .emb.npy (if any)
    experiments/{id}/loops/{k}/attempts/{a}/outputs/manifest.json
    experiments/{id}/loops/{k}/attempts/{a}/outputs/shards/{shard}/...   one shard's chunks and manifest
    experiments/{id}/loops/{k}/attempts/{a}/labeled/...      the labeled part, laid out as outputs/
    experiments/{id}/loops/{k}/attempts/{a}/checkpoint/...
    tokens/{name}.json
    tokens/{name}.used.json                     {"last_used": ...}, beside the record
    sessions/{digest}.json                      a dashboard session: {"token": ..., "expires": ..., ...}
    sessions/by-expiry/{expires:012d}.{digest}  empty: which sessions to drop, in time order

An experiment is created by writing its pool under a new version, then
``experiment.json`` only if absent (``If-None-Match: *``): a refused create
removes its own pool and leaves the stored one alone. It is changed
(``update_experiment``, ``put_index_map``) by writing ``experiment.json``
back only if unchanged since it was read (``If-Match``), so servers sharing
the prefix never undo each other's changes.

Label events are only ever added: each ``add_labels`` call is one new
object, so it is stored whole or not at all; the history is the objects in
key order. A writer names its object with the number after the newest it
lists (and a random suffix), so writers on several servers order the
history as their writes landed, not by their clocks. (Objects written
before numbering carry the time they were written; numbering goes on after
them.)

An attempt writes everything under its own folder; ``commit_loop`` then
writes ``loop.json`` naming the attempt, one PUT, last. Readers go through
``loop.json``, so a loop's results appear all at once or not at all.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import shutil
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping
from urllib.parse import quote

import numpy as np

from alectio_core import s3
from alectio_core.errors import ConflictError, NotFoundError, StorageError, ValidationError
from alectio_core.hookspecs import hookimpl
from alectio_core.storage import OutputSink, Storage, check_id, check_loop, check_part, check_session_digest, contained, parse_url

log = logging.getLogger(__name__)

_BUCKET = re.compile(s3.BUCKET_PATTERN)
_OPTIONS = {*s3.CLIENT_OPTIONS, "cache_dir"}
#: Label objects read at once (the client keeps 16 connections).
LABEL_READERS = 16
#: Conditional writes of experiment.json that find it changed by another writer, before giving up.
EXPERIMENT_WRITE_TRIES = 50
#: The folder of an attempt holding each part of its infer outputs.
_PART_FOLDERS = {"pool": "outputs", "labeled": "labeled"}
#: A dashboard session's expiry marker: ``{expires:012d}.{digest}``.
_SESSION_MARKER = re.compile(r"([0-9]{12})\.([0-9a-f]{64})")
#: A chunk a joined manifest lists, relative to the part's folder.
_SHARD_CHUNK = re.compile(r"^shards/[A-Za-z0-9_-]{1,64}/[0-9]{6}$")


def _dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), allow_nan=False).encode()


class S3Storage(Storage):
    remote_writable = True  # any machine with the URL and credentials writes its shards

    def __init__(self, bucket: str, prefix: str = "", options: Mapping[str, Any] | None = None):
        options = dict(options or {})
        self.options = dict(options)  # endpoint, timeouts, cache folder: no credentials (those come from boto3's chain)
        unknown = sorted(set(options) - _OPTIONS)
        if unknown:
            raise ValidationError(f"unknown s3 storage option {unknown[0]!r}; known: {', '.join(sorted(_OPTIONS))}")
        if not _BUCKET.match(bucket):
            raise ValidationError(f"invalid S3 bucket name {bucket!r}")
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.url = f"s3://{bucket}/{self.prefix}" if self.prefix else f"s3://{bucket}"
        self.max_attempts = s3.max_attempts(options)
        self.client = s3.make_client(options)
        self.endpoint = self.client.meta.endpoint_url
        cache = options.get("cache_dir") or os.environ.get("ALECTIO_CACHE_DIR") or os.path.expanduser("~/.cache/alectio")
        self.cache_dir = contained(Path(cache) / "s3" / bucket, self.prefix or "_", f"S3 prefix {self.prefix!r} as a cache folder")
        self._lock = threading.Lock()  # guards read-modify-write of one process's objects
        self._label_tail: dict[str, str] = {}  # labels folder -> the newest label object seen there
        self._label_batches: dict[str, list[dict]] = {}  # label objects never change once written: read each once
        try:
            self.client.head_bucket(Bucket=bucket)
        except Exception as exc:
            raise self._error(exc, "open", "") from exc

    # -- keys and errors ------------------------------------------------

    def key(self, *parts: Any) -> str:
        tail = "/".join(str(p) for p in parts)
        return f"{self.prefix}/{tail}" if self.prefix else tail

    def _loop_key(self, experiment_id: str, loop: int, *rest: Any) -> str:
        return self.key("experiments", check_id(experiment_id), "loops", check_loop(loop), *rest)

    def _attempt_key(self, experiment_id: str, loop: int, attempt: str, *rest: Any) -> str:
        return self._loop_key(experiment_id, loop, "attempts", check_id(attempt, "attempt"), *rest)

    def _error(self, exc: BaseException, action: str, key: str) -> StorageError:
        where = f"s3://{self.bucket}/{key}" if key else self.url  # keys already carry the prefix
        return s3.storage_error(
            exc, action, where, bucket=self.bucket, endpoint=self.endpoint, attempts=self.max_attempts, on_bucket=key == ""
        )

    # -- object primitives ----------------------------------------------

    def _put(self, key: str, body: Any, **extra: Any) -> str:
        """Write an object; returns its ETag."""
        from botocore.exceptions import ClientError

        try:
            return self.client.put_object(Bucket=self.bucket, Key=key, Body=body, **extra).get("ETag", "")
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code")
            if extra.get("IfNoneMatch") and code in ("PreconditionFailed", "412"):
                raise ConflictError(f"s3://{self.bucket}/{key} already exists") from None
            if extra.get("IfMatch") and (code in ("PreconditionFailed", "412", "ConditionalRequestConflict", "409") or s3.is_missing(exc)):
                raise ConflictError(f"s3://{self.bucket}/{key} changed") from None
            raise self._error(exc, "write", key) from exc
        except Exception as exc:
            raise self._error(exc, "write", key) from exc

    def _put_json(self, key: str, value: Any, **extra: Any) -> str:
        return self._put(key, _dumps(value), ContentType="application/json", **extra)

    def _get_object(self, key: str, missing: str) -> dict:
        try:
            return self.client.get_object(Bucket=self.bucket, Key=key)
        except Exception as exc:
            if s3.is_missing(exc):
                raise NotFoundError(missing) from None
            raise self._error(exc, "read", key) from exc

    def _get_body(self, key: str, missing: str):
        return self._get_object(key, missing)["Body"]

    def _get_json(self, key: str, missing: str) -> Any:
        return self._get_json_tagged(key, missing)[0]

    def _get_json_tagged(self, key: str, missing: str) -> tuple[Any, str]:
        """The object's JSON and its ETag (for a conditional write back)."""
        response = self._get_object(key, missing)
        body = response["Body"]
        try:
            return json.loads(body.read()), response.get("ETag", "")
        except Exception as exc:
            raise self._error(exc, "read", key) from exc
        finally:
            body.close()

    def _put_array(self, key: str, array: np.ndarray) -> None:
        self._put(key, s3.NpyBody.of(array), ContentType="application/octet-stream")

    def _get_array(self, key: str, missing: str) -> np.ndarray:
        """Stream one ``.npy`` object into one array (no pickles, no temp copy)."""
        body = self._get_body(key, missing)
        try:
            array = np.lib.format.read_array(body, allow_pickle=False)
            body.read()  # drain: botocore checks the length it was promised
            return array
        except Exception as exc:
            raise self._error(exc, "read", key) from exc
        finally:
            body.close()

    def _get_typed_array(self, key: str, missing: str, dtype: np.dtype, ndim: int) -> np.ndarray:
        """Stream one ``.npy`` object of ``dtype`` and ``ndim`` into a new array
        (read in small pieces: no second copy of the chunk)."""
        body = self._get_body(key, missing)
        try:
            version = np.lib.format.read_magic(body)
            read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, fortran, stored = read_header(body)
            if stored != dtype or len(shape) != ndim or (fortran and ndim > 1):
                raise StorageError(f"s3://{self.bucket}/{key} holds {stored} {shape}, expected {ndim}-d {dtype}")
            array = np.empty(shape, dtype=dtype)
            target, filled = array.data.cast("B"), 0
            while filled < target.nbytes:
                data = body.read(min(1 << 16, target.nbytes - filled))
                if not data:
                    raise StorageError(f"s3://{self.bucket}/{key} ended after {filled} of {target.nbytes} bytes")
                target[filled : filled + len(data)] = data
                filled += len(data)
            body.read()  # drain: botocore checks the length it was promised
            return array
        except StorageError:
            raise
        except Exception as exc:
            raise self._error(exc, "read", key) from exc
        finally:
            body.close()

    def _list(self, prefix: str, delimiter: str | None = None, start_after: str = "") -> Iterator[dict]:
        """Objects (and with ``delimiter``, sub-folders as ``{"Prefix": ...}``),
        with keys after ``start_after`` only, when given."""
        args = {"Bucket": self.bucket, "Prefix": prefix}
        if delimiter:
            args["Delimiter"] = delimiter
        if start_after:
            args["StartAfter"] = start_after
        try:
            for page in self.client.get_paginator("list_objects_v2").paginate(**args):
                yield from page.get("CommonPrefixes", [])
                yield from page.get("Contents", [])
        except Exception as exc:
            raise self._error(exc, "list", prefix) from exc

    def _forget(self, key: str) -> None:
        """Delete one object; housekeeping, so a failure is only logged."""
        try:
            self.client.delete_object(Bucket=self.bucket, Key=key)
        except Exception as exc:
            log.warning("could not remove s3://%s/%s: %s", self.bucket, key, exc)

    def _delete_prefix(self, prefix: str, keep: str | None = None) -> None:
        keys = [o["Key"] for o in self._list(prefix) if not (keep and o["Key"].startswith(keep))]
        for start in range(0, len(keys), 1000):
            batch = [{"Key": k} for k in keys[start : start + 1000]]
            try:
                self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True})
            except Exception as exc:
                raise self._error(exc, "delete", batch[0]["Key"]) from exc

    # -- experiments ----------------------------------------------------

    def _experiment_key(self, experiment_id: str) -> str:
        return self.key("experiments", check_id(experiment_id), "experiment.json")

    def _index_map_key(self, experiment_id: str, version: str | None) -> str:
        if version is None:  # a pool stored before pools had versions
            return self.key("experiments", check_id(experiment_id), "index_map.json")
        return self.key("experiments", check_id(experiment_id), "index_maps", f"{check_id(version, 'index map version')}.json")

    def create_experiment(self, experiment: Mapping[str, Any], index_map: list[str] | None = None) -> None:
        eid = check_id(experiment.get("id"))
        record: dict[str, Any] = {"seq": time.time_ns(), "experiment": dict(experiment)}
        if index_map is not None:
            record["index_map"] = uuid.uuid4().hex
        body = _dumps(record)  # not JSON: refused before anything is written
        pool = None
        if index_map is not None:
            pool = self._index_map_key(eid, record["index_map"])
            self._put_json(pool, list(index_map))
        try:
            self._put(self._experiment_key(eid), body, ContentType="application/json", IfNoneMatch="*")
        except BaseException as exc:
            if pool:
                self._forget(pool)
            if isinstance(exc, ConflictError):
                raise ConflictError(f"experiment {eid!r} already exists") from None
            raise

    def get_experiment(self, experiment_id: str) -> dict:
        return self._get_json(self._experiment_key(experiment_id), f"unknown experiment {experiment_id!r}")["experiment"]

    def list_experiments(self) -> list[dict]:
        found = []
        for entry in self._list(self.key("experiments", ""), "/"):
            if "Prefix" in entry:
                eid = entry["Prefix"].rstrip("/").rsplit("/", 1)[-1]
                try:
                    found.append(self._get_json(self._experiment_key(eid), ""))
                except (NotFoundError, ValidationError):
                    continue
        return [f["experiment"] for f in sorted(found, key=lambda f: (f["seq"], f["experiment"]["id"]))]

    def update_experiment(self, experiment_id: str, changes: Mapping[str, Any]) -> dict:
        return self._change_experiment(experiment_id, lambda stored: stored["experiment"].update(changes))["experiment"]

    def _change_experiment(self, experiment_id: str, change: Callable[[dict], Any]) -> dict:
        """Read ``experiment.json``, ``change`` it, and write it back only if
        nobody wrote it in between (``If-Match``), else read it again: servers
        sharing the prefix never undo each other's changes."""
        key = self._experiment_key(experiment_id)
        with self._lock:  # this process's own writers wait here rather than retry
            for _ in range(EXPERIMENT_WRITE_TRIES):
                stored, etag = self._get_json_tagged(key, f"unknown experiment {experiment_id!r}")
                change(stored)
                try:
                    self._put_json(key, stored, IfMatch=etag)
                    return stored
                except ConflictError:
                    continue
        raise ConflictError(f"experiment {experiment_id!r} kept being changed by other servers meanwhile; nothing changed, try again")

    def delete_experiment(self, experiment_id: str) -> None:
        key = self._experiment_key(experiment_id)
        self._get_json(key, f"unknown experiment {experiment_id!r}")
        try:  # the experiment object first: from then on no reader sees the experiment
            self.client.delete_object(Bucket=self.bucket, Key=key)
        except Exception as exc:
            raise self._error(exc, "delete", key) from exc
        self._delete_prefix(self.key("experiments", experiment_id, ""))
        folder = self._labels_folder(experiment_id)
        for key in [k for k in self._label_batches if k.startswith(folder)]:
            self._label_batches.pop(key, None)
        with self._lock:
            self._label_tail.pop(folder, None)
        shutil.rmtree(self.cache_dir / experiment_id, ignore_errors=True)

    # -- loop state -----------------------------------------------------

    def _loop_record(self, experiment_id: str, loop: int) -> dict:
        return self._get_json(
            self._loop_key(experiment_id, loop, "loop.json"), f"experiment {experiment_id!r} has no loop {loop}"
        )

    def put_loop_state(self, experiment_id: str, loop: int, state: Mapping[str, Any]) -> None:
        key = self._loop_key(experiment_id, loop, "loop.json")
        with self._lock:
            try:
                committed = self._loop_record(experiment_id, loop).get("committed")
            except NotFoundError:
                committed = None
            self._put_json(key, {"state": dict(state), "committed": committed})

    def get_loop_state(self, experiment_id: str, loop: int) -> dict:
        return self._loop_record(experiment_id, loop)["state"]

    def list_loop_states(self, experiment_id: str) -> list[dict]:
        loops = []
        for entry in self._list(self.key("experiments", check_id(experiment_id), "loops", ""), "/"):
            name = entry.get("Prefix", "").rstrip("/").rsplit("/", 1)[-1]
            if name.isdigit():
                loops.append(int(name))
        states = []
        for loop in sorted(loops):
            try:
                states.append(self.get_loop_state(experiment_id, loop))
            except NotFoundError:  # a selection made ahead of the loop
                continue
        return states

    # -- selections and index map ---------------------------------------

    def put_selection(self, experiment_id: str, loop: int, indices: np.ndarray, scores: np.ndarray | None = None) -> None:
        scores_key = self._loop_key(experiment_id, loop, "selection-scores.npy")
        # The scores first: a selection is never seen with the scores of the one it replaced
        # (a write that fails between the two leaves scores of another length, read as none).
        if scores is not None:
            self._put_array(scores_key, np.asarray(scores, dtype="<f8"))
        else:
            try:
                self.client.delete_object(Bucket=self.bucket, Key=scores_key)
            except Exception as exc:
                raise self._error(exc, "delete", scores_key) from exc
        self._put_array(self._loop_key(experiment_id, loop, "selection.npy"), np.asarray(indices, dtype="<i8"))

    def get_selection(self, experiment_id: str, loop: int) -> np.ndarray:
        array = self._get_array(
            self._loop_key(experiment_id, loop, "selection.npy"), f"experiment {experiment_id!r} has no selection for loop {loop}"
        )
        return array.astype(np.int64, copy=False)

    def get_selection_scores(self, experiment_id: str, loop: int) -> np.ndarray | None:
        picked = self.get_selection(experiment_id, loop)
        try:
            scores = self._get_array(self._loop_key(experiment_id, loop, "selection-scores.npy"), "")
        except NotFoundError:
            return None
        return scores.astype(np.float64, copy=False) if scores.shape == picked.shape else None

    # -- labels -----------------------------------------------------------

    def _labels_folder(self, experiment_id: str) -> str:
        return self.key("experiments", check_id(experiment_id), "labels", "")

    def add_labels(self, experiment_id: str, events: list[dict]) -> None:
        body = _dumps({"events": [dict(e) for e in events]})  # not JSON: refused before anything is written
        self._get_json(self._experiment_key(experiment_id), f"unknown experiment {experiment_id!r}")
        folder = self._labels_folder(experiment_id)
        key = f"{folder}{self._last_label_number(folder) + 1:020d}-{uuid.uuid4().hex[:8]}.json"
        self._put(key, body, ContentType="application/json")
        with self._lock:
            self._label_tail[folder] = max(self._label_tail.get(folder, ""), key)

    def _last_label_number(self, folder: str) -> int:
        """The number of the newest label object (0 when none). A batch takes
        the number after the newest it lists, so a batch sent after another
        was stored is listed after it, whatever the writers' clocks say;
        batches sent at the same moment may share a number, and their random
        suffixes order them (either order is right for them). Objects named
        before numbering carry the time they were written; the numbers go on
        from the last."""
        with self._lock:
            tail = self._label_tail.get(folder, "")
        keys = [o["Key"] for o in self._list(folder, start_after=tail) if o["Key"].endswith(".json")]
        newest = max([tail, *keys])
        if newest:
            with self._lock:
                self._label_tail[folder] = max(self._label_tail.get(folder, ""), newest)
        return int(newest[len(folder) : len(folder) + 20]) if newest else 0

    def list_labels(self, experiment_id: str) -> list[dict]:
        keys = sorted(o["Key"] for o in self._list(self._labels_folder(experiment_id)) if o["Key"].endswith(".json"))

        def read(key: str) -> None:
            try:
                self._label_batches[key] = self._get_json(key, key)["events"]
            except NotFoundError:  # deleted since the listing
                pass

        new = [key for key in keys if key not in self._label_batches]
        if len(new) > 1:  # a tool sending one label per call leaves many small objects: read them side by side
            with ThreadPoolExecutor(LABEL_READERS) as pool:
                list(pool.map(read, new))
        elif new:
            read(new[0])
        events: list[dict] = []
        for key in keys:
            # copies: a caller changing one leaves the cache alone
            events.extend(dict(e) for e in self._label_batches.get(key, ()))
        return events

    def put_index_map(self, experiment_id: str, references: list[str]) -> None:
        version = uuid.uuid4().hex
        self._put_json(self._index_map_key(experiment_id, version), list(references))
        replaced: list[str | None] = []

        def point_to_it(stored: dict) -> None:
            replaced[:] = [stored.get("index_map")]
            stored["index_map"] = version

        try:
            self._change_experiment(experiment_id, point_to_it)
        except NotFoundError:  # no experiment (yet): the unversioned key, as before
            self._forget(self._index_map_key(experiment_id, version))
            self._put_json(self._index_map_key(experiment_id, None), list(references))
            return
        except ConflictError:
            self._forget(self._index_map_key(experiment_id, version))
            raise
        self._forget(self._index_map_key(experiment_id, replaced[0]))

    def get_index_map(self, experiment_id: str) -> list[str]:
        try:
            version = self._get_json(self._experiment_key(experiment_id), "").get("index_map")
        except NotFoundError:
            version = None
        return self._get_json(self._index_map_key(experiment_id, version), f"experiment {experiment_id!r} has no index map")

    # -- results --------------------------------------------------------

    def put_result(self, experiment_id: str, loop: int, attempt: str, name: str, value: Any) -> None:
        body = _dumps(value)  # TypeError / ValueError for what JSON cannot hold
        self._put(self._attempt_key(experiment_id, loop, attempt, f"{check_id(name, 'result name')}.json"), body)

    def open_output_sink(self, experiment_id: str, loop: int, attempt: str, part: str = "pool") -> OutputSink:
        return S3OutputSink(self, self._attempt_key(experiment_id, loop, attempt, _PART_FOLDERS[check_part(part)]))

    def open_shard_sink(self, experiment_id: str, loop: int, attempt: str, part: str, shard: str) -> OutputSink:
        folder = self._attempt_key(experiment_id, loop, attempt, _PART_FOLDERS[check_part(part)])
        return S3OutputSink(self, f"{folder}/shards/{check_id(shard, 'shard')}")

    def join_shards(self, experiment_id: str, loop: int, attempt: str, part: str, shards: list[str]) -> None:
        folder = self._attempt_key(experiment_id, loop, attempt, _PART_FOLDERS[check_part(part)])
        files: list[str] = []
        joined: dict[str, Any] = {"rows": 0, "width": None, "embedding_width": None, "format": "npy"}
        for shard in shards:
            manifest = self._get_json(f"{folder}/shards/{check_id(shard, 'shard')}/manifest.json", f"shard {shard!r} was not finished")
            files += [f"shards/{shard}/{seq:06d}" for seq in range(manifest["chunks"])]
            joined["rows"] += manifest["rows"]
            for key in ("width", "embedding_width"):
                joined[key] = joined[key] or manifest[key]
        self._put_json(f"{folder}/manifest.json", {**joined, "chunks": len(files), "files": files})
        listed = {f"{folder}/shards/{shard}/" for shard in shards}
        for entry in self._list(f"{folder}/shards/", "/"):  # tries that died or were retried: housekeeping
            if "Prefix" in entry and entry["Prefix"] not in listed:
                try:
                    self._delete_prefix(entry["Prefix"])
                except StorageError as exc:
                    log.warning("could not remove %s: %s", entry["Prefix"], exc)

    def commit_loop(
        self, experiment_id: str, loop: int, attempt: str, state: Mapping[str, Any], lease_version: str | None = None
    ) -> None:
        check_id(attempt, "attempt")
        with self._lock:
            # S3 cannot make two objects change together: the lease is checked
            # just before loop.json is written (the holder renewed it just
            # before, so it cannot expire in between unless this PUT takes longer
            # than the lease's time to live).
            if lease_version is not None and (self.read_lease(experiment_id, loop) or ({}, None))[1] != lease_version:
                raise ConflictError(f"experiment {experiment_id!r} loop {loop}: the lease changed; not committed")
            self._put_json(self._loop_key(experiment_id, loop, "loop.json"), {"state": dict(state), "committed": attempt})
        try:  # other attempts are unreachable now; removing them is housekeeping
            self._delete_prefix(self._loop_key(experiment_id, loop, "attempts", ""), keep=self._attempt_key(experiment_id, loop, attempt, ""))
        except StorageError as exc:
            log.warning("could not remove stale attempts of %s loop %d: %s", experiment_id, loop, exc)

    def discard_attempt(self, experiment_id: str, loop: int, attempt: str) -> None:
        try:
            committed = self._loop_record(experiment_id, loop).get("committed")
        except NotFoundError:
            committed = None
        if attempt != committed:
            self._delete_prefix(self._attempt_key(experiment_id, loop, attempt, ""))

    def _committed(self, experiment_id: str, loop: int) -> str:
        try:
            attempt = self._loop_record(experiment_id, loop).get("committed")
        except NotFoundError:
            attempt = None
        if attempt is None:
            raise NotFoundError(f"experiment {experiment_id!r} loop {loop} has no finished results")
        return attempt

    def get_result(self, experiment_id: str, loop: int, name: str) -> Any:
        attempt = self._committed(experiment_id, loop)
        key = self._attempt_key(experiment_id, loop, attempt, f"{check_id(name, 'result name')}.json")
        return self._get_json(key, f"experiment {experiment_id!r} loop {loop} has no {name}")

    def iter_outputs(
        self, experiment_id: str, loop: int, attempt: str | None = None, *, part: str = "pool", embeddings: bool = False
    ) -> Iterator[tuple]:
        folder_name = _PART_FOLDERS[check_part(part)]
        attempt = attempt or self._committed(experiment_id, loop)
        folder = self._attempt_key(experiment_id, loop, attempt, folder_name)
        try:
            manifest = self._get_json(f"{folder}/manifest.json", "")
            if "files" in manifest:  # joined shards
                bad = next((f for f in manifest["files"] if not isinstance(f, str) or not _SHARD_CHUNK.match(f)), None)
                if bad is not None:
                    raise StorageError(f"s3://{self.bucket}/{folder}/manifest.json lists {bad!r}, not a shard's chunk")
                names = [f"{folder}/{name}" for name in manifest["files"]]
            else:
                names = [f"{folder}/{seq:06d}" for seq in range(manifest["chunks"])]
            embedded = set(names) if manifest.get("embedding_width") else set()
        except NotFoundError:  # a sink not closed yet: what is there so far
            keys = [o["Key"] for o in self._list(f"{folder}/")]
            names = sorted(k[: -len(".idx.npy")] for k in keys if k.endswith(".idx.npy"))
            embedded = {k[: -len(".emb.npy")] for k in keys if k.endswith(".emb.npy")}
        # Each chunk is read into arrays of its own and handed over: what the
        # caller is given is the caller's (to keep, or to scribble on), and
        # a chunk it lets go of is freed. A for-loop holds two chunks at most.
        for name in names:
            indices, values = self._get_chunk(experiment_id, loop, name)
            if not embeddings:
                yield indices, values
                continue
            emb = None
            if name in embedded:
                missing = f"experiment {experiment_id!r} loop {loop}: embedding chunk {name} is missing"
                emb = self._get_typed_array(f"{name}.emb.npy", missing, np.dtype("<f4"), 2)
                if emb.shape[0] != indices.shape[0]:
                    raise StorageError(f"s3://{self.bucket}/{name}: index and embedding arrays do not match")
            yield indices, values, emb

    def _get_chunk(self, experiment_id: str, loop: int, name: str) -> tuple[np.ndarray, np.ndarray]:
        missing = f"experiment {experiment_id!r} loop {loop}: output chunk {name} is missing"
        indices = self._get_typed_array(f"{name}.idx.npy", missing, np.dtype("<i8"), 1)
        values = self._get_typed_array(f"{name}.val.npy", missing, np.dtype("<f4"), 2)
        if values.shape[0] != indices.shape[0]:
            raise StorageError(f"s3://{self.bucket}/{name}: index and value arrays do not match")
        return indices, values

    # -- leases: conditional writes on one object, the ETag as version ----

    def read_lease(self, experiment_id: str, loop: int) -> tuple[dict, str] | None:
        key = self._loop_key(experiment_id, loop, "lease.json")
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=key)
            data = json.loads(response["Body"].read())
        except Exception as exc:
            if s3.is_missing(exc):
                return None
            raise self._error(exc, "read", key) from exc
        data.pop("nonce", None)
        return data, response["ETag"]

    def write_lease(self, experiment_id: str, loop: int, record: Mapping[str, Any], version: str | None) -> str:
        key = self._loop_key(experiment_id, loop, "lease.json")
        condition = {"IfNoneMatch": "*"} if version is None else {"IfMatch": version}
        # A nonce: two equal records must still get different ETags.
        return self._put_json(key, {**dict(record), "nonce": os.urandom(8).hex()}, **condition)

    # -- checkpoints ----------------------------------------------------

    def checkpoint_path(self, experiment_id: str, loop: int, attempt: str) -> str:
        folder = self.cache_dir / check_id(experiment_id) / f"loop_{check_loop(loop)}"
        folder.mkdir(parents=True, exist_ok=True)
        return str(folder / f"{check_id(attempt, 'attempt')}.ckpt")

    @staticmethod
    def _stamp(path: str) -> Path:
        """Beside a working copy: which attempt it belongs to."""
        return Path(path).with_name(Path(path).name + ".attempt")

    def save_checkpoint(self, experiment_id: str, loop: int, attempt: str) -> dict | None:
        path = Path(self.checkpoint_path(experiment_id, loop, attempt))
        if not path.exists():
            return None
        prefix = self._attempt_key(experiment_id, loop, attempt, "checkpoint")
        files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
        total = 0
        for file in files:
            key = f"{prefix}/{path.name}" if file == path else f"{prefix}/files/{file.relative_to(path).as_posix()}"
            try:
                self.client.upload_file(str(file), self.bucket, key)
            except Exception as exc:
                raise self._error(exc, "upload checkpoint to", key) from exc
            total += file.stat().st_size
        self._stamp(str(path)).write_text(attempt)
        kind = "file" if path.is_file() else "dir"
        return {"key": f"{prefix}/{path.name}" if kind == "file" else f"{prefix}/files/", "kind": kind, "bytes": total, "path": str(path)}

    def fetch_checkpoint(self, experiment_id: str, loop: int, attempt: str | None = None) -> str | None:
        """With ``attempt``: that attempt's checkpoint, committed or not (a
        shard of its infer running on another machine needs it)."""
        try:
            if attempt is None:
                attempt = self._committed(experiment_id, loop)
                ref = self.get_result(experiment_id, loop, "checkpoint")
            else:
                ref = self._get_json(self._attempt_key(experiment_id, loop, attempt, "checkpoint.json"), "")
        except NotFoundError:
            return None
        if not ref:
            return None
        local = self.checkpoint_path(experiment_id, loop, attempt)
        stamp = self._stamp(local)
        if os.path.exists(local) and stamp.exists() and stamp.read_text() == attempt:
            return local
        work = Path(local + ".download")
        try:
            if ref["kind"] == "file":
                self.client.download_file(self.bucket, ref["key"], str(work))
            else:
                # Every target checked before any download: a key that climbs
                # out of the folder (``../``) refuses the whole checkpoint.
                files = [
                    (obj["Key"], contained(work, obj["Key"][len(ref["key"]) :], f"checkpoint object s3://{self.bucket}/{obj['Key']}"))
                    for obj in self._list(ref["key"])
                ]
                work.mkdir(parents=True, exist_ok=True)
                for key, target in files:
                    target.parent.mkdir(parents=True, exist_ok=True)
                    self.client.download_file(self.bucket, key, str(target))
        except Exception as exc:
            _remove(work)
            if isinstance(exc, StorageError):
                raise
            raise self._error(exc, "download checkpoint", ref["key"]) from exc
        if os.path.isdir(local) and not os.path.islink(local):
            shutil.rmtree(local)
        os.replace(work, local)
        stamp.write_text(attempt)
        return local

    # -- tokens ---------------------------------------------------------

    def _token_key(self, name: str, suffix: str = ".json") -> str:
        if not isinstance(name, str) or not name or "." in name:
            raise ValidationError(f"invalid token name {name!r}")
        return self.key("tokens", quote(name, safe="") + suffix)

    def put_token(self, record: Mapping[str, Any]) -> None:
        key = self._token_key(record["name"])
        try:
            self._put_json(key, dict(record), IfNoneMatch="*")
        except ConflictError:
            raise ConflictError(f"a token named {record['name']!r} exists") from None
        self._delete_keys([self._token_key(record["name"], ".used.json")])  # an earlier token's, if any

    def list_tokens(self) -> list[dict]:
        keys = {o["Key"] for o in self._list(self.key("tokens", ""))}
        records = []
        for key in sorted(k for k in keys if k.endswith(".json") and not k.endswith(".used.json")):
            try:
                record = {"last_used": None, **self._get_json(key, "")}
                used = key[: -len(".json")] + ".used.json"
                if used in keys:
                    record["last_used"] = self._get_json(used, "")["last_used"]
            except NotFoundError:  # revoked meanwhile
                continue
            records.append(record)
        return sorted(records, key=lambda r: r["name"])

    def get_token(self, name: str) -> dict | None:
        try:
            return self._get_json(self._token_key(name), "")
        except NotFoundError:
            return None

    def delete_token(self, name: str) -> None:
        key = self._token_key(name)
        self._get_json(key, f"no token named {name!r}")
        self._delete_keys([key, self._token_key(name, ".used.json")])

    def touch_token(self, name: str, when: str) -> None:
        # A separate object, written blind: rewriting the record itself could
        # bring back a token revoked between our read and our write. A stamp
        # left by a touch racing a revoke belongs to no record and is ignored.
        self._put_json(self._token_key(name, ".used.json"), {"last_used": when})

    # -- dashboard sessions ----------------------------------------------

    def put_session(self, digest: str, record: Mapping[str, Any]) -> None:
        expires = math.ceil(float(record["expires"]))
        self._put_json(self._session_key(digest), dict(record))
        # The marker's name says when the session ends, and listings come in
        # key order: dropping the expired ones is one listing, no reads.
        self._put(self.key("sessions", "by-expiry", f"{expires:012d}.{digest}"), b"")
        self._drop_expired_sessions()

    def get_session(self, digest: str) -> dict | None:
        try:
            return self._get_json(self._session_key(digest), "")
        except NotFoundError:
            return None

    def delete_session(self, digest: str) -> None:
        self._delete_keys([self._session_key(digest)])  # its marker goes when it would have expired

    def _session_key(self, digest: str) -> str:
        return self.key("sessions", check_session_digest(digest) + ".json")

    def _drop_expired_sessions(self) -> None:
        now, stale = time.time(), []
        for listed in self._list(self.key("sessions", "by-expiry", "")):
            marker = _SESSION_MARKER.fullmatch(listed["Key"].rpartition("/")[2])
            if marker is None:  # not ours
                continue
            if int(marker[1]) >= now:
                break
            stale += [listed["Key"], self._session_key(marker[2])]
        for start in range(0, len(stale), 1000):  # the most one request deletes
            self._delete_keys(stale[start : start + 1000])

    def _delete_keys(self, keys: list[str]) -> None:
        try:
            self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": [{"Key": k} for k in keys], "Quiet": True})
        except Exception as exc:
            raise self._error(exc, "delete", keys[0]) from exc

    def close(self) -> None:
        self.client.close()


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


class S3OutputSink(OutputSink):
    """One ``.idx.npy``, one ``.val.npy`` and (with embeddings) one
    ``.emb.npy`` object per chunk, then a manifest.

    Each chunk is sent straight from the caller's arrays (no copy), so memory
    stays at what the writer holds.
    """

    def __init__(self, storage: S3Storage, folder: str):
        self.storage, self.folder = storage, folder
        self.seq = self.rows = 0
        self.width: int | None = None
        self.embedding_width: int | None = None

    def write(self, indices: np.ndarray, values: np.ndarray, embeddings: np.ndarray | None = None) -> None:
        name = f"{self.folder}/{self.seq:06d}"
        # The index object last: a reader of an unfinished attempt lists
        # ``.idx.npy`` keys, so a chunk it finds is complete.
        self.storage._put_array(f"{name}.val.npy", np.ascontiguousarray(values, dtype="<f4"))
        if embeddings is not None:
            self.storage._put_array(f"{name}.emb.npy", np.ascontiguousarray(embeddings, dtype="<f4"))
            self.embedding_width = int(embeddings.shape[1])
        self.storage._put_array(f"{name}.idx.npy", np.ascontiguousarray(indices, dtype="<i8"))
        self.seq += 1
        self.rows += int(indices.shape[0])
        self.width = int(values.shape[1])

    def close(self) -> None:
        manifest = {
            "chunks": self.seq,
            "rows": self.rows,
            "width": self.width,
            "embedding_width": self.embedding_width,
            "format": "npy",
        }
        self.storage._put_json(f"{self.folder}/manifest.json", manifest)


def open_s3(url: str, options: Mapping[str, Any]) -> S3Storage:
    scheme, rest = parse_url(url)
    bucket, _, prefix = rest.partition("/")
    if not bucket:
        raise ValidationError(f"storage URL {url!r} names no bucket; use s3://bucket/prefix")
    return S3Storage(bucket, prefix, options)


@hookimpl(trylast=True)  # a third-party plugin registering the same name is called first, and wins
def register_storage(register):
    register("s3", open_s3)
