"""The loop engine: experiments, selections and one loop, without a server.

For experiment E, loop k: ``labeled`` is the union of the selections of
loops 0..k; the model trains (resuming from loop k-1's checkpoint), is
tested, its metrics computed, and it scores every unlabeled record. The
results are committed together; then, for a self-driven experiment, the
query strategy picks loop k+1's selection.

The server, the CLI and platform mode all drive loops through
:class:`Engine`; a failed hook fails the loop (recorded, with the message),
never the caller's process.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import Counter
from datetime import datetime, timezone
from typing import Any, Callable, Mapping

import numpy as np

from . import plugins
from .config import Config
from .errors import AlectioError, ConflictError, LoopCancelled, NotFoundError, PluginError, StorageError, ValidationError
from .leases import DEFAULT_TTL, Lease, LeaseLost, Leases
from .outputs import DEFAULT_CHUNK_ROWS, OutputWriter, current_writer
from .storage import Storage, check_id, check_loop
from .strategies import DEFAULT_STRATEGY

log = logging.getLogger(__name__)

STATUSES = ("queued", "running", "done", "failed", "cancelled")
STAGES = ("train", "test", "metrics", "infer", "select")
PROGRESS_INTERVAL = 0.5  # seconds between progress writes during infer


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def as_indices(values: Any, what: str) -> np.ndarray:
    """A list of record indices as int64, or a ValidationError saying why not."""
    if isinstance(values, np.ndarray) and values.dtype.kind in "iu" and values.ndim == 1:
        return values.astype(np.int64, copy=False)
    if not isinstance(values, (list, tuple, np.ndarray)):
        raise ValidationError(f"{what} must be a list of integer indices, got {type(values).__name__}")
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise ValidationError(f"{what} must hold integer indices, got {v!r}")
    try:
        return np.asarray(values, dtype=np.int64).reshape(-1)
    except OverflowError:
        raise ValidationError(f"{what} holds an index too large for any pool") from None


class Engine:
    """Runs active-learning loops against one storage backend."""

    def __init__(self, storage: Storage, config: Config | None = None, *, chunk_rows: int = DEFAULT_CHUNK_ROWS):
        self.storage = storage
        self.config = config or Config()
        if self.config.models:
            self.config.check_models(plugins.model_names())
        self.chunk_rows = chunk_rows  # most infer rows per stored chunk (bytes are capped too)
        self.leases = Leases(storage, ttl=float((self.config.server or {}).get("lease_seconds") or DEFAULT_TTL))

    # ------------------------------------------------------------------
    # Experiments and selections
    # ------------------------------------------------------------------

    def create_experiment(
        self,
        model: str,
        *,
        strategy: str | None = DEFAULT_STRATEGY,
        batch_size: int = 100,
        initial: int = 100,
        loops: int = 5,
        seed: int = 0,
        config: Mapping[str, Any] | None = None,
        experiment_id: str | None = None,
    ) -> dict:
        """Create an experiment and store its pool (``assign_index``).

        ``config`` overrides the model's section of ``config.yaml`` for this
        experiment. ``strategy=None`` means selections come from outside
        (a labeller or the platform).
        """
        found = plugins.get_model(model)
        if strategy is not None:
            plugins.get_strategy(strategy)
        for name, value, low in (("batch_size", batch_size, 0), ("initial", initial, 1), ("loops", loops, 1), ("seed", seed, 0)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValidationError(f"{name} must be an integer >= {low}, got {value!r}")
        if config is not None and not isinstance(config, Mapping):
            raise ValidationError("config must be a mapping of the model's settings")
        section, overrides = self.config.model_config(model), dict(config or {})
        info = found.info({**section, **overrides})
        model_config = found.settings(info["settings"], section, self.config.source or "config", f"models.{model}.")
        model_config = found.settings(info["settings"], {**model_config, **overrides}, "experiment config")
        references = self._assign_index(found, model_config)
        if initial > len(references):
            raise ValidationError(f"initial ({initial}) is larger than the pool ({len(references)} records)")
        experiment = {
            "id": check_id(experiment_id) if experiment_id else uuid.uuid4().hex[:12],
            "model": model,
            "strategy": strategy,
            "batch_size": batch_size,
            "initial": initial,
            "loops": loops,
            "seed": seed,
            "config": model_config,
            "task": info["task"],
            "labels": info["labels"],
            "pool_size": len(references),
            "created": now(),
        }
        # One step: a refused create (the id exists) stores nothing.
        self.storage.create_experiment(experiment, references)
        log.info("experiment %s created: model %s, pool %d records", experiment["id"], model, len(references))
        return experiment

    def _assign_index(self, model: plugins.Model, config: dict) -> list[str]:
        return check_assign_index(model.name, model.call("assign_index", config=config))

    def get_experiment(self, experiment_id: str) -> dict:
        return self.storage.get_experiment(check_id(experiment_id))

    def summary(self, experiment: Mapping[str, Any]) -> dict:
        """The experiment with ``loops_done`` (loops finished) and
        ``latest_metrics`` (those of the last finished loop, or None)."""
        done = [s for s in self.storage.list_loop_states(experiment["id"]) if s["status"] == "done"]
        return dict(experiment, loops_done=len(done), latest_metrics=done[-1].get("metrics") if done else None)

    def active_loops(self, experiment_id: str) -> list[dict]:
        """The experiment's loops that a live process is running or about to
        run, or holds for other work (platform mode sending results again).
        A loop left ``running`` by a process whose lease expired is not one:
        it is reported interrupted instead of blocking for ever."""
        busy = []
        for state in self.loop_states(experiment_id):
            if state["status"] in ("queued", "running"):
                busy.append(state)
            elif self.leases.held(experiment_id, state["loop"]):
                busy.append(dict(state, status="busy"))  # e.g. platform mode sending its results again
        return busy

    def delete_experiment(self, experiment_id: str) -> int:
        """Delete the experiment and everything stored for it; return how
        many loops it had finished. ``ConflictError`` while a loop is queued
        or running."""
        experiment = self.get_experiment(experiment_id)
        busy = self.active_loops(experiment_id)
        if busy:
            raise ConflictError(
                f"experiment {experiment_id!r} has loop {busy[0]['loop']} {busy[0]['status']}; "
                "cancel it or let it finish before deleting the experiment"
            )
        done = self.summary(experiment)["loops_done"]
        self.storage.delete_experiment(experiment_id)
        log.info("experiment %s deleted", experiment_id)
        return done

    def pool_size(self, experiment_id: str) -> int:
        # Not cached: an experiment deleted and created again (from another
        # process too) may come back with another pool.
        return int(self.get_experiment(experiment_id)["pool_size"])

    def selections(self, experiment_id: str, upto: int) -> list[np.ndarray]:
        """Selections of loops 0..upto that exist."""
        found = []
        for k in range(upto + 1):
            try:
                found.append(self.storage.get_selection(experiment_id, k))
            except NotFoundError:
                if k == upto:
                    raise NotFoundError(f"experiment {experiment_id!r} has no selection for loop {k}") from None
        return found

    def labeled(self, experiment_id: str, loop: int) -> np.ndarray:
        """Sorted union of the selections of loops 0..loop."""
        chosen = self.selections(experiment_id, loop)
        return np.unique(np.concatenate(chosen)) if chosen else np.empty(0, np.int64)

    def record_selection(self, experiment_id: str, loop: int, indices: Any) -> np.ndarray:
        """Validate and store the records chosen for ``loop``.

        Rejects duplicates, negative or out-of-pool indices and records
        already selected in earlier loops, naming the offending index.
        """
        loop = check_loop(loop)
        pool = self.pool_size(experiment_id)
        picked = as_indices(indices, f"selection for loop {loop}")
        if picked.size == 0:
            raise ValidationError(f"selection for loop {loop} is empty")
        bad = (picked < 0) | (picked >= pool)
        if bad.any():
            raise ValidationError(f"selection for loop {loop}: index {int(picked[bad.argmax()])} is outside the pool 0..{pool - 1}")
        uniq, counts = np.unique(picked, return_counts=True)
        if (counts > 1).any():
            raise ValidationError(f"selection for loop {loop}: index {int(uniq[counts.argmax()])} appears more than once")
        try:
            state = self.storage.get_loop_state(experiment_id, loop)
        except NotFoundError:
            state = None
        if state and state["status"] in ("running", "done"):
            raise ConflictError(f"loop {loop} is {state['status']}; its selection can no longer change")
        if loop > 0:
            earlier = self.labeled(experiment_id, loop - 1) if self.has_selection(experiment_id, loop - 1) else np.empty(0, np.int64)
            again = np.intersect1d(picked, earlier)
            if again.size:
                raise ValidationError(f"selection for loop {loop}: index {int(again[0])} was already selected in an earlier loop")
        self.storage.put_selection(experiment_id, loop, np.sort(picked))
        return np.sort(picked)

    def has_selection(self, experiment_id: str, loop: int) -> bool:
        try:
            self.storage.get_selection(experiment_id, loop)
            return True
        except NotFoundError:
            return False

    def initial_selection(self, experiment_id: str) -> np.ndarray:
        """Loop 0's seeded-random ``initial`` records."""
        experiment = self.get_experiment(experiment_id)
        rng = np.random.default_rng(experiment["seed"])
        picked = rng.choice(experiment["pool_size"], size=experiment["initial"], replace=False)
        return self.record_selection(experiment_id, 0, picked)

    # ------------------------------------------------------------------
    # Loop state
    # ------------------------------------------------------------------

    def get_loop(self, experiment_id: str, loop: int) -> dict:
        """The loop's state; ``running`` or ``queued`` only while a live
        process holds its lease (else failed, "interrupted")."""
        state = self.storage.get_loop_state(check_id(experiment_id), check_loop(loop))
        return self._current(experiment_id, loop, state)

    def loop_states(self, experiment_id: str) -> list[dict]:
        """Every loop's state, as ``get_loop`` reports it."""
        return [self._current(experiment_id, s["loop"], s) for s in self.storage.list_loop_states(experiment_id)]

    def _current(self, experiment_id: str, loop: int, state: dict) -> dict:
        if state.get("status") in ("running", "queued"):
            return self.leases.observe(experiment_id, loop, state)
        return state

    def next_loop(self, experiment_id: str) -> int:
        """The first loop that is not done."""
        done = [s["loop"] for s in self.storage.list_loop_states(experiment_id) if s["status"] == "done"]
        return max(done) + 1 if done else 0

    def queue_loop(self, experiment_id: str, loop: int) -> dict:
        """Mark a loop queued (the server does this before a worker starts
        it, holding the loop's lease from ``claim_loop``)."""
        self._check_startable(experiment_id, loop)
        state = {
            "experiment_id": experiment_id,
            "loop": loop,
            "status": "queued",
            "stage": None,
            "queued_at": now(),
            "owner": self.leases.owner,
        }
        self.storage.put_loop_state(experiment_id, loop, state)
        return state

    def claim_loop(self, experiment_id: str, loop: int, on_stop: Callable[[], None] | None = None) -> Lease:
        """Take the loop's lease for this process (see :mod:`.leases`):
        ``LoopBusy`` (409) when another live process holds it. A ``running``
        or ``queued`` state that a process whose lease expired left behind is
        marked failed ("interrupted") first. Give it back with
        ``self.leases.release(lease)``."""
        lease = self.leases.acquire(experiment_id, loop, on_stop)
        if lease.users > 1:
            return lease  # this process holds it already (queued by the job runner)
        try:
            state = self.storage.get_loop_state(experiment_id, loop)
            ours = state["status"] == "queued" and state.get("owner") == self.leases.owner
            if state["status"] in ("running", "queued") and not ours:
                self.leases.mark_interrupted(experiment_id, loop, state)
        except NotFoundError:
            pass
        except BaseException:
            self.leases.release(lease)
            raise
        return lease

    def _check_startable(self, experiment_id: str, loop: int, queued_ok: bool = False) -> None:
        self.get_experiment(experiment_id)
        if loop > 0:
            try:
                previous = self.storage.get_loop_state(experiment_id, loop - 1)
            except NotFoundError:
                previous = {"status": "not started"}
            if previous["status"] != "done":
                raise ConflictError(f"loop {loop} needs loop {loop - 1} done first (it is {previous['status']})")
        try:
            state = self.storage.get_loop_state(experiment_id, loop)
        except NotFoundError:
            return
        busy = ("running", "done") if queued_ok else ("running", "queued", "done")
        if state["status"] in busy:
            raise ConflictError(f"loop {loop} of experiment {experiment_id!r} is already {state['status']}")

    def recover_interrupted(self, experiment_id: str | None = None) -> list[tuple[str, int]]:
        """Mark loops left ``running`` or ``queued`` by a process whose lease
        expired (or by a version without leases) as failed ("interrupted");
        loops a live process holds are left alone. Server start-up and
        ``alectio run --resume`` call it."""
        recovered = []
        experiments = [self.get_experiment(experiment_id)] if experiment_id else self.storage.list_experiments()
        for experiment in experiments:
            for state in self.storage.list_loop_states(experiment["id"]):
                if state["status"] in ("running", "queued"):
                    after = self.leases.observe(experiment["id"], state["loop"], state)
                    if after["status"] == "failed" and after.get("error") == "interrupted":
                        recovered.append((experiment["id"], state["loop"]))
        return recovered

    # ------------------------------------------------------------------
    # One loop
    # ------------------------------------------------------------------

    def run_loop(
        self,
        experiment_id: str,
        loop: int,
        *,
        select_next: bool = True,
        cancel: threading.Event | None = None,
        on_stage: Callable[[str, dict], None] | None = None,
    ) -> dict:
        """Run loop ``loop`` and return its final state.

        ``select_next``: let the experiment's strategy (if it has one) pick
        loop ``loop+1``'s selection when the loop is done. ``cancel`` is checked
        between stages and inside ``infer``. Raises the error that failed
        the loop (after recording it); earlier loops are never touched.
        """
        check_id(experiment_id)
        loop = check_loop(loop)
        if cancel is None:
            cancel = threading.Event()
        lease = self.claim_loop(experiment_id, loop, cancel.set)  # LoopBusy while another process runs it
        try:
            if lease.running:
                raise ConflictError(f"loop {loop} of experiment {experiment_id!r} is already running")
            self._check_startable(experiment_id, loop, queued_ok=True)
            experiment = self.get_experiment(experiment_id)
            if loop == 0 and not self.has_selection(experiment_id, 0):
                self.initial_selection(experiment_id)
            run = _LoopRun(self, experiment, loop, cancel, on_stage, lease)
            lease.running = True
            try:
                return run.execute(select_next)
            finally:
                lease.running = False
        finally:
            self.leases.release(lease)

    # ------------------------------------------------------------------
    # Choosing the next records (self-driven experiments)
    # ------------------------------------------------------------------

    @staticmethod
    def wants_selection(experiment: Mapping[str, Any], loop: int, labeled: int) -> bool:
        """Is there a loop after ``loop`` for the strategy to pick records for?"""
        return (
            experiment.get("strategy") is not None
            and int(experiment.get("batch_size") or 0) > 0
            and int(experiment["pool_size"]) > labeled
            and loop + 1 < int(experiment.get("loops") or 0)
        )

    def pick_next(self, experiment: Mapping[str, Any], loop: int, attempt: str | None = None) -> np.ndarray:
        """The strategy's choice for loop ``loop + 1`` from loop ``loop``'s
        outputs (the committed ones, or those of a running ``attempt``).
        Seeded by the experiment's seed and the loop, so it is repeatable."""
        from .strategies import select

        labels = experiment.get("labels")
        remaining = int(experiment["pool_size"]) - int(self.labeled(experiment["id"], loop).size)
        picked = select(
            experiment["strategy"],
            self.storage.iter_outputs(experiment["id"], loop, attempt=attempt),
            min(int(experiment["batch_size"]), remaining),
            seed=int(experiment.get("seed", 0)) + loop + 1,
            task=experiment.get("task", "classification"),
            num_classes=len(labels) if labels else None,
        )
        return np.asarray(picked, dtype=np.int64)

    # ------------------------------------------------------------------
    # Reading results
    # ------------------------------------------------------------------

    def results(self, experiment_id: str, loop: int) -> dict:
        """Every JSON result of a finished loop."""
        out = {}
        for name in ("insights", "predictions", "ground_truth", "metrics", "checkpoint"):
            try:
                out[name] = self.storage.get_result(experiment_id, loop, name)
            except NotFoundError:
                out[name] = None
        return out

    def outputs(self, experiment_id: str, loop: int) -> tuple[np.ndarray, np.ndarray]:
        """A finished loop's infer outputs gathered in memory (small pools only)."""
        chunks = list(self.storage.iter_outputs(experiment_id, loop))
        if not chunks:
            return np.empty(0, np.int64), np.empty((0, 0), np.float32)
        return np.concatenate([c[0] for c in chunks]), np.concatenate([c[1] for c in chunks])

    def learning_curve(self, experiment_id: str) -> list[dict]:
        curve = []
        for state in self.storage.list_loop_states(experiment_id):
            if state["status"] == "done":
                curve.append({"loop": state["loop"], "labeled": state.get("labeled"), "metrics": state.get("metrics")})
        return curve


class _LoopRun:
    """One attempt at one loop: the stages, in order, and the bookkeeping."""

    def __init__(self, engine: Engine, experiment: dict, loop: int, cancel, on_stage, lease: Lease):
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
        self._at_once = False  # infer returned its outputs instead of streaming them

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

    def _progress(self, done: int, total: int) -> None:
        self._check_cancel()
        if self._at_once and done < total:
            return  # rows the hook returned all at once: storing them is not infer progress
        t = time.monotonic()
        if t - self._last_progress >= PROGRESS_INTERVAL or done == total:
            self._last_progress = t
            self.state["progress"] = {"done": done, "total": total}
            self._save_state()
            if self.on_stage:
                self.on_stage(self.state["stage"], self.state)

    # -- the loop ---------------------------------------------------------

    def execute(self, select_next: bool) -> dict:
        self._save_state()
        log.info("experiment %s loop %d started (attempt %s)", self.eid, self.loop, self.attempt)
        plugins.notify("loop_started", experiment=self.experiment, loop=self.loop)
        try:
            labeled = self.engine.labeled(self.eid, self.loop)
            insights = self._train(labeled)
            predictions, truth = self._test()
            metrics = self._metrics(predictions, truth, insights)
            self._infer(labeled)
            picked = self._select(labeled) if select_next else None
            self.state.update(
                status="done", stage=None, progress=None, finished_at=now(), metrics=metrics, labeled=int(labeled.size)
            )
            if picked is not None:  # before the commit: a reader who sees "done" finds the next selection
                self.engine.record_selection(self.eid, self.loop + 1, picked)
            self.engine.leases.commit(
                self.lease, lambda version: self.storage.commit_loop(self.eid, self.loop, self.attempt, self.state, lease_version=version)
            )
        except BaseException as exc:
            self._fail(exc)
            raise
        log.info("experiment %s loop %d done", self.eid, self.loop)
        plugins.notify("loop_finished", experiment=self.experiment, loop=self.loop, status="done", error=None)
        return self.state

    def _fail(self, exc: BaseException) -> None:
        cancelled = isinstance(exc, (LoopCancelled, KeyboardInterrupt))  # Ctrl-C is the user cancelling
        if isinstance(exc, AlectioError):
            message = exc.message
        elif isinstance(exc, KeyboardInterrupt):
            message = "interrupted"
        else:
            message = f"{type(exc).__name__}: {exc}"
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

    def _train(self, labeled: np.ndarray) -> dict:
        self._stage("train")
        resume_from = self.storage.fetch_checkpoint(self.eid, self.loop - 1) if self.loop > 0 else None
        ckpt_file = self.storage.checkpoint_path(self.eid, self.loop, self.attempt)
        self.ckpt_file = ckpt_file
        started = time.perf_counter()
        result = self.model.call(
            "train", labeled=labeled.tolist(), resume_from=resume_from, ckpt_file=ckpt_file, loop=self.loop, config=self.config
        )
        insights: dict[str, Any] = {"train_time": round(time.perf_counter() - started, 4), "num_labeled": int(labeled.size)}
        counts = check_train_result(self.model.name, result)
        if counts is not None:
            insights["per_class_counts"] = counts
        checkpoint = self.storage.save_checkpoint(self.eid, self.loop, self.attempt)
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
        predictions, labels = check_test_result(name, result)
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

    def _infer(self, labeled: np.ndarray) -> None:
        self._stage("infer")
        pool = int(self.experiment["pool_size"])
        mask = np.ones(pool, dtype=bool)
        mask[labeled] = False
        unlabeled = np.flatnonzero(mask)
        if unlabeled.size == 0:
            self._stage_done()
            return
        sink = self.storage.open_output_sink(self.eid, self.loop, self.attempt)
        writer = OutputWriter(
            sink,
            model=self.model.name,
            pool_size=pool,
            unlabeled=unlabeled,
            chunk_rows=self.engine.chunk_rows,
            on_chunk=lambda done: self._progress(done, int(unlabeled.size)),
        )
        token = current_writer.set(writer)
        try:
            result = self.model.call(
                "infer", unlabeled=unlabeled.tolist(), ckpt_file=self.ckpt_file, loop=self.loop, config=self.config, writer=writer
            )
        finally:
            current_writer.reset(token)
        outputs = check_infer_result(self.model.name, result)
        if outputs is not None:
            self._at_once = True
            for index, output in outputs.items():
                writer.add(index, output)
        writer.close()
        self._stage_done()

    def _select(self, labeled: np.ndarray) -> np.ndarray | None:
        if not self.engine.wants_selection(self.experiment, self.loop, labeled.size):
            return None
        self._stage("select")
        picked = self.engine.pick_next(self.experiment, self.loop, attempt=self.attempt)
        self._stage_done()
        return picked


# ----------------------------------------------------------------------
# What the hooks return, checked (also by alectio_core.testing.ModelContract)
# ----------------------------------------------------------------------


def check_assign_index(model: str, result: Any) -> list[str]:
    """``assign_index``'s result as the pool's references, position = index:
    a list, or a mapping whose keys are exactly 0..n-1 (ints or strings of
    ints); else a PluginError naming the model and the offending key."""
    if isinstance(result, (list, tuple)):
        return [str(r) for r in result]
    if not isinstance(result, Mapping):
        raise PluginError(model, "assign_index", f"must return a mapping index -> reference, got {type(result).__name__}")
    references: list[str | None] = [None] * len(result)
    for key, ref in result.items():
        try:
            i = int(key)
        except (TypeError, ValueError):
            raise PluginError(model, "assign_index", f"key {key!r} is not an integer index") from None
        if not 0 <= i < len(result) or references[i] is not None:
            raise PluginError(model, "assign_index", f"keys must be exactly 0..{len(result) - 1}, found {key!r}", index=i)
        references[i] = str(ref)
    return references  # type: ignore[return-value]


def check_train_result(model: str, result: Any) -> dict | None:
    """``train``'s result: None, or a dict whose optional ``labels`` list
    gives the per-class counts returned here (None without labels)."""
    if result is None:
        return None
    if not isinstance(result, Mapping):
        raise PluginError(model, "train", f"must return None or a dict, got {type(result).__name__}")
    labels = result.get("labels")
    if labels is None:
        return None
    if not isinstance(labels, (list, tuple, np.ndarray)):
        raise PluginError(model, "train", "'labels' must be a list of class labels")
    return {str(k): v for k, v in sorted(Counter(_plain(labels)).items(), key=lambda kv: str(kv[0]))}


def check_test_result(model: str, result: Any) -> tuple[list, list]:
    """``test``'s result as two aligned lists (predictions, labels) of plain
    Python values; dicts keyed by record are aligned by key."""
    if not isinstance(result, Mapping):
        raise PluginError(model, "test", f"must return a dict with 'predictions' and 'labels', got {type(result).__name__}")
    missing = [k for k in ("predictions", "labels") if k not in result]
    if missing:
        raise PluginError(model, "test", f"result is missing key(s) {', '.join(missing)}")
    predictions, labels = result["predictions"], result["labels"]
    if isinstance(predictions, Mapping) or isinstance(labels, Mapping):
        if not (isinstance(predictions, Mapping) and isinstance(labels, Mapping)):
            raise PluginError(model, "test", "'predictions' and 'labels' must both be lists or both be dicts")
        extra = set(predictions) ^ set(labels)
        if extra:
            raise PluginError(model, "test", f"predictions and labels cover different records, e.g. {sorted(map(str, extra))[0]}")
        keys = sorted(predictions, key=lambda k: (str(type(k)), k))
        predictions, labels = [predictions[k] for k in keys], [labels[k] for k in keys]
    predictions, labels = _plain(predictions), _plain(labels)
    if not isinstance(predictions, list) or not isinstance(labels, list):
        raise PluginError(model, "test", "'predictions' and 'labels' must be lists (or dicts keyed by record)")
    if len(predictions) != len(labels):
        raise PluginError(model, "test", f"{len(predictions)} predictions but {len(labels)} labels")
    return predictions, labels


def check_infer_result(model: str, result: Any) -> Mapping | None:
    """``infer``'s result: None (rows went through the writer) or the
    ``outputs`` mapping index -> row, for the writer to check and store."""
    if result is None:
        return None
    if not isinstance(result, Mapping) or not isinstance(result.get("outputs"), Mapping):
        raise PluginError(model, "infer", "must return {'outputs': {index: output}} or None after using writer")
    return result["outputs"]


def _plain(value: Any) -> Any:
    """numpy arrays and scalars -> lists and Python numbers, recursively."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    return value
