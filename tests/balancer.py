"""A round-robin TCP load balancer for tests: the least any real one does.

Each client connection goes to the next backend in turn (layer 4, like
HAProxy in TCP mode or an AWS Network Load Balancer); a backend that
refuses the connection (a dead server) is skipped for the next one. It
knows nothing of HTTP, sessions or alectio, so whatever works through it
works behind any balancer. ``served`` says which backend took each
connection, in order.
"""

from __future__ import annotations

import contextlib
import socket
import threading


class Balancer:
    def __init__(self, backends: list[tuple[str, int]]):
        self.backends = list(backends)
        self.served: list[int] = []
        self._next = 0
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self._closing = False
        self._sockets: set[socket.socket] = set()
        self._thread = threading.Thread(target=self._accept, name="balancer", daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:  # closed
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _connect(self) -> socket.socket | None:
        with self._lock:
            order = [(self._next + i) % len(self.backends) for i in range(len(self.backends))]
            self._next = (self._next + 1) % len(self.backends)
        for index in order:
            try:
                upstream = socket.create_connection(self.backends[index], timeout=5)
            except OSError:
                continue
            upstream.settimeout(None)
            with self._lock:
                self.served.append(index)
            return upstream
        return None

    def _serve(self, client: socket.socket) -> None:
        upstream = self._connect()
        if upstream is None:
            client.close()
            return
        with self._lock:
            if self._closing:
                client.close()
                upstream.close()
                return
            self._sockets |= {client, upstream}
        back = threading.Thread(target=self._pump, args=(upstream, client), daemon=True)
        back.start()
        self._pump(client, upstream)
        back.join()
        with self._lock:
            self._sockets -= {client, upstream}
        client.close()
        upstream.close()

    def _pump(self, source: socket.socket, target: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                target.sendall(data)
            target.shutdown(socket.SHUT_WR)
        except OSError:  # the other side went away (a killed server, or close()): end both directions
            for sock in (source, target):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        with self._lock:
            self._closing = True
            sockets, self._sockets = self._sockets, set()
        self._listener.shutdown(socket.SHUT_RDWR)  # wakes accept(); close() alone would not
        self._listener.close()
        for sock in sockets:  # ends the pumps, which close their sockets
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        self._thread.join(5)
