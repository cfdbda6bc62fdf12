"""Infer outputs through the sqlite backend, beside np.save/np.load and the
seed's commit-per-row pickled inserts.

    python benchmarks/bench_outputs.py [--records 1000000] [--width 10]

Each measurement runs in its own process so peak RSS is its own; RSS is
reported as growth over the process's baseline once the outputs to store
exist in memory (as a model's batches, or one array for np.save).
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import resource
import sqlite3
import subprocess
import sys
import tempfile
import time

import numpy as np

CHUNK = 65536


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def chunks(records: int, width: int):
    """The pool's outputs as a model produces them: batch by batch."""
    rng = np.random.default_rng(0)
    for start in range(0, records, CHUNK):
        n = min(CHUNK, records - start)
        yield np.arange(start, start + n), rng.standard_normal((n, width), dtype=np.float32)


def bench_alectio(folder: str, records: int, width: int) -> dict:
    from alectio_core.outputs import OutputWriter
    from alectio_core.storage import open_storage

    storage = open_storage(f"sqlite:///{folder}/alectio.db")
    storage.create_experiment({"id": "bench"})
    batches = list(chunks(records, width))  # the model's outputs, made before the clock starts
    base = rss_mb()
    t0 = time.perf_counter()
    sink = storage.open_output_sink("bench", 0, "a1")
    writer = OutputWriter(sink, model="bench", pool_size=records, unlabeled=np.arange(records))
    for idx, values in batches:
        writer.extend(idx, values)
    writer.close()
    storage.commit_loop("bench", 0, "a1", {"status": "done"})
    t1 = time.perf_counter()
    total, checksum = 0, 0.0
    for idx, values in storage.iter_outputs("bench", 0):
        total += idx.size
        checksum += float(values[:, 0].sum())
    t2 = time.perf_counter()
    assert total == records
    size = sum(os.path.getsize(os.path.join(folder, f)) for f in os.listdir(folder) if f.startswith("alectio.db"))
    return {"write": t1 - t0, "read": t2 - t1, "rss": rss_mb() - base, "size": size}


def bench_numpy(folder: str, records: int, width: int) -> dict:
    array = np.concatenate([v for _, v in chunks(records, width)])
    base = rss_mb()
    path = os.path.join(folder, "outputs.npy")
    t0 = time.perf_counter()
    np.save(path, array)
    t1 = time.perf_counter()
    back = np.load(path)
    float(back[:, 0].sum())
    t2 = time.perf_counter()
    return {"write": t1 - t0, "read": t2 - t1, "rss": rss_mb() - base, "size": os.path.getsize(path)}


def bench_seed(folder: str, records: int, width: int) -> dict:
    """The seed SDK's add_index: one pickled array per row, one commit per row."""
    batches = list(chunks(records, width))
    base = rss_mb()
    db = sqlite3.connect(os.path.join(folder, "seed.db"))
    db.execute("CREATE TABLE indexes (id INTEGER PRIMARY KEY, output BLOB)")
    t0 = time.perf_counter()
    for idx, values in batches:
        for i, row in zip(idx.tolist(), values):
            db.execute("INSERT INTO indexes VALUES (?, ?)", (i, pickle.dumps(row)))
            db.commit()
    t1 = time.perf_counter()
    n = sum(1 for _ in (pickle.loads(blob) for (blob,) in db.execute("SELECT output FROM indexes")))
    t2 = time.perf_counter()
    assert n == records
    return {"write": t1 - t0, "read": t2 - t1, "rss": rss_mb() - base, "size": os.path.getsize(os.path.join(folder, "seed.db"))}


def run(kind: str, records: int, width: int) -> dict:
    """One measurement in a fresh process."""
    out = subprocess.run(
        [sys.executable, __file__, "--one", kind, "--records", str(records), "--width", str(width)],
        capture_output=True, text=True, check=True,
    )
    return json.loads(out.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--width", type=int, default=10)
    parser.add_argument("--seed-records", type=int, default=20_000)
    parser.add_argument("--one", choices=["alectio", "numpy", "seed"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        with tempfile.TemporaryDirectory() as folder:
            fn = {"alectio": bench_alectio, "numpy": bench_numpy, "seed": bench_seed}[args.one]
            print(json.dumps(fn(folder, args.records, args.width)))
        return

    array_mb = args.records * args.width * 4 / 1e6
    rows = [
        ("alectio sqlite writer", args.records, run("alectio", args.records, args.width)),
        ("np.save / np.load", args.records, run("numpy", args.records, args.width)),
        ("seed: commit per pickled row", args.seed_records, run("seed", args.seed_records, args.width)),
    ]
    print(f"{args.records:,} x {args.width} float32 = {array_mb:.0f} MB of outputs\n")
    print(f"{'':30} {'records':>10} {'write s':>8} {'read s':>8} {'rec/s w+r':>12} {'MB/s w':>8} {'MB/s r':>8} {'RSS+ MB':>8} {'store MB':>9}")
    for name, n, r in rows:
        mb = n * args.width * 4 / 1e6
        print(
            f"{name:30} {n:>10,} {r['write']:>8.3f} {r['read']:>8.3f} {n / (r['write'] + r['read']):>12,.0f}"
            f" {mb / r['write']:>8.0f} {mb / r['read']:>8.0f} {r['rss']:>8.1f} {r['size'] / 1e6:>9.1f}"
        )
    ours, npy, seed = (r for _, _, r in rows)
    ratio = (ours["write"] + ours["read"]) / (npy["write"] + npy["read"])
    per_record_ours = (ours["write"] + ours["read"]) / args.records
    per_record_seed = (seed["write"] + seed["read"]) / args.seed_records
    print(f"\nwrite+read vs np.save+np.load: {ratio:.2f}x (reach: <= 3x)")
    print(f"per record vs commit-per-row:  {per_record_seed / per_record_ours:,.0f}x faster (reach: >= 100x)")
    print(f"peak RSS growth: {ours['rss']:.1f} MB = {ours['rss'] / array_mb:.2f}x the array (reach: < 2x)")


if __name__ == "__main__":
    main()
