"""Leases: which process runs a loop, when several share one storage.

A loop being queued or run holds a lease in storage, a small record
``{"owner", "expires_at", "cancel_requested"}`` that its holder renews
every third of its time to live (``server.lease_seconds``) from a
heartbeat thread. Exactly one process holds a loop's lease; the others
answer the loop's status, refuse to start it (409 naming the holder) and
may ask the holder to cancel it (the flag, seen at the next renewal). A
loop stored ``running`` or ``queued`` whose lease expired (its process
died, or lost the storage) is reported and stored failed ("interrupted").

A holder that cannot renew (the storage stopped answering, or another
process took over the expired lease) stops its loop; it writes nothing
more unless it still holds the lease or nobody does, and a failure it
could not save is saved as soon as the storage answers again.

Backends only compare-and-swap the record (``Storage.read_lease`` /
``write_lease``; ``commit_loop(..., lease_version=...)``); the policy is
here. Expiry is wall-clock time: servers sharing a storage need clocks
that agree to well within the lease's time to live (NTP does).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from contextlib import suppress
from typing import Any, Callable

from .clock import now
from .errors import AlectioError, ConflictError, LoopCancelled, StorageError

log = logging.getLogger(__name__)


class LoopBusy(ConflictError):
    """Another live process holds the loop's lease."""


class LeaseLost(ConflictError):
    """Another process took over this process's (expired) lease."""


def live(record: dict | None) -> bool:
    """Is this lease record held by someone, unexpired?"""
    return bool(record and record.get("owner") and float(record.get("expires_at") or 0) > time.time())


class Lease:
    """One loop's lease as its holder sees it."""

    def __init__(self, experiment_id: str, loop: int, record: dict, version: str, valid_until: float):
        self.experiment_id, self.loop = experiment_id, loop
        self.record, self.version = record, version
        self.valid_until = valid_until  # time.monotonic() past which storage may think it expired
        self.lock = threading.Lock()  # one renewal or commit at a time
        self.users = 0
        self.running = False  # a LoopRun is executing under it
        self.lost: AlectioError | None = None
        self.cancel_requested = False
        self.on_stop: list[Callable[[], None]] = []  # called when lost or asked to cancel

    def check(self) -> None:
        """Raise why this process may no longer act for the loop, if it may not."""
        if self.lost is not None:
            raise self.lost
        if time.monotonic() > self.valid_until:
            raise StorageError(
                "storage failed: the loop's lease was not renewed in time (the storage did not answer, or the process stalled)"
            )

    def _stop(self) -> None:
        for callback in list(self.on_stop):
            try:
                callback()
            except Exception:
                log.exception("stopping experiment %s loop %d", self.experiment_id, self.loop)


class Leases:
    """This process's leases on one storage: taking, renewing, giving back,
    and the reading side (is a loop someone else's, or interrupted?)."""

    def __init__(self, storage, ttl: float):
        if ttl <= 0:
            raise ValueError("lease seconds must be > 0")
        self.storage, self.ttl = storage, float(ttl)
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._held: dict[tuple[str, int], Lease] = {}
        self._seen_live: dict[tuple[str, int], float] = {}  # another holder's expires_at, last read
        self._pending: dict[tuple[str, int], dict] = {}  # final states the storage has not taken yet
        self._lock = threading.Lock()
        self._beating = False
        self._wake = threading.Event()  # set when the last lease is given back
        self._settling = False

    def _record(self, cancel_requested: bool = False) -> dict:
        return {"owner": self.owner, "expires_at": time.time() + self.ttl, "renewed_at": now(), "cancel_requested": cancel_requested}

    # -- taking and giving back -------------------------------------------------

    def acquire(self, experiment_id: str, loop: int, on_stop: Callable[[], None] | None = None) -> Lease:
        """Take the loop's lease (again, if this process holds it: each
        ``acquire`` needs one ``release``). ``LoopBusy`` when another live
        process holds it. ``on_stop()`` is called when the lease is lost or
        another server asks for the loop to be cancelled."""
        key = (experiment_id, loop)
        with self._lock:
            lease = self._held.get(key)
            if lease is not None and lease.lost is None:
                lease.users += 1
                if on_stop is not None:
                    lease.on_stop.append(on_stop)
                return lease
        started = time.monotonic()
        found = self.storage.read_lease(experiment_id, loop)
        if found is not None and found[0].get("owner") != self.owner and live(found[0]):
            raise self._busy(experiment_id, loop, found[0])
        record = self._record()
        try:
            version = self.storage.write_lease(experiment_id, loop, record, found[1] if found else None)
        except ConflictError:  # another process took it between our read and write
            found = self.storage.read_lease(experiment_id, loop)
            if found is None or found[0].get("expires_at") != record["expires_at"] or found[0].get("owner") != self.owner:
                raise self._busy(experiment_id, loop, (found or ({},))[0]) from None
            version = found[1]  # our own write, landed before a retry of it was refused
        lease = Lease(experiment_id, loop, record, version, started + self.ttl)
        lease.users = 1
        if on_stop is not None:
            lease.on_stop.append(on_stop)
        with self._lock:
            self._held[key] = lease
            self._seen_live.pop(key, None)
            if not self._beating:
                self._beating = True
                threading.Thread(target=self._heartbeat, name="alectio-leases", daemon=True).start()
        return lease

    def _busy(self, experiment_id: str, loop: int, record: dict) -> LoopBusy:
        holder = record.get("owner") or "unknown"
        return LoopBusy(f"loop {loop} of experiment {experiment_id!r} is running on another server ({holder})")

    def release(self, lease: Lease) -> None:
        """Give back one ``acquire``; the last gives the lease back in storage."""
        with self._lock:
            lease.users -= 1
            if lease.users > 0:
                return
            if self._held.get((lease.experiment_id, lease.loop)) is lease:
                del self._held[(lease.experiment_id, lease.loop)]
            if not self._held:
                self._wake.set()
        with lease.lock:
            if lease.lost is not None:
                return  # not ours any more, or settled by ``settle``
            lease.lost = LeaseLost("the lease was given back")
            self._give_back(lease.experiment_id, lease.loop, lease.version)

    def _give_back(self, experiment_id: str, loop: int, version: str) -> None:
        """Mark the lease free (if it is still ours: a cancel flag may have
        changed its version since); if the storage refuses, it expires by itself."""
        try:
            for _ in range(5):
                try:
                    self.storage.write_lease(experiment_id, loop, {"owner": None, "expires_at": 0, "released_at": now()}, version)
                    return
                except ConflictError:
                    found = self.storage.read_lease(experiment_id, loop)
                    if found is None or found[0].get("owner") != self.owner:
                        return  # someone else's now
                    version = found[1]
        except AlectioError as exc:
            log.warning("could not give back the lease of experiment %s loop %d: %s", experiment_id, loop, exc)

    # -- renewing -----------------------------------------------------------------

    def _heartbeat(self) -> None:
        while True:
            self._wake.wait(self.ttl / 3)
            with self._lock:
                self._wake.clear()
                leases = [lease for lease in self._held.values() if lease.lost is None]
                if not leases:
                    self._beating = False
                    return
            for lease in leases:
                with lease.lock:
                    stop = self._renew(lease)
                if stop:
                    lease._stop()

    def _renew(self, lease: Lease) -> bool:
        """Extend the lease (caller holds ``lease.lock``); on failure mark it
        lost. True when its loop must be told to stop (``lease._stop()``,
        called once the lock is let go)."""
        if lease.lost is not None:
            return False
        started = time.monotonic()
        try:
            try:
                record = {**lease.record, **self._record(lease.record.get("cancel_requested", False))}
                lease.version = self.storage.write_lease(lease.experiment_id, lease.loop, record, lease.version)
            except ConflictError:
                found = self.storage.read_lease(lease.experiment_id, lease.loop)
                if found is None or found[0].get("owner") != self.owner:
                    holder = (found[0].get("owner") if found else None) or "nobody"
                    raise LeaseLost(
                        f"loop {lease.loop} of experiment {lease.experiment_id!r} lost its lease (now held by {holder}); "
                        "this attempt stopped without saving"
                    ) from None
                # Still ours: another server flagged it (a cancel request).
                record = {**found[0], **self._record(bool(found[0].get("cancel_requested")))}
                lease.version = self.storage.write_lease(lease.experiment_id, lease.loop, record, found[1])
            lease.record, lease.valid_until = record, started + self.ttl
        except LeaseLost as exc:
            lease.lost = exc
        except StorageError as exc:
            lease.lost = StorageError(f"storage failed: {exc.message}")
        except Exception as exc:  # the backend's own bug: the loop cannot be trusted to hold its lease
            lease.lost = StorageError(f"storage failed: {type(exc).__name__}: {exc}")
        if lease.lost is not None:
            log.error("experiment %s loop %d: %s", lease.experiment_id, lease.loop, lease.lost.message)
            return True
        if lease.record.get("cancel_requested") and not lease.cancel_requested:
            lease.cancel_requested = True
            log.info("experiment %s loop %d: cancel requested by another server", lease.experiment_id, lease.loop)
            return True
        return False

    def commit(self, lease: Lease, publish: Callable[[str], Any]) -> Any:
        """``publish(version)`` (the backend's ``commit_loop`` with
        ``lease_version=version``) right after a renewal, so it lands while
        the lease is ours for a whole time to live."""
        with lease.lock:
            lease.check()
            stop = self._renew(lease)
            if lease.lost is None and not lease.cancel_requested:
                try:
                    return publish(lease.version)
                except ConflictError:  # the record changed since the renewal: a cancel request, or a takeover
                    stop = self._renew(lease)
                    if lease.lost is None and not lease.cancel_requested:
                        raise
        if stop:
            lease._stop()
        lease.check()
        raise LoopCancelled(f"loop {lease.loop} of experiment {lease.experiment_id!r} was cancelled")

    def request_cancel(self, experiment_id: str, loop: int) -> bool:
        """Flag a loop another process holds for cancelling; False when no
        live process holds it."""
        for _ in range(5):  # the holder's renewals may race the flag
            found = self.storage.read_lease(experiment_id, loop)
            if found is None or not live(found[0]):
                return False
            with suppress(ConflictError):
                self.storage.write_lease(experiment_id, loop, {**found[0], "cancel_requested": True}, found[1])
                return True
        raise ConflictError(f"loop {loop} of experiment {experiment_id!r}: its lease kept changing; try again")

    # -- reading: is a loop shown running really running? --------------------------

    def holds(self, experiment_id: str, loop: int) -> Lease | None:
        lease = self._held.get((experiment_id, loop))
        return lease if lease is not None and lease.lost is None and time.monotonic() <= lease.valid_until else None

    def held(self, experiment_id: str, loop: int) -> bool:
        """Does a live process (this one or another) hold the loop's lease?"""
        if self.holds(experiment_id, loop) is not None:
            return True
        found = self.storage.read_lease(experiment_id, loop)
        return found is not None and live(found[0])

    def observe(self, experiment_id: str, loop: int, state: dict) -> dict:
        """The state to report for a loop stored as ``running`` or ``queued``:
        as stored while a live process holds its lease, else failed
        ("interrupted"), which is stored too unless someone else acts first."""
        key = (experiment_id, loop)
        pending = self._pending.get(key)
        if pending is not None and pending.get("attempt") == state.get("attempt"):
            return dict(pending)  # our own failure, waiting for the storage to take it
        if self.holds(experiment_id, loop) is not None or self._seen_live.get(key, 0) > time.time():
            return state
        found = self.storage.read_lease(experiment_id, loop)
        if found is not None and live(found[0]):
            if found[0].get("owner") != self.owner:
                self._seen_live[key] = float(found[0]["expires_at"])
            return state
        return self._interrupt(experiment_id, loop, found)

    def mark_interrupted(self, experiment_id: str, loop: int, state: dict) -> None:
        """Store a loop that a dead process left running or queued as failed
        ("interrupted"); the caller holds its lease."""
        state.update(status="failed", stage=None, error="interrupted", finished_at=now())
        self.storage.put_loop_state(experiment_id, loop, state)
        log.warning("experiment %s loop %d was interrupted (its lease expired); marked failed", experiment_id, loop)

    def _interrupt(self, experiment_id: str, loop: int, found) -> dict:
        try:
            version = self.storage.write_lease(experiment_id, loop, self._record(), found[1] if found else None)
        except ConflictError:  # another process took the lease meanwhile: it decides
            return self.storage.get_loop_state(experiment_id, loop)
        try:
            state = self.storage.get_loop_state(experiment_id, loop)  # fresh: taking the lease drops cached reads
            if state["status"] in ("running", "queued"):
                self.mark_interrupted(experiment_id, loop, state)
        finally:
            self._give_back(experiment_id, loop, version)
        return state

    # -- saving a failure the storage did not take ------------------------------------

    def settle(self, experiment_id: str, loop: int, state: dict) -> None:
        """Store a loop's final (failed or cancelled) state for a holder that
        may have lost its lease: only while no other live process holds the
        lease and the stored state is still this attempt's. When the storage
        does not answer, status reads here report ``state`` and a background
        thread retries, with backoff, until the storage takes it."""
        try:
            self._settle(experiment_id, loop, state)
            return
        except AlectioError as exc:
            log.warning("experiment %s loop %d: its final state waits for the storage (%s)", experiment_id, loop, exc)
        with self._lock:
            self._pending[(experiment_id, loop)] = dict(state)
            if not self._settling:
                self._settling = True
                threading.Thread(target=self._retry_pending, name="alectio-settle", daemon=True).start()

    def pending(self, experiment_id: str, loop: int) -> bool:
        """Does a final state of this loop wait for the storage?"""
        return (experiment_id, loop) in self._pending

    def _settle(self, experiment_id: str, loop: int, state: dict) -> None:
        found = self.storage.read_lease(experiment_id, loop)
        if found is not None and found[0].get("owner") != self.owner and live(found[0]):
            log.warning("experiment %s loop %d is held by %s now; its failure is not recorded", experiment_id, loop, found[0]["owner"])
            return
        version = self.storage.write_lease(experiment_id, loop, self._record(), found[1] if found else None)
        try:
            current = self.storage.get_loop_state(experiment_id, loop)
            if current["status"] in ("running", "queued") and current.get("attempt") in (None, state.get("attempt")):
                self.storage.put_loop_state(experiment_id, loop, state)
                log.info("experiment %s loop %d: recorded %s (%s)", experiment_id, loop, state["status"], state.get("error"))
        finally:
            self._give_back(experiment_id, loop, version)

    def _retry_pending(self) -> None:
        delay = 0.25
        while True:
            time.sleep(delay)
            with self._lock:
                pending = list(self._pending.items())
                if not pending:
                    self._settling = False
                    return
            for (experiment_id, loop), state in pending:
                try:
                    self._settle(experiment_id, loop, state)
                except AlectioError:
                    continue
                except Exception:
                    log.exception("recording the failure of experiment %s loop %d", experiment_id, loop)
                    continue
                with self._lock:
                    if self._pending.get((experiment_id, loop)) is state:
                        del self._pending[(experiment_id, loop)]
            delay = min(delay * 2, max(1.0, self.ttl / 3))
