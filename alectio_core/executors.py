"""Executors: where a loop's infer stage runs.

An executor (``register_executors``; ``executor:`` in ``config.yaml``)
takes a :class:`ScoreJob`, one ``infer`` over some records with this loop's
checkpoint, and stages its rows under the job's attempt; the loop's commit
publishes them as it always did. ``local`` (the default) calls the model in
this process; ``ray`` splits the records into shards run as Ray tasks
(``alectio_plugins.executor_ray``).

An executor is an object with ``score(job)``. Between chunks it calls
``job.progress(done, total)`` (which records it and raises to cancel: a
cancel or a lost lease) or at least ``job.check()``; it rejects rows the
way :class:`alectio_core.outputs.OutputWriter` does, whatever machine they
were computed on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from . import plugins
from .config import Config
from .outputs import OutputWriter
from .storage import OutputSink, Storage


@dataclass
class ScoreJob:
    """One ``infer`` call's worth of work: ``records`` (int64 indices) of
    the experiment's pool scored by ``model`` with ``ckpt_file``, stored as
    ``part`` (``"pool"`` or ``"labeled"``) of ``attempt``'s outputs."""

    storage: Storage
    experiment_id: str
    loop: int
    attempt: str
    part: str
    model: str
    records: np.ndarray
    pool_size: int
    ckpt_file: str
    checkpoint: dict | None  # what save_checkpoint returned: None when train wrote none
    config: dict
    chunk_rows: int
    mc_samples: int | None
    #: ``progress(done, total, shards=None)``: rows stored so far (and
    #: ``(finished, all)`` shards); records it, raises to stop the job.
    progress: Callable[..., None]
    #: Raises ``LoopCancelled`` or ``LeaseLost`` when the job must stop.
    check: Callable[[], None]

    @property
    def total(self) -> int:
        return int(self.records.size)

    def open_sink(self) -> OutputSink:
        """The part's sink (a backend written before parts is only ever asked for the pool, the old way)."""
        if self.part == "pool":
            return self.storage.open_output_sink(self.experiment_id, self.loop, self.attempt)
        return self.storage.open_output_sink(self.experiment_id, self.loop, self.attempt, part=self.part)

    def writer(self, sink: OutputSink, records: np.ndarray, on_chunk: Callable[[int], None] | None) -> OutputWriter:
        """The writer ``infer`` gets for ``records`` (all of the job's, or a shard's)."""
        return OutputWriter(
            sink,
            model=self.model,
            pool_size=self.pool_size,
            unlabeled=records,
            chunk_rows=self.chunk_rows,
            on_chunk=on_chunk,
            records="unlabeled" if self.part == "pool" else self.part,
            mc_samples=self.mc_samples,
        )


def open_executor(config: Config) -> Any:
    """The executor ``config.executor`` names, made from its settings."""
    section, source = config.executor, config.source or "config"
    return plugins.make_configured("executor", plugins.get_executors(), section.name, section.settings, source)
