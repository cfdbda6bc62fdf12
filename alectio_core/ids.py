"""The identifier alphabet: experiment, project, attempt and token names.

Identifiers become file names, object keys and URL segments, so they are
kept to a safe alphabet; this is the one place it is written.
"""

from __future__ import annotations

import re
from typing import Any

#: As JSON Schema / OpenAPI spell it (ECMA-262: ``$`` is the end of the string).
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"
#: What the pattern allows, in words, for error messages.
ID_RULE = "use 1-64 letters, digits, '_' or '-', starting with a letter or digit"

_ID = re.compile(ID_PATTERN)


def is_id(value: Any) -> bool:
    """Whether ``value`` is a string of the identifier alphabet (the whole
    string: Python's ``$`` would also pass a final newline)."""
    return isinstance(value, str) and _ID.fullmatch(value) is not None
