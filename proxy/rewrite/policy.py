"""Policies: how to make a request look like what one fine-tuned deployment was trained on.

A policy is a YAML file (`policies/NAME.yaml`) that belongs to a variant; see the product
design for every key. Loading does all the expensive work once, at start-up or reload: the
training tools file is read and checked, and in slim mode every training function's
slimmed definition (and the bytes it saves) is computed, so a request only looks them up.

`strict` and `omit_parameters`: a function with `strict: true` needs its `properties` and
`required`, so `omit_parameters` must drop `strict` too, and the model's arguments are no
longer constrained. The loader refuses a policy that would do that to a strict training
function unless it says so with `tools.slim.drop_strict: true`. Request tools outside the
training set are slimmed per request and lose `strict` the same way (reported as
`tool_slimmed`).

Choices the design leaves open, made here:
- `tools.slim.default` is `keep`; the levels are not cumulative (`omit_parameters` keeps
  the descriptions that are not inside `properties`).
- `tools.unknown` also applies in `passthrough` mode: trained functions pass as sent,
  the others are dropped or refused. Anything but `pass` needs `training_tools`.
- Only function tools are the policy's business; other kinds (`custom`) pass as sent.
- `system_prompt.prepend` inserts the text as its own message, before the first system
  (or developer) message and with its role, unless that message already starts with it.
- `legacy_functions: translate | pass`; the built-in `passthrough` policy passes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property
from types import MappingProxyType
from typing import Annotated, Any, Literal

import orjson
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from proxy import jsonutil
from proxy.errors import ConfigError
from proxy.rewrite.capabilities import OPENAI, Capabilities
from proxy.rewrite.memo import RewriteMemo, new_rewrite_memo
from proxy.rewrite.schema import SchemaTooDeep, SlimLevel, flat_function_tool, slim_tool

MAX_LOGIT_BIAS_TOKENS = 1024  # OpenAI refuses more


def _policy_error(message: str) -> PydanticCustomError:
    # A custom error type keeps pydantic from prefixing the message with "Value error, ".
    return PydanticCustomError("policy", message)


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SlimSpec(_Spec):
    default: SlimLevel = "keep"
    functions: dict[str, SlimLevel] = Field(default_factory=dict)
    # The acknowledgement that omit_parameters may drop `strict` from training functions.
    drop_strict: StrictBool = False

    def level(self, function: str) -> SlimLevel:
        return self.functions.get(function, self.default)


# One model keyed on `mode` rather than a union per mode: a union would put the mode's name
# into every error path (`tools.slim.slim.default`), which reads worse in `check` output.
class ToolsSpec(_Spec):
    mode: Literal["passthrough", "identical", "slim"] = "passthrough"
    slim: SlimSpec | None = None
    unknown: Literal["pass", "drop", "reject"] = "pass"

    @field_validator("slim")
    @classmethod
    def _slim_needs_slim_mode(cls, slim: SlimSpec | None, info: ValidationInfo) -> SlimSpec | None:
        mode = info.data.get("mode")
        if slim is not None and mode is not None and mode != "slim":
            raise _policy_error(f"slim levels are only used with tools.mode: slim (mode is {mode})")
        return slim

    @property
    def slim_levels(self) -> SlimSpec:
        return self.slim or SlimSpec()


class SystemPromptSpec(_Spec):
    mode: Literal["keep", "replace", "prepend", "if_missing"] = "keep"
    text: str | None = Field(default=None, validate_default=True)

    @field_validator("text")
    @classmethod
    def _text_matches_mode(cls, text: str | None, info: ValidationInfo) -> str | None:
        mode = info.data.get("mode")
        if mode == "keep" and text is not None:
            raise _policy_error("text is only used with mode replace, prepend or if_missing")
        if mode not in (None, "keep") and not text:
            raise _policy_error(f"text is required with mode: {mode}")
        return text


BiasValue = Annotated[int, Field(strict=True, ge=-100, le=100)]


class LogitBiasSpec(_Spec):
    tokens: dict[str, BiasValue] = Field(default_factory=dict)
    # Texts that are one token each of the serving model's tokenizer, resolved to token ids
    # through the upstream's tokenizer when the config loads (token ids differ per model).
    text: dict[str, BiasValue] = Field(default_factory=dict)
    when: Literal["tools_auto", "always"] = "tools_auto"
    sampling: Literal["drop", "skip_bias", "keep"] = "keep"

    @model_validator(mode="after")
    def _something_to_bias(self) -> LogitBiasSpec:
        if not self.tokens and not self.text:
            raise _policy_error("at least one of tokens and text is required")
        count = len(self.tokens) + len(self.text)
        if count > MAX_LOGIT_BIAS_TOKENS:
            raise _policy_error(f"at most {MAX_LOGIT_BIAS_TOKENS} tokens are allowed, got {count}")
        return self

    @field_validator("tokens", mode="before")
    @classmethod
    def _integer_keys_as_strings(cls, tokens: Any) -> Any:
        # YAML reads `{316: 5}` with an integer key; OpenAI wants the token id as a string.
        if not isinstance(tokens, dict):
            return tokens
        return {
            str(key) if isinstance(key, int) and not isinstance(key, bool) else key: value
            for key, value in tokens.items()
        }

    @field_validator("tokens")
    @classmethod
    def _token_ids(cls, tokens: dict[str, int]) -> dict[str, int]:
        bad = [key for key in tokens if not (key.isascii() and key.isdigit())]
        if bad:
            raise _policy_error(f"token ids are strings of digits, got {bad[0]!r}")
        return tokens


class ToolChoiceSpec(_Spec):
    on_user_turn: Literal["required"] | None = None


class PolicySpec(_Spec):
    """A policy file as written; see the product design for each key and its default."""

    training_tools: str | None = None
    tools: ToolsSpec = ToolsSpec()
    system_prompt: SystemPromptSpec = SystemPromptSpec()
    parallel_tool_calls: StrictBool | None = None
    legacy_functions: Literal["translate", "pass"] = "translate"
    logit_bias: LogitBiasSpec | None = None
    tool_choice: ToolChoiceSpec = ToolChoiceSpec()
    validate_arguments: StrictBool = True


@dataclass(frozen=True)
class SlimmedTool:
    """A training function prepared for slim mode."""

    definition: dict[str, Any] | None  # None: the level omits the function
    bytes_removed: int  # orjson bytes of the training definition minus this one's


@dataclass(frozen=True)
class Policy:
    """A loaded policy: the spec, the training tools and what was prepared from them.

    The dicts inside are shared with every rewritten request: never mutate them.
    """

    name: str
    spec: PolicySpec
    # function name -> the full training tool, as loaded (key order kept), in file order
    training_tools: Mapping[str, dict[str, Any]] = field(
        default_factory=lambda: MappingProxyType({})
    )
    # function name -> its slimmed definition; filled in slim mode only
    slimmed_tools: Mapping[str, SlimmedTool] = field(default_factory=lambda: MappingProxyType({}))
    # The same two in the Responses API's flat tool shape, converted once at load.
    flat_training_tools: Mapping[str, dict[str, Any]] = field(
        default_factory=lambda: MappingProxyType({})
    )
    flat_slimmed_tools: Mapping[str, SlimmedTool] = field(
        default_factory=lambda: MappingProxyType({})
    )
    # What the upstream that serves this policy honours (`Policy.serving_on`); OpenAI's API
    # by default. The same policy on two kinds of server is two `Policy` objects.
    capabilities: Capabilities = OPENAI
    # The token ids of `logit_bias.text` for the serving model, once its upstream's tokenizer
    # said them (`Policy.with_text_bias`); None until then. Unused without `text`.
    text_bias: Mapping[str, int] | None = None
    # The tools step's outcomes for shared tool lists: a cache of a pure function, filled by
    # the rewrite. Not an init field: a policy made with `dataclasses.replace` starts empty.
    tool_rewrites: RewriteMemo = field(
        default_factory=new_rewrite_memo, init=False, compare=False, repr=False
    )

    def serving_on(self, capabilities: Capabilities) -> Policy:
        """This policy as served by an upstream with `capabilities` (itself when they match)."""
        if capabilities == self.capabilities:
            return self
        return replace(self, capabilities=capabilities)

    def with_text_bias(self, tokens: Mapping[str, int]) -> Policy:
        """This policy with its text bias resolved to token ids (one model's)."""
        return replace(self, text_bias=MappingProxyType(dict(tokens)))

    @cached_property
    def bias_tokens(self) -> Mapping[str, int] | None:
        """The whole bias by token id: `logit_bias.tokens` and the resolved texts; None while
        texts wait to be resolved (no bias is applied until then)."""
        bias = self.spec.logit_bias
        if bias is None:
            return MappingProxyType({})
        if not bias.text:
            return bias.tokens
        if self.text_bias is None:
            return None
        return MappingProxyType({**self.text_bias, **bias.tokens})

    @cached_property
    def function_names(self) -> frozenset[str]:
        """The training functions: the bounded set of function names metrics may label."""
        return frozenset(self.training_tools)

    @cached_property
    def training_schema_keys(self) -> Mapping[str, bytes]:
        """Each training function's full schema as the argument check keys it (sorted keys)."""
        keys = {}
        for function in self.training_tools:
            schema = self.full_schema(function)
            keys[function] = orjson.dumps(schema, option=orjson.OPT_SORT_KEYS)
        return MappingProxyType(keys)

    def full_schema(self, function: str) -> dict[str, Any] | None:
        """The training parameters schema of `function`; None when it is not a training function.

        A training function without `parameters` takes none, as OpenAI reads it.
        """
        tool = self.training_tools.get(function)
        if tool is None:
            return None
        parameters = tool["function"].get("parameters")
        return parameters if parameters is not None else {"type": "object", "properties": {}}


PASSTHROUGH = Policy(name="passthrough", spec=PolicySpec(legacy_functions="pass"))


def build_policy(
    name: str,
    spec: PolicySpec,
    training_tools: Sequence[dict[str, Any]] = (),
    *,
    file: str = "<policy>",
) -> Policy:
    """Link a spec with its (already checked) training tools and prepare what the rewrite needs.

    Raises ConfigError with `file: field.path: message` lines for every inconsistency.
    """
    by_name = {tool["function"]["name"]: tool for tool in training_tools}
    errors = _link_errors(spec, by_name)
    if errors:
        raise ConfigError([f"{file}: {line}" for line in errors])
    flat_training = {function: flat_function_tool(tool) for function, tool in by_name.items()}
    try:
        slimmed = _prepare_slim(spec, by_name) if spec.tools.mode == "slim" else {}
    except SchemaTooDeep as exc:
        raise ConfigError([f"{file}: training_tools: {exc}"]) from exc
    return Policy(
        name=name,
        spec=spec,
        training_tools=MappingProxyType(by_name),
        slimmed_tools=MappingProxyType(slimmed),
        flat_training_tools=MappingProxyType(flat_training),
        flat_slimmed_tools=MappingProxyType(_flat_slimmed(slimmed, by_name, flat_training)),
    )


def _flat_slimmed(
    slimmed: Mapping[str, SlimmedTool],
    training_by_name: Mapping[str, dict[str, Any]],
    flat_training: Mapping[str, dict[str, Any]],
) -> dict[str, SlimmedTool]:
    """The slimmed definitions in the flat shape, their bytes removed measured in it."""
    flat = {}
    for function, prepared in slimmed.items():
        definition = prepared.definition
        if definition is training_by_name[function]:  # kept as trained: the same object,
            flat[function] = SlimmedTool(flat_training[function], 0)  # which says identical
            continue
        flat_definition = flat_function_tool(definition) if definition is not None else None
        removed = _size(flat_training[function]) - (
            _size(flat_definition) if flat_definition is not None else 0
        )
        flat[function] = SlimmedTool(definition=flat_definition, bytes_removed=removed)
    return flat


def _link_errors(spec: PolicySpec, training: Mapping[str, dict[str, Any]]) -> list[str]:
    """`field.path: message` for every key that does not fit the training tools."""
    tools = spec.tools
    errors = []
    if not training and tools.mode == "identical":
        errors.append("tools.mode: identical needs training_tools (the trained definitions)")
    if not training and tools.unknown != "pass":
        errors.append(
            f"tools.unknown: {tools.unknown} needs training_tools to tell which functions are known"
        )
    if training:
        errors.extend(
            f"tools.slim.functions.{function}: not a function of training_tools "
            f"({spec.training_tools})"
            for function in tools.slim_levels.functions
            if function not in training
        )
    if tools.mode == "slim" and not tools.slim_levels.drop_strict:
        errors.extend(_strict_errors(tools.slim_levels, training))
    return errors


def _strict_errors(slim: SlimSpec, training: Mapping[str, dict[str, Any]]) -> list[str]:
    errors = []
    for function, tool in training.items():
        if slim.level(function) != "omit_parameters" or tool["function"].get("strict") is not True:
            continue
        where = f"functions.{function}" if function in slim.functions else "default"
        errors.append(
            f"tools.slim.{where}: omit_parameters would drop `strict: true` from {function} "
            "(strict needs the properties); set tools.slim.drop_strict: true to accept that, "
            "or choose another level for it"
        )
    return errors


def _prepare_slim(
    spec: PolicySpec, training: Mapping[str, dict[str, Any]]
) -> dict[str, SlimmedTool]:
    prepared = {}
    for function, tool in training.items():
        definition = slim_tool(tool, spec.tools.slim_levels.level(function))
        removed = _size(tool) - (_size(definition) if definition is not None else 0)
        prepared[function] = SlimmedTool(definition=definition, bytes_removed=removed)
    return prepared


def _size(value: Any) -> int:
    return len(jsonutil.dumps(value))
