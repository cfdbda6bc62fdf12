"""What would each stopping criterion have saved, and what would it have cost?

    python benchmarks/stopping.py [--models digits_lr digits_cnn newsgroups_text]
        [--seeds 20 21 ... 29] [--strategy margin] [--budget MODEL:INITIAL:BATCH:LOOPS ...]
        [--config FILE] [--jobs N]

For every model and seed, one experiment runs its whole budget with no
stopping criterion (``Engine`` on a throw-away sqlite file, the default
strategy). Then :func:`alectio_core.stopping.replay` checks each built-in
criterion, with its default settings, on the stored loops (the code a
running loop uses) and finds where it would have stopped. Per model and
criterion: on how many seeds it fired, the labels at the stop against the
full budget (labels saved) and the test accuracy at the stop against the
full budget's (accuracy given up), as mean ± sd over the seeds. A
criterion that never fires within the budget counts as stopping at the
full budget (nothing saved, nothing given up).

``digits_lr`` is the test suite's plugin (tests/packages/alectio-test-digits),
installed into a temporary folder for the run when it is not installed;
the examples must be installed (``pip install -e examples/NAME``).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from contextlib import ExitStack
from pathlib import Path

from alectio_core.config import Config

ROOT = Path(__file__).resolve().parent.parent
CRITERIA = ("stabilizing_predictions", "max_uncertainty", "plateau")
#: initial, batch, loops: a long budget for each model, small enough for a shared 2-core machine.
BUDGETS = {
    "digits_lr": (20, 20, 25),
    "digits_cnn": (50, 50, 10),
    "newsgroups_text": (100, 100, 12),
    "shapes_detector": (50, 50, 10),  # 500 images: with its fast config (min_steps 150) ten seeds fit a 2-core machine
}
SEEDS = list(range(20, 30))  # fixed before any run


def run_one(model: str, seed: int, strategy: str, budget: tuple[int, int, int], folder: str, config: Config) -> dict:
    from alectio_core import Engine, open_storage
    from alectio_core.driver import HEADLINE, drive
    from alectio_core.stopping import replay

    initial, batch, loops = budget
    engine = Engine(open_storage(f"sqlite:///{folder}/{model}-{seed}.db"), config)
    experiment = engine.create_experiment(model, strategy=strategy, initial=initial, batch_size=batch, loops=loops, seed=seed)
    curve = drive(engine, experiment["id"])
    metric = HEADLINE[experiment["task"]]
    by_loop = {p["loop"]: (p["labeled"], p["metrics"][metric]) for p in curve}
    found = replay(engine, experiment["id"], [c for c in CRITERIA if c != "stabilizing_predictions" or experiment["task"] in
                                              ("classification", "multilabel")])
    engine.storage.close()
    final = by_loop[curve[-1]["loop"]]
    return {
        "metric": metric,
        "full": final,
        "stops": {name: (by_loop[hit["loop"]] if hit else None) for name, hit in found.items()},
    }


def fmt(values: list[float], digits: int, sign: bool = False) -> str:
    spec = f"{'+' if sign else ''}.{digits}f"
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{format(statistics.fmean(values), spec)} ± {sd:.{digits}f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["digits_lr", "digits_cnn", "newsgroups_text"])
    parser.add_argument("--seeds", nargs="+", type=int, default=SEEDS)
    parser.add_argument("--strategy", default=None, help="default: alectio's default strategy")
    parser.add_argument("--budget", nargs="*", default=[], metavar="MODEL:INITIAL:BATCH:LOOPS")
    parser.add_argument("--config", metavar="FILE", help="config.yaml with the models' settings")
    parser.add_argument("--jobs", type=int, default=1, help="seeds run side by side, one process each (default 1)")
    args = parser.parse_args()
    from alectio_core import plugins
    from alectio_core.config import DEFAULT_STRATEGY, load_config

    config = load_config(args.config) if args.config else Config()

    strategy = args.strategy or DEFAULT_STRATEGY
    budgets = dict(BUDGETS)
    for spec in args.budget:
        name, *numbers = spec.split(":")
        budgets[name] = tuple(int(n) for n in numbers)  # type: ignore[assignment]
    with ExitStack() as stack:
        if "digits_lr" in args.models and "digits_lr" not in plugins.model_names():
            sys.path.insert(0, str(ROOT / "tests"))
            from installer import installed_packages

            stack.enter_context(installed_packages("alectio-test-digits"))
        folder = stack.enter_context(tempfile.TemporaryDirectory(prefix="alectio-stopping-"))
        rows = []
        for model in args.models:
            started = time.perf_counter()
            with ProcessPoolExecutor(args.jobs) as pool:  # a process per seed at a time: each experiment is independent
                runs = list(pool.map(run_one, *zip(*[(model, seed, strategy, budgets[model], folder, config) for seed in args.seeds])))
            initial, batch, loops = budgets[model]
            print(f"{model}: {len(runs)} seeds, --initial {initial} --batch {batch} --loops {loops} "
                  f"(full budget {runs[0]['full'][0]:,} labels), strategy {strategy}, {time.perf_counter() - started:.0f} s",
                  file=sys.stderr)
            for name in CRITERIA:
                if name not in runs[0]["stops"]:
                    continue
                at = [r["stops"][name] or r["full"] for r in runs]
                fired = sum(r["stops"][name] is not None for r in runs)
                saved = [r["full"][0] - a[0] for r, a in zip(runs, at)]
                given = [r["full"][1] - a[1] for r, a in zip(runs, at)]
                full_labels = runs[0]["full"][0]
                rows.append((
                    model, runs[0]["metric"], name, f"{fired}/{len(runs)}", fmt([a[0] for a in at], 0), str(full_labels),
                    f"{fmt(saved, 0)} ({statistics.fmean(saved) / full_labels:.0%})",
                    fmt([a[1] for a in at], 4), fmt([r["full"][1] for r in runs], 4), fmt(given, 4, sign=True),
                ))
    config_note = f"; config {args.config}" if args.config else ""
    print(f"\nseeds {' '.join(map(str, args.seeds))}; strategy {strategy}{config_note}; each criterion with its default settings\n")
    print("| model | metric | criterion | fired | labels at stop | full budget | labels saved | metric at stop | metric at full budget | metric given up |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
