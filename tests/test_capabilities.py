"""Open-weight servers: capabilities from the upstream's `server`, levers emulated or removed
and counted, and a bias written as text resolved through the upstream's tokenizer.

The fake upstream honours every lever; what the proxy sends it under each server profile is
what a real llama.cpp, Ollama or vLLM would get."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from proxy.cli import main
from proxy.config import load_config
from proxy.errors import ConfigError
from proxy.fake.server import fake_token_ids
from proxy.rewrite.capabilities import SERVER_CAPABILITIES
from proxy.state import STATE
from tests.support.configs import basic_config
from tests.support.http import exchange
from tests.support.metrics import samples_of, total
from tests.support.servers import FakeUpstream, RunningProxy, StartProxy
from tests.support.waiting import eventually

REPO = Path(__file__).resolve().parent.parent
TOOLS = json.loads((REPO / "policies" / "support.tools.json").read_text())[:3]
QUESTION = [{"role": "user", "content": "Can you look up my order ORD-842131?"}]
SERVERS = ["openai", "azure", "vllm", "sglang", "llama.cpp", "ollama", "other"]


def profiled(upstream_url: str, **routes: dict[str, Any]) -> dict[str, Any]:
    """One upstream per server profile on the fake model, and a route `<server>` on each."""
    config = basic_config(upstream_url)
    fake = config["upstreams"]["fake"]
    for server in SERVERS:
        config["upstreams"][server] = {**fake, "server": server}
        config["routes"][server] = {
            "variants": [{"name": "v", "upstream": server, "model": "ft-model"}]
        }
    config["routes"].update(routes)
    return config


# ----------------------------------------------------------------------------- config


def write(tmp_path: Path, config: dict[str, Any]) -> Path:
    path = tmp_path / "tuned-proxy.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_a_server_sets_its_known_capabilities_and_the_config_overrides_them(
    tmp_path: Path,
) -> None:
    config = profiled("http://127.0.0.1:1")
    config["upstreams"]["tuned"] = {
        **config["upstreams"]["llama.cpp"],
        "capabilities": {"named_tool_choice": True, "logit_bias": False},
    }
    config["upstreams"]["legacy"] = {**config["upstreams"]["other"], "stream_usage": False}
    runtime = load_config(write(tmp_path, config))
    upstreams = runtime.config.upstreams
    assert upstreams["ollama"].effective_capabilities() == SERVER_CAPABILITIES["ollama"]
    tuned = upstreams["tuned"].effective_capabilities()
    assert (tuned.named_tool_choice, tuned.logit_bias, tuned.tokenize) == (True, False, True)
    assert upstreams["legacy"].effective_capabilities().stream_usage is False
    assert upstreams["fake"].server_name == "other"  # a compatible server until named
    assert runtime.routes["ollama"].variants[0].policy.capabilities.logit_bias is False


@pytest.mark.parametrize(
    ("upstream", "where"),
    [
        ({"server": "tgi"}, "upstreams.fake.compatible.server"),
        ({"capabilities": {"function_calling": True}}, "capabilities.function_calling"),
        ({"capabilities": {"logit_bias": "yes"}}, "capabilities.logit_bias"),
    ],
)
def test_unknown_servers_and_capabilities_are_config_errors(
    tmp_path: Path, upstream: dict[str, Any], where: str
) -> None:
    config = basic_config("http://127.0.0.1:1")
    config["upstreams"]["fake"].update(upstream)
    with pytest.raises(ConfigError) as refused:
        load_config(write(tmp_path, config))
    assert any(where in line for line in refused.value.errors), refused.value.errors


def text_bias_policy(folder: Path, texts: dict[str, int]) -> None:
    (folder / "policies").mkdir(exist_ok=True)
    (folder / "policies" / "bias-text.yaml").write_text(
        yaml.safe_dump({"logit_bias": {"text": texts, "when": "always"}})
    )


def test_a_text_bias_needs_an_upstream_that_tokenizes(tmp_path: Path) -> None:
    text_bias_policy(tmp_path, {"<tool_call>": 5})
    config = profiled("http://127.0.0.1:1")
    config["routes"]["ollama"]["variants"][0]["policy"] = "bias-text"
    with pytest.raises(ConfigError) as refused:
        load_config(write(tmp_path, config))
    (line,) = refused.value.errors
    assert "routes.ollama.variants.0.policy" in line
    assert "upstream 'ollama' (server ollama) has none" in line


# ----------------------------------------------------------------------------- levers


@pytest.fixture
async def profiles(fake_upstream: FakeUpstream, start_proxy: StartProxy) -> RunningProxy:
    return await start_proxy(profiled(fake_upstream.url))


async def test_a_named_choice_is_emulated_where_the_server_ignores_it(
    profiles: RunningProxy, fake_upstream: FakeUpstream
) -> None:
    chosen = TOOLS[1]["function"]["name"]
    choice = {"type": "function", "function": {"name": chosen}}
    body = {"model": "llama.cpp", "messages": QUESTION, "tools": TOOLS, "tool_choice": choice}
    outcome = await exchange(profiles.url, body)
    assert outcome.status == 200
    sent = fake_upstream.last.body
    assert [tool["function"]["name"] for tool in sent["tools"]] == [chosen]
    assert sent["tool_choice"] == "required"
    answer = json.loads(outcome.body)
    assert answer["choices"][0]["message"]["tool_calls"][0]["function"]["name"] == chosen
    samples = samples_of(profiles)
    assert total(samples, "tuned_proxy_rewrites_total", action="tool_choice_emulated") == 1
    # vLLM honours the choice: sent as the client wrote it.
    await exchange(profiles.url, {**body, "model": "vllm"})
    assert fake_upstream.last.body["tool_choice"] == choice
    assert len(fake_upstream.last.body["tools"]) == 3


async def test_ollama_gets_no_lever_it_would_ignore_and_each_is_counted(
    profiles: RunningProxy, fake_upstream: FakeUpstream
) -> None:
    strict = [*TOOLS[:2], {**TOOLS[2], "function": {**TOOLS[2]["function"], "strict": False}}]
    body = {
        "model": "ollama",
        "messages": QUESTION,
        "tools": strict,
        "tool_choice": "required",
        "parallel_tool_calls": False,
        "logit_bias": {"316": 5},
        "temperature": 0.2,
    }
    assert (await exchange(profiles.url, body)).status == 200
    sent = fake_upstream.last.body
    assert "logit_bias" not in sent
    assert "parallel_tool_calls" not in sent
    assert all("strict" not in tool["function"] for tool in sent["tools"])
    assert sent["tool_choice"] == "required"  # nothing to emulate it with
    assert sent["temperature"] == 0.2  # a bias not applied drops no sampling parameter
    samples = samples_of(profiles)
    for action in (
        "logit_bias_unsupported",
        "parallel_tool_calls_unsupported",
        "strict_unsupported",
        "tool_choice_required_unsupported",
    ):
        assert total(samples, "tuned_proxy_rewrites_total", route="ollama", action=action) == 1


@pytest.mark.parametrize("server", ["openai", "azure", "vllm", "sglang", "other"])
async def test_servers_that_honour_every_lever_get_the_request_as_the_policy_made_it(
    profiles: RunningProxy, fake_upstream: FakeUpstream, server: str
) -> None:
    choice = {"type": "function", "function": {"name": "lookup_order"}}
    body = {
        "model": server,
        "messages": QUESTION,
        "tools": TOOLS,
        "tool_choice": choice,
        "parallel_tool_calls": False,
        "logit_bias": {"316": 5},
    }
    assert (await exchange(profiles.url, body)).status == 200
    sent = fake_upstream.last.body
    assert (sent["tool_choice"], sent["parallel_tool_calls"]) == (choice, False)
    assert sent["logit_bias"] == {"316": 5}
    assert len(sent["tools"]) == 3


# ----------------------------------------------------------------------------- bias by text


async def test_a_text_bias_is_resolved_through_the_upstreams_tokenizer(
    fake_upstream: FakeUpstream, start_proxy: StartProxy, tmp_path: Path
) -> None:
    text_bias_policy(tmp_path, {"<tool_call>": 5, "two words": 3})
    config = profiled(fake_upstream.url)
    config["routes"]["vllm"]["variants"][0]["policy"] = "bias-text"
    proxy = await start_proxy(config)
    state = proxy.app[STATE]
    await eventually(
        lambda: state.runtime.routes["vllm"].variants[0].policy.text_bias is not None,
        "the text bias is resolved",
    )
    (asked, *_) = [seen for seen in fake_upstream.received if seen.path == "/tokenize"]
    assert asked.body == {"model": "ft-model", "prompt": "<tool_call>", "add_special_tokens": False}
    await exchange(proxy.url, {"model": "vllm", "messages": QUESTION})
    (token,) = fake_token_ids("<tool_call>")
    assert fake_upstream.last.body["logit_bias"] == {str(token): 5}  # "two words" left out


async def test_until_the_tokenizer_answers_the_bias_waits_and_is_counted(
    fake_upstream: FakeUpstream, start_proxy: StartProxy, tmp_path: Path
) -> None:
    text_bias_policy(tmp_path, {"<tool_call>": 5})
    config = profiled(fake_upstream.url)
    # It claims a tokenizer and answers chat, but its tokenizer never answers.
    config["upstreams"]["mute"] = {"kind": "mock", "capabilities": {"tokenize": True}}
    config["routes"]["waiting"] = {
        "variants": [{"name": "v", "upstream": "mute", "model": "m", "policy": "bias-text"}]
    }
    proxy = await start_proxy(config)
    assert (await exchange(proxy.url, {"model": "waiting", "messages": QUESTION})).status == 200
    samples = samples_of(proxy)
    assert total(samples, "tuned_proxy_rewrites_total", action="logit_bias_pending") == 1
    assert proxy.app[STATE].runtime.routes["waiting"].variants[0].policy.text_bias is None


# ----------------------------------------------------------------------------- check


def test_check_prints_capabilities_and_warns_of_levers_an_upstream_ignores(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = profiled("http://127.0.0.1:1")
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "biased.yaml").write_text("logit_bias: {tokens: {'316': 5}}\n")
    config["routes"]["ollama"]["variants"][0]["policy"] = "biased"
    # A shadow is where a new server is tried: its levers are checked as a variant's.
    config["routes"]["other"]["shadow"] = {
        "upstream": "ollama",
        "model": "next",
        "policy": "biased",
    }
    config["routes"]["split"] = {
        "variants": [
            {"name": "a", "upstream": "fake", "model": "m", "weight": 1},
            {"name": "b", "upstream": "fake", "model": "n", "weight": 1},
        ]
    }
    assert main(["check", "-c", str(write(tmp_path, config))]) == 0
    out = capsys.readouterr().out
    assert (
        "upstream ollama: compatible, server ollama, responses bridge; lacks named_tool_choice, "
        "tool_choice_required, logit_bias, parallel_tool_calls, strict" in out
    )
    assert "upstream llama.cpp: compatible, server llama.cpp, responses bridge; lacks " in out
    assert "named_tool_choice, tokenizes" in out
    assert "warning: route ollama, v: policy biased uses logit_bias, which upstream ollama" in out
    assert "warning: route other, shadow: policy biased uses logit_bias, which upstream " in out
    assert "warning: route split splits traffic between variants without `sticky`" in out
    assert (
        "levers: tools passthrough, unknown pass, system prompt keep, logit_bias 1 token(s)" in out
    )


async def test_check_resolve_asks_the_tokenizers(
    fake_upstream: FakeUpstream, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text_bias_policy(tmp_path, {"<tool_call>": 5, "two words": 3})
    config = profiled(fake_upstream.url)
    config["routes"]["llama.cpp"]["variants"][0]["policy"] = "bias-text"
    path = write(tmp_path, config)
    assert main(["check", "-c", str(path)]) == 0
    assert not [seen for seen in fake_upstream.received if seen.path == "/tokenize"]  # offline
    assert "logit_bias text '<tool_call>', 'two words' (always, sampling keep)" in (
        capsys.readouterr().out
    )
    # `--resolve` runs its own event loop: in a thread, beside the test's.
    import asyncio

    code = await asyncio.to_thread(main, ["check", "-c", str(path), "--resolve"])
    assert code == 0
    out = capsys.readouterr().out
    (token,) = fake_token_ids("<tool_call>")
    assert f"logit_bias.text '<tool_call>' on llama.cpp/ft-model: token {token}" in out
    assert "warning: logit_bias.text 'two words' on llama.cpp/ft-model is 2 tokens" in out
    asked = [seen.body for seen in fake_upstream.received if seen.path == "/tokenize"]
    assert {"content": "<tool_call>"} in asked  # llama.cpp's form


async def test_rewrite_resolve_shows_the_bias_with_its_ids(
    fake_upstream: FakeUpstream, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text_bias_policy(tmp_path, {"<tool_call>": 5})
    config = profiled(fake_upstream.url)
    config["routes"]["llama.cpp"]["variants"][0]["policy"] = "bias-text"
    path = write(tmp_path, config)
    request = tmp_path / "request.json"
    request.write_text(json.dumps({"model": "llama.cpp", "messages": QUESTION}))
    command = ["rewrite", "-c", str(path), "--model", "llama.cpp", str(request)]
    # Offline, the dry run cannot know the ids: the bias waits, as a serving proxy's would.
    assert main(command) == 0
    offline = capsys.readouterr()
    assert "logit_bias" not in json.loads(offline.out)
    assert "  logit_bias_pending" in offline.err
    # `--resolve` asks the tokenizer (its own event loop: in a thread, beside the test's).
    import asyncio

    assert await asyncio.to_thread(main, [*command, "--resolve"]) == 0
    resolved = capsys.readouterr()
    (token,) = fake_token_ids("<tool_call>")
    assert json.loads(resolved.out)["logit_bias"] == {str(token): 5}
    assert f"logit_bias.text '<tool_call>' on llama.cpp/ft-model: token {token}" in resolved.err
    assert "  logit_bias_applied" in resolved.err
