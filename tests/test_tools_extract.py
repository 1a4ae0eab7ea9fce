"""`tuned-proxy tools extract`: canonical definitions, differences, legacy and preference files,
errors."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from proxy import jsonutil
from proxy.training.extract import Difference, ExtractError, extract_tools, format_report, run

POLICIES = Path(__file__).resolve().parent.parent / "policies"

Tool = dict[str, Any]


def weather(description: str = "Get the current weather") -> Tool:
    return {
        "type": "function",
        "function": {
            "name": "get_current_weather",
            "description": description,
            "parameters": {
                "type": "object",
                "properties": {
                    "location": {"type": "string", "description": "The city and country"},
                    "format": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                },
                "required": ["location", "format"],
            },
        },
    }


def function_tool(name: str, description: str = "Does a thing") -> Tool:
    return {
        "type": "function",
        "function": {"name": name, "description": description, "parameters": {"type": "object"}},
    }


def example(*tools: Tool) -> dict[str, Any]:
    return {
        "messages": [
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello"},
        ],
        "tools": list(tools),
    }


def legacy_example(*tools: Tool) -> dict[str, Any]:
    return {
        "messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}],
        "functions": [tool["function"] for tool in tools],
    }


def preference_example(*tools: Tool) -> dict[str, Any]:
    return {
        "input": {"messages": [{"role": "user", "content": "Hi"}], "tools": list(tools)},
        "preferred_output": [{"role": "assistant", "content": "Hello"}],
        "non_preferred_output": [{"role": "assistant", "content": "What?"}],
    }


def write_lines(tmp_path: Path, lines: list[Any]) -> Path:
    """One line per item: dicts are serialised, strings written as they are."""
    path = tmp_path / "train.jsonl"
    text = b"".join(
        (item.encode() if isinstance(item, str) else jsonutil.dumps(item)) + b"\n" for item in lines
    )
    path.write_bytes(text)
    return path


def with_added_property(tool: Tool) -> Tool:
    changed: Tool = jsonutil.loads(jsonutil.dumps(tool))
    parameters = changed["function"]["parameters"]
    parameters["properties"]["unit_system"] = {"type": "string"}
    parameters["required"].append("unit_system")
    return changed


# --- consistent files ---------------------------------------------------------------------


@pytest.mark.parametrize("kind", [example, preference_example], ids=["chat", "preference"])
def test_a_consistent_file_gives_its_tools_and_no_differences(
    tmp_path: Path, kind: Callable[..., dict[str, Any]]
) -> None:
    """A preference file's tools are those of its examples' `input`."""
    other = function_tool("lookup_order")
    path = write_lines(tmp_path, [kind(weather(), other)] * 3)

    extraction = extract_tools(path)

    assert extraction.tools == [weather(), other]
    assert extraction.differences == []
    assert extraction.examples == 3
    assert extraction.legacy_examples == 0


def test_functions_come_in_first_seen_order_across_examples(tmp_path: Path) -> None:
    first, second, third = (function_tool(name) for name in ("zeta", "alpha", "mid"))
    path = write_lines(tmp_path, [example(first), example(second, first), example(third)])

    names = [tool["function"]["name"] for tool in extract_tools(path).tools]

    assert names == ["zeta", "alpha", "mid"]


def test_key_order_of_the_file_is_kept_in_the_output(tmp_path: Path, capsys: Any) -> None:
    tool = {
        "function": {
            "parameters": {"properties": {"b": {"type": "string"}}, "type": "object"},
            "name": "reordered",
        },
        "type": "function",
    }
    path = write_lines(tmp_path, [example(tool)])

    assert run(path, None) == 0

    output = capsys.readouterr().out
    assert output == jsonutil.dumps_pretty([tool]) + "\n"
    assert output.index('"parameters"') < output.index('"name"')


def test_examples_without_tools_and_blank_lines_are_counted_correctly(tmp_path: Path) -> None:
    no_tools = {"messages": [{"role": "user", "content": "Hi"}]}
    path = write_lines(tmp_path, [no_tools, "", example(weather()), "   "])

    extraction = extract_tools(path)

    assert extraction.examples == 2
    assert extraction.tools == [weather()]


def test_a_utf8_bom_at_the_start_is_ignored(tmp_path: Path) -> None:
    # Azure's fine-tuning docs ask for UTF-8 with a byte-order mark.
    path = tmp_path / "train.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + jsonutil.dumps(example(weather())) + b"\n")

    assert extract_tools(path).tools == [weather()]


# --- differences --------------------------------------------------------------------------


def test_a_description_differing_in_two_examples_is_reported_with_its_lines(
    tmp_path: Path,
) -> None:
    odd = weather("Get the weather right now")
    path = write_lines(
        tmp_path,
        [example(weather()), example(odd), example(weather()), example(odd), example(weather())],
    )

    extraction = extract_tools(path)

    assert extraction.tools == [weather()]  # three examples against two
    assert extraction.differences == [
        Difference(
            function="get_current_weather",
            lines=[2, 4],
            variants=2,
            summary="description differs",
            examples=2,
        )
    ]
    report = format_report(extraction)
    assert "get_current_weather: 2 definitions; lines 2, 4 use one that differs" in report
    assert "description differs" in report


def test_a_tie_goes_to_the_definition_seen_first(tmp_path: Path) -> None:
    odd = weather("Get the weather right now")
    path = write_lines(tmp_path, [example(odd), example(weather())])

    extraction = extract_tools(path)

    assert extraction.tools == [odd]
    assert extraction.differences[0].lines == [2]


def test_added_properties_and_required_values_are_named(tmp_path: Path) -> None:
    path = write_lines(
        tmp_path, [example(weather()), example(weather()), example(with_added_property(weather()))]
    )

    summary = extract_tools(path).differences[0].summary

    assert summary == (
        'parameters.properties.unit_system added; parameters.required: "unit_system" added'
    )


def test_removed_enum_values_and_nested_changes_are_named(tmp_path: Path) -> None:
    changed = weather()
    changed["function"]["parameters"]["properties"]["format"]["enum"] = ["celsius"]
    changed["function"]["parameters"]["properties"]["location"]["type"] = "number"
    path = write_lines(tmp_path, [example(weather()), example(weather()), example(changed)])

    summary = extract_tools(path).differences[0].summary

    assert "parameters.properties.location.type differs" in summary
    assert 'parameters.properties.format.enum: "fahrenheit" removed' in summary


def test_a_definition_differing_only_in_key_order_is_a_difference(tmp_path: Path) -> None:
    # `identical` mode sends the training bytes, so key order is part of the definition.
    tool = weather()
    function = tool["function"]
    reordered = {
        "type": "function",
        "function": {key: function[key] for key in ("name", "parameters", "description")},
    }
    path = write_lines(tmp_path, [example(tool), example(tool), example(reordered)])

    difference = extract_tools(path).differences[0]

    assert difference.lines == [3]
    assert difference.summary == "key order differs"


def test_three_definitions_say_which_lines_use_which(tmp_path: Path) -> None:
    described = weather("Get the weather right now")
    extended = with_added_property(weather())
    path = write_lines(
        tmp_path,
        [example(weather()), example(described), example(weather()), example(extended)],
    )

    difference = extract_tools(path).differences[0]

    assert difference.variants == 3
    assert difference.lines == [2, 4]
    assert difference.summary.startswith("line 2: description differs | line 4: ")
    assert "parameters.properties.unit_system added" in difference.summary


def test_a_tool_listed_twice_in_one_example_counts_once(tmp_path: Path) -> None:
    odd = weather("Get the weather right now")
    path = write_lines(tmp_path, [example(odd, odd), example(weather()), example(weather())])

    assert extract_tools(path).tools == [weather()]


def test_line_numbers_are_capped_but_the_count_is_not(tmp_path: Path) -> None:
    odd = weather("Get the weather right now")
    path = write_lines(tmp_path, [example(weather())] * 10 + [example(odd)] * 5)

    extraction = extract_tools(path, max_lines=3)

    difference = extraction.differences[0]
    assert difference.lines == [11, 12, 13]
    assert difference.examples == 5
    assert "lines 11, 12, 13 and 2 more use one that differs" in format_report(extraction)


def test_only_differing_functions_are_reported(tmp_path: Path) -> None:
    stable = function_tool("lookup_order")
    path = write_lines(
        tmp_path,
        [example(stable, weather()), example(stable, weather("Other")), example(stable, weather())],
    )

    differences = extract_tools(path).differences

    assert [difference.function for difference in differences] == ["get_current_weather"]


# --- legacy `functions` -------------------------------------------------------------------


def test_the_legacy_functions_format_is_converted_to_tools(tmp_path: Path) -> None:
    path = write_lines(tmp_path, [legacy_example(weather()), legacy_example(weather())])

    extraction = extract_tools(path)

    assert extraction.tools == [weather()]
    assert extraction.legacy_examples == 2
    assert "2 in the deprecated `functions` format" in format_report(extraction)


def test_legacy_and_tools_examples_with_the_same_function_agree(tmp_path: Path) -> None:
    path = write_lines(tmp_path, [legacy_example(weather()), example(weather())])

    extraction = extract_tools(path)

    assert extraction.tools == [weather()]
    assert extraction.differences == []
    assert extraction.legacy_examples == 1


# --- preference (DPO) files: the tools of the input -----------------------------------------


def test_a_definition_differing_between_preference_examples_names_its_lines(
    tmp_path: Path, capsys: Any
) -> None:
    odd = weather("Get the weather right now")
    path = write_lines(
        tmp_path,
        [preference_example(weather()), preference_example(odd), preference_example(weather())],
    )

    assert run(path, None) == 0

    captured = capsys.readouterr()
    assert jsonutil.loads(captured.out) == [weather()]
    assert (
        "get_current_weather: 2 definitions; line 2 uses one that differs from the extracted "
        "one: description differs"
    ) in captured.err


def test_legacy_functions_of_a_preference_input_are_converted_to_tools(tmp_path: Path) -> None:
    legacy = preference_example()
    legacy["input"] = legacy_example(weather())
    path = write_lines(tmp_path, [legacy, preference_example(weather())])

    extraction = extract_tools(path)

    assert extraction.tools == [weather()]
    assert extraction.differences == []
    assert extraction.legacy_examples == 1


# --- errors -------------------------------------------------------------------------------


def test_an_invalid_json_line_names_its_line(tmp_path: Path) -> None:
    path = write_lines(tmp_path, [example(weather()), "", '{"messages": [}', example(weather())])

    with pytest.raises(ExtractError, match=r"train\.jsonl:3: invalid JSON at column 15") as info:
        extract_tools(path)

    assert info.value.line == 3


def test_run_reports_an_invalid_line_and_writes_nothing(tmp_path: Path, capsys: Any) -> None:
    path = write_lines(tmp_path, [example(weather()), "not json"])
    out = tmp_path / "tools.json"

    assert run(path, out) == 1

    captured = capsys.readouterr()
    assert captured.out == ""
    assert "error:" in captured.err
    assert "train.jsonl:2:" in captured.err
    assert not out.exists()


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("[1, 2]", "an example must be a JSON object"),
        ('{"tools": {"type": "function"}}', '"tools" must be an array'),
        ('{"tools": [{"type": "function", "function": {}}]}', "tools[0]: expected"),
        ('{"functions": [{"description": "no name"}]}', "functions[0]: expected"),
        ('{"tools": ["get_weather"]}', "tools[0]: expected"),
        ('{"input": "Hi", "preferred_output": []}', '"input" must be an object'),
        ('{"input": {"tools": {"type": "function"}}}', '"input.tools" must be an array'),
        ('{"input": {"functions": [{}]}}', "input.functions[0]: expected"),
    ],
)
def test_malformed_examples_are_errors_with_their_line(
    tmp_path: Path, line: str, message: str
) -> None:
    path = write_lines(tmp_path, [example(weather()), line])

    with pytest.raises(ExtractError, match=r":2: ") as info:
        extract_tools(path)

    assert message in str(info.value)


def test_invalid_utf8_is_an_error_with_its_line(tmp_path: Path) -> None:
    path = tmp_path / "train.jsonl"
    path.write_bytes(jsonutil.dumps(example(weather())) + b'\n{"a": "\xff"}\n')

    with pytest.raises(ExtractError, match=r":2: invalid JSON"):
        extract_tools(path)


def test_a_missing_file_is_an_error_not_a_traceback(tmp_path: Path, capsys: Any) -> None:
    assert run(tmp_path / "absent.jsonl", None) == 1

    assert "absent.jsonl: cannot read the file" in capsys.readouterr().err


# --- the command --------------------------------------------------------------------------


def test_run_writes_json_to_stdout_and_the_report_to_stderr(tmp_path: Path, capsys: Any) -> None:
    path = write_lines(tmp_path, [example(weather())] * 2)

    assert run(path, None) == 0

    captured = capsys.readouterr()
    assert jsonutil.loads(captured.out) == [weather()]
    assert captured.err.startswith("2 examples: 1 tools extracted")


def test_run_writes_the_output_file(tmp_path: Path, capsys: Any) -> None:
    path = write_lines(tmp_path, [example(weather()), example(weather("Other"))])
    out = tmp_path / "tools.json"

    assert run(path, out) == 0

    assert jsonutil.loads(out.read_bytes()) == [weather()]
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "get_current_weather: 2 definitions; line 2 uses one that differs" in captured.err


def test_a_file_without_tools_gives_an_empty_array_and_a_warning(
    tmp_path: Path, capsys: Any
) -> None:
    path = write_lines(tmp_path, [{"messages": [{"role": "user", "content": "Hi"}]}])

    assert run(path, None) == 0

    captured = capsys.readouterr()
    assert jsonutil.loads(captured.out) == []
    assert "warning: no example defines any tools" in captured.err


def test_the_example_training_file_gives_back_the_example_tools_file(tmp_path: Path) -> None:
    out = tmp_path / "support.tools.json"

    assert run(POLICIES / "support.train.jsonl", out) == 0

    assert out.read_bytes() == (POLICIES / "support.tools.json").read_bytes()
