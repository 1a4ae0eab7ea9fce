"""The tool-argument check: does each answered tool call's `arguments` fit its function's schema?

It runs after the answer, when the serving policy says `validate_arguments: true`, and only
counts: the answer itself is never changed. The schema checked against is the function's FULL
one — the client's original definition when the request offered it, else the training one —
never the slimmed definition the model was shown, because the full one is what the client's
code will parse the arguments with.

Compiling a JSON Schema validator costs far more than using one, so validators are compiled
once per distinct schema and cached by the schema's canonical bytes (sorted keys): the same
definition sent by every request of an application is compiled once. The cache holds only
those bytes and the validator, weighed by what they take in memory (a compiled validator is
about 25 times its schema's size, plus some 16 KB), within a budget; a schema larger than
`MAX_CHECKED_SCHEMA_BYTES` is not compiled at all (its calls get the JSON check only). The
bytes of a request's schemas are worked out once per shared tools list, and those of a
policy's training schemas once per policy.

Client-sent schemas are untrusted input to a third-party library: a `$ref` is never fetched
from the network, and no schema, however broken, makes the check raise.

The validators are jsonschema-rs's (Rust): a call's arguments are checked in about 0.1 µs where
the pure-Python jsonschema took about 10 µs, on every answered tool call.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jsonschema_rs
import orjson

from proxy import jsonutil
from proxy.cache import BoundedCache
from proxy.jsonutil import JsonList
from proxy.rewrite.policy import Policy

# What `check` answers: the kind of failure, used as the `kind` metric label.
NOT_JSON = "json"
BREAKS_SCHEMA = "schema"

# The parameters of a function defined without `parameters`: it takes none, as OpenAI reads it.
_NO_PARAMETERS: dict[str, Any] = {"type": "object", "properties": {}}


# A schema larger than this is not compiled: real functions' parameters take a few KB, and a
# compiled validator takes ~25 times its schema (a 790 KB one held 18 MB).
MAX_CHECKED_SCHEMA_BYTES = 64 * 1024
# What one cached validator weighs: its key and its compiled form (measured with RSS over
# thousands of jsonschema-rs validators: ~16 KB each, plus ~25 B per schema byte).
_VALIDATOR_BASE_BYTES = 16 * 1024
_VALIDATOR_BYTES_PER_SCHEMA_BYTE = 32
# A validator cached for "no usable validator" (an unusable or oversized schema).
_UNUSABLE = object()


def _validator_weight(key: bytes, validator: Any) -> int:
    compiled = 0 if validator is _UNUSABLE else _VALIDATOR_BYTES_PER_SCHEMA_BYTE * len(key)
    return _VALIDATOR_BASE_BYTES + len(key) + compiled


class ArgumentChecker:
    """Checks tool-call arguments against full schemas; compiled validators are cached by the
    schema's canonical bytes, within `max_bytes` (see the module docstring).

    One checker serves the whole process: it holds no request state and no request object.
    """

    def __init__(self, max_bytes: int = 32 * 1024 * 1024, max_entries: int = 4096) -> None:
        self._validators: BoundedCache[bytes, Any] = BoundedCache(
            _validator_weight, max_entries, max_bytes
        )

    @property
    def weight(self) -> int:
        """What the cached validators weigh now (estimated bytes)."""
        return self._validators.weight

    def check(self, function: str, arguments: str, schema: Any) -> str | None:
        """None when `arguments` is fine; "json" when it is not a JSON object; "schema" when it
        breaks `schema`. No schema (or an unusable one) means only the JSON check. Never raises.

        `function` names the call for the caller's bookkeeping; the schema alone decides.
        """
        return self.check_against(arguments, schema_key(schema))

    def check_against(self, arguments: str, key: bytes | None) -> str | None:
        """`check` with the schema given by its canonical bytes (`schema_key`)."""
        try:
            instance = jsonutil.loads(arguments)
        except jsonutil.JSONDecodeError:  # also what orjson raises for a non-string
            return NOT_JSON
        if not isinstance(instance, dict):
            return NOT_JSON
        validator = self.validator_of(key) if key is not None else None
        if validator is None:
            return None
        return None if _fits(validator, instance) else BREAKS_SCHEMA

    def validator(self, schema: Any) -> Any | None:
        """The compiled validator of `schema`; None when the schema cannot be used."""
        key = schema_key(schema)
        return self.validator_of(key) if key is not None else None

    def validator_of(self, key: bytes) -> Any | None:
        """The compiled validator of the schema whose canonical bytes are `key`, from the cache
        when it was seen before; None when it cannot be used or is too large to compile."""
        validator = self._validators.get(key)
        if validator is None:
            validator = _compile(key) if len(key) <= MAX_CHECKED_SCHEMA_BYTES else None
            validator = _UNUSABLE if validator is None else validator
            self._validators.put(key, validator)
        return None if validator is _UNUSABLE else validator


def full_schemas(policy: Policy, request_tools: Any) -> dict[str, dict[str, Any]]:
    """Function name -> the full parameters schema its calls are checked against.

    The client's original definition (the request's `tools` before the rewrite) wins; the
    training definition fills in the functions the request did not define. Legacy
    `functions` entries (`{"name", "parameters"}`) are read too. Malformed entries are skipped:
    the proxy is lenient about traffic.
    """
    schemas: dict[str, dict[str, Any]] = {}
    for name in policy.training_tools:
        training = policy.full_schema(name)
        if training is not None:
            schemas[name] = training
    if isinstance(request_tools, list):
        schemas.update(_request_schemas(request_tools))
    return schemas


def full_schema_for(policy: Policy, request_tools: Any, function: str) -> dict[str, Any] | None:
    """The full schema one answered call of `function` is checked against: what
    `full_schemas` would map it to, without the training part of the map. The request's part
    is built once per shared tools list (the parse stage shares every `tools` list)."""
    found = None
    if type(request_tools) is JsonList:
        found = _shared_list_schemas(request_tools).get(function)
    elif isinstance(request_tools, list):
        found = _request_schemas(request_tools).get(function)
    return found if found is not None else policy.full_schema(function)


def full_schema_key_for(policy: Policy, request_tools: Any, function: str) -> bytes | None:
    """`schema_key(full_schema_for(...))`, worked out once per shared tools list and once per
    policy, not once per answered call."""
    if type(request_tools) is JsonList:
        keys: dict[str, bytes | None] = request_tools.derived.setdefault("argument_keys", {})
        if function not in keys:
            found = _shared_list_schemas(request_tools).get(function)
            keys[function] = schema_key(found) if found is not None else None
        key = keys[function]
    elif isinstance(request_tools, list):
        key = schema_key(_request_schemas(request_tools).get(function))
    else:
        key = None
    return key if key is not None else policy.training_schema_keys.get(function)


def _shared_list_schemas(tools: JsonList) -> dict[str, dict[str, Any]]:
    """`_request_schemas` of a shared tools list, built once for the list's life."""
    schemas = tools.derived.get("argument_schemas")
    if schemas is None:
        schemas = tools.derived["argument_schemas"] = _request_schemas(tools)
    return schemas


def _request_schemas(tools: list[Any]) -> dict[str, dict[str, Any]]:
    """Function name -> parameters of the usable functions of a request's tools (the last
    definition of a name wins)."""
    named = (_named_parameters(tool) for tool in tools)
    return dict(pair for pair in named if pair is not None)


def _named_parameters(tool: Any) -> tuple[str, dict[str, Any]] | None:
    """(name, parameters) of one request tool, or None when it is not a usable function."""
    if not isinstance(tool, dict):
        return None
    function = tool.get("function") if "function" in tool else tool
    if not isinstance(function, dict):
        return None
    name = function.get("name")
    parameters = function.get("parameters", _NO_PARAMETERS)
    if not isinstance(name, str) or not isinstance(parameters, dict):
        return None
    return name, parameters


def schema_key(schema: Any) -> bytes | None:
    """The schema's canonical bytes (sorted keys: key order does not change what a schema
    means); None when it is not a JSON object."""
    if not isinstance(schema, Mapping):
        return None
    try:
        return orjson.dumps(schema, option=orjson.OPT_SORT_KEYS)
    except TypeError:  # not JSON-serialisable (non-string keys, foreign objects, too deep)
        return None


def _compile(key: bytes) -> Any | None:
    """A validator for the schema `key` holds (Draft 2020-12 unless its `$schema` names
    another draft), or None when the schema is not a valid JSON Schema.

    Offline: a `$ref` to anything outside the schema is unresolvable, never downloaded (the
    library fetches remote URLs by default). Formats are not asserted, whatever the draft.
    """
    try:
        schema = jsonutil.loads(key)
        return jsonschema_rs.validator_for(schema, validate_formats=False, offline=True)
    # A client-sent schema can fail to compile in ways the library does not document (keys
    # that are not strings, nesting past its recursion limit): an unusable schema counts as
    # no schema rather than failing the request's bookkeeping.
    except Exception:
        return None


def _fits(validator: Any, instance: dict[str, Any]) -> bool:
    try:
        return bool(validator.is_valid(instance))
    # What compiling cannot see fails here (arguments nested past the library's recursion
    # limit): the arguments cannot be judged against such a schema, so they are not counted
    # as breaking it.
    except Exception:
        return True
