"""The pool as the feature-space strategies (coreset, badge, typiclust) read it.

:func:`read_pool` streams a loop's outputs with the aligned ``embeddings``
chunks, counts the rows that hold NaN or inf (an error naming how many), and
keeps either the whole pool or, past ``max_rows`` records or ``max_bytes``
of kept rows (float32 outputs and embeddings), a seeded uniform subsample of
that many records (at least k): the ones with the smallest
``hash_keys(index, salt)``, so the sample depends on the seed, never on how
the outputs were chunked. Rows come back sorted by record index, so a
strategy's ties go to the lower index. Peak memory is one chunk plus at most
``3 * limit`` rows (kept, arriving, merged): twice the pool when it is used
whole, once after reading.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Optional

import numpy as np

from alectio_core.errors import ValidationError
from alectio_core.strategies import Chunks, Labeled, check_pool, hash_keys, top_k_positions
from alectio_plugins.strategy_kcenter import activate

__all__ = ["Pool", "activate", "labeled_features", "read_pool"]


@dataclass
class Pool:
    """Rows of the pool (or its subsample), sorted by record index."""

    indices: np.ndarray
    values: Optional[np.ndarray]  # raw outputs; None unless asked for
    embeddings: Optional[np.ndarray]  # None when the model wrote none
    size: int  # records in the whole pool

    def features(self, task: str) -> np.ndarray:
        """Embeddings when the model wrote them, else activated outputs."""
        if self.embeddings is not None:
            return self.embeddings
        assert self.values is not None, "read_pool keeps the values when there are no embeddings"
        return activate(self.values, task).astype(np.float32, copy=False)


def _bad_rows(x: np.ndarray) -> int:
    return int(np.count_nonzero(~np.isfinite(x).all(axis=1))) if x.size else 0


def read_pool(
    name: str,
    chunks: Chunks,
    embeddings: Optional[Iterable[tuple[np.ndarray, np.ndarray]]],
    k: int,
    *,
    salt: int,
    max_bytes: Optional[int] = None,
    max_rows: Optional[int] = None,
    values: bool = False,
) -> Pool:
    """Read the pool for strategy ``name``; see the module docstring.

    ``values=False`` drops the raw outputs once embeddings are there (coreset
    and typiclust do not need them); without embeddings they are always kept.
    Raises ``ValidationError`` when ``k`` exceeds the pool, when an
    embeddings chunk does not line up with its outputs chunk, or when rows
    that are used hold NaN or inf."""
    emb_iter = iter(embeddings) if embeddings is not None else None
    keep_values = values or emb_iter is None
    parts: list[tuple[np.ndarray, np.ndarray, Optional[np.ndarray], Optional[np.ndarray]]] = []
    kept = seen = bad_values = bad_embeddings = 0
    threshold = np.inf  # the largest key kept once the sample is full
    for idx, vals in chunks:
        idx = np.asarray(idx, np.int64)
        vals = np.asarray(vals, np.float32)
        if vals.ndim != 2 or len(idx) != len(vals):
            raise ValidationError(f"{name}: a chunk has {len(idx)} indices for outputs of shape {vals.shape}")
        emb: Optional[np.ndarray] = None
        if emb_iter is not None:
            emb_idx, emb = next(emb_iter, (None, None))
            if emb_idx is None or emb is None or not np.array_equal(np.asarray(emb_idx, np.int64), idx):
                raise ValidationError(f"{name}: the embeddings chunks do not line up with the outputs chunks")
            emb = np.asarray(emb, np.float32)
            if emb.ndim != 2 or len(emb) != len(idx):
                raise ValidationError(f"{name}: a chunk has {len(idx)} indices for embeddings of shape {emb.shape}")
            bad_embeddings += _bad_rows(emb)
        if keep_values:
            bad_values += _bad_rows(vals)
        if not parts:
            row_bytes = 4 * ((vals.shape[1] if keep_values else 0) + (emb.shape[1] if emb is not None else 0))
            by_bytes = max_bytes // max(1, row_bytes) if max_bytes is not None else None
            limit = max(k, min(b for b in (max_rows, by_bytes, 1 << 62) if b is not None))
        seen += len(idx)
        keys = hash_keys(idx, salt)
        if threshold < np.inf:
            entering = keys <= threshold
            keys, idx = keys[entering], idx[entering]
            vals = vals[entering]
            emb = emb[entering] if emb is not None else None
        parts.append((keys, idx, vals if keep_values else None, emb))
        kept += len(idx)
        if kept > 2 * limit:
            parts = [_merge(parts, limit)]
            kept = len(parts[0][0])
            threshold = float(parts[0][0].max())
    if emb_iter is not None and next(emb_iter, None) is not None:
        raise ValidationError(f"{name}: more embeddings chunks than outputs chunks")
    for what, bad in (("embedding", bad_embeddings), ("output", bad_values)):
        if bad:
            raise ValidationError(
                f"{name}: {bad:,} of {seen:,} pool records have NaN or inf in their {what} rows; "
                f"the model's infer must write finite {what}s"
            )
    check_pool(k, seen)
    assert parts, "no chunk, so k == 0: strategies.select asks a strategy for k >= 1"
    _, pool_idx, pool_vals, pool_emb = _merge(parts, limit)
    del parts  # the chunks: from here on the pool is held once
    if len(pool_idx) > 1 and not (pool_idx[1:] > pool_idx[:-1]).all():  # storage streams them sorted: no copy then
        order = np.argsort(pool_idx, kind="stable")
        pool_idx = pool_idx[order]
        pool_vals = pool_vals[order] if pool_vals is not None else None
        pool_emb = pool_emb[order] if pool_emb is not None else None
    return Pool(indices=pool_idx, values=pool_vals, embeddings=pool_emb, size=seen)


def _merge(
    parts: list[tuple[np.ndarray, np.ndarray, Optional[np.ndarray], Optional[np.ndarray]]], limit: int
) -> tuple[np.ndarray, np.ndarray, Optional[np.ndarray], Optional[np.ndarray]]:
    """One part holding the ``limit`` smallest keys of ``parts``."""
    keys = np.concatenate([p[0] for p in parts])
    idx = np.concatenate([p[1] for p in parts])
    vals = np.concatenate([p[2] for p in parts]) if parts[0][2] is not None else None
    emb = np.concatenate([p[3] for p in parts]) if parts[0][3] is not None else None
    if len(keys) > limit:
        keep = np.sort(top_k_positions(-keys, idx, limit, ordered=False))
        keys, idx = keys[keep], idx[keep]
        vals = vals[keep] if vals is not None else None
        emb = emb[keep] if emb is not None else None
    return keys, idx, vals, emb


def labeled_features(name: str, labeled: Optional[Labeled], pool: Pool, task: str) -> Optional[np.ndarray]:
    """The labeled records' features in the pool's feature space, or ``None``
    when nothing is labeled. The pool's embeddings pair with the labeled
    records' embeddings, activated outputs with activated outputs."""
    if labeled is None or len(labeled.indices) == 0:
        return None
    if pool.embeddings is not None:
        rows, what = labeled.embeddings, "embeddings"
    else:
        rows, what = (activate(np.asarray(labeled.values, np.float32), task) if labeled.values is not None else None), "outputs"
    if rows is None:
        raise ValidationError(
            f"{name}: the pool has {what} but the {len(labeled.indices):,} labeled records have none; "
            f"give them as Labeled(indices, values, embeddings), or no labeled records"
        )
    rows = np.asarray(rows, np.float32)
    width = pool.embeddings.shape[1] if pool.embeddings is not None else (pool.values.shape[1] if pool.values is not None else None)
    if rows.ndim != 2 or len(rows) != len(labeled.indices) or (width is not None and rows.shape[1] != width):
        raise ValidationError(
            f"{name}: the labeled records' {what} have shape {rows.shape}; expected ({len(labeled.indices)}, {width})"
        )
    bad = _bad_rows(rows)
    if bad:
        raise ValidationError(f"{name}: {bad:,} of {len(rows):,} labeled records have NaN or inf in their {what} rows")
    return rows
