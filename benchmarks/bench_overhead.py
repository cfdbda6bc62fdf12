"""Whole-run overhead: ``alectio run`` against a plain numpy script doing
the same data work.

    python benchmarks/bench_overhead.py [--pool 1000000] [--loops 2] [--repeat 5]

The model is ``bench_zero`` (``benchmarks/packages/alectio-bench-zero``),
whose hooks cost nothing: ``assign_index`` returns ``rec-0 .. rec-N-1``,
``infer`` streams seeded random float32 logits over 10 classes through
``writer.extend``. It is pip-installed into a temporary ``--target`` folder
put on ``PYTHONPATH`` of the timed processes (as the tests install theirs),
never into the environment running this script.

Timed, as whole processes, alternating, ``--repeat`` times each:

* ``alectio``: ``alectio run bench_zero --loops L --initial K --batch K
  --strategy entropy`` on a new sqlite file; everything alectio does
  around the hooks is in this figure (imports, plugin discovery, storing the
  index map, the loops' jobs and leases, the writer, the sink, the strategy
  reading the outputs back).
* ``numpy``: this script with ``--plain``: the same index map built and
  saved (one reference a line), then per loop as many random logits
  generated and saved (``np.save``), loaded, scored by entropy and the top
  K taken; what a user would write by hand with no loop server at all, kept
  as lean as numpy allows.

Prints the medians of wall-clock and of CPU (user + system) time, the
ratios of the medians (the goal: within 1.5x), and the machine's load
average beside them: the wall figures are only as quiet as the machine, the
CPU figures less disturbed by other processes. Bytecode is written as usual (``PYTHONDONTWRITEBYTECODE`` is
dropped for the timed processes), so imports cost what they cost a user.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

from processes import install_zero_model, timed

CLASSES = 10


def plain(pool: int, loops: int, k: int, folder: Path) -> None:
    """The same data work as the alectio run, as briefly as numpy allows."""
    import numpy as np

    references = [f"rec-{i}" for i in range(pool)]
    (folder / "index.txt").write_text("\n".join(references))
    unlabeled_mask = np.ones(pool, dtype=bool)
    unlabeled_mask[np.random.default_rng(0).choice(pool, k, replace=False)] = False
    for loop in range(loops):
        unlabeled = np.flatnonzero(unlabeled_mask)
        path = folder / f"outputs-{loop}.npy"
        np.save(path, np.random.default_rng(loop).standard_normal((len(unlabeled), CLASSES), dtype=np.float32))
        logits = np.load(path)
        p = np.exp(logits - logits.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        entropy = -(p * np.log(np.maximum(p, 1e-12))).sum(axis=1)
        top = np.argpartition(entropy, len(entropy) - k)[len(entropy) - k :]
        unlabeled_mask[unlabeled[top]] = False
    print(pool - np.count_nonzero(unlabeled_mask))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pool", type=int, default=1_000_000)
    parser.add_argument("--loops", type=int, default=2)
    parser.add_argument("--k", type=int, default=1000, help="initial records and batch (the top-K per loop)")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--plain", metavar="FOLDER", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.plain:
        plain(args.pool, args.loops, args.k, Path(args.plain))
        return

    with tempfile.TemporaryDirectory(prefix="alectio-bench-overhead-") as tmp:
        tmp_path = Path(tmp)
        env = install_zero_model(tmp_path / "site")
        config = tmp_path / "config.yaml"
        config.write_text(f"models:\n  bench_zero:\n    pool: {args.pool}\n")

        def alectio(i: int) -> list[str]:
            return [sys.executable, "-m", "alectio_core", "run", "bench_zero", "--loops", str(args.loops),
                    "--initial", str(args.k), "--batch", str(args.k), "--strategy", "entropy", "--json",
                    "--config", str(config), "--storage", f"sqlite:///{tmp_path}/run-{i}/alectio.db"]

        def numpy(i: int) -> list[str]:
            folder = tmp_path / f"plain-{i}"
            folder.mkdir()
            return [sys.executable, __file__, "--plain", str(folder), "--pool", str(args.pool),
                    "--loops", str(args.loops), "--k", str(args.k)]

        timed(alectio(-1), env)  # warm-up: bytecode written, files in the page cache
        timed(numpy(-1), env)
        times: dict[str, list[tuple[float, float]]] = {"alectio": [], "numpy": []}
        for i in range(args.repeat):
            times["alectio"].append(timed(alectio(i), env)[:2])
            times["numpy"].append(timed(numpy(i), env)[:2])
    load = os.getloadavg()
    print(f"pool {args.pool:,} records, {args.loops} loops, top {args.k} by entropy; "
          f"{args.repeat} runs each, alternating; load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} "
          f"on {os.cpu_count()} cores")
    medians = {}
    for name, runs in times.items():
        wall, cpu = (statistics.median(r[i] for r in runs) for i in (0, 1))
        medians[name] = wall, cpu
        print(f"  {name:<8} median {wall:6.2f} s wall, {cpu:6.2f} s CPU   "
              f"wall runs: {' '.join(f'{r[0]:.2f}' for r in runs)}")
    (a_wall, a_cpu), (n_wall, n_cpu) = medians["alectio"], medians["numpy"]
    print(f"  ratio    {a_wall / n_wall:6.2f}x wall, {a_cpu / n_cpu:.2f}x CPU  (alectio / numpy; goal <= 1.5x)")


if __name__ == "__main__":
    main()
