"""The ``stabilizing_predictions`` stopping criterion (Bloodgood &
Vijay-Shanker, "A Method for Stopping Active Learning Based on Stabilizing
Predictions and the Need for User-Adjustable Stopping", CoNLL 2009).

A fixed *stop set* (``stop_set`` records of the pool, drawn once from the
experiment's seed) is predicted by every loop's model; Cohen's kappa
measures how much two consecutive loops' predictions agree beyond chance.
When the mean kappa of the last ``window`` comparisons reaches
``threshold``, the model has stopped changing its mind and more labels
are unlikely to change it: stop.

The stop set is drawn from the pool, so some of its records get labelled
along the way; a labelled record has no prediction in later loops and is
left out of the comparisons from then on (each pair of loops is compared on
the stop-set records both loops predicted). Predictions are the arg-max
class (``classification``) or, per label, logit > 0 (``multilabel``: the
records x labels decisions are compared as one binary sequence). Reading a
loop's outputs streams its chunks and keeps only the stop set's rows.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Mapping

import numpy as np

from alectio_core.hookspecs import hookimpl
from alectio_core.stopping import StopContext

TASKS = ("classification", "multilabel")


def stop_set(experiment: Mapping[str, Any], size: int) -> np.ndarray:
    """``size`` records of the pool (all of a smaller pool), sorted: the same
    for every loop of the experiment, and apart from its initial draw."""
    pool = int(experiment["pool_size"])
    rng = np.random.default_rng([int(experiment.get("seed", 0)), 0x5709])  # its own stream of the seed
    return np.sort(rng.choice(pool, size=min(size, pool), replace=False)).astype(np.int64)


def predictions(chunks: Iterable[tuple[np.ndarray, np.ndarray]], records: np.ndarray, task: str) -> tuple[np.ndarray, np.ndarray]:
    """The sorted indices of ``records`` found in ``chunks``, and each one's
    prediction (a class id, or a row of 0/1 per label)."""
    found, predicted = [], []
    for indices, values in chunks:
        indices = np.asarray(indices, np.int64)
        at = np.minimum(np.searchsorted(records, indices), len(records) - 1)
        hit = records[at] == indices
        if not hit.any():
            continue
        rows = np.asarray(values)[hit]
        found.append(indices[hit])
        predicted.append(rows.argmax(axis=1) if task == "classification" else (rows > 0).astype(np.int8))
    if not found:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    indices, values = np.concatenate(found), np.concatenate(predicted)
    order = np.argsort(indices, kind="stable")
    return indices[order], values[order]


def cohen_kappa(a: np.ndarray, b: np.ndarray) -> float:
    """Cohen's kappa of two equally long label sequences: 1 when both agree
    on every record (also when both predict one class throughout, where
    the formula is 0/0)."""
    labels, inverse = np.unique(np.concatenate([a, b]), return_inverse=True)
    c, n = len(labels), len(a)
    table = np.bincount(inverse[:n] * c + inverse[n:], minlength=c * c).reshape(c, c).astype(np.float64)
    observed = np.trace(table) / n
    expected = float(table.sum(axis=1) @ table.sum(axis=0)) / n**2
    if observed == 1.0:
        return 1.0
    return float((observed - expected) / (1.0 - expected))


class StabilizingPredictions:
    name = "stabilizing_predictions"
    settings = {"threshold": 0.99, "window": 3, "stop_set": 2000}

    def validate(self, task: str, settings: Mapping[str, Any]) -> None:
        if task not in TASKS:
            raise ValueError(f"compares predicted classes, so it works on {' and '.join(TASKS)} models, not {task!r}; use plateau")
        if not -1.0 <= settings["threshold"] <= 1.0:
            raise ValueError(f"threshold is a kappa, between -1 and 1; got {settings['threshold']}")
        for key in ("window", "stop_set"):
            if settings[key] < 1:
                raise ValueError(f"{key} must be >= 1, got {settings[key]}")

    def check(self, context: StopContext) -> str | None:
        window, threshold = context.settings["window"], context.settings["threshold"]
        if context.loop < window:
            return None  # fewer than `window` comparisons so far
        task = context.experiment.get("task", "classification")
        records = stop_set(context.experiment, context.settings["stop_set"])
        loops = range(context.loop - window, context.loop + 1)
        predicted = [predictions(context.outputs(k), records, task) for k in loops]
        kappas, compared = [], 0
        for (ia, pa), (ib, pb) in zip(predicted, predicted[1:]):
            common, at_a, at_b = np.intersect1d(ia, ib, assume_unique=True, return_indices=True)
            if common.size == 0:
                return None  # every stop-set record is labelled: nothing left to compare
            kappas.append(cohen_kappa(pa[at_a].ravel(), pb[at_b].ravel()))
            compared = int(common.size)
        mean = float(np.mean(kappas))
        if mean < threshold:
            return None
        return (
            f"predictions stabilized: mean Cohen's kappa {mean:.4f} >= {threshold} over the last {window} pairs of "
            f"consecutive loops, on {compared:,} unlabelled stop-set records"
        )

    def __repr__(self) -> str:
        return f"<stopping criterion {self.name}>"


@hookimpl(trylast=True)  # a third-party plugin registering the same name is called first, and wins
def register_stopping(register: Callable[..., None]) -> None:
    register(StabilizingPredictions())
