"""The rules about calls: their shape, their arguments, parallel calls, and their answers.

A call is trained as the assistant wrote it, so its `arguments` must be what the API would
return: a JSON *string* encoding an object that fits the function's schema. Each call is
answered by a `tool` message right after the assistant message that makes it, with the
call's id as `tool_call_id`; only the calls of the example's last message may stay
unanswered (the example then teaches the call itself, as in the fine-tuning guide's own
example).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from typing import Any

from proxy import jsonutil
from proxy.rewrite.fields import json_type
from proxy.training.example import Call, Example
from proxy.training.findings import Finding, error
from proxy.training.rules import Context, where

NEW_CALL_IDS = "`tuned-proxy training rewrite --new-call-ids` replaces shared and placeholder ids"


def call_shapes(example: Example, context: Context) -> Iterator[Finding]:
    """`tool_calls` a non-empty array of `{id, type: function, function: {name, arguments}}`."""
    for index, role in enumerate(example.roles):
        if role != "assistant":
            continue
        tool_calls = example.messages[index].get("tool_calls")
        if tool_calls is not None and not isinstance(tool_calls, list):
            yield error(
                f"{where(example, index)}: tool_calls is {json_type(tool_calls)}, not an array",
                "make tool_calls a list of calls",
            )
        elif tool_calls == []:
            yield error(
                f"{where(example, index)}: tool_calls is empty", "remove it or add the calls"
            )
    for call in example.calls:
        if not _well_formed(call):
            yield from _call_shape(call)


def _well_formed(call: Call) -> bool:
    """The common case, decided without building any finding."""
    if call.name is None:
        return False
    return call.legacy or (
        isinstance(call.id, str) and call.id != "" and call.raw.get("type") == "function"
    )


def _call_shape(call: Call) -> Iterator[Finding]:
    if not isinstance(call.raw, dict):
        yield error(f"{call.where} is {json_type(call.raw)}, not an object", _CALL_SHAPE)
        return
    if not call.legacy:
        if not isinstance(call.id, str) or not call.id:
            yield error(
                f"{call.where} has no id",
                "give each call an id, repeated as tool_call_id by the message answering it",
            )
        if call.raw.get("type") != "function":
            yield error(f'{call.where}: type must be "function"', 'add "type": "function"')
    if call.function is None:
        yield error(f"{call.where} has no function object", _CALL_SHAPE)
    elif call.name is None:
        yield error(f"{call.function_path} has no name", "name the function called")


_CALL_SHAPE = 'write it as {"id", "type": "function", "function": {"name", "arguments"}}'


def arguments(example: Example, context: Context) -> Iterator[Finding]:
    """`arguments` a JSON string that parses to an object fitting the function's schema."""
    for call in example.calls:
        function = call.function
        if function is None:
            continue
        parsed, problem = _parsed_arguments(function.get("arguments", _MISSING))
        if problem is not None:
            yield error(f"{call.function_path}.arguments {problem[0]}", problem[1])
            continue
        definition = example.functions.get(call.name) if call.name is not None else None
        if definition is None:
            continue  # not offered: another rule says so
        mismatches = context.schemas.mismatches(parsed, definition)
        if mismatches:
            yield error(
                f"{call.function_path}.arguments do not fit the schema of `{call.name}`: "
                + "; ".join(mismatches),
                f"correct the arguments, or the schema in {example.prefix}tools if the schema is "
                "what is wrong",
            )


_MISSING = object()


def _parsed_arguments(value: Any) -> tuple[Any, tuple[str, str] | None]:
    """The parsed arguments, or what is wrong with them as (problem, fix)."""
    if value is _MISSING:
        return None, ("are missing", 'add the arguments as a JSON string ("{}" for none)')
    if not isinstance(value, str):
        return None, (
            f"is {json_type(value)}, not a JSON string",
            "encode the arguments as a string, e.g. json.dumps(arguments): the API returns "
            "them that way, so the model must learn them that way",
        )
    try:
        parsed = jsonutil.loads(value)
    except jsonutil.JSONDecodeError as exc:
        return None, (
            f"is not valid JSON ({exc.msg} at column {exc.colno})",
            "write the arguments as the JSON encoding of an object",
        )
    if not isinstance(parsed, dict):
        return None, (
            f"encodes {json_type(parsed)}, not an object",
            "arguments are an object of parameter names to values",
        )
    return parsed, None


def offered(example: Example, context: Context) -> Iterator[Finding]:
    """Every function called is defined in the example's `tools` (or legacy `functions`)."""
    for call in example.calls:
        if call.name is None or call.name in example.functions:
            continue
        problem = (
            "which is not in this example's tools"
            if example.functions
            else "but the example offers no tools"
        )
        yield error(
            f"{call.where} calls `{call.name}`, {problem}",
            f"add its definition to {example.prefix}tools, or correct the name",
        )


def parallel_calls(example: Example, context: Context) -> Iterator[Finding]:
    """More than one call in one message needs parallel calls, which are on by default."""
    if example.parallel_tool_calls:
        return
    for index, count in calls_per_message(example).items():
        if count > 1:
            yield error(
                f"{where(example, index)} makes {count} calls in one message while "
                "parallel_tool_calls is false",
                "make one call per assistant message, each answered before the next, "
                "or remove parallel_tool_calls: false",
            )


def calls_per_message(example: Example) -> dict[int, int]:
    """Assistant message index -> how many `tool_calls` it makes (legacy calls not counted)."""
    return {
        index: sum(not call.legacy for call in calls)
        for index, calls in example.calls_by_message.items()
    }


def unique_call_ids(example: Example, context: Context) -> Iterator[Finding]:
    """The calls of one message have distinct ids, or their answers would be ambiguous."""
    for index, calls in example.calls_by_message.items():
        if len(calls) < 2:
            continue
        ids = Counter(call.id for call in calls if isinstance(call.id, str) and call.id)
        for call_id, count in ids.items():
            if count > 1:
                yield error(
                    f"{where(example, index)}: call id `{call_id}` is used by {count} calls",
                    f"give each call its own id; {NEW_CALL_IDS}",
                )


def answers(example: Example, context: Context) -> Iterator[Finding]:
    """Each call answered right after its message, by its id; no answer without a call."""
    last = len(example.messages) - 1
    if _nothing_to_answer(example, last):
        return
    pending = _Pending()
    for index in range(len(example.messages)):
        role = example.roles[index]
        if role == "tool":
            yield from pending.tool_answer(example, index)
        elif role == "function":
            yield from pending.function_answer(example, index)
        else:
            yield from pending.unanswered()
            pending.start(example.calls_by_message.get(index, ()))
    # The calls of the last message may stay unanswered: the example trains the call itself.
    if not (pending.waiting and pending.waiting[0].message == last):
        yield from pending.unanswered()


def _nothing_to_answer(example: Example, last: int) -> bool:
    """No answer, and no call that needs one: the common one-call example, decided cheaply."""
    return (
        "tool" not in example.roles
        and "function" not in example.roles
        and all(index == last for index in example.calls_by_message)
    )


class _Pending:
    """The calls waiting for an answer: those of the latest assistant message."""

    def __init__(self) -> None:
        self.waiting: list[Call] = []
        self.called: set[str] = set()
        self.answered: set[str] = set()

    def start(self, calls: Iterable[Call]) -> None:
        # Calls without a usable id cannot be answered; their shape rule reports them.
        self.waiting = [call for call in calls if call.legacy or isinstance(call.id, str)]
        self.called.update(call.id for call in self.waiting if isinstance(call.id, str))

    def tool_answer(self, example: Example, index: int) -> Iterator[Finding]:
        message = example.message(index) or {}
        call_id = message.get("tool_call_id")
        if not isinstance(call_id, str) or not call_id:
            yield error(
                f"{where(example, index)} has no tool_call_id",
                "set tool_call_id to the id of the call it answers",
            )
            return
        match = next((call for call in self.waiting if call.id == call_id), None)
        if match is not None:
            self.waiting.remove(match)
            self.answered.add(call_id)
            return
        yield error(f"{where(example, index)} {self._orphan(call_id)}", _ANSWER_FIX)

    def _orphan(self, call_id: str) -> str:
        if call_id in self.answered:
            return f"answers call `{call_id}` again: it is already answered"
        if call_id in self.called:
            return (
                f"answers call `{call_id}` of an earlier turn, not one of the assistant message "
                "right before it"
            )
        return f"answers call `{call_id}`, but no call has that id"

    def function_answer(self, example: Example, index: int) -> Iterator[Finding]:
        message = example.message(index) or {}
        name = message.get("name")
        match = next((call for call in self.waiting if call.legacy), None)
        if match is None:
            yield error(
                f"{where(example, index)} answers a function_call, but the message before "
                "it makes none",
                "a function message must follow the assistant message with function_call",
            )
            return
        self.waiting.remove(match)
        if not isinstance(name, str):
            yield error(f"{where(example, index)} has no name", f"set name to `{match.name}`")
        elif name != match.name:
            yield error(
                f"{where(example, index)} answers `{name}`, but the call before it is "
                f"`{match.name}`",
                "name the function that was called",
            )

    def unanswered(self) -> Iterator[Finding]:
        for call in self.waiting:
            if call.legacy:
                yield error(
                    f"{call.where} (`{call.name}`) is never answered",
                    f"add a function message with name `{call.name}` right after it; only the "
                    "last message's calls may stay unanswered",
                )
            else:
                yield error(
                    f"{call.where} (`{call.name}`, id `{call.id}`) is never answered",
                    f"add a tool message with tool_call_id `{call.id}` right after the "
                    "assistant message; only the last message's calls may stay unanswered",
                )
        self.waiting = []


_ANSWER_FIX = (
    "a tool message follows the assistant message whose call it answers, with tool_call_id "
    "equal to that call's id"
)
