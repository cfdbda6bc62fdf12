"""Status polling under load while a loop trains.

Starts ``alectio serve`` on 127.0.0.1 as a subprocess (fresh SQLite storage
in a temporary folder), starts a loop of the ``slow_test`` model whose train
stage sleeps ``--train-seconds`` (releasing the GIL, as torch or numpy
training does), and meanwhile runs ``--clients`` concurrent clients, each
polling the loop's status back to back over a keep-alive connection for
``--seconds``. Prints requests/s and latency percentiles.

    python benchmarks/bench_server.py [--clients 50] [--seconds 10]

The clients are keep-alive connections multiplexed by one selector loop
(``--processes`` to spread them), light enough that the two cores go to
the server being measured rather than to the load generator. The ``slow_test`` model
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
import selectors
import statistics
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

from processes import serving

ROOT = Path(__file__).resolve().parent.parent
SLOW_PACKAGE = ROOT / "tests" / "packages" / "alectio-test-slow"


def ensure_slow_model(tmp: Path) -> None:
    try:
        metadata.distribution("alectio-test-slow")
    except metadata.PackageNotFoundError:
        copy = tmp / "alectio-test-slow"
        shutil.copytree(SLOW_PACKAGE, copy, ignore=shutil.ignore_patterns("build", "*.egg-info"))
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", str(copy)], check=True)


def server_cpu(pid: int) -> float:
    """CPU seconds (user + system) the server process used so far (Linux)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_busy() -> float:
    """CPU seconds all processes used so far (Linux ``/proc/stat``)."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except OSError:
        return float("nan")
    return (sum(fields[:8]) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def request(conn: http.client.HTTPConnection, method: str, path: str, token: str, body=None) -> tuple[int, dict]:
    headers = {"Authorization": f"Bearer {token}"}
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    conn.request(method, path, body=data, headers=headers)
    response = conn.getresponse()
    return response.status, json.loads(response.read() or b"{}")


def clients(port: int, path: str, token: str, count: int, start_at: float, stop_at: float, out) -> None:
    """``count`` keep-alive connections, each polling back to back, driven
    by one selector loop: a light client (a few tens of microseconds per
    request), so the machine's cores go to the server being measured.
    Sends back every latency (seconds) and the number of non-200 answers."""
    request_bytes = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n\r\n".encode()
    selector = selectors.DefaultSelector()
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setblocking(False)
        selector.register(sock, selectors.EVENT_READ, {"buf": b"", "sent": 0.0})
    latencies: list[float] = []
    errors = 0
    while time.time() < start_at:
        time.sleep(0.001)
    cpu_start = time.process_time()
    for key in list(selector.get_map().values()):
        key.data["sent"] = time.perf_counter()
        key.fileobj.send(request_bytes)
    while time.time() < stop_at:
        for key, _ in selector.select(timeout=0.1):
            conn = key.data
            chunk = key.fileobj.recv(65536)
            if not chunk:
                raise SystemExit("the server closed a connection")
            conn["buf"] += chunk
            head_end = conn["buf"].find(b"\r\n\r\n")
            if head_end < 0:
                continue
            head = conn["buf"][:head_end].decode("latin-1")
            length = next(int(line.split(":", 1)[1]) for line in head.split("\r\n") if line.lower().startswith("content-length:"))
            if len(conn["buf"]) < head_end + 4 + length:
                continue
            latencies.append(time.perf_counter() - conn["sent"])
            errors += head.split(" ", 2)[1] != "200"
            conn["buf"] = conn["buf"][head_end + 4 + length :]
            conn["sent"] = time.perf_counter()
            key.fileobj.send(request_bytes)
    out.put((latencies, errors, time.process_time() - cpu_start))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--train-seconds", type=float, default=None, help="default: --seconds + 3")
    parser.add_argument("--processes", type=int, default=1, help="client processes sharing --clients")
    parser.add_argument("--threads", type=int, default=None, help="waitress threads (default: config, 16)")
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args()
    train_seconds = args.train_seconds if args.train_seconds is not None else args.seconds + 3

    with tempfile.TemporaryDirectory(prefix="alectio-bench-") as tmp_name:
        tmp = Path(tmp_name)
        ensure_slow_model(tmp)
        config = tmp / "config.yaml"
        config.write_text(f"server:\n  threads: {args.threads}\n" if args.threads else "{}\n")
        env = {**os.environ, "ALECTIO_LOAD_PLUGINS": "slow_test", "ALECTIO_HOME": str(tmp)}
        with serving(tmp, "--config", str(config), "--storage", f"sqlite:///{tmp}/alectio.db", "--log-level", args.log_level,
                     env=env) as (port, server):
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            token = (tmp / "first-token").read_text().strip()  # no token existed: serve wrote the one it made
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
            procs = [multiprocessing.Process(target=clients, args=(port, path, token, n, start_at, stop_at, out)) for n in share if n]
            for p in procs:
                p.start()
            cpu_before, busy_before, wall_before = server_cpu(server.pid), machine_busy(), time.monotonic()
            results = [out.get() for _ in procs]
            cpu_used = server_cpu(server.pid) - cpu_before
            for p in procs:
                p.join()
            status, state = request(conn, "GET", path, token)
            latencies = sorted(x for lat, _, _ in results for x in lat)
            errors = sum(e for _, e, _ in results)
            client_cpu = sum(c for _, _, c in results)
            elapsed = time.monotonic() - wall_before
            machine = (machine_busy() - busy_before) / elapsed
            q = statistics.quantiles(latencies, n=100)
            print(f"clients {args.clients} ({len(procs)} processes), {args.seconds:.0f} s while train ran ({train_seconds:.0f} s)")
            print(f"POST /loops answered 202 in {accepted * 1000:.1f} ms")
            print(f"requests {len(latencies)}, non-200 {errors}")
            print(f"requests/s {len(latencies) / args.seconds:.0f}")
            print(f"latency p50 {q[49] * 1000:.1f} ms, p90 {q[89] * 1000:.1f} ms, p99 {q[98] * 1000:.1f} ms, max {latencies[-1] * 1000:.1f} ms")
            print(f"server CPU {cpu_used / len(latencies) * 1e6:.0f} us per request")
            print(
                f"cores busy: server {cpu_used / elapsed:.2f}, load generator {client_cpu / args.seconds:.2f}, "
                f"whole machine {machine:.2f} of {os.cpu_count()}"
            )
            print(f"loop stage at the end: {state['status']}/{state['stage']}")


if __name__ == "__main__":
    main()
