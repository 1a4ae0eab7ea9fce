"""JSON Schema validation of call arguments, with one compiled validator per distinct schema.

A file of a hundred thousand examples usually repeats the same few tool definitions, so
compiling a validator once per distinct `parameters` (keyed by its serialisation) makes the
check of each call cheap. The cache is capped so that a file with a new schema on every line
still runs in bounded memory.
"""

from __future__ import annotations

from typing import Any

import jsonschema

from proxy import jsonutil

MAX_CACHED_SCHEMAS = 1024
# The first few problems are enough to fix the arguments; the rest usually follow from them.
MAX_PROBLEMS_SHOWN = 3
# jsonschema quotes the offending value; a long one would bury the line it is reported on.
MAX_MESSAGE_CHARS = 160


class Schemas:
    def __init__(self) -> None:
        # serialised schema -> its validator, or the reason it is not a valid schema
        self._cache: dict[bytes, Any | str] = {}

    def problem(self, schema: dict[str, Any]) -> str | None:
        """Why `schema` is not a valid JSON Schema, or None when it is."""
        compiled = self._compiled(schema)
        return compiled if isinstance(compiled, str) else None

    def mismatches(self, instance: Any, schema: dict[str, Any]) -> list[str]:
        """How `instance` breaks `schema`, as `path: message` texts; [] when it fits.

        An invalid schema is reported on the definition, not here: it yields [].
        """
        validator = self._compiled(schema)
        if isinstance(validator, str) or validator.is_valid(instance):
            return []
        # Most relevant first, as jsonschema's own `best_match` ranks them.
        errors = sorted(
            validator.iter_errors(instance), key=jsonschema.exceptions.relevance, reverse=True
        )
        return [_describe(error) for error in errors[:MAX_PROBLEMS_SHOWN]]

    def _compiled(self, schema: dict[str, Any]) -> Any | str:
        key = jsonutil.dumps(schema)
        if key not in self._cache:
            if len(self._cache) >= MAX_CACHED_SCHEMAS:
                self._cache.clear()
            self._cache[key] = _compile(schema)
        return self._cache[key]


def _compile(schema: dict[str, Any]) -> Any | str:
    # The schema's own `$schema` picks the draft; OpenAI's schemas rarely say, and 2020-12
    # reads every keyword they use.
    validator_class = jsonschema.validators.validator_for(
        schema, default=jsonschema.Draft202012Validator
    )
    try:
        validator_class.check_schema(schema)
    except jsonschema.exceptions.SchemaError as exc:
        return _describe(exc)
    return validator_class(schema)


def _describe(error: Any) -> str:
    message = str(error.message)
    if len(message) > MAX_MESSAGE_CHARS:
        message = message[: MAX_MESSAGE_CHARS - 1] + "…"
    path = ".".join(str(part) for part in error.absolute_path)
    return f"{path}: {message}" if path else message
