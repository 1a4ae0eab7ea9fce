"""Reading the operator's YAML files (config and policies), with errors as config lines."""

from __future__ import annotations

from collections.abc import Hashable
from pathlib import Path
from typing import Any

import yaml

from proxy.errors import ConfigError
from proxy.rewrite.fields import json_type


class _StrictLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a key given twice in one mapping: PyYAML keeps the last
    one silently, and two `tools:` blocks would turn one policy into another."""


def _mapping_without_duplicates(loader: _StrictLoader, node: yaml.MappingNode) -> Any:
    first_line: dict[Any, int] = {}
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue  # `<<:` merges another mapping in: not a key of this one
        key = loader.construct_object(key_node, deep=True)
        if not isinstance(key, Hashable):
            continue  # PyYAML refuses it itself, with its own message
        line = key_node.start_mark.line + 1
        if key in first_line:
            raise yaml.constructor.ConstructorError(
                None,
                None,
                f"duplicate key {key!r} (lines {first_line[key]} and {line})",
                None,  # the message names both lines
            )
        first_line[key] = line
    return loader.construct_mapping(node, deep=True)


_StrictLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_without_duplicates
)


def load_yaml(text: str) -> Any:
    """`yaml.safe_load`, but a key given twice in a mapping is an error."""
    return yaml.load(text, Loader=_StrictLoader)


def read_yaml_mapping(path: Path, what: str, *, empty_ok: bool = False) -> dict[str, Any]:
    """The file's top-level mapping, or `ConfigError` with a `file: (file): message` line."""
    file = str(path)
    try:
        raw = load_yaml(path.read_text(encoding="utf-8"))
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
