"""Benchmark every registered query strategy: in memory and streamed from sqlite.

    python benchmarks/bench_select.py [--rows 1000000] [--width 10 [1000 ...]] [--k 1000]
                                      [--strategies NAME ...] [--repeat 5] [--no-sqlite]

The strategies are whatever the plugin registry holds (the built-ins and any
installed plugin), found by a child process so this parent stays small. A
strategy whose ``select`` declares ``embeddings``, ``labeled`` or
``mc_samples`` (see ``alectio_core.strategies``) gets them synthesised and
passed through ``alectio_core.strategies.select``: seeded float32 embeddings
of width 64 for every record, a labeled set of 1,000 records (outside the
pool) with outputs and embeddings, and T = 10 MC samples by widening each
row to T x width. Those strategies are measured in memory only (their
``sqlite`` cells are blank); one whose widened outputs would exceed
``--max-gib`` is skipped, with the reason printed.

The outputs are seeded standard-normal float32 logits (x3). Every
measurement runs in a fresh subprocess of a small parent, so its peak RSS
(``resource.getrusage`` maxrss) is its own; the time is the best of
``--repeat`` runs. Rows:

* ``numpy floor``: a plain in-memory numpy path for entropy (softmax,
  entropy, argpartition) -- what a user would write by hand. ``/numpy`` is
  a time over this one (lower is better; 1.0 = as fast as the naive path).
* ``numpy margin``: the same for margin (softmax, ``np.partition`` for the
  top two). Both naive paths take at most 2**26 values (256 MiB) at a time,
  so 1,000,000 x 1,000 does not need 16 GiB of temporaries; below that size
  (1,000,000 x 10 included) they are one whole-array expression.
* ``sqlite read``: draining ``storage.iter_outputs`` and doing nothing --
  the floor for a streamed selection; ``/read`` is a streamed time over it.

``+MiB`` is how far the selection pushed peak RSS above what the process
held before it started (the in-memory inputs included in ``peak``, not in
``+MiB``). Each width gets its own table, ending with margin's time over
entropy's and over naive numpy margin's.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np

BUILTIN_ORDER = ("random", "least_confidence", "margin", "entropy", "kcenter")
EMBEDDING_WIDTH, LABELED, MC_SAMPLES = 64, 1000, 10
FLOOR_VALUES = 1 << 26
EXPERIMENT = "bench"


def registered() -> dict:
    """name -> strategy object, from the plugin registry."""
    from alectio_core.plugins import get_strategies

    return dict(get_strategies())


def needs(strategy: object) -> list[str]:
    """The inputs beyond logits that ``strategy.select`` declares, in order."""
    from alectio_core.strategies import INPUTS, declared_inputs

    return [name for name in INPUTS if name in declared_inputs(strategy)]


def open_db(path: str):
    from alectio_plugins.storage_sqlite import open_sqlite

    return open_sqlite(f"sqlite:///{path}", {})


def make_outputs(rows: int, width: int, seed: int = 0) -> np.ndarray:
    """Seeded float32 logits, generated in place (no float64 temporary)."""
    x = np.empty((rows, width), np.float32)
    np.random.default_rng(seed).standard_normal(out=x, dtype=np.float32)
    x *= 3
    return x


def _blocks(x: np.ndarray):
    rows = max(1, FLOOR_VALUES // x.shape[1])
    for start in range(0, len(x), rows):
        yield x[start : start + rows]


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def numpy_floor(x: np.ndarray, k: int) -> np.ndarray:
    """The naive entropy path: softmax, entropy, argpartition."""
    h = np.concatenate([-(p * np.log(p)).sum(axis=1) for p in map(_softmax, _blocks(x))])
    return np.argpartition(h, len(h) - k)[len(h) - k :]


def numpy_margin(x: np.ndarray, k: int) -> np.ndarray:
    """The naive margin path: softmax, partition for the top two, argpartition."""
    parts = []
    for p in map(_softmax, _blocks(x)):
        top = np.partition(p, p.shape[1] - 2, axis=1)[:, -2:] if p.shape[1] > 1 else np.pad(p, ((0, 0), (1, 0)))
        parts.append(1 - (top[:, 1] - top[:, 0]))
    m = np.concatenate(parts)
    return np.argpartition(m, len(m) - k)[len(m) - k :]


def synthesise(declared: list[str], rows: int, width: int) -> dict:
    """The keyword inputs for a strategy that declares ``declared``."""
    from alectio_core.strategies import Labeled

    inputs: dict = {}
    wide = width * (MC_SAMPLES if "mc_samples" in declared else 1)
    if "embeddings" in declared:
        inputs["embeddings"] = make_outputs(rows, EMBEDDING_WIDTH, seed=1)
    if "labeled" in declared:
        inputs["labeled"] = Labeled(
            indices=np.arange(rows, rows + LABELED, dtype=np.int64),  # labeled records are not in the pool
            values=make_outputs(LABELED, wide, seed=2),
            embeddings=make_outputs(LABELED, EMBEDDING_WIDTH, seed=3),
        )
    if "mc_samples" in declared:
        inputs["mc_samples"] = MC_SAMPLES
        inputs["num_classes"] = width
    return inputs


def peak_mib() -> float:
    scale = 1 if sys.platform == "darwin" else 1024  # bytes on macOS, KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20


def prepare_sqlite(path: str, rows: int, width: int, chunk_rows: int) -> None:
    """Write the outputs as one committed loop, the way the engine does."""
    x = make_outputs(rows, width)
    storage = open_db(path)
    storage.create_experiment({"id": EXPERIMENT})
    sink = storage.open_output_sink(EXPERIMENT, 0, "a0")
    for start in range(0, rows, chunk_rows):
        stop = min(rows, start + chunk_rows)
        sink.write(np.arange(start, stop, dtype=np.int64), x[start:stop])
    sink.close()
    storage.commit_loop(EXPERIMENT, 0, "a0", {"loop": 0, "status": "done"})
    storage.close()


def measure(source: str, what: str, args: argparse.Namespace) -> dict:
    """One measurement, in this (fresh) process."""
    from alectio_core.strategies import select

    if source == "memory":
        if what in ("numpy", "numpy-margin"):
            x = make_outputs(args.rows, args.width)
            floor = numpy_floor if what == "numpy" else numpy_margin
            run = lambda: floor(x, args.k)  # noqa: E731
        else:
            strategy = registered()[what]
            declared = needs(strategy)
            wide = args.width * (MC_SAMPLES if "mc_samples" in declared else 1)
            x = make_outputs(args.rows, wide)
            inputs = synthesise(declared, args.rows, args.width)
            run = lambda: select(strategy, x, args.k, seed=0, **inputs)  # noqa: E731
    else:
        storage = open_db(args.db)
        if what == "read":
            run = lambda: sum(len(i) for i, _ in storage.iter_outputs(EXPERIMENT, 0))  # noqa: E731
        else:
            strategy = registered()[what]
            run = lambda: select(strategy, storage.iter_outputs(EXPERIMENT, 0), args.k, seed=0)  # noqa: E731
    before = peak_mib()
    times = []
    for _ in range(args.repeat):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return {"ms": min(times) * 1e3, "peak": peak_mib(), "extra": peak_mib() - before}


def child(args: argparse.Namespace, *extra: str) -> str:
    cmd = [sys.executable, __file__, *extra, "--rows", str(args.rows), "--k", str(args.k),
           "--repeat", str(args.repeat), "--chunk-rows", str(args.chunk_rows), "--db", args.db or ""]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit {done.returncode}")
    return done.stdout.strip().splitlines()[-1]


def in_subprocess(source: str, what: str, width: int, args: argparse.Namespace) -> dict:
    return json.loads(child(args, "--one", source, what, "--width", str(width)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--width", type=int, nargs="+", default=[10], help="one table per width")
    parser.add_argument("--k", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--strategies", nargs="+", help="only these (default: every registered strategy)")
    parser.add_argument("--chunk-rows", type=int, default=65536, help="rows per stored chunk (the engine's default)")
    parser.add_argument("--max-gib", type=float, default=8.0, help="skip a strategy whose synthesised outputs exceed this")
    parser.add_argument("--no-sqlite", action="store_true")
    parser.add_argument("--db", help=argparse.SUPPRESS)
    parser.add_argument("--one", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--prepare", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--list", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        args.width = args.width[0]
        print(json.dumps(measure(*args.one, args)))
        return
    if args.prepare:
        prepare_sqlite(args.db, args.rows, args.width[0], args.chunk_rows)
        return
    if args.list:
        found = registered()
        names = [n for n in BUILTIN_ORDER if n in found] + sorted(set(found) - set(BUILTIN_ORDER))
        print(json.dumps({name: needs(found[name]) for name in names}))
        return

    # The registry is read in a child too: Linux carries a parent's peak RSS
    # into a forked and exec'd child's maxrss, so this parent stays small.
    strategies = json.loads(child(args, "--list"))
    if args.strategies:
        unknown = set(args.strategies) - set(strategies)
        if unknown:
            parser.error(f"unknown strategies {sorted(unknown)}; registered: {', '.join(strategies)}")
        strategies = {name: strategies[name] for name in args.strategies}
    for width in args.width:
        with tempfile.TemporaryDirectory() as tmp:
            table(args, width, strategies, tmp)


def table(args: argparse.Namespace, width: int, strategies: dict, tmp: str) -> None:
    """Prepare the outputs of one width and print its table."""
    args.db = None
    if not args.no_sqlite:
        args.db = os.path.join(tmp, "bench.db")
        subprocess.run([sys.executable, __file__, "--prepare", "--db", args.db, "--rows", str(args.rows),
                        "--width", str(width), "--chunk-rows", str(args.chunk_rows)], check=True)
    floor = in_subprocess("memory", "numpy", width, args)
    floor_margin = in_subprocess("memory", "numpy-margin", width, args)
    read = None if args.no_sqlite else in_subprocess("sqlite", "read", width, args)
    print(f"\nselect top {args.k} of {args.rows:,} x {width} float32; best of {args.repeat}; "
          f"sqlite chunks of {args.chunk_rows:,} rows; numpy {np.__version__}")
    header = f"{'strategy':<18}{'memory ms':>10}{'/numpy':>8}{'peak MiB':>9}{'+MiB':>6}"
    if read is not None:
        header += f"  |{'sqlite ms':>10}{'/read':>7}{'/numpy':>8}{'peak MiB':>9}{'+MiB':>6}"
    print(header)
    print("-" * len(header))

    def cells(m: dict | None, *bases: float) -> str:
        if m is None:
            return " " * (10 + 8 * len(bases) - (len(bases) > 1) + 15)
        ratios = "".join(f"{m['ms'] / b:>{8 if i == len(bases) - 1 else 7}.2f}" for i, b in enumerate(bases))
        return f"{m['ms']:>10.1f}{ratios}{m['peak']:>9.0f}{m['extra']:>6.0f}"

    def line(name: str, mem: dict | None, sql: dict | None) -> str:
        text = f"{name:<18}" + cells(mem, floor["ms"])
        if read is not None:
            text += "  |" + cells(sql, read["ms"], floor["ms"])
        return text.rstrip()

    print(line("numpy floor", floor, None))
    print(line("numpy margin", floor_margin, None))
    if read is not None:
        print(line("sqlite read", None, read))
    notes, mem_of = [], {}
    for name, declared in strategies.items():
        wide = width * (MC_SAMPLES if "mc_samples" in declared else 1)
        gib = args.rows * wide * 4 / 2**30
        if gib > args.max_gib:
            notes.append(f"{name}: skipped, its {args.rows:,} x {wide} outputs are {gib:.1f} GiB > --max-gib {args.max_gib}")
            continue
        try:
            mem = mem_of[name] = in_subprocess("memory", name, width, args)
            sql = None if read is None or declared else in_subprocess("sqlite", name, width, args)
        except RuntimeError as exc:
            notes.append(f"{name}: failed: {exc}")
            continue
        print(line(name, mem, sql), flush=True)
        if declared:
            notes.append(f"{name}: synthesised {', '.join(declared)}; in memory only")
    for note in notes:
        print(f"  {note}")
    if "margin" in mem_of and "entropy" in mem_of:
        margin = mem_of["margin"]["ms"]
        print(f"  margin / entropy {margin / mem_of['entropy']['ms']:.2f}; margin / numpy margin "
              f"{margin / floor_margin['ms']:.2f} (in memory)")


if __name__ == "__main__":
    main()
