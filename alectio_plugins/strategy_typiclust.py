"""The ``typiclust`` strategy: typical records of uncovered clusters (Hacohen et al. 2022).

Meant for the cold start, where uncertainty is noise: the pool and the
labeled records are clustered together (k-means on the embeddings) into
``labeled + k`` clusters (at most ``max_clusters``, default 1,000, as the
authors' code caps them at 500); each pick comes from the cluster with the fewest
labeled-or-picked records, the largest first among equals (clusters of at
most 5 records only when no other has a pool record left), and is that
cluster's most typical pool record left: the highest typicality
``1 / mean distance to its K nearest neighbours in the cluster``,
``K = min(20, cluster size - 1)``. Once every cluster is covered the picks
go round the clusters again, fewest first. Ties go to the lower record
index.

Clustering: Lloyd's k-means from k-means++ seeds drawn from the strategy's
generator, at most 50 iterations (:mod:`alectio_plugins.clustering`).
Without embeddings the records are clustered in output space (softmax
probabilities for ``classification``, sigmoids for ``multilabel`` and
``object_detection``, raw outputs otherwise). NaN or inf rows are an error
naming how many.

Bound: the pool is used whole up to ``max_rows`` records (default 20,000),
else a seeded uniform subsample of ``max_rows`` records
(:mod:`alectio_plugins.features`), and so are the labeled records (a
subsample of theirs counts a cluster's coverage). k-means costs ``rows x
clusters x width`` per iteration (at most 40,000 x 1,000 x width), the
typicality ``size²`` per cluster picked from (in blocks of 32 MiB), so time
and memory stay bounded whatever the pool and the labeled set.
"""

from __future__ import annotations

from typing import Callable, Optional

import numpy as np

from alectio_core.hookspecs import hookimpl
from alectio_core.strategies import Chunks, Labeled, draw_salt, hash_keys, top_k_positions
from alectio_plugins.features import labeled_features, read_pool
from alectio_plugins.clustering import BLOCK, kmeans, squared_norms

#: Clusters of at most this many records are used last (Hacohen et al.'s MIN_CLUSTER_SIZE).
SMALL_CLUSTER = 5
#: Neighbours in a record's typicality.
NEIGHBOURS = 20


def typicality(points: np.ndarray) -> np.ndarray:
    """``1 / mean distance to the K nearest other points`` for each point."""
    n = len(points)
    if n == 1:
        return np.full(1, np.inf)
    neighbours = min(NEIGHBOURS, n - 1)
    sq = squared_norms(points)
    out = np.empty(n)
    rows = max(1, BLOCK // n)
    for start in range(0, n, rows):
        d = points[start : start + rows] @ points.T
        d *= -2
        d += sq
        d += sq[start : start + rows, None]
        np.maximum(d, 0, out=d)
        d[np.arange(len(d)), np.arange(start, start + len(d))] = np.inf  # not its own neighbour
        nearest = np.partition(d, neighbours - 1, axis=1)[:, :neighbours]
        out[start : start + rows] = 1 / (np.sqrt(nearest).mean(axis=1) + 1e-12)
    return out


class TypiClust:
    """TypiClust: cluster pool and labeled records, pick typical records of uncovered clusters."""

    name = "typiclust"

    def __init__(self, max_rows: int = 20_000, max_clusters: int = 1000):
        self.max_rows = max_rows
        self.max_clusters = max_clusters

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
        salt = draw_salt(rng)
        pool = read_pool(self.name, chunks, embeddings, k, max_rows=self.max_rows, salt=salt)
        points = pool.features(task)
        known = labeled_features(self.name, labeled, pool, task)
        n = len(points)
        if known is not None:
            assert labeled is not None
            if len(known) > self.max_rows:
                known = known[np.sort(top_k_positions(-hash_keys(labeled.indices, salt), labeled.indices, self.max_rows))]
            points = np.concatenate([points, known])
        labels = kmeans(points, min(len(points) - n + k, self.max_clusters, len(points)), rng)
        return pool.indices[pick(labels, n, k, points)]

    def __repr__(self) -> str:
        return f"<strategy typiclust max_rows={self.max_rows} max_clusters={self.max_clusters}>"


def pick(labels: np.ndarray, n: int, k: int, points: np.ndarray) -> np.ndarray:
    """Positions (< n, the pool's rows) of k picks; rows from n on are labeled."""
    clusters = int(labels.max()) + 1
    size = np.bincount(labels, minlength=clusters)
    covered = np.bincount(labels[n:], minlength=clusters)
    available = np.bincount(labels[:n], minlength=clusters)  # pool records not yet picked
    small = size <= SMALL_CLUSTER
    scores: dict[int, np.ndarray] = {}
    taken = np.zeros(n, bool)
    chosen = np.empty(k, np.int64)
    for j in range(k):
        # with pool records left; not small unless nothing else is; fewest covering records; largest; lowest id
        order = np.lexsort((np.arange(clusters), -size, covered, small, available == 0))
        c = int(order[0])
        members = np.flatnonzero(labels == c)
        if c not in scores:
            scores[c] = typicality(points[members])
        candidates = np.where((members < n) & ~taken[np.minimum(members, n - 1)], scores[c], -np.inf)
        best = int(members[np.argmax(candidates)])
        chosen[j] = best
        taken[best] = True
        covered[c] += 1
        available[c] -= 1
    return chosen


@hookimpl(trylast=True)  # a third-party plugin registering the same name is called first, and wins
def register_strategies(register: Callable[..., None]) -> None:
    register(TypiClust())
