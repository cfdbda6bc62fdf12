"""What the benchmarks share: the do-nothing model ``bench_zero`` (or
another benchmark model) installed aside, a whole process timed,
``alectio serve`` run for the length of a measurement, and an S3 server
(moto) in a process of its own.

``bench_zero`` (``benchmarks/packages/alectio-bench-zero``), like the
other models under ``benchmarks/packages/``, is pip-installed
into a temporary ``--target`` folder put on the timed processes'
``PYTHONPATH``, as the tests install theirs, never into the environment
running the benchmark.
"""

from __future__ import annotations

import contextlib
import http.client
import resource
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator

ROOT = Path(__file__).resolve().parent.parent
ZERO_MODEL = ROOT / "benchmarks" / "packages" / "alectio-bench-zero"


def proc_status(field: str) -> int:
    """A byte count from ``/proc/self/status`` (``VmRSS``, ``VmHWM``)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def install_zero_model(folder: Path) -> dict:
    """pip-install ``bench_zero`` into ``folder``; the environment that sees it."""
    return install_model(folder, ZERO_MODEL)


def install_model(folder: Path, package: Path) -> dict:
    """pip-install the model package at ``package`` into ``folder``; the environment that sees it."""
    sys.path.insert(0, str(ROOT / "tests"))
    from installer import pip_install, with_path  # the tests' installer: --target, never site-packages

    env = with_path(pip_install(folder, package))
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # bytecode written as usual: imports cost what they cost a user
    return env


def timed(command: list[str], env: dict, stderr=subprocess.DEVNULL) -> tuple[float, float, str]:
    """Wall-clock and CPU (user + system) seconds of one process, and its
    stderr if asked for (``stderr=subprocess.PIPE``)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    # In a folder of its own: ``-m`` looks in the current folder first.
    done = subprocess.run(command, env=env, stdout=subprocess.DEVNULL, stderr=stderr, text=True, cwd=tempfile.gettempdir())
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode:
        sys.exit(f"{' '.join(command)} exited with {done.returncode}:\n{done.stderr or ''}")
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), done.stderr or ""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serving(folder: Path, *options: str, env: dict) -> Iterator[tuple[int, subprocess.Popen]]:
    """``alectio serve *options`` on a free port of 127.0.0.1, its log in
    ``folder/server.log``: yields (port, process) once ``/health`` answers,
    and stops the server afterwards."""
    port = free_port()
    with open(folder / "server.log", "w") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "alectio_core", "serve", "--port", str(port), *options],
            stdout=log, stderr=log, env=env, cwd=folder,
        )
        try:
            deadline = time.time() + 60
            while True:
                try:
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                    conn.request("GET", "/health")
                    conn.getresponse().read()
                    conn.close()
                    break
                except OSError:
                    if time.time() > deadline or server.poll() is not None:
                        raise SystemExit(f"server did not start; see {folder / 'server.log'}")
                    time.sleep(0.1)
            yield port, server
        finally:
            server.terminate()
            try:
                server.wait(20)
            except subprocess.TimeoutExpired:
                server.kill()


_MOTO = """
import logging, sys
from moto.server import ThreadedMotoServer
server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
server.start()
logging.getLogger("werkzeug").setLevel(logging.ERROR)
print(server.get_host_and_port()[1], flush=True)
sys.stdin.read()
server.stop()
"""


@contextlib.contextmanager
def moto_server() -> Iterator[str]:
    """A moto S3 server on 127.0.0.1 in its own process (its work is not
    counted in this one's); yields its endpoint URL. It stops when its
    stdin closes."""
    server = subprocess.Popen([sys.executable, "-c", _MOTO], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        yield f"http://127.0.0.1:{int(server.stdout.readline())}"
    finally:
        assert server.stdin is not None
        server.stdin.close()
        server.wait(timeout=30)
