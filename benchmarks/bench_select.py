"""Benchmark the query strategies: in memory and streamed from sqlite.

    python benchmarks/bench_select.py [--rows 1000000] [--width 10] [--k 1000]

Strategies come from the built-in plugin modules' own
``register_strategies`` hooks and the store from the sqlite plugin's factory,
without loading every other plugin: the metrics plugins import scikit-learn,
which alone would put ~300 MiB under every peak-RSS figure.

The outputs are seeded standard-normal float32 logits (x3). Every
measurement runs in a fresh subprocess of a small parent, so its peak RSS
(``resource.getrusage`` maxrss) is its own; the time is the best of
``--repeat`` runs. Rows:

* ``numpy floor``: a plain in-memory numpy path (softmax, entropy,
  argpartition) -- what a user would write by hand. ``/numpy`` is a time
  over this one (lower is better; 1.0 = as fast as the naive path).
* ``sqlite read``: draining ``storage.iter_outputs`` and doing nothing --
  the floor for a streamed selection; ``/read`` is a streamed time over it.

``+MiB`` is how far the selection pushed peak RSS above what the process
held before it started (the in-memory input included in ``peak``, not in
``+MiB``).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np

STRATEGIES = ("random", "least_confidence", "margin", "entropy", "kcenter")
MODULES = ("alectio_plugins.strategy_random", "alectio_plugins.strategy_uncertainty", "alectio_plugins.strategy_kcenter")
EXPERIMENT = "bench"


def builtin_strategies() -> dict:
    """name -> strategy object, through each built-in module's hook."""
    found: dict = {}
    for module in MODULES:
        importlib.import_module(module).register_strategies(lambda strategy: found.setdefault(strategy.name, strategy))
    return found


def open_db(path: str):
    from alectio_plugins.storage_sqlite import open_sqlite

    return open_sqlite(f"sqlite:///{path}", {})


def make_outputs(rows: int, width: int, seed: int = 0) -> np.ndarray:
    """Seeded float32 logits, generated in place (no float64 temporary)."""
    x = np.empty((rows, width), np.float32)
    np.random.default_rng(seed).standard_normal(out=x, dtype=np.float32)
    x *= 3
    return x


def numpy_floor(x: np.ndarray, k: int) -> np.ndarray:
    """The naive path: softmax, entropy, argpartition."""
    e = np.exp(x - x.max(axis=1, keepdims=True))
    p = e / e.sum(axis=1, keepdims=True)
    h = -(p * np.log(p)).sum(axis=1)
    return np.argpartition(h, len(h) - k)[len(h) - k :]


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

    strategy = builtin_strategies().get(what)
    if source == "memory":
        x = make_outputs(args.rows, args.width)
        if what == "numpy":
            run = lambda: numpy_floor(x, args.k)  # noqa: E731
        else:
            run = lambda: select(strategy, x, args.k, seed=0)  # noqa: E731
    else:
        storage = open_db(args.db)
        if what == "read":
            run = lambda: sum(len(i) for i, _ in storage.iter_outputs(EXPERIMENT, 0))  # noqa: E731
        else:
            run = lambda: select(strategy, storage.iter_outputs(EXPERIMENT, 0), args.k, seed=0)  # noqa: E731
    before = peak_mib()
    times = []
    for _ in range(args.repeat):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return {"ms": min(times) * 1e3, "peak": peak_mib(), "extra": peak_mib() - before}


def in_subprocess(source: str, what: str, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, __file__, "--one", source, what, "--rows", str(args.rows), "--width", str(args.width),
           "--k", str(args.k), "--repeat", str(args.repeat), "--db", args.db or ""]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--width", type=int, default=10)
    parser.add_argument("--k", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--chunk-rows", type=int, default=65536, help="rows per stored chunk (the engine's default)")
    parser.add_argument("--no-sqlite", action="store_true")
    parser.add_argument("--db", help=argparse.SUPPRESS)
    parser.add_argument("--one", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--prepare", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(*args.one, args)))
        return
    if args.prepare:
        prepare_sqlite(args.db, args.rows, args.width, args.chunk_rows)
        return

    with tempfile.TemporaryDirectory() as tmp:
        if not args.no_sqlite:
            args.db = os.path.join(tmp, "bench.db")
            # In a child too: Linux carries a parent's peak RSS into a forked
            # and exec'd child's maxrss, so this parent stays small.
            subprocess.run([sys.executable, __file__, "--prepare", "--db", args.db, "--rows", str(args.rows),
                            "--width", str(args.width), "--chunk-rows", str(args.chunk_rows)], check=True)
        floor = in_subprocess("memory", "numpy", args)
        read = None if args.no_sqlite else in_subprocess("sqlite", "read", args)
        print(f"select top {args.k} of {args.rows:,} x {args.width} float32; best of {args.repeat}; "
              f"sqlite chunks of {args.chunk_rows:,} rows; numpy {np.__version__}")
        header = f"{'strategy':<18}{'memory ms':>10}{'/numpy':>8}{'peak MiB':>9}{'+MiB':>6}"
        if not args.no_sqlite:
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
        if read is not None:
            print(line("sqlite read", None, read))
        for name in STRATEGIES:
            mem = in_subprocess("memory", name, args)
            sql = None if read is None else in_subprocess("sqlite", name, args)
            print(line(name, mem, sql), flush=True)

if __name__ == "__main__":
    main()
