"""Checks on what a model's hooks return.

Each ``check_*`` function takes a hook's raw result and returns the checked
value, or raises a :class:`PluginError` naming the model, the hook and,
where there is one, the offending index. The engine applies them on every
loop; ``alectio_core.testing.ModelContract`` applies them to a plugin under
test. (``infer``'s streamed rows are checked as they arrive, by
:class:`alectio_core.outputs.OutputWriter`.)
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from .errors import PluginError, ValidationError
from .metrics import jsonable


def as_indices(values: Any, what: str) -> np.ndarray:
    """A list of record indices as int64, or a ValidationError saying why not."""
    if isinstance(values, np.ndarray) and values.dtype.kind in "iu" and values.ndim == 1:
        return values.astype(np.int64, copy=False)
    if not isinstance(values, (list, tuple, np.ndarray)):
        raise ValidationError(f"{what} must be a list of integer indices, got {type(values).__name__}")
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise ValidationError(f"{what} must hold integer indices, got {v!r}")
    try:
        return np.asarray(values, dtype=np.int64).reshape(-1)
    except OverflowError:
        raise ValidationError(f"{what} holds an index too large for any pool") from None


def check_assign_index(model: str, result: Any) -> list[str]:
    """``assign_index``'s result as the pool's references, position = index."""
    if isinstance(result, (list, tuple)):
        return [str(r) for r in result]
    if not isinstance(result, Mapping):
        raise PluginError(model, "assign_index", f"must return a mapping index -> reference, got {type(result).__name__}")
    references: list[str | None] = [None] * len(result)
    for key, ref in result.items():
        try:
            i = int(key)
        except (TypeError, ValueError):
            raise PluginError(model, "assign_index", f"key {key!r} is not an integer index") from None
        if not 0 <= i < len(result) or references[i] is not None:
            raise PluginError(model, "assign_index", f"keys must be exactly 0..{len(result) - 1}, found {key!r}", index=i)
        references[i] = str(ref)
    return references  # type: ignore[return-value]


def check_train(model: str, result: Any) -> list | None:
    """``train``'s result (None or a dict): the class labels it reports for
    the labeled records (its optional ``labels``) as plain values, or None."""
    if result is None:
        return None
    if not isinstance(result, Mapping):
        raise PluginError(model, "train", f"must return None or a dict, got {type(result).__name__}")
    labels = result.get("labels")
    if labels is None:
        return None
    if not isinstance(labels, (list, tuple, np.ndarray)):
        raise PluginError(model, "train", "'labels' must be a list of class labels")
    return jsonable(labels, nan_to_none=False)


def check_test(model: str, result: Any) -> tuple[list, list]:
    """``test``'s result as (predictions, labels): two plain lists of one
    length, in the same order (dicts keyed by record are put in key order)."""
    if not isinstance(result, Mapping):
        raise PluginError(model, "test", f"must return a dict with 'predictions' and 'labels', got {type(result).__name__}")
    missing = [k for k in ("predictions", "labels") if k not in result]
    if missing:
        raise PluginError(model, "test", f"result is missing key(s) {', '.join(missing)}")
    predictions, labels = result["predictions"], result["labels"]
    if isinstance(predictions, Mapping) or isinstance(labels, Mapping):
        if not (isinstance(predictions, Mapping) and isinstance(labels, Mapping)):
            raise PluginError(model, "test", "'predictions' and 'labels' must both be lists or both be dicts")
        extra = set(predictions) ^ set(labels)
        if extra:
            raise PluginError(model, "test", f"predictions and labels cover different records, e.g. {sorted(map(str, extra))[0]}")
        keys = sorted(predictions, key=lambda k: (str(type(k)), k))
        predictions, labels = [predictions[k] for k in keys], [labels[k] for k in keys]
    # NaN stays: storing refuses it, naming the hook, rather than hiding it as null.
    predictions, labels = jsonable(predictions, nan_to_none=False), jsonable(labels, nan_to_none=False)
    if not isinstance(predictions, list) or not isinstance(labels, list):
        raise PluginError(model, "test", "'predictions' and 'labels' must be lists (or dicts keyed by record)")
    if len(predictions) != len(labels):
        raise PluginError(model, "test", f"{len(predictions)} predictions but {len(labels)} labels")
    return predictions, labels


def check_infer(model: str, result: Any) -> tuple[Mapping, Mapping | None] | None:
    """``infer``'s returned ``(outputs, embeddings)`` (``{index: row}`` each,
    embeddings None when it gave none), or None when it streamed them
    through the writer. The rows themselves are the writer's to check."""
    if result is None:
        return None
    if not isinstance(result, Mapping) or not isinstance(result.get("outputs"), Mapping):
        raise PluginError(model, "infer", "must return {'outputs': {index: output}} or None after using writer")
    outputs, embeddings = result["outputs"], result.get("embeddings")
    if embeddings is None:
        return outputs, None
    if not isinstance(embeddings, Mapping):
        raise PluginError(model, "infer", f"'embeddings' must be a dict {{index: embedding}}, got {type(embeddings).__name__}")
    for index in embeddings:
        if index not in outputs:
            raise PluginError(model, "infer", f"index {index} has an embedding but no output", index=_as_index(index))
    return outputs, embeddings


def _as_index(key: Any) -> int | None:
    try:
        return int(key)
    except (TypeError, ValueError):
        return None
