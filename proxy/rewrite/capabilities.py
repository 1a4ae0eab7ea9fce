"""What an upstream server does with a policy's levers, and what each known server does.

A fine-tune served by llama.cpp's `llama-server` or Ollama does not honour every lever
OpenAI's API has: a named `tool_choice` is treated as `auto`, `logit_bias` is ignored, and
the server says nothing. The rewrite takes the upstream's capabilities as an input, like the
policy, and emulates a missing lever where it can or removes it, counting either
(`rewrite.capability`). The table is `../shared`'s reference of open servers' tool calling.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Literal

Server = Literal["openai", "azure", "vllm", "sglang", "llama.cpp", "ollama", "other", "mock"]


@dataclass(frozen=True)
class Capabilities:
    """The levers an upstream honours. Every default is OpenAI's API's."""

    # `tool_choice: {type: function, ...}` (and `allowed_tools`) makes the model call it.
    named_tool_choice: bool = True
    # `tool_choice: required` makes the model call some tool.
    tool_choice_required: bool = True
    logit_bias: bool = True
    parallel_tool_calls: bool = True  # the field is accepted and honoured
    strict: bool = True  # a function's `strict: true` is accepted
    stream_usage: bool = True  # `stream_options.include_usage` gives a usage chunk
    tokenize: bool = False  # `POST /tokenize` turns text into the model's token ids

    def lacking(self) -> list[str]:
        """The levers it does not honour, by name."""
        return [
            item.name
            for item in fields(self)
            if item.name != "tokenize" and not getattr(self, item.name)
        ]

    def with_overrides(self, **overrides: bool | None) -> Capabilities:
        """These capabilities with the ones given (not None) replaced."""
        return replace(
            self, **{name: value for name, value in overrides.items() if value is not None}
        )


OPENAI = Capabilities()
# Sources: vLLM and SGLang tool calling docs, llama.cpp issue #26535, Ollama's OpenAI
# compatibility page (see ../shared/reference/responses-api.md, "Open servers").
SERVER_CAPABILITIES: dict[str, Capabilities] = {
    "openai": OPENAI,
    "azure": OPENAI,
    "vllm": Capabilities(tokenize=True),
    "sglang": Capabilities(tokenize=True),
    # A named or allowed-tools choice is silently `auto`; `required` works.
    "llama.cpp": Capabilities(named_tool_choice=False, tokenize=True),
    # No `tool_choice` at all, no `logit_bias`, no `parallel_tool_calls` field.
    "ollama": Capabilities(
        named_tool_choice=False,
        tool_choice_required=False,
        logit_bias=False,
        parallel_tool_calls=False,
        strict=False,
    ),
    "other": OPENAI,
    # The built-in fake model honours every lever (and has no tokenizer).
    "mock": OPENAI,
}
