"""A real Label Studio for the tests (``tests/test_labelstudio.py``).

``label-studio`` (a large Django app) is pip-installed once into a
virtualenv of its own, never into the one running the tests:
``$ALECTIO_TEST_CACHE/label-studio-1.23.2`` (default
``~/.cache/alectio-tests``), reused while its ``.installed`` marker is
there. The first install takes about two minutes, starting Label Studio on
a new data folder 35-80 s; both happen once per test session.

It is started on 127.0.0.1 on a free port, with a temporary data folder
(sqlite), a user and a legacy API token (1.23 refuses those unless
``LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN`` is set), and with SSRF protection
off so its webhooks may call alectio on 127.0.0.1. Stopped by its process id.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import socketserver
import subprocess
import sys
import threading
import time
from pathlib import Path

import requests

VERSION = "1.23.2"


def cache_folder() -> Path:
    base = os.environ.get("ALECTIO_TEST_CACHE") or os.path.join(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache", "alectio-tests")
    return Path(base)


def label_studio_venv() -> Path:
    """The virtualenv with ``label-studio`` installed, made on first use."""
    venv = cache_folder() / f"label-studio-{VERSION}"
    marker = venv / ".installed"
    if marker.exists():
        return venv
    shutil.rmtree(venv, ignore_errors=True)  # a half-made one from an interrupted install
    venv.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", f"label-studio=={VERSION}"],
        check=True,
        env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_ROOT_USER_ACTION": "ignore"},
    )
    marker.write_text(f"installed in {time.monotonic() - started:.0f}s\n")
    return venv


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LabelStudioServer:
    """``label-studio start`` as a child process; ``url`` and ``token`` to reach it."""

    def __init__(self, data: Path, timeout: float = 300.0):
        venv = label_studio_venv()
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.token = secrets.token_hex(20)
        self.log_path = data / "label-studio.log"
        data.mkdir(parents=True, exist_ok=True)
        env = {
            **os.environ,
            "LABEL_STUDIO_BASE_DATA_DIR": str(data),
            "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true",
            "SSRF_PROTECTION_ENABLED": "false",
        }
        env.pop("LABEL_STUDIO_API_KEY", None)
        started = time.monotonic()
        with open(self.log_path, "w") as log:
            self.process = subprocess.Popen(
                [
                    str(venv / "bin" / "label-studio"), "start", "--no-browser",
                    "--port", str(self.port), "--internal-host", "127.0.0.1",
                    "--username", "annotator@example.com", "--password", secrets.token_hex(8),
                    "--user-token", self.token,
                ],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, cwd=data,
            )
        try:
            self._wait(timeout)
        except BaseException:
            self.stop()
            raise
        self.start_seconds = time.monotonic() - started

    def _wait(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"label-studio exited with {self.process.returncode}:\n{self.log()[-3000:]}")
            try:
                if requests.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"label-studio did not answer within {timeout:.0f}s:\n{self.log()[-3000:]}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def api(self, method: str, path: str, **kw) -> requests.Response:
        """Label Studio's own API, as an annotator's browser calls it."""
        headers = {"Authorization": f"Token {self.token}", **kw.pop("headers", {})}
        return requests.request(method, f"{self.url}{path}", headers=headers, timeout=60, **kw)

    def stop(self) -> None:
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                os.kill(self.process.pid, signal.SIGKILL)
                self.process.wait(10)


class Gate:
    """A port on 127.0.0.1 that forwards to ``target_port`` while open and
    refuses connections while closed: Label Studio going down and coming
    back, without restarting it."""

    def __init__(self, target_port: int):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.target = target_port
        self._server: socketserver.ThreadingTCPServer | None = None
        self._sockets: list[socket.socket] = []

    def open(self) -> None:
        gate = self

        class Forward(socketserver.BaseRequestHandler):
            def handle(self):
                upstream = socket.create_connection(("127.0.0.1", gate.target))
                gate._sockets += [self.request, upstream]
                back = threading.Thread(target=_pump, args=(upstream, self.request), daemon=True)
                back.start()
                _pump(self.request, upstream)
                back.join()

        socketserver.ThreadingTCPServer.allow_reuse_address = True
        self._server = socketserver.ThreadingTCPServer(("127.0.0.1", self.port), Forward)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        for s in self._sockets:  # kept-alive connections go down too
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()
        self._sockets.clear()


def _pump(source: socket.socket, sink: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            sink.sendall(data)
    except OSError:
        pass
    with contextlib.suppress(OSError):
        sink.shutdown(socket.SHUT_WR)
