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
then once (526 MiB peak at 1M x 64); time at most ``O(k x rows x width)``
for the picks, single-threaded, less where points can be skipped (see
:func:`farthest_first`; at 1M x 64, k=1000, on a loaded 2-core machine:
33-49 s on a mixture of clusters, 92-105 s on a Gaussian cloud), plus
``O(rows x labeled x width)`` (BLAS) for the start.
"""

from __future__ import annotations

from typing import Callable, Optional

import numpy as np

from alectio_core.hookspecs import hookimpl
from alectio_core.strategies import Chunks, Labeled, draw_salt
from alectio_plugins.clustering import nearest_centers, squared_norms
from alectio_plugins.features import labeled_features, read_pool

def farthest_first(points: np.ndarray, k: int, start: Optional[np.ndarray], rng: np.random.Generator) -> np.ndarray:
    """Positions of ``k`` greedy centers among ``points``, starting from the
    centers ``start`` (the labeled records' features), or from a center drawn
    from ``rng`` when ``start`` is ``None``.

    Each point keeps its squared distance to the nearest center and which
    center that is (its owner). A new center c can only come closer to a
    point x than x's owner a if ``|c - a| < 2 |x - a|`` (triangle
    inequality), so only those points are measured: one gather over the
    pool instead of a pass over every feature, which on clustered
    embeddings skips most of the pool. When more than half the pool may
    move (distances that concentrate, as in a Gaussian cloud) every point
    is measured, as without the test, and the test rests for 16 picks.
    Distances use
    ``|x|^2 - 2 x.c + |c|^2`` with a single-threaded einsum: a threaded gemv
    this size gains nothing and suffers on a busy machine."""
    points = np.ascontiguousarray(points, dtype=np.float32)
    n = len(points)
    sq = squared_norms(points)
    given = 0 if start is None else len(start)
    centers = np.empty((given + k, points.shape[1]), np.float32)
    if start is None:
        nearest = np.full(n, np.inf, np.float32)
        owner = np.zeros(n, np.int64)
        center = int(rng.integers(n))
    else:
        centers[:given] = start
        owner, nearest = nearest_centers(points, centers[:given])
        center = int(np.argmax(nearest))
    sq_centers = squared_norms(centers[:given]).astype(np.float32)
    sq_centers = np.concatenate([sq_centers, np.empty(k, np.float32)])
    reach = 2 * np.sqrt(nearest)  # a center farther than this from x's owner cannot come closer to x
    chosen = np.empty(k, np.int64)
    test_at = 1 if given else 2  # the next pick whose movable points are looked for
    for j in range(k):
        chosen[j] = center
        c = points[center]
        m = given + j  # this center's id
        movable = None
        if j + 1 >= test_at:
            apart = sq_centers[:m] - 2 * (centers[:m] @ c) + sq[center]
            np.sqrt(np.maximum(apart, 0, out=apart), out=apart)
            # with a margin for rounding: a point kept out is at least 0.1% farther from c than from its owner
            movable = np.flatnonzero(apart[owner] * (1 - 1e-3) < reach)
            if len(movable) > n // 2:  # the test does not pay: measure everything for the next 16 picks
                movable, test_at = None, j + 17
        if movable is None:
            dist = np.einsum("ij,j->i", points, c)
            dist *= -2
            dist += sq
            dist += sq[center]
            closer = np.flatnonzero(dist < nearest)
            dist = dist[closer]
        else:
            dist = np.einsum("ij,j->i", points[movable], c)
            dist *= -2
            dist += sq[movable]
            dist += sq[center]
            keep = dist < nearest[movable]
            closer, dist = movable[keep], dist[keep]
        nearest[closer] = dist
        owner[closer] = m
        reach[closer] = 2 * np.sqrt(np.maximum(dist, 0))
        centers[m] = c
        sq_centers[m] = sq[center]
        nearest[center] = -np.inf  # never again, even among exact duplicates
        reach[center] = 0
        owner[center] = m
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
        return pool.indices[farthest_first(points, k, start, rng)]

    def __repr__(self) -> str:
        return f"<strategy coreset max_bytes={self.max_bytes}>"


@hookimpl(trylast=True)  # a third-party plugin registering the same name is called first, and wins
def register_strategies(register: Callable[..., None]) -> None:
    register(Coreset())
