"""A named `tool_choice` on llama-server: emulated by the proxy, or passed as sent.

llama-server treats `tool_choice: {"type": "function", "function": {"name": F}}` as `auto`
and only logs a warning. With `server: llama.cpp` on the upstream the proxy knows it, and
emulates the choice: only F is offered, with `tool_choice: "required"` (the rewrite action
`tool_choice_emulated`). This script sends the first N held-out user turns whose answer calls
a tool through `tuned-proxy serve` to two variants on the same server, with the same policy
(support-full):

- `emulated`: the upstream says `server: llama.cpp`;
- `plain`: the upstream says `server: other`, so the named choice reaches the server as sent.

Each turn names F twice: the function the held-out answer calls, and another plausible one
(`OTHER` below: a neighbour the application might force at that point). The table gives, per
variant and choice, how many answers call F.

Usage (from the repository root, after setup.sh):
    .venv/bin/python tests/bench/real_model/run_levers.py [--limit 20] [--api chat|responses]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import llama
import openai
import yaml

ROUTE = "support-agent"
VARIANT_HEADER = "x-tuned-proxy-variant"
VARIANTS = {"plain": "other", "emulated": "llama.cpp"}  # variant: the upstream's `server`
# A function the application might force instead of the expected one: the neighbour in the
# same part of the support flow (look before acting, verify before changing, …).
OTHER = {
    "search_knowledge_base": "create_ticket",
    "lookup_order": "track_shipment",
    "list_customer_orders": "get_customer_profile",
    "cancel_order": "lookup_order",
    "update_shipping_address": "lookup_order",
    "track_shipment": "lookup_order",
    "create_return": "lookup_order",
    "issue_refund": "check_refund_status",
    "check_refund_status": "lookup_order",
    "get_customer_profile": "verify_identity",
    "update_customer_profile": "verify_identity",
    "verify_identity": "get_customer_profile",
    "reset_password": "verify_identity",
    "get_subscription": "change_subscription_plan",
    "change_subscription_plan": "get_subscription",
    "pause_subscription": "get_subscription",
    "cancel_subscription": "pause_subscription",
    "create_ticket": "escalate_to_human",
    "add_ticket_note": "create_ticket",
    "escalate_to_human": "create_ticket",
}


def write_config(run: Path, base: str) -> Path:
    run.mkdir(parents=True, exist_ok=True)
    upstreams = {
        f"llama-{server.replace('.', '')}": {
            "kind": "compatible",
            "server": server,
            "base_url": f"{base}/v1",
            "timeout_s": 900,
            "idle_timeout_s": 900,
        }
        for server in VARIANTS.values()
    }
    variants = [
        {
            "name": name,
            "upstream": f"llama-{server.replace('.', '')}",
            "model": llama.MODEL_NAME,
            "policy": "support-full",
            "weight": 1,
        }
        for name, server in VARIANTS.items()
    ]
    config = {
        "policies_dir": str(llama.POLICIES),
        "upstreams": upstreams,
        "routes": {
            ROUTE: {
                "allow_variant_override": True,
                "sticky": "header:x-user-id",
                "variants": variants,
            }
        },
    }
    path = run / "levers.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def ask(
    client: openai.OpenAI, api: str, case: Any, function: str, variant: str, max_tokens: int
) -> dict[str, Any]:
    """One turn with `function` named; the names it called, or the error."""
    headers = {VARIANT_HEADER: variant}
    try:
        if api == "responses":
            from proxy.eval.responses import responses_request

            body = responses_request({**case.request, "temperature": 0, "max_tokens": max_tokens})
            response = client.responses.create(
                model=ROUTE,
                **body,
                tool_choice={"type": "function", "name": function},
                extra_headers=headers,
            )
            calls = [item.name for item in response.output if item.type == "function_call"]
            prompt = response.usage.input_tokens if response.usage else None
        else:
            completion = client.chat.completions.create(
                model=ROUTE,
                **case.request,
                tool_choice={"type": "function", "function": {"name": function}},
                temperature=0,
                max_tokens=max_tokens,
                extra_headers=headers,
            )
            message = completion.choices[0].message
            calls = [c.function.name for c in message.tool_calls or [] if c.type == "function"]
            prompt = completion.usage.prompt_tokens if completion.usage else None
    except openai.APIStatusError as exc:
        body = exc.body if isinstance(exc.body, dict) else {}
        return {"error": f"HTTP {exc.status_code}: {body.get('message', exc.message)}"[:160]}
    return {"calls": calls, "prompt_tokens": prompt}


def row(results: list[dict[str, Any]], variant: str, which: str) -> list[object]:
    answers = [r for r in results if r["variant"] == variant and r["which"] == which]
    ok = [a for a in answers if "error" not in a]
    named = sum(1 for a in ok if a["function"] in a["calls"])
    other = sum(1 for a in ok if a["calls"] and a["function"] not in a["calls"])
    prompts = [a["prompt_tokens"] for a in ok if a["prompt_tokens"]]
    return [
        f"{variant} (server: {VARIANTS[variant]})",
        which,
        len(answers),
        llama.percent(named, len(answers)),
        other,
        sum(1 for a in ok if not a["calls"]),
        len(answers) - len(ok),
        round(sum(prompts) / len(prompts)) if prompts else "-",
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=20, help="held-out user turns (default 20)")
    parser.add_argument("--api", choices=["chat", "responses"], default="chat")
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--run", type=Path, default=llama.CACHE / "run-levers")
    llama.add_server_arguments(parser)
    args = parser.parse_args()
    llama.exit_on_sigterm()
    args.run.mkdir(parents=True, exist_ok=True)
    turns = llama.user_tool_turns(args.limit)
    results: list[dict[str, Any]] = []
    started = time.monotonic()
    with llama.llama_server(args, args.run) as (base, server):
        config = write_config(args.run, base)
        with llama.proxy_serve(config, args.run) as proxy:
            print(f"llama-server on {base}; tuned-proxy on {proxy}; run folder {args.run}")
            client = llama.sdk_client(proxy)
            for number, case in enumerate(turns, 1):
                expected = case.expected[0].name
                for which, function in (("expected", expected), ("other", OTHER[expected])):
                    for variant in VARIANTS:
                        answer = ask(client, args.api, case, function, variant, args.max_tokens)
                        llama.check_alive(server, args.run / "llama-server.log", "during the run")
                        results.append(
                            {
                                "case": case.id,
                                "variant": variant,
                                "which": which,
                                "function": function,
                                **answer,
                            }
                        )
                        said = answer.get("calls") or answer.get("error") or "text"
                        print(f"[{number}/{len(turns)}] {case.id} {variant}, {function}: {said}")
            actions = llama.metric_values(proxy, "tuned_proxy_rewrites_total")
    (args.run / "levers.json").write_text(json.dumps(results, indent=1) + "\n")
    header = ["variant", "F", "requests", "calls F", "calls not F", "text", "failed"]
    header.append("prompt tok")
    rows = [row(results, v, w) for w in ("expected", "other") for v in VARIANTS]
    print(f"\nnamed tool_choice through the {args.api} API, {len(turns)} held-out user turns")
    print(llama.table(header, rows))
    emulated = {k: v for k, v in actions.items() if "tool_choice_emulated" in k}
    print("rewrites_total{action=tool_choice_emulated}: " + json.dumps(emulated))
    if server is not None:
        log = (args.run / "llama-server.log").read_text(errors="replace")
        warned = log.count("Wrong type supplied for parameter 'tool_choice'")
        print(f"llama-server warnings 'Wrong type supplied for parameter tool_choice': {warned}")
    print(f"{len(results)} requests in {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
