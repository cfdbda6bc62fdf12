"""The ``coreset`` strategy: k-center greedy from the labeled set (Sener & Savarese 2018).

Records are points in the model's embedding space (``writer.add(index,
output, embedding=...)``). Every pool record starts at its distance to the
nearest labeled record; each pick is the pool record farthest from
everything labeled or picked so far, so the first pick is the record
farthest from the labeled set and the batch covers what the labeled set
does not. Ties go to the lower record index.

Fallbacks: a model that writes no embeddings is read in output space
(softmax probabilities for ``classification``, per-value sigmoids for
``multilabel`` and ``object_detection``, raw outputs otherwise), for the pool
and the labeled records alike; with nothing labeled the first center is a
random pool record. Rows holding NaN or inf are an error naming how many.

Bound: the whole pool, up to ``max_bytes`` of features (default 1 GiB:
4M records of 64-wide embeddings, 1M of 256); past that a seeded uniform
subsample of that size (:mod:`alectio_plugins.features`). The whole pool
because a subsample does not keep the covering radius (the largest
distance from any record of the pool to its nearest center, labeled
included) within 5% of the full greedy's: measured with
``benchmarks/bench_coreset.py`` on 1M x 64 embeddings, k=1000 and 1,000
labeled, a subsample of 250,000 or even 500,000 records gives 1.09-1.10x
the full greedy's radius (the records it never saw include the farthest
ones); past the bound the 5% is not promised (a model writing 1M x 1000
outputs and no embeddings is read from a subsample of 268,435 records).
Memory: the features (``rows x width`` float32) twice while reading,
then once (526 MiB peak at 1M x 64); time ``O(k x rows x width)`` for the
picks, single-threaded (52-82 s at 1M x 64, k=1000, on a loaded 2-core
machine), plus ``O(rows x labeled x width)`` (BLAS) for the start.
"""

from __future__ import annotations

from typing import Callable, Optional

import numpy as np

from alectio_core.hookspecs import hookimpl
from alectio_core.strategies import Chunks, Labeled, draw_salt
from alectio_plugins.clustering import nearest_centers, squared_norms
from alectio_plugins.features import labeled_features, read_pool

def farthest_first(points: np.ndarray, k: int, nearest: Optional[np.ndarray], rng: np.random.Generator) -> np.ndarray:
    """Positions of ``k`` greedy centers among ``points``.

    ``nearest`` is each point's squared distance to the centers it starts
    with (the labeled records), or ``None`` for none (then the first center
    is drawn from ``rng``). Distances use ``|x|^2 - 2 x.c + |c|^2`` with a
    single-threaded einsum per pick: a threaded gemv this size gains nothing
    and suffers on a busy machine."""
    points = np.ascontiguousarray(points, dtype=np.float32)
    sq = squared_norms(points)
    if nearest is None:
        nearest = np.full(len(points), np.inf, np.float32)
        center = int(rng.integers(len(points)))
    else:
        nearest = nearest.astype(np.float32, copy=True)
        center = int(np.argmax(nearest))
    chosen = np.empty(k, np.int64)
    for j in range(k):
        chosen[j] = center
        dist = np.einsum("ij,j->i", points, points[center])
        dist *= -2
        dist += sq
        dist += sq[center]
        np.minimum(nearest, dist, out=nearest)
        nearest[center] = -np.inf  # never again, even among exact duplicates
        center = int(np.argmax(nearest))
    return chosen


class Coreset:
    """k-center greedy on embeddings, starting from the labeled records."""

    name = "coreset"

    def __init__(self, max_bytes: int = 1 << 30):
        self.max_bytes = max_bytes

    def select(
        self,
        chunks: Chunks,
        k: int,
        *,
        rng: np.random.Generator,
        task: str,
        num_classes: Optional[int],
        embeddings: Optional[Chunks] = None,
        labeled: Optional[Labeled] = None,
    ) -> np.ndarray:
        pool = read_pool(self.name, chunks, embeddings, k, salt=draw_salt(rng), max_bytes=self.max_bytes)
        points = pool.features(task)
        start = labeled_features(self.name, labeled, pool, task)
        nearest = nearest_centers(points, start)[1] if start is not None else None
        return pool.indices[farthest_first(points, k, nearest, rng)]

    def __repr__(self) -> str:
        return f"<strategy coreset max_bytes={self.max_bytes}>"


@hookimpl(trylast=True)  # a third-party plugin registering the same name is called first, and wins
def register_strategies(register: Callable[..., None]) -> None:
    register(Coreset())
