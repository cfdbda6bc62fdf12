"""mAP at IoU 0.5 (VOC, all-point interpolation), for numbers in the README.

alectio computes its own detection metrics from what ``test`` returns; this
small copy lets the example's tests and ``measure.py`` check quality without
the server.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = np.asarray(a, float).reshape(-1, 4), np.asarray(b, float).reshape(-1, 4)
    top_left = np.maximum(a[:, None, :2], b[None, :, :2])
    bottom_right = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(bottom_right - top_left, 0, None), axis=2)
    area_a = np.prod(a[:, 2:] - a[:, :2], axis=1)
    area_b = np.prod(b[:, 2:] - b[:, :2], axis=1)
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)


def average_precision(predictions: Sequence[dict], labels: Sequence[dict], cls: int, thr: float = 0.5) -> float:
    n_true = sum(int(np.sum(np.asarray(t["objects"]) == cls)) for t in labels)
    if n_true == 0:
        return float("nan")
    found = []  # (score, is true positive)
    for pred, truth in zip(predictions, labels):
        t_boxes = np.asarray(truth["boxes"], float).reshape(-1, 4)[np.asarray(truth["objects"]) == cls]
        p_boxes = np.asarray(pred["boxes"], float).reshape(-1, 4)
        p_mask = np.asarray(pred["objects"]) == cls
        p_boxes, p_scores = p_boxes[p_mask], np.asarray(pred["scores"], float)[p_mask]
        used = np.zeros(len(t_boxes), bool)
        overlaps = iou(p_boxes, t_boxes) if len(t_boxes) else np.zeros((len(p_boxes), 0))
        for d in np.argsort(-p_scores, kind="stable"):
            j = int(overlaps[d].argmax()) if overlaps.shape[1] else -1
            hit = j >= 0 and overlaps[d, j] >= thr and not used[j]
            if hit:
                used[j] = True
            found.append((p_scores[d], hit))
    if not found:
        return 0.0
    found.sort(key=lambda sh: -sh[0])
    hits = np.array([h for _, h in found], float)
    tp, fp = np.cumsum(hits), np.cumsum(1 - hits)
    recall, precision = tp / n_true, tp / (tp + fp)
    # all-point interpolation: area under the monotone precision envelope
    r = np.concatenate([[0.0], recall, [1.0]])
    p = np.concatenate([[1.0], precision, [0.0]])
    p = np.maximum.accumulate(p[::-1])[::-1]
    return float(np.sum((r[1:] - r[:-1]) * p[1:]))


def map50(predictions: Sequence[dict], labels: Sequence[dict], num_classes: int) -> float:
    aps = [average_precision(predictions, labels, c) for c in range(num_classes)]
    return float(np.nanmean(aps))
