"""Built-in metrics for task ``segmentation``: one confusion matrix over
every pixel of every test image (numpy ``bincount``), then accuracy, IoU and
Dice from it.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np

from alectio_core.hookspecs import hookimpl
from alectio_core.metrics import class_ids, jsonable, resolve_classes


def _masks(predictions: Sequence[Any], labels: Sequence[Any]) -> list[tuple[np.ndarray, np.ndarray]]:
    pairs = []
    for position, (prediction, label) in enumerate(zip(predictions, labels)):
        pred, true = np.asarray(prediction), np.asarray(label)
        if pred.ndim != 2 or pred.shape != true.shape:
            raise ValueError(
                f"segmentation record {position}: prediction and label must be 2-D masks of the same shape, "
                f"got {pred.shape} and {true.shape}"
            )
        pairs.append((class_ids(pred.ravel(), f"prediction {position}"), class_ids(true.ravel(), f"label {position}")))
    return pairs


def segmentation_metrics(
    predictions: Sequence[Any], labels: Sequence[Any], *, class_labels: Optional[Sequence[str]] = None
) -> dict:
    """Pixel metrics from predicted and true per-pixel class-id masks.

    Returns ``pixel_accuracy``; ``iou_per_class`` (intersection over union of
    the class's predicted and true pixels) and ``mean_iou``; ``dice_per_class``
    (2|P∩T| / (|P|+|T|)) and ``mean_dice``; and ``confusion_matrix`` (pixel
    counts, rows = true class, in the order of ``class_names``). A class in
    neither predictions nor labels has IoU and Dice None and is left out of
    the means. Images may differ in size; pixels are pooled over all images.
    """
    pairs = _masks(predictions, labels)
    seen = np.unique(np.concatenate([np.zeros(0, np.int64)] + [np.unique(a) for pair in pairs for a in pair]))
    ids, names = resolve_classes(class_labels, seen)
    index = np.asarray(ids, dtype=np.int64)
    n = len(ids)
    matrix = np.zeros((n, n), dtype=np.int64)
    for pred, true in pairs:
        codes = np.searchsorted(index, true) * n + np.searchsorted(index, pred)
        matrix += np.bincount(codes, minlength=n * n).reshape(n, n)
    hits = np.diag(matrix).astype(float)
    pred_total, true_total = matrix.sum(axis=0), matrix.sum(axis=1)
    union = pred_total + true_total - hits
    present = union > 0
    iou = np.where(present, hits / np.where(present, union, 1), np.nan)
    dice = np.where(present, 2 * hits / np.where(present, pred_total + true_total, 1), np.nan)
    total = matrix.sum()
    return jsonable(
        {
            "pixel_accuracy": hits.sum() / total if total else None,
            "mean_iou": iou[present].mean() if present.any() else None,
            "iou_per_class": dict(zip(names, iou)),
            "mean_dice": dice[present].mean() if present.any() else None,
            "dice_per_class": dict(zip(names, dice)),
            "confusion_matrix": matrix,
            "class_names": names,
        }
    )


@hookimpl(trylast=True)  # a third-party plugin registering the same name is called first, and wins
def register_metrics(register: Any) -> None:
    """Register ``segmentation``."""
    register("segmentation", segmentation_metrics)
