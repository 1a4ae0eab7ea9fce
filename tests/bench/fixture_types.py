"""The Responses fixtures held to the installed `openai` SDK's types, field by field.

make_fixtures.py calls `check_responses_fixtures` before it writes anything. The SDK's models
accept unknown fields (they keep them as extras) and pydantic ignores a TypedDict's unknown
keys, so validation alone would let a misspelt field through: every model's extras and every
request object's keys are checked as well.
"""

from __future__ import annotations

from typing import Any, get_args

from openai import BaseModel
from openai.types.responses import (
    EasyInputMessageParam,
    FunctionToolParam,
    Response,
    ResponseFunctionToolCallParam,
    ResponseStreamEvent,
)
from openai.types.responses.response_create_params import (
    ResponseCreateParamsNonStreaming,
    ResponseCreateParamsStreaming,
)
from openai.types.responses.response_input_item_param import FunctionCallOutput
from pydantic import TypeAdapter, ValidationError

# The TypedDict of each kind of `input` item the fixtures use.
INPUT_ITEM_TYPES: dict[str, Any] = {
    "message": EasyInputMessageParam,
    "function_call": ResponseFunctionToolCallParam,
    "function_call_output": FunctionCallOutput,
}


def event_models() -> dict[str, type[BaseModel]]:
    """Each stream event's model by its `type`: validating against the one model names the
    field at fault, where the whole union would list every member's complaint."""
    union, *_ = get_args(ResponseStreamEvent)  # Annotated[Union[...], discriminator]
    return {get_args(model.model_fields["type"].annotation)[0]: model for model in get_args(union)}


EVENT_MODELS = event_models()


class FixtureTypeError(SystemExit):
    """A fixture the SDK would not read as written: make_fixtures stops, writing nothing."""


def check_responses_fixtures(
    requests: list[dict[str, Any]], answer: dict[str, Any], events: list[dict[str, Any]]
) -> None:
    problems = [problem for body in requests for problem in request_problems(body)]
    problems += model_problems(Response, answer, "answer")
    for number, event in enumerate(events):
        problems += event_problems(event, f"event {number} ({event.get('type')})")
    if problems:
        raise FixtureTypeError("fixtures not as the openai SDK types them:\n" + "\n".join(problems))


def request_problems(body: dict[str, Any]) -> list[str]:
    where = f"request {body.get('model')}"
    streaming = body.get("stream") is True
    params = ResponseCreateParamsStreaming if streaming else ResponseCreateParamsNonStreaming
    problems = typed_dict_problems(params, body, where)
    for i, item in enumerate(body.get("input") or ()):
        item_type = INPUT_ITEM_TYPES.get(item.get("type"))
        if item_type is None:
            problems.append(f"{where}: input[{i}] has no checked type: {item.get('type')!r}")
        else:
            problems += typed_dict_problems(item_type, item, f"{where}: input[{i}]")
    for i, tool in enumerate(body.get("tools") or ()):
        problems += typed_dict_problems(FunctionToolParam, tool, f"{where}: tools[{i}]")
    return problems


def typed_dict_problems(typed_dict: Any, value: dict[str, Any], where: str) -> list[str]:
    """Unknown and missing keys, then the types pydantic checks (`input` and `tools` are
    lazy iterables to it: their items are checked one by one by the caller)."""
    allowed = typed_dict.__required_keys__ | typed_dict.__optional_keys__
    problems = [f"{where}: unknown key {key!r}" for key in value if key not in allowed]
    problems += [
        f"{where}: missing key {key!r}" for key in typed_dict.__required_keys__ if key not in value
    ]
    try:
        TypeAdapter(typed_dict).validate_python(value)
    except ValidationError as exc:
        problems.append(f"{where}: {exc}")
    return problems


def model_problems(model: type[BaseModel], value: dict[str, Any], where: str) -> list[str]:
    try:
        parsed = model.model_validate(value)
    except ValidationError as exc:
        return [f"{where}: {exc}"]
    return [f"{where}: field {path} is not in the SDK's types" for path in extras(parsed, "")]


def event_problems(event: dict[str, Any], where: str) -> list[str]:
    model = EVENT_MODELS.get(event.get("type"))
    if model is None:
        return [f"{where}: not a type of event the SDK knows"]
    return model_problems(model, event, where)


def extras(value: Any, path: str) -> list[str]:
    """The paths of every field a parsed model kept as an extra: a field its type lacks."""
    if isinstance(value, BaseModel):
        found = [f"{path}.{key}" for key in value.model_extra or {}]
        for name in type(value).model_fields:
            found += extras(getattr(value, name), f"{path}.{name}")
        return found
    if isinstance(value, list):
        return [found for i, item in enumerate(value) for found in extras(item, f"{path}[{i}]")]
    return []
