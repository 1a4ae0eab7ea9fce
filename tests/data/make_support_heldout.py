"""Write `policies/support.heldout.jsonl`, the support agent's held-out set for `tuned-proxy eval`.

Held out means never trained on: other customers, other order, refund, ticket and
subscription numbers, other phrasings than `support.train.jsonl`. It covers every one of the
20 tools, with turns that call one tool, turns that call two at once (parallel look-ups),
turns that need no tool (a confirmation before an action that moves money or cancels
something, a missing order number, small talk) and conversations that chain several calls
(verify the customer, then change the account).

Like the training file, the tools come from `policies/support.tools.json` and the system
prompt from `policies/support-full.yaml`. The output is deterministic (a seeded generator,
fixed call ids), so a test can regenerate it and compare.

Usage: python tests/data/make_support_heldout.py [-o OUTPUT]
"""

from __future__ import annotations

import itertools
import json
import random
from collections.abc import Callable, Iterator
from typing import Any

from support_examples import write_examples

SEED = 20261121
VARIANTS_PER_SCENARIO = 5

Message = dict[str, Any]
Conversation = tuple[list[Message], bool]  # messages without the system prompt; parallel allowed

CUSTOMERS = [
    ("Aiko Tanaka", "aiko.tanaka@example.org"),
    ("Bruno Costa", "bruno.costa@example.net"),
    ("Chloé Martin", "chloe.martin@example.fr"),
    ("Dmitri Volkov", "d.volkov@example.com"),
    ("Emeka Okafor", "emeka.okafor@example.ng"),
    ("Fatima Zahra Idrissi", "fz.idrissi@example.ma"),
    ("Gustav Lindqvist", "gustav.l@example.se"),
    ("Hannah Schmidt", "hannah.schmidt@example.de"),
    ("Ines Duarte", "ines.duarte@example.pt"),
    ("Julia Nowak", "julia.nowak@example.pl"),
    ("Kofi Mensah", "kofi.mensah@example.gh"),
    ("Lucía Fernández", "lucia.fdez@example.es"),
    ("Mateo Rossi", "mateo.rossi@example.it"),
    ("Nora Haddad", "nora.haddad@example.com"),
    ("Oliver Brown", "oliver.brown@example.co.uk"),
    ("Priya Nair", "priya.nair@example.in"),
]
ADDRESSES = [
    ("Kastanienallee 7", "Hinterhaus", "Berlin", "10435", "DE"),
    ("14 Rue des Lilas", None, "Lyon", "69003", "FR"),
    ("Via Garibaldi 22", "Scala B", "Torino", "10122", "IT"),
    ("Calle de Alcalá 150", "4º izq.", "Madrid", "28009", "ES"),
    ("Keizersgracht 301", None, "Amsterdam", "1016 ED", "NL"),
    ("ul. Długa 5", "m. 12", "Gdańsk", "80-827", "PL"),
    ("22 Baker Street", "Flat 3", "London", "NW1 6XE", "GB"),
]
CARRIERS = [("DHL", "dhl"), ("UPS", "ups"), ("FedEx", "fedex"), ("DPD", "dpd"), ("USPS", "usps")]
PRODUCTS = [
    ("JKT-GRN-L", "green rain jacket"),
    ("BOOT-BRN-42", "brown hiking boots"),
    ("LAMP-ARC-BLK", "black floor lamp"),
    ("PAN-CI-28", "cast-iron pan"),
    ("SCARF-WOOL-RED", "red wool scarf"),
    ("KETTLE-STL", "steel kettle"),
    ("TEE-WHT-S", "white T-shirt"),
]
KB_QUESTIONS = [
    (
        "Do you deliver to Switzerland, and are there customs fees?",
        "delivery to Switzerland customs fees",
        "shipping",
    ),
    ("What's the warranty on your coffee grinders?", "coffee grinder warranty", "product"),
    ("Can I pay by bank transfer or only by card?", "payment methods bank transfer", "billing"),
    ("How do I delete my account for good?", "delete account", "account"),
    (
        "Is there a fee if I skip a month of my subscription box?",
        "skip subscription month fee",
        "subscriptions",
    ),
    ("Can I return something I bought on sale?", "return sale items", "returns"),
    (
        "How long does express shipping take to Austria?",
        "express shipping time Austria",
        "shipping",
    ),
]
SMALL_TALK = [
    ("Hi there!", "Hello! How can I help you today?"),
    ("Thanks, that was quick. Bye!", "You're welcome, have a great day!"),
    (
        "Are you a real person?",
        "I'm Northwind Goods' virtual assistant. I can hand you over to a colleague if you'd like.",
    ),
    (
        "Good morning, I just wanted to say the new catalogue looks great.",
        "Thank you, that's lovely to hear! Is there anything I can help you with?",
    ),
    (
        "What can you do for me?",
        "I can help with orders, shipping, returns, refunds, your account and your "
        "subscription. What do you need?",
    ),
    ("Never mind, I found it myself.", "Great! Let me know if there's anything else."),
]


def user(text: str) -> Message:
    return {"role": "user", "content": text}


def say(text: str) -> Message:
    return {"role": "assistant", "content": text}


class Calls:
    """Call ids unique across the file (`call_h1`, `call_h2`, …), as in a real export."""

    def __init__(self) -> None:
        self._ids = itertools.count(1)

    def make(self, *calls: tuple[str, dict[str, Any]]) -> tuple[Message, list[str]]:
        ids = [f"call_h{next(self._ids)}" for _ in calls]
        message = {
            "role": "assistant",
            "tool_calls": [
                {
                    "id": call_id,
                    "type": "function",
                    "function": {
                        "name": name,
                        "arguments": json.dumps(arguments, ensure_ascii=False),
                    },
                }
                for call_id, (name, arguments) in zip(ids, calls, strict=True)
            ],
        }
        return message, ids


def result(call_id: str, content: dict[str, Any]) -> Message:
    return {"role": "tool", "tool_call_id": call_id, "content": json.dumps(content)}


class Ids:
    """Identifiers from ranges the training file does not use."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def order(self) -> str:
        return f"ORD-{self.rng.randint(600000, 989999)}"

    def customer(self) -> str:
        return f"CUS-{self.rng.randint(50000, 89999)}"

    def refund(self) -> str:
        return f"REF-{self.rng.randint(70000, 99999)}"

    def subscription(self) -> str:
        return f"SUB-{self.rng.randint(3000, 5999)}"

    def ticket(self) -> str:
        return f"TCK-{self.rng.randint(400000, 499999)}"

    def tracking(self, carrier: str) -> str:
        if carrier == "ups":
            return f"1Z{self.rng.randint(100, 999)}BB{self.rng.randint(10**9, 10**10 - 1)}"
        return str(self.rng.randint(10**17, 10**18 - 1))

    def code(self) -> str:
        return f"{self.rng.randint(0, 999999):06d}"

    def date(self, month_from: int = 7, month_to: int = 11) -> str:
        return f"2026-{self.rng.randint(month_from, month_to):02d}-{self.rng.randint(1, 28):02d}"


def spoken(date: str) -> str:
    """`2026-07-04` as a customer writes it: `4 July 2026`."""
    months = [
        "January", "February", "March", "April", "May", "June",
        "July", "August", "September", "October", "November", "December",
    ]  # fmt: skip
    year, month, day = date.split("-")
    return f"{int(day)} {months[int(month) - 1]} {year}"


class Scenarios:
    """One method per situation; each returns a conversation for variant `i` of it."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.ids = Ids(rng)
        self.calls = Calls()

    def pick(self, pool: list[Any], i: int) -> Any:
        return pool[i % len(pool)]

    # -- single look-ups -----------------------------------------------------------------

    def knowledge_base(self, i: int) -> Conversation:
        question, query, category = self.pick(KB_QUESTIONS, i)
        message, (cid,) = self.calls.make(
            ("search_knowledge_base", {"query": query, "category": category})
        )
        return [
            user(question),
            message,
            result(cid, {"articles": [{"title": "Help centre", "excerpt": "See our policy."}]}),
            say("Here is what our help centre says about it."),
        ], False

    def lookup_order(self, i: int) -> Conversation:
        order = self.ids.order()
        phrasings = [
            (f"What did I actually buy in {order}? I can't find the receipt.", ["items"]),
            (f"Has order {order} been paid? My bank shows nothing.", ["payments"]),
            (f"Can you tell me the status of {order}?", None),
            (
                f"Order {order}: which items are in it and has it shipped yet?",
                ["items", "shipments"],
            ),
            (f"Look up {order} for me please, including its history.", ["history"]),
        ]
        text, include = self.pick(phrasings, i)
        arguments: dict[str, Any] = {"order_id": order}
        if include:
            arguments["include"] = include
        message, (cid,) = self.calls.make(("lookup_order", arguments))
        return [
            user(text),
            message,
            result(cid, {"order_id": order, "status": "processing", "paid": True}),
            say(f"Order {order} is paid and being prepared."),
        ], False

    def list_orders(self, i: int) -> Conversation:
        customer, since = self.ids.customer(), self.ids.date(1, 6)
        phrasings = [
            (f"Which of my orders are still open? Customer number {customer}.", {"status": "open"}),
            (
                f"Show me everything I ordered since {spoken(since)}. I'm {customer}.",
                {"since": since},
            ),
            (f"I'm customer {customer}; list my last 3 orders.", {"limit": 3}),
            (f"Customer {customer} here. What have I returned so far?", {"status": "returned"}),
            (f"Can you list my delivered orders? My id is {customer}.", {"status": "delivered"}),
        ]
        text, extra = self.pick(phrasings, i)
        message, (cid,) = self.calls.make(
            ("list_customer_orders", {"customer_id": customer, **extra})
        )
        return [
            user(text),
            message,
            result(cid, {"orders": [{"order_id": self.ids.order(), "status": "open"}]}),
            say("Here are the orders I found on your account."),
        ], False

    def track(self, i: int) -> Conversation:
        carrier_name, carrier = self.pick(CARRIERS, i)
        number = self.ids.tracking(carrier)
        phrasings = [
            f"Where is my {carrier_name} parcel {number}?",
            f"Tracking number {number} ({carrier_name}) hasn't moved for days.",
            f"Can you check {carrier_name} shipment {number} for me?",
        ]
        message, (cid,) = self.calls.make(
            ("track_shipment", {"tracking_number": number, "carrier": carrier})
        )
        return [
            user(self.pick(phrasings, i)),
            message,
            result(cid, {"state": "in_transit", "estimated_delivery": self.ids.date()}),
            say("It's on its way and should arrive within two days."),
        ], False

    def refund_status(self, i: int) -> Conversation:
        refund = self.ids.refund()
        phrasings = [
            f"Has refund {refund} been paid out yet?",
            f"I'm still waiting for my money back, the reference is {refund}.",
            f"What's happening with {refund}? It's been two weeks.",
        ]
        message, (cid,) = self.calls.make(("check_refund_status", {"refund_id": refund}))
        return [
            user(self.pick(phrasings, i)),
            message,
            result(cid, {"status": "sent_to_bank", "expected_arrival": self.ids.date()}),
            say("The refund has left us; your bank should show it within a few days."),
        ], False

    def profile(self, i: int) -> Conversation:
        name, email = self.pick(CUSTOMERS, i)
        customer = self.ids.customer()
        phrasings = [
            (
                f"Hi, I'm {name} ({email}). Which address do you have on file for me?",
                {"email": email},
            ),
            (f"Can you pull up my account? Customer id {customer}.", {"customer_id": customer}),
            (f"My e-mail is {email}, is my account still active?", {"email": email}),
        ]
        text, identifier = self.pick(phrasings, i)
        message, (cid,) = self.calls.make(("get_customer_profile", {"identifier": identifier}))
        return [
            user(text),
            message,
            result(cid, {"customer_id": customer, "name": name, "status": "active"}),
            say("I found your account; it is active."),
        ], False

    def subscription(self, i: int) -> Conversation:
        customer = self.ids.customer()
        phrasings = [
            f"When does my subscription renew? I'm {customer}.",
            f"Which plan am I on? Customer {customer}.",
            f"Customer {customer}: how much am I paying per month for my box?",
        ]
        message, (cid,) = self.calls.make(("get_subscription", {"customer_id": customer}))
        return [
            user(self.pick(phrasings, i)),
            message,
            result(cid, {"subscription_id": self.ids.subscription(), "plan": "plus"}),
            say("You're on the plus plan; it renews on the 1st of next month."),
        ], False

    def reset_password(self, i: int) -> Conversation:
        customer = self.ids.customer()
        phrasings = [
            (f"I forgot my password. Account {customer}, please text me the link.", "sms"),
            (f"Locked out of account {customer}. Send a reset link to my e-mail.", "email"),
            (f"Password reset for {customer} please, by SMS.", "sms"),
        ]
        text, delivery = self.pick(phrasings, i)
        message, (cid,) = self.calls.make(
            ("reset_password", {"customer_id": customer, "delivery": delivery})
        )
        return [
            user(text),
            message,
            result(cid, {"sent": True}),
            say("Done, the reset link is on its way."),
        ], False

    # -- actions that change something -------------------------------------------------------

    def cancel_order(self, i: int) -> Conversation:
        """The prompt asks to confirm before cancelling: a turn that needs no tool first."""
        order = self.ids.order()
        phrasings = [
            (f"Please cancel {order}, I changed my mind.", "customer_request"),
            (f"I ordered {order} twice by accident, cancel this one.", "duplicate_order"),
            (f"The payment for {order} keeps failing, just cancel it.", "payment_issue"),
        ]
        text, reason = self.pick(phrasings, i)
        message, (cid,) = self.calls.make(("cancel_order", {"order_id": order, "reason": reason}))
        return [
            user(text),
            say(f"Shall I cancel order {order} now? This can't be undone."),
            user("Yes, go ahead."),
            message,
            result(cid, {"cancelled": True}),
            say(f"Order {order} is cancelled."),
        ], False

    def update_address(self, i: int) -> Conversation:
        order = self.ids.order()
        name, _ = self.pick(CUSTOMERS, i + 3)
        line1, line2, city, postal, country = self.pick(ADDRESSES, i)
        written = ", ".join(part for part in (line1, line2, f"{postal} {city}") if part)
        address = {"recipient": name, "line1": line1}
        if line2:
            address["line2"] = line2
        address.update({"city": city, "postal_code": postal, "country": country})
        message, (cid,) = self.calls.make(
            ("update_shipping_address", {"order_id": order, "address": address})
        )
        return [
            user(f"Please send {order} to {written} ({country}) instead, for {name}."),
            message,
            result(cid, {"updated": True}),
            say(f"{order} will now go to {written}."),
        ], False

    def create_return(self, i: int) -> Conversation:
        order = self.ids.order()
        sku, product = self.pick(PRODUCTS, i)
        reasons = [
            ("it arrived damaged", "damaged"),
            ("it's the wrong size", "size_or_fit"),
            ("you sent the wrong item", "wrong_item"),
            ("I don't need it anymore", "no_longer_needed"),
            ("it looks nothing like the photos", "not_as_described"),
        ]
        spoken_reason, reason = self.pick(reasons, i)
        methods = [("a refund to my card", "original_payment"), ("store credit", "store_credit")]
        spoken_method, method = self.pick(methods, i)
        message, (cid,) = self.calls.make(
            (
                "create_return",
                {
                    "order_id": order,
                    "items": [{"sku": sku, "quantity": 1, "reason": reason}],
                    "refund_method": method,
                },
            )
        )
        return [
            user(
                f"I want to return the {product} (SKU {sku}) from {order} because "
                f"{spoken_reason}. I'd like {spoken_method}."
            ),
            message,
            result(cid, {"return_id": f"RMA-{self.rng.randint(8000, 9999)}"}),
            say("Your return is open and the label is in your inbox."),
        ], False

    def issue_refund(self, i: int) -> Conversation:
        order = self.ids.order()
        cases = [
            ("a missing item worth 19.90 EUR", 19.9, "EUR", "missing_item"),
            ("a late delivery; I paid 7.50 GBP for express", 7.5, "GBP", "late_delivery"),
            ("a price drop of 15 USD a day after I bought it", 15, "USD", "price_adjustment"),
            ("a cracked vase, it cost 42.00 EUR", 42.0, "EUR", "damaged_item"),
        ]
        why, value, currency, reason = self.pick(cases, i)
        message, (cid,) = self.calls.make(
            (
                "issue_refund",
                {
                    "order_id": order,
                    "amount": {"value": value, "currency": currency},
                    "reason": reason,
                },
            )
        )
        return [
            user(f"I'd like a refund on {order} for {why}."),
            say(f"I can refund {value:.2f} {currency} on {order}. Shall I go ahead?"),
            user("Yes please."),
            message,
            result(cid, {"refund_id": self.ids.refund(), "status": "pending"}),
            say("The refund is on its way to your original payment method."),
        ], False

    def change_account(self, i: int) -> Conversation:
        """Verify first, then change: three calls in one conversation."""
        customer, code = self.ids.customer(), self.ids.code()
        name, email = self.pick(CUSTOMERS, i + 7)
        changes = [
            ("please stop sending me marketing e-mails", {"marketing_opt_in": False}),
            (f"my new e-mail address is {email}", {"email": email}),
            (f"please change the name on my account to {name}", {"name": name}),
            ("my new phone number is +447700900123", {"phone": "+447700900123"}),
        ]
        request, change = self.pick(changes, i)
        method = self.pick(["email", "sms"], i)
        first, (c1,) = self.calls.make(
            ("verify_identity", {"customer_id": customer, "method": method})
        )
        second, (c2,) = self.calls.make(
            ("verify_identity", {"customer_id": customer, "method": method, "code": code})
        )
        third, (c3,) = self.calls.make(
            ("update_customer_profile", {"customer_id": customer, "changes": change})
        )
        channel = "e-mail" if method == "email" else "text message"
        return [
            user(f"Account {customer}: {request}. You can verify me by {channel}."),
            first,
            result(c1, {"sent": True}),
            say("I've sent you a six-digit code. Please read it back to me."),
            user(f"The code is {code}."),
            second,
            result(c2, {"verified": True}),
            third,
            result(c3, {"updated": list(change)}),
            say("Thanks, your account is updated."),
        ], False

    def change_plan(self, i: int) -> Conversation:
        customer, subscription = self.ids.customer(), self.ids.subscription()
        plans = [
            ("the business plan, starting right away", "business", "now"),
            ("the basic plan from my next billing cycle", "basic", "next_cycle"),
            ("the family plan, effective immediately", "family", "now"),
        ]
        wanted, plan, effective = self.pick(plans, i)
        lookup, (c1,) = self.calls.make(("get_subscription", {"customer_id": customer}))
        change, (c2,) = self.calls.make(
            (
                "change_subscription_plan",
                {"subscription_id": subscription, "plan": plan, "effective": effective},
            )
        )
        return [
            user(f"Customer {customer}. I'd like to switch to {wanted}."),
            lookup,
            result(c1, {"subscription_id": subscription, "plan": "plus"}),
            change,
            result(c2, {"plan": plan}),
            say(f"You're now on the {plan} plan."),
        ], False

    def pause(self, i: int) -> Conversation:
        subscription, until = self.ids.subscription(), self.ids.date(8, 12)
        phrasings = [
            f"Pause {subscription} until {spoken(until)} please, I'll be abroad.",
            f"Can you put subscription {subscription} on hold until {spoken(until)}?",
            f"No deliveries for {subscription} until {spoken(until)}, thanks.",
        ]
        message, (cid,) = self.calls.make(
            ("pause_subscription", {"subscription_id": subscription, "resume_on": until})
        )
        return [
            user(self.pick(phrasings, i)),
            message,
            result(cid, {"paused": True, "resume_on": until}),
            say(f"Paused until {spoken(until)}; nothing is billed meanwhile."),
        ], False

    def cancel_subscription(self, i: int) -> Conversation:
        subscription = self.ids.subscription()
        reasons = [
            ("I'm moving abroad", "moving"),
            ("I barely use it", "not_using"),
            ("I'm switching to another provider", "switching_provider"),
            ("the quality went down", "quality"),
        ]
        spoken_reason, reason = self.pick(reasons, i)
        message, (cid,) = self.calls.make(
            ("cancel_subscription", {"subscription_id": subscription, "reason": reason})
        )
        return [
            user(f"Cancel my subscription {subscription}, {spoken_reason}."),
            say("I'm sorry to see you go. Shall I cancel it for good, or pause it instead?"),
            user("Cancel it for good."),
            message,
            result(cid, {"cancelled": True}),
            say("Your subscription is cancelled at the end of the current period."),
        ], False

    # -- tickets and hand-over -------------------------------------------------------------

    def create_ticket(self, i: int) -> Conversation:
        customer, order = self.ids.customer(), self.ids.order()
        issues = [
            (
                "The blender from {order} smells of burning after two uses.",
                "Blender smells of burning",
                "technical",
                "high",
            ),
            ("I was charged twice for {order}.", "Charged twice for an order", "billing", "high"),
            (
                "The courier left {order} in the rain and the box is soaked.",
                "Parcel left in the rain",
                "shipping",
                "normal",
            ),
            (
                "The chair from {order} is missing two screws.",
                "Chair missing screws",
                "order",
                "low",
            ),
        ]
        template, subject, category, priority = self.pick(issues, i)
        problem = template.format(order=order)
        message, (cid,) = self.calls.make(
            (
                "create_ticket",
                {
                    "customer_id": customer,
                    "subject": subject,
                    "description": f"Customer reports: {problem}",
                    "category": category,
                    "priority": priority,
                    "order_id": order,
                },
            )
        )
        return [
            user(f"{problem} Please open a ticket. I'm {customer}."),
            message,
            result(cid, {"ticket_id": self.ids.ticket()}),
            say("I've opened a ticket; our team will get back to you within a day."),
        ], False

    def ticket_note(self, i: int) -> Conversation:
        ticket = self.ids.ticket()
        notes = [
            "I'm away next week, please call after Monday.",
            "The photo I mentioned is now attached to my e-mail.",
            "The second parcel arrived damaged too.",
        ]
        note = self.pick(notes, i)
        message, (cid,) = self.calls.make(
            ("add_ticket_note", {"ticket_id": ticket, "note": note, "visibility": "public"})
        )
        return [
            user(f"Please add this to ticket {ticket}: {note}"),
            message,
            result(cid, {"added": True}),
            say("I've added your note to the ticket."),
        ], False

    def escalate(self, i: int) -> Conversation:
        situations = [
            ("Get me a human. I've asked three times now!", "customer_request", "general"),
            (
                "The heater you sold me caught fire. I need to speak to someone now.",
                "safety",
                "trust_and_safety",
            ),
            ("I want my 800 EUR back for the sofa, it's broken.", "refund_limit", "billing"),
            ("My lawyer will contact you about the damaged parquet.", "legal", "trust_and_safety"),
        ]
        text, reason, department = self.pick(situations, i)
        message, (cid,) = self.calls.make(
            (
                "escalate_to_human",
                {"reason": reason, "summary": text, "department": department},
            )
        )
        return [
            user(text),
            message,
            result(cid, {"queued": True, "expected_wait_minutes": 5}),
            say("I've passed you to a colleague who will join shortly."),
        ], False

    # -- parallel look-ups and turns without a tool --------------------------------------------

    def parallel_tracking(self, i: int) -> Conversation:
        carrier_name, carrier = self.pick(CARRIERS, i + 1)
        first, second = self.ids.tracking(carrier), self.ids.tracking(carrier)
        message, (c1, c2) = self.calls.make(
            ("track_shipment", {"tracking_number": first, "carrier": carrier}),
            ("track_shipment", {"tracking_number": second, "carrier": carrier}),
        )
        return [
            user(f"Two {carrier_name} parcels: {first} and {second}. Where are they?"),
            message,
            result(c1, {"state": "delivered"}),
            result(c2, {"state": "in_transit"}),
            say("The first one is delivered; the second is still on its way."),
        ], True

    def parallel_orders(self, i: int) -> Conversation:
        first, second = self.ids.order(), self.ids.order()
        message, (c1, c2) = self.calls.make(
            ("lookup_order", {"order_id": first}),
            ("lookup_order", {"order_id": second}),
        )
        phrasings = [
            f"What's the status of {first} and {second}?",
            f"Can you check both my orders, {first} and {second}?",
        ]
        return [
            user(self.pick(phrasings, i)),
            message,
            result(c1, {"status": "shipped"}),
            result(c2, {"status": "processing"}),
            say(f"{first} has shipped; {second} is still being prepared."),
        ], True

    def parallel_order_and_refund(self, i: int) -> Conversation:
        order, refund = self.ids.order(), self.ids.refund()
        message, (c1, c2) = self.calls.make(
            ("check_refund_status", {"refund_id": refund}),
            ("lookup_order", {"order_id": order}),
        )
        return [
            user(f"Did refund {refund} go through, and where is my new order {order}?"),
            message,
            result(c1, {"status": "completed"}),
            result(c2, {"status": "shipped"}),
            say("Your refund is completed and the new order has shipped."),
        ], True

    def needs_order_number(self, i: int) -> Conversation:
        """Nothing to look up yet: the right answer is a question, then the call."""
        order = self.ids.order()
        openings = [
            "I want to cancel an order.",
            "Where's my package?",
            "I need to change where my order is going.",
        ]
        closing_calls = [
            ("lookup_order", {"order_id": order}),
            ("lookup_order", {"order_id": order, "include": ["shipments"]}),
            ("lookup_order", {"order_id": order}),
        ]
        message, (cid,) = self.calls.make(self.pick(closing_calls, i))
        return [
            user(self.pick(openings, i)),
            say("Sure, which order is it? Please give me the order number (ORD-…)."),
            user(f"It's {order}."),
            message,
            result(cid, {"order_id": order, "status": "processing"}),
            say(f"I found {order}; it has not shipped yet."),
        ], False

    def small_talk(self, i: int) -> Conversation:
        question, answer = self.pick(SMALL_TALK, i)
        return [user(question), say(answer)], False


SCENARIOS: tuple[Callable[[Scenarios, int], Conversation], ...] = (
    Scenarios.knowledge_base,
    Scenarios.lookup_order,
    Scenarios.list_orders,
    Scenarios.track,
    Scenarios.refund_status,
    Scenarios.profile,
    Scenarios.subscription,
    Scenarios.reset_password,
    Scenarios.cancel_order,
    Scenarios.update_address,
    Scenarios.create_return,
    Scenarios.issue_refund,
    Scenarios.change_account,
    Scenarios.change_plan,
    Scenarios.pause,
    Scenarios.cancel_subscription,
    Scenarios.create_ticket,
    Scenarios.ticket_note,
    Scenarios.escalate,
    Scenarios.parallel_tracking,
    Scenarios.parallel_orders,
    Scenarios.parallel_order_and_refund,
    Scenarios.needs_order_number,
    Scenarios.small_talk,
)


def conversations() -> Iterator[Conversation]:
    scenarios = Scenarios(random.Random(SEED))
    # Interleaved (variant 0 of each scenario, then variant 1, …) so that the first N
    # examples, which `eval --limit N` replays, cover every tool.
    for i in range(VARIANTS_PER_SCENARIO):
        for scenario in SCENARIOS:
            yield scenario(scenarios, i)


def main() -> None:
    write_examples(__doc__.splitlines()[0], "support.heldout.jsonl", conversations())


if __name__ == "__main__":
    main()
