"""A loop's lifecycle across processes: queued, running, then done, failed
or cancelled.

What a loop's stored state says is checked against the loop's lease (see
:mod:`.leases`): a loop is ``queued`` or ``running`` only while a live
process holds its lease; one left so by a process that died is reported,
and recorded, failed ("interrupted"). Here too: which loop comes next,
whether a loop may start, and taking a loop for this process. The
:class:`~alectio_core.engine.Engine` methods of the same names call these.
"""

from __future__ import annotations

from typing import Callable

from . import labels
from .clock import now
from .errors import ConflictError, NotFoundError, StoppedError
from .leases import Lease, Leases
from .storage import Storage, check_id, check_loop


def current(leases: Leases, experiment_id: str, loop: int, state: dict) -> dict:
    """``state`` as a live process sees it (``running`` or ``queued`` only while its lease is held)."""
    if state.get("status") in ("running", "queued"):
        return leases.observe(experiment_id, loop, state)
    return state


def get_loop(storage: Storage, leases: Leases, experiment_id: str, loop: int) -> dict:
    """The loop's state; ``running`` or ``queued`` only while a live
    process holds its lease (else failed, "interrupted")."""
    state = storage.get_loop_state(check_id(experiment_id), check_loop(loop))
    return current(leases, experiment_id, loop, state)


def loop_states(storage: Storage, leases: Leases, experiment_id: str) -> list[dict]:
    """Every loop's state, as ``get_loop`` reports it."""
    return [current(leases, experiment_id, s["loop"], s) for s in storage.list_loop_states(experiment_id)]


def active_loops(storage: Storage, leases: Leases, experiment_id: str) -> list[dict]:
    """The experiment's loops that a live process is running or about to
    run, or holds for other work (platform mode sending results again).
    A loop left ``running`` by a process whose lease expired is not one:
    it is reported interrupted instead of blocking for ever."""
    busy = []
    for state in loop_states(storage, leases, experiment_id):
        if state["status"] in ("queued", "running"):
            busy.append(state)
        elif leases.held(experiment_id, state["loop"]):
            busy.append(dict(state, status="busy"))  # e.g. platform mode sending its results again
    return busy


def next_loop(storage: Storage, experiment_id: str) -> int:
    """The first loop that is not done."""
    done = [s["loop"] for s in storage.list_loop_states(experiment_id) if s["status"] == "done"]
    return max(done) + 1 if done else 0


def stopped(storage: Storage, experiment_id: str) -> dict | None:
    """``{"loop", "criterion", "reason"}`` of the stopping criterion that
    ended the experiment, or None."""
    done = [s for s in storage.list_loop_states(experiment_id) if s["status"] == "done"]
    if done and done[-1].get("stop"):
        return {"loop": done[-1]["loop"], **done[-1]["stop"]}
    return None


def stopped_error(experiment_id: str, loop: int, stop: dict) -> StoppedError:
    return StoppedError(
        f"experiment {experiment_id!r} was stopped after loop {loop} by {stop['criterion']}: {stop['reason']}; no loop comes after it"
    )


def check_startable(storage: Storage, experiment_id: str, loop: int, queued_ok: bool = False) -> None:
    """``ConflictError`` unless the loop before is done and this one is not
    running, done (or, unless ``queued_ok``, queued); ``StoppedError`` when
    a stopping criterion fired in the loop before; ``LabelsMissing`` when
    people have yet to label (or skip) some of its selected records."""
    experiment = storage.get_experiment(check_id(experiment_id))
    if loop > 0:
        try:
            previous = storage.get_loop_state(experiment_id, loop - 1)
        except NotFoundError:
            previous = {"status": "not started"}
        if previous["status"] != "done":
            raise ConflictError(f"loop {loop} needs loop {loop - 1} done first (it is {previous['status']})")
        if previous.get("stop"):
            raise stopped_error(experiment_id, loop - 1, previous["stop"])
    try:
        state = storage.get_loop_state(experiment_id, loop)
    except NotFoundError:
        state = None
    busy = ("running", "done") if queued_ok else ("running", "queued", "done")
    if state is not None and state["status"] in busy:
        raise ConflictError(f"loop {loop} of experiment {experiment_id!r} is already {state['status']}")
    labels.check_labelled(storage, experiment, loop)


def queue_loop(storage: Storage, leases: Leases, experiment_id: str, loop: int) -> dict:
    """Mark a loop queued (the server does this before a worker starts
    it, holding the loop's lease from ``claim_loop``)."""
    check_startable(storage, experiment_id, loop)
    state = {
        "experiment_id": experiment_id,
        "loop": loop,
        "status": "queued",
        "stage": None,
        "queued_at": now(),
        "owner": leases.owner,
    }
    storage.put_loop_state(experiment_id, loop, state)
    return state


def claim_loop(storage: Storage, leases: Leases, experiment_id: str, loop: int, on_stop: Callable[[], None] | None = None) -> Lease:
    """Take the loop's lease for this process (see :mod:`.leases`):
    ``LoopBusy`` (409) when another live process holds it. A ``running``
    or ``queued`` state that a process whose lease expired left behind is
    marked failed ("interrupted") first. Give it back with
    ``leases.release(lease)``."""
    lease = leases.acquire(experiment_id, loop, on_stop)
    if lease.users > 1:
        return lease  # this process holds it already (queued by the job runner)
    try:
        state = storage.get_loop_state(experiment_id, loop)
        ours = state["status"] == "queued" and state.get("owner") == leases.owner
        if state["status"] in ("running", "queued") and not ours:
            leases.mark_interrupted(experiment_id, loop, state)
    except NotFoundError:
        pass
    except BaseException:
        leases.release(lease)
        raise
    return lease


def recover_interrupted(storage: Storage, leases: Leases, experiment_id: str | None = None) -> list[tuple[str, int]]:
    """Mark loops left ``running`` or ``queued`` by a process whose lease
    expired (or by a version without leases) as failed ("interrupted");
    loops a live process holds are left alone. Server start-up and
    ``alectio run --resume`` call it."""
    recovered = []
    experiments = [storage.get_experiment(check_id(experiment_id))] if experiment_id else storage.list_experiments()
    for experiment in experiments:
        for state in storage.list_loop_states(experiment["id"]):
            if state["status"] in ("running", "queued"):
                after = leases.observe(experiment["id"], state["loop"], state)
                if after["status"] == "failed" and after.get("error") == "interrupted":
                    recovered.append((experiment["id"], state["loop"]))
    return recovered
