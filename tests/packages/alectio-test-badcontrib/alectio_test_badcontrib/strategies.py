"""A strategy that replaces the built-in ``random`` and one that crashes.

The entry point's name sorts after the built-in ``strategy_random``: only
the built-ins being ``trylast`` lets this ``random`` win."""

import numpy as np

from alectio_core import hookimpl


class LowestFirst:
    name = "random"

    def select(self, chunks, k, *, rng, task, num_classes):
        return np.sort(np.concatenate([idx for idx, _ in chunks]))[:k]


class Crashing:
    name = "crashing"

    def select(self, chunks, k, *, rng, task, num_classes):
        raise RuntimeError("scores went stale")


@hookimpl
def register_strategies(register):
    register(LowestFirst())
    register(Crashing())
