"""Judging one answer against the example's turn (pure)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from proxy.arguments import ArgumentChecker
from proxy.eval.cases import ExpectedCall
from proxy.eval.compare import (
    AnsweredCall,
    Verdict,
    key_score,
    score_text_turn,
    score_tool_turn,
)

SCHEMAS: dict[str, dict[str, Any]] = {
    "get_weather": {
        "type": "object",
        "properties": {
            "city": {"type": "string"},
            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            "days": {"type": "integer"},
        },
        "required": ["city"],
    },
    "get_time": {"type": "object", "properties": {"city": {"type": "string"}}},
}


def expected(name: str, **arguments: Any) -> ExpectedCall:
    return ExpectedCall(name, json.dumps(arguments))


def answered(name: str, arguments: Any) -> AnsweredCall:
    return AnsweredCall(name, arguments if isinstance(arguments, str) else json.dumps(arguments))


def score(want: list[ExpectedCall], got: list[AnsweredCall]) -> Verdict:
    return score_tool_turn(want, got, SCHEMAS, ArgumentChecker())


def test_the_right_call_passes_every_check() -> None:
    verdict = score(
        [expected("get_weather", city="Paris", unit="celsius")],
        # Key order and spacing differ: the arguments are compared parsed.
        [answered("get_weather", '{"unit":"celsius",  "city":"Paris"}')],
    )
    assert verdict == Verdict(
        called=True,
        function=True,
        args_json=True,
        args_schema=True,
        args_exact=True,
        key_score=1.0,
    )


def test_no_call_fails_every_check() -> None:
    assert score([expected("get_weather", city="Paris")], []) == Verdict()


def test_wrong_function_fits_its_own_schema_but_matches_nothing() -> None:
    verdict = score(
        [expected("get_weather", city="Oslo")], [answered("get_time", {"city": "Oslo"})]
    )
    assert (verdict.called, verdict.function, verdict.args_json) == (True, False, True)
    assert verdict.args_schema is True
    assert verdict.args_exact is False
    # No pairing across functions: 1 expected key + 1 answered key, none right.
    assert verdict.key_score == 0.0


def test_wrong_argument_value_counts_per_key() -> None:
    verdict = score(
        [expected("get_weather", city="Rome", unit="celsius")],
        [answered("get_weather", {"city": "Rome", "unit": "fahrenheit"})],
    )
    assert verdict.function
    assert verdict.args_schema
    assert not verdict.args_exact
    assert verdict.key_score == 0.5


def test_missing_and_invented_keys_are_wrong_keys() -> None:
    verdict = score(
        [expected("get_weather", city="Rome", unit="celsius")],
        [answered("get_weather", {"city": "Rome", "days": 3})],
    )
    # keys: city (right), unit (missing), days (invented)
    assert verdict.key_score == pytest.approx(1 / 3)


def test_invalid_json_fails_parse_schema_and_exact() -> None:
    verdict = score(
        [expected("get_weather", city="Oslo")], [answered("get_weather", '{"city": "Os')]
    )
    assert (verdict.called, verdict.function) == (True, True)
    assert (verdict.args_json, verdict.args_schema, verdict.args_exact) == (False, False, False)
    assert verdict.key_score == 0.0


def test_arguments_that_parse_but_break_the_schema() -> None:
    verdict = score([expected("get_weather", city="Lima")], [answered("get_weather", {"city": 5})])
    assert verdict.args_json
    assert not verdict.args_schema
    assert not verdict.args_exact


def test_a_json_array_is_not_an_arguments_object() -> None:
    verdict = score([expected("get_weather", city="Lima")], [answered("get_weather", '["Lima"]')])
    assert not verdict.args_json


def test_a_function_that_was_not_offered_never_fits() -> None:
    verdict = score([expected("get_weather", city="Lima")], [answered("book_flight", {"to": "X"})])
    assert verdict.args_json
    assert not verdict.args_schema


def test_parallel_calls_match_as_a_set_in_any_order() -> None:
    want = [expected("get_weather", city="Paris"), expected("get_time", city="Tokyo")]
    got = [answered("get_time", {"city": "Tokyo"}), answered("get_weather", {"city": "Paris"})]
    verdict = score(want, got)
    assert verdict.function
    assert verdict.args_exact
    assert verdict.key_score == 1.0


def test_parallel_calls_to_one_function_pair_up_by_arguments() -> None:
    want = [expected("get_weather", city="Paris"), expected("get_weather", city="Rome")]
    got = [answered("get_weather", {"city": "Rome"}), answered("get_weather", {"city": "Paris"})]
    assert score(want, got).args_exact


def test_one_parallel_call_missing_is_partly_right() -> None:
    want = [expected("get_weather", city="Paris"), expected("get_weather", city="Rome")]
    verdict = score(want, [answered("get_weather", {"city": "Rome"})])
    assert verdict.called
    assert not verdict.function
    assert not verdict.args_exact
    assert verdict.key_score == 0.5


def test_an_extra_call_fails_function_and_exact() -> None:
    want = [expected("get_weather", city="Paris")]
    got = [answered("get_weather", {"city": "Paris"}), answered("get_time", {"city": "Paris"})]
    verdict = score(want, got)
    assert not verdict.function
    assert not verdict.args_exact
    assert verdict.key_score == 0.5


def test_true_is_not_one() -> None:
    want = [ExpectedCall("f", '{"flag": true}')]
    assert not score(want, [answered("f", '{"flag": 1}')]).args_exact
    assert score(want, [answered("f", '{"flag": true}')]).args_exact


def test_numbers_compare_by_value() -> None:
    want = [ExpectedCall("f", '{"amount": {"value": 12.5, "currency": "EUR"}}')]
    assert score(
        want, [answered("f", '{"amount": {"currency": "EUR", "value": 12.50}}')]
    ).args_exact


def test_calls_without_arguments_score_on_the_function() -> None:
    assert key_score([("f", {})], [("f", {})]) == 1.0
    assert key_score([("f", {})], [("g", {})]) == 0.0


def test_many_parallel_calls_fall_back_to_greedy_pairing() -> None:
    want = [expected("get_weather", city=f"c{i}") for i in range(6)]
    got = [answered("get_weather", {"city": f"c{i}"}) for i in reversed(range(6))]
    verdict = score(want, got)
    assert verdict.args_exact
    assert verdict.key_score == 1.0


def test_text_turns() -> None:
    assert score_text_turn([]) == Verdict(no_call=True)
    assert score_text_turn([answered("get_time", {})]) == Verdict()
