"""k-means++ seeding and Lloyd's k-means, in numpy (for badge and typiclust).

Points may be given factored, as the outer products ``a_i ⊗ e_i`` (badge's
gradient embeddings), so that distances cost ``rows x (|a| + |e|)`` instead
of ``rows x |a| x |e|``:
``|a⊗e - b⊗f|² = |a|²|e|² + |b|²|f|² - 2 (a·b)(e·f)``.
Plain points are ``a`` with ``e`` a column of ones.

Our own rather than scikit-learn's: importing ``sklearn.cluster`` costs
seconds on a busy machine, and its threaded k-means is many times slower
than these few BLAS calls there.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

#: Points x centers per block of a distance matrix (float32: 32 MiB).
BLOCK = 1 << 23


def squared_norms(x: np.ndarray) -> np.ndarray:
    return np.einsum("ij,ij->i", x, x)


def kmeans_pp(
    a: np.ndarray, e: Optional[np.ndarray], k: int, rng: np.random.Generator, *, first: Optional[int] = None
) -> np.ndarray:
    """Positions of ``k`` k-means++ seeds (D² sampling from ``rng``) of the
    points ``a_i ⊗ e_i`` (``e=None``: the points ``a_i``). The first seed is
    ``first``, else drawn uniformly. When every point left is at distance 0
    of the seeds (duplicates), the rest are drawn uniformly."""
    sq = squared_norms(a) * (squared_norms(e) if e is not None else 1)
    nearest = np.full(len(a), np.inf)
    chosen = np.empty(k, np.int64)
    center = int(rng.integers(len(a))) if first is None else first
    for j in range(k):
        chosen[j] = center
        dots = np.einsum("ij,j->i", a, a[center])
        if e is not None:
            dots *= np.einsum("ij,j->i", e, e[center])
        dist = sq - 2 * dots + sq[center]
        np.maximum(dist, 0, out=dist)
        np.minimum(nearest, dist, out=nearest)
        nearest[center] = 0  # never again, even at a rounding error's distance
        if j + 1 == k:
            break
        cumulative = np.cumsum(nearest)
        if cumulative[-1] <= 0:  # all at distance 0, and they stay there: the rest uniformly
            rest = np.setdiff1d(np.arange(len(a)), chosen[: j + 1])
            chosen[j + 1 :] = rng.choice(rest, size=k - j - 1, replace=False)
            break
        center = int(np.searchsorted(cumulative, rng.random() * cumulative[-1], side="right"))
    return chosen


def nearest_centers(points: np.ndarray, centers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each point's nearest center (ties to the lower one) and its squared
    distance, in blocks of at most ``BLOCK`` distances."""
    sq_points, sq_centers = squared_norms(points), squared_norms(centers)
    label = np.empty(len(points), np.int64)
    dist = np.empty(len(points), np.float32)
    rows = max(1, BLOCK // max(1, len(centers)))
    for start in range(0, len(points), rows):
        d = points[start : start + rows] @ centers.T
        d *= -2
        d += sq_centers
        d += sq_points[start : start + rows, None]
        label[start : start + rows] = best = np.argmin(d, axis=1)
        dist[start : start + rows] = d[np.arange(len(d)), best]
    np.maximum(dist, 0, out=dist)
    return label, dist


def kmeans(points: np.ndarray, k: int, rng: np.random.Generator, *, iterations: int = 50) -> np.ndarray:
    """The cluster of each point: Lloyd's iterations from k-means++ seeds,
    until no point changes cluster or after ``iterations``. A cluster left
    empty keeps its center."""
    points = np.ascontiguousarray(points, dtype=np.float32)
    centers = points[kmeans_pp(points, None, k, rng)].copy()
    labels = np.full(len(points), -1, np.int64)
    for _ in range(iterations):
        new, _ = nearest_centers(points, centers)
        if np.array_equal(new, labels):
            break
        labels = new
        counts = np.bincount(labels, minlength=k)
        sums = np.stack([np.bincount(labels, weights=column, minlength=k) for column in points.T], axis=1)
        filled = counts > 0
        centers[filled] = (sums[filled] / counts[filled, None]).astype(np.float32)
    return labels
