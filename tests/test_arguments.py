"""The tool-argument check: JSON, full schemas, broken schemas, and the validator caches."""

from __future__ import annotations

import copy
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy import jsonutil
from proxy.arguments import (
    MAX_CHECKED_SCHEMA_BYTES,
    ArgumentChecker,
    _validator_weight,
    full_schema_for,
    full_schema_key_for,
    full_schemas,
    schema_key,
)
from proxy.jsonutil import JsonList
from proxy.rewrite.policy import PASSTHROUGH, PolicySpec, build_policy

ORDER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "order_id": {"type": "string", "pattern": "^A[0-9]+$"},
        "items": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "sku": {"type": "string"},
                    "quantity": {"type": "integer", "minimum": 1},
                },
                "required": ["sku", "quantity"],
            },
        },
        "reason": {"type": "string", "enum": ["damaged", "late", "other"]},
    },
    "required": ["order_id"],
    "additionalProperties": False,
}

LOOKUP_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "lookup_order",
        "description": "Look an order up.",
        "parameters": ORDER_SCHEMA,
    },
}
PING_TOOL: dict[str, Any] = {"type": "function", "function": {"name": "ping"}}


def arguments(value: Any) -> str:
    return jsonutil.dumps(value).decode()


# ----------------------------------------------------------------------------- check


@pytest.mark.parametrize(
    "value",
    [
        {"order_id": "A1"},
        {"order_id": "A12", "items": [{"sku": "X", "quantity": 2}], "reason": "late"},
    ],
)
def test_arguments_that_fit_the_schema_pass(value: Any) -> None:
    assert ArgumentChecker().check("lookup_order", arguments(value), ORDER_SCHEMA) is None


@pytest.mark.parametrize("raw", ['{"order_id": "A1"', "order A1", "", "{'order_id': 'A1'}"])
def test_arguments_that_are_not_json_are_json_errors(raw: str) -> None:
    assert ArgumentChecker().check("lookup_order", raw, ORDER_SCHEMA) == "json"


@pytest.mark.parametrize("raw", ["[]", '["A1"]', '"A1"', "1", "null", "true"])
def test_json_that_is_not_an_object_is_a_json_error(raw: str) -> None:
    # A tool's arguments are always an object, whatever the schema says.
    assert ArgumentChecker().check("lookup_order", raw, ORDER_SCHEMA) == "json"
    assert ArgumentChecker().check("lookup_order", raw, None) == "json"


@pytest.mark.parametrize(
    "value",
    [
        pytest.param({}, id="missing required"),
        pytest.param({"order_id": 17}, id="wrong type"),
        pytest.param({"order_id": "B1"}, id="pattern"),
        pytest.param({"order_id": "A1", "reason": "bored"}, id="enum"),
        pytest.param({"order_id": "A1", "note": "x"}, id="additional property"),
        pytest.param({"order_id": "A1", "items": [{"sku": "X"}]}, id="nested missing required"),
        pytest.param(
            {"order_id": "A1", "items": [{"sku": "X", "quantity": 0}]}, id="nested minimum"
        ),
        pytest.param(
            {"order_id": "A1", "items": [{"sku": "X", "quantity": "2"}]}, id="nested wrong type"
        ),
    ],
)
def test_arguments_that_break_the_schema_are_schema_errors(value: Any) -> None:
    assert ArgumentChecker().check("lookup_order", arguments(value), ORDER_SCHEMA) == "schema"


def test_without_a_schema_only_json_is_checked() -> None:
    checker = ArgumentChecker()
    assert checker.check("unknown_fn", arguments({"anything": [1, 2]}), None) is None
    assert checker.check("unknown_fn", "{oops", None) == "json"


@pytest.mark.parametrize(
    "schema",
    [
        pytest.param({"type": 5}, id="type not a string"),
        pytest.param({"type": "object", "required": "order_id"}, id="required not a list"),
        pytest.param({"$schema": ["not", "a", "uri"]}, id="unhashable $schema"),
        pytest.param({"$schema": "https://example.invalid/unknown-draft"}, id="unknown $schema"),
        pytest.param({"properties": {"a": {"pattern": "(unclosed"}}}, id="pattern not a regex"),
        pytest.param({"$ref": "#/$defs/missing"}, id="dangling $ref"),
        pytest.param({"$ref": "urn:nowhere:schema"}, id="unresolvable $ref"),
        pytest.param({"$ref": "#"}, id="$ref cycle"),
        pytest.param(
            {
                "$defs": {"a": {"$ref": "#/$defs/b"}, "b": {"$ref": "#/$defs/a"}},
                "$ref": "#/$defs/a",
            },
            id="$ref loop",
        ),
        pytest.param({1: "not a string key"}, id="non-string key"),
        pytest.param(["a", "list"], id="not an object"),
        pytest.param(True, id="boolean"),
    ],
)
def test_an_unusable_schema_counts_as_no_schema_and_never_raises(schema: Any) -> None:
    checker = ArgumentChecker()
    for _ in range(2):  # the second time from the cache
        assert checker.check("fn", arguments({"a": "x"}), schema) is None
        assert checker.check("fn", "not json", schema) == "json"


def test_a_schema_nested_deeper_than_anything_can_serialise_never_raises() -> None:
    deep: dict[str, Any] = {"type": "object"}
    for _ in range(2000):
        deep = {"type": "object", "properties": {"a": deep}}
    assert ArgumentChecker().check("fn", arguments({"a": {}}), deep) is None


def test_deeply_nested_arguments_never_raise() -> None:
    # Deeper than Python's recursion limit lets jsonschema follow: judged as not breaking it.
    node = {"type": "object", "properties": {"a": {"$ref": "#/$defs/node"}}}
    schema = {"$defs": {"node": node}, "$ref": "#/$defs/node"}
    raw = '{"a":' * 1000 + "{}" + "}" * 1000
    assert ArgumentChecker().check("fn", raw, schema) is None


@pytest.fixture
def schema_server() -> Iterator[tuple[str, list[str]]]:
    """A local HTTP server that would serve a schema, and the paths it was asked for."""
    hits: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            hits.append(self.path)
            body = b'{"type": "string"}'
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # keep the test output clean

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/schema.json", hits
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_a_remote_ref_is_never_fetched(schema_server: tuple[str, list[str]]) -> None:
    url, hits = schema_server
    schema = {"type": "object", "properties": {"a": {"$ref": url}}}
    # Had the schema been fetched, "a" would have to be a string and this would be an error.
    assert ArgumentChecker().check("fn", arguments({"a": 1}), schema) is None
    assert hits == []


def test_the_schema_keyword_picks_the_draft() -> None:
    # Draft 7 reads an `items` array as one schema per position; Draft 2020-12 (the default)
    # calls that an invalid schema, which counts as no schema.
    pair = {"properties": {"pair": {"items": [{"type": "string"}, {"type": "integer"}]}}}
    draft7 = {"$schema": "http://json-schema.org/draft-07/schema#", **pair}
    checker = ArgumentChecker()
    assert checker.check("fn", arguments({"pair": ["a", "b"]}), draft7) == "schema"
    assert checker.check("fn", arguments({"pair": ["a", 1]}), draft7) is None
    assert checker.check("fn", arguments({"pair": ["a", "b"]}), pair) is None


def test_the_default_draft_is_2020_12() -> None:
    # `prefixItems` exists only since 2020-12.
    schema = {"properties": {"pair": {"prefixItems": [{"type": "string"}, {"type": "integer"}]}}}
    assert ArgumentChecker().check("fn", arguments({"pair": ["a", "b"]}), schema) == "schema"


# ----------------------------------------------------------------------------- caching


def test_the_same_schema_object_reuses_its_validator() -> None:
    checker = ArgumentChecker()
    first = checker.validator(ORDER_SCHEMA)
    assert first is not None
    for _ in range(3):
        assert checker.validator(ORDER_SCHEMA) is first


def test_an_equal_schema_from_another_request_reuses_the_validator() -> None:
    checker = ArgumentChecker()
    first = checker.validator(ORDER_SCHEMA)
    assert checker.validator(copy.deepcopy(ORDER_SCHEMA)) is first
    # Key order does not change what a schema means.
    reordered = dict(reversed(list(copy.deepcopy(ORDER_SCHEMA).items())))
    assert checker.validator(reordered) is first


def test_different_schemas_get_different_validators() -> None:
    checker = ArgumentChecker()
    other = {**ORDER_SCHEMA, "required": []}
    assert checker.validator(other) is not checker.validator(ORDER_SCHEMA)
    assert checker.check("lookup_order", "{}", other) is None
    assert checker.check("lookup_order", "{}", ORDER_SCHEMA) == "schema"


def test_the_cache_is_bounded_in_bytes_and_forgets_the_least_recently_used() -> None:
    schemas = [{"type": "object", "maxProperties": n} for n in range(3)]
    one = _validator_weight(schema_key(schemas[0]) or b"", object())
    checker = ArgumentChecker(max_bytes=2 * one + 10)  # room for two of them
    first = checker.validator(schemas[0])
    checker.validator(schemas[1])
    assert checker.validator(schemas[0]) is first  # used again: now the most recent
    checker.validator(schemas[2])  # evicts schemas[1]
    assert checker.validator(schemas[0]) is first
    assert checker.weight <= 2 * one + 10
    # An evicted schema is compiled again (a new validator that judges the same way).
    recompiled = checker.validator(copy.deepcopy(schemas[1]))
    assert recompiled is not None
    assert checker.check("fn", '{"a": 1, "b": 2}', schemas[1]) == "schema"


def test_a_schema_too_large_is_not_compiled_and_its_calls_get_the_json_check() -> None:
    checker = ArgumentChecker()
    huge = {"type": "object", "properties": {f"p{n}": {} for n in range(10_000)}}
    huge["required"] = ["p0"]
    assert len(schema_key(huge) or b"") > MAX_CHECKED_SCHEMA_BYTES
    assert checker.validator(huge) is None
    assert checker.check("fn", "{}", huge) is None  # would break `required`: not judged
    assert checker.check("fn", "[1]", huge) == "json"
    assert checker.weight < 2 * MAX_CHECKED_SCHEMA_BYTES  # its bytes, no compiled form


def test_many_distinct_schemas_stay_within_the_budget() -> None:
    checker = ArgumentChecker(max_bytes=1024 * 1024)
    for n in range(400):
        schema = {"type": "object", "properties": {f"p{i}_{n}": {} for i in range(100)}}
        assert checker.check("fn", "{}", schema) is None
    assert checker.weight <= 1024 * 1024


def test_an_unusable_schema_is_cached_too() -> None:
    checker = ArgumentChecker()
    broken = {"type": 5}
    assert checker.validator(broken) is None
    assert checker.validator(broken) is None
    assert checker.validator(copy.deepcopy(broken)) is None


# ----------------------------------------------------------------------------- full_schemas


def slim_policy() -> Any:
    spec = PolicySpec.model_validate(
        {"tools": {"mode": "slim", "slim": {"default": "omit_parameters"}}}
    )
    return build_policy("slim", spec, [LOOKUP_TOOL, PING_TOOL])


def test_training_schemas_are_the_full_ones_not_the_slimmed() -> None:
    policy = slim_policy()
    assert policy.slimmed_tools["lookup_order"].definition is not None
    schemas = full_schemas(policy, None)
    assert schemas["lookup_order"] is ORDER_SCHEMA
    # A training function without parameters takes none.
    assert schemas["ping"] == {"type": "object", "properties": {}}


def test_the_clients_original_definition_wins_over_the_training_one() -> None:
    client_schema = {"type": "object", "properties": {"id": {"type": "integer"}}}
    tools = [
        {"type": "function", "function": {"name": "lookup_order", "parameters": client_schema}},
        {"type": "function", "function": {"name": "client_only"}},
    ]
    schemas = full_schemas(slim_policy(), tools)
    assert schemas["lookup_order"] is client_schema
    assert schemas["client_only"] == {"type": "object", "properties": {}}
    assert schemas["ping"] == {"type": "object", "properties": {}}


def test_legacy_functions_are_read_too() -> None:
    functions = [{"name": "lookup_order", "parameters": {"type": "object"}}]
    assert full_schemas(PASSTHROUGH, functions) == {"lookup_order": {"type": "object"}}


@pytest.mark.parametrize(
    "tools",
    [
        None,
        "tools",
        {"type": "function"},
        [None, 3, "x", {"type": "function"}, {"type": "function", "function": "lookup_order"}],
        [{"type": "function", "function": {"name": 5, "parameters": {}}}],
        [{"type": "function", "function": {"name": "lookup_order", "parameters": []}}],
    ],
)
def test_malformed_request_tools_are_skipped(tools: Any) -> None:
    assert full_schemas(PASSTHROUGH, tools) == {}
    assert full_schemas(slim_policy(), tools)["lookup_order"] is ORDER_SCHEMA


def test_a_slimmed_request_is_still_checked_against_the_full_schema() -> None:
    policy = slim_policy()
    schemas = full_schemas(policy, [LOOKUP_TOOL])
    checker = ArgumentChecker()
    # Fine for the slimmed definition (no properties left), not for the full one.
    assert checker.check("lookup_order", "{}", schemas["lookup_order"]) == "schema"
    assert checker.check("lookup_order", '{"order_id": "A7"}', schemas["lookup_order"]) is None


@pytest.mark.parametrize(
    "tools",
    [
        None,
        [LOOKUP_TOOL],
        [
            {
                "type": "function",
                "function": {"name": "lookup_order", "parameters": {"type": "object"}},
            },
            {"type": "function", "function": {"name": "client_only"}},
            {
                "type": "function",
                "function": {
                    "name": "lookup_order",
                    "parameters": {"type": "object", "title": "last"},
                },
            },
        ],
        [{"name": "lookup_order", "parameters": {"type": "object"}}],
        [None, 3, {"type": "function", "function": "lookup_order"}],
    ],
)
def test_full_schema_for_one_function_agrees_with_the_whole_map(tools: Any) -> None:
    policy = slim_policy()
    schemas = full_schemas(policy, tools)
    # as the parse stage shares it: the map is built once and kept with the list
    shared = None if tools is None else JsonList(tools, jsonutil.dumps(tools))
    for function in (*schemas, "not_offered"):
        assert full_schema_for(policy, tools, function) == schemas.get(function)
        assert full_schema_for(policy, shared, function) == schemas.get(function)
        expected_key = schema_key(schemas.get(function))
        assert full_schema_key_for(policy, tools, function) == expected_key
        assert full_schema_key_for(policy, shared, function) == expected_key
        assert full_schema_key_for(policy, shared, function) == expected_key  # kept


SUPPORT_SCHEMAS = [
    tool["function"].get("parameters", {"type": "object", "properties": {}})
    for tool in jsonutil.loads(
        (Path(__file__).resolve().parent.parent / "policies" / "support.tools.json").read_bytes()
    )
]
json_scalars = st.none() | st.booleans() | st.integers(-5, 5) | st.text(max_size=6)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner),
    max_leaves=8,
)


@settings(max_examples=300, deadline=None)
@given(
    schema=st.sampled_from([ORDER_SCHEMA, *SUPPORT_SCHEMAS]),
    instance=st.dictionaries(
        st.sampled_from(["order_id", "items", "reason", "tracking_number", "carrier", "email"])
        | st.text(max_size=6),
        json_values,
        max_size=4,
    ),
)
def test_verdicts_agree_with_the_reference_implementation(
    schema: dict[str, Any], instance: dict[str, Any]
) -> None:
    """The request path's validator (jsonschema-rs) judges as the reference jsonschema does."""
    expected = jsonschema.Draft202012Validator(schema).is_valid(instance)
    verdict = ArgumentChecker().check("fn", arguments(instance), schema)
    assert verdict == (None if expected else "schema")
