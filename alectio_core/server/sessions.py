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

Signing out ends the session on the server that was asked: its nonce is kept
in memory until the cookie would have expired anyway. Another server sharing
the storage does not hear of it, so a copy of the cookie stays valid there
until ``server.session_seconds`` run out; revoking the token ends them all.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from dataclasses import dataclass

from ..ids import is_id
from ..tokens import TokenVerifier

COOKIE = "alectio_session"


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
        self.seconds = seconds
        self._ended: dict[str, int] = {}  # nonce -> expires, for sessions signed out here
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
        nonce = secrets.token_urlsafe(16)
        payload = f"{name}.{expires}.{nonce}"
        return f"{payload}.{_sign(key, 'session', payload)}", Session(name, expires, nonce, _sign(key, "csrf", nonce))

    def check(self, cookie: str | None) -> Session | None:
        """The session a cookie stands for, or None when it is malformed,
        forged, expired, signed out or its token was revoked."""
        if not cookie or len(cookie) > 300 or cookie.count(".") != 3:
            return None
        name, expires_text, nonce, signature = cookie.split(".")
        if not is_id(name) or not expires_text.isdigit():
            return None
        expires = int(expires_text)
        key = self._key(name)
        if key is None:
            return None
        if not hmac.compare_digest(_sign(key, "session", f"{name}.{expires}.{nonce}"), signature):
            return None
        if expires <= time.time() or nonce in self._ended:
            return None
        return Session(name, expires, nonce, _sign(key, "csrf", nonce))

    def end(self, session: Session) -> None:
        now = time.time()
        with self._lock:
            self._ended = {n: e for n, e in self._ended.items() if e > now}  # forget what expired anyway
            self._ended[session.nonce] = session.expires

    def _key(self, name: str) -> bytes | None:
        """The signing key of a token's sessions, from its stored hash."""
        stored = self.verifier.stored_hash(name)
        return None if stored is None else hmac.new(stored, b"alectio dashboard session", hashlib.sha256).digest()


def csrf_matches(session: Session, sent: str | None) -> bool:
    return bool(sent) and hmac.compare_digest(session.csrf_token.encode(), str(sent).encode())


def _sign(key: bytes, purpose: str, message: str) -> str:
    return hmac.new(key, f"{purpose}:{message}".encode(), hashlib.sha256).hexdigest()
