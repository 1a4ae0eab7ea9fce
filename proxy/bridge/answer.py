"""The bridge's answer translation: a `chat.completion` → the Response object, and the
ids of a Response (see the package docstring).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from proxy.bridge.types import Body
from proxy.errors import UpstreamUnreachable


@dataclass(frozen=True)
class ResponseIds:
    """The identity of one Response: its ids, derived from `seed`, and its creation time.

    Both are fixed by the caller (the proxy's request id and its clock) so that a translation
    is a pure function of its inputs. Output items are named by their output index, unique
    within the response as the seed is across responses.
    """

    seed: str
    created_at: int

    @classmethod
    def for_request(cls, request_id: str, created_at: int) -> ResponseIds:
        return cls(request_id.removeprefix("req_"), created_at)

    @property
    def response(self) -> str:
        return f"resp_{self.seed}"

    def message(self, output_index: int) -> str:
        return f"msg_{self.seed}_{output_index}"

    def function_call(self, output_index: int) -> str:
        return f"fc_{self.seed}_{output_index}"

    def call(self, output_index: int) -> str:
        """A `call_id` for an upstream call that came without an id."""
        return f"call_{self.seed}_{output_index}"


INCOMPLETE_REASONS: dict[Any, str] = {
    "length": "max_output_tokens",
    "content_filter": "content_filter",
}


def chat_to_response(completion: Body, request: Body, ids: ResponseIds) -> Body:
    """The Response object for a `chat.completion` answering `request` (the Responses request,
    for the fields a Response echoes). Raises `UpstreamUnreachable` for an answer that is not
    a completion."""
    choice = _first_choice(completion)
    message = choice.get("message")
    if not isinstance(message, dict):
        raise _not_an_answer("a choice without a message")
    output = _message_items(message, ids)
    for call in message.get("tool_calls") or ():
        output.append(_completed_call(call, len(output), ids))
    reason = INCOMPLETE_REASONS.get(choice.get("finish_reason"))
    if reason is not None and output:
        output[-1]["status"] = "incomplete"  # the item being written when it stopped
    return response_object(
        request,
        ids,
        status="completed" if reason is None else "incomplete",
        output=output,
        usage=response_usage(completion.get("usage")),
        model=completion.get("model") or request.get("model"),
        incomplete_reason=reason,
    )


def _first_choice(completion: Body) -> Body:
    # Only one choice: a Responses request cannot ask for `n`.
    choices = completion.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise _not_an_answer("no choices")
    return choices[0]


def _message_items(message: Body, ids: ResponseIds) -> list[Body]:
    content = []
    if isinstance(message.get("content"), str) and message["content"]:
        content.append(text_content(message["content"]))
    if isinstance(message.get("refusal"), str) and message["refusal"]:
        content.append(refusal_content(message["refusal"]))
    if not content:
        return []
    return [message_item(ids.message(0), "completed", content)]


def _completed_call(call: Any, output_index: int, ids: ResponseIds) -> Body:
    function = call.get("function") if isinstance(call, dict) else None
    if not isinstance(function, dict) or not isinstance(function.get("name"), str):
        raise _not_an_answer("a tool call without a function name")
    return call_item(
        ids.function_call(output_index),
        "completed",
        call.get("id") or ids.call(output_index),
        function["name"],
        function.get("arguments") or "",
    )


def _not_an_answer(what: str) -> UpstreamUnreachable:
    return UpstreamUnreachable(
        f"The upstream answered with {what}, not a chat completion.", reason="invalid_response"
    )


def message_item(item_id: str, status: str, content: list[Any]) -> Body:
    return {
        "id": item_id,
        "type": "message",
        "status": status,
        "content": content,
        "role": "assistant",
    }


def call_item(item_id: str, status: str, call_id: str, name: str, arguments: Any) -> Body:
    return {
        "id": item_id,
        "type": "function_call",
        "status": status,
        "arguments": arguments,
        "call_id": call_id,
        "name": name,
    }


def text_content(text: Any) -> Body:
    return {"type": "output_text", "text": text, "annotations": []}


def refusal_content(refusal: Any) -> Body:
    return {"type": "refusal", "refusal": refusal}


def response_usage(usage: Any) -> Body | None:
    """A chat `usage` in the Response's terms; None when the upstream gave none.

    `cache_write_tokens` is required by the `openai` types; chat reports it rarely, and 0
    stands for "not reported" as it does for the other details.
    """
    if not isinstance(usage, dict):
        return None
    prompt = _count(usage.get("prompt_tokens"))
    completion = _count(usage.get("completion_tokens"))
    prompt_details = usage.get("prompt_tokens_details") or {}
    completion_details = usage.get("completion_tokens_details") or {}
    return {
        "input_tokens": prompt,
        "input_tokens_details": {
            "cached_tokens": _count(prompt_details.get("cached_tokens")),
            "cache_write_tokens": _count(prompt_details.get("cache_write_tokens")),
        },
        "output_tokens": completion,
        "output_tokens_details": {
            "reasoning_tokens": _count(completion_details.get("reasoning_tokens"))
        },
        "total_tokens": _count(usage.get("total_tokens")) or prompt + completion,
    }


def _count(value: Any) -> int:
    return value if isinstance(value, int) else 0


def response_object(
    request: Body,
    ids: ResponseIds,
    *,
    status: str,
    output: list[Any],
    usage: Body | None,
    model: Any,
    incomplete_reason: str | None = None,
    tools: Any = None,
) -> Body:
    """A Response: what the answer says, and the request fields the `openai` types require or
    OpenAI echoes. `tools` replaces the request's list (the stream passes it pre-written)."""
    return {
        "id": ids.response,
        "object": "response",
        "created_at": ids.created_at,
        "status": status,
        "background": False,
        "error": None,
        "incomplete_details": None if incomplete_reason is None else {"reason": incomplete_reason},
        "instructions": request.get("instructions"),
        "max_output_tokens": request.get("max_output_tokens"),
        "model": model,
        "output": output,
        "parallel_tool_calls": given(request, "parallel_tool_calls", True),
        "previous_response_id": None,
        "reasoning": request.get("reasoning"),
        "temperature": request.get("temperature"),
        "text": given(request, "text", {"format": {"type": "text"}}),
        "tool_choice": given(request, "tool_choice", "auto"),
        "tools": tools if tools is not None else given(request, "tools", []),
        "top_p": request.get("top_p"),
        "truncation": "disabled",
        "usage": usage,
        "user": request.get("user"),
        "metadata": given(request, "metadata", {}),
    }


def given(request: Body, key: str, default: Any) -> Any:
    value = request.get(key)
    return default if value is None else value
