"""The storage interface every backend implements, and ``open_storage(url)``.

A backend is chosen by URL scheme (``sqlite:///path/alectio.db``,
``s3://bucket/prefix``); a storage plugin registers a scheme through the
``register_storage`` hook. ``alectio_core.testing`` holds the contract suite
a backend must pass.

Two kinds of data, two visibility rules:

* Job state (experiments, loop status and progress, selections, index maps,
  tokens) is written in place and visible at once.
* A loop's results (insights, predictions, ground truth, metrics, infer
  outputs, checkpoint reference) are written under an *attempt* id and only
  become readable when ``commit_loop`` publishes that attempt, together
  with the loop's ``done`` state. A process killed mid-loop leaves earlier
  loops intact and the interrupted attempt invisible.

Everything stored is JSON or raw numpy arrays (int64 indices, float32
values and embeddings); nothing is pickled.

Infer outputs come in two parts: ``"pool"``, the unlabeled records' (every
loop), and ``"labeled"``, the labeled records' (only when the experiment's
strategy declares the ``labeled`` input).
"""

from __future__ import annotations

import inspect
import os
import re
import time
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np

from .errors import StorageError, ValidationError
from .ids import ID_RULE, is_id

#: Names of the per-loop results (``put_result`` / ``get_result``).
RESULT_NAMES = ("insights", "predictions", "ground_truth", "metrics", "checkpoint")
#: The parts of a loop's infer outputs (``open_output_sink`` / ``iter_outputs``).
OUTPUT_PARTS = ("pool", "labeled")


def check_id(value: Any, what: str = "experiment id") -> str:
    """Identifiers become file names and object keys: allow a safe alphabet."""
    if not is_id(value):
        raise ValidationError(f"invalid {what} {value!r}: {ID_RULE}")
    return value


def contained(root: str | os.PathLike, name: str, what: str | None = None) -> Path:
    """``root / name`` resolved, or a ``StorageError`` naming ``what`` (by
    default ``name``) when it is not strictly inside ``root``: ``..``, an
    absolute name, a symbolic link out. A stored name (an object key, a
    reference in a record) becomes a local path only through here."""
    base = Path(root).resolve()
    try:
        target = (base / name).resolve()
    except (OSError, ValueError, RuntimeError) as exc:  # NUL bytes, symlink loops
        raise StorageError(f"refusing {what or repr(name)}: {exc}") from None
    if base not in target.parents:
        raise StorageError(f"refusing {what or repr(name)}: it leads outside {base}")
    return target


def check_part(value: Any) -> str:
    if value not in OUTPUT_PARTS:
        raise ValidationError(f"invalid output part {value!r}: one of {', '.join(OUTPUT_PARTS)}")
    return value


def takes(method: Any, name: str) -> bool:
    """Does ``method`` accept the keyword argument ``name``? A backend
    written before an argument existed is called without it."""
    try:
        parameters = inspect.signature(method).parameters
    except (TypeError, ValueError):  # a builtin without a signature: assume the current interface
        return True
    return name in parameters or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())


def cannot(storage: Any, what: str) -> StorageError:
    """The error for a backend written before ``what`` existed."""
    name = f"{type(storage).__name__} ({getattr(storage, 'url', '?')})"
    return StorageError(f"the storage backend {name} cannot {what}: it was written for an older alectio; see docs/storage-plugins.md")


def check_session_digest(value: Any) -> str:
    if not (isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value)):
        raise ValidationError(f"invalid session digest {value!r}: 64 lowercase hex digits")
    return value


def check_loop(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ValidationError(f"invalid loop number {value!r}: must be an integer >= 0")
    return int(value)


class OutputSink(ABC):
    """Receives validated infer-output chunks for one loop attempt."""

    @abstractmethod
    def write(self, indices: np.ndarray, values: np.ndarray, embeddings: np.ndarray | None = None) -> None:
        """Store one chunk: int64 indices (n,), float32 values (n, width)
        and, when the model wrote them, float32 embeddings (n, embedding
        width) beside them (all chunks of a sink have them, or none). The
        caller may reuse the arrays once this returns."""

    def close(self) -> None:
        """All chunks are written (they stay invisible until the commit)."""


class Storage(ABC):
    """A storage backend. Implementations are safe to share between threads."""

    url: str

    # -- experiments ----------------------------------------------------

    @abstractmethod
    def create_experiment(self, experiment: Mapping[str, Any], index_map: list[str] | None = None) -> None:
        """Store a new experiment (a JSON object with an ``id``) and its pool
        (``index_map[i]`` names record ``i``) in one step: both or nothing,
        so the experiment is never visible without its pool. Raises
        ``ConflictError`` if the id exists, having stored nothing: the
        experiment and the pool already there stay as they were."""

    @abstractmethod
    def get_experiment(self, experiment_id: str) -> dict:
        """Raises ``NotFoundError`` for an unknown id."""

    @abstractmethod
    def list_experiments(self) -> list[dict]:
        """Every experiment, oldest first."""

    @abstractmethod
    def update_experiment(self, experiment_id: str, changes: Mapping[str, Any]) -> dict:
        """Merge ``changes`` into the experiment and return it."""

    def delete_experiment(self, experiment_id: str) -> None:
        """Remove the experiment and everything stored for it: loop states,
        selections (and their scores), label events, the index map, results, infer outputs (committed or
        staged) and checkpoints, local copies included. The experiment
        disappears first, so no reader sees half of it; its id may then be
        used again from scratch. ``NotFoundError`` for an unknown id.

        Not abstract, so a backend written before it keeps working; without
        it, deleting fails with a ``StorageError`` saying so.
        """
        raise StorageError(f"the storage backend {type(self).__name__} ({self.url}) cannot delete experiments")

    # -- loop job state (visible at once) -------------------------------

    @abstractmethod
    def put_loop_state(self, experiment_id: str, loop: int, state: Mapping[str, Any]) -> None:
        """Create or replace loop ``loop``'s state (status, stage, progress,
        timestamps, error, attempt). Does not touch committed results."""

    @abstractmethod
    def get_loop_state(self, experiment_id: str, loop: int) -> dict:
        """Raises ``NotFoundError`` when the loop was never started."""

    @abstractmethod
    def list_loop_states(self, experiment_id: str) -> list[dict]:
        """Every loop's state, by loop number."""

    def list_all_loop_states(self) -> dict[str, list[dict]]:
        """Every experiment's loop states (``list_loop_states`` of each, by
        experiment id; an experiment without loops may be left out), for the
        experiments list. This default asks once per experiment; a backend
        that can read them all at once (one SQL query) should."""
        return {e["id"]: self.list_loop_states(e["id"]) for e in self.list_experiments()}

    # -- selections and the index map -----------------------------------

    @abstractmethod
    def put_selection(self, experiment_id: str, loop: int, indices: np.ndarray, scores: np.ndarray | None = None) -> None:
        """Store (or replace) the records selected for ``loop`` (already
        validated) in the order given, best first, with ``scores`` (float,
        aligned with ``indices``) when the strategy gave them. A backend
        written before scores existed takes no ``scores``: it is then called
        without them."""

    @abstractmethod
    def get_selection(self, experiment_id: str, loop: int) -> np.ndarray:
        """int64 indices in the order stored; raises ``NotFoundError`` when there is none."""

    def get_selection_scores(self, experiment_id: str, loop: int) -> np.ndarray | None:
        """float64 scores aligned with ``get_selection``, or None when the
        selection was stored without any (``NotFoundError`` when there is
        no selection). The default, for a backend that stores no scores:
        None."""
        self.get_selection(experiment_id, loop)
        return None

    # -- labels from people (experiments in labels mode "alectio") ------

    def add_labels(self, experiment_id: str, events: list[dict]) -> None:
        """Append label events (JSON objects: ``index``, ``label``, ``skip``,
        ``loop``, ``source``, ``by``, ``at``) to the experiment's history,
        all of them or none: a failure or a killed process in the middle
        stores nothing. ``NotFoundError`` for an unknown experiment.

        Not abstract, so a backend written before labels keeps working for
        everything else; without it, storing labels fails saying so."""
        raise cannot(self, "store labels")

    def list_labels(self, experiment_id: str) -> list[dict]:
        """Every label event of the experiment, oldest first (events of one
        ``add_labels`` call in the order given); empty when none."""
        raise cannot(self, "store labels")

    @abstractmethod
    def put_index_map(self, experiment_id: str, references: list[str]) -> None:
        """Replace an experiment's pool: ``references[i]`` names record ``i``."""

    @abstractmethod
    def get_index_map(self, experiment_id: str) -> list[str]:
        """Raises ``NotFoundError`` when there is none."""

    # -- loop results, staged under an attempt --------------------------

    @abstractmethod
    def put_result(self, experiment_id: str, loop: int, attempt: str, name: str, value: Any) -> None:
        """Stage a JSON result (one of ``RESULT_NAMES``) of an attempt."""

    @abstractmethod
    def open_output_sink(self, experiment_id: str, loop: int, attempt: str, part: str = "pool") -> OutputSink:
        """A sink for the attempt's infer outputs (and embeddings) of one
        part, ``"pool"`` or ``"labeled"``, streamed in chunks. The parts are
        stored apart, and committed, discarded and deleted with the attempt."""

    @abstractmethod
    def commit_loop(
        self, experiment_id: str, loop: int, attempt: str, state: Mapping[str, Any], lease_version: str | None = None
    ) -> None:
        """Atomically publish the attempt's results and set the loop's state
        (``status: done``). Results of other attempts of the loop go away.

        With ``lease_version``: publish only if the loop's lease record is
        still at that version (see ``write_lease``), else raise
        ``ConflictError`` and publish nothing. In the same transaction where
        the store has them; otherwise checked just before the publishing
        write."""

    # Sharded outputs: an executor that runs infer in parts on other
    # machines (see alectio_core.executors) has each part write its own
    # chunks, then names the parts that finished. Not abstract: a backend
    # without them has its shards' rows written by the loop's process.

    #: Can another machine open this storage by its URL (and ``options``)
    #: and write an attempt's shards? A local SQLite file cannot.
    remote_writable = False

    def open_shard_sink(self, experiment_id: str, loop: int, attempt: str, part: str, shard: str) -> OutputSink:
        """A sink for one try of one shard (``shard``, an id naming both) of
        the attempt's ``part``: its chunks are kept apart, and count only
        once ``join_shards`` lists the shard."""
        raise cannot(self, "store sharded infer outputs")

    def join_shards(self, experiment_id: str, loop: int, attempt: str, part: str, shards: list[str]) -> None:
        """The attempt's ``part`` is the chunks of ``shards`` (closed shard
        sinks), in that order; other shards of the part are dropped."""
        raise cannot(self, "store sharded infer outputs")

    @abstractmethod
    def discard_attempt(self, experiment_id: str, loop: int, attempt: str) -> None:
        """Drop an uncommitted attempt's staged results (best effort)."""

    @abstractmethod
    def get_result(self, experiment_id: str, loop: int, name: str) -> Any:
        """A committed result; ``NotFoundError`` if the loop is not done or
        the result was not produced."""

    @abstractmethod
    def iter_outputs(
        self, experiment_id: str, loop: int, attempt: str | None = None, *, part: str = "pool", embeddings: bool = False
    ) -> Iterator[tuple]:
        """Stream a loop's infer outputs of ``part`` in the order written, as
        ``(indices, values)`` chunks, or with ``embeddings=True`` as
        ``(indices, values, embeddings_or_None)`` (None when the model wrote
        none). Without ``attempt``: the committed ones (``NotFoundError`` if
        the loop is not done). With it: that attempt's, committed or not. A
        part never written streams nothing."""

    # -- loop leases (see alectio_core.leases) ---------------------------

    @abstractmethod
    def read_lease(self, experiment_id: str, loop: int) -> tuple[dict, str] | None:
        """The loop's lease record (a JSON object) and its version, or None
        when the loop never had one."""

    @abstractmethod
    def write_lease(self, experiment_id: str, loop: int, record: Mapping[str, Any], version: str | None) -> str:
        """Compare-and-swap the loop's lease record, atomically across
        processes and machines sharing the store: with ``version=None``
        create it (``ConflictError`` if one exists); else replace it only if
        its version is still ``version`` (``ConflictError`` otherwise).
        Returns the new version, an opaque string that changes on every
        write."""

    # -- checkpoints ----------------------------------------------------

    @abstractmethod
    def checkpoint_path(self, experiment_id: str, loop: int, attempt: str) -> str:
        """A local path where ``attempt`` of loop ``loop`` writes its
        checkpoint; its folder exists. Each attempt has its own: an attempt
        that lost its lease but still runs (a process that stalled) can
        never overwrite the checkpoint another attempt committed."""

    @abstractmethod
    def save_checkpoint(self, experiment_id: str, loop: int, attempt: str) -> dict | None:
        """Record (and for remote stores, upload) the checkpoint ``train``
        wrote at ``checkpoint_path(experiment_id, loop, attempt)``; returns
        its reference, or None when ``train`` wrote none."""

    @abstractmethod
    def fetch_checkpoint(self, experiment_id: str, loop: int) -> str | None:
        """Local path of a committed loop's checkpoint, downloading it if
        it is not on this machine; None when the loop has none."""

    # -- API tokens (keyed hashes only) ----------------------------------

    @abstractmethod
    def put_token(self, record: Mapping[str, Any]) -> None:
        """Store a token record (``name``, ``salt``, ``hash``, ``created``);
        ``ConflictError`` when the name exists."""

    @abstractmethod
    def list_tokens(self) -> list[dict]:
        """Every token record, with its ``last_used`` (None when never used)."""

    def get_token(self, name: str) -> dict | None:
        """The record of the token ``name`` as ``put_token`` stored it, or
        None. Every request with a token not yet cached costs one call, so a
        backend should read one record by name; this default scans them all."""
        return next((t for t in self.list_tokens() if t["name"] == name), None)

    @abstractmethod
    def delete_token(self, name: str) -> None:
        """``NotFoundError`` for an unknown name."""

    @abstractmethod
    def touch_token(self, name: str, when: str) -> None:
        """Record the last time a token was used, without rewriting its
        record: a touch racing a ``delete_token`` must never bring the
        token back. Nothing to do for an unknown name."""

    # -- dashboard sessions (see alectio_core.server.sessions) -----------

    def put_session(self, digest: str, record: Mapping[str, Any]) -> None:
        """Store a dashboard session under ``digest`` (64 hex digits: the
        sha256 of the secret in the browser's cookie, never the secret).
        ``record`` is JSON with at least ``expires`` (unix seconds); records
        past their ``expires`` are dropped here (or soon after). Every server
        sharing the store must then see it in ``get_session``. This default
        keeps it in this process only: another server would not know it."""
        sessions = self.__dict__.setdefault("_sessions", {})
        now = time.time()
        for stale in [d for d, r in list(sessions.items()) if r["expires"] < now]:
            sessions.pop(stale, None)
        sessions[check_session_digest(digest)] = dict(record)

    def get_session(self, digest: str) -> dict | None:
        """The record ``put_session`` stored under ``digest``, or None
        (never stored, signed out, or expired and dropped)."""
        return self.__dict__.get("_sessions", {}).get(check_session_digest(digest))

    def delete_session(self, digest: str) -> None:
        """Signing out: from now on ``get_session(digest)`` is None for every
        server. Nothing to do for an unknown digest."""
        self.__dict__.get("_sessions", {}).pop(check_session_digest(digest), None)

    def close(self) -> None:
        """Release connections."""


#: What ``--storage`` and ``storage:`` accept, for error messages.
URL_FORMS = "sqlite:///relative.db, sqlite:////absolute.db, a bare path (alectio.db, /abs/alectio.db), s3://bucket/prefix"

# Two letters or more, so a Windows drive ("C:") stays a path.
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+$")


def parse_url(url: str) -> tuple[str, str]:
    """``scheme://rest`` -> (scheme, rest).

    A bare path, absolute or relative, means that SQLite file: it is read as
    ``sqlite:///`` + path, so ``/data/a.db`` stays absolute. Something that
    looks like a scheme without ``//`` (``sqlite:/a.db``) is an error rather
    than a folder named ``sqlite:``.
    """
    scheme, sep, rest = url.partition("://")
    if sep and _SCHEME.fullmatch(scheme):
        return scheme.lower(), rest
    head, colon, _ = url.partition(":")
    if colon and _SCHEME.fullmatch(head):
        raise ValidationError(f"malformed storage URL {url!r}; use one of: {URL_FORMS}")
    return "sqlite", "/" + url


def open_storage(url: str | None = None, options: Mapping[str, Any] | None = None) -> Storage:
    """Open the backend for ``url`` through the plugin that registered its scheme.

    ``url`` defaults to ``$ALECTIO_STORAGE`` or ``sqlite:///./alectio.db``.
    """
    from .config import DEFAULT_STORAGE, environment
    from .plugins import get_storage_factory

    url = url or environment().storage or DEFAULT_STORAGE
    scheme, _ = parse_url(url)
    factory = get_storage_factory(scheme)
    try:
        return factory(url, dict(options or {}))
    except TypeError as exc:
        if "abstract" not in str(exc):
            raise
        # A backend written for an older alectio: say what it lacks, in one line.
        raise StorageError(
            f"the {scheme!r} storage plugin does not implement this alectio's storage interface ({exc}); "
            "see docs/storage-plugins.md"
        ) from None
