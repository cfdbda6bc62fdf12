"""Infer outputs through the s3 backend vs raw boto3, against a local moto server.

    python benchmarks/bench_s3.py [--rows 1000000] [--width 10] [--repeat 3]

Writes ``rows`` x ``width`` float32 outputs (plus their int64 indices)
through ``alectio_core.outputs.OutputWriter`` and the s3 backend's sink,
reads them back with ``iter_outputs``; then moves the same bytes with raw
boto3 ``upload_fileobj`` / ``download_fileobj`` (file on disk, default
multipart transfer). Prints MB/s each way (best of ``repeat``) and peak RSS
over the process's baseline.

The moto server runs in its own process so its copy of the data is not
counted, and each measurement runs in a fresh child process: its baseline is
the RSS after imports, client set-up and a warm-up through the same code
path on a tiny payload (10 rows; 1 kB for boto3), with the peak counter
reset there (``/proc/self/clear_refs``) so import-time spikes hide nothing.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid

from processes import moto_server, proc_status

MB = 1024 * 1024

# ----------------------------------------------------------------------
# memory
# ----------------------------------------------------------------------


def reset_peak() -> int:
    """Reset the peak-RSS counter; return the current RSS (the baseline)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    return proc_status("VmRSS")


def peak() -> int:
    return proc_status("VmHWM")


# ----------------------------------------------------------------------
# the two measurements (each in its own child process)
# ----------------------------------------------------------------------


def chunks(rows: int, width: int, chunk_rows: int):
    """Deterministic data, generated chunk by chunk into reused buffers."""
    import numpy as np

    base = np.random.default_rng(0).standard_normal((chunk_rows, width)).astype(np.float32)
    values = np.empty_like(base)
    indices = np.empty(chunk_rows, dtype=np.int64)
    for start in range(0, rows, chunk_rows):
        n = min(chunk_rows, rows - start)
        np.add(base[:n], start // chunk_rows, out=values[:n])
        indices[:n] = np.arange(start, start + n)
        yield indices[:n], values[:n]


def run_alectio_write(endpoint: str, bucket: str, rows: int, width: int, where: str) -> dict:
    import numpy as np

    from alectio_core.outputs import DEFAULT_CHUNK_ROWS, OutputWriter
    from alectio_core.storage import open_storage

    storage = open_storage(f"s3://{bucket}/{where}", {"endpoint_url": endpoint})
    # Warm-up through the same path on a tiny loop: botocore's models loaded,
    # a connection open (the read child warms up by reading it back).
    warm = OutputWriter(storage.open_output_sink("warmup", 0, "w"), model="bench", pool_size=10, unlabeled=np.arange(10))
    warm.extend(np.arange(10), np.ones((10, width), np.float32))
    warm.close()
    storage.commit_loop("warmup", 0, "w", {"loop": 0, "status": "done"})
    storage.create_experiment({"id": "bench"})
    # The model's side, not the backend's: its unlabeled list and the buffers it produces rows in.
    unlabeled = np.arange(rows)
    source = chunks(rows, width, DEFAULT_CHUNK_ROWS)
    first = next(source)
    baseline = reset_peak()

    started = time.perf_counter()
    sink = storage.open_output_sink("bench", 0, "a1")
    writer = OutputWriter(sink, model="bench", pool_size=rows, unlabeled=unlabeled)
    writer.extend(*first)
    for idx, val in source:
        writer.extend(idx, val)
    writer.close()
    storage.commit_loop("bench", 0, "a1", {"loop": 0, "status": "done"})
    seconds = time.perf_counter() - started
    return {"bytes": rows * (8 + 4 * width), "seconds": seconds, "peak": peak() - baseline, "baseline": baseline}


def run_alectio_read(endpoint: str, bucket: str, rows: int, width: int, where: str) -> dict:
    from alectio_core.outputs import DEFAULT_CHUNK_ROWS
    from alectio_core.storage import open_storage

    storage = open_storage(f"s3://{bucket}/{where}", {"endpoint_url": endpoint})
    for _ in storage.iter_outputs("warmup", 0):  # warm-up through the same path, on a tiny loop
        pass
    baseline = reset_peak()
    started = time.perf_counter()
    seen, total = 0, 0.0
    for idx, val in storage.iter_outputs("bench", 0):
        seen += idx.size
        total += float(val[:, 0].sum())
    seconds = time.perf_counter() - started
    used = peak() - baseline
    expected = sum(float(v[:, 0].sum()) for _, v in chunks(rows, width, DEFAULT_CHUNK_ROWS))
    assert seen == rows and abs(total - expected) <= 1e-6 * max(1.0, abs(expected)), (seen, total, expected)
    return {"bytes": rows * (8 + 4 * width), "seconds": seconds, "peak": used, "baseline": baseline}


def run_boto3_write(endpoint: str, bucket: str, rows: int, width: int, where: str) -> dict:
    import boto3

    from alectio_core.outputs import DEFAULT_CHUNK_ROWS

    client = boto3.client("s3", endpoint_url=endpoint)
    client.upload_fileobj(io.BytesIO(b"x" * 1000), bucket, f"{where}/warmup")  # warm-up through the same path
    source = os.path.join(tempfile.gettempdir(), f"{where}.bin")
    with open(source, "wb") as f:  # the same bytes: indices then values, chunk by chunk
        for idx, val in chunks(rows, width, DEFAULT_CHUNK_ROWS):
            f.write(idx.tobytes())
            f.write(val.tobytes())
    baseline = reset_peak()
    started = time.perf_counter()
    with open(source, "rb") as f:
        client.upload_fileobj(f, bucket, f"{where}/raw.bin")
    seconds = time.perf_counter() - started
    size = os.path.getsize(source)
    os.unlink(source)
    return {"bytes": size, "seconds": seconds, "peak": peak() - baseline, "baseline": baseline}


def run_boto3_read(endpoint: str, bucket: str, rows: int, width: int, where: str) -> dict:
    import boto3

    client = boto3.client("s3", endpoint_url=endpoint)
    client.download_fileobj(bucket, f"{where}/warmup", io.BytesIO())  # warm-up through the same path
    target = os.path.join(tempfile.gettempdir(), f"{where}.down")
    baseline = reset_peak()
    started = time.perf_counter()
    with open(target, "wb") as f:
        client.download_fileobj(bucket, f"{where}/raw.bin", f)
    seconds = time.perf_counter() - started
    size = os.path.getsize(target)
    os.unlink(target)
    assert size == rows * (8 + 4 * width)
    return {"bytes": size, "seconds": seconds, "peak": peak() - baseline, "baseline": baseline}


RUNS = {
    ("alectio", "write"): run_alectio_write,
    ("alectio", "read"): run_alectio_read,
    ("boto3", "write"): run_boto3_write,
    ("boto3", "read"): run_boto3_read,
}


# ----------------------------------------------------------------------
# driver
# ----------------------------------------------------------------------


def child(kind: str, way: str, endpoint: str, bucket: str, rows: int, width: int, where: str) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--child", f"{kind}-{way}", "--endpoint", endpoint, "--bucket", bucket,
         "--rows", str(rows), "--width", str(width), "--where", where],
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1"},
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--width", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--child")
    parser.add_argument("--endpoint")
    parser.add_argument("--bucket")
    parser.add_argument("--where")
    args = parser.parse_args()

    if args.child:
        kind, way = args.child.split("-")
        print(json.dumps(RUNS[kind, way](args.endpoint, args.bucket, args.rows, args.width, args.where)))
        return

    with moto_server() as endpoint:
        os.environ.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="us-east-1")
        import boto3

        bucket = f"bench-{uuid.uuid4().hex[:8]}"
        boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket=bucket)
        results: dict = {key: [] for key in RUNS}
        for round_ in range(args.repeat):  # interleaved, so drift hits both alike
            for kind in ("alectio", "boto3"):
                where = f"{kind}-{round_}-{uuid.uuid4().hex[:6]}"
                for way in ("write", "read"):
                    results[kind, way].append(child(kind, way, endpoint, bucket, args.rows, args.width, where))

    def best(kind: str, way: str) -> float:
        return max(r["bytes"] / r["seconds"] / MB for r in results[kind, way])

    def worst_peak(kind: str, way: str) -> float:
        return max(r["peak"] for r in results[kind, way]) / MB

    from alectio_core.outputs import DEFAULT_CHUNK_ROWS

    chunk = DEFAULT_CHUNK_ROWS * (8 + 4 * args.width) / MB
    size = results["alectio", "write"][0]["bytes"] / MB
    print(f"{args.rows:,} x {args.width} float32 outputs + int64 indices = {size:.1f} MB; moto server (own process) on 127.0.0.1; best of {args.repeat}")
    print(f"{'':24}{'write MB/s':>11}{'read MB/s':>11}{'peak RSS over baseline, write / read':>40}")
    for kind, label in (("alectio", "alectio s3 backend"), ("boto3", "raw boto3 *_fileobj")):
        peaks = f"{worst_peak(kind, 'write'):.1f} / {worst_peak(kind, 'read'):.1f} MB"
        print(f"{label:24}{best(kind, 'write'):11.1f}{best(kind, 'read'):11.1f}{peaks:>40}")
    print(f"{'alectio / boto3':24}{best('alectio', 'write') / best('boto3', 'write'):10.2f}x{best('alectio', 'read') / best('boto3', 'read'):10.2f}x")
    print(
        f"one chunk = {chunk:.1f} MB ({DEFAULT_CHUNK_ROWS:,} rows), so 2 chunks = {2 * chunk:.1f} MB; "
        f"baseline RSS {results['alectio', 'write'][0]['baseline'] / MB:.0f} MB (imports, client, warm-up); "
        f"the write peak includes OutputWriter's per-record bookkeeping, {args.rows / MB:.1f} MB for this pool"
    )


if __name__ == "__main__":
    main()
