"""Status polling under load while a loop trains.

Starts ``alectio serve`` on 127.0.0.1 as a subprocess (fresh SQLite storage
in a temporary folder), starts a loop of the ``slow_test`` model whose train
stage sleeps ``--train-seconds`` (releasing the GIL, as torch or numpy
training does), and meanwhile runs ``--clients`` concurrent clients, each
polling the loop's status back to back over a keep-alive connection for
``--seconds``. Prints requests/s and latency percentiles.

    python benchmarks/bench_server.py [--clients 50] [--seconds 10]

The clients run in ``--processes`` processes so the client side's own GIL
does not inflate the latencies it measures. The ``slow_test`` model
(``tests/packages/alectio-test-slow``) is pip-installed when missing.
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SLOW_PACKAGE = ROOT / "tests" / "packages" / "alectio-test-slow"


def ensure_slow_model(tmp: Path) -> None:
    try:
        metadata.distribution("alectio-test-slow")
    except metadata.PackageNotFoundError:
        copy = tmp / "alectio-test-slow"
        shutil.copytree(SLOW_PACKAGE, copy, ignore=shutil.ignore_patterns("build", "*.egg-info"))
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", str(copy)], check=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def request(conn: http.client.HTTPConnection, method: str, path: str, token: str, body=None) -> tuple[int, dict]:
    headers = {"Authorization": f"Bearer {token}"}
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    conn.request(method, path, body=data, headers=headers)
    response = conn.getresponse()
    return response.status, json.loads(response.read() or b"{}")


def client_process(port: int, path: str, token: str, threads: int, start_at: float, stop_at: float, out) -> None:
    """``threads`` pollers; send back every latency (seconds) and the errors."""
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()

    def poll():
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        mine, bad = [], 0
        while time.time() < start_at:
            time.sleep(0.001)
        headers = {"Authorization": f"Bearer {token}"}
        while time.time() < stop_at:
            t0 = time.perf_counter()
            conn.request("GET", path, headers=headers)
            response = conn.getresponse()
            response.read()
            mine.append(time.perf_counter() - t0)
            bad += response.status != 200
        conn.close()
        with lock:
            latencies.extend(mine)
            errors[0] += bad

    workers = [threading.Thread(target=poll) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    out.put((latencies, errors[0]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--train-seconds", type=float, default=None, help="default: --seconds + 3")
    parser.add_argument("--processes", type=int, default=2, help="client processes sharing --clients")
    parser.add_argument("--threads", type=int, default=None, help="waitress threads (default: config, 16)")
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args()
    train_seconds = args.train_seconds if args.train_seconds is not None else args.seconds + 3

    with tempfile.TemporaryDirectory(prefix="alectio-bench-") as tmp_name:
        tmp = Path(tmp_name)
        ensure_slow_model(tmp)
        port = free_port()
        config = tmp / "config.yaml"
        config.write_text(f"server:\n  threads: {args.threads}\n" if args.threads else "{}\n")
        env = {**os.environ, "ALECTIO_LOAD_PLUGINS": "slow_test"}
        log = open(tmp / "server.log", "w")
        server = subprocess.Popen(
            [sys.executable, "-m", "alectio_core", "serve", "--port", str(port), "--config", str(config),
             "--storage", f"sqlite:///{tmp}/alectio.db", "--log-level", args.log_level],
            stdout=subprocess.PIPE, stderr=log, text=True, env=env, cwd=tmp,
        )
        try:
            token = server.stdout.readline().strip()  # no token existed: serve prints the one it made
            deadline = time.time() + 60
            while True:
                try:
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                    conn.request("GET", "/health")
                    conn.getresponse().read()
                    break
                except OSError:
                    if time.time() > deadline or server.poll() is not None:
                        raise SystemExit(f"server did not start; see {tmp / 'server.log'}")
                    time.sleep(0.1)
            status, experiment = request(conn, "POST", "/api/v1/experiments", token,
                                         {"model": "slow_test", "initial": 100, "config": {"train_seconds": train_seconds}})
            assert status == 201, experiment
            t0 = time.perf_counter()
            status, started = request(conn, "POST", f"/api/v1/experiments/{experiment['id']}/loops", token)
            accepted = time.perf_counter() - t0
            assert status == 202, started
            path = started["url"]
            status, state = request(conn, "GET", path, token)
            while state["stage"] != "train":
                time.sleep(0.01)
                status, state = request(conn, "GET", path, token)

            out = multiprocessing.Queue()
            start_at = time.time() + 1.0
            stop_at = start_at + args.seconds
            share = [args.clients // args.processes + (i < args.clients % args.processes) for i in range(args.processes)]
            procs = [multiprocessing.Process(target=client_process, args=(port, path, token, n, start_at, stop_at, out)) for n in share if n]
            for p in procs:
                p.start()
            results = [out.get() for _ in procs]
            for p in procs:
                p.join()
            status, state = request(conn, "GET", path, token)
            latencies = sorted(x for lat, _ in results for x in lat)
            errors = sum(e for _, e in results)
            q = statistics.quantiles(latencies, n=100)
            print(f"clients {args.clients} ({len(procs)} processes), {args.seconds:.0f} s while train ran ({train_seconds:.0f} s)")
            print(f"POST /loops answered 202 in {accepted * 1000:.1f} ms")
            print(f"requests {len(latencies)}, non-200 {errors}")
            print(f"requests/s {len(latencies) / args.seconds:.0f}")
            print(f"latency p50 {q[49] * 1000:.1f} ms, p90 {q[89] * 1000:.1f} ms, p99 {q[98] * 1000:.1f} ms, max {latencies[-1] * 1000:.1f} ms")
            print(f"loop stage at the end: {state['status']}/{state['stage']}")
        finally:
            server.terminate()
            try:
                server.wait(20)
            except subprocess.TimeoutExpired:
                server.kill()
            log.close()


if __name__ == "__main__":
    main()
