"""Side by side with modAL, small-text and baal: the same picks, the same
curve, and the selection step's speed.

    pip install modAL-python small-text && pip install --no-deps baal && pip install "structlog<23" "torchmetrics<2"
    python benchmarks/compare_libraries.py [--seeds 20 ... 29] [--part picks ties curve speed] [--per-seed]

Everything runs on scikit-learn's digits with the logistic regression of
``tests/packages/alectio-test-digits`` (model ``digits_lr``), called through
its own ``train``/``test``/``infer`` hooks, so alectio and every library see
the same model. A library that is not installed is named and skipped.

* ``picks``: per seed, the model trained on the seed's 40 initial records
  (the records ``alectio run --seed S`` starts from) scores the other 1360.
  alectio's ``select`` gets the logits as its storage keeps them (float32);
  each library gets what its users hand it, the probabilities
  (``softmax`` of the same logits in float64, what ``predict_proba`` returns).
  Reported: the overlap of the top-k sets, and for records in one set only,
  how far their exact (float64) score is from the k-th best score.
  With alectio's ``bald`` installed, also BALD against baal's on 10
  bootstrap fits (the MC passes).
* ``ties``: where picks can differ, exact ties (identical rows), and which
  of the tied records each implementation picks.
* ``curve``: a whole run (40 initial, batches of 40, 8 loops) whose picks
  come from the library's query function, against ``alectio run digits_lr
  --strategy S --json`` on the same seed; also the same in-process loop
  picking with ``alectio_core.strategies.select``, which must reproduce the
  CLI's curve exactly (the check that the loop here is alectio's loop).
  Reported per seed: the mean accuracy over the curve; paired: the mean
  difference library - alectio with a 95% t interval.
* ``speed``: the selection step alone, in memory, on seeded logits (N x C,
  k = 1000): alectio's ``select`` from float32 logits (softmax included)
  against each library's query from float64 probabilities (given; their
  softmax is timed apart); the median of ``--repeat`` runs, and the overlap
  of the picked sets. alectio also streams the same
  selection from storage in O(chunk + k) memory (``bench_select.py``).

This is a script, not a test: the libraries are not test dependencies.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Callable, Optional

import numpy as np
from scipy.special import softmax

from alectio_core.strategies import select

STRATEGIES = ("least_confidence", "margin", "entropy")
DISTRIBUTIONS = {"modAL": "modAL-python", "small-text": "small-text", "baal": "baal"}
# What each library calls alectio's strategy (its public query API).
NAMES = {
    "modAL": {"least_confidence": "uncertainty_sampling", "margin": "margin_sampling", "entropy": "entropy_sampling"},
    "small-text": {"least_confidence": "LeastConfidence", "margin": "BreakingTies", "entropy": "PredictionEntropy"},
    "baal": {"least_confidence": "Certainty", "margin": "Margin", "entropy": "Entropy", "bald": "BALD"},
}
POOL, INITIAL, BATCH, LOOPS = 1400, 40, 40, 8


# ----------------------------------------------------------------------
# The libraries, each called through its public query API
# ----------------------------------------------------------------------


class Fixed:
    """An already-trained classifier as the libraries see one: its
    ``predict_proba`` returns the given probabilities, row i for record i."""

    def __init__(self, proba: np.ndarray):
        self.proba = proba

    def predict_proba(self, X, **_):
        return self.proba if X is None else self.proba[np.asarray(X).reshape(-1)]


def query_modal(strategy: str, proba: np.ndarray, k: int) -> np.ndarray:
    import modAL.uncertainty as u

    picked, _ = getattr(u, NAMES["modAL"][strategy])(Fixed(proba), np.arange(len(proba)), n_instances=k)
    return np.asarray(picked)


def query_small_text(strategy: str, proba: np.ndarray, k: int) -> np.ndarray:
    import small_text.query_strategies as q

    query = getattr(q, NAMES["small-text"][strategy])()
    empty = np.empty(0, np.int64)
    return np.asarray(query.query(Fixed(proba), None, np.arange(len(proba)), empty, empty, n=k))


def query_baal(strategy: str, proba: np.ndarray, k: int) -> np.ndarray:
    """``proba`` is (N, C) or, for BALD, baal's (N, C, T)."""
    import baal.active.heuristics as h

    return np.asarray(getattr(h, NAMES["baal"][strategy])()(proba))[:k]


QUERIES: dict[str, Callable[[str, np.ndarray, int], np.ndarray]] = {
    "modAL": query_modal, "small-text": query_small_text, "baal": query_baal,
}


def available() -> tuple[dict[str, str], dict[str, str]]:
    """(library -> version, library -> why it cannot be used)."""
    found, missing = {}, {}
    probes = {"modAL": "modAL.uncertainty", "small-text": "small_text.query_strategies", "baal": "baal.active.heuristics"}
    for library, module in probes.items():
        try:
            __import__(module)
            found[library] = importlib.metadata.version(DISTRIBUTIONS[library])
        except Exception as exc:  # any import failure means: not usable here, say why
            missing[library] = f"{type(exc).__name__}: {exc}"
    return found, missing


def has_bald() -> bool:
    from alectio_core.plugins import get_strategies

    return "bald" in get_strategies()


# ----------------------------------------------------------------------
# The model: digits_lr's own hooks
# ----------------------------------------------------------------------


class Collect:
    """An infer ``writer`` that keeps the rows at full precision."""

    def __init__(self):
        self.indices: list = []
        self.values: list = []

    def extend(self, indices, values):
        self.indices.append(np.asarray(indices, np.int64))
        self.values.append(np.asarray(values, np.float64))

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        return np.concatenate(self.indices), np.concatenate(self.values)


def digits():
    import alectio_test_digits as plugin

    return plugin


def initial(seed: int) -> np.ndarray:
    """Loop 0's records, drawn as ``selections.initial_selection`` draws them."""
    return np.sort(np.random.default_rng(seed).choice(POOL, size=INITIAL, replace=False))


def train_test_infer(plugin, labeled: np.ndarray, resume_from: Optional[str], ckpt: str, infer: bool):
    plugin.train({"labeled": labeled.tolist(), "resume_from": resume_from, "ckpt_file": ckpt, "config": {}, "loop": 0})
    result = plugin.test({"ckpt_file": ckpt, "config": {}})
    accuracy = float(np.mean(np.asarray(result["predictions"]) == np.asarray(result["labels"])))
    if not infer:
        return accuracy, None, None
    mask = np.ones(POOL, bool)
    mask[labeled] = False
    writer = Collect()
    plugin.infer(np.flatnonzero(mask).tolist(), ckpt, writer)
    indices, logits = writer.result()
    return accuracy, indices, logits


# ----------------------------------------------------------------------
# Scores at full precision, to explain where picks differ
# ----------------------------------------------------------------------


def exact_scores(strategy: str, logits: np.ndarray) -> np.ndarray:
    """float64 scores, higher = more informative (the same order every
    implementation aims for)."""
    p = softmax(logits, axis=1)
    if strategy == "least_confidence":
        return 1 - p.max(axis=1)
    if strategy == "margin":
        top = np.sort(p, axis=1)
        return 1 - (top[:, -1] - top[:, -2])
    if strategy == "entropy":
        return -(p * np.log(np.where(p > 0, p, 1))).sum(axis=1)
    raise ValueError(strategy)


def boundary_gap(exact: np.ndarray, indices: np.ndarray, ours: set, theirs: set, k: int) -> Optional[float]:
    """For records in one top-k set only: the largest distance of their
    exact score to the k-th best exact score, relative to it (None when
    the sets agree). Tiny values mean the sets differ only where the
    scores tie within floating-point precision."""
    differ = np.isin(indices, list(ours ^ theirs))
    if not differ.any():
        return None
    kth = np.partition(exact, len(exact) - k)[len(exact) - k]
    return float(np.max(np.abs(exact[differ] - kth)) / abs(kth))


def picks(args, found: dict) -> None:
    plugin = digits()
    rows: dict = {}  # (strategy, library, k) -> list of overlaps
    gaps: dict = {}  # (strategy, library, k) -> worst relative gap of a differing record
    with tempfile.TemporaryDirectory() as folder:
        for seed in args.seeds:
            _, indices, logits = train_test_infer(plugin, initial(seed), None, os.path.join(folder, f"{seed}.npz"), True)
            proba = softmax(logits, axis=1)
            for strategy in STRATEGIES:
                exact = exact_scores(strategy, logits)
                for k in args.k:
                    ours = set(select(strategy, logits.astype(np.float32), k, indices=indices, num_classes=10))
                    for library in found:
                        theirs = set(indices[QUERIES[library](strategy, proba, k)])
                        rows.setdefault((strategy, library, k), []).append(len(ours & theirs) / k)
                        gap = boundary_gap(exact, indices, ours, theirs, k)
                        if gap is not None:
                            gaps[(strategy, library, k)] = max(gaps.get((strategy, library, k), 0.0), gap)
            if found.get("baal") and has_bald():
                bald_picks(args, plugin, seed, folder, rows)
    print(f"\n### Same picks: top-k overlap with alectio's select, seeds {args.seeds[0]}-{args.seeds[-1]} "
          f"(digits_lr on {INITIAL} labels scoring the other {POOL - INITIAL})\n")
    print("| strategy | library (its name) | k | overlap, mean | overlap, worst seed | differing records: max distance to the k-th score (relative, float64) |")
    print("|---|---|---|---|---|---|")
    for (strategy, library, k), overlaps in rows.items():
        gap = gaps.get((strategy, library, k))
        note = "none differ" if gap is None else f"{gap:.1e}"
        print(f"| {strategy} | {library} ({NAMES[library][strategy]}) | {k} | {statistics.fmean(overlaps):.4f} | {min(overlaps):.4f} | {note} |")
    if found.get("baal") and not has_bald():
        print("| bald | baal (BALD) | - | not run: alectio's `bald` strategy is not installed yet | | |")


def bald_picks(args, plugin, seed: int, folder: str, rows: dict, passes: int = 10) -> None:
    """BALD needs T stochastic passes; logistic regression has no dropout, so
    the T passes are T models fitted on bootstrap resamples of the labeled
    records (seeded): a deterministic ensemble both sides read the same way."""
    labeled = initial(seed)
    rng = np.random.default_rng(seed)
    passes_logits = []
    for t in range(passes):
        sample = np.unique(rng.choice(labeled, size=len(labeled)))
        _, indices, logits = train_test_infer(plugin, sample, None, os.path.join(folder, f"{seed}-{t}.npz"), True)
        keep = ~np.isin(indices, labeled)  # score the same pool as every other row of the table
        passes_logits.append((indices[keep], logits[keep]))
    indices = passes_logits[0][0]
    stacked = np.stack([logits for _, logits in passes_logits], axis=1)  # (N, T, C)
    proba = np.transpose(softmax(stacked, axis=2), (0, 2, 1))  # baal's (N, C, T)
    for k in args.k:
        ours = set(select("bald", stacked.reshape(len(indices), -1).astype(np.float32), k, indices=indices, num_classes=10, mc_samples=passes))
        theirs = set(indices[query_baal("bald", proba, k)])
        rows.setdefault(("bald", "baal", k), []).append(len(ours & theirs) / k)


def ties(args, found: dict) -> None:
    """Where picks can differ: exact ties. Records 0-999 are seeded logits,
    records 1000-1999 all the same uniform row (all logits 0, as an
    untrained model gives): every strategy ranks those 1000 first, tied,
    and k = 100 of them are picked; which 100 is each implementation's tie
    rule."""
    logits = np.concatenate([np.random.default_rng(0).standard_normal((1000, 10)) * 3, np.zeros((1000, 10))])
    proba = softmax(logits, axis=1)
    print("\n### Exact ties: 1000 identical uniform rows (records 1000-1999) tie for the top; k = 100 of them\n")
    print("| strategy | library | picks the same 100 as alectio (records 1000-1099, the lowest indices) | its picks span |")
    print("|---|---|---|---|")
    for strategy in STRATEGIES:
        ours = set(int(i) for i in select(strategy, logits.astype(np.float32), 100))
        assert ours == set(range(1000, 1100))  # alectio's documented rule: ties to the lower index
        for library in found:
            theirs = np.asarray(QUERIES[library](strategy, proba, 100))
            print(f"| {strategy} | {library} | {len(ours & set(theirs.tolist()))} of 100 | {theirs.min()}-{theirs.max()} |")


# ----------------------------------------------------------------------
# Same curve
# ----------------------------------------------------------------------


def run_loop(plugin, seed: int, pick: Callable[[np.ndarray, np.ndarray, int, int], np.ndarray], folder: str) -> list[float]:
    """The loop ``alectio run`` runs (train with a warm start from the last
    checkpoint, test, infer, select), with ``pick(indices, logits, k, loop)``
    choosing each batch."""
    labeled, previous, curve = initial(seed), None, []
    for loop in range(LOOPS):
        ckpt = os.path.join(folder, f"{seed}-{loop}.npz")
        accuracy, indices, logits = train_test_infer(plugin, labeled, previous, ckpt, loop + 1 < LOOPS)
        curve.append(accuracy)
        if indices is not None:
            labeled = np.union1d(labeled, pick(indices, logits, BATCH, loop))
        previous = ckpt
    return curve


def cli_curve(strategy: str, seed: int, folder: str) -> list[float]:
    out = subprocess.run(
        [sys.executable, "-m", "alectio_core", "run", "digits_lr", "--strategy", strategy, "--seed", str(seed),
         "--loops", str(LOOPS), "--initial", str(INITIAL), "--batch", str(BATCH),
         "--storage", f"sqlite:///{folder}/{strategy}-{seed}.db", "--json"],
        capture_output=True, text=True, check=True,
    )
    return [point["metrics"]["accuracy"] for point in json.loads(out.stdout)]


def interval(diffs: list[float]) -> str:
    from scipy.stats import t

    mean = statistics.fmean(diffs)
    if len(diffs) < 2:
        return f"{mean:+.4f}"
    half = t.ppf(0.975, len(diffs) - 1) * statistics.stdev(diffs) / len(diffs) ** 0.5
    return f"{mean:+.4f} [{mean - half:+.4f}, {mean + half:+.4f}]"


def curves(args, found: dict) -> None:
    plugin = digits()
    means: dict = {}  # (strategy, who) -> per-seed mean over the curve
    worst_replay = 0.0
    with tempfile.TemporaryDirectory() as folder:
        for strategy in args.curve_strategies:
            for seed in args.seeds:
                cli = cli_curve(strategy, seed, folder)
                means.setdefault((strategy, "alectio run"), []).append(statistics.fmean(cli))

                def ours(indices, logits, k, loop, strategy=strategy, seed=seed):
                    return select(strategy, logits.astype(np.float32), k, indices=indices,
                                  seed=seed + loop + 1, num_classes=10)

                replay = run_loop(plugin, seed, ours, folder)
                worst_replay = max(worst_replay, max(abs(a - b) for a, b in zip(replay, cli)))
                for library in found:
                    def theirs(indices, logits, k, loop, library=library, strategy=strategy):
                        return indices[QUERIES[library](strategy, softmax(logits, axis=1), k)]

                    curve = run_loop(plugin, seed, theirs, folder)
                    means.setdefault((strategy, library), []).append(statistics.fmean(curve))
    print(f"\n### Same curve: mean accuracy over the curve ({INITIAL} initial, batches of {BATCH}, {LOOPS} loops), "
          f"seeds {args.seeds[0]}-{args.seeds[-1]}\n")
    print(f"The in-process loop picking with alectio's select reproduces `alectio run`'s curves: "
          f"largest difference at any loop and seed {worst_replay:.2g}.\n")
    print("| strategy | driven by | mean over the curve (mean of seeds) | paired difference to `alectio run`, 95% interval | seeds identical |")
    print("|---|---|---|---|---|")
    for strategy in args.curve_strategies:
        base = means[(strategy, "alectio run")]
        print(f"| {strategy} | `alectio run` | {statistics.fmean(base):.4f} | | |")
        for library in found:
            mine = means[(strategy, library)]
            diffs = [a - b for a, b in zip(mine, base)]
            same = sum(d == 0 for d in diffs)
            print(f"| {strategy} | {library} ({NAMES[library][strategy]}) | {statistics.fmean(mine):.4f} | {interval(diffs)} | {same} of {len(diffs)} |")
    if args.per_seed:
        print("\nper seed (mean over the curve):\n")
        who = [w for (s, w) in means if s == args.curve_strategies[0]]
        print("| seed | " + " | ".join(f"{s} {w}" for s in args.curve_strategies for w in who) + " |")
        print("|---" * (1 + len(who) * len(args.curve_strategies)) + "|")
        for i, seed in enumerate(args.seeds):
            print(f"| {seed} | " + " | ".join(f"{means[(s, w)][i]:.4f}" for s in args.curve_strategies for w in who) + " |")


# ----------------------------------------------------------------------
# Selection speed
# ----------------------------------------------------------------------


def timed(fn: Callable[[], np.ndarray], repeat: int, budget: float) -> tuple[float, int, np.ndarray]:
    """(median seconds, runs made, the result) of up to ``repeat`` runs;
    stops repeating once the runs have used up ``budget`` seconds."""
    times: list[float] = []
    while len(times) < repeat:
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
        if sum(times) > budget:
            break
    return statistics.median(times), len(times), result


def speed(args, found: dict) -> None:
    print(f"\n### Selection speed: in memory, k = {args.speed_k}, median of up to {args.repeat} runs (n = runs made); "
          "a library's time over alectio's, from the probabilities (given) and counting the float64 softmax that makes them\n")
    print("| outputs | strategy | alectio select | " + " | ".join(f"{lib}" for lib in found) + " |")
    print("|---|---|---|" + "---|" * len(found))
    overlap: dict = {}
    probe = 10_000
    from alectio_core.plugins import get_strategies

    get_strategies()  # discovery happens once per process, not inside the first timing
    for shape in args.shapes:
        rows, width = (int(v) for v in shape.lower().split("x"))
        logits = np.empty((rows, width), np.float32)
        np.random.default_rng(0).standard_normal(out=logits, dtype=np.float32)
        logits *= 3
        # The libraries take probabilities: what their softmax costs is timed
        # apart, since alectio's time includes reading logits.
        soft, _, proba = timed(lambda: softmax(logits.astype(np.float64), axis=1), min(3, args.repeat), args.budget)
        indices = np.arange(rows)
        for strategy in STRATEGIES:
            ours, n, picked = timed(lambda: select(strategy, logits, args.speed_k, num_classes=width), args.repeat, args.budget)
            cells = [f"{ours:.3f} s (n={n})"]
            exact = exact_scores(strategy, logits.astype(np.float64))
            for library in found:
                query = QUERIES[library]
                # The per-row Python paths take minutes at 1M rows: past --budget
                # for one run, the time is estimated (linear in rows) from a slice.
                start = time.perf_counter()
                query(strategy, proba[:probe], args.speed_k)
                estimate = (time.perf_counter() - start) * rows / probe
                if rows > probe and estimate > args.budget:
                    cells.append(f"~{estimate:.0f} s (~{estimate / ours:.0f}x, estimated from {probe:,} rows)")
                    continue
                t, n, theirs = timed(lambda: query(strategy, proba, args.speed_k), args.repeat, args.budget)
                cells.append(f"{t:.3f} s ({t / ours:.1f}x; {(t + soft) / ours:.1f}x with the softmax; n={n})")
                overlap[(f"{rows:,} x {width}", strategy, library)] = (
                    len(set(picked) & set(theirs)) / args.speed_k,
                    boundary_gap(exact, indices, set(picked), set(theirs), args.speed_k),
                )
            print(f"| {rows:,} x {width} | {strategy} | " + " | ".join(cells) + " |", flush=True)
        del logits, proba, exact
    if found.get("baal") and has_bald():
        for shape in args.mc_shapes:
            rows, samples, width = (int(v) for v in shape.lower().split("x"))
            logits = np.empty((rows, samples, width), np.float32)
            np.random.default_rng(0).standard_normal(out=logits, dtype=np.float32)
            logits *= 3
            soft, _, proba = timed(lambda: np.transpose(softmax(logits.astype(np.float64), axis=2), (0, 2, 1)), min(3, args.repeat), args.budget)  # baal's (N, C, T)
            flat, indices = logits.reshape(rows, -1), np.arange(rows)
            ours, n, picked = timed(lambda: select("bald", flat, args.speed_k, num_classes=width, mc_samples=samples), args.repeat, args.budget)
            t, m, theirs = timed(lambda: query_baal("bald", proba, args.speed_k), args.repeat, args.budget)
            print(f"| {rows:,} x {samples} passes x {width} | bald | {ours:.3f} s (n={n}) | "
                  + " | ".join(f"{t:.3f} s ({t / ours:.1f}x; {(t + soft) / ours:.1f}x with the softmax; n={m})" if lib == "baal" else "no BALD" for lib in found) + " |")
            overlap[(f"{rows:,} x {samples} x {width}", "bald", "baal")] = (len(set(picked) & set(theirs)) / args.speed_k, None)
            del logits, proba, flat
    print(f"\nthe same top-{args.speed_k} sets? (these seeded logits: float32 for alectio, float64 probabilities of them for the libraries)\n")
    print("| outputs | strategy | library | overlap | differing records: max distance to the k-th score (relative, float64) |")
    print("|---|---|---|---|---|")
    for (shape, strategy, library), (share, gap) in overlap.items():
        print(f"| {shape} | {strategy} | {library} | {share:.4f} | {'none differ' if gap is None else f'{gap:.1e}'} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", nargs="+", choices=("picks", "ties", "curve", "speed"), default=["picks", "ties", "curve", "speed"])
    parser.add_argument("--seeds", nargs="+", type=int, default=list(range(20, 30)))
    parser.add_argument("--k", nargs="+", type=int, default=[40, 100, 1000])
    parser.add_argument("--curve-strategies", nargs="+", default=list(STRATEGIES))
    parser.add_argument("--per-seed", action="store_true", help="also print the curve means seed by seed")
    parser.add_argument("--shapes", nargs="+", default=["100000x10", "1000000x10", "1000000x100"])
    parser.add_argument("--mc-shapes", nargs="+", default=["100000x20x10"], help="records x passes x classes, for bald")
    parser.add_argument("--speed-k", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--budget", type=float, default=60.0, help="seconds: runs stop repeating past it; a library's run estimated to take longer is estimated, not run")
    args = parser.parse_args()
    found, missing = available()
    versions = [f"{name} {importlib.metadata.version(name)}" for name in ("alectio", "numpy", "scikit-learn")]
    print(", ".join(versions + [f"{lib} {v}" for lib, v in found.items()]))
    for library, why in missing.items():
        print(f"{library}: not used, it does not import: {why}")
    if "picks" in args.part:
        picks(args, found)
    if "ties" in args.part:
        ties(args, found)
    if "curve" in args.part:
        curves(args, found)
    if "speed" in args.part:
        speed(args, found)


if __name__ == "__main__":
    main()
