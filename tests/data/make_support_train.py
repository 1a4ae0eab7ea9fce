"""Write `policies/support.train.jsonl`, the example fine-tuning file of the support agent.

The tool definitions come from `policies/support.tools.json` and the system prompt from
`policies/support-full.yaml`, so the three files cannot drift apart: extracting the tools of
the training file gives `support.tools.json` back, and the policy's prompt is the one the
model was trained on. The output is deterministic (no randomness, fixed call ids), so a
test can regenerate it and compare.

Usage: python tests/data/make_support_train.py [-o OUTPUT]
"""

from __future__ import annotations

import json
from typing import Any

from support_examples import write_examples

Message = dict[str, Any]


def user(text: str) -> Message:
    return {"role": "user", "content": text}


def say(text: str, weight: int | None = None) -> Message:
    """An assistant text turn; `weight: 0` keeps a turn as context without training on it."""
    message: Message = {"role": "assistant", "content": text}
    if weight is not None:
        message["weight"] = weight
    return message


def call(call_id: str, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    # The API types `arguments` as a JSON-encoded string, never an object.
    return {
        "id": call_id,
        "type": "function",
        "function": {"name": name, "arguments": json.dumps(arguments, ensure_ascii=False)},
    }


def calls(*tool_calls: dict[str, Any]) -> Message:
    return {"role": "assistant", "tool_calls": list(tool_calls)}


def result(call_id: str, content: dict[str, Any]) -> Message:
    # Tool results are plain strings: the training-file validator rejects content parts.
    return {"role": "tool", "tool_call_id": call_id, "content": json.dumps(content)}


def conversations() -> list[tuple[list[Message], bool]]:
    """Each conversation without its system prompt, and whether it allows parallel calls."""
    return [
        (_policy_question(), False),
        (_where_is_my_order(), False),
        (_order_without_number(), False),
        (_cancel_order(), False),
        (_change_address(), False),
        (_return_items(), False),
        (_refund_late_delivery(), False),
        (_refund_status(), False),
        (_change_phone_number(), False),
        (_password_reset(), False),
        (_upgrade_plan(), False),
        (_pause_instead_of_cancel(), False),
        (_cancel_subscription(), False),
        (_damaged_item_ticket(), False),
        (_ticket_follow_up(), False),
        (_escalate(), False),
        (_two_parcels_in_parallel(), True),
    ]


def _policy_question() -> list[Message]:
    return [
        user("How long do I have to send back shoes that don't fit?"),
        calls(
            call(
                "call_k1",
                "search_knowledge_base",
                {"query": "return window shoes", "category": "returns", "max_results": 3},
            )
        ),
        result(
            "call_k1",
            {"articles": [{"title": "Returns and exchanges", "excerpt": "30 days from delivery"}]},
        ),
        say("You have 30 days from delivery to return them, free of charge."),
    ]


def _where_is_my_order() -> list[Message]:
    return [
        user("Where is my order ORD-104233? It was due yesterday."),
        calls(
            call("call_o1", "lookup_order", {"order_id": "ORD-104233", "include": ["shipments"]})
        ),
        result(
            "call_o1",
            {
                "status": "shipped",
                "shipments": [{"carrier": "dhl", "tracking_number": "00340434161094042557"}],
            },
        ),
        calls(
            call(
                "call_o2",
                "track_shipment",
                {"tracking_number": "00340434161094042557", "carrier": "dhl"},
            )
        ),
        result("call_o2", {"state": "in_transit", "estimated_delivery": "2025-03-14"}),
        say("Your parcel is on its way with DHL and should arrive on 14 March."),
    ]


def _order_without_number() -> list[Message]:
    return [
        user("I ordered a lamp last week but lost the e-mail. I'm maria.lopez@example.com."),
        calls(
            call(
                "call_c1",
                "get_customer_profile",
                {"identifier": {"email": "maria.lopez@example.com"}},
            )
        ),
        result("call_c1", {"customer_id": "CUS-20418", "name": "Maria Lopez"}),
        calls(
            call(
                "call_c2",
                "list_customer_orders",
                {"customer_id": "CUS-20418", "status": "open", "limit": 5},
            )
        ),
        result("call_c2", {"orders": [{"order_id": "ORD-118842", "items": ["Desk lamp Arco"]}]}),
        say("Found it: your desk lamp is order ORD-118842 and it is being packed."),
    ]


def _cancel_order() -> list[Message]:
    return [
        user("Please cancel ORD-120517, I ordered it twice by mistake."),
        say("Just to confirm: shall I cancel order ORD-120517 and keep the other one?"),
        user("Yes please."),
        calls(
            call(
                "call_x1",
                "cancel_order",
                {"order_id": "ORD-120517", "reason": "duplicate_order", "notify_customer": True},
            )
        ),
        result("call_x1", {"cancelled": True, "refund_id": "REF-55120"}),
        say("Done: ORD-120517 is cancelled and the payment is being returned (REF-55120)."),
    ]


def _change_address() -> list[Message]:
    address = {
        "recipient": "Jonas Weber",
        "line1": "Lindenstraße 12",
        "line2": "3. OG",
        "city": "Leipzig",
        "postal_code": "04109",
        "country": "DE",
    }
    return [
        user(
            "I moved! Can ORD-121009 go to Lindenstraße 12, 3. OG, 04109 Leipzig instead? "
            "Name is Jonas Weber."
        ),
        calls(
            call(
                "call_a1",
                "update_shipping_address",
                {"order_id": "ORD-121009", "address": address},
            )
        ),
        result("call_a1", {"updated": True}),
        say("Updated: ORD-121009 will go to Lindenstraße 12, 3. OG, 04109 Leipzig."),
    ]


def _return_items() -> list[Message]:
    items = [
        {"sku": "TS-BLU-M", "quantity": 2, "reason": "size_or_fit"},
        {"sku": "MUG-WHT", "quantity": 1, "reason": "damaged"},
    ]
    return [
        user(
            "From ORD-109876 I want to return the two blue T-shirts (too small) and the "
            "mug, which arrived cracked. Store credit is fine."
        ),
        calls(
            call(
                "call_r1",
                "create_return",
                {"order_id": "ORD-109876", "items": items, "refund_method": "store_credit"},
            )
        ),
        result("call_r1", {"return_id": "RMA-7731", "label_sent_to": "customer e-mail"}),
        say("Your return RMA-7731 is open; the prepaid label is in your inbox."),
    ]


def _refund_late_delivery() -> list[Message]:
    return [
        user("ORD-115530 came five days late and I paid 12.50 EUR for express shipping."),
        say("Sorry about that. Shall I refund the 12.50 EUR express fee?"),
        user("Yes."),
        calls(
            call(
                "call_f1",
                "issue_refund",
                {
                    "order_id": "ORD-115530",
                    "amount": {"value": 12.5, "currency": "EUR"},
                    "reason": "late_delivery",
                },
            )
        ),
        result("call_f1", {"refund_id": "REF-60231", "status": "pending"}),
        say("The 12.50 EUR are on their way back to your card (refund REF-60231)."),
    ]


def _refund_status() -> list[Message]:
    return [
        user("My refund REF-58810 still isn't on my account."),
        calls(call("call_s1", "check_refund_status", {"refund_id": "REF-58810"})),
        result("call_s1", {"status": "sent_to_bank", "expected_arrival": "2025-03-18"}),
        say("It left us and your bank should show it by 18 March."),
    ]


def _change_phone_number() -> list[Message]:
    return [
        user("I need to change my phone number to +4915112345678. Account CUS-31002."),
        calls(call("call_v1", "verify_identity", {"customer_id": "CUS-31002", "method": "email"})),
        result("call_v1", {"sent": True}),
        say("I've e-mailed you a six-digit code. Please read it back to me."),
        user("It's 482913."),
        calls(
            call(
                "call_v2",
                "verify_identity",
                {"customer_id": "CUS-31002", "method": "email", "code": "482913"},
            )
        ),
        result("call_v2", {"verified": True}),
        calls(
            call(
                "call_v3",
                "update_customer_profile",
                {"customer_id": "CUS-31002", "changes": {"phone": "+4915112345678"}},
            )
        ),
        result("call_v3", {"updated": ["phone"]}),
        say("Thanks, your phone number is now +4915112345678."),
    ]


def _password_reset() -> list[Message]:
    return [
        user("I can't log in. Account CUS-27745."),
        # A real transcript's mistake: kept as context, not trained on.
        say("Could you tell me your old password so I can check it?", weight=0),
        user("Isn't that unsafe?"),
        calls(call("call_p1", "reset_password", {"customer_id": "CUS-27745", "delivery": "email"})),
        result("call_p1", {"sent": True}),
        say(
            "You're right, never share it. I've e-mailed you a link to set a new password.",
            weight=1,
        ),
    ]


def _upgrade_plan() -> list[Message]:
    return [
        user("I'd like the family plan from today. Customer CUS-40027."),
        calls(call("call_u1", "get_subscription", {"customer_id": "CUS-40027"})),
        result(
            "call_u1", {"subscription_id": "SUB-9012", "plan": "plus", "renews_on": "2025-04-01"}
        ),
        calls(
            call(
                "call_u2",
                "change_subscription_plan",
                {"subscription_id": "SUB-9012", "plan": "family", "effective": "now"},
            )
        ),
        result("call_u2", {"plan": "family", "prorated_charge": {"value": 4.2, "currency": "EUR"}}),
        say("You're on the family plan now; this month costs 4.20 EUR extra."),
    ]


def _pause_instead_of_cancel() -> list[Message]:
    return [
        user("I'm travelling for two months, cancel subscription SUB-7781."),
        say("Would you rather pause it until you're back? Nothing is billed during a pause."),
        user("Oh nice, pause it until 1 June then."),
        calls(
            call(
                "call_z1",
                "pause_subscription",
                {"subscription_id": "SUB-7781", "resume_on": "2025-06-01", "reason": "travelling"},
            )
        ),
        result("call_z1", {"paused": True, "resume_on": "2025-06-01"}),
        say("Paused: no deliveries or charges until 1 June. Have a good trip!"),
    ]


def _cancel_subscription() -> list[Message]:
    return [
        user("Cancel SUB-6604. Too expensive since the price went up."),
        say("I can pause it instead, free of charge. Or shall I cancel it for good?"),
        user("Cancel it."),
        calls(
            call(
                "call_y1",
                "cancel_subscription",
                {
                    "subscription_id": "SUB-6604",
                    "reason": "too_expensive",
                    "feedback": "Too expensive since the price went up.",
                },
            )
        ),
        result("call_y1", {"cancelled": True, "ends_on": "2025-03-31"}),
        say("Cancelled; you keep your deliveries until 31 March."),
    ]


def _damaged_item_ticket() -> list[Message]:
    return [
        user(
            "The coffee machine from ORD-111204 leaks after a week. Photo: "
            "https://files.example.com/u/leak.jpg. Account CUS-15873."
        ),
        calls(
            call(
                "call_t1",
                "create_ticket",
                {
                    "customer_id": "CUS-15873",
                    "subject": "Coffee machine leaks after one week",
                    "description": (
                        "Customer reports the machine from ORD-111204 leaks water after a "
                        "week of use. Photo attached. Wants a repair or replacement."
                    ),
                    "category": "technical",
                    "priority": "high",
                    "order_id": "ORD-111204",
                    "attachments": [
                        {"filename": "leak.jpg", "url": "https://files.example.com/u/leak.jpg"}
                    ],
                },
            )
        ),
        result("call_t1", {"ticket_id": "TCK-300512"}),
        say("I've opened ticket TCK-300512; a technician will contact you within a day."),
    ]


def _ticket_follow_up() -> list[Message]:
    return [
        user("About ticket TCK-298870: the courier never came to pick up the parcel."),
        calls(
            call(
                "call_n1",
                "add_ticket_note",
                {
                    "ticket_id": "TCK-298870",
                    "note": "Customer says the courier did not come for the pickup.",
                    "visibility": "internal",
                },
            )
        ),
        result("call_n1", {"added": True}),
        say("I've added that to your ticket; the logistics team will book a new pickup."),
    ]


def _escalate() -> list[Message]:
    return [
        user("I want a person. Your product damaged my floor and I'm talking to a lawyer."),
        calls(
            call(
                "call_e1",
                "escalate_to_human",
                {
                    "reason": "legal",
                    "summary": (
                        "Customer says a product damaged their floor and mentions a lawyer. "
                        "Asked for a person."
                    ),
                    "department": "trust_and_safety",
                },
            )
        ),
        result("call_e1", {"queued": True, "expected_wait_minutes": 4}),
        say("I've passed you to a colleague; they'll join in about four minutes."),
    ]


def _two_parcels_in_parallel() -> list[Message]:
    # Two independent read-only look-ups: the one case where parallel calls are trained.
    return [
        user("Where are my parcels 1Z999AA10123456784 and 1Z999AA10123456791 (both UPS)?"),
        calls(
            call(
                "call_g1",
                "track_shipment",
                {"tracking_number": "1Z999AA10123456784", "carrier": "ups"},
            ),
            call(
                "call_g2",
                "track_shipment",
                {"tracking_number": "1Z999AA10123456791", "carrier": "ups"},
            ),
        ),
        result("call_g1", {"state": "delivered", "delivered_at": "2025-03-10"}),
        result("call_g2", {"state": "out_for_delivery", "estimated_delivery": "2025-03-12"}),
        say("The first was delivered on 10 March; the second is out for delivery today."),
    ]


def main() -> None:
    write_examples(__doc__.splitlines()[0], "support.train.jsonl", conversations())


if __name__ == "__main__":
    main()
