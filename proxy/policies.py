"""Policies from files: `policies/NAME.yaml` and the training tools file it names, read,
checked and handed to the engine's `build_policy` (`proxy.rewrite.policy`).

Everything here runs at start-up or reload, never per request. Errors come back as
`file: field.path: message` lines (`ConfigError`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    StrictBool,
    StringConstraints,
    TypeAdapter,
    ValidationError,
)

from proxy import jsonutil
from proxy.errors import ConfigError, validation_messages
from proxy.rewrite.fields import json_type
from proxy.rewrite.policy import Policy, PolicySpec, build_policy
from proxy.yamlfile import read_yaml_mapping


class _TrainingFunction(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: Annotated[str, StringConstraints(pattern=r"^[a-zA-Z0-9_-]{1,64}$")]
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: StrictBool | None = None


class _TrainingTool(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["function"]
    function: _TrainingFunction


_TRAINING_TOOLS = TypeAdapter(list[_TrainingTool])


def load_policy(path: Path, name: str) -> Policy:
    """Load, check and prepare the policy file at `path`.

    Raises ConfigError with every problem found, as `file: field.path: message` lines.
    """
    file = str(path)
    spec = _read_spec(path)
    tools: list[dict[str, Any]] = []
    if spec.training_tools is not None:
        tools = _read_training_tools(path, spec.training_tools)
    return build_policy(name, spec, tools, file=file)


def _read_spec(path: Path) -> PolicySpec:
    file = str(path)
    # an empty file is a policy with every default
    raw = read_yaml_mapping(path, "a policy", empty_ok=True)
    try:
        return PolicySpec.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(validation_messages(file, exc)) from exc


def _read_training_tools(policy_path: Path, relative: str) -> list[dict[str, Any]]:
    """The training tools file named by the policy, checked; resolved beside the policy."""
    tools_path = policy_path.parent / relative
    try:
        raw = jsonutil.loads(tools_path.read_bytes())
    except OSError as exc:
        reason = "not found" if isinstance(exc, FileNotFoundError) else exc.strerror or str(exc)
        raise ConfigError([f"{policy_path}: training_tools: {relative}: {reason}"]) from exc
    except jsonutil.JSONDecodeError as exc:
        raise ConfigError([f"{tools_path}: (file): invalid JSON: {exc}"]) from exc
    if not isinstance(raw, list):
        kind = json_type(raw)
        raise ConfigError([f"{tools_path}: (file): a JSON array of tools is expected, not {kind}"])
    try:
        _TRAINING_TOOLS.validate_python(raw)
    except ValidationError as exc:
        raise ConfigError(validation_messages(str(tools_path), exc)) from exc
    names = [tool["function"]["name"] for tool in raw]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ConfigError([f"{tools_path}: {name}: defined more than once" for name in duplicates])
    return list(raw)
