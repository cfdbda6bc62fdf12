"""Does active learning pay? Each strategy against random, paired seed by
seed, at the same label budget.

    python benchmarks/compare_strategies.py [--model digits_lr]
        [--strategies random margin entropy least_confidence kcenter]
        [--seeds 20 21 22 23 24 25 26 27 28 29] [--loops 8] [--initial 40]
        [--batch 40] [--metric accuracy] [--config FILE] [--results DIR]

Runs ``alectio run MODEL --json`` once per strategy and seed, each against a
throw-away sqlite file and on one thread (see ``single_threaded``). The seeds are the claim's seed set: pick them before
looking at any result and keep them; the default set is the one every
figure in the README comes from. A strategy on seed s starts from the same
initial records as random on seed s, so the comparison is paired.

With ``--results DIR`` each run's curve is kept as
``DIR/<model>-<setting>-<strategy>-<seed>.json`` and read back instead of
re-run when present (the setting names the budget and the config file), so
re-aggregating, or adding a strategy to a finished comparison, only runs
what is missing. The name does not say which version of alectio or of the
model plugin ran: delete a model's files when its plugin or a strategy
changes what it computes.

Prints, as markdown ready for the README and under the exact command that
produced it: the metric per loop (mean over seeds) per strategy, then per
strategy the mean over the curve (mean ± sd over seeds), the final value,
the mean paired difference of the curve means to the baseline (the first
strategy listed, normally random) with its 95% t-interval, and on how many
seeds the strategy is ahead.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

SEEDS = [20, 21, 22, 23, 24, 25, 26, 27, 28, 29]  # chosen before any result was seen; see the module docstring
STRATEGIES = ["random", "margin", "entropy", "least_confidence", "kcenter"]


def setting_name(args: argparse.Namespace) -> str:
    """The part of a cached file's name that says which budget and config
    produced it, so curves of different settings never mix."""
    name = f"i{args.initial}-b{args.batch}-l{args.loops}"
    if args.config:
        digest = hashlib.sha256(Path(args.config).read_bytes()).hexdigest()[:8]
        name += f"-c{digest}"
    return name


def single_threaded() -> dict[str, str]:
    """The environment of each run: one thread for torch, BLAS and OpenMP.
    A curve then does not depend on the machine's core count (a reduction
    split over more threads can round differently and flip a pick), and a
    busy machine is not slowed further by threads spinning for a core."""
    return {**os.environ, **{name: "1" for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")}}


def run_curve(args: argparse.Namespace, strategy: str, seed: int) -> list[dict]:
    with tempfile.TemporaryDirectory() as folder:
        command = [
            sys.executable, "-m", "alectio_core", "run", args.model, "--strategy", strategy, "--seed", str(seed),
            "--loops", str(args.loops), "--initial", str(args.initial), "--batch", str(args.batch),
            "--storage", f"sqlite:///{folder}/run.db", "--json",
        ]
        if args.config:
            command += ["--config", args.config]
        out = subprocess.run(command, capture_output=True, text=True, env=single_threaded())
        if out.returncode:
            sys.exit(f"{shlex.join(command)} failed:\n{out.stderr}")
        return json.loads(out.stdout)


def curve(args: argparse.Namespace, strategy: str, seed: int) -> list[dict]:
    if not args.results:
        return run_curve(args, strategy, seed)
    path = Path(args.results) / f"{args.model}-{setting_name(args)}-{strategy}-{seed}.json"
    if path.exists():
        return json.loads(path.read_text())
    points = run_curve(args, strategy, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(points))
    tmp.replace(path)  # a run cut short leaves no half-written curve to be reused
    return points


def t_interval(diffs: list[float]) -> tuple[float, float]:
    """The 95% confidence interval of the mean of paired differences."""
    from scipy.stats import t

    mean = statistics.fmean(diffs)
    if len(diffs) < 2:
        return mean, mean
    half = t.ppf(0.975, len(diffs) - 1) * statistics.stdev(diffs) / len(diffs) ** 0.5
    return mean - half, mean + half


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="digits_lr")
    parser.add_argument("--metric", default="accuracy")
    parser.add_argument("--strategies", nargs="+", default=STRATEGIES, help="the first is the baseline")
    parser.add_argument("--seeds", nargs="+", type=int, default=SEEDS)
    parser.add_argument("--loops", type=int, default=8)
    parser.add_argument("--initial", type=int, default=40)
    parser.add_argument("--batch", type=int, default=40)
    parser.add_argument("--config", metavar="FILE", help="config.yaml passed to alectio run (the model's settings)")
    parser.add_argument("--results", metavar="DIR", help="keep each run's curve here and reuse it when present")
    parser.add_argument("--mark", metavar="STRATEGY", help="mark this strategy's row (the default strategy)")
    args = parser.parse_args()

    curves: dict[str, list[list[float]]] = {}
    labeled: list[int] = []
    for strategy in args.strategies:  # strategy by strategy, so a cut-short comparison has whole seed sets
        curves[strategy] = []
        for seed in args.seeds:
            points = curve(args, strategy, seed)
            curves[strategy].append([p["metrics"][args.metric] for p in points])
            labeled = [p["labeled"] for p in points]

    baseline = args.strategies[0]
    means = {s: [statistics.fmean(values) for values in curves[s]] for s in args.strategies}
    n = len(args.seeds)
    print(f"`{shlex.join(['python', 'benchmarks/compare_strategies.py', *sys.argv[1:]])}`\n")
    print(f"{args.model}: {args.initial} initial, batches of {args.batch}, {args.loops} loops; "
          f"{args.metric}; seeds {' '.join(map(str, args.seeds))}\n")
    print(f"| strategy | mean {args.metric} over the curve (± sd) | final | vs {baseline}: mean paired difference "
          f"[95% interval] | ahead on |")
    print("|---|---:|---:|---:|---:|")
    for strategy in args.strategies:
        sd = statistics.stdev(means[strategy]) if n > 1 else 0.0
        final = statistics.fmean(values[-1] for values in curves[strategy])
        name = f"**{strategy}** (default)" if strategy == args.mark else strategy
        if strategy == baseline:
            paired = "—"
            ahead = "—"
        else:
            diffs = [a - b for a, b in zip(means[strategy], means[baseline])]
            low, high = t_interval(diffs)
            paired = f"{statistics.fmean(diffs):+.4f} [{low:+.4f}, {high:+.4f}]"
            ahead = f"{sum(d > 0 for d in diffs)} of {n}"
        print(f"| {name} | {statistics.fmean(means[strategy]):.4f} ± {sd:.4f} | {final:.4f} | {paired} | {ahead} |")
    print(f"\n{args.metric} per loop, mean over the seeds:\n")
    print("| labeled | " + " | ".join(args.strategies) + " |")
    print("|---:" * (len(args.strategies) + 1) + "|")
    for i, count in enumerate(labeled):
        row = " | ".join(f"{statistics.fmean(values[i] for values in curves[s]):.4f}" for s in args.strategies)
        print(f"| {count} | {row} |")


if __name__ == "__main__":
    main()
