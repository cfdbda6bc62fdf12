"""What leases cost a status poll: reading a running loop's state through
``Engine.get_loop`` on the server that holds its lease, on another server
(a second Engine on the same storage), and the bare storage read.

    python benchmarks/bench_lease_status.py [--reads 2000] [--storage sqlite|s3]

``s3`` starts a moto server on 127.0.0.1 (needs ``moto[server]``).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

from alectio_core.config import parse_config
from alectio_core.engine import Engine
from alectio_core.storage import open_storage


def per_read(fn, reads: int) -> float:
    fn()
    started = time.perf_counter()
    for _ in range(reads):
        fn()
    return (time.perf_counter() - started) / reads * 1e6


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reads", type=int, default=2000)
    parser.add_argument("--storage", choices=("sqlite", "s3"), default="sqlite")
    args = parser.parse_args()
    moto = None
    with tempfile.TemporaryDirectory() as tmp:
        if args.storage == "sqlite":
            url, options = f"sqlite:///{tmp}/alectio.db", {}
        else:
            from alectio_core.testing import MotoS3

            moto = MotoS3().start()
            os.environ.update(moto.env)
            url, options = f"s3://{moto.create_bucket()}/bench", {"cache_dir": tmp}
        config = parse_config({"server": {"lease_seconds": 30}}, "bench")
        holder, other = Engine(open_storage(url, options), config), Engine(open_storage(url, options), config)
        holder.storage.create_experiment({"id": "e", "pool_size": 10})
        lease = holder.claim_loop("e", 0)
        holder.storage.put_loop_state("e", 0, {"experiment_id": "e", "loop": 0, "status": "running", "owner": holder.leases.owner})
        try:
            bare = per_read(lambda: other.storage.get_loop_state("e", 0), args.reads)
            held = per_read(lambda: holder.get_loop("e", 0), args.reads)
            elsewhere = per_read(lambda: other.get_loop("e", 0), args.reads)
        finally:
            holder.leases.release(lease)
        print(f"{args.storage}: status read of a running loop, {args.reads} reads")
        print(f"  bare storage read            {bare:9.1f} us")
        print(f"  on the lease holder          {held:9.1f} us")
        print(f"  on another server            {elsewhere:9.1f} us (the lease is read once, then again only after it expires)")
    if moto is not None:
        moto.stop()


if __name__ == "__main__":
    main()
