"""The eval driver: every case, sent to every variant through the proxy's own request path.

The real proxy app is started in process on a free loopback port, with the config the user
gave, and each case is sent over HTTP with the `openai` SDK, pinned to one variant by the
`x-tuned-proxy-variant` header. So the variant's policy, the rewrite, the upstream client,
the relay and the argument check run exactly as they do in production. Three things differ,
in a copy of the loaded config (the user's file is never touched):

- the route allows the variant header, or a variant could not be pinned;
- the route's fallback and shadow are off: a fallback would answer for a failing variant and
  hide the failure being measured, and a shadow would send extra traffic for nothing;
- the proxy accepts one random client key made for the run, so nothing else on the machine
  can use it (and its upstream credentials) while it listens.

Requests run `concurrency` at a time, case after case (each case to every variant before the
next case), so a run stopped early has compared the variants on the same cases.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from typing import Any

import openai

from proxy.app import build_app
from proxy.arguments import ArgumentChecker, full_schemas
from proxy.config import Route, Runtime, Target
from proxy.eval.cases import EvalCase
from proxy.eval.compare import FAILED, AnsweredCall, Verdict, score_text_turn, score_tool_turn
from proxy.eval.responses import answered_calls as responses_calls
from proxy.eval.responses import responses_request
from proxy.routing import VARIANT_HEADER
from proxy.server import bound_port, start_site

MAX_ERROR_CHARS = 300
# What an answer gives the judge: its calls, then its prompt and completion tokens.
Answer = tuple[tuple[AnsweredCall, ...], int | None, int | None]


@dataclass(frozen=True)
class EvalSettings:
    route: str
    variants: tuple[str, ...]
    concurrency: int = 4
    timeout_s: float = 120.0
    retries: int = 0  # the SDK's own retries (429, 5xx, connection errors); 0 counts every failure
    temperature: float | None = None  # None: the request carries none, as the example had none
    max_tokens: int | None = None
    api: str = "chat"  # `responses`: each case replayed through the Responses API


@dataclass(frozen=True)
class Outcome:
    """One case sent to one variant, and what came back."""

    case: EvalCase
    variant: str
    verdict: Verdict
    calls: tuple[AnsweredCall, ...] = ()
    error: str | None = None  # set when the request failed (no answer to judge)
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    latency_s: float = 0.0

    @property
    def failed(self) -> bool:
        return self.error is not None


def eval_runtime(runtime: Runtime, route_name: str, client_key: str) -> Runtime:
    """`runtime` with the route set up for eval (see the module docstring)."""
    route = runtime.routes[route_name]
    pinned = replace(route, allow_variant_override=True, fallback=(), shadow=None)
    return replace(
        runtime, routes={**runtime.routes, route_name: pinned}, client_keys=(client_key,)
    )


@asynccontextmanager
async def proxy_client(
    runtime: Runtime, settings: EvalSettings
) -> AsyncIterator[openai.AsyncOpenAI]:
    """The proxy app on a free loopback port, and an SDK client for it."""
    key = f"eval-{secrets.token_urlsafe(24)}"
    runner = await start_site(build_app(eval_runtime(runtime, settings.route, key)), "127.0.0.1", 0)
    client = openai.AsyncOpenAI(
        base_url=f"http://127.0.0.1:{bound_port(runner)}/v1",
        api_key=key,
        max_retries=settings.retries,
        timeout=settings.timeout_s,
    )
    try:
        yield client
    finally:
        await client.close()
        await runner.cleanup()


@dataclass
class EvalRun:
    """One run; `outcomes` fills as answers arrive, so a stopped run keeps what it measured."""

    runtime: Runtime
    settings: EvalSettings
    on_outcome: Callable[[Outcome], None] = lambda outcome: None
    outcomes: list[Outcome] = field(default_factory=list)
    checker: ArgumentChecker = field(default_factory=ArgumentChecker)

    @property
    def route(self) -> Route:
        return self.runtime.routes[self.settings.route]

    async def run(self, cases: Sequence[EvalCase]) -> list[Outcome]:
        jobs = iter([(case, variant) for case in cases for variant in self.settings.variants])
        async with proxy_client(self.runtime, self.settings) as client:

            async def worker() -> None:
                # One shared iterator: each job is taken once (the loop runs one task at a time).
                for case, variant in jobs:
                    outcome = await self.ask(client, case, variant)
                    self.outcomes.append(outcome)
                    self.on_outcome(outcome)

            await asyncio.gather(*(worker() for _ in range(max(1, self.settings.concurrency))))
        return self.outcomes

    async def ask(self, client: openai.AsyncOpenAI, case: EvalCase, variant: str) -> Outcome:
        """Send one case to one variant and judge the answer; a failure is an outcome too."""
        started = time.perf_counter()
        headers = {VARIANT_HEADER: variant, "x-request-id": f"eval-{case.id}"}
        try:
            async with asyncio.timeout(self.settings.timeout_s):
                if self.settings.api == "responses":
                    answer = await self.ask_responses(client, case, headers)
                else:
                    answer = await self.ask_chat(client, case, headers)
        except (openai.OpenAIError, TimeoutError) as exc:
            latency = time.perf_counter() - started
            return Outcome(case, variant, FAILED, error=describe_failure(exc), latency_s=latency)
        latency = time.perf_counter() - started
        if isinstance(answer, str):
            return Outcome(case, variant, FAILED, error=answer, latency_s=latency)
        calls, prompt_tokens, completion_tokens = answer
        return Outcome(
            case,
            variant,
            self.judge(case, calls, self.target(variant)),
            calls=calls,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            latency_s=latency,
        )

    async def ask_chat(
        self, client: openai.AsyncOpenAI, case: EvalCase, headers: dict[str, str]
    ) -> Answer | str:
        """The calls and token counts of the chat answer, or what was wrong with it."""
        completion = await client.chat.completions.create(
            **self.request(case), extra_headers=headers
        )
        if not completion.choices:
            return "the answer has no choices"
        usage = completion.usage
        return (
            answered_calls(completion.choices[0].message),
            usage.prompt_tokens if usage else None,
            usage.completion_tokens if usage else None,
        )

    async def ask_responses(
        self, client: openai.AsyncOpenAI, case: EvalCase, headers: dict[str, str]
    ) -> Answer | str:
        """The same case through the Responses API (see `eval.responses`)."""
        chat = self.request(case)
        body = responses_request({"messages": chat["messages"], **chat["extra_body"]})
        response = await client.responses.create(
            model=chat["model"],
            input=body.pop("input"),
            extra_body=body,
            extra_headers=headers,
        )
        usage = response.usage
        return (
            responses_calls(response),
            usage.input_tokens if usage else None,
            usage.output_tokens if usage else None,
        )

    def request(self, case: EvalCase) -> dict[str, Any]:
        """The SDK call's arguments: the application's request for this case."""
        body: dict[str, Any] = {k: v for k, v in case.request.items() if k != "messages"}
        if self.settings.temperature is not None:
            body["temperature"] = self.settings.temperature
        if self.settings.max_tokens is not None:
            body["max_tokens"] = self.settings.max_tokens
        # Everything but the messages goes as extra_body: sent as given, never re-typed.
        return {
            "model": self.settings.route,
            "messages": case.request["messages"],
            "extra_body": body,
        }

    def target(self, variant: str) -> Target:
        target = self.route.variant(variant)
        if target is None:
            raise KeyError(f"route {self.settings.route!r} has no variant {variant!r}")
        return target

    def judge(self, case: EvalCase, calls: tuple[AnsweredCall, ...], target: Target) -> Verdict:
        if case.kind == "no_call":
            return score_text_turn(calls)
        # The full schemas, as the proxy's own check uses them: the application's definitions
        # (the example's tools) first, the training ones for functions it did not define.
        schemas = full_schemas(target.policy, case.request.get("tools"))
        return score_tool_turn(case.expected, calls, schemas, self.checker)


def answered_calls(message: Any) -> tuple[AnsweredCall, ...]:
    calls = []
    for call in getattr(message, "tool_calls", None) or []:
        function = getattr(call, "function", None)
        if function is not None:
            calls.append(AnsweredCall(str(function.name), str(function.arguments)))
    return tuple(calls)


def describe_failure(exc: BaseException) -> str:
    if isinstance(exc, openai.APIStatusError):
        # The SDK's message repeats the status and may print the whole body; the error
        # object's own message is what the upstream (or the proxy) said.
        body = exc.body
        detail = body.get("message") if isinstance(body, dict) else None
        text = f"HTTP {exc.status_code}: {detail if isinstance(detail, str) else exc.message}"
    elif isinstance(exc, TimeoutError | openai.APITimeoutError):
        text = "timed out"
    elif isinstance(exc, openai.APIConnectionError):
        text = f"connection failed: {exc.message}"
    else:
        text = f"{type(exc).__name__}: {exc}"
    return text[:MAX_ERROR_CHARS]
