"""Built-in metrics for task ``regression`` (scikit-learn)."""

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
    # Imported on use: loading plugins (every CLI start) stays fast.
    from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score, root_mean_squared_error

    y_pred, y_true = _values(predictions, "predictions"), _values(labels, "labels")
    if y_pred.shape != y_true.shape:
        raise ValueError(f"regression predictions have shape {y_pred.shape} but labels {y_true.shape}")
    return jsonable(
        {
            "mae": mean_absolute_error(y_true, y_pred),
            "mse": mean_squared_error(y_true, y_pred),
            "rmse": root_mean_squared_error(y_true, y_pred),
            "r2": r2_score(y_true, y_pred) if len(y_true) >= 2 else None,
        }
    )


@hookimpl(trylast=True)  # a third-party plugin registering the same name is called first, and wins
def register_metrics(register: Any) -> None:
    """Register ``regression``."""
    register("regression", regression_metrics)
