"""Loading policy files: defaults, the prepared data, and every error line a bad file gets."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from proxy import jsonutil
from proxy.errors import ConfigError
from proxy.policies import load_policy
from proxy.rewrite.policy import PASSTHROUGH, PolicySpec, build_policy

REPO_POLICIES = Path(__file__).resolve().parent.parent / "policies"

LOOKUP: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "lookup_order",
        "description": "Fetch one order.",
        "parameters": {
            "type": "object",
            "properties": {"order_id": {"type": "string", "description": "Order number."}},
            "required": ["order_id"],
        },
    },
}
REFUND: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "issue_refund",
        "strict": True,
        "parameters": {
            "type": "object",
            "properties": {"amount": {"type": "number"}},
            "required": ["amount"],
            "additionalProperties": False,
        },
    },
}
PING: dict[str, Any] = {"type": "function", "function": {"name": "ping"}}


def write_policy(tmp_path: Path, text: str, tools: Any = None) -> Path:
    if tools is not None:
        raw = tools if isinstance(tools, bytes) else jsonutil.dumps(tools)
        (tmp_path / "tools.json").write_bytes(raw)
    path = tmp_path / "p.yaml"
    path.write_text(text)
    return path


def load_errors(tmp_path: Path, text: str, tools: Any = None) -> list[str]:
    path = write_policy(tmp_path, text, tools)
    with pytest.raises(ConfigError) as failed:
        load_policy(path, "p")
    return [line.replace(str(tmp_path), "DIR") for line in failed.value.errors]


@pytest.mark.parametrize(
    "path", sorted(p for p in REPO_POLICIES.glob("*.yaml") if not p.name.startswith("tuned-proxy"))
)
def test_the_example_policies_load(path: Path) -> None:
    policy = load_policy(path, path.stem)
    assert policy.name == path.stem
    assert policy.training_tools


def test_an_empty_file_is_every_default(tmp_path: Path) -> None:
    spec = load_policy(write_policy(tmp_path, "# nothing\n"), "p").spec
    assert spec == PolicySpec()
    assert spec.tools.mode == "passthrough"
    assert spec.tools.unknown == "pass"
    assert spec.system_prompt.mode == "keep"
    assert spec.legacy_functions == "translate"
    assert spec.parallel_tool_calls is None
    assert spec.logit_bias is None
    assert spec.validate_arguments is True


def test_logit_bias_defaults_and_integer_keys(tmp_path: Path) -> None:
    spec = load_policy(write_policy(tmp_path, "logit_bias: {tokens: {316: 5}}\n"), "p").spec
    assert spec.logit_bias is not None
    assert spec.logit_bias.tokens == {"316": 5}
    assert (spec.logit_bias.when, spec.logit_bias.sampling) == ("tools_auto", "keep")


def test_training_tools_keep_file_and_key_order(tmp_path: Path) -> None:
    reordered = {"function": {"parameters": {}, "name": "zeta"}, "type": "function"}
    tools_bytes = jsonutil.dumps([reordered, LOOKUP])
    path = write_policy(tmp_path, "training_tools: tools.json\n", tools_bytes)
    policy = load_policy(path, "p")
    assert list(policy.training_tools) == ["zeta", "lookup_order"]
    assert jsonutil.dumps(policy.training_tools["zeta"]) == jsonutil.dumps(reordered)


def test_full_schema(tmp_path: Path) -> None:
    policy = load_policy(
        write_policy(tmp_path, "training_tools: tools.json\n", [LOOKUP, PING]), "p"
    )
    assert policy.full_schema("lookup_order") == LOOKUP["function"]["parameters"]
    # OpenAI reads a function without parameters as one that takes none
    assert policy.full_schema("ping") == {"type": "object", "properties": {}}
    assert policy.full_schema("unknown") is None
    assert PASSTHROUGH.full_schema("lookup_order") is None


def test_slim_definitions_are_prepared_at_load(tmp_path: Path) -> None:
    text = (
        "training_tools: tools.json\n"
        "tools: {mode: slim, slim: {default: omit_descriptions,"
        " functions: {ping: omit_function}}}\n"
    )
    policy = load_policy(write_policy(tmp_path, text, [LOOKUP, PING]), "p")
    slimmed = policy.slimmed_tools["lookup_order"]
    assert slimmed.definition == {
        "type": "function",
        "function": {
            "name": "lookup_order",
            "parameters": {
                "type": "object",
                "properties": {"order_id": {"type": "string"}},
                "required": ["order_id"],
            },
        },
    }
    full, slim = len(jsonutil.dumps(LOOKUP)), len(jsonutil.dumps(slimmed.definition))
    assert slimmed.bytes_removed == full - slim > 0
    assert policy.slimmed_tools["ping"].definition is None
    assert policy.slimmed_tools["ping"].bytes_removed == len(jsonutil.dumps(PING))


def test_strict_function_slimmed_to_omit_parameters_when_acknowledged(tmp_path: Path) -> None:
    text = (
        "training_tools: tools.json\n"
        "tools: {mode: slim, slim: {default: omit_parameters, drop_strict: true}}\n"
    )
    policy = load_policy(write_policy(tmp_path, text, [REFUND]), "p")
    definition = policy.slimmed_tools["issue_refund"].definition
    assert definition is not None
    assert definition["function"] == {
        "name": "issue_refund",
        "parameters": {"type": "object", "additionalProperties": False},
    }


def test_the_training_tools_are_not_changed_by_slimming(tmp_path: Path) -> None:
    text = "training_tools: tools.json\ntools: {mode: slim, slim: {default: omit_descriptions}}\n"
    policy = load_policy(write_policy(tmp_path, text, [LOOKUP]), "p")
    assert policy.training_tools["lookup_order"] == LOOKUP


ERRORS = [
    pytest.param("tool: {}\n", None, ["DIR/p.yaml: tool: unknown key"], id="unknown-key"),
    pytest.param(
        "tools: {mode: slim, slim: {defualt: keep}}\n",
        None,
        ["DIR/p.yaml: tools.slim.defualt: unknown key"],
        id="unknown-nested-key",
    ),
    pytest.param(
        "tools: {mode: identical, slim: {default: keep}}\ntraining_tools: tools.json\n",
        [LOOKUP],
        [
            "DIR/p.yaml: tools.slim: slim levels are only used with tools.mode: slim "
            "(mode is identical)"
        ],
        id="slim-outside-slim-mode",
    ),
    pytest.param(
        "training_tools: tools.json\ntools: {mode: slim, slim: {functions: {lookup_ordr: keep}}}\n",
        [LOOKUP],
        [
            "DIR/p.yaml: tools.slim.functions.lookup_ordr: not a function of training_tools "
            "(tools.json)"
        ],
        id="slim-function-not-trained",
    ),
    pytest.param(
        "logit_bias: {tokens: {abc: 5}}\n",
        None,
        ["DIR/p.yaml: logit_bias.tokens: token ids are strings of digits, got 'abc'"],
        id="bias-key-not-digits",
    ),
    pytest.param(
        "logit_bias: {tokens: {}}\n",
        None,
        ["DIR/p.yaml: logit_bias: at least one of tokens and text is required"],
        id="bias-empty",
    ),
    pytest.param(
        "logit_bias: {tokens: {" + ", ".join(f"{i}: 1" for i in range(1025)) + "}}\n",
        None,
        ["DIR/p.yaml: logit_bias: at most 1024 tokens are allowed, got 1025"],
        id="bias-too-many",
    ),
    pytest.param(
        "system_prompt: {mode: replace}\n",
        None,
        ["DIR/p.yaml: system_prompt.text: text is required with mode: replace"],
        id="replace-without-text",
    ),
    pytest.param(
        "system_prompt: {mode: prepend, text: ''}\n",
        None,
        ["DIR/p.yaml: system_prompt.text: text is required with mode: prepend"],
        id="prepend-empty-text",
    ),
    pytest.param(
        "system_prompt: {text: hello}\n",
        None,
        [
            "DIR/p.yaml: system_prompt.text: text is only used with mode replace, prepend "
            "or if_missing"
        ],
        id="text-with-keep",
    ),
    pytest.param(
        "training_tools: missing.json\n",
        None,
        ["DIR/p.yaml: training_tools: missing.json: not found"],
        id="tools-file-missing",
    ),
    pytest.param(
        "tools: {mode: identical}\n",
        None,
        ["DIR/p.yaml: tools.mode: identical needs training_tools (the trained definitions)"],
        id="identical-without-tools",
    ),
    pytest.param(
        "tools: {mode: identical, unknown: reject}\n",
        None,
        [
            "DIR/p.yaml: tools.mode: identical needs training_tools (the trained definitions)",
            "DIR/p.yaml: tools.unknown: reject needs training_tools to tell which functions "
            "are known",
        ],
        id="every-link-error-at-once",
    ),
    pytest.param(
        "training_tools: tools.json\n"
        "tools: {mode: slim, slim: {functions: {issue_refund: omit_parameters}}}\n",
        [LOOKUP, REFUND],
        [
            "DIR/p.yaml: tools.slim.functions.issue_refund: omit_parameters would drop "
            "`strict: true` from issue_refund (strict needs the properties); set "
            "tools.slim.drop_strict: true to accept that, or choose another level for it"
        ],
        id="strict-omit-parameters",
    ),
    pytest.param(
        "system_prompt: [replace\n",
        None,
        ["DIR/p.yaml: (file): invalid YAML: expected ',' or ']', but got '<stream end>' at line 2"],
        id="yaml-syntax",
    ),
    pytest.param(
        "- a\n- b\n",
        None,
        ["DIR/p.yaml: (file): a policy is a mapping of keys, not an array"],
        id="yaml-not-a-mapping",
    ),
    pytest.param(
        "training_tools: tools.json\n",
        [LOOKUP, LOOKUP],
        ["DIR/tools.json: lookup_order: defined more than once"],
        id="tools-duplicate-function",
    ),
]


@pytest.mark.parametrize(("text", "tools", "lines"), ERRORS)
def test_error_lines(tmp_path: Path, text: str, tools: Any, lines: list[str]) -> None:
    assert load_errors(tmp_path, text, tools) == lines


@pytest.mark.parametrize(
    ("text", "prefix", "phrase"),
    [
        ("tools: {mode: thin}\n", "DIR/p.yaml: tools.mode: ", "'identical'"),
        ("logit_bias: {tokens: {316: 101}}\n", "DIR/p.yaml: logit_bias.tokens.316: ", "100"),
        ("logit_bias: {tokens: {316: 5.0}}\n", "DIR/p.yaml: logit_bias.tokens.316: ", "integer"),
        (
            "logit_bias: {tokens: {316: 5}, when: often}\n",
            "DIR/p.yaml: logit_bias.when: ",
            "'always'",
        ),
        ("parallel_tool_calls: 'no'\n", "DIR/p.yaml: parallel_tool_calls: ", "boolean"),
        (
            "tool_choice: {on_user_turn: sometimes}\n",
            "DIR/p.yaml: tool_choice.on_user_turn: ",
            "'required'",
        ),
    ],
)
def test_pydantic_error_lines(tmp_path: Path, text: str, prefix: str, phrase: str) -> None:
    [line] = load_errors(tmp_path, text)
    assert line.startswith(prefix)
    assert phrase in line


def test_strict_error_names_the_default_level(tmp_path: Path) -> None:
    text = "training_tools: tools.json\ntools: {mode: slim, slim: {default: omit_parameters}}\n"
    [line] = load_errors(tmp_path, text, [LOOKUP, REFUND])
    assert line.startswith(
        "DIR/p.yaml: tools.slim.default: omit_parameters would drop `strict: true`"
    )


@pytest.mark.parametrize(
    ("tools", "prefix"),
    [
        (b"[{", "DIR/tools.json: (file): invalid JSON: "),
        (
            {"type": "function"},
            "DIR/tools.json: (file): a JSON array of tools is expected, not an object",
        ),
        (
            [{"type": "function", "function": {"description": "no name"}}],
            "DIR/tools.json: 0.function.name: ",
        ),
        ([{"type": "custom", "custom": {"name": "x"}}], "DIR/tools.json: 0.type: "),
        (
            [{"type": "function", "function": {"name": "has space"}}],
            "DIR/tools.json: 0.function.name: ",
        ),
    ],
)
def test_tools_file_error_lines(tmp_path: Path, tools: Any, prefix: str) -> None:
    lines = load_errors(tmp_path, "training_tools: tools.json\n", tools)
    assert lines
    assert lines[0].startswith(prefix)


def test_build_policy_checks_links_without_files() -> None:
    spec = PolicySpec.model_validate({"tools": {"mode": "identical"}})
    with pytest.raises(ConfigError) as failed:
        build_policy("p", spec, (), file="p.yaml")
    assert failed.value.errors == [
        "p.yaml: tools.mode: identical needs training_tools (the trained definitions)"
    ]
    assert build_policy("p", spec, [LOOKUP]).training_tools["lookup_order"] is LOOKUP


def test_passthrough_does_not_translate_legacy_functions() -> None:
    assert PASSTHROUGH.name == "passthrough"
    assert PASSTHROUGH.spec.legacy_functions == "pass"
    assert PASSTHROUGH.training_tools == {}
