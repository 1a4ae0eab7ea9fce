"""The command line: `rewrite` (dry run), `demo`, and the bind refusal of `serve`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from proxy.cli import main

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "policies" / "tuned-proxy.example.yaml"
SUPPORT_TOOLS = json.loads((REPO / "policies" / "support.tools.json").read_text())


def request_file(tmp_path: Path) -> Path:
    drifted = json.loads(json.dumps(SUPPORT_TOOLS[:3]))
    drifted[0]["function"]["description"] = "edited by the application"
    body = {
        "model": "support-agent",
        "messages": [{"role": "user", "content": "Where is my order?"}],
        "tools": drifted,
        "seed": 7,
    }
    path = tmp_path / "request.json"
    path.write_text(json.dumps(body))
    return path


def test_rewrite_prints_the_body_and_a_summary(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        [
            "rewrite",
            "-c",
            str(EXAMPLE),
            "--model",
            "support-agent",
            "--variant",
            "ft-full",
            str(request_file(tmp_path)),
        ]
    )
    assert code == 0
    captured = capsys.readouterr()
    body = json.loads(captured.out)
    assert body["model"] == "support-ft-full"
    assert body["tools"] == SUPPORT_TOOLS[:3]  # identical: the training definitions, drift undone
    assert body["seed"] == 7
    assert "variant ft-full" in captured.err
    assert "tool_drift_undone" in captured.err


def test_rewrite_reports_bytes_removed_by_a_slim_policy(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        main(
            [
                "rewrite",
                "-c",
                str(EXAMPLE),
                "--model",
                "support-agent",
                "--variant",
                "ft-slim",
                str(request_file(tmp_path)),
            ]
        )
        == 0
    )
    err = capsys.readouterr().err
    removed = int(err.split(" B of tool schema removed")[0].rsplit(" ", 1)[1])
    assert removed > 0
    assert "tool_slimmed" in err


def test_rewrite_unknown_route_or_variant_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    request = str(request_file(tmp_path))
    assert main(["rewrite", "-c", str(EXAMPLE), "--model", "nope", request]) == 1
    assert "no route 'nope'" in capsys.readouterr().err
    assert (
        main(["rewrite", "-c", str(EXAMPLE), "--model", "support-agent", "--variant", "x", request])
        == 1
    )
    assert "no variant 'x'" in capsys.readouterr().err


def test_rewrite_bad_request_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bad.json"
    path.write_text('{"messages": "not a list", "tools": "nope"}')
    assert main(["rewrite", "-c", str(EXAMPLE), "--model", "support-agent", str(path)]) == 1
    assert capsys.readouterr().err.startswith("tuned-proxy: ")


def test_serve_refuses_an_open_address_without_keys(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TUNED_PROXY_KEYS", raising=False)
    assert main(["serve", "-c", str(EXAMPLE), "--host", "0.0.0.0", "--port", "0"]) == 2
    assert "refusing to listen on 0.0.0.0 without client keys" in capsys.readouterr().err


@pytest.mark.slow
def test_demo_runs_and_shows_every_step() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "proxy", "demo"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    for step in (
        "plain answer",
        "tool call",
        "stream",
        "legacy functions",
        "compare: support-full",
        "compare: support-slim",
        "compare: support-params",
    ):
        assert step in result.stdout
    assert "FAILED" not in result.stdout
    comparison = result.stdout.split("Route support-agent, the requests that offered tools")[1]
    table = comparison.split("\n\n")[0].splitlines()[3:]
    rows = {line.split()[0]: line.split() for line in table if not line.startswith(" ")}
    assert set(rows) == {"ft-full", "ft-slim", "ft-params"}
    # the slim variants cost fewer prompt tokens per request than the full definitions
    assert int(rows["ft-params"][2]) < int(rows["ft-slim"][2]) < int(rows["ft-full"][2])
    assert rows["ft-full"][3] == "100%"
    # the Responses step's application tools are the chat tools flat: one drift, as in chat
    responses_row = next(line for line in result.stdout.splitlines() if "Responses API" in line)
    assert responses_row.rstrip().endswith("tool_drift_undone")


def test_rewrite_takes_a_responses_body_too(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`input` instead of `messages`: the Responses rewrite, flat tools made identical (the
    example upstream is the in-process mock, which speaks the Responses API natively)."""
    flat = [
        {"type": "function", **tool["function"], "description": "edited"}
        for tool in SUPPORT_TOOLS[:2]
    ]
    path = tmp_path / "responses.json"
    path.write_text(
        json.dumps({"model": "support-agent", "input": "Where is my order?", "tools": flat})
    )
    code = main(
        [
            "rewrite",
            "-c",
            str(EXAMPLE),
            "--model",
            "support-agent",
            "--variant",
            "ft-full",
            str(path),
        ]
    )
    assert code == 0
    captured = capsys.readouterr()
    body = json.loads(captured.out)
    assert [tool["name"] for tool in body["tools"]] == [
        t["function"]["name"] for t in SUPPORT_TOOLS[:2]
    ]
    assert body["tools"][0]["description"] == SUPPORT_TOOLS[0]["function"]["description"]
    assert "instructions" in body  # the training system prompt, where chat has a system message
    assert captured.err.startswith("Responses API: route support-agent → variant ft-full")
    assert "tool_drift_undone" in captured.err
