"""JSON Schemas of the HTTP bodies, and ``validate``, which checks a body
against one with ``jsonschema``.

The same schemas are the ``components`` of the OpenAPI document
(:mod:`alectio_core.server.openapi`), so what the document promises is what
the server checks. They live in the core because platform mode
(:mod:`alectio_core.platform_mode`) checks its requests with them too, and
the core never imports the server.
"""

from __future__ import annotations

import math
import re
from functools import lru_cache
from typing import Any

import jsonschema

from .config import DEFAULT_BATCH_SIZE, DEFAULT_INITIAL, DEFAULT_LOOPS, DEFAULT_SEED, DEFAULT_STRATEGY
from .engine import STAGES, STATUSES
from .errors import ValidationError
from .ids import ID_PATTERN
from .labels import MODES as LABELS_MODES
from .s3 import BUCKET_PATTERN

MAX_INT = 2**31 - 1
MAX_INDEX = 2**63 - 1

_id = {"type": "string", "pattern": ID_PATTERN}
_timestamp = {"type": ["string", "null"], "description": "ISO 8601, UTC"}
_stop = {
    "type": ["object", "null"],
    "description": "the stopping criterion that fired in this loop, and why; no loop comes after it",
    "required": ["criterion", "reason"],
    "properties": {"criterion": {"type": "string"}, "reason": {"type": "string"}},
}

SCHEMAS: dict[str, dict] = {
    "Error": {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["code", "message"],
                "properties": {
                    "code": {"type": "string"},
                    "message": {"type": "string"},
                    "missing": {"type": "integer", "description": "labels_missing: records of the loop's selection neither labelled nor skipped"},
                    "field": {
                        "type": "string",
                        "description": "a 400 caused by one field of the request body: its key (e.g. batch_size)",
                    },
                    "problems": {
                        "type": "array",
                        "description": "invalid_labels: every bad row, none of which was stored",
                        "items": {"$ref": "#/components/schemas/LabelProblem"},
                    },
                },
            }
        },
    },
    "LabelProblem": {
        "type": "object",
        "required": ["index", "message"],
        "properties": {
            "where": {"type": "string", "description": 'the row: labels["12"], skip[3], line 7'},
            "index": {"type": ["integer", "string", "null"], "description": "its record index (as given; null when it has none)"},
            "message": {"type": "string", "description": "why it cannot be stored"},
        },
    },
    "Health": {"type": "object", "required": ["status"], "properties": {"status": {"type": "string", "enum": ["ok"]}}},
    "PluginList": {
        "type": "object",
        "required": ["plugins"],
        "properties": {
            "plugins": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["name", "kind", "group"],
                    "properties": {
                        "name": {"type": "string"},
                        "kind": {"type": "string", "description": "storage, strategy, metrics, stopping, labeller, executor, listener, model"},
                        "distribution": {"type": ["string", "null"]},
                        "version": {"type": ["string", "null"]},
                        "hooks": {"type": "array", "items": {"type": "string"}},
                        "group": {"type": "string", "description": "the entry-point group: alectio.plugins or alectio.models"},
                        "provides": {
                            "type": "object",
                            "description": "a plugin's names by what they are (models have none): strategies, stopping "
                            "(criteria), storage (URL schemes), metrics (task types), labellers, executors",
                            "additionalProperties": {"type": "array", "items": {"type": "string"}},
                        },
                        "error": {"type": "string", "description": "why it failed to load (the row of a plugin that did not)"},
                    },
                },
            }
        },
    },
    "ModelList": {
        "type": "object",
        "required": ["models"],
        "properties": {
            "models": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["name", "hooks"],
                    "properties": {
                        "name": {"type": "string"},
                        "distribution": {"type": ["string", "null"]},
                        "version": {"type": ["string", "null"]},
                        "hooks": {"type": "array", "items": {"type": "string"}},
                    },
                },
            }
        },
    },
    "ExperimentCreate": {
        "type": "object",
        "additionalProperties": False,
        "required": ["model"],
        "properties": {
            "id": dict(_id, description="optional; a random id is made when absent"),
            "model": {"type": "string", "minLength": 1, "maxLength": 200, "description": "an installed model's name"},
            "strategy": {
                "type": ["string", "null"],
                "minLength": 1,
                "maxLength": 200,
                "default": DEFAULT_STRATEGY,
                "description": "query strategy; null when a labeller supplies every selection",
            },
            "batch_size": {"type": "integer", "minimum": 0, "maximum": MAX_INT, "default": DEFAULT_BATCH_SIZE},
            "initial": {"type": "integer", "minimum": 1, "maximum": MAX_INT, "default": DEFAULT_INITIAL},
            "loops": {"type": "integer", "minimum": 1, "maximum": MAX_INT, "default": DEFAULT_LOOPS},
            "seed": {"type": "integer", "minimum": 0, "maximum": MAX_INDEX, "default": DEFAULT_SEED},
            "config": {"type": "object", "description": "overrides the model's section of config.yaml"},
            "stop": {
                "type": "array",
                "maxItems": 32,
                "items": {"type": "string", "minLength": 1, "maxLength": 64},
                "default": [],
                "description": "stopping criteria to apply after each loop (installed names, e.g. stabilizing_predictions, "
                "max_uncertainty, plateau); the first that fires ends the experiment",
            },
            "stopping": {
                "type": "object",
                "additionalProperties": {"type": "object"},
                "description": "settings per criterion in stop, over config.yaml's stopping: section, "
                'e.g. {"plateau": {"patience": 5}}',
            },
            "labels": {
                "type": "string",
                "enum": list(LABELS_MODES),
                "default": "plugin",
                "description": "who labels the records: plugin (the model knows every label) or alectio (people label each "
                "loop's selection; train gets their labels); stored and returned as labels_mode",
            },
        },
    },
    "Experiment": {
        "type": "object",
        "required": ["id", "model", "strategy", "batch_size", "initial", "loops", "seed", "config", "pool_size", "url"],
        "properties": {
            "id": _id,
            "model": {"type": "string"},
            "strategy": {"type": ["string", "null"]},
            "batch_size": {"type": "integer"},
            "initial": {"type": "integer"},
            "loops": {"type": "integer"},
            "seed": {"type": "integer"},
            "config": {"type": "object"},
            "task": {"type": "string"},
            "labels": {"type": ["array", "null"], "description": "the model's class names (model_info)"},
            "labels_mode": {
                "type": "string",
                "enum": list(LABELS_MODES),
                "description": "plugin: the model knows every label; alectio: people label each selection",
            },
            "mc_samples": {"type": ["integer", "null"], "description": "stochastic passes in each infer row (model_info)"},
            "pool_size": {"type": "integer"},
            "created": {"type": "string"},
            "stop": {"type": "array", "items": {"type": "string"}, "description": "the stopping criteria it applies"},
            "stopping": {"type": "object", "description": "their settings, as resolved when it was created"},
            "labeller": {
                "type": "object",
                "description": "the configured labeller's record (labels mode alectio): its `name`, `state` (its own "
                "bookkeeping, e.g. the Label Studio project and tasks), the loops `sent`, those `unsent` with the error, "
                "and annotations `refused` by record",
            },
            "url": {"type": "string"},
            "loops_done": {"type": "integer", "minimum": 0, "description": "loops finished (not in the list view)"},
            "latest_metrics": {
                "type": ["object", "null"],
                "description": "metrics of the last finished loop, null before the first (not in the list view)",
            },
        },
    },
    "ExperimentDeleted": {
        "type": "object",
        "required": ["id", "deleted", "loops"],
        "properties": {
            "id": _id,
            "deleted": {"type": "boolean", "enum": [True]},
            "loops": {"type": "integer", "minimum": 0, "description": "finished loops it had"},
        },
    },
    "ExperimentList": {
        "type": "object",
        "required": ["experiments"],
        "properties": {
            "experiments": {
                "type": "array",
                "items": {
                    "allOf": [
                        {"$ref": "#/components/schemas/Experiment"},
                        {"type": "object", "required": ["summary"], "properties": {"summary": {"$ref": "#/components/schemas/ExperimentSummary"}}},
                    ]
                },
            }
        },
    },
    "ExperimentSummary": {
        "type": "object",
        "required": ["status", "loops_done", "labeled", "metric"],
        "properties": {
            "status": {
                "type": "string",
                "enum": ["idle", "queued", "running", "done", "failed", "cancelled"],
                "description": "the latest loop's when queued, running, failed or cancelled; done once every loop is "
                "(or a stopping criterion ended it); else idle (no loop yet, or waiting for the next)",
            },
            "loops_done": {"type": "integer", "minimum": 0},
            "labeled": {"type": "integer", "minimum": 0, "description": "labels the last finished loop trained on"},
            "metric": {
                "type": ["object", "null"],
                "required": ["name", "value"],
                "properties": {"name": {"type": "string"}, "value": {"type": "number"}},
                "description": "the last finished loop's headline metric: accuracy (classification), else the task's "
                "first numeric metric (subset_accuracy, mAP, pixel_accuracy, mae for the built-in tasks)",
            },
        },
    },
    "LoopStart": {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "selected": {
                "type": "array",
                "minItems": 1,
                "items": {"type": "integer", "minimum": 0, "maximum": MAX_INDEX},
                "description": "record indices chosen by an outside labeller for this loop",
            }
        },
    },
    "LoopAccepted": {
        "type": "object",
        "required": ["experiment_id", "loop", "status", "url"],
        "properties": {
            "experiment_id": _id,
            "loop": {"type": "integer", "minimum": 0},
            "status": {"type": "string", "enum": list(STATUSES)},
            "url": {"type": "string"},
        },
    },
    "LoopState": {
        "type": "object",
        "required": ["experiment_id", "loop", "status", "stage", "progress", "error", "url"],
        "properties": {
            "experiment_id": _id,
            "loop": {"type": "integer", "minimum": 0},
            "status": {"type": "string", "enum": list(STATUSES)},
            "stage": {"type": ["string", "null"], "enum": [*STAGES, None]},
            "progress": {
                "type": ["object", "null"],
                "description": "records done out of total in the current stage, where known",
                "properties": {
                    "done": {"type": "integer"},
                    "total": {"type": "integer"},
                    "shards": {
                        "type": "object",
                        "description": "infer on the ray executor: shards finished out of all",
                        "properties": {"done": {"type": "integer"}, "total": {"type": "integer"}},
                    },
                },
            },
            "queued_at": _timestamp,
            "started_at": _timestamp,
            "finished_at": _timestamp,
            "error": {"type": ["string", "null"]},
            "metrics": {"type": ["object", "null"]},
            "stage_times": {"type": "object", "description": "seconds per finished stage"},
            "labeled": {"type": "integer"},
            "cancel_requested": {"type": "boolean"},
            "stop": _stop,
            "owner": {"type": ["string", "null"], "description": "the server (host:pid:id) that queued or runs the loop"},
            "url": {"type": "string"},
        },
    },
    "LoopList": {
        "type": "object",
        "required": ["loops"],
        "properties": {"loops": {"type": "array", "items": {"$ref": "#/components/schemas/LoopState"}}},
    },
    "Selection": {
        "type": "object",
        "required": ["experiment_id", "loop", "rows"],
        "properties": {
            "experiment_id": _id,
            "loop": {"type": "integer", "minimum": 0},
            "rows": {
                "type": "array",
                "description": "the records selected for the loop, best first",
                "items": {
                    "type": "object",
                    "required": ["index", "reference", "score", "prediction", "label", "skipped"],
                    "properties": {
                        "index": {"type": "integer", "minimum": 0},
                        "reference": {"description": "the record's reference (assign_index's)"},
                        "score": {"type": ["number", "null"], "description": "the strategy's score; null for loop 0 and outside selections"},
                        "prediction": {"description": "the previous loop's prediction, in the task's label format; null when none"},
                        "label": {"description": "its latest label, null when none"},
                        "skipped": {"type": "boolean"},
                    },
                },
            },
        },
    },
    "LabelsAdd": {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "labels": {
                "type": "object",
                "description": 'record index (as a string) -> label in the task\'s format: a class id or name, a list of them '
                '(multilabel), {"boxes": [[x1, y1, x2, y2], ...], "objects": [class ids]}, a 2-D list of class ids '
                "(segmentation), a number (regression)",
            },
            "skip": {
                "type": "array",
                "items": {"type": "integer", "minimum": 0, "maximum": MAX_INDEX},
                "description": "record indices skipped: never trained on, never selected again",
            },
        },
    },
    "LabelsAdded": {
        "type": "object",
        "required": ["experiment_id", "stored", "skipped", "loop", "missing"],
        "properties": {
            "experiment_id": _id,
            "stored": {"type": "integer", "minimum": 0, "description": "labels stored"},
            "skipped": {"type": "integer", "minimum": 0, "description": "skips stored"},
            "loop": {"type": "integer", "minimum": 0, "description": "the next loop to run"},
            "missing": {"type": "integer", "minimum": 0, "description": "records of its selection still neither labelled nor skipped"},
        },
    },
    "LabelList": {
        "type": "object",
        "required": ["experiment_id", "history", "labels"],
        "properties": {
            "experiment_id": _id,
            "history": {"type": "boolean", "description": "true: every label event, oldest first; false: the latest per record, by index"},
            "labels": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["index", "label", "skip"],
                    "properties": {
                        "index": {"type": "integer", "minimum": 0},
                        "label": {"description": "null for a skip"},
                        "skip": {"type": "boolean"},
                        "loop": {"type": "integer", "description": "the loop whose selection holds the record"},
                        "source": {"type": "string", "description": "what sent it: api, cli, a labeller's name"},
                        "by": {"type": ["string", "null"], "description": "who: the API token's name, the user"},
                        "at": {"type": "string", "description": "ISO 8601, UTC"},
                    },
                },
            },
        },
    },
    "LearningCurve": {
        "type": "object",
        "required": ["experiment_id", "curve"],
        "properties": {
            "experiment_id": _id,
            "curve": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["loop", "labeled", "metrics"],
                    "properties": {
                        "loop": {"type": "integer"},
                        "labeled": {"type": ["integer", "null"]},
                        "metrics": {"type": ["object", "null"]},
                        "stop": _stop,
                    },
                },
            },
        },
    },
}


#: ``POST /one_loop`` (platform mode; in the OpenAPI document only when the
#: server serves it). Extra fields are ignored: the platform may send more
#: than alectio uses.
ONE_LOOP_SCHEMA = {
    "type": "object",
    "required": ["experiment_id", "project_id", "cur_loop", "user_id", "bucket_name", "type", "n_rec", "n_loop"],
    "properties": {
        "experiment_id": _id,
        "project_id": _id,
        "cur_loop": {"type": "integer", "minimum": 0, "maximum": MAX_INT},
        "user_id": {"type": ["string", "integer"]},
        "bucket_name": {"type": "string", "pattern": BUCKET_PATTERN},
        "type": {"type": "string", "maxLength": 200},
        "n_rec": {"type": "integer", "minimum": 0, "maximum": MAX_INT},
        "n_loop": {"type": "integer", "minimum": 1, "maximum": MAX_INT},
    },
}


def validate(value: Any, schema: dict | str) -> Any:
    """``value`` when it matches ``schema`` (a schema, or the name of one in
    ``SCHEMAS``); else a ``ValidationError`` naming the offending field by
    its path (``batch_size``, ``selected[3]``) and what is wrong."""
    if isinstance(schema, str):
        schema = SCHEMAS[schema]
    # A validator is cheap to build; ``components`` lets a ``$ref`` resolve as in the document.
    validator = _Validator({**schema, "components": {"schemas": SCHEMAS}})
    error = next(validator.iter_errors(value), None)  # the first, in the schema's order
    if error is not None:
        path = error.absolute_path
        raise ValidationError(_message(error), field=str(path[0]) if path else _named_field(error))
    return value


# -- the validator ---------------------------------------------------------------

_Draft = jsonschema.Draft202012Validator  # OpenAPI 3.1's dialect


def _pattern(validator, pattern, instance, schema):
    """ECMA-262 ``$`` (what JSON Schema means) is the end of the string;
    Python's, which jsonschema uses, also matches before a final newline."""
    if validator.is_type(instance, "string") and not _regex(pattern).search(instance):
        yield jsonschema.ValidationError(f"{instance!r} does not match {pattern!r}")


@lru_cache(maxsize=None)
def _regex(pattern: str) -> re.Pattern:
    return re.compile(pattern[:-1] + r"\Z" if pattern.endswith("$") and not pattern.endswith("\\$") else pattern)


def _items(validator, items, instance, schema):
    """A list of plain integers (``selected`` may hold millions) in one pass
    of builtins; anything else through jsonschema's own ``items``."""
    plain = items.get("type") == "integer" and set(items) <= {"type", "minimum", "maximum"}
    if not (plain and validator.is_type(instance, "array")):
        yield from _Draft.VALIDATORS["items"](validator, items, instance, schema)
        return
    low, high = items.get("minimum", -math.inf), items.get("maximum", math.inf)
    bad = next((i for i, v in enumerate(instance) if type(v) is not int), None)
    keyword = "type"
    if bad is None and instance and not (low <= min(instance) and max(instance) <= high):
        bad = next(i for i, v in enumerate(instance) if not low <= v <= high)
        keyword = "minimum" if instance[bad] < low else "maximum"
    if bad is not None:
        value = items[keyword]
        yield jsonschema.ValidationError(keyword, validator=keyword, validator_value=value, instance=instance[bad], schema=items, path=[bad])


# JSON Schema counts 1.0 as an integer; a count or an index sent as 1.0 is refused.
_types = _Draft.TYPE_CHECKER.redefine("integer", lambda checker, v: isinstance(v, int) and not isinstance(v, bool))
_Validator = jsonschema.validators.extend(_Draft, {"pattern": _pattern, "items": _items}, type_checker=_types)


def _message(error: jsonschema.ValidationError) -> str:
    """The error as the API has always worded it."""
    where = _where(error.absolute_path)
    keyword = error.validator
    # Typed Any on purpose: the stubs allow "unset" (an error built by hand)
    # and a boolean schema, but an error from a validator has these set, and
    # its schema is the object holding the failing keyword.
    value: Any = error.instance
    expected: Any = error.validator_value
    schema: Any = error.schema
    if keyword == "type":
        types = [expected] if isinstance(expected, str) else expected
        return f"{where} must be {' or '.join(types)}, got {_kind(value)}"
    if keyword == "enum":
        return f"{where} must be one of {', '.join(map(str, expected))}"
    if keyword == "required":
        missing = next(k for k in expected if k not in value)
        return f"{where} is missing the required field {missing!r}"
    if keyword == "additionalProperties":
        known = schema.get("properties", {})
        unknown = sorted(set(value) - set(known))
        return f"{where} has an unknown field {unknown[0]!r}; known fields: {', '.join(known)}"
    if keyword in ("minLength", "maxLength"):
        return f"{where} must be {schema.get('minLength', 0)}-{schema.get('maxLength')} characters long"
    if keyword == "pattern":
        return f"{where} {value!r} does not match {expected}"
    if keyword in ("minimum", "maximum"):
        return f"{where} must be between {schema.get('minimum')} and {schema.get('maximum')}, got {value}"
    if keyword == "minItems":
        return f"{where} must hold at least {expected} item(s)"
    return f"{where}: {error.message}"


def _named_field(error: jsonschema.ValidationError) -> str | None:
    """The top-level key a body-level error is about: the missing or the unknown one."""
    value: Any = error.instance
    if not isinstance(value, dict):
        return None
    if error.validator == "required":
        return next((k for k in error.validator_value if k not in value), None)  # type: ignore[union-attr]
    if error.validator == "additionalProperties":
        known = error.schema.get("properties", {}) if isinstance(error.schema, dict) else {}
        return next(iter(sorted(set(value) - set(known))), None)
    return None


def _where(path) -> str:
    """``body``, ``batch_size``, ``config.x``, ``selected[3]``."""
    where = ""
    for part in path:
        where += f"[{part}]" if isinstance(part, int) else (f".{part}" if where else str(part))
    return where or "body"


def _kind(value: Any) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number" if isinstance(value, (int, float)) else type(value).__name__
    )
