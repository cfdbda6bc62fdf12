"""API tokens: created once, stored as keyed hashes, checked fast.

A token reads ``<name>.<secret>``: the name finds the one stored record to
check (one read by name, no scan), the secret is 32 random bytes. Storage
keeps only ``name``, a random per-record key (``salt``), the HMAC-SHA-256
of the secret under that key (``hash``) and ``created``; the token
itself is shown once, to whoever created it, and never logged. A 256-bit
random secret cannot be guessed, so a keyed hash is enough: a password KDF
(scrypt, ~0.1 s) would only hand anyone sending made-up tokens a way to
keep the server's cores busy.

Records made by alectio 0.1.0 (``"algorithm": "scrypt"``) are refused with a
message saying to create a new token: checking them would take a scrypt per
request again.

:class:`TokenVerifier` keeps each stored record it read for
``cache_seconds``, so a known token costs one HMAC; after that the record is
read again, so a token revoked from another process stops working within
that time. ``last_used`` is recorded beside the record
(``Storage.touch_token``), never by rewriting it.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import threading
import time
from typing import Any

from .clock import now
from .errors import ConflictError, UnauthorizedError, ValidationError
from .ids import ID_RULE, is_id
from .storage import Storage

log = logging.getLogger(__name__)

ALGORITHM = "hmac-sha256"


def check_name(name: Any) -> str:
    if not is_id(name):
        raise ValidationError(f"invalid token name {name!r}: {ID_RULE}")
    return name


def _hash(secret: str, key: bytes) -> bytes:
    return hmac.new(key, secret.encode(), hashlib.sha256).digest()


def create_token(storage: Storage, name: str) -> str:
    """Store a new token's keyed hash and return the token (the only copy)."""
    check_name(name)
    secret = secrets.token_urlsafe(32)
    key = secrets.token_bytes(32)
    storage.put_token(
        {"name": name, "algorithm": ALGORITHM, "salt": key.hex(), "hash": _hash(secret, key).hex(), "created": now()}
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
    """Checks bearer tokens against storage, keeping the records it read."""

    #: Seconds between ``last_used`` writes for one token.
    TOUCH_INTERVAL = 60.0

    def __init__(self, storage: Storage, cache_seconds: float = 10.0):
        self.storage = storage
        self.cache_seconds = cache_seconds
        self._cache: dict[str, tuple[dict, float]] = {}  # name -> (stored record, when to read it again)
        self._touched: dict[str, float] = {}
        self._lock = threading.Lock()
        self._dummy = secrets.token_bytes(32)

    def verify(self, token: str | None) -> str | None:
        """The token's name when ``token`` is valid, else None.

        Raises :class:`UnauthorizedError` for a token made by alectio 0.1.0,
        saying what to do."""
        if not token or "." not in token or len(token) > 200:
            return None
        name, _, secret = token.rpartition(".")
        if not is_id(name) or not secret:
            return None
        record = self._record(name)
        if record is None:
            _hash(secret, self._dummy)  # the same work as for a known name
            return None
        if record.get("algorithm") != ALGORITHM:
            raise UnauthorizedError(
                f"the API token {name!r} was made by an older alectio (scrypt) and is no longer accepted: "
                f"create a new one with 'alectio token create --name NAME', then 'alectio token revoke {name}'"
            )
        try:
            expected, key = bytes.fromhex(record["hash"]), bytes.fromhex(record["salt"])
        except (KeyError, TypeError, ValueError):
            log.warning("API token %r has a malformed stored record; refusing it", name)
            return None
        if not hmac.compare_digest(_hash(secret, key), expected):
            return None
        return self.used(name)

    def fingerprint(self, name: str) -> str | None:
        """A digest of the token ``name``'s stored record: a dashboard
        session keeps it, so revoking the token ends the session even if a
        token of the same name is made again. None when the token is
        unknown, revoked or an outdated record. Cached like the record."""
        record = self._record(name) if is_id(name) else None
        if record is None or record.get("algorithm") != ALGORITHM or not isinstance(record.get("hash"), str):
            return None
        return hashlib.sha256(record["hash"].encode()).hexdigest()[:32]

    def _record(self, name: str) -> dict | None:
        """The stored record, from memory while it is fresh."""
        cached = self._cache.get(name)
        if cached is not None and time.monotonic() < cached[1]:
            return cached[0]
        record = self.storage.get_token(name)
        with self._lock:
            if record is None:
                self._cache.pop(name, None)
            else:
                self._cache[name] = (record, time.monotonic() + self.cache_seconds)
        return record

    def forget(self, name: str | None = None) -> None:
        """Drop cached records (all, or one name's)."""
        with self._lock:
            if name is None:
                self._cache.clear()
            else:
                self._cache.pop(name, None)

    def used(self, name: str) -> str:
        """Record ``last_used``, at most once per ``TOUCH_INTERVAL`` (a
        token's dashboard sessions count as uses too)."""
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


def outdated_tokens(storage: Storage) -> list[str]:
    """Names of the tokens made by alectio 0.1.0, which are refused."""
    return [t["name"] for t in storage.list_tokens() if t.get("algorithm") != ALGORITHM]


def ensure_token(storage: Storage, name: str = "default") -> str | None:
    """Create a token when none exists; return it (or None if one existed)."""
    if storage.list_tokens():
        return None
    try:
        return create_token(storage, name)
    except ConflictError:  # a concurrent start created it first
        return None
