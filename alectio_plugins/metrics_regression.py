"""Built-in metrics for task ``regression``, as scikit-learn defines them, in numpy."""

from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np

from alectio_core.hookspecs import hookimpl
from alectio_core.metrics import jsonable


def _values(values: Sequence[Any], what: str) -> np.ndarray:
    try:
        array = np.asarray(values, dtype=float)
    except (TypeError, ValueError):
        raise ValueError(f"regression {what} must be numbers, got {values!r:.80}") from None
    if not np.isfinite(array).all():
        position = int(np.argwhere(~np.isfinite(array))[0][0])
        raise ValueError(f"regression {what} must be finite numbers; record {position} is {array[position]!r}")
    return array


def regression_metrics(
    predictions: Sequence[float], labels: Sequence[float], *, class_labels: Optional[Sequence[str]] = None
) -> dict:
    """``mae``, ``mse``, ``rmse`` and ``r2`` of predicted against true values.

    A record may also be a list of numbers (several targets); the errors are
    then averaged over targets. ``r2`` is None with fewer than two records;
    with constant labels it is scikit-learn's 1.0 (perfect) or 0.0.
    ``class_labels`` is ignored.
    """
    # numpy, not sklearn.metrics: importing that alone takes ~1 s.
    y_pred, y_true = _values(predictions, "predictions"), _values(labels, "labels")
    if y_pred.shape != y_true.shape:
        raise ValueError(f"regression predictions have shape {y_pred.shape} but labels {y_true.shape}")
    if not len(y_true):
        raise ValueError("regression metrics need at least one record")
    errors = (y_pred - y_true).reshape(len(y_true), -1)  # one column per target
    squared = (errors**2).mean(axis=0)
    return jsonable(
        {
            "mae": np.abs(errors).mean(axis=0).mean(),
            "mse": squared.mean(),
            "rmse": np.sqrt(squared).mean(),
            "r2": _r2(y_true.reshape(len(y_true), -1), squared) if len(y_true) >= 2 else None,
        }
    )


def _r2(y_true: np.ndarray, squared: np.ndarray) -> float:
    """Mean over targets of 1 - residual / total sum of squares; a target with
    constant labels scores 1.0 when predicted exactly, else 0.0 (sklearn's)."""
    total = ((y_true - y_true.mean(axis=0)) ** 2).mean(axis=0)
    scores = np.where(squared == 0, 1.0, 0.0)
    np.divide(squared, total, out=scores, where=total > 0)
    scores = np.where(total > 0, 1.0 - scores, scores)
    return float(scores.mean())


@hookimpl(trylast=True)  # a third-party plugin registering the same name is called first, and wins
def register_metrics(register: Any) -> None:
    """Register ``regression``."""
    register("regression", regression_metrics)
