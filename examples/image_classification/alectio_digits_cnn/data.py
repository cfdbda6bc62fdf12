"""The data: scikit-learn's bundled digits, split once into pool and test.

``load_digits`` reads 1797 8x8 grey-scale images that ship inside
scikit-learn, so nothing is downloaded. A fixed seed splits them into a
training pool (the records alectio selects from, indexed 0..N-1) and a
held-out test split that only ``test`` sees.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

SPLIT_SEED = 20240601
TEST_SIZE = 360
CLASS_NAMES = [str(d) for d in range(10)]


@dataclass(frozen=True)
class Split:
    images: np.ndarray  # (N, 1, 8, 8) float32 in [0, 1]
    labels: np.ndarray  # (N,) int64
    source: np.ndarray  # (N,) position in load_digits(), the record reference


@lru_cache(maxsize=4)
def load_splits(test_size: int = TEST_SIZE) -> tuple[Split, Split]:
    """Return ``(pool, test)``; the same split on every call and machine."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = (digits.images.astype(np.float32) / 16.0)[:, None, :, :]
    labels = digits.target.astype(np.int64)
    order = np.random.default_rng(SPLIT_SEED).permutation(len(labels))
    test_idx, pool_idx = np.sort(order[:test_size]), np.sort(order[test_size:])

    def take(idx: np.ndarray) -> Split:
        return Split(images[idx], labels[idx], idx.astype(np.int64))

    return take(pool_idx), take(test_idx)
