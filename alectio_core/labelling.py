"""The labelling service: selections go out to a labeller, labels come back.

A labeller (``register_labellers``; ``labeller:`` in ``config.yaml``) is a
tool people label records in. This service, made by the server when the
section is there, is the part every labeller shares:

* a selection is sent when it is made (``Engine.on_selection``: loop 0's at
  creation, loop k+1's when loop k is done), for experiments in labels mode
  ``alectio``. A send that fails (the tool is down) is logged with the
  error, kept in the experiment's ``labeller`` record, and tried again by
  the poller until it succeeds: the selection itself is in storage, so
  nothing is lost;
* labels arrive by webhook (:meth:`LabellingService.receive`) or, as the
  fallback, by polling every ``poll_seconds`` (:meth:`poll`). An annotation
  for a record the experiment never selected is ignored with a log line;
  one that cannot be read (a label that is not a class) is refused naming
  the record, kept under ``labeller.refused`` and stored once corrected;
* with ``auto_next``, the next loop starts once its selection is complete.

The labeller's own bookkeeping (for Label Studio: the project and its
tasks) is kept in the experiment record under ``labeller.state``.

A labeller is an object with four methods; ``annotation`` is a dict with
``experiment_id``, ``index``, ``by`` (who, or None) and whatever the
labeller needs to read it:

* ``send(experiment, loop, rows, state) -> state``: put ``rows``
  (``Engine.selection``) out to be labelled;
* ``collect(experiment, loop, state) -> [annotation]``: the finished work on
  loop ``loop``'s records (polling);
* ``receive(body) -> [annotation]``: those a webhook's ``body`` carries;
* ``convert(experiment, annotation)``: the label, in the task's format, or
  :data:`SKIP`; ``ValueError`` saying why it cannot be read.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Callable, Mapping

from . import labels as label_rules
from . import plugins
from .config import Config, LabellerSettings
from .errors import AlectioError, NotFoundError, ValidationError, describe

log = logging.getLogger(__name__)


class _Skip:
    def __repr__(self) -> str:
        return "SKIP"


SKIP = _Skip()  # what ``convert`` returns for a skipped or cancelled task


def open_labeller(config: Config) -> Any:
    """The labeller ``config.labeller`` names, made from its settings."""
    section, source = config.labeller, config.source or "config"
    assert section is not None
    return plugins.make_configured("labeller", plugins.get_labellers(), section.name, section.settings, source)


class LabellingService:
    """Sends selections to one labeller and stores the labels it brings back.

    ``start_loop(experiment_id)`` starts an experiment's next loop the way
    ``POST .../loops`` does (used with ``auto_next``).
    """

    def __init__(self, engine: Any, settings: LabellerSettings, labeller: Any, start_loop: Callable[[str], Any] | None = None):
        self.engine, self.settings, self.labeller = engine, settings, labeller
        self.name = settings.name
        self.start_loop = start_loop
        self._lock = threading.RLock()  # one send or store at a time: the loop threads, the poller and webhooks share the record
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._failing: dict[str, str] = {}  # experiment id -> why its last poll failed

    # -- the experiment record's "labeller" part ----------------------------

    def _record(self, experiment: Mapping[str, Any]) -> dict:
        record = dict(experiment.get("labeller") or {})
        if record.get("name") not in (None, self.name):
            return {}  # another labeller's: leave it alone
        return {"name": self.name, "state": {}, "sent": [], "unsent": {}, "refused": {}, **record}

    def _save(self, experiment_id: str, record: dict) -> dict:
        return self.engine.storage.update_experiment(experiment_id, {"labeller": record})

    def _ours(self, experiment: Mapping[str, Any]) -> bool:
        return experiment.get("labels_mode") == "alectio" and bool(self._record(experiment))

    # -- out ----------------------------------------------------------------

    def selection_made(self, experiment: Mapping[str, Any], loop: int) -> None:
        """The ``Engine.on_selection`` listener: send the new selection."""
        if self._ours(experiment):
            self.send(experiment["id"], loop)

    def send(self, experiment_id: str, loop: int) -> bool:
        """Send loop ``loop``'s selection unless it was sent; False when the
        labeller failed (logged, kept in ``unsent``, tried again by the poller)."""
        with self._lock:
            experiment = self.engine.get_experiment(experiment_id)
            record = self._record(experiment)
            if not record or loop in record["sent"]:
                return True
            try:
                rows = self.engine.selection(experiment_id, loop)
                state = self.labeller.send(experiment, loop, rows, dict(record["state"]))
            except Exception as exc:
                message = describe(exc)
                # Once per failure, not once per retry while the tool stays down.
                level = logging.ERROR if record["unsent"].get(str(loop)) != message else logging.DEBUG
                log.log(
                    level, "labeller %r: could not send loop %d's selection of experiment %s (%s); trying again every %gs",
                    self.name, loop, experiment_id, message, self.settings.poll_seconds,
                )
                record["unsent"] = {**record["unsent"], str(loop): message}
                self._save(experiment_id, record)
                return False
            record["state"] = state
            record["sent"] = sorted({*record["sent"], loop})
            record["unsent"] = {k: v for k, v in record["unsent"].items() if k != str(loop)}
            self._save(experiment_id, record)
            log.info("labeller %r: loop %d's selection of experiment %s sent (%d records)", self.name, loop, experiment_id, len(rows))
            return True

    # -- in -------------------------------------------------------------------

    def receive(self, body: Any) -> dict:
        """A webhook: store what ``body`` carries; the summary per experiment."""
        try:
            annotations = self.labeller.receive(body)
        except ValueError as exc:
            raise ValidationError(f"labeller {self.name!r}: {exc}") from None
        by_experiment: dict[str, list[dict]] = {}
        for annotation in annotations:
            by_experiment.setdefault(str(annotation["experiment_id"]), []).append(annotation)
        return {eid: self.store(eid, found) for eid, found in by_experiment.items()}

    def store(self, experiment_id: str, annotations: list[dict]) -> dict:
        """Store the labels and skips ``annotations`` give for the experiment:
        what changed since the latest stored value, in one step. Returns
        ``{"stored", "skipped", "ignored", "refused", "loop", "missing"}``."""
        with self._lock:
            try:
                experiment = self.engine.get_experiment(experiment_id)
            except AlectioError:
                log.warning("labeller %r: annotations for unknown experiment %r ignored", self.name, experiment_id)
                return {"stored": 0, "skipped": 0, "ignored": len(annotations), "refused": []}
            if not self._ours(experiment):
                log.warning("labeller %r: experiment %s does not take labels from it; %d annotation(s) ignored",
                            self.name, experiment_id, len(annotations))
                return {"stored": 0, "skipped": 0, "ignored": len(annotations), "refused": []}
            record = self._record(experiment)
            selected = self._selected(experiment)
            latest = self.engine.labels(experiment_id)
            references = self.engine.storage.get_index_map(experiment_id)
            labels: dict[str, dict[int, Any]] = {}  # by who
            skips: dict[str, list[int]] = {}
            ignored, refused = 0, dict(record["refused"])
            for annotation in annotations:
                index = annotation["index"]
                if not isinstance(index, int) or index not in selected:
                    log.warning("labeller %r: experiment %s: an annotation for record %r, which is not in a selection, was ignored",
                                self.name, experiment_id, index)
                    ignored += 1
                    continue
                try:
                    value = self.labeller.convert(experiment, annotation)
                except ValueError as exc:
                    refused[str(index)] = message = f"record {index} ({references[index]!r}): {exc}"
                    log.warning("labeller %r: experiment %s: %s; not stored", self.name, experiment_id, message)
                    continue
                refused.pop(str(index), None)
                now = latest.get(index) or {}
                by = annotation.get("by") or ""
                if value is SKIP:
                    if not now.get("skip"):
                        skips.setdefault(by, []).append(index)
                elif now.get("skip") or now.get("label") != value:  # re-sent, unchanged: nothing to store
                    labels.setdefault(by, {})[index] = value
            summary: dict[str, Any] = {"stored": 0, "skipped": 0, "ignored": ignored}
            for by in sorted({*labels, *skips}):
                done = self._add(experiment_id, labels.get(by, {}), skips.get(by, []), by or None, refused, references)
                summary["stored"] += done.get("stored", 0)
                summary["skipped"] += done.get("skipped", 0)
            if refused != record["refused"]:
                record["refused"] = refused
                self._save(experiment_id, record)
            summary["refused"] = sorted(refused.values())
            loop = self.engine.next_loop(experiment_id)
            try:
                summary["loop"], summary["missing"] = loop, len(self.engine.missing_labels(experiment_id, loop))
            except NotFoundError:  # the experiment's last loop is done: nothing more to label
                summary["loop"], summary["missing"] = loop, 0
        if summary["stored"] or summary["skipped"]:
            log.info("labeller %r: experiment %s: %d label(s) and %d skip(s) stored; loop %d misses %d",
                     self.name, experiment_id, summary["stored"], summary["skipped"], loop, summary["missing"])
            if self.settings.auto_next and summary["missing"] == 0:
                self._start(experiment_id, loop)
        return summary

    def _add(self, experiment_id: str, labels: dict, skips: list, by: str | None, refused: dict, references: list) -> dict:
        """``Engine.add_labels`` in one step; if the engine refuses a row,
        each row on its own, so one bad label does not hold back the rest."""
        try:
            return self.engine.add_labels(experiment_id, labels, skips, source=self.name, by=by)
        except ValidationError:
            pass
        done = {"stored": 0, "skipped": 0}
        for index, value in [*labels.items(), *((i, SKIP) for i in skips)]:
            try:
                if value is SKIP:
                    done["skipped"] += self.engine.add_labels(experiment_id, {}, [index], source=self.name, by=by)["skipped"]
                else:
                    done["stored"] += self.engine.add_labels(experiment_id, {index: value}, (), source=self.name, by=by)["stored"]
            except ValidationError as exc:
                refused[str(index)] = message = f"record {index} ({references[index]!r}): {exc.message}"
                log.warning("labeller %r: experiment %s: %s; not stored", self.name, experiment_id, message)
        return done

    def _selected(self, experiment: Mapping[str, Any]) -> set[int]:
        return set(label_rules.selections_by_record(self.engine.storage, experiment))

    def _start(self, experiment_id: str, loop: int) -> None:
        if self.start_loop is None:
            return
        try:
            self.start_loop(experiment_id)
        except AlectioError as exc:  # already queued by someone else, or the experiment is over
            log.info("labeller %r: experiment %s: loop %d not started: %s", self.name, experiment_id, loop, exc.message)
        else:
            log.info("labeller %r: experiment %s: loop %d's selection is complete; loop %d started", self.name, experiment_id, loop, loop)

    # -- polling ------------------------------------------------------------

    def poll(self) -> None:
        """Once: send what is unsent, then collect the finished work on each
        experiment's next loop while it misses labels."""
        for experiment in self.engine.storage.list_experiments():
            if not self._ours(experiment):
                continue
            eid = experiment["id"]
            try:
                loop = self.engine.next_loop(eid)
                if not self.engine.has_selection(eid, loop):
                    continue
                if not self.send(eid, loop) or not len(self.engine.missing_labels(eid, loop)):
                    continue
                experiment = self.engine.get_experiment(eid)
                annotations = self.labeller.collect(experiment, loop, dict(self._record(experiment)["state"]))
                if annotations:
                    self.store(eid, annotations)
            except Exception as exc:  # one experiment (or the tool being down) does not stop the others
                message = describe(exc)
                if self._failing.get(eid) != message:  # once, not at every poll
                    log.warning("labeller %r: polling experiment %s failed (%s); trying again every %gs",
                                self.name, eid, message, self.settings.poll_seconds)
                self._failing[eid] = message
            else:
                self._failing.pop(eid, None)

    def start(self) -> None:
        """Poll every ``poll_seconds`` in a background thread until :meth:`stop`."""
        if self._thread is not None:
            return

        def run() -> None:
            while not self._stop.wait(self.settings.poll_seconds):
                self.poll()

        self._thread = threading.Thread(target=run, name=f"alectio-labeller-{self.name}", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
