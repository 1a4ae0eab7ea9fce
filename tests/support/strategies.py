"""Hypothesis strategies for JSON-shaped chat requests: well-formed ones in the tools and the
legacy shape, and anything at all, over a small set of training tools."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st


def _tool(name: str, **function: Any) -> dict[str, Any]:
    parameters = {
        "type": "object",
        "description": "Arguments.",
        "properties": {
            "description": {"type": "string", "description": "A property named description."},
            "items": {"type": "array", "items": {"type": "string", "description": "One."}},
        },
        "required": ["description"],
    }
    return {"type": "function", "function": {"name": name, "parameters": parameters, **function}}


TRAINING = [
    _tool("lookup_order", description="Fetch an order."),
    _tool("issue_refund", strict=True),
    _tool("escalate"),
]
TRAINED_NAMES = [tool["function"]["name"] for tool in TRAINING]

# JSON as orjson parses it: 64-bit integers, finite floats
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=12,
)
names = st.sampled_from([*TRAINED_NAMES, "get_weather", "other"]) | st.text(max_size=6)

SCHEMA_KEYS = [
    "type",
    "description",
    "properties",
    "items",
    "anyOf",
    "$defs",
    "required",
    "enum",
    "strict",
]
schemas = st.recursive(
    json_scalars,
    lambda inner: (
        st.dictionaries(st.sampled_from(SCHEMA_KEYS) | st.text(max_size=5), inner, max_size=4)
        | st.lists(inner, max_size=3)
    ),
    max_leaves=10,
)
function_objects = st.fixed_dictionaries(
    {"name": names},
    optional={"description": json_values, "parameters": schemas, "strict": json_values},
)
tools = st.one_of(
    st.sampled_from(TRAINING),
    st.fixed_dictionaries({"type": st.just("function"), "function": function_objects}),
    st.fixed_dictionaries(
        {"type": st.sampled_from(["function", "custom"])}, optional={"function": json_values}
    ),
    json_values,
)
named_choice = st.builds(lambda name: {"type": "function", "function": {"name": name}}, names)
tool_choices = st.one_of(
    st.sampled_from(["auto", "none", "required"]),
    named_choice,
    st.builds(
        lambda chosen: {
            "type": "allowed_tools",
            "allowed_tools": {"mode": "auto", "tools": chosen},
        },
        st.lists(named_choice | json_values, max_size=3),
    ),
    json_values,
)
contents = st.none() | st.text(max_size=20) | st.just("Trained prompt. And more.") | json_values
well_formed_messages = st.fixed_dictionaries(
    {"role": st.sampled_from(["system", "developer", "user", "assistant", "tool", "function"])},
    optional={
        "content": contents,
        "name": names,
        "function_call": st.fixed_dictionaries({"name": names, "arguments": st.text(max_size=5)})
        | json_values,
        "tool_call_id": st.text(max_size=4),
    },
)
messages = well_formed_messages | json_values
well_formed_tools = st.one_of(
    st.sampled_from(TRAINING),
    st.fixed_dictionaries({"type": st.just("function"), "function": function_objects}),
)
common_fields = {
    "tool_choice": tool_choices,
    "parallel_tool_calls": st.booleans() | json_values,
    "logit_bias": st.dictionaries(
        st.text("0123456789", min_size=1, max_size=4), st.integers(-100, 100)
    )
    | json_values,
    "temperature": st.none() | st.floats(0, 2),
    "top_p": st.none() | st.floats(0, 1),
    "future_field": json_values,
}
# Three families, so that most examples get past the first check: requests in the tools
# shape, requests in the legacy shape, and anything at all.
modern_bodies = st.fixed_dictionaries(
    {"model": st.just("support-agent"), "messages": st.lists(well_formed_messages, max_size=5)},
    optional={"tools": st.lists(well_formed_tools, min_size=1, max_size=5), **common_fields},
)
legacy_bodies = st.fixed_dictionaries(
    {
        "model": st.just("support-agent"),
        "messages": st.lists(well_formed_messages, max_size=5),
        "functions": st.lists(function_objects, max_size=3),
    },
    optional={
        "function_call": st.sampled_from(["auto", "none"])
        | st.builds(lambda n: {"name": n}, names),
        "temperature": st.none() | st.floats(0, 2),
    },
)
wild_bodies = st.fixed_dictionaries(
    {"model": st.just("support-agent")},
    optional={
        "messages": st.lists(messages, max_size=5) | json_values,
        "tools": st.lists(tools, max_size=5) | json_values,
        "functions": st.lists(function_objects | json_values, max_size=3) | json_values,
        "function_call": json_values,
        **common_fields,
    },
)
bodies = modern_bodies | legacy_bodies | wild_bodies
