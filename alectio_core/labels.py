"""Labels from people: the rules of labels mode ``"alectio"``.

An experiment created with ``labels="alectio"`` (stored as ``labels_mode``;
an experiment without it is ``"plugin"``: the model knows every label) has
people label each loop's selection. Their labels are stored as events, a
history: every event ``{"index", "label", "skip", "loop", "source", "by",
"at"}`` is kept, and a record's latest event is its label (or its skip).

* Loop k starts only when every record of its selection is labelled or
  skipped (``LabelsMissing`` otherwise).
* ``train`` gets the union of the selections of loops 0..k minus the
  records whose latest event is a skip, and ``labels``: index -> label for
  each of them.
* The pool a loop scores is the pool minus every selected record, skipped
  ones included: a strategy never picks a skipped record again.

Labels are checked against the experiment's task (errors name the index
and the label): ``classification`` a class id or name; ``multilabel`` a
list of distinct class ids or names; ``object_detection`` ``{"boxes":
[[x1, y1, x2, y2], ...], "objects": [class ids]}``; ``segmentation`` a 2-D
list of class ids; ``regression`` a finite number (or text spelling one).
Class names become ids: a string is a class name first, else, if it is an
integer (``"3"``), a class id; a number is always a class id.
The :class:`~alectio_core.engine.Engine` methods of the same names call these.
"""

from __future__ import annotations

import math
import re
from typing import Any, Mapping, Sequence

import numpy as np

from .clock import now
from .errors import ConflictError, InvalidLabels, LabelsMissing, NotFoundError, ValidationError
from .storage import Storage, cannot

MODES = ("plugin", "alectio")
_INTEGER = re.compile(r"-?[0-9]+")
_NUMBER = re.compile(r"-?[0-9]+(\.[0-9]+)?([eE][+-]?[0-9]+)?")  # JSON's number syntax: no "nan", "inf", "1_0"


def check_mode(value: Any) -> str:
    if value not in MODES:
        raise ValidationError(f"labels must be one of {', '.join(map(repr, MODES))}, got {value!r}", field="labels")
    return value


def mode(experiment: Mapping[str, Any]) -> str:
    """The experiment's labels mode (an experiment stored without one: ``"plugin"``)."""
    return experiment.get("labels_mode") or "plugin"


def from_people(experiment: Mapping[str, Any]) -> bool:
    return mode(experiment) == "alectio"


def check_storage(storage: Storage) -> None:
    """Refuse labels mode "alectio" on a backend written before labels,
    before anything is stored."""
    if getattr(type(storage), "add_labels", None) is Storage.add_labels:
        raise cannot(storage, "store labels, which labels 'alectio' needs")


# -- what is stored -----------------------------------------------------------


def latest(storage: Storage, experiment_id: str) -> dict[int, dict]:
    """Each labelled or skipped record's latest event, by index."""
    return {int(e["index"]): e for e in storage.list_labels(experiment_id)}


def selections_by_record(storage: Storage, experiment: Mapping[str, Any]) -> dict[int, int]:
    """index -> the loop whose selection holds it, for every selection stored."""
    where: dict[int, int] = {}
    for loop in range(int(experiment.get("loops") or 0) + 1):
        try:
            picked = storage.get_selection(experiment["id"], loop)
        except NotFoundError:
            continue
        where.update((int(i), loop) for i in picked)
    return where


def missing(storage: Storage, experiment_id: str, loop: int) -> np.ndarray:
    """Records selected for ``loop`` with no label and no skip, in the
    selection's order (``NotFoundError`` when it has no selection)."""
    picked = storage.get_selection(experiment_id, loop)
    events = latest(storage, experiment_id)
    return np.asarray([i for i in picked.tolist() if i not in events], dtype=np.int64)


def check_labelled(storage: Storage, experiment: Mapping[str, Any], loop: int) -> None:
    """For an experiment in labels mode "alectio": ``LabelsMissing`` when
    loop ``loop`` has selected records neither labelled nor skipped;
    ``ConflictError`` when every record selected so far was skipped (there
    is nothing to train on)."""
    if not from_people(experiment):
        return
    try:
        picked = storage.get_selection(experiment["id"], loop)
    except NotFoundError:
        return  # nothing selected yet: the loop's own checks say so
    events = latest(storage, experiment["id"])
    left = [i for i in picked.tolist() if i not in events]
    if left:
        raise LabelsMissing(loop, len(left), int(picked.size))
    if not any(not e.get("skip") and int(e["loop"]) <= loop for e in events.values()):
        raise ConflictError(f"loop {loop} has nothing to train on: every record selected so far was skipped; label some of them first")


def for_training(
    storage: Storage, experiment: Mapping[str, Any], loop: int, selected: np.ndarray
) -> tuple[np.ndarray, dict[int, Any] | None]:
    """What loop ``loop``'s ``train`` gets: the records (``selected``, the
    union of the selections so far, minus people's skips) and their labels
    (None in labels mode "plugin", where the model knows them)."""
    if not from_people(experiment):
        return selected, None
    events = latest(storage, experiment["id"])
    unlabelled = [i for i in selected.tolist() if i not in events]
    if unlabelled:  # check_labelled ran before the loop; this guards any other way in
        raise LabelsMissing(loop, len(unlabelled), int(selected.size))
    keep = np.asarray([i for i in selected.tolist() if not events[i].get("skip")], dtype=np.int64)
    return keep, {i: events[i]["label"] for i in keep.tolist()}


# -- checking what people send --------------------------------------------------


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool) and math.isfinite(value)


class _Task:
    """Checks and converts labels for one experiment's task and classes."""

    def __init__(self, experiment: Mapping[str, Any]):
        self.task = experiment.get("task", "classification")
        self.names = [str(n) for n in experiment.get("labels") or []]
        self.ids = {name: i for i, name in enumerate(self.names)}

    def class_id(self, value: Any, names: bool = True) -> int:
        if names and isinstance(value, str):
            # A name first: classes named "1".."5" are named, not numbered, by "1"; text that
            # names no class but is an integer (a csv cell, a copied id) is a class id.
            if value in self.ids:
                return self.ids[value]
            if _INTEGER.fullmatch(value):
                return self.class_id(int(value), names=False)
            known = ", ".join(map(repr, self.names)) if self.names else "none: the model's model_info gives no labels"
            raise ValueError(f"{value!r} is not one of the experiment's labels ({known})")
        if not _is_int(value):
            raise ValueError("a class must be a class id" + (" or name" if names else "") + f", got {type(value).__name__}")
        if value < 0 or (self.names and value >= len(self.names)):
            upper = f"0..{len(self.names) - 1}" if self.names else ">= 0"
            raise ValueError(f"class id {int(value)} is out of range ({upper})")
        return int(value)

    def convert(self, label: Any) -> Any:
        """The label in the task's stored format, or ``ValueError`` saying why not."""
        task = self.task
        if task == "classification":
            return self.class_id(label)
        if task == "multilabel":
            if not isinstance(label, (list, tuple)):
                raise ValueError(f"multilabel labels are a list of class ids or names, got {type(label).__name__}")
            ids = [self.class_id(v) for v in label]
            if len(set(ids)) != len(ids):
                raise ValueError("a class appears more than once")
            return ids
        if task == "object_detection":
            return self.boxes(label)
        if task == "segmentation":
            return self.mask(label)
        if task == "regression":
            if isinstance(label, str) and _NUMBER.fullmatch(label):  # a csv cell is text
                label = float(label) if any(c in label for c in ".eE") else int(label)
            if not _is_number(label):
                raise ValueError("regression labels are finite numbers")
            return float(label) if isinstance(label, (float, np.floating)) else int(label)
        raise ValueError(f"task {task!r} takes no labels")  # pragma: no cover - tasks are checked at creation

    def mask(self, label: Any) -> list:
        """A 2-D list of class ids (the range checked as one array: a mask has many pixels)."""
        if not isinstance(label, (list, tuple)) or not label or not all(isinstance(r, (list, tuple)) for r in label):
            raise ValueError("segmentation labels are a 2-D list of class ids (one row of pixels per list)")
        if len({len(r) for r in label}) != 1 or not label[0]:
            raise ValueError("segmentation rows must all have the same, non-zero length")
        bad = next((v for row in label for v in row if not _is_int(v)), None)
        if bad is not None:
            raise ValueError(f"a class must be a class id, got {type(bad).__name__}")
        try:
            pixels = np.asarray(label, dtype=np.int64)
        except OverflowError:
            raise ValueError("a class id is too large") from None
        if pixels.min() < 0 or (self.names and pixels.max() >= len(self.names)):
            bad = int(pixels.min()) if pixels.min() < 0 else int(pixels.max())
            upper = f"0..{len(self.names) - 1}" if self.names else ">= 0"
            raise ValueError(f"class id {bad} is out of range ({upper})")
        return pixels.tolist()

    def boxes(self, label: Any) -> dict:
        if not isinstance(label, Mapping) or set(label) != {"boxes", "objects"}:
            raise ValueError('object_detection labels are {"boxes": [[x1, y1, x2, y2], ...], "objects": [class ids]}')
        boxes, objects = label["boxes"], label["objects"]
        if not isinstance(boxes, (list, tuple)) or not isinstance(objects, (list, tuple)) or len(boxes) != len(objects):
            raise ValueError('"boxes" and "objects" must be lists of the same length')
        out = []
        for n, box in enumerate(boxes):
            if not isinstance(box, (list, tuple)) or len(box) != 4 or not all(_is_number(v) for v in box):
                raise ValueError(f"box {n} must be 4 finite numbers [x1, y1, x2, y2]")
            if box[2] < box[0] or box[3] < box[1]:
                raise ValueError(f"box {n} has x2 < x1 or y2 < y1")
            out.append([float(v) for v in box])
        return {"boxes": out, "objects": [self.class_id(v) for v in objects]}


def _index(key: Any) -> int:
    """A record index as given: an int, or (JSON object keys) its decimal string."""
    if _is_int(key):
        return int(key)
    if isinstance(key, str):
        text = key.strip()
        digits = text[1:] if text.startswith("-") else text
        if digits.isascii() and digits.isdigit():  # str.isdigit alone takes '²', which int() refuses
            return int(text)
    raise ValidationError(f"index {key!r} is not an integer record index")


def label_events(
    storage: Storage,
    experiment: Mapping[str, Any],
    labels: Mapping[Any, Any],
    skip: Sequence[Any] = (),
    *,
    source: str,
    by: str | None = None,
) -> list[dict]:
    """The label events for ``labels`` (index -> label) and ``skip``
    (indices), every row checked first: ``InvalidLabels`` (a
    ``ValidationError``) naming the first bad index and its label, with
    every bad row in its ``problems``. Nothing is stored here."""
    if not from_people(experiment):
        raise ConflictError(
            f"experiment {experiment['id']!r} takes its labels from the model plugin (labels mode 'plugin'); "
            "create it with labels 'alectio' to send labels"
        )
    if not isinstance(labels, Mapping):
        raise ValidationError("labels must be a mapping of record index -> label")
    if isinstance(skip, (str, bytes, Mapping)) or not isinstance(skip, (list, tuple, np.ndarray)):
        raise ValidationError("skip must be a list of record indices")
    if not isinstance(source, str) or not source:
        raise ValidationError("source must name where the labels come from (a non-empty string)")
    if by is not None and not isinstance(by, str):
        raise ValidationError("by must be a name (a string) or None")
    pool = int(experiment["pool_size"])
    where = selections_by_record(storage, experiment)
    task = _Task(experiment)
    at = now()
    labelled: set[int] = set()
    seen: set[int] = set()
    out, problems = [], []
    rows = [(key, label, False) for key, label in labels.items()] + [(key, None, True) for key in skip]
    for key, label, skipped in rows:
        try:
            index = _index(key)
            if index in seen:
                twice = "in both labels and skip" if skipped and index in labelled else "more than once"
                raise ValidationError(f"index {index} is given {twice}")
            seen.add(index)
            if not skipped:
                labelled.add(index)
            if not 0 <= index < pool:
                raise ValidationError(f"index {index} is outside the pool 0..{pool - 1}")
            if index not in where:
                raise ValidationError(f"index {index} is in no selection of experiment {experiment['id']!r}; only selected records take labels")
            if not skipped:
                if label is None:
                    raise ValidationError(f"index {index}: the label is missing (to leave the record out, skip it)")
                try:
                    label = task.convert(label)
                except ValueError as exc:
                    raise ValidationError(f"index {index}: label {label!r} is not a {task.task} label: {exc}") from None
        except ValidationError as exc:
            problems.append({"index": key, "label": label, "skip": skipped, "message": exc.message})
            continue
        out.append({"index": index, "label": label, "skip": skipped, "loop": where[index], "source": source, "by": by, "at": at})
    if problems:
        raise InvalidLabels(problems)
    return out


# -- a selection as people see it ----------------------------------------------


def _prediction(task: str, row: np.ndarray) -> Any:
    if task == "classification":
        return int(np.argmax(row))
    if task == "multilabel":
        return [int(i) for i in np.flatnonzero(row > 0)]
    if task == "regression":
        return float(row[0]) if row.size == 1 else [float(v) for v in row]
    return None  # detection and segmentation outputs are not boxes or masks


def predictions(storage: Storage, experiment: Mapping[str, Any], loop: int, indices: np.ndarray) -> dict[int, Any]:
    """Loop ``loop``'s model's prediction for each of ``indices`` it scored,
    in the task's label format, from its stored infer outputs (MC passes
    reduced to one first); empty when the loop is not done."""
    from .strategies import reduce_mc

    task = experiment.get("task", "classification")
    if loop < 0 or task in ("object_detection", "segmentation"):
        return {}
    wanted = np.asarray(indices, dtype=np.int64)
    found: dict[int, Any] = {}
    try:
        for idx, values in storage.iter_outputs(experiment["id"], loop):
            keep = np.isin(idx, wanted)
            if not keep.any():
                continue
            rows = np.asarray(values[keep])
            if experiment.get("mc_samples"):
                rows = reduce_mc(rows, int(experiment["mc_samples"]), task)
            found.update((int(i), _prediction(task, r)) for i, r in zip(idx[keep], rows))
    except NotFoundError:
        return {}
    return found


def selection_rows(storage: Storage, experiment: Mapping[str, Any], loop: int) -> list[dict]:
    """Loop ``loop``'s selection, best first: one row per record with its
    reference, the strategy's score, the loop before's prediction and its
    latest label (or skip)."""
    eid = experiment["id"]
    picked = storage.get_selection(eid, loop)
    scores = storage.get_selection_scores(eid, loop)
    references = storage.get_index_map(eid)
    predicted = predictions(storage, experiment, loop - 1, picked)
    events = latest(storage, eid) if from_people(experiment) else {}
    rows = []
    for n, index in enumerate(picked.tolist()):
        score = None if scores is None or not math.isfinite(scores[n]) else float(scores[n])
        event = events.get(index)
        rows.append(
            {
                "index": index,
                "reference": references[index] if 0 <= index < len(references) else None,
                "score": score,
                "prediction": predicted.get(index),
                "label": None if event is None or event.get("skip") else event["label"],
                "skipped": bool(event and event.get("skip")),
            }
        )
    return rows
