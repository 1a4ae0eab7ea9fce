"""`eval` measures a variant that biases by text with its bias from the first case on: the text
is resolved through the upstream's tokenizer before any case is sent, and a tokenizer that
does not answer stops the eval instead of measuring the variant without its bias."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from proxy.config import load_config
from proxy.eval.cases import read_cases
from proxy.eval.runner import EvalSettings
from proxy.eval.session import evaluate
from proxy.eval.text_bias import TextBiasUnresolved
from proxy.fake.server import fake_token_ids
from tests.support.configs import REPO
from tests.support.servers import FakeUpstream

TOOL = {
    "type": "function",
    "function": {
        "name": "lookup_order",
        "parameters": {"type": "object", "properties": {"order_id": {"type": "string"}}},
    },
}
CALL = {"name": "lookup_order", "arguments": '{"order_id": "ORD-842131"}'}
EXAMPLE = {
    "messages": [
        {"role": "user", "content": "Can you look up my order ORD-842131?"},
        {"role": "assistant", "tool_calls": [{"id": "c1", "type": "function", "function": CALL}]},
    ],
    "tools": [TOOL],
}


def write_setup(folder: Path, upstream: dict[str, Any], texts: dict[str, int]) -> Path:
    """A config whose route `agent` has one variant `biased` on `upstream`, its policy a bias
    by text; and the held-out file beside it."""
    (folder / "biased.yaml").write_text(yaml.safe_dump({"logit_bias": {"text": texts}}))
    (folder / "heldout.jsonl").write_text(json.dumps(EXAMPLE) + "\n")
    config = {
        "policies_dir": ".",
        "upstreams": {"model-server": upstream},
        "routes": {
            "agent": {
                "variants": [
                    {
                        "name": "biased",
                        "upstream": "model-server",
                        "model": "ft-model",
                        "policy": "biased",
                    }
                ]
            }
        },
    }
    path = folder / "eval.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


async def test_the_bias_is_resolved_before_the_first_case_is_sent(
    fake_upstream: FakeUpstream, tmp_path: Path
) -> None:
    upstream = {"kind": "compatible", "server": "llama.cpp", "base_url": f"{fake_upstream.url}/v1"}
    config = write_setup(tmp_path, upstream, {"<tool_call>": 5, "two words": 3})
    report = await evaluate(
        load_config(config),
        read_cases(tmp_path / "heldout.jsonl"),
        EvalSettings(route="agent", variants=("biased",), concurrency=1),
    )
    paths = [seen.path for seen in fake_upstream.received]
    first_chat = paths.index("/v1/chat/completions")
    assert "/tokenize" in paths[:first_chat]
    (token,) = fake_token_ids("<tool_call>")
    assert fake_upstream.received[first_chat].body["logit_bias"] == {str(token): 5}
    assert report.notes == (
        f"biased: logit_bias.text '<tool_call>' is token {token}",
        f"biased: logit_bias.text 'two words' is 2 tokens {fake_token_ids('two words')}, "
        "not one: left out",
    )
    assert report.variants[0].rates["failed"].successes == 0


async def test_a_tokenizer_that_does_not_answer_stops_the_eval_before_any_case(
    fake_upstream: FakeUpstream, tmp_path: Path
) -> None:
    # It serves chat, and says it tokenizes, but its root answers 404 to /tokenize.
    upstream = {
        "kind": "compatible",
        "base_url": f"{fake_upstream.url}/v1/nothing-here/v1",
        "capabilities": {"tokenize": True},
    }
    config = write_setup(tmp_path, upstream, {"<tool_call>": 5})
    with pytest.raises(TextBiasUnresolved) as stopped:
        await evaluate(
            load_config(config),
            read_cases(tmp_path / "heldout.jsonl"),
            EvalSettings(route="agent", variants=("biased",)),
        )
    assert "variant biased: logit_bias.text not resolved on model-server/ft-model" in str(
        stopped.value
    )
    assert not [seen for seen in fake_upstream.received if "chat" in seen.path]
    # The command says so and exits 1.
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "proxy.eval.cli", str(tmp_path / "heldout.jsonl"),
        "-c", str(config), "--model", "agent",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=REPO,
    )  # fmt: skip
    _, stderr = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 1
    assert "tuned-proxy eval: variant biased: logit_bias.text not resolved" in stderr.decode()
