"""Which records each loop labels: an experiment's selections.

Loop k's selection is the records chosen for it: loop 0's are ``initial``
records picked at random (seeded), a later loop's the strategy's pick from
the loop before (or a labeller's, or the platform's). The records labeled
in loop k are the union of the selections of loops 0..k (in labels mode
"alectio", minus the records people skipped: see :mod:`.labels`). A
strategy's pick is stored in its order, best first, with its score of each
record when it gives them; a labeller's choice and loop 0's draw, sorted.
The :class:`~alectio_core.engine.Engine` methods of the same names call these.
"""

from __future__ import annotations

from collections import deque
from itertools import chain
from typing import Any, Callable, Iterator, Mapping

import numpy as np

from .errors import ConflictError, NotFoundError, ValidationError
from .hook_results import as_indices
from .storage import Storage, cannot, check_id, check_loop, takes


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


def record_selection(
    storage: Storage, experiment_id: str, loop: int, indices: Any, scores: Any = None, *, ranked: bool = False
) -> np.ndarray:
    """Validate and store the records chosen for ``loop``: ``ranked`` (a
    strategy's pick) or with ``scores`` aligned with them, in the order
    given, best first; else (a labeller's choice, loop 0's random draw)
    sorted.

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
    if scores is None and not ranked:
        picked = np.sort(picked)
    if scores is not None:
        scores = np.asarray(scores, dtype=np.float64)
        if scores.shape != picked.shape:
            raise ValidationError(f"selection for loop {loop}: {scores.size} scores for {picked.size} records")
        if takes(storage.put_selection, "scores"):
            storage.put_selection(experiment_id, loop, picked, scores=scores)
            return picked
    storage.put_selection(experiment_id, loop, picked)  # a backend written before scores stores none
    return picked


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


def strategy_inputs(experiment: Mapping[str, Any]) -> frozenset[str]:
    """The inputs beyond logits the experiment's strategy declares (none
    without a strategy)."""
    from . import plugins
    from .strategies import declared_inputs

    name = experiment.get("strategy")
    return declared_inputs(plugins.get_strategy(name)) if name is not None else frozenset()


def check_storage_for(storage: Storage, inputs: frozenset[str]) -> None:
    """A backend written before embeddings and the labeled part serves a
    strategy that needs neither; one that needs them is refused, naming it."""
    if "labeled" in inputs and not (takes(storage.open_output_sink, "part") and takes(storage.iter_outputs, "part")):
        raise cannot(storage, "store the labeled records' outputs, which the experiment's strategy needs")
    if inputs & {"embeddings", "labeled"} and not takes(storage.iter_outputs, "embeddings"):
        raise cannot(storage, "store embeddings, which the experiment's strategy needs")


class _Paired:
    """Outputs and embeddings from one read of storage, as the two aligned
    streams a strategy takes. A strategy that walks them in step (zip) gets
    both from one read; a side left more than ``SLACK`` chunks behind (a
    strategy that reads one stream whole first, or only one) is dropped from
    the shared read and, if it is read after all, served by a second read of
    storage: memory stays at a few chunks either way."""

    SLACK = 2

    def __init__(self, open_stream: Callable[[], Iterator[tuple]]):
        self.open = open_stream
        source = open_stream()
        first = next(source, None)
        self.has_embeddings = first is not None and first[2] is not None
        self.source = chain([first], source) if first is not None else iter(())
        self.pending: tuple[deque, deque] = (deque(), deque())
        self.taken = [0, 0]
        self.detached = [False, False]

    def side(self, which: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        other = 1 - which
        while not self.detached[which]:
            if self.pending[which]:
                chunk = self.pending[which].popleft()
            else:
                chunk = next(self.source, None)
                if chunk is None:
                    return
                if not self.detached[other]:
                    self.pending[other].append(chunk)
                    if len(self.pending[other]) > self.SLACK:
                        self.pending[other].clear()
                        self.detached[other] = True
            self.taken[which] += 1
            yield chunk[0], chunk[1 + which]
        for n, chunk in enumerate(self.open()):  # the second read: skip what this side was given
            if n >= self.taken[which]:
                self.taken[which] += 1
                yield chunk[0], chunk[1 + which]


def labeled_input(storage: Storage, experiment_id: str, loop: int, attempt: str | None, indices: np.ndarray) -> Any:
    """The ``labeled`` input: the labeled records with this loop's model's
    outputs and embeddings for them (part ``"labeled"``), row i for
    ``indices[i]``; values None when none were stored."""
    from .strategies import Labeled

    chunks = list(storage.iter_outputs(experiment_id, loop, attempt=attempt, part="labeled", embeddings=True))
    if not chunks:
        return Labeled(indices)
    idx = np.concatenate([c[0] for c in chunks])
    order = np.argsort(idx, kind="stable")
    if not np.array_equal(idx[order], indices):
        raise ValidationError(f"loop {loop}'s labeled outputs do not cover its {indices.size} labeled records")
    values = np.concatenate([c[1] for c in chunks])[order]
    embeddings = None if chunks[0][2] is None else np.concatenate([c[2] for c in chunks])[order]
    return Labeled(indices, values, embeddings)


def pick_next(
    storage: Storage, experiment: Mapping[str, Any], loop: int, attempt: str | None = None
) -> tuple[np.ndarray, np.ndarray | None]:
    """The strategy's choice for loop ``loop + 1`` from loop ``loop``'s
    outputs (the committed ones, or those of a running ``attempt``), best
    first, with its scores (None from a strategy that gives none).
    Seeded by the experiment's seed and the loop, so it is repeatable.
    The strategy gets the embeddings and the labeled records' outputs only
    when its ``select`` declares them."""
    from .strategies import select

    eid = experiment["id"]
    labels = experiment.get("labels")
    done = labeled(storage, eid, loop)
    remaining = int(experiment["pool_size"]) - int(done.size)
    wants = strategy_inputs(experiment)
    check_storage_for(storage, wants)
    extra: dict[str, Any] = {}
    chunks: Any
    if "embeddings" in wants:
        paired = _Paired(lambda: storage.iter_outputs(eid, loop, attempt=attempt, embeddings=True))
        chunks = paired.side(0)
        extra["embeddings"] = paired.side(1) if paired.has_embeddings else None
    else:
        chunks = storage.iter_outputs(eid, loop, attempt=attempt)
    if "labeled" in wants:
        extra["labeled"] = labeled_input(storage, eid, loop, attempt, done)
    picked, scores = select(
        experiment["strategy"],
        chunks,
        min(int(experiment["batch_size"]), remaining),
        seed=int(experiment.get("seed", 0)) + loop + 1,
        task=experiment.get("task", "classification"),
        num_classes=len(labels) if labels else None,
        mc_samples=experiment.get("mc_samples"),
        return_scores=True,
        **extra,
    )
    return np.asarray(picked, dtype=np.int64), scores
