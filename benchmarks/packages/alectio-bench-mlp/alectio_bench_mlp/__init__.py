"""``bench_mlp``: a model whose ``infer`` is real CPU work, so how infer is
spread over processes shows (benchmarks/bench_executor.py).

``pool`` records (setting ``models.bench_mlp.pool``). Record ``i``'s
features are a fixed function of ``i`` (so any split of the pool into
shards scores every record the same); ``infer`` runs them through a fixed
MLP, ``FEATURES -> hidden -> hidden -> CLASSES`` with ReLU, weights drawn
from a seeded generator (setting ``hidden``, default 768: about 2.5 s per
100,000 records on one core of a 2020s x86 machine with BLAS pinned to one
thread), in fixed blocks of ``CHUNK`` records, float32 logits out through
``writer.extend``: byte-identical logits for a record however the pool is
split into shards. ``train`` writes an empty checkpoint: the weights never
change, so every loop and every executor gives the same logits.
"""

import numpy as np

from alectio_core import hookimpl

CLASSES = 10
FEATURES = 64
CHUNK = 8192
SEED = 14


def weights(hidden: int) -> list[np.ndarray]:
    rng = np.random.default_rng(SEED)
    shapes = [(FEATURES, hidden), (hidden, hidden), (hidden, CLASSES)]
    return [(rng.standard_normal(shape) / np.sqrt(shape[0])).astype(np.float32) for shape in shapes]


def features(indices: np.ndarray) -> np.ndarray:
    """Record ``i``'s features, from ``i`` alone."""
    phase = np.arange(1, FEATURES + 1, dtype=np.float64) * 0.618034
    return np.sin(np.outer(indices.astype(np.float64) * 1e-3, phase) + phase).astype(np.float32)


def scores(indices: np.ndarray, layers: list[np.ndarray]) -> np.ndarray:
    h = features(indices)
    for w in layers[:-1]:
        h = np.maximum(h @ w, 0.0)
    return h @ layers[-1]


@hookimpl
def model_info():
    return {"task": "classification", "labels": [str(c) for c in range(CLASSES)], "settings": {"pool": 1000, "hidden": 768}}


@hookimpl
def assign_index(config):
    return [f"rec-{i}" for i in range(int(config["pool"]))]


@hookimpl
def train(ckpt_file):
    open(ckpt_file, "wb").close()


@hookimpl
def test():
    return {"predictions": [0, 1, 2, 3], "labels": [0, 1, 2, 2]}


@hookimpl
def infer(unlabeled, config, writer):
    # BLAS sums a row's products in an order that depends on where the row
    # sits in the matrix: scoring fixed blocks of the pool (records
    # ``k * CHUNK .. (k + 1) * CHUNK - 1``, whichever of them were asked
    # for) gives every record the same bits however the pool is split.
    layers = weights(int(config["hidden"]))
    unlabeled = np.asarray(unlabeled, dtype=np.int64)
    blocks = unlabeled // CHUNK
    for wanted in np.split(unlabeled, np.flatnonzero(np.diff(blocks)) + 1):
        if wanted.size:
            first = int(wanted[0]) // CHUNK * CHUNK
            writer.extend(wanted, scores(np.arange(first, first + CHUNK), layers)[wanted - first])
