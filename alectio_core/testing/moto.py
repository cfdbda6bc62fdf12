"""An S3 server for tests: moto in server mode, spoken to over real HTTP."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from moto.server import ThreadedMotoServer


class MotoS3:
    """A moto S3 server on 127.0.0.1 in this process (needs ``moto[server]``).

    ``env`` holds the standard AWS variables that point boto3 at it; moto
    keeps its data across ``stop()`` / ``start()`` on the same port, so a
    test can take the server away mid-loop and look at what is left after.
    """

    def __init__(self) -> None:
        self.port = 0
        self._server: ThreadedMotoServer | None = None

    def start(self) -> "MotoS3":
        from moto.server import ThreadedMotoServer

        self._server = server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        server.start()
        self.port = server.get_host_and_port()[1]
        return self

    def stop(self) -> None:
        """Stop answering: close the listening socket too, so new
        connections are refused rather than left waiting."""
        if self._server is not None:
            self._server.stop()
            if self._server._server is not None:  # moto's WSGI server, which stop() leaves listening
                self._server._server.server_close()
            self._server = None

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def env(self) -> dict:
        return {
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
        }

    def client(self):
        import boto3

        env = self.env
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
            region_name=env["AWS_DEFAULT_REGION"],
        )

    def create_bucket(self, name: str | None = None) -> str:
        name = name or f"test-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=name)
        return name
