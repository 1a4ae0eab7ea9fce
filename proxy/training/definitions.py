"""The tool definitions of a training file, remembered one per distinct definition.

A model trained on two definitions of one tool has learned neither exactly, and the proxy
can serve only one of them. The bookkeeping is the one of `tools extract` (definitions keyed
by their serialisation in file key order, line numbers capped per definition), so both
commands call the same definition the most used one; memory grows with the number of
distinct definitions, not with the number of examples.
"""

from __future__ import annotations

from collections.abc import Iterator

from proxy.training.example import Example
from proxy.training.extract import (
    DefinitionUse,
    Difference,
    SeenDefinitions,
    canonical_definition,
    describe_difference,
)


class Definitions:
    def __init__(self) -> None:
        self._seen: SeenDefinitions = {}

    def record(self, example: Example, line: int) -> None:
        """Count the example's well-formed function definitions as used on `line`."""
        counted: set[bytes] = set()  # a function listed twice in one example counts once
        for definition in example.definitions:
            key, tool = definition.serialized, definition.tool
            if key is None or tool is None or key in counted:
                continue
            counted.add(key)
            name = definition.function["name"]
            by_key = self._seen.get(name)
            if by_key is None:
                by_key = self._seen[name] = {}
            known = by_key.get(key)
            if known is None:
                known = by_key[key] = DefinitionUse(tool)
            known.used_by(line)

    @property
    def functions(self) -> int:
        return len(self._seen)

    def differences(self) -> Iterator[Difference]:
        """One per function defined in more than one way, naming the lines that differ."""
        for name, definitions in self._seen.items():
            if len(definitions) > 1:
                yield describe_difference(name, definitions, canonical_definition(definitions))
