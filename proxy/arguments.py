"""The tool-argument check: does each answered tool call's `arguments` fit its function's schema?

It runs after the answer, when the serving policy says `validate_arguments: true`, and only
counts: the answer itself is never changed. The schema checked against is the function's FULL
one — the client's original definition when the request offered it, else the training one —
never the slimmed definition the model was shown, because the full one is what the client's
code will parse the arguments with.

Compiling a JSON Schema validator costs far more than using one, so validators are compiled
once per distinct schema and cached:

- by identity: a schema object seen again (a policy's training schema lives as long as the
  policy) is found with one dict lookup;
- by content: a schema sent by the client is a new object in every request, so it is found by
  its serialised bytes in a bounded LRU.

Client-sent schemas are untrusted input to a third-party library: a `$ref` is never fetched
from the network, and no schema, however broken, makes the check raise.

The validators are jsonschema-rs's (Rust): a call's arguments are checked in about 0.1 µs where
the pure-Python jsonschema took about 10 µs, on every answered tool call.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import jsonschema_rs
import orjson

from proxy import jsonutil
from proxy.jsonutil import JsonList
from proxy.policy import Policy

# What `check` answers: the kind of failure, used as the `kind` metric label.
NOT_JSON = "json"
BREAKS_SCHEMA = "schema"

# The parameters of a function defined without `parameters`: it takes none, as OpenAI reads it.
_NO_PARAMETERS: dict[str, Any] = {"type": "object", "properties": {}}


@dataclass(frozen=True, slots=True)
class _Compiled:
    """One schema's validator (None when the schema is unusable), and the schema it came from.

    Holding `schema` keeps the object alive, so its `id()` cannot be reused by another object
    while this entry is cached.
    """

    schema: Any
    validator: Any | None


class ArgumentChecker:
    """Checks tool-call arguments against full schemas; compiled validators are cached by schema.

    One checker serves the whole process (it holds no request state). Both caches are LRUs of
    at most `max_cached` entries, so a stream of distinct client schemas cannot grow memory.
    A schema must not be changed in place once checked (the proxy never mutates request or
    policy dicts): the identity cache would keep judging by the old content.
    """

    def __init__(self, max_cached: int = 256) -> None:
        self.max_cached = max_cached
        self._by_identity: OrderedDict[int, _Compiled] = OrderedDict()
        self._by_content: OrderedDict[bytes, _Compiled] = OrderedDict()

    def check(self, function: str, arguments: str, schema: dict[str, Any] | None) -> str | None:
        """None when `arguments` is fine; "json" when it is not a JSON object; "schema" when it
        breaks `schema`. No schema (or an unusable one) means only the JSON check. Never raises.

        `function` names the call for the caller's bookkeeping; the schema alone decides.
        """
        try:
            instance = jsonutil.loads(arguments)
        except jsonutil.JSONDecodeError:  # also what orjson raises for a non-string
            return NOT_JSON
        if not isinstance(instance, dict):
            return NOT_JSON
        if schema is None:
            return None
        validator = self.validator(schema)
        if validator is None:
            return None
        return None if _fits(validator, instance) else BREAKS_SCHEMA

    def validator(self, schema: Any) -> Any | None:
        """The compiled validator of `schema`, from the cache when it was seen before; None when
        the schema cannot be used."""
        entry = self._by_identity.get(id(schema))
        if entry is not None and entry.schema is schema:
            self._by_identity.move_to_end(id(schema))
            return entry.validator
        key = _content_key(schema)
        if key is None:
            return None
        entry = self._by_content.get(key)
        if entry is None:
            entry = _Compiled(schema, _compile(schema))
            _remember(self._by_content, key, entry, self.max_cached)
        else:
            self._by_content.move_to_end(key)
            if entry.schema is schema:
                # The same object twice: it outlives a request (a training schema), so the
                # next look-up can skip serialising it.
                _remember(self._by_identity, id(schema), entry, self.max_cached)
            else:
                # Keep the newest object: a policy reload replaces the training schemas.
                entry = _Compiled(schema, entry.validator)
                self._by_content[key] = entry
        return entry.validator


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


def _content_key(schema: Any) -> bytes | None:
    """The schema's bytes with sorted keys (key order does not change what a schema means);
    None when it is not a JSON object."""
    if not isinstance(schema, Mapping):
        return None
    try:
        return orjson.dumps(schema, option=orjson.OPT_SORT_KEYS)
    except TypeError:  # not JSON-serialisable (non-string keys, foreign objects)
        return None


def _compile(schema: Mapping[str, Any]) -> Any | None:
    """A validator for `schema` (Draft 2020-12 unless its `$schema` names another draft), or
    None when the schema is not a valid JSON Schema.

    Offline: a `$ref` to anything outside the schema is unresolvable, never downloaded (the
    library fetches remote URLs by default). Formats are not asserted, whatever the draft.
    """
    try:
        return jsonschema_rs.validator_for(dict(schema), validate_formats=False, offline=True)
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


def _remember(cache: OrderedDict[Any, _Compiled], key: Any, entry: _Compiled, limit: int) -> None:
    cache[key] = entry
    cache.move_to_end(key)
    while len(cache) > limit:
        cache.popitem(last=False)
