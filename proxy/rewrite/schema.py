"""Slimming one function tool: the levels of the fine-tuning guide, as pure functions.

Everything here is copy-on-write: a value that needs no change is returned as the same
object, so a caller can tell "unchanged" by identity and unchanged subtrees stay shared.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Literal

SlimLevel = Literal["keep", "omit_descriptions", "omit_parameters", "omit_function"]

# Deeper schemas are refused rather than walked: no real tool needs them, and the walk is
# recursive.
MAX_SCHEMA_DEPTH = 64

# JSON Schema keywords whose value is a schema, a list of schemas, or a map of names to
# schemas. Only these are walked: anything else (`enum`, `const`, `default`, `examples`…)
# is data, where a key named `description` must survive.
_SUBSCHEMA = frozenset(
    {
        "items",
        "additionalItems",
        "additionalProperties",
        "unevaluatedItems",
        "unevaluatedProperties",
        "not",
        "if",
        "then",
        "else",
        "contains",
        "propertyNames",
        "contentSchema",
    }
)
_SUBSCHEMA_LIST = frozenset({"anyOf", "oneOf", "allOf", "prefixItems", "items"})
_SUBSCHEMA_MAP = frozenset(
    {"properties", "patternProperties", "$defs", "definitions", "dependentSchemas", "dependencies"}
)


class SchemaTooDeep(ValueError):
    """A schema nested deeper than `MAX_SCHEMA_DEPTH`."""


def strip_descriptions(schema: Any, depth: int = 0) -> Any:
    """`schema` without the `description` keyword at any level.

    A key of `properties` (or of another name→schema map) is a property name, not a
    keyword: a property called `description` stays, only its own description goes.
    """
    if not isinstance(schema, dict):
        return schema
    if depth > MAX_SCHEMA_DEPTH:
        raise SchemaTooDeep(f"schema nested deeper than {MAX_SCHEMA_DEPTH} levels")
    stripped: dict[str, Any] = {}
    changed = False
    for keyword, value in schema.items():
        if keyword == "description":
            changed = True
            continue
        new_value = _strip_keyword(keyword, value, depth + 1)
        changed = changed or new_value is not value
        stripped[keyword] = new_value
    return stripped if changed else schema


def _strip_keyword(keyword: str, value: Any, depth: int) -> Any:
    if keyword in _SUBSCHEMA_MAP and isinstance(value, dict):
        return _map_dict(value, lambda sub: strip_descriptions(sub, depth))
    if keyword in _SUBSCHEMA_LIST and isinstance(value, list):
        return _map_list(value, lambda sub: strip_descriptions(sub, depth))
    if keyword in _SUBSCHEMA:
        return strip_descriptions(value, depth)
    return value


def _map_dict(mapping: dict[str, Any], change: Callable[[Any], Any]) -> dict[str, Any]:
    new = {key: change(value) for key, value in mapping.items()}
    return new if any(new[key] is not value for key, value in mapping.items()) else mapping


def _map_list(items: list[Any], change: Callable[[Any], Any]) -> list[Any]:
    new = [change(item) for item in items]
    return new if any(a is not b for a, b in zip(new, items, strict=True)) else items


def without(mapping: dict[str, Any], keys: Iterable[str]) -> dict[str, Any]:
    """`mapping` minus `keys`; the same object when it has none of them."""
    drop = [key for key in keys if key in mapping]
    if not drop:
        return mapping
    return {key: value for key, value in mapping.items() if key not in drop}


def slim_tool(tool: dict[str, Any], level: SlimLevel) -> dict[str, Any] | None:
    """A chat function tool (`{type, function: {...}}`) slimmed to `level`; None when the level
    omits the whole tool.

    The levels are not cumulative: `omit_parameters` keeps the descriptions it does not remove
    with `properties`.
    """
    function = tool["function"]
    new_function = slim_function(function, level)
    if new_function is None:
        return None
    return tool if new_function is function else {**tool, "function": new_function}


def slim_function(function: dict[str, Any], level: SlimLevel) -> dict[str, Any] | None:
    """A function object (`{name, description, parameters, strict}`) slimmed to `level`; the
    Responses API's flat function tool is one too (with its `type` beside)."""
    if level == "omit_function":
        return None
    if level == "omit_descriptions":
        return _function_without_descriptions(function)
    if level == "omit_parameters":
        return _function_without_parameters(function)
    return function


def flat_function_tool(tool: dict[str, Any]) -> dict[str, Any]:
    """A chat function tool in the Responses API's flat shape: `{type, name, description,
    parameters, strict}`. `strict` is written out: the Responses API would otherwise make a
    function strict where its schema allows, which chat (and so training) did not.
    """
    function = tool["function"]
    flat = {"type": "function", **function}
    flat.setdefault("parameters", None)
    flat.setdefault("strict", False)
    return flat


def _function_without_descriptions(function: dict[str, Any]) -> dict[str, Any]:
    parameters = function.get("parameters")
    new_parameters = strip_descriptions(parameters)
    new_function = without(function, ("description",))
    if new_parameters is not parameters:
        new_function = {**new_function, "parameters": new_parameters}
    return new_function


def _function_without_parameters(function: dict[str, Any]) -> dict[str, Any]:
    # `strict` goes too: strict mode needs every property listed and required.
    new_function = without(function, ("strict",))
    parameters = function.get("parameters")
    if isinstance(parameters, dict):
        new_parameters = without(parameters, ("properties", "required"))
        if new_parameters is not parameters:
            new_function = {**new_function, "parameters": new_parameters}
    return new_function
