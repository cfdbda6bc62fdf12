"""The ``kcenter`` strategy: batch-aware diversity by k-center greedy.

Records are points in output space (softmax probabilities for
``classification``, per-value sigmoids for ``multilabel`` and
``object_detection``, raw outputs for other tasks). Starting from a random
record, each next pick is the record farthest (euclidean) from everything
picked so far (Sener & Savarese 2018, without a labeled set), so the batch
covers the pool instead of piling onto one uncertain region.

Memory bound: the greedy works on a seeded uniform subsample of
``m = max(k, min(max_rows, max_bytes // (4 * width)))`` records (defaults:
25,000 rows and 64 MiB: 25 candidates a pick for a batch of 1,000), drawn
while streaming by keeping the m smallest hash keys (see
``alectio_core.strategies.hash_keys``); once the sample is full, a chunk's
rows whose key cannot enter it are dropped before any merge. Peak memory is
one chunk plus at most ``4 * m * width * 4`` bytes (merging while
streaming, then the sorted, activated and transposed copies of the sample),
whatever the pool size; a pool of at most m records is used whole. Time is
O(k * m * width), single-threaded.

Outputs holding NaN or inf have no place in a distance: a pool with any such
record is a ``ValidationError`` naming how many and the first (counted over
the whole pool, sampled or not). The outputs writer refuses them, so this
happens only through ``select()`` on an array or a third-party storage.
"""

from __future__ import annotations

from typing import Callable, Optional

import numpy as np

from alectio_core.errors import ValidationError
from alectio_core.hookspecs import hookimpl
from alectio_core.strategies import Chunks, check_pool, draw_salt, hash_keys, top_k_positions


def activate(x: np.ndarray, task: str) -> np.ndarray:
    if task == "classification":
        e = np.exp(x - x.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)
    if task in ("multilabel", "object_detection"):
        return 1 / (1 + np.exp(-x))
    return x


class KCenterGreedy:
    """k-center greedy on a bounded, seeded subsample of the pool."""

    name = "kcenter"

    def __init__(self, max_rows: int = 25_000, max_bytes: int = 64 << 20):
        self.max_rows = max_rows
        self.max_bytes = max_bytes

    def select(
        self, chunks: Chunks, k: int, *, rng: np.random.Generator, task: str, num_classes: Optional[int]
    ) -> np.ndarray:
        salt = draw_salt(rng)
        keys = np.empty(0)
        idx = np.empty(0, np.int64)
        vals: Optional[np.ndarray] = None
        seen = 0
        not_finite: list[np.ndarray] = []  # the records holding NaN or inf, per chunk
        threshold = np.inf  # the largest key kept once the sample is full
        for chunk_idx, chunk_vals in chunks:
            chunk_idx = np.asarray(chunk_idx, np.int64)
            chunk_vals = np.asarray(chunk_vals, np.float32)
            seen += len(chunk_idx)
            # min and max first: NaN and +-inf show there, without a chunk-sized
            # temporary or a slow per-row reduction over narrow rows
            if chunk_vals.size and not (np.isfinite(chunk_vals.min()) and np.isfinite(chunk_vals.max())):
                not_finite.append(chunk_idx[~np.isfinite(chunk_vals).all(axis=1)])
            if vals is None:
                vals = np.empty((0, chunk_vals.shape[1]), np.float32)
                limit = max(k, min(self.max_rows, self.max_bytes // (4 * max(1, chunk_vals.shape[1]))))
            chunk_keys = hash_keys(chunk_idx, salt)
            if threshold < np.inf:  # a full sample: only keys that could still enter it are merged
                entering = chunk_keys <= threshold
                chunk_keys, chunk_idx, chunk_vals = chunk_keys[entering], chunk_idx[entering], chunk_vals[entering]
            if len(chunk_idx) > limit:  # thin the chunk first: at most 2m rows are ever merged
                keep = top_k_positions(-chunk_keys, chunk_idx, limit, ordered=False)
                chunk_keys, chunk_idx, chunk_vals = chunk_keys[keep], chunk_idx[keep], chunk_vals[keep]
            keys = np.concatenate([keys, chunk_keys])
            idx = np.concatenate([idx, chunk_idx])
            vals = np.concatenate([vals, chunk_vals])
            if len(idx) > limit:
                keep = top_k_positions(-keys, idx, limit, ordered=False)
                keys, idx, vals = keys[keep], idx[keep], vals[keep]
                threshold = float(keys.max())
        bad = np.concatenate([np.empty(0, np.int64), *not_finite])
        if len(bad):
            raise ValidationError(
                f"strategy {self.name!r} needs finite outputs: {len(bad):,} of {seen:,} records hold NaN or inf "
                f"(the first: record {bad.min()})"
            )
        check_pool(k, seen)
        assert vals is not None, "no chunk, so k == 0: a caller asks for k >= 1 (strategies.select)"
        order = np.argsort(idx, kind="stable")  # argmax ties then go to the lower index
        return idx[order][self.greedy(activate(vals[order], task), k, rng)]

    @staticmethod
    def greedy(points: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
        """Positions of k centers: a random first one, then farthest-first.

        Distances use ``|x|^2 - 2 x.c + |c|^2`` with the dot products on one
        thread (elementwise passes over the columns when narrow, einsum when
        wide): a threaded BLAS gemv this small gains nothing alone and is
        many times slower on a busy machine.
        """
        points = np.ascontiguousarray(points, dtype=np.float32)
        columns = np.ascontiguousarray(points.T) if points.shape[1] <= 32 else None
        sq = np.einsum("ij,ij->i", points, points)
        nearest = np.full(len(points), np.inf, np.float32)
        chosen = np.empty(k, np.int64)
        center = int(rng.integers(len(points)))
        for j in range(k):
            chosen[j] = center
            c = points[center]
            if columns is not None:
                dots = columns[0] * c[0]
                for column, weight in zip(columns[1:], c[1:]):
                    dots += column * weight
            else:
                dots = np.einsum("ij,j->i", points, c)
            dist = sq - 2 * dots + sq[center]
            np.minimum(nearest, dist, out=nearest)
            nearest[center] = -np.inf  # never again, even among exact duplicates
            center = int(np.argmax(nearest))
        return chosen

    def __repr__(self) -> str:
        return f"<strategy kcenter max_rows={self.max_rows}>"


@hookimpl(trylast=True)  # a third-party plugin registering the same name is called first, and wins
def register_strategies(register: Callable[..., None]) -> None:
    register(KCenterGreedy())
