"""The ``ray`` executor: a loop's infer stage split into shards, each a Ray task.

``executor: {name: ray, address: auto, shards: 4, num_cpus_per_shard: 1,
num_gpus_per_shard: 0, max_retries: 2}``. Ray itself is imported only when
this executor is configured (the extra ``alectio[ray]``).

What runs where:

* In the loop's process (the driver): the records are split into
  ``shards`` contiguous parts, one Ray task each (``num_cpus`` /
  ``num_gpus`` from the settings). The driver sums the shards' progress
  into the loop's state (a retried shard counts from its earlier try's
  mark, so the figure never goes down), checks for a cancel and its lease between chunks
  (a cancel, a lost lease or a failure cancels the running shards, with
  ``force``), and retries a shard whose worker died, up to
  ``max_retries`` times, before failing the loop naming the shard.
* In a worker: the model is found by its entry-point name (so its package
  must be installed on every node), the checkpoint is the path ``train``
  wrote when the worker can read it (same machine, shared filesystem), or
  else the attempt's copy downloaded from the storage; ``infer`` gets an
  :class:`~alectio_core.outputs.OutputWriter` over the shard's records,
  which checks its rows as in a local run.
* Rows: a storage other machines can write (S3, ``remote_writable``) gets
  each shard try's chunks straight from the worker, under a name of that
  try; the driver then joins the shards that finished, in order, so a
  retried shard's partial chunks are never counted. Otherwise (SQLite) the
  worker yields its chunks through Ray's object store (a streaming
  generator, a few chunks in flight) and the driver stores them: each
  finished shard's, in shard order, from a spool on local disk (so memory
  stays at a few chunks, and a shard whose worker died leaves nothing).

Either way the stored outputs are the local executor's rows in the same
order (shards are contiguous and joined in order): for a deterministic
model they are byte-identical, and so is the selection.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import queue
import shutil
import sys
import tempfile
import threading
import uuid
from dataclasses import dataclass, field
from typing import Any, Iterator

import numpy as np

from alectio_core import plugins
from alectio_core.config import parse_section
from alectio_core.errors import ConfigError, ShardError, StorageError, UnknownModelError, describe
from alectio_core.executors import ScoreJob
from alectio_core.hookspecs import hookimpl
from alectio_core.outputs import call_infer
from alectio_core.storage import OutputSink, open_storage, takes

log = logging.getLogger(__name__)

#: Items a shard may have produced that the driver has not taken yet: the
#: worker pauses beyond that (Ray's backpressure), so memory stays bounded.
BACKLOG = 4
#: Seconds between the driver's checks for a cancel and its lease while
#: shards run.
WAIT_SECONDS = 0.5


def _at_least(low: float):
    return {"rule": (lambda v: v >= low, f"must be >= {low:g}")}


@dataclass
class RaySettings:
    """``executor:`` keys of the ray executor."""

    address: str | None = None  # None: start (or join) a local Ray; "auto": the running cluster; or ray://host:port
    shards: int = field(default=1, metadata=_at_least(1))
    num_cpus_per_shard: float = field(default=1.0, metadata=_at_least(0))
    num_gpus_per_shard: float = field(default=0.0, metadata=_at_least(0))
    max_retries: int = field(default=2, metadata=_at_least(0))  # retries of a shard whose worker died


def _ray_installed() -> bool:
    try:
        return importlib.util.find_spec("ray") is not None
    except (ImportError, ValueError):  # ValueError: a None in sys.modules, as a failed import leaves
        return False


# ----------------------------------------------------------------------
# In the worker
# ----------------------------------------------------------------------


class _QueueSink(OutputSink):
    """Hands each chunk to the generator that yields it to the driver."""

    def __init__(self, out: queue.Queue):
        self.out = out

    def write(self, indices: np.ndarray, values: np.ndarray, embeddings: np.ndarray | None = None) -> None:
        # Copies: the writer reuses its buffers once this returns.
        self.out.put(("rows", indices.copy(), values.copy(), None if embeddings is None else embeddings.copy()))


def _find_model(name: str) -> Any:
    try:
        return plugins.get_model(name)
    except UnknownModelError:
        import socket

        raise UnknownModelError(
            f"model {name!r} is not installed on Ray node {socket.gethostname()} (Python {sys.executable}): "
            "install the model's package on every Ray node"
        ) from None


def _checkpoint(spec: dict) -> str:
    """The path ``infer`` gets: the one ``train`` wrote when this worker can
    read it, else the attempt's checkpoint downloaded from the storage."""
    job = spec["job"]
    path = job["ckpt_file"]
    if job["checkpoint"] is None or os.path.exists(path):
        return path
    storage = open_storage(spec["storage_url"], spec["storage_options"])
    try:
        if not takes(storage.fetch_checkpoint, "attempt"):
            raise StorageError(
                f"the checkpoint {path} is not on this Ray node, and {storage.url} cannot send it: "
                "share its folder between the nodes, or keep the storage on S3"
            )
        fetch: Any = storage.fetch_checkpoint  # ``attempt``: an argument only some backends take (checked above)
        local = fetch(job["experiment_id"], job["loop"], attempt=job["attempt"])
    finally:
        storage.close()
    if local is None:
        raise StorageError(f"the checkpoint of attempt {job['attempt']} is not in {spec['storage_url']}")
    return local


def _score_shard(spec: dict, out: queue.Queue) -> None:
    """One shard's ``infer``; every outcome ends in ``out`` as ``done`` or ``error``."""
    storage = None
    try:
        model = _find_model(spec["job"]["model"])
        ckpt_file = _checkpoint(spec)
        job = ScoreJob(**{**spec["job"], "storage": None, "progress": None, "check": None})
        if spec["shard"] is not None:  # the worker writes its own chunks
            storage = open_storage(spec["storage_url"], spec["storage_options"])
            sink = storage.open_shard_sink(job.experiment_id, job.loop, job.attempt, job.part, spec["shard"])
            writer = job.writer(sink, job.records, lambda done: out.put(("progress", done)))
        else:
            writer = job.writer(_QueueSink(out), job.records, None)
        returned = call_infer(model, writer, unlabeled=job.records.tolist(), ckpt_file=ckpt_file, loop=job.loop, config=job.config)
        if returned is not None:
            writer.add_returned(*returned)
        writer.close()
        out.put(("done", {"rows": writer.written, "width": writer.width, "embedding_width": writer.embedding_width}))
    except BaseException as exc:  # reported to the driver, which fails the loop with it
        out.put(("error", describe(exc)))
    finally:
        if storage is not None:
            storage.close()


def run_shard(spec: dict) -> Iterator[tuple]:
    """The Ray task (a streaming generator): ``infer`` runs in a thread of
    its own, since the model calls the writer and a generator can only
    yield from here; the queue between them holds two items."""
    out: queue.Queue = queue.Queue(maxsize=2)
    threading.Thread(target=_score_shard, args=(spec, out), daemon=True, name="alectio-shard").start()
    while True:
        item = out.get()
        yield item
        if item[0] in ("done", "error"):
            return


# ----------------------------------------------------------------------
# In the driver
# ----------------------------------------------------------------------


@dataclass
class _Shard:
    number: int
    records: np.ndarray
    tries: int = 0
    name: str = ""
    written: int = 0  # by this try
    shown: int = 0  # the most any try reported: what progress counts, so a retry does not set the bar back
    result: dict | None = None
    spool: list[str] = field(default_factory=list)  # chunk files, when the driver stores the rows

    def describe(self, of: int, part: str) -> str:
        first, last = int(self.records[0]), int(self.records[-1])
        what = "unlabeled" if part == "pool" else part
        return f"shard {self.number + 1} of {of} ({self.records.size} {what} records, indices {first}..{last})"


class RayExecutor:
    def __init__(self, settings: RaySettings):
        self.settings = settings
        self._task: Any = None
        self._lock = threading.Lock()  # a server runs several loops at once: one of them starts Ray

    def _ray(self) -> Any:
        import ray

        with self._lock:
            if not ray.is_initialized():
                ray.init(address=self.settings.address, include_dashboard=False, logging_level=logging.WARNING)
            if self._task is None:
                self._task = ray.remote(run_shard)
        return ray

    def _check_resources(self, ray: Any) -> None:
        """Say so when no node could run a shard now: Ray keeps such a task
        waiting (an autoscaler may add the node), and so does the loop."""
        have = ray.cluster_resources()
        for key, asked in (("CPU", self.settings.num_cpus_per_shard), ("GPU", self.settings.num_gpus_per_shard)):
            if asked > have.get(key, 0):
                log.warning(
                    "each shard asks for %g %s (executor.num_%ss_per_shard) and the Ray cluster has %g now: "
                    "the shards wait until a node with them joins (cancel the loop to stop waiting)",
                    asked, key, key.lower(), have.get(key, 0),
                )

    def score(self, job: ScoreJob) -> None:
        ray = self._ray()
        self._check_resources(ray)
        count = min(self.settings.shards, job.total)
        bounds = np.linspace(0, job.total, count + 1).astype(int)
        shards = [_Shard(n, job.records[bounds[n] : bounds[n + 1]]) for n in range(count)]
        direct = bool(getattr(job.storage, "remote_writable", False))
        # What a worker needs: the job but for what only the driver has
        # (the storage object, the callbacks), and how to open the storage.
        spec: dict[str, Any] = {
            "storage_url": job.storage.url,
            "storage_options": dict(getattr(job.storage, "options", {}) or {}),
            "job": {
                name: getattr(job, name)
                for name in ("experiment_id", "loop", "attempt", "part", "model", "pool_size", "ckpt_file", "checkpoint", "config", "chunk_rows", "mc_samples")
            },
        }
        running: dict[Any, _Shard] = {}
        spool = tempfile.mkdtemp(prefix="alectio-shards-") if not direct else None
        sink = None if direct else job.open_sink()
        stored = 0  # shards (from the first) whose rows the driver stored

        def submit(shard: _Shard) -> None:
            shard.tries += 1
            shard.name, shard.written, shard.spool = f"s{shard.number:05d}-t{shard.tries}-{uuid.uuid4().hex[:8]}", 0, []
            task = self._task.options(
                num_returns="streaming",
                num_cpus=self.settings.num_cpus_per_shard,
                num_gpus=self.settings.num_gpus_per_shard,
                max_retries=0,  # retried here, where a try's partial rows can be set aside
                _generator_backpressure_num_objects=BACKLOG,
            )
            shard_spec = {**spec, "shard": shard.name if direct else None, "job": {**spec["job"], "records": shard.records}}
            running[task.remote(shard_spec)] = shard

        def failed(shard: _Shard, message: str) -> ShardError:
            return ShardError(f"infer {shard.describe(count, job.part)} failed: {message}")

        try:
            for shard in shards:
                submit(shard)
            while running:
                job.check()
                ready, _ = ray.wait(list(running), num_returns=1, timeout=WAIT_SECONDS)
                for generator in ready:
                    shard = running[generator]
                    try:
                        item = ray.get(next(generator))
                    except StopIteration:
                        item = ("error", "the task ended without a result")
                    except ray.exceptions.RayTaskError as exc:  # raised outside the model's call: not a crash
                        raise failed(shard, describe(exc.cause or exc)) from None
                    except ray.exceptions.RayError as exc:  # the worker (or its node) died
                        del running[generator]
                        self._drop(shard)
                        if shard.tries > self.settings.max_retries:
                            last = (str(exc).strip().splitlines() or [""])[0]  # Ray's messages run to many lines
                            raise failed(shard, f"its Ray worker died {shard.tries} times; last: {type(exc).__name__}: {last}") from None
                        log.warning("%s: its Ray worker died (%s); retrying", shard.describe(count, job.part), type(exc).__name__)
                        submit(shard)
                        continue
                    kind = item[0]
                    if kind == "rows":
                        self._spool(shard, spool, item[1:])
                        shard.written += int(item[1].shape[0])
                    elif kind == "progress":
                        shard.written = item[1]
                    elif kind == "error":
                        raise failed(shard, item[1])
                    elif kind == "done":
                        del running[generator]
                        shard.result = item[1]
                        shard.written = shard.result["rows"]
                        self._check_agrees(shard, shards, count, job.part)
                        while sink is not None and stored < count and shards[stored].result is not None:
                            self._store(shards[stored], sink)
                            stored += 1
                for each in shards:
                    each.shown = max(each.shown, each.written)
                finished = sum(s.result is not None for s in shards)
                job.progress(sum(s.shown for s in shards), job.total, shards=(finished, count))
            if sink is not None:
                sink.close()
            else:
                job.storage.join_shards(job.experiment_id, job.loop, job.attempt, job.part, [s.name for s in shards])
        finally:
            for generator in running:  # a cancel, a lost lease, a failed shard: the others stop too
                ray.cancel(generator, force=True)
            if spool is not None:
                shutil.rmtree(spool, ignore_errors=True)

    @staticmethod
    def _check_agrees(shard: _Shard, shards: list[_Shard], count: int, part: str) -> None:
        """Every shard's rows (and embeddings) have one width: one writer would have refused otherwise."""
        for other in shards:
            if other is shard or other.result is None:
                continue
            for key, what in (("width", "output rows"), ("embedding_width", "embeddings")):
                if shard.result[key] != other.result[key]:  # type: ignore[index]
                    raise ShardError(
                        f"infer {shard.describe(count, part)} wrote {what} of width {shard.result[key]}, "  # type: ignore[index]
                        f"but {other.describe(count, part)} wrote width {other.result[key]}"
                    )

    @staticmethod
    def _spool(shard: _Shard, folder: str | None, arrays: tuple) -> None:
        """A chunk the driver stores once its shard finished, on local disk meanwhile."""
        assert folder is not None
        base = os.path.join(folder, f"{shard.name}-{len(shard.spool):06d}")
        for suffix, array in zip((".idx.npy", ".val.npy", ".emb.npy"), arrays):
            if array is not None:
                np.save(base + suffix, array, allow_pickle=False)
        shard.spool.append(base)

    @staticmethod
    def _store(shard: _Shard, sink: OutputSink) -> None:
        embeds = takes(sink.write, "embeddings")
        for base in shard.spool:
            indices = np.load(base + ".idx.npy", allow_pickle=False)
            values = np.load(base + ".val.npy", allow_pickle=False)
            embeddings = np.load(base + ".emb.npy", allow_pickle=False) if os.path.exists(base + ".emb.npy") else None
            if embeddings is not None and embeds:
                sink.write(indices, values, embeddings=embeddings)
            else:
                sink.write(indices, values)
            for suffix in (".idx.npy", ".val.npy", ".emb.npy"):
                if os.path.exists(base + suffix):
                    os.remove(base + suffix)
        shard.spool = []

    @staticmethod
    def _drop(shard: _Shard) -> None:
        for base in shard.spool:
            for suffix in (".idx.npy", ".val.npy", ".emb.npy"):
                if os.path.exists(base + suffix):
                    os.remove(base + suffix)
        shard.spool = []


def factory(settings: dict[str, Any], source: str) -> RayExecutor:
    parsed = parse_section(RaySettings, settings, "executor.", source)
    if not _ray_installed():
        raise ConfigError(f"{source}: key 'executor.name': the ray executor needs Ray, which is not installed: pip install 'alectio[ray]'")
    return RayExecutor(parsed)


@hookimpl(trylast=True)  # a plugin registering "ray" itself is called first, and wins
def register_executors(register):
    register("ray", factory)
