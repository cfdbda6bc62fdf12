"""The ``diverse_margin`` strategy: margin's most uncertain records, spread
over the pool by clustering (Zhdanov 2019, "Diverse mini-batch active
learning").

Margin alone takes the k records with the smallest gap between the top two
classes; with a young model these pile onto one or two confusions, so a
batch teaches the same thing k times. Here margin short-lists the
``beta * k`` most uncertain records (``beta`` = 10), k-means (k-means++
seeding from the strategy's generator, then Lloyd iterations) splits the
short list into k clusters in output space, and each cluster gives its most
uncertain record. Output space is what ``kcenter`` uses: softmax
probabilities for ``classification``, per-value sigmoids for ``multilabel``
and ``object_detection``, raw outputs otherwise; the uncertainty is
``margin``'s score for the task.

Memory: one chunk plus the short list (``beta * k`` rows) and a bounded
block of distances; time O(iterations * beta * k * k * width) for the
clustering, so it grows with the square of the batch: fine for batches of a
few hundred, slow for several thousand (use ``margin`` there).
"""

from __future__ import annotations

from typing import Callable, Optional

import numpy as np

from alectio_core.hookspecs import hookimpl
from alectio_core.strategies import Chunks, check_pool, top_k_positions
from alectio_plugins.strategy_kcenter import activate
from alectio_plugins.strategy_uncertainty import Margin


#: Point-to-centre distances computed at once (float64: 32 MiB).
BLOCK = 1 << 22


def kmeans(points: np.ndarray, k: int, rng: np.random.Generator, iterations: int) -> np.ndarray:
    """Cluster of each point: k-means++ seeding, then Lloyd iterations."""
    sq = np.einsum("ij,ij->i", points, points)

    def distances(centers: np.ndarray) -> np.ndarray:
        return np.maximum(sq[:, None] - 2 * points @ centers.T + np.einsum("ij,ij->i", centers, centers), 0)

    def nearest_center(centers: np.ndarray) -> np.ndarray:
        """``distances(centers).argmin(axis=1)`` in row blocks: memory stays
        bounded whatever k is."""
        c_sq = np.einsum("ij,ij->i", centers, centers)
        rows = max(1, BLOCK // len(centers))
        return np.concatenate([
            np.maximum(sq[start : start + rows, None] - 2 * points[start : start + rows] @ centers.T + c_sq, 0).argmin(axis=1)
            for start in range(0, len(points), rows)
        ])

    centers = points[[int(rng.integers(len(points)))]]
    nearest = distances(centers)[:, 0]
    for _ in range(1, k):
        total = float(nearest.sum())
        pick = int(rng.choice(len(points), p=nearest / total)) if total > 0 else int(rng.integers(len(points)))
        centers = np.vstack([centers, points[pick]])
        np.minimum(nearest, distances(centers[-1:])[:, 0], out=nearest)
    labels = nearest_center(centers)
    for _ in range(iterations):
        for c in range(k):
            members = labels == c
            if members.any():  # an emptied cluster keeps its centre
                centers[c] = points[members].mean(axis=0)
        new = nearest_center(centers)
        if np.array_equal(new, labels):
            break
        labels = new
    return labels


class DiverseMargin:
    name = "diverse_margin"

    def __init__(self, beta: int = 10, iterations: int = 20):
        self.beta = beta
        self.iterations = iterations
        self.margin = Margin()
        self.margin.name = self.name  # its errors name the strategy the experiment chose (the default, often unnamed)

    def select(
        self, chunks: Chunks, k: int, *, rng: np.random.Generator, task: str, num_classes: Optional[int]
    ) -> np.ndarray:
        return self.select_with_scores(chunks, k, rng=rng, task=task, num_classes=num_classes)[0]

    def select_with_scores(
        self, chunks: Chunks, k: int, *, rng: np.random.Generator, task: str, num_classes: Optional[int]
    ) -> tuple[np.ndarray, np.ndarray]:
        """``select``'s records, most uncertain first, with each one's margin uncertainty."""
        m = self.beta * k
        scores: np.ndarray = np.empty(0, np.float32)  # annotated: numpy 2.2's stubs type it 1-D, concatenate's result not
        idx: np.ndarray = np.empty(0, np.int64)
        vals: Optional[np.ndarray] = None
        seen = 0
        for chunk_idx, chunk_vals in chunks:
            chunk_idx = np.asarray(chunk_idx, np.int64)
            chunk_vals = np.asarray(chunk_vals, np.float32)
            seen += len(chunk_idx)
            chunk_scores = self.margin.score_all(chunk_vals, task=task, num_classes=num_classes)
            scores = np.concatenate([scores, chunk_scores])
            idx = np.concatenate([idx, chunk_idx])
            vals = chunk_vals if vals is None else np.concatenate([vals, chunk_vals])
            if len(idx) > m:  # keep the short list only: memory stays one chunk plus m rows
                keep = top_k_positions(scores, idx, m, ordered=False)
                scores, idx, vals = scores[keep], idx[keep], vals[keep]
        check_pool(k, seen)
        assert vals is not None, "no chunk, so k == 0: a caller asks for k >= 1 (strategies.select)"
        order = np.argsort(idx, kind="stable")  # the clustering must not depend on how the pool was chunked
        scores, idx, vals = scores[order], idx[order], vals[order]
        labels = kmeans(activate(vals, task).astype(np.float64), k, rng, self.iterations)
        best = top_k_positions(scores, idx, len(idx))  # most uncertain first
        picked: list[int] = []
        taken: set[int] = set()
        for position in best:  # each cluster's most uncertain record ...
            if labels[position] not in taken:
                taken.add(int(labels[position]))
                picked.append(int(position))
        if len(picked) < k:  # ... and, should clusters merge, the next most uncertain
            chosen = set(picked)
            picked += [int(p) for p in best if int(p) not in chosen][: k - len(picked)]
        chosen_rows = np.asarray(picked[:k])
        chosen_rows = chosen_rows[np.lexsort((idx[chosen_rows], -scores[chosen_rows]))]
        return idx[chosen_rows], scores[chosen_rows].astype(np.float64)

    def __repr__(self) -> str:
        return f"<strategy diverse_margin beta={self.beta}>"


@hookimpl(trylast=True)  # a third-party plugin registering the same name is called first, and wins
def register_strategies(register: Callable[..., None]) -> None:
    register(DiverseMargin())
