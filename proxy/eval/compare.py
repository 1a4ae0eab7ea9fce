"""Scoring one answer against the example's turn. Pure: no I/O, no clock.

For a turn that makes tool calls, an answer is judged on (every check is all-or-nothing per
turn, and a failed request fails them all):

- `called`: it makes at least one tool call;
- `function`: the functions it calls equal the expected ones, as a multiset (parallel calls
  in any order; one call too many or too few fails);
- `args_json`: it calls, and every call's arguments parse as a JSON object;
- `args_schema`: it calls, every called function was offered, and every call's arguments fit
  that function's FULL schema (the application's definition, not the slimmed one the model saw);
- `args_exact`: the calls equal the expected ones as a multiset of (function, parsed
  arguments): key order and whitespace do not matter, values do;
- `key_score`: the share of argument keys right, in [0, 1] (see `key_score`).

For a turn that needs no tool, `no_call`: it answers without any tool call.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from proxy import jsonutil
from proxy.arguments import ArgumentChecker
from proxy.eval.cases import ExpectedCall

# Up to this many calls on each side, every pairing is tried (at most 8!/4! = 1680); beyond it
# a greedy one is used, as the count grows factorially and real turns rarely have that many.
_EXHAUSTIVE_PAIRING_LIMIT = 4
_NOT_PARSED = object()


@dataclass(frozen=True)
class AnsweredCall:
    name: str
    arguments: str


@dataclass(frozen=True)
class Verdict:
    called: bool = False
    function: bool = False
    args_json: bool = False
    args_schema: bool = False
    args_exact: bool = False
    key_score: float = 0.0
    no_call: bool = False


FAILED = Verdict()
"""The verdict of a request that got no answer: every check fails."""


def score_tool_turn(
    expected: Sequence[ExpectedCall],
    answered: Sequence[AnsweredCall],
    schemas: Mapping[str, dict[str, Any]],
    checker: ArgumentChecker,
) -> Verdict:
    """Judge the calls `answered` for a turn whose example made the calls `expected`.

    `schemas` maps each offered function to its full parameters schema.
    """
    if not answered:
        return Verdict()
    expected_pairs = [(call.name, _parsed(call.arguments)) for call in expected]
    answered_pairs = [(call.name, _parsed(call.arguments)) for call in answered]
    return Verdict(
        called=True,
        function=Counter(c.name for c in expected) == Counter(c.name for c in answered),
        args_json=all(isinstance(arguments, dict) for _, arguments in answered_pairs),
        args_schema=all(_fits(call, schemas, checker) for call in answered),
        args_exact=_same_multiset(expected_pairs, answered_pairs),
        key_score=key_score(expected_pairs, answered_pairs),
    )


def score_text_turn(answered: Sequence[AnsweredCall]) -> Verdict:
    """Judge an answer to a turn that needs no tool: right when it makes no call."""
    return Verdict(no_call=not answered)


def _parsed(arguments: str) -> Any:
    try:
        return jsonutil.loads(arguments)
    except jsonutil.JSONDecodeError:
        return _NOT_PARSED


def _fits(
    call: AnsweredCall, schemas: Mapping[str, dict[str, Any]], checker: ArgumentChecker
) -> bool:
    schema = schemas.get(call.name)
    # A function that was not offered has no schema to fit: the call cannot be right.
    return schema is not None and checker.check(call.name, call.arguments, schema) is None


def _same_multiset(expected: list[tuple[str, Any]], answered: list[tuple[str, Any]]) -> bool:
    if len(expected) != len(answered):
        return False
    remaining = list(answered)
    for call in expected:
        match = next((i for i, other in enumerate(remaining) if _equal_call(call, other)), None)
        if match is None:
            return False
        remaining.pop(match)
    return True


def _equal_call(one: tuple[str, Any], other: tuple[str, Any]) -> bool:
    if one[1] is _NOT_PARSED or other[1] is _NOT_PARSED:
        return False
    return one[0] == other[0] and _equal_json(one[1], other[1])


def _equal_json(one: Any, other: Any) -> bool:
    """JSON equality: like ==, except that true is not 1 (Python's bool is an int)."""
    if isinstance(one, bool) or isinstance(other, bool):
        return type(one) is type(other) and one == other
    if isinstance(one, dict) and isinstance(other, dict):
        return one.keys() == other.keys() and all(_equal_json(one[k], other[k]) for k in one)
    if isinstance(one, list) and isinstance(other, list):
        return len(one) == len(other) and all(map(_equal_json, one, other))
    return bool(one == other)


def key_score(expected: list[tuple[str, Any]], answered: list[tuple[str, Any]]) -> float:
    """The share of top-level argument keys right, with calls paired up as well as they can be.

    Each expected call is paired with at most one answered call of the same function (the
    pairing that gets most keys right). A key is right when both calls have it with equal
    values (a nested object counts as one value). The denominator counts every key of each
    pair (the union of both sides: a missing or an invented key is wrong) and every key of an
    unpaired call on either side. A turn whose calls have no keys at all scores 1 when the
    functions match and 0 otherwise.
    """
    pairs = _best_pairing(expected, answered)
    right = sum(_keys_right(expected[i], answered[j]) for i, j in pairs)
    total = sum(len(_keys(expected[i]) | _keys(answered[j])) for i, j in pairs)
    paired_expected = {i for i, _ in pairs}
    paired_answered = {j for _, j in pairs}
    total += sum(len(_keys(c)) for i, c in enumerate(expected) if i not in paired_expected)
    total += sum(len(_keys(c)) for j, c in enumerate(answered) if j not in paired_answered)
    if total == 0:
        functions_match = len(pairs) == len(expected) == len(answered)
        return 1.0 if functions_match else 0.0
    return right / total


def _keys(call: tuple[str, Any]) -> set[str]:
    return set(call[1]) if isinstance(call[1], dict) else set()


def _keys_right(one: tuple[str, Any], other: tuple[str, Any]) -> int:
    if not isinstance(one[1], dict) or not isinstance(other[1], dict):
        return 0
    shared = one[1].keys() & other[1].keys()
    return sum(1 for key in shared if _equal_json(one[1][key], other[1][key]))


def _best_pairing(
    expected: list[tuple[str, Any]], answered: list[tuple[str, Any]]
) -> list[tuple[int, int]]:
    """(expected index, answered index) pairs of calls to the same function, chosen to get the
    most keys right."""
    if max(len(expected), len(answered)) > _EXHAUSTIVE_PAIRING_LIMIT:
        return _greedy_pairing(expected, answered)
    best: list[tuple[int, int]] = []
    best_score = (-1, -1)
    slots: list[int | None] = [*range(len(answered)), *([None] * len(expected))]
    for chosen in itertools.permutations(slots, len(expected)):
        pairs = [
            (i, j)
            for i, j in enumerate(chosen)
            if j is not None and expected[i][0] == answered[j][0]
        ]
        score = (sum(_keys_right(expected[i], answered[j]) for i, j in pairs), len(pairs))
        if score > best_score:
            best, best_score = pairs, score
    return best


def _greedy_pairing(
    expected: list[tuple[str, Any]], answered: list[tuple[str, Any]]
) -> list[tuple[int, int]]:
    pairs = []
    free = set(range(len(answered)))
    for i, call in enumerate(expected):
        candidates = [j for j in free if answered[j][0] == call[0]]
        if candidates:
            j = max(candidates, key=lambda k: _keys_right(call, answered[k]))
            pairs.append((i, j))
            free.remove(j)
    return pairs
