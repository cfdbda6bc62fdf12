"""Metrics of a loop's test results, computed by the plugin registered for
the model's task (hook ``register_metrics``).

Besides :func:`compute_metrics` this module holds the small helpers the
built-in metrics plugins share; third-party metrics plugins may use them too.
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Mapping, Optional, Sequence

import numpy as np

from .errors import AlectioError, ContributionError, ValidationError


def compute_metrics(
    task: str,
    predictions: Sequence[Any],
    labels: Sequence[Any],
    *,
    class_labels: Optional[Sequence[str]] = None,
) -> dict:
    """Compute the metrics of ``task`` for test ``predictions`` against ``labels``.

    :param task: a task with a registered metrics function (``classification``,
        ``multilabel``, ``object_detection``, ``segmentation``, ``regression``
        for the built-ins).
    :param predictions: one prediction per test record, in the task's format.
    :param labels: the ground truth, same length and order as ``predictions``.
    :param class_labels: optional class names; position = class id.
    :returns: a JSON-serialisable dict (numpy values become Python values,
        NaN and infinities become None).
    :raises UnknownTaskError: no plugin registered metrics for ``task``.
    :raises ValidationError: (a ``ValueError``) the lengths differ or there are
        no records; a ``ValueError`` from the metrics function (the results
        do not fit the task) is raised as it is.
    :raises ContributionError: the metrics function raised anything else or
        returned something other than a dict; the message names its plugin.
    """
    from .plugins import get_metrics_function

    function = get_metrics_function(task)
    predictions, labels = list(predictions), list(labels)
    if len(predictions) != len(labels):
        raise ValidationError(
            f"test returned {len(predictions)} predictions but {len(labels)} labels; they must be the same length"
        )
    if not predictions:
        raise ValidationError("test returned no records; metrics need at least one prediction and label")
    try:
        result = function(predictions, labels, class_labels=class_labels)
    except (AlectioError, ValueError):
        raise  # the test results do not fit the task: the model's to fix
    except Exception as exc:
        raise _failed(task, function, f"{type(exc).__name__}: {exc}") from exc
    if not isinstance(result, dict):
        raise _failed(task, function, f"must return a dict, got {type(result).__name__}")
    return jsonable(result)


def _failed(task: str, function: Any, problem: str) -> ContributionError:
    from .plugins import origin

    where = origin("register_metrics", task, function)
    return ContributionError("metrics", f"metrics for task {task!r}{where} failed: {problem}")


def jsonable(value: Any, *, nan_to_none: bool = True) -> Any:
    """numpy scalars and arrays -> Python values, recursively: mappings become
    dicts with string keys, tuples lists. NaN and infinities become None,
    unless ``nan_to_none=False`` (then they stay, for a JSON encoder to refuse)."""
    if isinstance(value, Mapping):
        return {str(k): jsonable(v, nan_to_none=nan_to_none) for k, v in value.items()}
    if isinstance(value, np.ndarray):
        plain = value.tolist()  # Python values in nested lists, at C speed
        numbers = value.dtype.kind in "biu" or (value.dtype.kind == "f" and (not nan_to_none or np.isfinite(value).all()))
        return plain if numbers else jsonable(plain, nan_to_none=nan_to_none)
    if isinstance(value, (list, tuple)):
        return [jsonable(v, nan_to_none=nan_to_none) for v in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) or not nan_to_none else None
    if isinstance(value, np.generic):
        return value.item()
    return value


def headline(metrics: Optional[Mapping[str, Any]]) -> Optional[dict]:
    """The one metric a list shows for a loop, ``{"name", "value"}``:
    ``accuracy`` when there is one (classification), else the first metric
    with a number, in the order the task's metrics plugin reports them
    (``subset_accuracy``, ``mAP``, ``pixel_accuracy``, ``mae`` for the
    built-in multilabel, detection, segmentation and regression). None
    without one."""
    if not metrics:
        return None
    numbers = {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    name = "accuracy" if "accuracy" in numbers else next(iter(numbers), None)
    return None if name is None else {"name": name, "value": numbers[name]}


def ratio(numerator: float, denominator: float) -> Optional[float]:
    """``numerator / denominator`` as a float, or None when the denominator is 0."""
    return float(numerator) / float(denominator) if denominator else None


def class_ids(values: Any, what: str) -> np.ndarray:
    """``values`` as a 1-D int64 array of class ids; ValueError naming ``what``
    if any value is not a whole number."""
    try:
        array = np.asarray(values, dtype=float)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be integer class ids, got {values!r:.80}") from None
    if array.ndim > 1:
        raise ValueError(f"{what} must be a flat list of class ids, got an array of shape {array.shape}")
    array = array.reshape(-1)
    bad = ~np.isfinite(array) | (array != np.round(array)) | (array < 0)
    if bad.any():
        raise ValueError(f"{what} must be non-negative integer class ids, got {array[bad][0]!r}")
    return array.astype(np.int64)


def resolve_classes(class_labels: Optional[Sequence[Any]], seen: Iterable[int]) -> tuple[list[int], list[str]]:
    """The class ids to report on and their display names.

    With ``class_labels`` the classes are ``range(len(class_labels))`` named by
    the labels, and a ``seen`` id outside that range is a ValueError; without,
    they are the sorted ids in ``seen``, named ``str(id)``.
    """
    seen_ids = sorted({int(i) for i in seen})
    if class_labels is None:
        return seen_ids, [str(i) for i in seen_ids]
    names = [str(name) for name in class_labels]
    outside = [i for i in seen_ids if not 0 <= i < len(names)]
    if outside:
        raise ValueError(f"class id {outside[0]} is outside the {len(names)} class labels (ids 0..{len(names) - 1})")
    return list(range(len(names))), names
