"""Built-in metrics for tasks ``classification`` (numpy) and ``multilabel``
(scikit-learn), both as scikit-learn defines them with ``zero_division=0``.

Per-class values are dicts keyed by class name (``class_labels``) or by
``str(id)``; the classes are ``range(len(class_labels))`` when names are
given, else the sorted ids seen in predictions and labels. Macro averages
follow scikit-learn's default: they average over the classes *present*, in
the labels or the predictions. A class named in ``class_labels`` but in
neither has per-class values None (null in JSON), not 0, and is left out of
the macro averages: a perfect prediction scores 1.0 whatever the names list.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np

from alectio_core.hookspecs import hookimpl
from alectio_core.metrics import class_ids, jsonable, ratio, resolve_classes


def classification_metrics(
    predictions: Sequence[int], labels: Sequence[int], *, class_labels: Optional[Sequence[str]] = None
) -> dict:
    """Single-label metrics from predicted and true class ids.

    Returns ``accuracy``; macro ``precision``, ``recall``, ``f1_score`` (over
    the classes present); ``precision_per_class``, ``recall_per_class``,
    ``f1_per_class`` (None for a class in no label and no prediction);
    ``confusion_matrix`` (rows = true class, columns = predicted, in the order
    of ``class_names``); ``acc_per_class``, the fraction of a class's records
    predicted as that class (its recall); and ``label_disagreement``, the
    fraction of a class's records predicted as something else
    (1 - ``acc_per_class``). Both are None for a class with no records.
    """
    # From the confusion matrix with numpy, as scikit-learn computes them
    # (zero_division=0): importing sklearn.metrics alone takes ~1 s, more
    # than a run's whole fixed cost.
    y_pred, y_true = class_ids(predictions, "predictions"), class_ids(labels, "labels")
    if len(y_pred) != len(y_true) or not len(y_true):
        raise ValueError(f"classification metrics need as many predictions as labels, and at least one: "
                         f"got {len(y_pred)} and {len(y_true)}")
    ids, names = resolve_classes(class_labels, np.concatenate([y_true, y_pred]))
    n, index = len(ids), np.asarray(ids, dtype=np.int64)
    codes = np.searchsorted(index, y_true) * n + np.searchsorted(index, y_pred)
    matrix = np.bincount(codes, minlength=n * n).reshape(n, n)  # rows: true class, columns: predicted
    hits, truths, guesses = np.diag(matrix), matrix.sum(axis=1), matrix.sum(axis=0)
    present = truths + guesses > 0
    precision, recall, f1 = (
        np.where(present, v, np.nan)
        for v in (_share(hits, guesses), _share(hits, truths), _share(2 * hits, truths + guesses))
    )
    per_class_acc = [ratio(hits[i], truths[i]) for i in range(n)]
    return jsonable(
        {
            "accuracy": hits.sum() / len(y_true),
            "precision": precision[present].mean(),
            "recall": recall[present].mean(),
            "f1_score": f1[present].mean(),
            "precision_per_class": dict(zip(names, precision)),
            "recall_per_class": dict(zip(names, recall)),
            "f1_per_class": dict(zip(names, f1)),
            "confusion_matrix": matrix,
            "class_names": names,
            "acc_per_class": dict(zip(names, per_class_acc)),
            "label_disagreement": {name: None if a is None else 1.0 - a for name, a in zip(names, per_class_acc)},
        }
    )


def _share(part: np.ndarray, whole: np.ndarray) -> np.ndarray:
    """``part / whole`` per class, 0 where ``whole`` is 0 (sklearn's zero_division=0)."""
    return np.divide(part, whole, out=np.zeros(len(part)), where=whole > 0)


def multilabel_metrics(
    predictions: Sequence[Sequence[int]],
    labels: Sequence[Sequence[int]],
    *,
    class_labels: Optional[Sequence[str]] = None,
) -> dict:
    """Multi-label metrics; each prediction and label is a list of active class ids.

    Returns ``subset_accuracy`` (all of a record's classes right),
    ``hamming_loss``, ``precision_micro``/``recall_micro``/``f1_micro``,
    ``precision_macro``/``recall_macro``/``f1_macro`` (over the classes
    present) and per-class ``precision_per_class``, ``recall_per_class``,
    ``f1_per_class`` (None for a class in no label and no prediction).
    """
    from sklearn.metrics import accuracy_score, hamming_loss, precision_recall_fscore_support
    from sklearn.preprocessing import MultiLabelBinarizer

    y_pred = [class_ids(p, f"prediction {i}") for i, p in enumerate(predictions)]
    y_true = [class_ids(t, f"label {i}") for i, t in enumerate(labels)]
    ids, names = resolve_classes(class_labels, np.concatenate([np.zeros(0, int), *y_pred, *y_true]))
    if not ids:
        raise ValueError("multilabel metrics need at least one class: no record has a class and no class_labels given")
    binarizer = MultiLabelBinarizer(classes=ids)
    pred, true = binarizer.fit_transform(y_pred), binarizer.fit_transform(y_true)
    result: dict[str, Any] = {"subset_accuracy": accuracy_score(true, pred), "hamming_loss": hamming_loss(true, pred)}
    # One column would read as binary 0/1 targets; an all-zero column changes no count.
    pred, true = (np.pad(m, ((0, 0), (0, 1))) if len(ids) == 1 else m for m in (pred, true))
    micro = precision_recall_fscore_support(true, pred, average="micro", zero_division=0)
    present = np.asarray(true.any(axis=0) | pred.any(axis=0), dtype=bool)[: len(ids)]
    p, r, f = (
        np.where(present, v[: len(ids)], np.nan)
        for v in precision_recall_fscore_support(true, pred, average=None, zero_division=0)[:3]
    )
    result.update({"precision_micro": micro[0], "recall_micro": micro[1], "f1_micro": micro[2]})
    for name, v in (("precision", p), ("recall", r), ("f1", f)):  # None when no record has any class
        result[f"{name}_macro"] = v[present].mean() if present.any() else None
    result.update(
        precision_per_class=dict(zip(names, p)), recall_per_class=dict(zip(names, r)), f1_per_class=dict(zip(names, f))
    )
    return jsonable(result)


@hookimpl(trylast=True)  # a third-party plugin registering the same name is called first, and wins
def register_metrics(register: Any) -> None:
    """Register ``classification`` and ``multilabel``."""
    register("classification", classification_metrics)
    register("multilabel", multilabel_metrics)
