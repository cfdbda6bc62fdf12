"""The infer stage on the ``local`` executor vs ``ray`` at 1 and 2 shards.

    python benchmarks/bench_executor.py [--records 1000000] [--hidden 768]
        [--storage sqlite,s3] [--runs local,ray:1,ray:2] [--repeat 3]

Needs Ray (``pip install 'alectio[ray]'``) and, for ``s3``, moto (the
``test`` extra). The model is ``bench_mlp``
(``benchmarks/packages/alectio-bench-mlp``): a fixed, seeded numpy MLP
(64 -> hidden -> hidden -> 10, ReLU) whose ``infer`` is real CPU work,
about 2.5 s per 100,000 records on one core at the default ``--hidden 768``. It is pip-installed into a temporary
``--target`` folder put on ``PYTHONPATH`` of the measured processes (and
so of the Ray workers they start), never into the environment running
this script.

BLAS is pinned to one thread in every process (``OMP_NUM_THREADS``,
``OPENBLAS_NUM_THREADS``, ``MKL_NUM_THREADS`` = 1, set before numpy is
imported and inherited by Ray's workers), so one shard is one core and the
``local`` executor is one core too: the comparison is of executors, not of
BLAS threading.

Each measurement is a fresh process that builds
``Engine(storage, parse_config({"executor": ...}))`` (what ``alectio run
--config`` and ``alectio serve --config`` do), then:

1. warms up on a small experiment through the same path (Ray started and
   its workers up, the model imported): the figures are a warm cluster's;
2. creates an experiment of ``--records`` records (``initial`` 100) and
   resets the process's peak-RSS counter (``/proc/self/clear_refs``);
3. runs loop 0 without selecting (``select_next=False``: no strategy read,
   so the peak is the infer stage's) and reads the infer stage's seconds
   from the loop's ``stage_times``, the driver's peak RSS over its RSS
   before the loop (``VmHWM`` - ``VmRSS``), and a digest of the stored
   outputs (equal digests: the executors stored the same bytes).

Storage: ``sqlite`` (a file in a temporary folder; Ray's shards send their
rows through Ray's object store and the driver writes them) and ``s3``
(moto in server mode in a process of its own on 127.0.0.1; Ray's shards
write their own chunks). Prints, per storage, the median of ``--repeat``
runs of each executor in records/s, Ray's overhead at 1 shard over
``local`` (goal under 15%), the speed-up at 2 shards over ``local`` and
over ``ray:1`` (goal at least 1.7x), the driver's peak, and the machine's
load average before and after (figures are only as quiet as the machine).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from processes import ROOT, install_model, moto_server, proc_status

MLP_MODEL = ROOT / "benchmarks" / "packages" / "alectio-bench-mlp"
ONE_THREAD = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
MB = 1024 * 1024
INITIAL = 100
WARM_UP_RECORDS = 20_000


def executor_config(run: str) -> dict:
    """``local`` or ``ray:N`` as config.yaml's ``executor:`` section."""
    if run == "local":
        return {"name": "local"}
    name, _, shards = run.partition(":")
    if name != "ray" or not shards.isdigit():
        raise SystemExit(f"--runs: {run!r} is neither 'local' nor 'ray:N'")
    return {"name": "ray", "shards": int(shards)}


# ----------------------------------------------------------------------
# one measurement, in a fresh process
# ----------------------------------------------------------------------


def measure(storage_url: str, run: str, records: int, hidden: int) -> dict:
    from alectio_core.config import parse_config
    from alectio_core.engine import Engine
    from alectio_core.storage import open_storage

    storage = open_storage(storage_url)
    engine = Engine(storage, parse_config({"executor": executor_config(run)}, "bench"))

    def experiment(pool: int) -> str:
        made = engine.create_experiment("bench_mlp", strategy="entropy", initial=INITIAL, loops=1, config={"pool": pool, "hidden": hidden})
        return made["id"]

    warm_up = experiment(WARM_UP_RECORDS)
    engine.run_loop(warm_up, 0, select_next=False)
    engine.delete_experiment(warm_up)
    eid = experiment(records)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # the peak counter starts again from here
    before = proc_status("VmRSS")
    started = time.perf_counter()
    engine.run_loop(eid, 0, select_next=False)
    wall = time.perf_counter() - started
    peak = proc_status("VmHWM") - before
    state = storage.get_loop_state(eid, 0)
    assert state["status"] == "done", state
    digests, rows = (hashlib.sha256(), hashlib.sha256()), 0  # apart: the same rows in other chunks hash the same
    for indices, values in storage.iter_outputs(eid, 0):
        digests[0].update(indices.tobytes())
        digests[1].update(values.tobytes())
        rows += len(indices)
    engine.delete_experiment(eid)  # moto keeps what it stores in memory
    storage.close()
    return {"infer_seconds": state["stage_times"]["infer"], "loop_seconds": wall, "rows": rows, "peak_mb": peak / MB, "digest": hashlib.sha256(b"".join(d.digest() for d in digests)).hexdigest()[:16]}


def child(env: dict, storage_url: str, run: str, records: int, hidden: int) -> dict:
    done = subprocess.run(
        [sys.executable, __file__, "--child", run, "--storage-url", storage_url, "--records", str(records), "--hidden", str(hidden)],
        env=env, capture_output=True, text=True, cwd=tempfile.gettempdir(),
    )
    if done.returncode:
        sys.exit(f"{run} on {storage_url} exited with {done.returncode}:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------
# the report
# ----------------------------------------------------------------------


def report(kind: str, results: dict[str, list[dict]]) -> None:
    medians = {run: statistics.median(r["infer_seconds"] for r in rs) for run, rs in results.items()}
    rows = results[next(iter(results))][0]["rows"]
    print(f"\n{kind}: infer stage over {rows:,} records (median of {len(next(iter(results.values())))})")
    print(f"  {'executor':<10} {'seconds':>8} {'records/s':>11} {'driver peak':>12}  digest")
    for run, rs in results.items():
        peak = max(r["peak_mb"] for r in rs)
        print(f"  {run:<10} {medians[run]:>8.2f} {rows / medians[run]:>11,.0f} {peak:>9.0f} MB  {rs[0]['digest']}")
    digests = {r["digest"] for rs in results.values() for r in rs}
    print(f"  stored outputs: {'identical' if len(digests) == 1 else 'DIFFERENT'} across executors and runs")
    if "local" in medians and "ray:1" in medians:
        print(f"  Ray's overhead at 1 shard: {medians['ray:1'] / medians['local'] - 1:+.1%} (goal: under 15%)")
    if "ray:2" in medians:
        for base in ("local", "ray:1"):
            if base in medians:
                print(f"  speed-up at 2 shards over {base}: {medians[base] / medians['ray:2']:.2f}x (goal: at least 1.7x)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=1_000_000, help="records in the pool (default 1,000,000)")
    parser.add_argument("--hidden", type=int, default=768, help="the MLP's hidden width: its cost per record (default 768)")
    parser.add_argument("--storage", default="sqlite,s3", help="comma-separated: sqlite, s3")
    parser.add_argument("--runs", default="local,ray:1,ray:2", help="comma-separated executors: local, ray:N")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each executor; the median is reported")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--storage-url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.storage_url, args.child, args.records, args.hidden)))
        return
    runs = args.runs.split(",")
    for run in runs:
        executor_config(run)
    print(f"{os.cpu_count()} cores; BLAS pinned to 1 thread in every process; load average before: {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory() as tmp:
        env = {**install_model(Path(tmp) / "site", MLP_MODEL), **ONE_THREAD, "RAY_AUTH_MODE": "disabled"}
        for kind in args.storage.split(","):
            results: dict[str, list[dict]] = {run: [] for run in runs}
            if kind == "sqlite":
                for n in range(args.repeat):
                    for run in runs:  # alternating, so a slow spell of the machine touches every executor
                        url = f"sqlite:///{tmp}/{run.replace(':', '')}-{n}.db"
                        results[run].append(child(env, url, run, args.records, args.hidden))
                        os.remove(url[len("sqlite:///") :])
                report("sqlite", results)
            elif kind == "s3":
                with moto_server() as endpoint:
                    s3_env = {**env, "AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1"}
                    import boto3

                    bucket = f"bench-{uuid.uuid4().hex[:8]}"
                    boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="bench", aws_secret_access_key="bench", region_name="us-east-1").create_bucket(Bucket=bucket)
                    for n in range(args.repeat):
                        for run in runs:
                            results[run].append(child({**s3_env, "ALECTIO_CACHE_DIR": f"{tmp}/cache"}, f"s3://{bucket}/{run.replace(':', '')}-{n}", run, args.records, args.hidden))
                report("s3 (moto server, one process on this machine)", results)
            else:
                raise SystemExit(f"--storage: unknown {kind!r} (sqlite, s3)")
    print(f"\nload average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
