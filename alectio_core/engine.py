"""The loop engine: experiments, selections and loops, without a server.

For experiment E, loop k: ``labeled`` is the union of the selections of
loops 0..k; the model trains (resuming from loop k-1's checkpoint), is
tested, its metrics computed, and it scores every unlabeled record. The
results are committed together; then, for a self-driven experiment, the
query strategy picks loop k+1's selection.

The server, the CLI and platform mode all drive loops through
:class:`Engine`; a failed hook fails the loop (recorded, with the message),
never the caller's process. Here: the experiment-level operations and the
loops' lifecycle (queue, claim, recover, run); their rules are in
:mod:`.lifecycle`, :mod:`.selections` and :mod:`.labels` (labels from
people), one loop's stages in
:mod:`.loop_run`, the checks on what hooks return in :mod:`.hook_results`.
"""

from __future__ import annotations

import logging
import threading
import uuid
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from . import labels as label_rules
from . import lifecycle, plugins
from . import stopping as stopping_rules
from . import selections as chosen
from .clock import now
from .config import DEFAULT_BATCH_SIZE, DEFAULT_INITIAL, DEFAULT_LOOPS, DEFAULT_SEED, DEFAULT_STRATEGY, Config
from .errors import ConflictError, NotFoundError, ValidationError
from .hook_results import check_assign_index
from .leases import Lease, Leases
from .metrics import headline
from .loop_run import LoopRun
from .outputs import DEFAULT_CHUNK_ROWS
from .storage import Storage, check_id, check_loop

log = logging.getLogger(__name__)

STATUSES = ("queued", "running", "done", "failed", "cancelled")
STAGES = ("train", "test", "metrics", "infer", "stop", "select")


class Engine:
    """Runs active-learning loops against one storage backend."""

    def __init__(self, storage: Storage, config: Config | None = None, *, chunk_rows: int = DEFAULT_CHUNK_ROWS):
        self.storage = storage
        self.config = config or Config()
        if self.config.models:
            self.config.check_models(plugins.model_names())
        if self.config.stopping:
            stopping_rules.check_configured(self.config.stopping, self.config.source or "config")
        self.chunk_rows = chunk_rows  # most infer rows per stored chunk (bytes are capped too)
        self.leases = Leases(storage, ttl=self.config.server.lease_seconds)
        #: Called as ``listener(experiment, loop)`` after a selection is stored
        #: for ``loop`` (a labeller sends it out); an exception is logged, never raised.
        self.on_selection: list[Callable[[dict, int], None]] = []

    # ------------------------------------------------------------------
    # Experiments
    # ------------------------------------------------------------------

    def create_experiment(
        self,
        model: str,
        *,
        strategy: str | None = DEFAULT_STRATEGY,
        batch_size: int = DEFAULT_BATCH_SIZE,
        initial: int = DEFAULT_INITIAL,
        loops: int = DEFAULT_LOOPS,
        seed: int = DEFAULT_SEED,
        config: Mapping[str, Any] | None = None,
        experiment_id: str | None = None,
        stop: Sequence[str] | None = None,
        stopping: Mapping[str, Any] | None = None,
        labels: str = "plugin",
    ) -> dict:
        """Create an experiment and store its pool (``assign_index``).

        ``config`` overrides the model's section of ``config.yaml`` for this
        experiment. ``strategy=None`` means selections come from outside
        (a labeller or the platform). ``stop`` names the stopping criteria
        to apply and ``stopping`` their settings, over ``config.yaml``'s
        ``stopping:`` section (see :mod:`.stopping`). ``labels``: where
        the labels come from, ``"plugin"`` (the model knows them) or
        ``"alectio"`` (people send them, see :mod:`.labels`; loop 0's
        selection is then stored at once, to be labelled); stored as
        ``labels_mode``.
        """
        labels_mode = label_rules.check_mode(labels)
        if labels_mode == "alectio":
            label_rules.check_storage(self.storage)
        found = plugins.get_model(model)
        if labels_mode == "alectio" and not found.takes("train", "labels"):
            raise ValidationError(
                f"model {model!r} cannot learn labels from people: its train hook takes no 'labels' argument; "
                "add one (train(labeled, labels, ...)) or create the experiment with labels 'plugin'",
                field="labels",
            )
        if strategy is not None:
            plugins.get_strategy(strategy)
        for name, value, low in (("batch_size", batch_size, 0), ("initial", initial, 1), ("loops", loops, 1), ("seed", seed, 0)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValidationError(f"{name} must be an integer >= {low}, got {value!r}", field=name)
        if config is not None and not isinstance(config, Mapping):
            raise ValidationError("config must be a mapping of the model's settings", field="config")
        section, overrides = self.config.model_config(model), dict(config or {})
        info = found.info({**section, **overrides})
        model_config = found.settings(info["settings"], section, self.config.source or "config", f"models.{model}.")
        model_config = found.settings(info["settings"], {**model_config, **overrides}, "experiment config")
        stop_names, stop_settings = stopping_rules.resolve(stop, info["task"], self.config.stopping, stopping, self.config.source or "config")
        references = check_assign_index(model, found.call("assign_index", config=model_config))
        if initial > len(references):
            raise ValidationError(f"initial ({initial}) is larger than the pool ({len(references)} records)", field="initial")
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
            "mc_samples": info["mc_samples"],
            "pool_size": len(references),
            "created": now(),
            "stop": stop_names,
            "stopping": stop_settings,
            "labels_mode": labels_mode,
        }
        # One step: a refused create (the id exists) stores nothing.
        self.storage.create_experiment(experiment, references)
        log.info("experiment %s created: model %s, pool %d records", experiment["id"], model, len(references))
        if label_rules.from_people(experiment):
            self.initial_selection(experiment["id"])
            self.selected(experiment, 0)
        return experiment

    def get_experiment(self, experiment_id: str) -> dict:
        """The stored experiment; one stored before labels modes is ``labels_mode: "plugin"``."""
        experiment = self.storage.get_experiment(check_id(experiment_id))
        experiment.setdefault("labels_mode", label_rules.mode(experiment))
        return experiment

    def summary(self, experiment: Mapping[str, Any]) -> dict:
        """The experiment with its ``labels_mode``, ``loops_done`` (loops
        finished) and ``latest_metrics`` (those of the last finished loop, or None)."""
        done = [s for s in self.storage.list_loop_states(experiment["id"]) if s["status"] == "done"]
        return dict(
            experiment,
            labels_mode=label_rules.mode(experiment),
            loops_done=len(done),
            latest_metrics=done[-1].get("metrics") if done else None,
        )

    def list_with_summaries(self) -> list[dict]:
        """Every experiment, oldest first, with its ``summary`` (see
        :meth:`list_summary`): two storage reads however many there are, so
        the experiments list stays fast with hundreds."""
        states = self.storage.list_all_loop_states()
        return [dict(e, summary=self.list_summary(e, states.get(e["id"], []))) for e in self.storage.list_experiments()]

    def list_summary(self, experiment: Mapping[str, Any], states: list[dict]) -> dict:
        """``status``: the latest loop's when it is queued, running, failed
        or cancelled; ``done`` once every loop is (or a stopping criterion
        ended it); else ``idle`` (no loop yet, or waiting for the next one).
        ``loops_done``, ``labeled`` (labels the last finished loop trained
        on) and ``metric`` (its headline metric, :func:`~.metrics.headline`)."""
        done = [s for s in states if s["status"] == "done"]
        status = "idle"
        if states:
            latest = lifecycle.current(self.leases, experiment["id"], states[-1]["loop"], states[-1])
            if latest["status"] != "done":
                status = latest["status"]
            elif len(done) >= int(experiment["loops"]) or done[-1].get("stop"):
                status = "done"
        return {
            "status": status,
            "loops_done": len(done),
            "labeled": int(done[-1].get("labeled") or 0) if done else 0,
            "metric": headline(done[-1].get("metrics")) if done else None,
        }

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

    # ------------------------------------------------------------------
    # Selections: which records each loop labels (the rules: .selections)
    # ------------------------------------------------------------------

    def selections(self, experiment_id: str, upto: int) -> list[np.ndarray]:
        """Selections of loops 0..upto that exist."""
        return chosen.selections(self.storage, experiment_id, upto)

    def labeled(self, experiment_id: str, loop: int) -> np.ndarray:
        """Sorted union of the selections of loops 0..loop."""
        return chosen.labeled(self.storage, experiment_id, loop)

    def record_selection(
        self, experiment_id: str, loop: int, indices: Any, scores: Any = None, *, ranked: bool = False
    ) -> np.ndarray:
        """Validate and store the records chosen for ``loop`` (see
        :func:`.selections.record_selection`), and tell ``on_selection``."""
        picked = chosen.record_selection(self.storage, experiment_id, loop, indices, scores, ranked=ranked)
        self.selected(self.get_experiment(experiment_id), loop)
        return picked

    def selected(self, experiment: dict, loop: int) -> None:
        """Call the ``on_selection`` listeners: loop ``loop``'s selection is stored."""
        for listener in list(self.on_selection):
            try:
                listener(experiment, loop)
            except Exception:
                log.exception("experiment %s loop %d: a selection listener (%r) failed", experiment["id"], loop, listener)

    def has_selection(self, experiment_id: str, loop: int) -> bool:
        return chosen.has_selection(self.storage, experiment_id, loop)

    def initial_selection(self, experiment_id: str) -> np.ndarray:
        """Loop 0's seeded-random ``initial`` records."""
        return chosen.initial_selection(self.storage, experiment_id)

    wants_selection = staticmethod(chosen.wants_selection)

    def pick_next(
        self, experiment: Mapping[str, Any], loop: int, attempt: str | None = None
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """The strategy's choice for loop ``loop + 1``, best first, and its
        scores (see :func:`.selections.pick_next`)."""
        return chosen.pick_next(self.storage, experiment, loop, attempt)

    # ------------------------------------------------------------------
    # Labels from people (labels mode "alectio"; the rules: .labels)
    # ------------------------------------------------------------------

    def selection(self, experiment_id: str, loop: int) -> list[dict]:
        """Loop ``loop``'s selection, best first: ``{"index", "reference",
        "score", "prediction", "label", "skipped"}`` per record (see
        :func:`.labels.selection_rows`). ``NotFoundError`` when there is none."""
        return label_rules.selection_rows(self.storage, self.get_experiment(experiment_id), check_loop(loop))

    def add_labels(
        self, experiment_id: str, labels: Mapping[Any, Any], skip: Sequence[Any] = (), *, source: str, by: str | None = None
    ) -> dict:
        """Store people's labels (index -> label) and skips, every row
        checked first: all of them, or (``ValidationError`` naming the
        index) none. Returns ``{"stored", "skipped", "loop", "missing"}``:
        how many labels and skips were stored, the next loop to run and how
        many of its selected records still need a label or a skip."""
        experiment = self.get_experiment(experiment_id)
        events = label_rules.label_events(self.storage, experiment, labels, skip, source=source, by=by)
        if events:
            self.storage.add_labels(experiment_id, events)
            log.info("experiment %s: %d labels and skips stored from %s", experiment_id, len(events), source)
        loop = self.next_loop(experiment_id)
        try:
            left = int(self.missing_labels(experiment_id, loop).size)
        except NotFoundError:
            left = 0
        skipped = sum(1 for e in events if e["skip"])
        return {"stored": len(events) - skipped, "skipped": skipped, "loop": loop, "missing": left}

    def labels(self, experiment_id: str) -> dict[int, dict]:
        """The latest label event of each labelled or skipped record, by index."""
        return label_rules.latest(self.storage, self.get_experiment(experiment_id)["id"])

    def label_history(self, experiment_id: str) -> list[dict]:
        """Every label event, oldest first."""
        return self.storage.list_labels(self.get_experiment(experiment_id)["id"])

    def missing_labels(self, experiment_id: str, loop: int) -> np.ndarray:
        """Records selected for ``loop`` with neither a label nor a skip."""
        return label_rules.missing(self.storage, check_id(experiment_id), check_loop(loop))

    # ------------------------------------------------------------------
    # Loop state (the rules: .lifecycle)
    # ------------------------------------------------------------------

    def get_loop(self, experiment_id: str, loop: int) -> dict:
        """The loop's state; ``running`` or ``queued`` only while a live
        process holds its lease (else failed, "interrupted")."""
        return lifecycle.get_loop(self.storage, self.leases, experiment_id, loop)

    def loop_states(self, experiment_id: str) -> list[dict]:
        """Every loop's state, as ``get_loop`` reports it."""
        return lifecycle.loop_states(self.storage, self.leases, experiment_id)

    def active_loops(self, experiment_id: str) -> list[dict]:
        """Loops a live process is running, about to run, or holds for other work."""
        return lifecycle.active_loops(self.storage, self.leases, experiment_id)

    def next_loop(self, experiment_id: str) -> int:
        """The first loop that is not done."""
        return lifecycle.next_loop(self.storage, experiment_id)

    def queue_loop(self, experiment_id: str, loop: int) -> dict:
        """Mark a loop queued (the caller holds its lease from ``claim_loop``)."""
        return lifecycle.queue_loop(self.storage, self.leases, experiment_id, loop)

    def claim_loop(self, experiment_id: str, loop: int, on_stop: Callable[[], None] | None = None) -> Lease:
        """Take the loop's lease for this process (``LoopBusy`` when another
        live process holds it); give it back with ``self.leases.release(lease)``."""
        return lifecycle.claim_loop(self.storage, self.leases, experiment_id, loop, on_stop)

    def recover_interrupted(self, experiment_id: str | None = None) -> list[tuple[str, int]]:
        """Mark loops a dead process left ``running`` or ``queued`` failed
        ("interrupted"); server start-up and ``alectio run --resume`` call it."""
        return lifecycle.recover_interrupted(self.storage, self.leases, experiment_id)

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
            lifecycle.check_startable(self.storage, experiment_id, loop, queued_ok=True)
            experiment = self.get_experiment(experiment_id)
            if loop == 0 and not self.has_selection(experiment_id, 0):
                self.initial_selection(experiment_id)
            run = LoopRun(self, experiment, loop, cancel, on_stage, lease)
            lease.running = True
            try:
                return run.execute(select_next)
            finally:
                lease.running = False
        finally:
            self.leases.release(lease)

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
        """A point per finished loop; the loop where a stopping criterion
        fired also carries its ``stop``."""
        curve = []
        for state in self.storage.list_loop_states(experiment_id):
            if state["status"] == "done":
                point = {"loop": state["loop"], "labeled": state.get("labeled"), "metrics": state.get("metrics")}
                if state.get("stop"):
                    point["stop"] = state["stop"]
                curve.append(point)
        return curve

    def stopped(self, experiment_id: str) -> dict | None:
        """``{"loop", "criterion", "reason"}`` when a stopping criterion ended
        the experiment (no loop comes after), else None."""
        return lifecycle.stopped(self.storage, experiment_id)
