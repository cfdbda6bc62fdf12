"""``bench_zero``: a model whose hooks do no work of their own, so a run of
it costs only what alectio adds (benchmarks/bench_startup.py,
benchmarks/bench_overhead.py).

``pool`` records (setting ``models.bench_zero.pool``); ``infer`` streams
seeded standard-normal float32 logits over 10 classes through
``writer.extend`` in chunks of ``CHUNK`` rows, exactly what
``bench_overhead.py``'s plain numpy script generates.
"""

import numpy as np

from alectio_core import hookimpl

CLASSES = 10
CHUNK = 1 << 16


def references(pool):
    """The index map: record ``i`` is ``rec-i``."""
    return [f"rec-{i}" for i in range(pool)]


def logits(unlabeled, loop):
    """Yield ``(indices, logits)`` chunks covering ``unlabeled``."""
    rng = np.random.default_rng(loop)
    for start in range(0, len(unlabeled), CHUNK):
        indices = unlabeled[start : start + CHUNK]
        yield indices, rng.standard_normal((len(indices), CLASSES), dtype=np.float32)


@hookimpl
def model_info():
    return {"task": "classification", "labels": [str(c) for c in range(CLASSES)], "settings": {"pool": 100}}


@hookimpl
def assign_index(config):
    return references(int(config["pool"]))


@hookimpl
def train(ckpt_file):
    open(ckpt_file, "wb").close()


@hookimpl
def test():
    return {"predictions": [0, 1, 2, 3], "labels": [0, 1, 2, 2]}


@hookimpl
def infer(unlabeled, loop, writer):
    for indices, rows in logits(np.asarray(unlabeled, dtype=np.int64), loop):
        writer.extend(indices, rows)
