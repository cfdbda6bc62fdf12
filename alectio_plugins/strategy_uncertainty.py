"""Uncertainty strategies: ``least_confidence``, ``margin`` and ``entropy``.

Rows are pre-activation outputs. How a row is read depends on the task:

* ``classification``: one logit per class, softmax. Least confidence is
  ``1 - p_max``, margin ``1 - (p_1st - p_2nd)``, entropy ``-sum p log p``
  computed as ``logsumexp(x) - sum(softmax(x) * x)``.
* ``multilabel``: one logit per label, sigmoid per label; the score is the
  sum over labels of the binary uncertainty (``1 - max(p, 1-p)``,
  ``1 - |p - (1-p)|``, binary entropy).
* ``object_detection``: the row is ``(boxes, num_classes)`` class logits,
  box-major, as a centre-heatmap detector emits for its top-K peaks. Each
  box is scored like a multilabel row (sigmoid per class, summed binary
  uncertainty) and the image scores the **max over its boxes**: one doubtful
  detection makes the image worth labelling. ``num_classes`` is required.

Blocks arrive cache-sized (see ``ScoreStrategy``); each is transposed to
(width, rows) so every reduction over classes is an elementwise numpy op.
"""

from __future__ import annotations

from typing import Callable, Optional

import numpy as np

from alectio_core.errors import ValidationError
from alectio_core.hookspecs import hookimpl
from alectio_core.strategies import ScoreStrategy


class Uncertainty(ScoreStrategy):
    """Shared task handling; subclasses give the two per-task formulas."""

    def softmax_score(self, t: np.ndarray) -> np.ndarray:
        """Scores from logits ``t`` of shape (classes, rows); may modify ``t``."""
        raise NotImplementedError

    def binary_score(self, a: np.ndarray, e: np.ndarray) -> np.ndarray:
        """Per-label uncertainty from ``a = |logit|`` and ``e = exp(-a)``."""
        raise NotImplementedError

    def score(self, values: np.ndarray, *, task: str, num_classes: Optional[int]) -> np.ndarray:
        rows, width = values.shape
        t = np.ascontiguousarray(values.T)
        if task == "classification":
            if num_classes is not None and width != num_classes:
                raise ValidationError(f"{self.name}: outputs have {width} values per record, expected {num_classes} classes")
            return self.softmax_score(t)
        if task in ("multilabel", "object_detection"):
            np.abs(t, out=t)
            u = self.binary_score(t, np.exp(-t))
            if task == "multilabel":
                return u.sum(axis=0)
            if not num_classes or width % num_classes:
                raise ValidationError(
                    f"{self.name}: object_detection rows must be (boxes x num_classes) logits; "
                    f"got width {width} with num_classes={num_classes}"
                )
            return u.reshape(width // num_classes, num_classes, rows).sum(axis=1).max(axis=0)
        raise ValidationError(f"strategy {self.name!r} cannot score task {task!r}; use 'random' or 'kcenter'")


class LeastConfidence(Uncertainty):
    name = "least_confidence"

    def softmax_score(self, t: np.ndarray) -> np.ndarray:
        t -= t.max(axis=0)
        s = np.exp(t).sum(axis=0)  # p_max = 1 / s
        return 1 - 1 / s

    def binary_score(self, a: np.ndarray, e: np.ndarray) -> np.ndarray:
        return e / (1 + e)


class Margin(Uncertainty):
    name = "margin"

    def softmax_score(self, t: np.ndarray) -> np.ndarray:
        first = np.full(t.shape[1], -np.inf, np.float32)
        second = first.copy()
        for row in t:  # running top two over classes, elementwise over records
            np.maximum(second, np.minimum(first, row), out=second)
            np.maximum(first, row, out=first)
        t -= first
        s = np.exp(t).sum(axis=0)
        return 1 - (1 - np.exp(second - first)) / s

    def binary_score(self, a: np.ndarray, e: np.ndarray) -> np.ndarray:
        return 2 * e / (1 + e)


class Entropy(Uncertainty):
    name = "entropy"

    def softmax_score(self, t: np.ndarray) -> np.ndarray:
        t -= t.max(axis=0)
        e = np.exp(t)
        s = e.sum(axis=0)
        e *= t
        return np.log(s) - e.sum(axis=0) / s

    def binary_score(self, a: np.ndarray, e: np.ndarray) -> np.ndarray:
        return np.log1p(e) + a * e / (1 + e)


@hookimpl(trylast=True)  # a third-party plugin registering the same name is called first, and wins
def register_strategies(register: Callable[..., None]) -> None:
    register(LeastConfidence())
    register(Margin())
    register(Entropy())
