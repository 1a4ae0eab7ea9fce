"""What the spans say, read from a request's record: the GenAI conventions' names, the proxy's
own, the errors, and answer-given names cut as the log line cuts them."""

from __future__ import annotations

from proxy.errors import MAX_ECHOED_CHARS
from proxy.record import MAX_LOGGED_CALLS, Attempt, RequestRecord
from proxy.tracing_attributes import (
    attempt_attributes,
    request_attributes,
    shadow_attributes,
)
from tests.support.records import full_record, routed_record


def test_a_served_request_says_what_was_asked_done_and_answered() -> None:
    record = full_record()
    record.response_model = "ft-slim-2026-01"
    assert request_attributes(record) == {
        "http.response.status_code": 200,
        "gen_ai.request.model": "support-agent",
        "gen_ai.response.model": "ft-slim-2026-01",
        "gen_ai.usage.input_tokens": 120,
        "gen_ai.usage.output_tokens": 30,
        "gen_ai.response.finish_reasons": ["tool_calls"],
        "tuned_proxy.route": "support-agent",
        "tuned_proxy.variant": "ft-slim",
        "tuned_proxy.upstream": "azure-east",
        "tuned_proxy.api": "chat",
        "tuned_proxy.stream": True,
        "tuned_proxy.attempts": 2,
        "tuned_proxy.rewrite.actions": ["tool_drift_undone", "tool_slimmed"],
        "tuned_proxy.rewrite.schema_bytes_removed": 300,
        "tuned_proxy.tool_calls": ["lookup_order"],
        "tuned_proxy.tool_argument_errors": 1,
    }


def test_a_request_refused_before_routing_says_only_its_status() -> None:
    record = RequestRecord(request_id="req_1", path="/v1/responses", api="responses", status=400)
    assert request_attributes(record) == {
        "http.response.status_code": 400,
        "tuned_proxy.api": "responses",
        "tuned_proxy.stream": False,
        "tuned_proxy.attempts": 0,
    }


def test_a_request_is_an_error_for_its_upstreams_failure_or_a_5xx_not_a_clients_4xx() -> None:
    broken = routed_record(attempts=[Attempt("v", "up", status=200, reason="broken_stream")])
    assert request_attributes(broken)["error.type"] == "broken_stream"
    internal = RequestRecord(request_id="req_1", path="/v1/chat/completions", status=500)
    assert request_attributes(internal)["error.type"] == "500"
    refused = routed_record(status=400, attempts=[Attempt("v", "up", status=400)])
    assert "error.type" not in request_attributes(refused)
    gone = routed_record(status=499, client_disconnected=True)
    assert request_attributes(gone)["tuned_proxy.client_disconnected"] is True
    assert "error.type" not in request_attributes(gone)


def test_an_attempt_says_its_status_or_why_it_failed() -> None:
    assert attempt_attributes(Attempt("v", "up", status=200)) == {"http.response.status_code": 200}
    assert attempt_attributes(Attempt("v", "up", status=400)) == {
        "http.response.status_code": 400,
        "error.type": "400",
    }
    assert attempt_attributes(Attempt("v", "up", reason="timeout", error="timed out")) == {
        "error.type": "timeout"
    }


def test_names_from_the_answer_are_cut_as_in_the_log_line() -> None:
    long = "f" * 10_000
    record = routed_record(
        tool_calls=[long] * (MAX_LOGGED_CALLS + 5),
        finish_reasons=[long],
        response_model=long,
    )
    attributes = request_attributes(record)
    calls = attributes["tuned_proxy.tool_calls"]
    assert isinstance(calls, list)
    assert len(calls) == MAX_LOGGED_CALLS + 1
    assert calls[-1] == "… (5 more calls)"
    for text in (calls[0], attributes["gen_ai.response.model"]):
        assert isinstance(text, str)
        assert text.startswith("f" * MAX_ECHOED_CHARS)
        assert len(text) < MAX_ECHOED_CHARS + 40


def test_a_shadow_copy_says_its_outcome() -> None:
    answered = routed_record(usage={"prompt_tokens": 7, "completion_tokens": 3})
    assert shadow_attributes(answered, "support-agent", "ok") == {
        "tuned_proxy.route": "support-agent",
        "tuned_proxy.shadow.outcome": "ok",
        "http.response.status_code": 200,
        "gen_ai.usage.input_tokens": 7,
        "gen_ai.usage.output_tokens": 3,
    }
    timed_out = RequestRecord(request_id="req_1", path="shadow")
    assert shadow_attributes(timed_out, "support-agent", "timeout") == {
        "tuned_proxy.route": "support-agent",
        "tuned_proxy.shadow.outcome": "timeout",
        "error.type": "timeout",
    }


def test_token_counts_that_are_not_counts_are_left_out() -> None:
    record = routed_record(usage={"prompt_tokens": True, "completion_tokens": -1})
    attributes = request_attributes(record)
    assert "gen_ai.usage.input_tokens" not in attributes
    assert "gen_ai.usage.output_tokens" not in attributes
