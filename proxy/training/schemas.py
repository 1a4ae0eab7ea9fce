"""JSON Schema validation of call arguments, with one compiled validator per definition.

A file of a hundred thousand examples usually repeats the same few tool definitions, so
compiling a validator once per distinct definition (keyed by its serialisation, which the
example view computes once) makes the check of each call cheap. The cache is capped in
entries and in bytes so that a file (or a capture) with a new schema on every line still runs
in bounded memory.

A call is first checked by jsonschema-rs (the proxy's own argument check, many times faster);
only arguments it refuses go through jsonschema, whose errors say what is wrong.
"""

from __future__ import annotations

from typing import Any

import jsonschema
import jsonschema_rs

from proxy.training.example import Definition

MAX_CACHED_SCHEMAS = 1024
# Of serialised definitions: a compiled schema holds several times its text in objects.
MAX_CACHED_SCHEMA_BYTES = 8 * 1024 * 1024
# The first few problems are enough to fix the arguments; the rest usually follow from them.
MAX_PROBLEMS_SHOWN = 3
# jsonschema quotes the offending value; a long one would bury the line it is reported on.
MAX_MESSAGE_CHARS = 160


class Schemas:
    def __init__(self) -> None:
        # serialised definition -> the validator of its parameters, the reason they are not
        # a valid schema, or None when the function declares no parameters object
        self._cache: dict[bytes, Any | str | None] = {}
        self._fast: dict[bytes, Any] = {}  # the same schemas for jsonschema-rs, where it takes them
        self._bytes = 0

    def problem(self, definition: Definition) -> str | None:
        """Why the function's `parameters` are not a valid JSON Schema, or None."""
        compiled = self._compiled(definition)
        return compiled if isinstance(compiled, str) else None

    def mismatches(self, instance: Any, definition: Definition) -> list[str]:
        """How `instance` breaks the function's schema, as `path: message` texts; [] if it fits.

        A function without a (valid) schema accepts anything here: the definition's own
        problem is reported on the definition.
        """
        validator = self._compiled(definition)
        if validator is None or isinstance(validator, str):
            return []
        fast = self._fast.get(definition.serialized or b"")
        if (fast is not None and fast.is_valid(instance)) or validator.is_valid(instance):
            return []
        # Most relevant first, as jsonschema's own `best_match` ranks them.
        errors = sorted(
            validator.iter_errors(instance), key=jsonschema.exceptions.relevance, reverse=True
        )
        return [_describe(error) for error in errors[:MAX_PROBLEMS_SHOWN]]

    def _compiled(self, definition: Definition) -> Any | str | None:
        key = definition.serialized
        if key is None:
            return None
        if key not in self._cache:
            if len(self._cache) >= MAX_CACHED_SCHEMAS or self._bytes > MAX_CACHED_SCHEMA_BYTES:
                self._cache.clear()
                self._fast.clear()
                self._bytes = 0
            parameters = definition.function.get("parameters")
            compiled = _compile(parameters) if isinstance(parameters, dict) else None
            self._cache[key] = compiled
            self._bytes += len(key)
            if compiled is not None and not isinstance(compiled, str):
                self._fast[key] = _compile_fast(parameters)
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


def _compile_fast(schema: Any) -> Any | None:
    """The schema for jsonschema-rs (offline, formats not asserted, as jsonschema does by
    default), or None where it does not take a schema jsonschema took."""
    try:
        return jsonschema_rs.validator_for(schema, validate_formats=False, offline=True)
    except Exception:  # its refusals are not documented; jsonschema alone then decides
        return None


def _describe(error: Any) -> str:
    message = str(error.message)
    if len(message) > MAX_MESSAGE_CHARS:
        message = message[: MAX_MESSAGE_CHARS - 1] + "…"
    path = ".".join(str(part) for part in error.absolute_path)
    return f"{path}: {message}" if path else message
