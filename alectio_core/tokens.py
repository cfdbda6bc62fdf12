"""API tokens: created once, stored as salted scrypt hashes, checked fast.

A token reads ``<name>.<secret>``: the name finds the one stored record to
check (no scan over every hash), the secret is 32 random bytes. Storage
keeps only ``name``, ``salt``, the scrypt ``hash``, its parameters,
``created`` and ``last_used``; the token itself is shown once, to whoever
created it, and never logged.

Checking a salted slow hash takes ~0.1 s, so :class:`TokenVerifier`
remembers a verified token in memory as the SHA-256 of the token, for
``cache_seconds``: a request then costs one SHA-256 and one
``hmac.compare_digest``. After ``cache_seconds`` the stored record is read
again (no hashing unless it changed), so a token revoked from another
process stops working within that time.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
import threading
import time
from typing import Any

from .engine import now
from .errors import ConflictError, ValidationError
from .storage import Storage

log = logging.getLogger(__name__)

SCRYPT = {"n": 2**14, "r": 8, "p": 1}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")


def check_name(name: Any) -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ValidationError(
            f"invalid token name {name!r}: use 1-64 letters, digits, '_' or '-', starting with a letter or digit"
        )
    return name


def _hash(secret: str, salt: bytes, params: dict) -> bytes:
    return hashlib.scrypt(secret.encode(), salt=salt, n=params["n"], r=params["r"], p=params["p"], dklen=32)


def create_token(storage: Storage, name: str) -> str:
    """Store a new token's salted hash and return the token (the only copy)."""
    check_name(name)
    secret = secrets.token_urlsafe(32)
    salt = secrets.token_bytes(16)
    storage.put_token(
        {
            "name": name,
            "algorithm": "scrypt",
            "params": dict(SCRYPT),
            "salt": salt.hex(),
            "hash": _hash(secret, salt, SCRYPT).hex(),
            "created": now(),
            "last_used": None,
        }
    )
    log.info("API token %r created", name)
    return f"{name}.{secret}"


def list_tokens(storage: Storage) -> list[dict]:
    """Name, created and last used of every token (never hashes or salts)."""
    return [{"name": t["name"], "created": t.get("created"), "last_used": t.get("last_used")} for t in storage.list_tokens()]


def revoke_token(storage: Storage, name: str) -> None:
    storage.delete_token(check_name(name))
    log.info("API token %r revoked", name)


class TokenVerifier:
    """Checks bearer tokens against storage, caching the ones that passed."""

    #: Seconds between ``last_used`` writes for one token.
    TOUCH_INTERVAL = 60.0

    def __init__(self, storage: Storage, cache_seconds: float = 10.0, max_concurrent_hashes: int = 2):
        self.storage = storage
        self.cache_seconds = cache_seconds
        # name -> (sha256 of the token, the stored hash it matched, when to re-read storage)
        self._cache: dict[str, tuple[bytes, str, float]] = {}
        self._touched: dict[str, float] = {}
        self._lock = threading.Lock()
        # Each scrypt check takes ~0.1 s and 16 MB: bound how many run at once.
        self._hashing = threading.BoundedSemaphore(max_concurrent_hashes)
        self._dummy = {"salt": "00" * 16, "hash": "00" * 32, "params": SCRYPT}

    def verify(self, token: str | None) -> str | None:
        """The token's name when ``token`` is valid, else None."""
        if not token or "." not in token or len(token) > 200:
            return None
        name, _, secret = token.rpartition(".")
        if not _NAME.fullmatch(name) or not secret:
            return None
        digest = hashlib.sha256(token.encode()).digest()
        if self._cached(name, digest):
            return self._used(name)
        cached = self._cache.get(name)
        if cached is not None and hmac.compare_digest(digest, cached[0]):
            # Expired: re-read the record (revoked? replaced?), no hashing.
            record = self._record(name)
            if record is None or record["hash"] != cached[1]:
                self.forget(name)
                return None
            self._remember(name, digest, record)
            return self._used(name)
        with self._hashing:
            if self._cached(name, digest):  # verified while this one waited
                return self._used(name)
            record = self._record(name)
            known = record is not None
            record = record or self._dummy  # the same work for an unknown name
            computed = _hash(secret, bytes.fromhex(record["salt"]), record.get("params") or SCRYPT)
            if not (hmac.compare_digest(computed, bytes.fromhex(record["hash"])) and known):
                return None
            self._remember(name, digest, record)
        return self._used(name)

    def _cached(self, name: str, digest: bytes) -> bool:
        cached = self._cache.get(name)
        return cached is not None and time.monotonic() < cached[2] and hmac.compare_digest(digest, cached[0])

    def _record(self, name: str) -> dict | None:
        return next((t for t in self.storage.list_tokens() if t["name"] == name), None)

    def _remember(self, name: str, digest: bytes, record: dict) -> None:
        with self._lock:
            self._cache[name] = (digest, record["hash"], time.monotonic() + self.cache_seconds)

    def forget(self, name: str | None = None) -> None:
        """Drop cached verifications (all, or one name's)."""
        with self._lock:
            if name is None:
                self._cache.clear()
            else:
                self._cache.pop(name, None)

    def _used(self, name: str) -> str:
        """Record ``last_used``, at most once per ``TOUCH_INTERVAL``."""
        t = time.monotonic()
        with self._lock:
            last = self._touched.get(name)
            if last is not None and t - last < self.TOUCH_INTERVAL:
                return name
            self._touched[name] = t
        try:
            self.storage.touch_token(name, now())
        except Exception:  # last-used bookkeeping must never fail a request
            log.warning("could not record the use of token %r", name, exc_info=True)
        return name


def ensure_token(storage: Storage, name: str = "default") -> str | None:
    """Create a token when none exists; return it (or None if one existed)."""
    if storage.list_tokens():
        return None
    try:
        return create_token(storage, name)
    except ConflictError:  # a concurrent start created it first
        return None
