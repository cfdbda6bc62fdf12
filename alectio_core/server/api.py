"""The JSON API blueprint.

Bodies are checked against :mod:`alectio_core.schemas` before anything is
stored; the engine then checks what needs the stored data (the pool, earlier
selections). A loop is started as a background job (:mod:`alectio_core.jobs`)
and answered 202 at once; its status is read back from storage.
"""

from __future__ import annotations

import json
from typing import Any

from flask import Blueprint, current_app, g, jsonify, request, url_for
from werkzeug.exceptions import UnsupportedMediaType

from .. import labels_io, lifecycle, plugins
from ..errors import ConflictError, NotFoundError, UnknownModelError, UnknownStoppingError, UnknownStrategyError, ValidationError
from ..ids import is_id
from ..schemas import MAX_INT, validate
from . import error_response

api = Blueprint("api", __name__)


class MalformedJSON(ValidationError):
    code = "malformed_json"


def _ctx() -> dict:
    return current_app.extensions["alectio"]


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def json_body(schema: dict | str | None, required: bool = True) -> Any:
    """The request's JSON body, checked against ``schema`` (None: the caller
    checks it); an empty body is ``{}`` when not ``required``."""
    data = request.get_data(cache=True)  # 413 past server.max_body_bytes
    if not data.strip():
        if required:
            raise ValidationError("this request needs a JSON body")
        return {}
    if request.mimetype != "application/json":
        raise UnsupportedMediaType(f"send the body as application/json, not {request.mimetype or 'no content type'}")
    try:
        body = json.loads(data, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        raise MalformedJSON(f"the body is not valid JSON: {exc}") from None
    return body if schema is None else validate(body, schema)


def _experiment(experiment_id: str) -> dict:
    if not is_id(experiment_id):
        raise NotFoundError(f"unknown experiment {experiment_id!r}")
    return _ctx()["engine"].get_experiment(experiment_id)


def _loop_state(experiment_id: str, loop: int) -> dict:
    """The loop's stored state; 404 naming the experiment or the loop.
    (The hot path of status polling: one storage read.)"""
    if is_id(experiment_id) and loop <= MAX_INT:
        try:
            return _ctx()["engine"].get_loop(experiment_id, loop)
        except NotFoundError:
            pass
    _experiment(experiment_id)
    raise NotFoundError(f"experiment {experiment_id!r} has no loop {loop}")


def _experiment_view(experiment: dict) -> dict:
    return dict(experiment, url=url_for("api.get_experiment", experiment_id=experiment["id"]))


def _loop_view(state: dict) -> dict:
    eid, loop = state["experiment_id"], state["loop"]
    view: dict[str, Any] = {"stage": None, "progress": None, "started_at": None, "finished_at": None, "error": None, "metrics": None}
    view.update(state)
    view.pop("attempt", None)
    job = _ctx()["runner"].active(eid)
    view["cancel_requested"] = bool(job and job.loop == loop and job.cancel.is_set())
    # What url_for("api.get_loop") builds, without its cost on the polling path (ids need no quoting).
    view["url"] = f"{request.script_root}/api/v1/experiments/{eid}/loops/{loop}"
    return view


# -- service ------------------------------------------------------------------


@api.get("/health")
def health():
    return jsonify({"status": "ok"})


@api.get("/api/v1/openapi.json")
def openapi_document():
    from .openapi import document

    return jsonify(document(platform="platform.one_loop" in current_app.view_functions))


@api.get("/api/v1/plugins")
def list_plugins():
    return jsonify({"plugins": plugins.report()})


@api.get("/api/v1/models")
def list_models():
    return jsonify(
        {
            "models": [
                {"name": m.name, "distribution": m.distribution, "version": m.version, "hooks": m.hooks}
                for m in sorted(plugins.get_models().values(), key=lambda m: m.name)
            ]
        }
    )


# -- experiments --------------------------------------------------------------


@api.post("/api/v1/experiments")
def create_experiment():
    body = json_body("ExperimentCreate")
    options = {k: body[k] for k in ("strategy", "batch_size", "initial", "loops", "seed", "config", "stop", "stopping", "labels") if k in body}
    try:
        experiment = _ctx()["engine"].create_experiment(body["model"], experiment_id=body.get("id"), **options)
    except (UnknownModelError, UnknownStrategyError, UnknownStoppingError) as exc:
        field = {UnknownModelError: "model", UnknownStrategyError: "strategy", UnknownStoppingError: "stop"}[type(exc)]
        return error_response(exc.code, exc.message, 400, field=field)  # a bad field, not a missing page
    view = _experiment_view(dict(experiment, loops_done=0, latest_metrics=None))
    return jsonify(view), 201, {"Location": view["url"]}


@api.get("/api/v1/experiments")
def list_experiments():
    return jsonify({"experiments": [_experiment_view(e) for e in _ctx()["engine"].list_with_summaries()]})


@api.get("/api/v1/experiments/<experiment_id>")
def get_experiment(experiment_id: str):
    return jsonify(_experiment_view(_ctx()["engine"].summary(_experiment(experiment_id))))


@api.delete("/api/v1/experiments/<experiment_id>")
def delete_experiment(experiment_id: str):
    """Delete the experiment and everything stored for it; 409 while a loop
    is queued or running."""
    _experiment(experiment_id)
    job = _ctx()["runner"].settled(experiment_id)
    if job is not None:  # reserved here, maybe not yet queued in storage
        state = "running" if job.started else "queued"
        raise ConflictError(
            f"experiment {experiment_id!r} has loop {job.loop} {state}; cancel it or let it finish before deleting the experiment"
        )
    loops = _ctx()["engine"].delete_experiment(experiment_id)
    return jsonify({"id": experiment_id, "deleted": True, "loops": loops})


@api.get("/api/v1/experiments/<experiment_id>/metrics")
def learning_curve(experiment_id: str):
    _experiment(experiment_id)
    return jsonify({"experiment_id": experiment_id, "curve": _ctx()["engine"].learning_curve(experiment_id)})


# -- loops --------------------------------------------------------------------


@api.post("/api/v1/experiments/<experiment_id>/loops")
def start_loop(experiment_id: str):
    """Start the experiment's next loop in the background: 202 at once."""
    experiment = _experiment(experiment_id)
    body = json_body("LoopStart", required=False)
    loop = queue_next_loop(experiment, body.get("selected"))
    url = url_for("api.get_loop", experiment_id=experiment_id, loop=loop)
    return jsonify({"experiment_id": experiment_id, "loop": loop, "status": "queued", "url": url}), 202, {"Location": url}


def queue_next_loop(experiment: dict, selected: Any = None) -> int:
    """Queue the experiment's next loop and return its number; a labeller
    with ``auto_next`` starts loops through here too."""
    experiment_id = experiment["id"]
    engine, runner, storage = _ctx()["engine"], _ctx()["runner"], _ctx()["storage"]
    loop = engine.next_loop(experiment_id)
    stopped = engine.stopped(experiment_id) if loop > 0 else None
    if stopped:
        raise lifecycle.stopped_error(experiment_id, stopped["loop"], stopped)
    if loop >= int(experiment["loops"]):
        raise ConflictError(f"experiment {experiment_id!r} has run all of its {experiment['loops']} loops")

    def prepare() -> None:
        """Store the loop's selection before it is queued (a queued loop's is fixed)."""
        if selected is not None:
            engine.record_selection(experiment_id, loop, selected)
            return
        try:
            storage.get_selection(experiment_id, loop)
        except NotFoundError:
            if loop == 0:
                engine.initial_selection(experiment_id)  # `initial` seeded-random records
                return
            how = "its strategy picked none" if experiment.get("strategy") else "it has no strategy"
            raise ConflictError(f"loop {loop} has no selection ({how}); send the records to label as 'selected'") from None

    runner.submit(experiment_id, loop, lambda cancel: engine.run_loop(experiment_id, loop, cancel=cancel), prepare=prepare)
    return loop


@api.get("/api/v1/experiments/<experiment_id>/loops")
def list_loops(experiment_id: str):
    _experiment(experiment_id)
    return jsonify({"loops": [_loop_view(s) for s in _ctx()["engine"].loop_states(experiment_id)]})


@api.get("/api/v1/experiments/<experiment_id>/loops/<int:loop>")
def get_loop(experiment_id: str, loop: int):
    return jsonify(_loop_view(_loop_state(experiment_id, loop)))


@api.post("/api/v1/experiments/<experiment_id>/loops/<int:loop>/cancel")
def cancel_loop(experiment_id: str, loop: int):
    """Ask a queued or running loop to stop (202); it stops between stages
    or at infer's next progress report. A loop another server runs is
    flagged in its lease; that server sees the flag at its next renewal."""
    state = _loop_state(experiment_id, loop)
    if state["status"] not in ("queued", "running"):  # its outcome is stored, though its job may still be returning
        raise ConflictError(f"loop {loop} is already {state['status']}; nothing to cancel")
    if _ctx()["runner"].cancel(experiment_id, loop) is None:
        if state["status"] in ("queued", "running") and _ctx()["engine"].leases.request_cancel(experiment_id, loop):
            return jsonify(dict(_loop_view(state), cancel_requested=True)), 202
        state = _loop_state(experiment_id, loop)
        raise ConflictError(f"loop {loop} is already {state['status']}; nothing to cancel")
    return jsonify(_loop_view(_loop_state(experiment_id, loop))), 202


@api.get("/api/v1/experiments/<experiment_id>/loops/<int:loop>/selection")
def get_selection(experiment_id: str, loop: int):
    """The records selected for the loop, best first, with what a person
    labelling them wants to see."""
    _experiment(experiment_id)
    rows = _ctx()["engine"].selection(experiment_id, loop)
    return jsonify({"experiment_id": experiment_id, "loop": loop, "rows": [labels_io.plain(r) for r in rows]})


# -- labels from people ---------------------------------------------------------


@api.post("/api/v1/experiments/<experiment_id>/labels")
def add_labels(experiment_id: str):
    """Store labels and skips for selected records, all or none."""
    _experiment(experiment_id)
    rows, problems = labels_io.parse_body(json_body("LabelsAdd"))
    summary = labels_io.store_labels(_ctx()["engine"], experiment_id, rows, source="api", by=g.get("token_name"), problems=problems)
    return jsonify(dict(summary, experiment_id=experiment_id))


@api.get("/api/v1/experiments/<experiment_id>/labels")
def list_labels(experiment_id: str):
    """The latest label or skip of each labelled record (``?history=1``:
    every label event, oldest first)."""
    _experiment(experiment_id)
    engine = _ctx()["engine"]
    history = request.args.get("history", "0").lower() in ("1", "true", "yes")
    if history:
        events = engine.label_history(experiment_id)
    else:
        latest = engine.labels(experiment_id)
        events = [latest[i] for i in sorted(latest)]
    return jsonify({"experiment_id": experiment_id, "history": history, "labels": [labels_io.plain(e) for e in events]})
