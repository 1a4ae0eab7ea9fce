"""The JSON codec of the request path (orjson: parse and serialise in a few µs).

`JsonList` is a list that carries its own JSON text: a request's `tools` list is parsed once per
distinct text and shared between requests (see `request.ToolLists`), and a rewritten list is
serialised once per distinct rewrite (see `rewrite.tools`). `dumps` writes such a list's text
as it is instead of serialising it again.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any, NoReturn

import orjson

JSONDecodeError = orjson.JSONDecodeError
# A JSON string, escapes included: what `elements` takes out before it counts.
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')  # unrolled: runs of plain bytes at once


class JsonList(list[Any]):
    """A list whose JSON text is `json`; shared between requests, so it refuses to change.

    Its items are shared too: like everything the rewrite engine is given, they are never
    mutated (the engine copies what it changes). `derived` holds what a stage computed from
    the list once, by the stage's own key (it lives and dies with the list).
    """

    __slots__ = ("derived", "json")

    def __init__(self, items: Iterable[Any], json: bytes) -> None:
        super().__init__(items)
        self.json = json
        self.derived: dict[str, Any] = {}

    def _refuse(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise TypeError("a JsonList is shared between requests: copy it to change it")

    append = extend = insert = pop = remove = clear = sort = reverse = _refuse
    __setitem__ = __delitem__ = __iadd__ = __imul__ = _refuse


def _known_text(value: Any) -> Any:
    """orjson's hook for subclasses of its native types: a JsonList's own text, else the value
    as its base type (a str or int subclass serialises as its value, as without the hook)."""
    if type(value) is JsonList:
        return orjson.Fragment(value.json)
    if isinstance(value, dict):
        return dict(value)
    if isinstance(value, list):
        return list(value)
    for scalar in (str, int, float):
        if isinstance(value, scalar):
            return scalar(value)
    raise TypeError(f"Type is not JSON serializable: {type(value).__name__}")


def elements_at_most(text: bytes) -> int:
    """An upper bound of the number of values in a JSON text, at C speed: each value but the
    first follows a comma or opens a container. Punctuation inside strings counts too."""
    return text.count(b",") + text.count(b"[") + text.count(b"{") + 1


def elements(text: bytes) -> int:
    """`elements_at_most`, not fooled by punctuation inside strings (a regex pass over the
    text: for what the cheap bound cannot clear)."""
    return elements_at_most(_STRING.sub(b'""', text))


def loads(data: bytes | str) -> Any:
    return orjson.loads(data)


def dumps(value: Any) -> bytes:
    return orjson.dumps(value, default=_known_text, option=orjson.OPT_PASSTHROUGH_SUBCLASS)


def dumps_canonical(value: Any) -> bytes:
    """Compact JSON with every object's keys sorted: values that are equal as JSON give equal
    bytes whatever their key order, so the text can be hashed to compare them."""
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


def dumps_pretty(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_INDENT_2).decode()
