"""Dashboard sessions: a random secret in the browser, its digest in storage.

Signing in makes a 256-bit random secret, sends it as the
``alectio_session`` cookie and stores ``{token, fingerprint, expires}``
under the secret's sha256 (``Storage.put_session``). So:

* the cookie never holds the API token, nor anything that reveals it;
* whoever can only *read* the storage (a copy of the SQLite file, a
  read-only S3 policy) cannot make a cookie: a digest does not give the
  secret back, and nothing stored signs anything;
* every server sharing the storage finds the session the others started;
* signing out deletes the record (``Storage.delete_session``); revoking the
  token ends its sessions: one stands only while its token's stored record
  is the one it was started with (the ``fingerprint``);
* the CSRF token is an HMAC of the secret, so it needs no storage and a
  storage reader cannot compute it either.

A server keeps each session record it read for the verifier's
``cache_seconds`` (10 s), as it keeps token records: a session signed out
or a token revoked on another server is refused here within that time.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import threading
import time
from dataclasses import dataclass

from ..tokens import TokenVerifier

COOKIE = "alectio_session"
_SECRET = re.compile(r"[A-Za-z0-9_-]{43}")  # secrets.token_urlsafe(32)


@dataclass(frozen=True)
class Session:
    token_name: str
    expires: float  # unix seconds
    digest: str  # what storage keys it by
    csrf_token: str


class Sessions:
    """Starts, checks and ends sessions for the tokens ``verifier`` accepts."""

    def __init__(self, verifier: TokenVerifier, seconds: int):
        self.verifier = verifier
        self.storage = verifier.storage
        self.seconds = seconds
        self._cache: dict[str, tuple[dict, float]] = {}  # digest -> (stored record, when it was read)
        self._lock = threading.Lock()

    def start(self, token: str) -> tuple[str, Session] | None:
        """The cookie value and session for a valid API token, else None."""
        name = self.verifier.verify(token)
        fingerprint = None if name is None else self.verifier.fingerprint(name)
        if name is None or fingerprint is None:  # not valid, or revoked between the two reads
            return None
        secret = secrets.token_urlsafe(32)
        expires = time.time() + self.seconds
        session = Session(name, expires, _digest(secret), _csrf(secret))
        self.storage.put_session(session.digest, {"token": name, "fingerprint": fingerprint, "expires": expires})
        return secret, session

    def check(self, cookie: str | None) -> Session | None:
        """The session a cookie stands for, or None when it is malformed,
        unknown, expired, signed out or its token was revoked."""
        if not cookie or not _SECRET.fullmatch(cookie):
            return None
        digest = _digest(cookie)
        record = self._record(digest)
        if record is None:
            return None
        name, expires = record.get("token"), record.get("expires")
        if not isinstance(name, str) or not isinstance(expires, (int, float)) or expires <= time.time():
            return None
        fingerprint = self.verifier.fingerprint(name)
        if fingerprint is None or fingerprint != record.get("fingerprint"):  # revoked (and maybe made again)
            return None
        self.verifier.used(name)  # `alectio token list` shows the dashboard's use as the token's
        return Session(name, float(expires), digest, _csrf(cookie))

    def end(self, session: Session) -> None:
        self.storage.delete_session(session.digest)
        with self._lock:
            self._cache.pop(session.digest, None)

    def _record(self, digest: str) -> dict | None:
        """The stored record, from memory while it is fresh; a miss is not
        kept (a session started on another server a moment ago is found)."""
        now = time.monotonic()
        fresh = self.verifier.cache_seconds
        cached = self._cache.get(digest)
        if cached is not None and now - cached[1] < fresh:
            return cached[0]
        record = self.storage.get_session(digest)
        with self._lock:
            if record is None:
                self._cache.pop(digest, None)
                return None
            if len(self._cache) > 10_000:  # mostly sessions read long ago
                self._cache = {d: c for d, c in self._cache.items() if now - c[1] < fresh}
            self._cache[digest] = (record, now)
        return record


def csrf_matches(session: Session, sent: str | None) -> bool:
    return bool(sent) and hmac.compare_digest(session.csrf_token.encode(), str(sent).encode())


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _csrf(secret: str) -> str:
    return hmac.new(secret.encode(), b"alectio dashboard csrf", hashlib.sha256).hexdigest()
