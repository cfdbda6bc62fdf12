"""The OpenAPI 3.1 document of the API (``GET /api/v1/openapi.json``).

Request and response bodies are the schemas of :mod:`alectio_core.schemas`,
the ones the server validates with; a test compares the paths here with the app's
real routes so the two cannot drift.
"""

from __future__ import annotations

import copy
from functools import lru_cache
from importlib.metadata import PackageNotFoundError, version

from ..ids import ID_PATTERN
from ..schemas import ONE_LOOP_SCHEMA, SCHEMAS


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(name: str, description: str) -> dict:
    return {"description": description, "content": {"application/json": {"schema": _ref(name)}}}


def _errors(*statuses: int) -> dict:
    what = {
        400: "invalid request: malformed JSON, wrong types, missing or unknown fields, bad indices",
        401: "missing or invalid API token",
        404: "unknown experiment or loop",
        409: "conflict with the current state (a loop is running, already done, no selection, labels missing "
        "(code labels_missing, with `missing`), ...)",
        413: "body over server.max_body_bytes (/one_loop: a selection file over platform.max_selection_bytes)",
        415: "body not sent as application/json",
    }
    return {str(s): _json("Error", what[s]) for s in (401, *statuses)}


_EXPERIMENT_ID = {"name": "experiment_id", "in": "path", "required": True, "schema": {"type": "string", "pattern": ID_PATTERN}}
_LOOP = {"name": "loop", "in": "path", "required": True, "schema": {"type": "integer", "minimum": 0}}

PATHS = {
    "/health": {
        "get": {
            "operationId": "health",
            "summary": "Liveness; needs no token",
            "security": [],
            "responses": {"200": _json("Health", "the server is up")},
        }
    },
    "/api/v1/openapi.json": {
        "get": {
            "operationId": "openapi",
            "summary": "This document",
            "responses": {
                "200": {"description": "OpenAPI 3.1", "content": {"application/json": {"schema": {"type": "object"}}}},
                **_errors(),
            },
        }
    },
    "/api/v1/plugins": {
        "get": {
            "operationId": "listPlugins",
            "summary": "Every discovered plugin and model, with load errors",
            "responses": {"200": _json("PluginList", "plugins"), **_errors()},
        }
    },
    "/api/v1/models": {
        "get": {
            "operationId": "listModels",
            "summary": "Installed models",
            "responses": {"200": _json("ModelList", "models"), **_errors()},
        }
    },
    "/api/v1/experiments": {
        "post": {
            "operationId": "createExperiment",
            "summary": "Create an experiment (stores the model's pool)",
            "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("ExperimentCreate")}}},
            "responses": {"201": _json("Experiment", "created"), **_errors(400, 409, 413, 415)},
        },
        "get": {
            "operationId": "listExperiments",
            "summary": "Every experiment, oldest first, each with its `summary` (status, loops done, labels used, headline metric)",
            "responses": {"200": _json("ExperimentList", "experiments"), **_errors()},
        },
    },
    "/api/v1/experiments/{experiment_id}": {
        "parameters": [_EXPERIMENT_ID],
        "get": {
            "operationId": "getExperiment",
            "summary": "One experiment, with its loops done and latest metrics",
            "responses": {"200": _json("Experiment", "the experiment"), **_errors(404)},
        },
        "delete": {
            "operationId": "deleteExperiment",
            "summary": "Delete an experiment and everything stored for it",
            "description": (
                "Loop states, selections, the pool, results, infer outputs and checkpoints go with it. "
                "Refused (409) while one of its loops is queued or running: cancel it first."
            ),
            "responses": {"200": _json("ExperimentDeleted", "deleted"), **_errors(404, 409)},
        },
    },
    "/api/v1/experiments/{experiment_id}/events": {
        "parameters": [_EXPERIMENT_ID],
        "get": {
            "operationId": "experimentEvents",
            "summary": "The experiment's changes as server-sent events (text/event-stream)",
            "description": (
                "First the current state, then on every change: `event: loop` with the body of GET .../loops/{loop} "
                "when a loop's status, stage or progress changes, and `event: experiment` with the body of "
                "GET /api/v1/experiments/{experiment_id} when it changes (e.g. loops done). A `: keepalive` comment "
                "after 15 s of quiet. After server.events_seconds (default 300) the stream ends with `retry: 1000`, "
                "so an EventSource reconnects. Read from storage: it reports loops that any server sharing it runs."
            ),
            "responses": {
                "200": {
                    "description": "the stream",
                    "content": {"text/event-stream": {"schema": {"type": "string"}}},
                },
                **_errors(404),
            },
        },
    },
    "/api/v1/experiments/{experiment_id}/metrics": {
        "parameters": [_EXPERIMENT_ID],
        "get": {
            "operationId": "learningCurve",
            "summary": "The learning curve: metrics of every finished loop",
            "responses": {"200": _json("LearningCurve", "the curve"), **_errors(404)},
        },
    },
    "/api/v1/experiments/{experiment_id}/loops": {
        "parameters": [_EXPERIMENT_ID],
        "post": {
            "operationId": "startLoop",
            "summary": "Start the next loop in the background",
            "description": (
                "Answers 202 at once. Without `selected`, loop 0 takes `initial` seeded-random records and "
                "later loops what the strategy picked after the previous loop. An experiment created with labels "
                "alectio starts a loop only once its selection is labelled or skipped (409 labels_missing otherwise)."
            ),
            "requestBody": {"required": False, "content": {"application/json": {"schema": _ref("LoopStart")}}},
            "responses": {
                "202": {
                    **_json("LoopAccepted", "queued; poll `url`"),
                    "headers": {"Location": {"schema": {"type": "string"}, "description": "the loop's URL"}},
                },
                **_errors(400, 404, 409, 413, 415),
            },
        },
        "get": {
            "operationId": "listLoops",
            "summary": "Every started loop's state",
            "responses": {"200": _json("LoopList", "loops"), **_errors(404)},
        },
    },
    "/api/v1/experiments/{experiment_id}/loops/{loop}": {
        "parameters": [_EXPERIMENT_ID, _LOOP],
        "get": {
            "operationId": "getLoop",
            "summary": "A loop's status, stage, progress, timestamps, metrics and error",
            "responses": {"200": _json("LoopState", "the loop"), **_errors(404)},
        },
    },
    "/api/v1/experiments/{experiment_id}/loops/{loop}/selection": {
        "parameters": [_EXPERIMENT_ID, _LOOP],
        "get": {
            "operationId": "getSelection",
            "summary": "The records selected for a loop, best first, to label",
            "description": (
                "Each row: `index`, `reference` (assign_index's), `score` (the strategy's; null for loop 0, an outside "
                "selection, or a strategy without scores), `prediction` (the previous loop's model, in the task's label "
                "format; null when there is none), and the record's latest `label` and `skipped`."
            ),
            "responses": {"200": _json("Selection", "the selection"), **_errors(404)},
        },
    },
    "/api/v1/experiments/{experiment_id}/labels": {
        "parameters": [_EXPERIMENT_ID],
        "post": {
            "operationId": "addLabels",
            "summary": "Store labels made by people (experiments created with labels alectio)",
            "description": (
                "Labels or skips for records of the experiment's selections, all or none: every bad row is listed in "
                "the error's `problems` and nothing is stored. Labelling a record again keeps its history; the latest "
                "counts. A skipped record is never trained on and never selected again."
            ),
            "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("LabelsAdd")}}},
            "responses": {"200": _json("LabelsAdded", "stored"), **_errors(400, 404, 409, 413, 415)},
        },
        "get": {
            "operationId": "listLabels",
            "summary": "The latest label of each record (history=1: every label event)",
            "parameters": [
                {"name": "history", "in": "query", "required": False, "schema": {"type": "string", "enum": ["0", "1"]}},
            ],
            "responses": {"200": _json("LabelList", "labels"), **_errors(404)},
        },
    },
    "/api/v1/labellers/{name}/webhook": {
        "parameters": [{"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}],
        "post": {
            "operationId": "labellerWebhook",
            "summary": "A labelling tool's webhook: annotations in, stored as labels",
            "description": (
                "For the labeller configured in config.yaml (`labeller:`; 404 for any other name), e.g. Label Studio's "
                "annotation events. Answers per experiment what was stored, skipped, ignored (records never selected) "
                "and refused (naming the record), and the next loop's records still `missing`."
            ),
            "requestBody": {"required": True, "content": {"application/json": {"schema": {"type": "object"}}}},
            "responses": {
                "200": {
                    "description": "stored",
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "required": ["labeller", "experiments"],
                                "properties": {"labeller": {"type": "string"}, "experiments": {"type": "object"}},
                            }
                        }
                    },
                },
                **_errors(400, 404, 413, 415),
            },
        },
    },
    "/api/v1/experiments/{experiment_id}/loops/{loop}/cancel": {
        "parameters": [_EXPERIMENT_ID, _LOOP],
        "post": {
            "operationId": "cancelLoop",
            "summary": "Cancel a queued or running loop",
            "description": "A running loop stops between stages or at infer's next progress report.",
            "responses": {"202": _json("LoopState", "cancel requested"), **_errors(404, 409)},
        },
    },
}


def _platform_paths(included: bool) -> tuple[dict, dict]:
    """``POST /one_loop``, when the app serves platform mode."""
    if not included:
        return {}, {}
    return {
        "/one_loop": {
            "post": {
                "operationId": "oneLoop",
                "summary": "Platform mode: run loop `cur_loop` of a platform experiment",
                "description": (
                    "The seed's protocol: selections are read from the platform's bucket, results written "
                    "beside them, then `end_of_task` is called back. Answers 202 at once; poll `url`. Sent again for a "
                    "done loop whose export or callback failed, it does them again (202, `status` done)."
                ),
                "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("OneLoop")}}},
                "responses": {"202": _json("LoopAccepted", "queued; poll `url`"), **_errors(400, 409, 413, 415)},
            }
        }
    }, {"OneLoop": ONE_LOOP_SCHEMA}


@lru_cache(maxsize=2)
def _document(platform: bool) -> dict:
    try:
        release = version("alectio")
    except PackageNotFoundError:  # pragma: no cover - running from a checkout
        release = "0"
    platform_paths, platform_schemas = _platform_paths(platform)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "alectio",
            "version": release,
            "description": "Self-hosted active-learning loops. Errors are `{\"error\": {\"code\", \"message\"}}`.",
        },
        "paths": {**PATHS, **platform_paths},
        "components": {
            "schemas": {**SCHEMAS, **platform_schemas},
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "description": "alectio token create"},
                "session": {
                    "type": "apiKey",
                    "in": "cookie",
                    "name": "alectio_session",
                    "description": (
                        "the dashboard's session, from signing in at POST /signin; a POST, PUT, PATCH or DELETE sent "
                        "with it also needs the page's X-CSRF-Token header (403, code csrf, otherwise)"
                    ),
                },
            },
        },
        "security": [{"bearer": []}, {"session": []}],
    }


def document(platform: bool = True) -> dict:
    """The document; ``platform``: include ``POST /one_loop``."""
    return copy.deepcopy(_document(platform))
