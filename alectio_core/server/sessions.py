"""Dashboard sessions: a signed cookie standing for an API token.

A session cookie reads ``<token name>.<expires>.<nonce>.<signature>``. The
signature is an HMAC keyed on the token's *stored* keyed hash, so:

* the cookie never holds the API token, nor anything that reveals it;
* every server sharing the storage reads the same record, so each accepts
  the sessions the others started (no secret of a server's own to share);
* revoking the token removes the record, and with it every session it
  started (within the verifier's cache time, as for the token itself);
* the CSRF token is derived the same way from the session's nonce, so it
  needs no storage either.

Signing out is the one thing stored: the session's nonce, in storage
(``Storage.end_session``), so every server refuses the cookie from then on;
a server checks again after the verifier's ``cache_seconds`` (10 s), as it
does for a revoked token.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import threading
import time
from dataclasses import dataclass

from ..ids import is_id
from ..tokens import TokenVerifier

COOKIE = "alectio_session"
_NONCE = re.compile(r"[0-9a-f]{32}")


@dataclass(frozen=True)
class Session:
    token_name: str
    expires: int  # unix seconds
    nonce: str
    csrf_token: str


class Sessions:
    """Starts, checks and ends sessions for the tokens ``verifier`` accepts."""

    def __init__(self, verifier: TokenVerifier, seconds: int):
        self.verifier = verifier
        self.storage = verifier.storage
        self.seconds = seconds
        self._live: dict[str, float] = {}  # nonce -> when storage last said it was not signed out
        self._lock = threading.Lock()

    def start(self, token: str) -> tuple[str, Session] | None:
        """The cookie value and session for a valid API token, else None."""
        name = self.verifier.verify(token)
        if name is None:
            return None
        key = self._key(name)
        if key is None:  # revoked between the two reads
            return None
        expires = int(time.time()) + self.seconds
        nonce = secrets.token_hex(16)
        payload = f"{name}.{expires}.{nonce}"
        return f"{payload}.{_sign(key, 'session', payload)}", Session(name, expires, nonce, _sign(key, "csrf", nonce))

    def check(self, cookie: str | None) -> Session | None:
        """The session a cookie stands for, or None when it is malformed,
        forged, expired, signed out or its token was revoked."""
        if not cookie or len(cookie) > 300 or cookie.count(".") != 3:
            return None
        name, expires_text, nonce, signature = cookie.split(".")
        if not is_id(name) or not expires_text.isdigit() or not _NONCE.fullmatch(nonce):
            return None
        expires = int(expires_text)
        key = self._key(name)
        if key is None:
            return None
        if not hmac.compare_digest(_sign(key, "session", f"{name}.{expires}.{nonce}"), signature):
            return None
        if expires <= time.time() or self._ended(nonce):
            return None
        return Session(name, expires, nonce, _sign(key, "csrf", nonce))

    def end(self, session: Session) -> None:
        self.storage.end_session(session.nonce, session.expires)
        with self._lock:
            self._live.pop(session.nonce, None)

    def _ended(self, nonce: str) -> bool:
        """Signed out (here or on another server)? Storage is asked again
        after ``cache_seconds``; a signed-out session is never cached."""
        now = time.monotonic()
        fresh = self.verifier.cache_seconds
        if nonce in self._live and now - self._live[nonce] < fresh:
            return False
        if self.storage.session_ended(nonce):
            return True
        with self._lock:
            if len(self._live) > 10_000:  # mostly sessions that ended long ago
                self._live = {n: t for n, t in self._live.items() if now - t < fresh}
            self._live[nonce] = now
        return False

    def _key(self, name: str) -> bytes | None:
        """The signing key of a token's sessions, from its stored hash."""
        stored = self.verifier.stored_hash(name)
        return None if stored is None else hmac.new(stored, b"alectio dashboard session", hashlib.sha256).digest()


def csrf_matches(session: Session, sent: str | None) -> bool:
    return bool(sent) and hmac.compare_digest(session.csrf_token.encode(), str(sent).encode())


def _sign(key: bytes, purpose: str, message: str) -> str:
    return hmac.new(key, f"{purpose}:{message}".encode(), hashlib.sha256).hexdigest()
