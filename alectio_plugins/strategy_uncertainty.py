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

A row holding NaN scores NaN, and NaN scores rank after every other
(``top_k_positions``): such records are picked last, lower index first, and
only when the pool has too few others. So does a row with an infinite logit
wherever the formula meets ``inf - inf`` or ``0 * inf``: +inf in a
classification row for all three, any infinite logit for ``entropy``. The
outputs writer refuses NaN and inf, so they reach a strategy only through
``select()`` on an array or a third-party storage.
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
        t -= t.max(axis=0)
        np.exp(t, out=t)  # the largest is exp(0) = 1; the probabilities are t / s
        s = t.sum(axis=0)
        second = top_two(t)[1] if len(t) > 1 else 0.0
        return 1 - (1 - second) / s

    def binary_score(self, a: np.ndarray, e: np.ndarray) -> np.ndarray:
        return 2 * e / (1 + e)


def top_two(t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The largest and second-largest value of each column of ``t`` (at least
    two rows; the two are equal when the largest is tied). Overwrites ``t``.

    A knockout tournament: the rows are paired, each pair keeps its
    elementwise top two, and the rows halve each round. That is about
    4 log2(rows) numpy calls on whole half-blocks, where a running top two
    over classes made one call per class on a single row each: 1,000 calls
    of 131 values per block at width 1,000, overhead-bound.
    """
    h = len(t) // 2
    first, second = t[:h], np.minimum(t[:h], t[h : 2 * h])
    np.maximum(first, t[h : 2 * h], out=first)
    scratch = t[h : 2 * h]  # consumed: room for each round's pairwise minima
    if len(t) % 2:
        _merge(first[:1], second[:1], t[-1:], None, scratch)
    while len(first) > 1:
        h = len(first) // 2
        if len(first) % 2:  # the odd one out joins the first pair
            _merge(first[:1], second[:1], first[-1:], second[-1:], scratch)
        _merge(first[:h], second[:h], first[h : 2 * h], second[h : 2 * h], scratch)
        first, second = first[:h], second[:h]
    return first[0], second[0]


def _merge(
    first: np.ndarray, second: np.ndarray, other_first: np.ndarray, other_second: Optional[np.ndarray], scratch: np.ndarray
) -> None:
    """``(first, second)`` becomes, in place, the top two of both pairs."""
    low = np.minimum(first, other_first, out=scratch[: len(first)])
    if other_second is not None:
        np.maximum(second, other_second, out=second)
    np.maximum(second, low, out=second)
    np.maximum(first, other_first, out=first)


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
