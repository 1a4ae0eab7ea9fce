"""Reading the operator's YAML files (config and policies), with errors as config lines."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from proxy.errors import ConfigError
from proxy.rewrite.fields import json_type


def read_yaml_mapping(path: Path, what: str, *, empty_ok: bool = False) -> dict[str, Any]:
    """The file's top-level mapping, or `ConfigError` with a `file: (file): message` line."""
    file = str(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError([f"{file}: (file): cannot read: {exc.strerror or exc}"]) from exc
    except yaml.YAMLError as exc:
        raise ConfigError([f"{file}: (file): invalid YAML: {yaml_problem(exc)}"]) from exc
    if raw is None and empty_ok:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError([f"{file}: (file): {what} is a mapping of keys, not {json_type(raw)}"])
    return raw


def yaml_problem(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    return f"{problem} at line {mark.line + 1}" if mark is not None else str(problem)
