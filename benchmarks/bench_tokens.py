"""A real user's request latency while made-up tokens flood the server.

Starts ``alectio serve`` on 127.0.0.1 as a subprocess (fresh SQLite storage
in a temporary folder, one real token), then measures ``GET
/api/v1/experiments`` with the real token, one request at a time: first
alone, then while ``--rate`` requests a second arrive with made-up
``name.secret`` tokens (each from its own short connection, as an attacker
would send them). Prints latency percentiles for both and how many made-up
requests were answered (all must be 401).

    python benchmarks/bench_tokens.py [--rate 20] [--seconds 10]
"""

from __future__ import annotations

import argparse
import http.client
import os
import secrets
import statistics
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from processes import serving


def get(port: int, token: str, conn: http.client.HTTPConnection | None = None) -> int:
    conn = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.request("GET", "/api/v1/experiments", headers={"Authorization": f"Bearer {token}"})
    response = conn.getresponse()
    response.read()
    return response.status


def user_latencies(port: int, token: str, seconds: float) -> list[float]:
    """Back-to-back requests with the real token on one keep-alive connection."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    latencies = []
    stop_at = time.monotonic() + seconds
    while time.monotonic() < stop_at:
        t0 = time.perf_counter()
        assert get(port, token, conn) == 200
        latencies.append(time.perf_counter() - t0)
        time.sleep(0.01)
    conn.close()
    return latencies


def flood(port: int, rate: float, stop: threading.Event, answers: list[int]) -> None:
    """``rate`` made-up tokens a second, each on a new connection, not waiting for answers."""
    with ThreadPoolExecutor(max_workers=64) as pool:
        next_at = time.monotonic()
        while not stop.is_set():
            token = f"guess{secrets.randbelow(10**6)}.{secrets.token_urlsafe(32)}"
            pool.submit(lambda t=token: answers.append(get(port, t)))
            next_at += 1.0 / rate
            time.sleep(max(0.0, next_at - time.monotonic()))


def summary(latencies: list[float]) -> str:
    q = statistics.quantiles(latencies, n=100, method="inclusive")
    return f"{len(latencies)} requests, p50 {q[49] * 1000:.1f} ms, p90 {q[89] * 1000:.1f} ms, p99 {q[98] * 1000:.1f} ms, max {max(latencies) * 1000:.1f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=20.0, help="made-up tokens per second")
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()

    from alectio_core.storage import open_storage
    from alectio_core.tokens import create_token

    with tempfile.TemporaryDirectory(prefix="alectio-bench-") as tmp_name:
        tmp = Path(tmp_name)
        storage = f"sqlite:///{tmp}/alectio.db"
        token = create_token(open_storage(storage), "user")
        env = {**os.environ, "ALECTIO_CONFIG": "", "ALECTIO_HOME": str(tmp)}
        with serving(tmp, "--storage", storage, "--log-level", "warning", env=env) as (port, _):
            quiet = user_latencies(port, token, args.seconds)
            stop, answers = threading.Event(), []
            flooder = threading.Thread(target=flood, args=(port, args.rate, stop, answers))
            flooder.start()
            time.sleep(1.0)  # let the flood build up
            loud = user_latencies(port, token, args.seconds)
            stop.set()
            flooder.join()
            print(f"real user alone:                      {summary(quiet)}")
            print(f"real user, {args.rate:.0f} made-up tokens a second: {summary(loud)}")
            print(f"made-up tokens sent {len(answers)}, answered 401: {sum(a == 401 for a in answers)}")


if __name__ == "__main__":
    main()
