"""The ``random`` strategy: k records uniformly at random, without replacement.

Each record gets a key that is a pure hash of its index and a salt drawn from
the seeded generator; the k smallest keys win. The draw is therefore uniform,
streams in O(chunk + k) memory, and for a given seed does not depend on how
the outputs are chunked or ordered. Output values are never read, so rows
holding NaN or inf are drawn like any other.
"""

from __future__ import annotations

from typing import Callable, Optional

import numpy as np

from alectio_core.hookspecs import hookimpl
from alectio_core.strategies import Chunks, TopK, draw_salt, hash_keys


class Random:
    """Uniform sampling; works for every task."""

    name = "random"

    def select(
        self, chunks: Chunks, k: int, *, rng: np.random.Generator, task: str, num_classes: Optional[int]
    ) -> np.ndarray:
        salt = draw_salt(rng)
        best = TopK(k)
        for indices, _values in chunks:
            indices = np.asarray(indices, np.int64)
            best.add(-hash_keys(indices, salt), indices)
        return best.result()

    def __repr__(self) -> str:
        return "<strategy random>"


@hookimpl(trylast=True)  # a third-party plugin registering the same name is called first, and wins
def register_strategies(register: Callable[..., None]) -> None:
    register(Random())
