"""Does active learning pay? Mean accuracy over the learning curve per
strategy, at the same label budget, averaged over seeds.

    python benchmarks/compare_strategies.py [--model digits_lr] [--seeds 0 1 2]
        [--strategies random entropy margin least_confidence kcenter]
        [--loops 8] [--initial 40] [--batch 40]

Runs ``alectio run MODEL --json`` for every strategy and seed against a
throw-away sqlite file; prints the curve per loop (mean over seeds), one row
per strategy, then each strategy paired seed by seed with the first one
listed (the baseline): the mean difference of the curve means and on how
many seeds the strategy is ahead.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile


def curve(model, strategy, seed, args, storage):
    out = subprocess.run(
        [sys.executable, "-m", "alectio_core", "run", model, "--strategy", strategy, "--seed", str(seed),
         "--loops", str(args.loops), "--initial", str(args.initial), "--batch", str(args.batch),
         "--storage", storage, "--json"],
        capture_output=True, text=True, check=True,
    )
    return json.loads(out.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="digits_lr")
    parser.add_argument("--metric", default="accuracy")
    parser.add_argument("--strategies", nargs="+", default=["random", "entropy", "margin", "least_confidence", "kcenter"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--loops", type=int, default=8)
    parser.add_argument("--initial", type=int, default=40)
    parser.add_argument("--batch", type=int, default=40)
    args = parser.parse_args()
    rows, per_loop, seed_means = {}, {}, {}
    with tempfile.TemporaryDirectory() as folder:
        for strategy in args.strategies:
            means, finals, values_by_seed = [], [], []
            for seed in args.seeds:
                points = curve(args.model, strategy, seed, args, f"sqlite:///{folder}/{strategy}-{seed}.db")
                values = [p["metrics"][args.metric] for p in points]
                values_by_seed.append(values)
                means.append(statistics.fmean(values))
                finals.append(values[-1])
                labeled = [p["labeled"] for p in points]
            seed_means[strategy] = means
            rows[strategy] = (statistics.fmean(means), statistics.pstdev(means), statistics.fmean(finals))
            per_loop[strategy] = [statistics.fmean(v) for v in zip(*values_by_seed)]
    print(f"model {args.model}, labeled per loop {labeled}, seeds {args.seeds}\n")
    print(f"| labeled | " + " | ".join(args.strategies) + " |")
    print("|---" * (len(args.strategies) + 1) + "|")
    for i, n in enumerate(labeled):
        print(f"| {n} | " + " | ".join(f"{per_loop[s][i]:.4f}" for s in args.strategies) + " |")
    print()
    print(f"| strategy | mean {args.metric} over the curve (± sd over seeds) | final {args.metric} |")
    print("|---|---|---|")
    for strategy, (mean, sd, final) in sorted(rows.items(), key=lambda kv: -kv[1][0]):
        print(f"| {strategy} | {mean:.4f} ± {sd:.4f} | {final:.4f} |")
    baseline = args.strategies[0]
    print(f"\npaired with {baseline}, seed by seed (mean {args.metric} over the curve):\n")
    print(f"| strategy | mean difference (± sd) | ahead on |")
    print("|---|---|---|")
    for strategy in args.strategies[1:]:
        diffs = [a - b for a, b in zip(seed_means[strategy], seed_means[baseline])]
        sd = statistics.stdev(diffs) if len(diffs) > 1 else 0.0
        print(f"| {strategy} | {statistics.fmean(diffs):+.4f} ± {sd:.4f} | {sum(d > 0 for d in diffs)} of {len(diffs)} seeds |")


if __name__ == "__main__":
    main()
