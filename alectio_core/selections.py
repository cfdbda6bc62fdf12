"""Which records each loop labels: an experiment's selections.

Loop k's selection is the records chosen for it: loop 0's are ``initial``
records picked at random (seeded), a later loop's the strategy's pick from
the loop before (or a labeller's, or the platform's). The records labeled
in loop k are the union of the selections of loops 0..k. The
:class:`~alectio_core.engine.Engine` methods of the same names call these.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from .errors import ConflictError, NotFoundError, ValidationError
from .hook_results import as_indices
from .storage import Storage, check_id, check_loop


def selections(storage: Storage, experiment_id: str, upto: int) -> list[np.ndarray]:
    """Selections of loops 0..upto that exist."""
    found = []
    for k in range(upto + 1):
        try:
            found.append(storage.get_selection(experiment_id, k))
        except NotFoundError:
            if k == upto:
                raise NotFoundError(f"experiment {experiment_id!r} has no selection for loop {k}") from None
    return found


def labeled(storage: Storage, experiment_id: str, loop: int) -> np.ndarray:
    """Sorted union of the selections of loops 0..loop."""
    chosen = selections(storage, experiment_id, loop)
    return np.unique(np.concatenate(chosen)) if chosen else np.empty(0, np.int64)


def has_selection(storage: Storage, experiment_id: str, loop: int) -> bool:
    try:
        storage.get_selection(experiment_id, loop)
        return True
    except NotFoundError:
        return False


def record_selection(storage: Storage, experiment_id: str, loop: int, indices: Any) -> np.ndarray:
    """Validate and store the records chosen for ``loop``.

    Rejects duplicates, negative or out-of-pool indices and records
    already selected in earlier loops, naming the offending index.
    """
    loop = check_loop(loop)
    # The pool is read, not cached: an experiment deleted and created again
    # (from another process too) may come back with another pool.
    pool = int(storage.get_experiment(check_id(experiment_id))["pool_size"])
    picked = as_indices(indices, f"selection for loop {loop}")
    if picked.size == 0:
        raise ValidationError(f"selection for loop {loop} is empty")
    bad = (picked < 0) | (picked >= pool)
    if bad.any():
        raise ValidationError(f"selection for loop {loop}: index {int(picked[bad.argmax()])} is outside the pool 0..{pool - 1}")
    uniq, counts = np.unique(picked, return_counts=True)
    if (counts > 1).any():
        raise ValidationError(f"selection for loop {loop}: index {int(uniq[counts.argmax()])} appears more than once")
    try:
        state = storage.get_loop_state(experiment_id, loop)
    except NotFoundError:
        state = None
    if state and state["status"] in ("running", "done"):
        raise ConflictError(f"loop {loop} is {state['status']}; its selection can no longer change")
    if loop > 0:
        earlier = labeled(storage, experiment_id, loop - 1) if has_selection(storage, experiment_id, loop - 1) else np.empty(0, np.int64)
        again = np.intersect1d(picked, earlier)
        if again.size:
            raise ValidationError(f"selection for loop {loop}: index {int(again[0])} was already selected in an earlier loop")
    storage.put_selection(experiment_id, loop, np.sort(picked))
    return np.sort(picked)


def initial_selection(storage: Storage, experiment_id: str) -> np.ndarray:
    """Loop 0's seeded-random ``initial`` records."""
    experiment = storage.get_experiment(check_id(experiment_id))
    rng = np.random.default_rng(experiment["seed"])
    picked = rng.choice(experiment["pool_size"], size=experiment["initial"], replace=False)
    return record_selection(storage, experiment_id, 0, picked)


def wants_selection(experiment: Mapping[str, Any], loop: int, labeled: int) -> bool:
    """Is there a loop after ``loop`` for the strategy to pick records for?"""
    return (
        experiment.get("strategy") is not None
        and int(experiment.get("batch_size") or 0) > 0
        and int(experiment["pool_size"]) > labeled
        and loop + 1 < int(experiment.get("loops") or 0)
    )


def pick_next(storage: Storage, experiment: Mapping[str, Any], loop: int, attempt: str | None = None) -> np.ndarray:
    """The strategy's choice for loop ``loop + 1`` from loop ``loop``'s
    outputs (the committed ones, or those of a running ``attempt``).
    Seeded by the experiment's seed and the loop, so it is repeatable."""
    from .strategies import select

    labels = experiment.get("labels")
    remaining = int(experiment["pool_size"]) - int(labeled(storage, experiment["id"], loop).size)
    picked = select(
        experiment["strategy"],
        storage.iter_outputs(experiment["id"], loop, attempt=attempt),
        min(int(experiment["batch_size"]), remaining),
        seed=int(experiment.get("seed", 0)) + loop + 1,
        task=experiment.get("task", "classification"),
        num_classes=len(labels) if labels else None,
    )
    return np.asarray(picked, dtype=np.int64)
