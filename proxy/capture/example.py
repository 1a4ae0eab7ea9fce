"""One captured exchange as one chat fine-tuning example (pure: dicts and bytes in, no I/O).

- `messages`: the conversation as the model saw it (after the serving policy's rewrite; a
  Responses request in its chat form, as the bridge writes it), each message keeping only
  the keys a training file takes, and the answer as the last assistant message. Earlier
  assistant messages get `weight: 0`: the proxy did not see them made (another variant, or
  the application, may have written them), so only the captured answer is trained.
- `tools` and `parallel_tool_calls`: as the capture's policy (the student's) serves the
  client's request, so that training and serving match byte for byte; without a capture
  policy, as the model was sent them.
- `redact` patterns replace each match in every string of the conversation with `[REDACTED]`,
  and in the tools when they are the ones sent (the client's, maybe); the capture policy's
  tools stay as its training definitions are.
- The example must pass `training check`'s rules; one that does not is no example.
"""

from __future__ import annotations

import re
from typing import Any

from proxy import jsonutil
from proxy.bridge import responses_to_chat
from proxy.capture.pending import PendingCapture
from proxy.errors import ProxyError
from proxy.rewrite import rewrite
from proxy.training.check import check_example
from proxy.training.rules import MESSAGE_KEYS, Context

REDACTED = "[REDACTED]"
# Answers that are whole: a cut or filtered answer is no example to learn from.
_FINISHED = frozenset({"stop", "tool_calls"})
MAX_DETAIL_CHARS = 200


class Uncapturable(Exception):
    """Why an exchange makes no example: a short reason (a label) and a detail for the log."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.detail = detail[:MAX_DETAIL_CHARS]


# The student's (tools, parallel_tool_calls), from `student_tools`; None: as the model was sent.
StudentTools = tuple[Any, Any] | None


def example_line(pending: PendingCapture, context: Context, student: StudentTools = None) -> bytes:
    """The exchange's JSONL line (newline included); raises `Uncapturable`."""
    example = build_example(pending, student)
    try:
        line = jsonutil.dumps(example) + b"\n"
    except TypeError as exc:  # orjson reads 1024 levels of nesting and writes 254
        raise Uncapturable("unwritable", "the exchange nests deeper than a line holds") from exc
    problems = [
        finding.message
        for finding in check_example(example, context, size=len(line))
        if finding.severity == "error"
    ]
    if problems:
        raise Uncapturable("training_check", problems[0])
    return line


def build_example(pending: PendingCapture, student: StudentTools = None) -> dict[str, Any]:
    """The example, redacted (not yet checked); raises `Uncapturable`."""
    outgoing = pending.outgoing
    if outgoing is None:
        raise Uncapturable("no_answer")
    served = _as_chat(outgoing.body) if outgoing.api == "responses" else outgoing.body
    messages = served.get("messages")
    if not isinstance(messages, list) or not messages:
        raise Uncapturable("no_messages")
    if outgoing.api == "responses":
        answer = answer_from_response(_response(pending))
    elif pending.streamed:
        answer = answer_from_chunks(pending.answer)
    else:
        answer = answer_from_completion(_json_object(b"".join(pending.answer)))
    patterns = pending.spec.redact
    conversation = [*map(training_message, messages), answer]
    example: dict[str, Any] = {"messages": redact(conversation, patterns)}
    tools, parallel = student if student is not None else _sent_tools(served)
    if parallel is None:
        parallel = served.get("parallel_tool_calls")
    if tools:
        # The capture policy's tools are the operator's training definitions, kept byte for
        # byte; the tools as sent may be the client's own, and are redacted like the rest.
        example["tools"] = tools if student is not None else redact(tools, patterns)
        if isinstance(parallel, bool):
            example["parallel_tool_calls"] = parallel
    return example


def _as_chat(body: dict[str, Any]) -> dict[str, Any]:
    """A Responses body as the chat request that asks the same (the bridge's translation)."""
    try:
        return responses_to_chat(body)
    except ProxyError as exc:
        raise Uncapturable("not_chat", exc.message) from None


def _sent_tools(served: dict[str, Any]) -> tuple[Any, Any]:
    return served.get("tools"), served.get("parallel_tool_calls")


def student_tools(pending: PendingCapture) -> StudentTools:
    """The tools and `parallel_tool_calls` the capture's policy serves the client's request
    (None without a capture policy); raises `Uncapturable`.

    Apart from the rest of the example: the rewrite's memos are the request path's, so this
    runs on its thread, and the rest may run on another."""
    policy = pending.spec.policy
    if policy is None:
        return None
    body = pending.client_body
    client = _as_chat(body) if pending.client_api == "responses" else body
    try:
        student = rewrite(client, policy).body
    except ProxyError as exc:
        raise Uncapturable("policy_refused", exc.message) from None
    return student.get("tools"), student.get("parallel_tool_calls")


def training_message(message: Any) -> Any:
    """A message of the conversation as a training file takes it: only the keys its role
    has there (an SDK's `message.model_dump()` adds `annotations`, `audio`, nulls), a tool's
    text parts joined, and an earlier answer not trained (`weight: 0`)."""
    if not isinstance(message, dict):
        return message
    role = message.get("role")
    allowed = MESSAGE_KEYS.get(role) if isinstance(role, str) else None
    if allowed is None:
        return message
    kept = {key: value for key, value in message.items() if key in allowed and value is not None}
    if kept.get("tool_calls") == []:
        del kept["tool_calls"]
    if role == "tool" and isinstance(kept.get("content"), list):
        kept["content"] = _joined_text(kept["content"])
    if role == "assistant":
        kept["weight"] = 0
    return kept


def _joined_text(parts: list[Any]) -> Any:
    texts = [part.get("text") for part in parts if isinstance(part, dict)]
    if len(texts) == len(parts) and all(isinstance(text, str) for text in texts):
        return "".join(str(text) for text in texts)
    return parts  # not text alone: left for the check to refuse


# ----------------------------------------------------------------------------- the answer


def answer_message(text: str, calls: list[dict[str, Any]], finish: Any) -> dict[str, Any]:
    """The assistant message an answer makes, or `Uncapturable` when it is not whole."""
    if finish not in _FINISHED:
        raise Uncapturable("unfinished", f"finish_reason {finish!r}")
    message: dict[str, Any] = {"role": "assistant"}
    if text:
        message["content"] = text
    if calls:
        message["tool_calls"] = calls
    if len(message) == 1:
        raise Uncapturable("empty_answer")
    return message


def answer_from_completion(completion: dict[str, Any]) -> dict[str, Any]:
    """A non-streamed `chat.completion`'s one choice."""
    choice = _only_choice(completion.get("choices"))
    message = choice.get("message")
    if not isinstance(message, dict):
        raise Uncapturable("invalid_answer", "a choice without a message")
    if message.get("refusal"):
        raise Uncapturable("refusal")
    calls = message.get("tool_calls") or []
    if not isinstance(calls, list):
        raise Uncapturable("invalid_answer", "tool_calls is not a list")
    text = message.get("content")
    return answer_message(text if isinstance(text, str) else "", calls, choice.get("finish_reason"))


def _only_choice(choices: Any) -> dict[str, Any]:
    if not isinstance(choices, list) or len(choices) != 1 or not isinstance(choices[0], dict):
        raise Uncapturable("not_one_choice")
    return choices[0]


class _StreamedAnswer:
    """A chat stream's one choice put back together: its text, its calls by index."""

    def __init__(self) -> None:
        self.text: list[str] = []
        self.calls: dict[Any, dict[str, Any]] = {}
        self.finish: Any = None

    def feed(self, chunk: dict[str, Any]) -> None:
        choices = chunk.get("choices")
        if not isinstance(choices, list):
            return
        for choice in choices:
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                raise Uncapturable("not_one_choice")
            self._feed_choice(choice)

    def _feed_choice(self, choice: dict[str, Any]) -> None:
        if choice.get("finish_reason") is not None:
            self.finish = choice["finish_reason"]
        delta = choice.get("delta")
        if not isinstance(delta, dict):
            return
        if delta.get("refusal"):
            raise Uncapturable("refusal")
        if isinstance(delta.get("content"), str):
            self.text.append(delta["content"])
        for call in delta.get("tool_calls") or ():
            if isinstance(call, dict):
                self._feed_call(call)

    def _feed_call(self, delta: dict[str, Any]) -> None:
        index = delta.get("index", 0)
        if not isinstance(index, int):
            raise Uncapturable("invalid_answer", "a tool-call delta without an index")
        call = self.calls.setdefault(
            index, {"id": "", "type": "function", "function": {"name": "", "arguments": ""}}
        )
        function = delta.get("function")
        if isinstance(delta.get("id"), str) and not call["id"]:
            call["id"] = delta["id"]
        if isinstance(function, dict):
            if isinstance(function.get("name"), str) and not call["function"]["name"]:
                call["function"]["name"] = function["name"]
            if isinstance(function.get("arguments"), str):
                call["function"]["arguments"] += function["arguments"]

    def message(self) -> dict[str, Any]:
        calls = [self.calls[index] for index in sorted(self.calls)]
        return answer_message("".join(self.text), calls, self.finish)


def answer_from_chunks(chunks: list[bytes]) -> dict[str, Any]:
    """A chat stream's answer from its chunks' data, as the client's SDK puts it together."""
    answer = _StreamedAnswer()
    for data in chunks:
        answer.feed(_json_object(data))
    return answer.message()


def _response(pending: PendingCapture) -> dict[str, Any]:
    """The Response: the whole body, or the `response` of the stream's final event."""
    if not pending.streamed:
        return _json_object(b"".join(pending.answer))
    if not pending.answer:
        raise Uncapturable("no_answer")
    event = _json_object(pending.answer[-1])
    response = event.get("response")
    if not isinstance(response, dict):
        raise Uncapturable("invalid_answer", "a final event without its response")
    return response


def answer_from_response(response: dict[str, Any]) -> dict[str, Any]:
    """A Response's output as one assistant message: its text, its function calls."""
    if response.get("status") != "completed":
        raise Uncapturable("unfinished", f"status {response.get('status')!r}")
    text: list[str] = []
    calls: list[dict[str, Any]] = []
    output = response.get("output")
    for item in output if isinstance(output, list) else ():
        kind = item.get("type") if isinstance(item, dict) else None
        if kind == "message":
            text.extend(_output_text(item))
        elif kind == "function_call":
            function = {"name": item.get("name"), "arguments": item.get("arguments")}
            calls.append({"id": item.get("call_id"), "type": "function", "function": function})
        elif kind != "reasoning":  # a model's reasoning has no place in a chat example
            raise Uncapturable("not_chat", f"an output item of type {kind!r}")
    return answer_message("".join(text), calls, "tool_calls" if calls else "stop")


def _output_text(item: dict[str, Any]) -> list[str]:
    texts = []
    for part in item.get("content") or ():
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "refusal":
            raise Uncapturable("refusal")
        if kind == "output_text" and isinstance(part.get("text"), str):
            texts.append(part["text"])
    return texts


def _json_object(data: bytes) -> dict[str, Any]:
    try:
        value = jsonutil.loads(data)
    except jsonutil.JSONDecodeError:
        raise Uncapturable("invalid_answer", "not JSON") from None
    if not isinstance(value, dict):
        raise Uncapturable("invalid_answer", "not a JSON object")
    return value


# ----------------------------------------------------------------------------- redaction


def redact(value: Any, patterns: tuple[re.Pattern[str], ...]) -> Any:
    """`value` with each match of `patterns` in every string replaced (a call's arguments are
    one string, their keys included; the example's own keys are its structure)."""
    if not patterns:
        return value
    if isinstance(value, str):
        for pattern in patterns:
            value = pattern.sub(REDACTED, value)
        return value
    if isinstance(value, dict):
        return {key: redact(item, patterns) for key, item in value.items()}
    if isinstance(value, list):
        return [redact(item, patterns) for item in value]
    return value
