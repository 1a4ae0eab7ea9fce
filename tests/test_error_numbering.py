"""An upstream error naming `messages[N]` after the policy inserted a system prompt: the client
gets the index of the message it sent, not of the rewritten body."""

from __future__ import annotations

import json
from typing import Any

import pytest

from proxy.relay import error_body_for_client, in_client_numbering
from proxy.rewrite.result import SYSTEM_PROMPT_INSERTED, SYSTEM_PROMPT_REPLACED, Change
from tests.support.configs import basic_config
from tests.support.http import exchange
from tests.support.servers import FakeUpstream, RunningProxy, StartProxy


def error(message: str, param: str | None) -> dict[str, Any]:
    return {"message": message, "type": "invalid_request_error", "param": param, "code": None}


@pytest.mark.parametrize(
    ("inserted", "sent", "told"),
    [
        (0, "messages[3]", "messages[2]"),
        (1, "messages[3]", "messages[2]"),
        (3, "messages[1]", "messages[1]"),  # before the inserted one: unchanged
        (0, "messages[12].content", "messages[11].content"),
    ],
)
def test_indexes_after_the_inserted_message_move_back_by_one(
    inserted: int, sent: str, told: str
) -> None:
    renumbered = in_client_numbering(error(f"Invalid '{sent}': bad.", sent), inserted)
    assert renumbered is not None
    assert renumbered["param"] == told
    assert renumbered["message"] == f"Invalid '{told}': bad."


def test_the_inserted_message_itself_is_said_to_be_the_proxys() -> None:
    renumbered = in_client_numbering(error("Invalid 'messages[0]': x.", "messages[0]"), 0)
    assert renumbered is not None
    assert renumbered["param"] == "messages[0]"
    assert "messages[0] is the system prompt the proxy's policy inserted" in renumbered["message"]


def test_an_error_naming_no_message_is_left_as_sent() -> None:
    raw = json.dumps({"error": error("Invalid 'tools[0]'.", "tools[0]")}).encode()
    changes = [Change(SYSTEM_PROMPT_INSERTED, "messages[0]")]
    assert error_body_for_client(raw, json.loads(raw), 400, changes) is raw
    named = json.dumps({"error": error("Invalid 'messages[2]'.", "messages[2]")}).encode()
    # A replaced prompt inserts nothing: the numbering is the client's already.
    replaced = [Change(SYSTEM_PROMPT_REPLACED)]
    assert error_body_for_client(named, json.loads(named), 400, replaced) is named


async def test_the_client_gets_its_own_index_through_the_proxy(
    fake_upstream: FakeUpstream, start_proxy: StartProxy
) -> None:
    """support-full inserts its training system prompt; the fake model refuses a message
    without a role, naming it `messages[2]` in the body it received: the client sent it second."""
    config = basic_config(fake_upstream.url)
    config["routes"]["full"] = {
        "variants": [{"name": "v", "upstream": "fake", "model": "m", "policy": "support-full"}]
    }
    proxy: RunningProxy = await start_proxy(config)
    messages = [{"role": "user", "content": "Hi"}, {"content": "no role"}]
    outcome = await exchange(proxy.url, {"model": "full", "messages": messages})
    assert outcome.status == 400
    assert fake_upstream.last.body["messages"][0]["role"] == "system"
    sent = json.loads(outcome.body)["error"]
    assert sent["param"] == "messages[1]"
    assert "Invalid 'messages[1]'" in sent["message"]
    plain = await exchange(proxy.url, {"model": "chat", "messages": messages})
    assert json.loads(plain.body)["error"]["param"] == "messages[1]"  # no policy, no shift
