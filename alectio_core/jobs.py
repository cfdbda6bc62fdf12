"""Loops as background jobs: a bounded pool of worker threads.

``JobRunner.submit(experiment_id, loop, fn)`` marks the loop ``queued`` in
storage and returns at once; a worker later calls ``fn(cancel)`` where
``cancel`` is a :class:`threading.Event` the function must honour (the
engine's ``run_loop(..., cancel=cancel)`` does). Status, stage and progress
live in storage, so any reader (the HTTP API, ``alectio`` in another
process) sees them; the runner itself only knows which jobs are active in
this process.

One experiment has at most one active job; the pool (``server.workers``)
bounds how many experiments run at the same time, the rest wait
``queued``. Not HTTP-specific: the REST API and platform mode both use it.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from .clock import now
from .engine import Engine
from .errors import AlectioError, ConflictError, NotFoundError
from .leases import Lease, LeaseLost

log = logging.getLogger(__name__)

#: Seconds a request waits for a job whose loop's outcome is stored (its
#: thread still returning: listeners, giving back the lease) to end.
FINISHING_WAIT = 5.0


@dataclass
class Job:
    experiment_id: str
    loop: int
    fn: Callable[[threading.Event], Any]
    cancel: threading.Event = field(default_factory=threading.Event)
    finished: threading.Event = field(default_factory=threading.Event)
    started: bool = False
    lease: Lease = field(init=False, repr=False)  # the loop's: claimed by submit, held until the job ends
    runs_loop: bool = True  # False: work for a loop already done (its state is not the job's)


class JobRunner:
    """Runs loop jobs on at most ``workers`` threads."""

    def __init__(self, engine: Engine, workers: int):
        if workers < 1:
            raise ValueError("workers must be >= 1")
        self.engine = engine
        self.workers = workers
        self._queue: queue.Queue[Job | None] = queue.Queue()
        self._threads: list[threading.Thread] = []
        self._active: dict[str, Job] = {}  # experiment id -> its queued or running job
        self._lock = threading.Lock()
        self._closed = False

    # -- submitting ---------------------------------------------------------

    def submit(
        self,
        experiment_id: str,
        loop: int,
        fn: Callable[[threading.Event], Any],
        prepare: Callable[[], Any] | None = None,
        runs_loop: bool = True,
    ) -> Job:
        """Queue ``fn(cancel)`` as loop ``loop`` of the experiment.

        ``prepare()`` (e.g. storing the loop's selection) runs while the
        experiment is reserved, before the loop is marked queued; if it
        raises, nothing is queued. Raises ``ConflictError`` when the
        experiment already has a job queued or running here.
        ``runs_loop=False``: ``fn`` works on a loop that is already done
        (platform mode sending its results again); it holds the loop's
        lease like any job, but the loop's state is left alone.
        """
        job = Job(experiment_id, loop, fn, runs_loop=runs_loop)
        waited = False
        while True:
            with self._lock:
                if self._closed:
                    raise ConflictError("the server is shutting down; no new loops start")
                busy = self._active.get(experiment_id)
                if busy is None:
                    self._active[experiment_id] = job
                    break
            if waited or not self._finishing(busy):
                raise ConflictError(
                    f"experiment {experiment_id!r} is busy: loop {busy.loop} is {'running' if busy.started else 'queued'}"
                )
            busy.finished.wait(FINISHING_WAIT)  # its outcome is stored; its thread is returning
            waited = True
        lease: Lease | None = None
        try:
            # The lease first: another server running this loop makes it 409 before anything is stored.
            job.lease = lease = self.engine.claim_loop(experiment_id, loop, on_stop=lambda: self._lease_stopped(job))
            if prepare is not None:
                prepare()
            if runs_loop:
                self.engine.queue_loop(experiment_id, loop)
        except BaseException:
            if lease is not None:
                self.engine.leases.release(lease)
            self._release(job)
            raise
        self._start_workers()
        self._queue.put(job)
        log.info("experiment %s loop %d queued", experiment_id, loop)
        return job

    def _start_workers(self) -> None:
        with self._lock:
            while len(self._threads) < self.workers:
                thread = threading.Thread(target=self._work, name=f"alectio-loop-{len(self._threads)}", daemon=True)
                thread.start()
                self._threads.append(thread)

    def _release(self, job: Job) -> None:
        with self._lock:
            if self._active.get(job.experiment_id) is job:
                del self._active[job.experiment_id]
        job.finished.set()

    def _finishing(self, job: Job) -> bool:
        """A job whose loop already shows its outcome (done, failed,
        cancelled) in storage: a client that saw it may start the next."""
        if not job.runs_loop:
            return job.started  # sending results again: started means nearly over, worth the wait
        if not job.started or job.finished.is_set():
            return job.finished.is_set()
        try:
            state = self.engine.storage.get_loop_state(job.experiment_id, job.loop)
        except NotFoundError:
            return False
        return state.get("status") in ("done", "failed", "cancelled")

    # -- running ------------------------------------------------------------

    def _work(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            with self._lock:
                if job.cancel.is_set():  # cancelled while queued; already recorded
                    continue
                job.started = True
            started = time.perf_counter()
            log.info("experiment %s loop %d running", job.experiment_id, job.loop)
            try:
                job.fn(job.cancel)
            except Exception as exc:
                self._record_failure(job, exc)
            finally:
                self.engine.leases.release(job.lease)
                self._release(job)
                log.info(
                    "experiment %s loop %d job ended after %.3fs", job.experiment_id, job.loop, time.perf_counter() - started
                )

    def _record_failure(self, job: Job, exc: Exception) -> None:
        """Log a failed loop; the engine records its own failures, cover those before it starts."""
        message = exc.message if isinstance(exc, AlectioError) else f"{type(exc).__name__}: {exc}"
        if not job.runs_loop:  # the loop is done: its state is not this job's to change
            log.error("experiment %s loop %d: sending its results again failed: %s", job.experiment_id, job.loop, message)
            return
        try:
            state = self.engine.storage.get_loop_state(job.experiment_id, job.loop)
        except NotFoundError:
            state = {"experiment_id": job.experiment_id, "loop": job.loop, "status": "queued", "stage": None}
        except Exception:
            log.exception("experiment %s loop %d failed and its state cannot be read", job.experiment_id, job.loop)
            if self.engine.leases.pending(job.experiment_id, job.loop):
                return  # the engine's own record of it waits for the storage
            state = {"experiment_id": job.experiment_id, "loop": job.loop, "status": "queued", "stage": None}
        if state.get("status") not in ("queued", "running"):  # already recorded by the engine
            if state.get("status") == "failed":
                log.error("experiment %s loop %d failed: %s", job.experiment_id, job.loop, state.get("error"))
            return
        state.update(status="failed", error=message, finished_at=now())
        log.error("experiment %s loop %d failed: %s", job.experiment_id, job.loop, message)
        self._record(job, state)

    def _record(self, job: Job, state: dict) -> None:
        """Store a job's final state; if the storage does not take it now,
        it is stored once it answers again (see ``Leases.settle``)."""
        if isinstance(job.lease.lost, LeaseLost):
            return  # another process holds the loop now
        try:
            job.lease.check()
            self.engine.storage.put_loop_state(job.experiment_id, job.loop, state)
        except AlectioError as exc:
            log.warning("could not record experiment %s loop %d as %s now: %s", job.experiment_id, job.loop, state["status"], exc)
            self.engine.leases.settle(job.experiment_id, job.loop, state)

    # -- looking and cancelling -----------------------------------------------

    def active(self, experiment_id: str) -> Job | None:
        """The experiment's queued or running job in this process, if any."""
        return self._active.get(experiment_id)

    def settled(self, experiment_id: str) -> Job | None:
        """``active``, once a job whose loop already shows its outcome has
        ended: a client that saw the loop done may act on the experiment
        at once (the job gives back the loop's lease only as it ends)."""
        job = self._active.get(experiment_id)
        if job is not None and self._finishing(job):
            job.finished.wait(FINISHING_WAIT)
            job = self._active.get(experiment_id)
        return job

    def cancel(self, experiment_id: str, loop: int) -> Job | None:
        """Ask loop ``loop`` to stop; None when it is not active here.

        A queued loop is cancelled at once; a running one stops at the
        engine's next check (between stages, or in infer's progress).
        """
        with self._lock:
            job = self._active.get(experiment_id)
            if job is None or job.loop != loop:
                return None
            queued = self._stop(job)
        if queued:
            self._end_queued(job, "cancelled", "cancelled before it started")
        log.info("experiment %s loop %d: cancel requested", experiment_id, loop)
        return job

    def _stop(self, job: Job) -> bool:
        """Set the job's cancel flag (caller holds ``self._lock``); True when
        it had not started, so it is now off the books."""
        job.cancel.set()
        if job.started or self._active.get(job.experiment_id) is not job:
            return False
        del self._active[job.experiment_id]
        job.finished.set()
        return True

    def _end_queued(self, job: Job, status: str, error: str) -> None:
        """Record a job that never started, and give back its lease."""
        if not job.runs_loop:
            self.engine.leases.release(job.lease)
            return
        state = {
            "experiment_id": job.experiment_id,
            "loop": job.loop,
            "status": status,
            "stage": None,
            "error": error,
            "finished_at": now(),
        }
        try:
            self._record(job, state)
        finally:
            self.engine.leases.release(job.lease)

    def _lease_stopped(self, job: Job) -> None:
        """The loop's lease was lost, or another server asked to cancel the
        loop: a running job stops at the engine's next check (which says
        why); a queued one ends here."""
        with self._lock:
            queued = self._stop(job)
        if not queued:
            return
        lost = job.lease.lost
        if lost is None:
            self._end_queued(job, "cancelled", "cancelled before it started")
        else:
            self._end_queued(job, "failed", lost.message)

    def shutdown(self, timeout: float = 10.0) -> None:
        """Refuse new jobs, cancel the active ones and wait up to ``timeout``
        seconds for them to record it. A loop stuck in a long hook is left
        behind (daemon thread); the next start marks it interrupted."""
        with self._lock:
            self._closed = True
            jobs = list(self._active.values())
        for job in jobs:
            self.cancel(job.experiment_id, job.loop)
        for _ in self._threads:
            self._queue.put(None)
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
