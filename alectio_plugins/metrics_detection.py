"""Built-in metrics for task ``object_detection``.

mAP comes from the COCO evaluator ``faster-coco-eval`` (COCO dicts built in
memory); precision, recall and the confusion matrix from greedy matching at
IoU 0.5. Boxes are ``[x1, y1, x2, y2]`` in pixels.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np

from alectio_core.hookspecs import hookimpl
from alectio_core.metrics import class_ids, jsonable, ratio, resolve_classes

IOU = 0.5


def _quiet(*args: Any, **kwargs: Any) -> None:
    pass


def _image(record: Any, position: int, what: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if not isinstance(record, dict) or "boxes" not in record or "objects" not in record:
        raise ValueError(f"object_detection {what} {position} must be a dict with 'boxes' and 'objects'")
    boxes = np.asarray(record["boxes"], dtype=float)
    boxes = boxes.reshape(0, 4) if boxes.size == 0 else boxes
    objects = class_ids(record["objects"], f"{what} {position} objects")
    scores = np.asarray(record.get("scores", np.ones(len(objects))), dtype=float).reshape(-1)
    if boxes.ndim != 2 or boxes.shape[1] != 4 or not len(boxes) == len(objects) == len(scores):
        raise ValueError(
            f"object_detection {what} {position}: need one [x1, y1, x2, y2] box, object and score per "
            f"detection, got boxes of shape {boxes.shape}, {len(objects)} objects, {len(scores)} scores"
        )
    if (boxes[:, 2] < boxes[:, 0]).any() or (boxes[:, 3] < boxes[:, 1]).any():
        raise ValueError(f"object_detection {what} {position}: boxes must be [x1, y1, x2, y2] with x2 >= x1, y2 >= y1")
    return boxes, objects, scores


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    top_left = np.maximum(a[:, None, :2], b[None, :, :2])
    bottom_right = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(bottom_right - top_left, 0, None), axis=2)
    area = lambda x: (x[:, 2] - x[:, 0]) * (x[:, 3] - x[:, 1])  # noqa: E731
    union = area(a)[:, None] + area(b)[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def _greedy(ious: np.ndarray, scores: np.ndarray) -> list[tuple[int, int]]:
    """(prediction, truth) pairs: by descending score, each prediction takes
    the free truth it overlaps most, if that IoU is at least 0.5."""
    free = np.ones(ious.shape[1], dtype=bool)
    pairs = []
    for d in np.argsort(-scores, kind="stable"):
        candidates = np.where(free, ious[d], -1.0)
        if candidates.size and candidates.max() >= IOU:
            g = int(candidates.argmax())
            free[g] = False
            pairs.append((int(d), g))
    return pairs


def _annotations(images: list, cat: dict[int, int], truth: bool) -> list[dict]:
    """COCO annotations (xywh boxes; 1-based image and category ids)."""
    anns: list[dict] = []
    for i, (boxes, objects, scores) in enumerate(images):
        for (x1, y1, x2, y2), c, s in zip(boxes.tolist(), objects.tolist(), scores.tolist()):
            ann = {"image_id": i + 1, "category_id": cat[c], "bbox": [x1, y1, x2 - x1, y2 - y1]}
            if truth:
                ann.update(id=len(anns) + 1, area=(x2 - x1) * (y2 - y1), iscrowd=0)
            else:
                ann["score"] = s
            anns.append(ann)
    return anns


def _coco(truths: list, preds: list, ids: list[int]) -> tuple[list[float], list[float]]:
    """COCO [mAP, mAP_50, mAP_75] and AP per class in ``ids``; -1 where there is no truth."""
    # Imported on use: loading plugins (every CLI start) stays fast.
    from faster_coco_eval import COCO, COCOeval_faster

    cat = {c: k + 1 for k, c in enumerate(ids)}
    dataset = {
        "images": [{"id": i + 1} for i in range(len(truths))],
        "annotations": _annotations(truths, cat, truth=True),
        "categories": [{"id": k} for k in cat.values()],
    }
    gt = COCO(dataset, print_function=_quiet)
    evaluator = COCOeval_faster(gt, gt.loadRes(_annotations(preds, cat, truth=False)), "bbox", print_function=_quiet)
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
    precision = evaluator.eval["precision"][:, :, :, 0, -1]  # IoU x recall x class; area all, max dets
    per_class = [float(p[p > -1].mean()) if (p > -1).any() else -1.0 for p in np.moveaxis(precision, 2, 0)]
    return [float(v) for v in evaluator.stats[:3]], per_class


def detection_metrics(
    predictions: Sequence[dict], labels: Sequence[dict], *, class_labels: Optional[Sequence[str]] = None
) -> dict:
    """Detection metrics per image from ``{"boxes", "objects", "scores"}`` records.

    Returns COCO ``mAP`` (IoU 0.5:0.95, the 100 best-scored detections per
    image), ``mAP_50``, ``mAP_75`` and per-class
    ``AP`` (None for a class with no true box, and mAP None when there is no
    true box at all; mAP averages over the classes with a true box, COCO's
    rule, as a class with only predictions has no recall to average); micro ``precision`` and ``recall`` at IoU 0.5, where a
    prediction is right if it is matched to a free true box of its class
    (greedy by score, every prediction counts); and ``confusion_matrix`` at
    IoU 0.5 with class-agnostic matching: rows = true class, columns =
    predicted class, in the order of ``class_names``, whose last entry is
    ``background``: its row counts unmatched predictions, its column missed
    true boxes. Predictions
    without ``scores`` count as score 1.
    """
    preds = [_image(r, i, "prediction") for i, r in enumerate(predictions)]
    truths = [_image(r, i, "label") for i, r in enumerate(labels)]
    ids, names = resolve_classes(class_labels, [c for _, objects, _ in preds + truths for c in objects.tolist()])
    n = len(ids)
    slot = {c: k for k, c in enumerate(ids)}
    matrix = np.zeros((n + 1, n + 1), dtype=np.int64)
    tp = 0
    for (p_boxes, p_obj, p_scores), (t_boxes, t_obj, _) in zip(preds, truths):
        ious = _iou(p_boxes, t_boxes)
        tp += len(_greedy(ious * (p_obj[:, None] == t_obj[None, :]), p_scores))
        pairs = _greedy(ious, p_scores)
        for d, g in pairs:
            matrix[slot[int(t_obj[g])], slot[int(p_obj[d])]] += 1
        for d in set(range(len(p_obj))) - {d for d, _ in pairs}:
            matrix[n, slot[int(p_obj[d])]] += 1
        for g in set(range(len(t_obj))) - {g for _, g in pairs}:
            matrix[slot[int(t_obj[g])], n] += 1
    n_pred, n_true = sum(len(p[1]) for p in preds), sum(len(t[1]) for t in truths)
    stats, ap = _coco(truths, preds, ids) if n_true else ([-1.0] * 3, [-1.0] * n)
    value = lambda v: None if v < 0 else v  # noqa: E731
    return jsonable(
        {
            "mAP": value(stats[0]),
            "mAP_50": value(stats[1]),
            "mAP_75": value(stats[2]),
            "AP": {name: value(a) for name, a in zip(names, ap)},
            "precision": ratio(tp, n_pred),
            "recall": ratio(tp, n_true),
            "confusion_matrix": matrix,
            "class_names": names + ["background"],
        }
    )


@hookimpl(trylast=True)  # a third-party plugin registering the same name is called first, and wins
def register_metrics(register: Any) -> None:
    """Register ``object_detection``."""
    register("object_detection", detection_metrics)
