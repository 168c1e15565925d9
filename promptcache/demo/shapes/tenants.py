"""The multi-tenant app: one deployment, twenty tenants, twenty system prompts.

A white-label help assistant. Each tenant (a company using it) has its own instructions,
1,500-2,500 tokens composed for it (``text.compose``, fixed by the tenant's index), and
every request's system prompt starts with the current time and a request id, then the
tenant's instructions. Users are spread evenly over the tenants. A hand-written policy
cannot quote twenty prompts (a policy holds at most 16 static blocks, and the prompts
change whenever a tenant edits them), so the one a team would write
(``policies/tenants.yaml``) only moves the time and the id behind the history.
"""

from __future__ import annotations

import functools
import random

from promptcache.demo.shapes.common import (
    ChatApp,
    Session,
    Sessions,
    generate_sessions,
    now,
    request_id,
    think_times,
)
from promptcache.demo.shapes.text import compose
from promptcache.demo.workload import POLICY_DIR, WorkloadConfig

POLICY = POLICY_DIR / "tenants.yaml"
TENANTS = 20

_COMPANIES = (
    ("Aurora Bank", "online banking", "account holders", "banking support"),
    ("Brightline Energy", "energy account", "households", "billing"),
    ("Cobalt Telecom", "mobile plan", "subscribers", "care"),
    ("Delta Freight", "shipment portal", "business shippers", "logistics"),
    ("Evergreen Clinics", "patient portal", "patients", "front desk"),
    ("Fable Books", "e-book store", "readers", "store"),
    ("Granite Insurance", "claims portal", "policy holders", "claims"),
    ("Harbor Hotels", "booking app", "guests", "reservations"),
    ("Ionic Cloud", "hosting console", "developers", "platform"),
    ("Juniper Travel", "trip planner", "travellers", "travel desk"),
    ("Kestrel Airlines", "booking and check-in", "passengers", "customer relations"),
    ("Lumen Learning", "course platform", "students", "student services"),
    ("Meridian Motors", "service booking", "car owners", "workshop"),
    ("Nimbus Payroll", "payroll software", "employers", "payroll"),
    ("Orchid Grocers", "delivery app", "shoppers", "delivery"),
    ("Pioneer Realty", "rental portal", "tenants", "property"),
    ("Quartz Fitness", "membership app", "members", "member services"),
    ("Riverbend Water", "utility account", "customers", "water services"),
    ("Summit Tickets", "ticketing app", "fans", "box office"),
    ("Tidal Streaming", "streaming service", "viewers", "subscriber care"),
)
_TONES = ("warm but professional", "plain, factual", "friendly, brief", "formal, courteous")
_QUESTIONS = (
    "How do I change the email address on my {product}?",
    "I was charged twice this month. Can you explain why and fix it?",
    "The {product} shows an error when I try to sign in from my new phone.",
    "Can I cancel, and what happens to what I have already paid?",
    "Where do I find my invoices for last year?",
    "Someone else used my account. What should I do now?",
    "Is there a cheaper plan, and can I switch without losing my history?",
    "Your last answer was not clear. Can you give me the steps again?",
    "How long does a refund take, and will I get an email?",
    "Can I add my partner to my account so they can manage it too?",
)


@functools.cache
def tenant_prompt(tenant: int) -> str:
    """Tenant ``tenant``'s instructions: the same on every call, different per tenant."""
    company, product, audience, team = _COMPANIES[tenant]
    rng = random.Random(9000 + tenant)
    fields = {
        "company": company,
        "product": product,
        "audience": audience,
        "team": team,
        "tone": _TONES[tenant % len(_TONES)],
        "words": str(rng.choice((120, 150, 180, 220))),
        "days": str(rng.choice((14, 28, 30))),
        "limit": f"EUR {rng.choice((250, 500, 1000, 2500))}",
        "hours": rng.choice(("08:00-18:00 CET", "07:00-22:00 CET", "09:00-17:00 GMT")),
        "menu": rng.choice(("Account", "Billing", "Profile", "Security")),
        "item": rng.choice(("Email", "Payment methods", "Members", "Devices")),
        "domain": company.lower().replace(" ", "-") + ".example",
    }
    return compose(rng, fields, target_chars=rng.randint(6000, 10000))


def system_prompt(tenant: int, *, now: str, request_id: str) -> str:
    """Time and id first, then the tenant's instructions (the legacy app's layout)."""
    return f"Current date and time: {now}\nRequest ID: {request_id}\n\n{tenant_prompt(tenant)}"


def _session(config: WorkloadConfig, rng: random.Random, user: int, index: int) -> Session:
    tenant = user % TENANTS
    product = _COMPANIES[tenant][1]
    n = rng.randint(*config.turns)
    questions = tuple(rng.choice(_QUESTIONS).format(product=product) for _ in range(n))
    return Session(
        user=user,
        index=index,
        key=tenant,
        questions=questions,
        request_ids=tuple(request_id(rng) for _ in range(n)),
        think_times=think_times(config, rng, index, n),
    )


def generate(config: WorkloadConfig) -> Sessions:
    return generate_sessions(config, lambda rng, u, i: _session(config, rng, u, i))


class TenantsApp(ChatApp):
    def system(self, session: Session, turn: int) -> str:
        return system_prompt(session.key, now=now(), request_id=session.request_ids[turn])
