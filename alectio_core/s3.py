"""S3, shared by the ``s3`` storage backend (:mod:`alectio_plugins.storage_s3`)
and platform mode's bucket (:mod:`alectio_core.platform_mode`): the
client's configuration, botocore's failures as one-line storage errors, and
``.npy`` upload bodies read straight from arrays.

Credentials, region and endpoint come from boto3's standard chain;
``storage_options`` may add ``endpoint_url``, ``region_name``,
``addressing_style``, ``max_attempts``, ``connect_timeout`` and
``read_timeout``.
"""

from __future__ import annotations

import io
import sys
from typing import Any, Iterable, Mapping

import numpy as np

from .errors import StorageError

BUCKET_PATTERN = r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$"
#: The ``storage_options`` that configure the client.
CLIENT_OPTIONS = ("endpoint_url", "region_name", "addressing_style", "max_attempts", "connect_timeout", "read_timeout")
_MISSING = ("NoSuchKey", "404", "NotFound")
_DENIED = ("AccessDenied", "403", "InvalidAccessKeyId", "SignatureDoesNotMatch", "AllAccessDisabled", "Forbidden")


def max_attempts(options: Mapping[str, Any]) -> int:
    """Attempts per request (botocore's standard retries), first included."""
    return int(options.get("max_attempts", 5))


def make_client(options: Mapping[str, Any]):
    """A boto3 S3 client configured from ``options``."""
    import boto3
    from botocore.config import Config

    config = Config(
        retries={"total_max_attempts": max_attempts(options), "mode": "standard"},
        connect_timeout=float(options.get("connect_timeout", 5)),
        read_timeout=float(options.get("read_timeout", 30)),
        s3={"addressing_style": options.get("addressing_style", "auto")},
        max_pool_connections=16,
    )
    return boto3.session.Session().client(
        "s3", endpoint_url=options.get("endpoint_url"), region_name=options.get("region_name"), config=config
    )


def is_missing(exc: BaseException) -> bool:
    """Whether ``exc`` says the object (or bucket) does not exist."""
    from botocore.exceptions import ClientError

    return isinstance(exc, ClientError) and str(exc.response.get("Error", {}).get("Code")) in _MISSING


def storage_error(
    exc: BaseException, action: str, where: str, *, bucket: str, endpoint: str, attempts: int, on_bucket: bool = False
) -> StorageError:
    """``exc``, raised trying to ``action`` ``where`` (an ``s3://`` URL), as a
    ``StorageError`` that says what to check. ``on_bucket``: the request was
    about the bucket itself, so "not found" means no bucket."""
    from botocore.exceptions import (
        BotoCoreError,
        ClientError,
        ConnectionError as BotoConnectionError,
        ConnectTimeoutError,
        EndpointConnectionError,
        HTTPClientError,
        NoCredentialsError,
        PartialCredentialsError,
        ReadTimeoutError,
    )

    if isinstance(exc, (NoCredentialsError, PartialCredentialsError)):
        message = (
            f"no usable AWS credentials to {action} {where}: set AWS_ACCESS_KEY_ID and "
            f"AWS_SECRET_ACCESS_KEY, AWS_PROFILE, or use an instance role ({exc})"
        )
    elif isinstance(exc, ClientError):
        code = str(exc.response.get("Error", {}).get("Code", ""))
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        if code == "NoSuchBucket" or (code in ("404", "NotFound") and on_bucket):
            message = f"S3 bucket {bucket!r} does not exist (at {endpoint}); cannot {action} {where}"
        elif code in _DENIED:
            message = f"access denied to {where} ({code}) trying to {action}: check the credentials and the bucket policy"
        elif status >= 500:
            message = (
                f"S3 endpoint {endpoint} kept failing (HTTP {status} {code}) trying to {action} {where}; "
                f"gave up after {attempts} attempts"
            )
        else:
            message = f"S3 error {code} trying to {action} {where}: {exc}"
    elif isinstance(exc, (ConnectTimeoutError, ReadTimeoutError)):
        message = f"S3 endpoint {endpoint} did not answer trying to {action} {where} (gave up after {attempts} attempts): {exc}"
    elif isinstance(exc, EndpointConnectionError):
        message = (
            f"could not connect to S3 endpoint {endpoint} trying to {action} {where} "
            f"(gave up after {attempts} attempts): {exc}"
        )
    elif isinstance(exc, (BotoConnectionError, HTTPClientError)):
        message = (
            f"the connection to S3 endpoint {endpoint} failed trying to {action} {where} "
            f"(gave up after {attempts} attempts): {exc}"
        )
    elif isinstance(exc, (BotoCoreError, OSError)):
        message = f"S3 failure trying to {action} {where}: {type(exc).__name__}: {exc}"
    else:
        message = f"unexpected failure trying to {action} {where}: {type(exc).__name__}: {exc}"
    return StorageError(message)


class NpyBody(io.RawIOBase):
    """A ``.npy`` file read straight from arrays' memory, without copying
    them: the header for ``dtype`` and ``shape``, then the pieces' bytes.

    Over a list of pieces (``NpyBody.of(array)``) it is seekable: botocore
    reads a ``put_object`` body to checksum it, again to send it, and again
    on a retry. Over an iterator (arrays arriving one after the other, for
    ``upload_fileobj``) it is read once, front to back, holding only the
    piece being read. ``size`` is what the header promises; after the last
    read, ``tell()`` is what the pieces held.
    """

    def __init__(self, dtype: Any, shape: tuple, pieces: Iterable[np.ndarray]):
        self._dtype = np.dtype(dtype)
        shape = tuple(int(s) for s in shape)
        header = io.BytesIO()
        np.lib.format.write_array_header_1_0(
            header, {"descr": np.lib.format.dtype_to_descr(self._dtype), "fortran_order": False, "shape": shape}
        )
        self.size = header.tell() + int(np.prod(shape, dtype=np.int64)) * self._dtype.itemsize
        self._seekable = isinstance(pieces, (list, tuple))
        self._pending: Any = iter(pieces)
        self._parts = [(0, memoryview(header.getvalue()))]  # (offset, bytes)
        self._end = header.tell()  # offset after the last part taken
        self._pos = 0

    @classmethod
    def of(cls, array: np.ndarray) -> "NpyBody":
        return cls(array.dtype, array.shape, [array])

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return self._seekable

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = 0) -> int:
        if not self._seekable:
            raise io.UnsupportedOperation("an NpyBody over arriving pieces is read once")
        base = {0: 0, 1: self._pos, 2: self.size}[whence]
        self._pos = max(0, min(self.size, base + offset))
        return self._pos

    def __len__(self) -> int:
        return self.size

    def _part(self) -> tuple[int, memoryview] | None:
        """The part holding the current position (taking pieces as needed),
        or None at the end."""
        while True:
            for start, part in self._parts:
                if start <= self._pos < start + part.nbytes:
                    return start, part
            if self._pending is None:
                return None
            piece = next(self._pending, None)
            if piece is None:
                self._pending = None
                return None
            # Bytes as a flat view, not a copy (memoryview.cast refuses empty 2-d arrays).
            view = np.ascontiguousarray(piece, dtype=self._dtype).reshape(-1).view(np.uint8).data
            if not self._seekable:
                self._parts = []  # read once: what is behind is never asked for again
            self._parts.append((self._end, view))
            self._end += view.nbytes

    def readinto(self, buffer) -> int:
        out, done = memoryview(buffer).cast("B"), 0
        while done < out.nbytes and (found := self._part()) is not None:
            start, part = found
            lo = self._pos - start
            n = min(part.nbytes - lo, out.nbytes - done)
            out[done : done + n] = part[lo : lo + n]
            done += n
            self._pos += n
        return done

    def read(self, size: int | None = -1) -> bytes:
        """One copy of what is asked for, no more (``RawIOBase.read`` makes two)."""
        left = sys.maxsize if size is None or size < 0 else size
        pieces = []
        while left > 0 and (found := self._part()) is not None:
            start, part = found
            lo = self._pos - start
            n = min(part.nbytes - lo, left)
            pieces.append(part[lo : lo + n])
            self._pos += n
            left -= n
        return b"".join(pieces)
