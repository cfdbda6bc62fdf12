"""One attempt at one loop: the stages in order, and the bookkeeping.

train -> test -> metrics -> infer -> stop -> select (stop only for an
experiment with stopping criteria and a loop after this one; select only
for a self-driven experiment with records left, and none once a criterion
fired; a strategy that declares the labeled records has them scored at the
start of select, so a loop that stops does not pay for it, or in infer on
the last loop, so an experiment extended with more loops can pick). Between
stages, and once per stored chunk of infer outputs, the run checks for a
cancel and that this process still holds the loop's lease; it records each
stage and infer's progress in the loop's state. Infer runs where the
engine's executor puts it (:mod:`.executors`: this process, or shards on a
Ray cluster). Everything it stores goes under this
attempt until one commit publishes it; a failure is recorded in the
loop's state (with the message) and the attempt's staged results dropped.
:meth:`alectio_core.engine.Engine.run_loop` claims the loop and runs it.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import Counter
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from . import labels, plugins, stopping
from .clock import now
from .errors import AlectioError, LoopCancelled, NotFoundError, PluginError, StorageError, describe
from .hook_results import check_test, check_train
from .leases import Lease, LeaseLost
from .executors import ScoreJob
from .selections import check_storage_for, record_selection, strategy_inputs

if TYPE_CHECKING:
    from .engine import Engine

log = logging.getLogger(__name__)

PROGRESS_INTERVAL = 0.5  # seconds between progress writes during infer


class LoopRun:
    """One attempt at one loop: the stages, in order, and the bookkeeping."""

    def __init__(
        self,
        engine: Engine,
        experiment: dict,
        loop: int,
        cancel: threading.Event | None,
        on_stage: Callable[[str, dict], None] | None,
        lease: Lease,
    ):
        self.engine, self.storage = engine, engine.storage
        self.lease = lease
        self.experiment, self.loop = experiment, loop
        self.eid = experiment["id"]
        self.model = plugins.get_model(experiment["model"])
        self.config = experiment.get("config") or {}
        self.cancel, self.on_stage = cancel, on_stage
        self.attempt = uuid.uuid4().hex
        self.state: dict = {
            "experiment_id": self.eid,
            "loop": loop,
            "status": "running",
            "stage": None,
            "progress": None,
            "attempt": self.attempt,
            "owner": engine.leases.owner,
            "queued_at": self._queued_at(),
            "started_at": now(),
            "finished_at": None,
            "error": None,
            "stage_times": {},
        }
        self._last_progress = 0.0

    # -- bookkeeping -----------------------------------------------------

    def _queued_at(self) -> str | None:
        try:
            previous = self.storage.get_loop_state(self.eid, self.loop)
        except NotFoundError:
            return None
        return previous.get("queued_at") if previous.get("status") == "queued" else None

    def _save_state(self) -> None:
        self.lease.check()  # a process that lost the loop's lease writes nothing more
        self.storage.put_loop_state(self.eid, self.loop, self.state)

    def _stage(self, stage: str) -> None:
        self._check_cancel()
        self.state.update(stage=stage, progress=None)
        self._save_state()
        self._stage_started = time.perf_counter()
        plugins.notify("stage_started", experiment=self.experiment, loop=self.loop, stage=stage)
        if self.on_stage:
            self.on_stage(stage, self.state)

    def _stage_done(self) -> None:
        elapsed = round(time.perf_counter() - self._stage_started, 4)
        self.state["stage_times"][self.state["stage"]] = elapsed
        log.info("experiment %s loop %d stage %s took %.3fs", self.eid, self.loop, self.state["stage"], elapsed)

    def _check_cancel(self) -> None:
        self.lease.check()
        if self.cancel is not None and self.cancel.is_set():
            raise LoopCancelled(f"loop {self.loop} of experiment {self.eid!r} was cancelled")

    def _progress(self, done: int, total: int, shards: tuple[int, int] | None = None) -> None:
        """``done`` of ``total`` rows stored (and ``shards``: finished, all); raises to stop."""
        self._check_cancel()
        t = time.monotonic()
        if t - self._last_progress >= PROGRESS_INTERVAL or done == total:
            self._last_progress = t
            self.state["progress"] = {"done": done, "total": total}
            if shards is not None:
                self.state["progress"]["shards"] = {"done": shards[0], "total": shards[1]}
            self._save_state()
            if self.on_stage:
                self.on_stage(self.state["stage"], self.state)

    # -- the loop ---------------------------------------------------------

    def execute(self, select_next: bool) -> dict:
        self._save_state()
        log.info("experiment %s loop %d started (attempt %s)", self.eid, self.loop, self.attempt)
        plugins.notify("loop_started", experiment=self.experiment, loop=self.loop)
        try:
            labeled = self.engine.labeled(self.eid, self.loop)  # every record selected so far: none is scored again
            trained, given = labels.for_training(self.storage, self.experiment, self.loop, labeled)
            insights = self._train(trained, given)
            predictions, truth = self._test()
            metrics = self._metrics(predictions, truth, insights)
            selecting = select_next and self.engine.wants_selection(self.experiment, self.loop, labeled.size)
            needs = strategy_inputs(self.experiment) if select_next else frozenset()
            self._infer(labeled, needs, selecting)
            stop = self._check_stop(metrics, labeled)
            picked = self._select(labeled, needs) if selecting and stop is None else None
            self.state.update(
                status="done", stage=None, progress=None, finished_at=now(), metrics=metrics, labeled=int(trained.size)
            )
            if stop is not None:
                self.state["stop"] = stop
            if picked is not None:  # before the commit: a reader who sees "done" finds the next selection
                record_selection(self.storage, self.eid, self.loop + 1, *picked, ranked=True)
            self.engine.leases.commit(
                self.lease, lambda version: self.storage.commit_loop(self.eid, self.loop, self.attempt, self.state, lease_version=version)
            )
        except BaseException as exc:
            self._fail(exc)
            raise
        log.info("experiment %s loop %d done", self.eid, self.loop)
        if picked is not None:
            self.engine.selected(self.experiment, self.loop + 1)
        plugins.notify("loop_finished", experiment=self.experiment, loop=self.loop, status="done", error=None)
        return self.state

    def _fail(self, exc: BaseException) -> None:
        cancelled = isinstance(exc, (LoopCancelled, KeyboardInterrupt))  # Ctrl-C is the user cancelling
        message = "interrupted" if isinstance(exc, KeyboardInterrupt) else describe(exc)
        self.state.update(status="cancelled" if cancelled else "failed", error=message, finished_at=now())
        if isinstance(self.lease.lost, LeaseLost):
            pass  # another process holds the loop now: its state is that process's to write
        else:
            try:
                self._save_state()
            except Exception:  # the storage itself may be what failed, or the lease with it
                if self.lease.lost is None:
                    self.lease.lost = StorageError(f"storage failed: could not record the loop's {self.state['status']} state")
                self.engine.leases.settle(self.eid, self.loop, dict(self.state))
        try:
            self.storage.discard_attempt(self.eid, self.loop, self.attempt)
        except Exception:
            log.warning("could not remove the staged results of experiment %s loop %d attempt %s", self.eid, self.loop, self.attempt)
        # Raised to the caller, who reports it (the CLI's Error line, the job runner's log): not logged twice.
        log.info("experiment %s loop %d %s: %s", self.eid, self.loop, self.state["status"], message)
        plugins.notify("loop_finished", experiment=self.experiment, loop=self.loop, status=self.state["status"], error=message)

    def _train(self, labeled: np.ndarray, given: dict[int, Any] | None) -> dict:
        self._stage("train")
        resume_from = self.storage.fetch_checkpoint(self.eid, self.loop - 1) if self.loop > 0 else None
        ckpt_file = self.storage.checkpoint_path(self.eid, self.loop, self.attempt)
        self.ckpt_file = ckpt_file
        started = time.perf_counter()
        result = self.model.call(
            "train",
            labeled=labeled.tolist(),
            labels=given,
            resume_from=resume_from,
            ckpt_file=ckpt_file,
            loop=self.loop,
            config=self.config,
        )
        insights: dict[str, Any] = {"train_time": round(time.perf_counter() - started, 4), "num_labeled": int(labeled.size)}
        labels = check_train(self.model.name, result)
        if labels is None and given is not None and self.experiment.get("task", "classification") == "classification":
            labels = list(given.values())  # people's labels: the per-class counts without the plugin reporting them
        if labels is not None:
            insights["per_class_counts"] = {str(k): v for k, v in sorted(Counter(labels).items(), key=lambda kv: str(kv[0]))}
        self.checkpoint = checkpoint = self.storage.save_checkpoint(self.eid, self.loop, self.attempt)
        self.storage.put_result(self.eid, self.loop, self.attempt, "checkpoint", checkpoint)
        self.storage.put_result(self.eid, self.loop, self.attempt, "insights", insights)
        self.state["train_time"] = insights["train_time"]
        self.state["per_class_counts"] = insights.get("per_class_counts")
        self._stage_done()
        return insights

    def _test(self) -> tuple[list, list]:
        self._stage("test")
        result = self.model.call("test", ckpt_file=self.ckpt_file, loop=self.loop, config=self.config)
        name = self.model.name
        predictions, labels = check_test(name, result)
        try:
            self.storage.put_result(self.eid, self.loop, self.attempt, "predictions", predictions)
            self.storage.put_result(self.eid, self.loop, self.attempt, "ground_truth", labels)
        except (TypeError, ValueError) as exc:
            raise PluginError(name, "test", f"results are not JSON data: {exc}") from None
        self._stage_done()
        return predictions, labels

    def _metrics(self, predictions: list, labels: list, insights: dict) -> dict:
        self._stage("metrics")
        from .metrics import compute_metrics

        task = self.experiment.get("task", "classification")
        try:
            metrics = compute_metrics(task, predictions, labels, class_labels=self.experiment.get("labels"))
        except AlectioError:
            raise
        except Exception as exc:
            raise PluginError(self.model.name, "test", f"results do not fit task {task!r}: {type(exc).__name__}: {exc}") from exc
        if task == "classification" and "per_class_counts" in insights:
            metrics["num_queried_per_class"] = insights["per_class_counts"]
        self.storage.put_result(self.eid, self.loop, self.attempt, "metrics", metrics)
        self._stage_done()
        return metrics

    def _infer(self, labeled: np.ndarray, needs: frozenset[str], selecting: bool) -> None:
        self._stage("infer")
        mask = np.ones(int(self.experiment["pool_size"]), dtype=bool)
        mask[labeled] = False
        unlabeled = np.flatnonzero(mask)
        # The labeled records, for a strategy that declares them, are scored as select starts
        # (after the stop check: a loop that stops does not pay for them), or here on the
        # experiment's last loop, where nothing is checked, so that one extended with more
        # loops has them to pick from.
        last = (
            "labeled" in needs
            and not selecting
            and self.loop + 1 >= int(self.experiment.get("loops") or 0)
            and bool(unlabeled.size and labeled.size)
        )
        if selecting or last:
            check_storage_for(self.storage, needs)  # before infer runs: an older backend may not serve this strategy
        if unlabeled.size:
            self._score("pool", unlabeled)
        if last:
            self._score("labeled", labeled)
        self._stage_done()

    def _score(self, part: str, records: np.ndarray) -> None:
        """``infer`` on ``records`` with this loop's checkpoint, its rows
        stored as ``part`` of this attempt's outputs, where the engine's
        executor runs it (see :mod:`.executors`)."""
        self.engine.executor.score(
            ScoreJob(
                storage=self.storage,
                experiment_id=self.eid,
                loop=self.loop,
                attempt=self.attempt,
                part=part,
                model=self.model.name,
                records=records,
                pool_size=int(self.experiment["pool_size"]),
                ckpt_file=self.ckpt_file,
                checkpoint=self.checkpoint,
                config=self.config,
                chunk_rows=self.engine.chunk_rows,
                mc_samples=self.experiment.get("mc_samples"),
                progress=self._progress,
                check=self._check_cancel,
            )
        )

    def _check_stop(self, metrics: dict, labeled: np.ndarray) -> dict | None:
        """The experiment's stopping criteria on this loop: the first that
        fires (``{"criterion", "reason"}``), or None. Not on a last loop:
        nothing would come after it anyway."""
        last = self.loop + 1 >= int(self.experiment.get("loops") or 0) or labeled.size >= int(self.experiment["pool_size"])
        if not self.experiment.get("stop") or last:
            return None
        self._stage("stop")
        curve = [p for p in self.engine.learning_curve(self.eid) if p["loop"] < self.loop]
        curve.append({"loop": self.loop, "labeled": int(labeled.size), "metrics": metrics})
        fired = stopping.check(self.experiment, self.loop, curve, self.storage, attempt=self.attempt)
        self._stage_done()
        if fired is not None:
            log.info("experiment %s loop %d: stopped by %s: %s", self.eid, self.loop, fired["criterion"], fired["reason"])
        return fired

    def _select(self, labeled: np.ndarray, needs: frozenset[str]) -> tuple[np.ndarray, np.ndarray | None]:
        self._stage("select")
        if "labeled" in needs and labeled.size:
            self._score("labeled", labeled)  # with this loop's checkpoint (see _infer)
        picked = self.engine.pick_next(self.experiment, self.loop, attempt=self.attempt)
        self._stage_done()
        return picked
