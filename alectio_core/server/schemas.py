"""JSON Schemas of the API's bodies, and the small validator requests go through.

The same schemas are the ``components`` of the OpenAPI document
(:mod:`.openapi`), so what the document promises is what the server checks.
The validator covers the JSON Schema subset used here: ``type``,
``properties``, ``required``, ``additionalProperties: false``, ``items``,
``enum``, ``minimum``/``maximum``, ``minLength``/``maxLength``, ``pattern``,
``minItems``.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

from ..engine import STAGES, STATUSES
from ..errors import ValidationError
from ..strategies import DEFAULT_STRATEGY

ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"
MAX_INT = 2**31 - 1
MAX_INDEX = 2**63 - 1

_id = {"type": "string", "pattern": ID_PATTERN}
_timestamp = {"type": ["string", "null"], "description": "ISO 8601, UTC"}

SCHEMAS: dict[str, dict] = {
    "Error": {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["code", "message"],
                "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
            }
        },
    },
    "Health": {"type": "object", "required": ["status"], "properties": {"status": {"type": "string", "enum": ["ok"]}}},
    "PluginList": {
        "type": "object",
        "required": ["plugins"],
        "properties": {"plugins": {"type": "array", "items": {"type": "object"}}},
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
            "batch_size": {"type": "integer", "minimum": 0, "maximum": MAX_INT, "default": 100},
            "initial": {"type": "integer", "minimum": 1, "maximum": MAX_INT, "default": 100},
            "loops": {"type": "integer", "minimum": 1, "maximum": MAX_INT, "default": 5},
            "seed": {"type": "integer", "minimum": 0, "maximum": MAX_INDEX, "default": 0},
            "config": {"type": "object", "description": "overrides the model's section of config.yaml"},
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
            "labels": {"type": ["array", "null"]},
            "pool_size": {"type": "integer"},
            "created": {"type": "string"},
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
        "properties": {"experiments": {"type": "array", "items": {"$ref": "#/components/schemas/Experiment"}}},
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
                "properties": {"done": {"type": "integer"}, "total": {"type": "integer"}},
            },
            "queued_at": _timestamp,
            "started_at": _timestamp,
            "finished_at": _timestamp,
            "error": {"type": ["string", "null"]},
            "metrics": {"type": ["object", "null"]},
            "stage_times": {"type": "object", "description": "seconds per finished stage"},
            "labeled": {"type": "integer"},
            "cancel_requested": {"type": "boolean"},
            "owner": {"type": ["string", "null"], "description": "the server (host:pid:id) that queued or runs the loop"},
            "url": {"type": "string"},
        },
    },
    "LoopList": {
        "type": "object",
        "required": ["loops"],
        "properties": {"loops": {"type": "array", "items": {"$ref": "#/components/schemas/LoopState"}}},
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
                    },
                },
            },
        },
    },
}

_TYPES = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
}


def validate(value: Any, schema: dict | str, where: str = "body") -> Any:
    """Check ``value`` against a schema (or the name of one in ``SCHEMAS``);
    a ``ValidationError`` names the first offending field."""
    if isinstance(schema, str):
        schema = SCHEMAS[schema]
    types = schema.get("type")
    if types is not None:
        types = [types] if isinstance(types, str) else types
        if not any(_TYPES[t](value) for t in types):
            raise ValidationError(f"{where} must be {' or '.join(types)}, got {_kind(value)}")
    if "enum" in schema and value not in schema["enum"]:
        raise ValidationError(f"{where} must be one of {', '.join(map(str, schema['enum']))}")
    if isinstance(value, dict):
        _object(value, schema, where)
    elif isinstance(value, list):
        _array(value, schema, where)
    elif isinstance(value, str):
        if len(value) < schema.get("minLength", 0) or len(value) > schema.get("maxLength", len(value)):
            raise ValidationError(f"{where} must be {schema.get('minLength', 0)}-{schema.get('maxLength')} characters long")
        if "pattern" in schema and not _pattern(schema["pattern"]).search(value):
            raise ValidationError(f"{where} {value!r} does not match {schema['pattern']}")
    elif _TYPES["number"](value):
        if value < schema.get("minimum", value) or value > schema.get("maximum", value):
            raise ValidationError(f"{where} must be between {schema.get('minimum')} and {schema.get('maximum')}, got {value}")
    return value


def _object(value: dict, schema: dict, where: str) -> None:
    properties = schema.get("properties", {})
    for key in schema.get("required", ()):
        if key not in value:
            raise ValidationError(f"{where} is missing the required field {key!r}")
    if schema.get("additionalProperties") is False:
        unknown = sorted(set(value) - set(properties))
        if unknown:
            raise ValidationError(f"{where} has an unknown field {unknown[0]!r}; known fields: {', '.join(properties)}")
    for key, sub in properties.items():
        if key in value:
            validate(value[key], sub, f"{where}.{key}" if where != "body" else key)


def _array(value: list, schema: dict, where: str) -> None:
    if len(value) < schema.get("minItems", 0):
        raise ValidationError(f"{where} must hold at least {schema['minItems']} item(s)")
    items = schema.get("items")
    if not items or "$ref" in items:
        return
    if items.get("type") == "integer" and set(items) <= {"type", "minimum", "maximum"}:
        # Fast path for long index lists.
        for i, v in enumerate(value):
            if type(v) is not int:
                raise ValidationError(f"{where}[{i}] must be integer, got {_kind(v)}")
        if value and (min(value) < items.get("minimum", min(value)) or max(value) > items.get("maximum", max(value))):
            bad = next(v for v in value if not items.get("minimum", v) <= v <= items.get("maximum", v))
            raise ValidationError(f"{where} holds {bad}, outside {items.get('minimum')}..{items.get('maximum')}")
        return
    for i, v in enumerate(value):
        validate(v, items, f"{where}[{i}]")


@lru_cache(maxsize=None)
def _pattern(pattern: str) -> re.Pattern:
    """ECMA-262 ``$`` (what JSON Schema means) is the end of the string;
    Python's also matches before a final newline."""
    return re.compile(pattern[:-1] + r"\Z" if pattern.endswith("$") and not pattern.endswith("\\$") else pattern)


def matches_id(value: str) -> bool:
    return bool(_pattern(ID_PATTERN).search(value))


def _kind(value: Any) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number" if isinstance(value, (int, float)) else type(value).__name__
    )
