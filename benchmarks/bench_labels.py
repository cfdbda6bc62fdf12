"""Label events through the storage backends: SQLite and S3 (a local moto server).

    python benchmarks/bench_labels.py [--labels 1000]

A labelling tool sends labels one at a time (a webhook per annotation) or a
whole file at once (``alectio labels import``). For each backend: ``labels``
events stored one ``add_labels`` call each, then the same number in one
call; then ``list_labels`` (the history a loop reads before it starts) from
a fresh handle (cold: on S3 one GET per stored call) and again from the same
handle (warm: S3 reads only what is new). Prints milliseconds.

The moto server runs in its own process, so its work is not counted in this
one (but shares the machine).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import uuid

from processes import moto_server

def event(index: int) -> dict:
    return {"index": index, "label": index % 10, "skip": False, "loop": 0, "source": "bench", "by": None, "at": "2026-01-01T00:00:00.000+00:00"}


def measure(name: str, open_store, n: int) -> None:
    store = open_store()
    eid = uuid.uuid4().hex[:12]
    store.create_experiment({"id": eid, "model": "bench"})
    t = time.perf_counter()
    for i in range(n):
        store.add_labels(eid, [event(i)])
    one_by_one = time.perf_counter() - t
    t = time.perf_counter()
    store.add_labels(eid, [event(n + i) for i in range(n)])
    batch = time.perf_counter() - t
    other = open_store()
    t = time.perf_counter()
    assert len(other.list_labels(eid)) == 2 * n
    cold = time.perf_counter() - t
    t = time.perf_counter()
    other.list_labels(eid)
    warm = time.perf_counter() - t
    print(
        f"{name:7s} {n} calls of 1: {one_by_one * 1000 / n:7.2f} ms/call | 1 call of {n}: {batch * 1000:8.1f} ms | "
        f"list {2 * n} events ({n + 1} calls stored): cold {cold * 1000:8.1f} ms, warm {warm * 1000:7.1f} ms"
    )
    store.close()
    other.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--labels", type=int, default=1000)
    args = parser.parse_args()
    from alectio_core.storage import open_storage

    with tempfile.TemporaryDirectory() as tmp:
        measure("sqlite", lambda: open_storage(f"sqlite:///{tmp}/bench.db"), args.labels)

        with moto_server() as endpoint:
            os.environ.update(
                AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="us-east-1", AWS_ENDPOINT_URL=endpoint
            )
            import boto3

            boto3.client("s3").create_bucket(Bucket="bench")
            measure("s3", lambda: open_storage("s3://bench/labels", {"cache_dir": f"{tmp}/cache"}), args.labels)

if __name__ == "__main__":
    main()
