"""The case study's workload: who the users are and what they say, fixed by a seed.

A support agent whose prompt is ~7,200 tokens: ~3,500 static (persona, guardrails, JSON
schema, style guide: ``policies/support-static.txt``) and ~3,700 dynamic (current time,
request id, customer metadata, policy documents retrieved for the latest message, and a
multi-turn history that starts with the customer's earlier messages from the chat store
and grows each turn). Everything except the assistant's replies (which come from the
model) and the clock is decided here, up front, from one seed, so the two arms of the demo
send the same conversations.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import random
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from promptcache.demo.corpus import TOPICS, Topic

POLICY_DIR = Path(__file__).resolve().parent / "policies"
"""The demo's policy and the static prompt it matches (package data)."""
STATIC_FILE = POLICY_DIR / "support-static.txt"
"""The static prompt, shared with the policy (``match.exactFrom.file``)."""


@functools.cache
def static_text() -> str:
    """The ~3,500-token static instructions, byte for byte as the policy matches them."""
    return STATIC_FILE.read_text("utf-8")


@dataclass(frozen=True, slots=True)
class WorkloadConfig:
    """Shape of the simulated traffic; defaults keep the case study's proportions."""

    users: int = 75
    """Concurrent users (the case study's peak load)."""
    conversations_per_user: int = 1
    """Conversations each user runs one after the other."""
    turns: tuple[int, int] = (4, 8)
    """Requests per conversation, inclusive range."""
    prior_pairs: tuple[int, int] = (6, 10)
    """Earlier question/answer pairs loaded from the chat store, inclusive range."""
    docs_per_request: int = 3
    """Policy documents retrieved per request (~250 tokens each)."""
    max_tokens: int = 300
    """The app's ``max_tokens`` per answer."""
    think_time: tuple[float, float] = (1.0, 3.0)
    """Seconds a user reads and types between turns (divided by the time scale)."""
    ramp_up: float = 5.0
    """Seconds over which users start, like Locust's spawn rate (divided by the time scale)."""
    model: str = "claude-sonnet-4-6"
    seed: int = 7


@dataclass(frozen=True, slots=True)
class Customer:
    """Metadata the app fetches for the signed-in customer."""

    customer_id: str
    first_name: str
    country: str
    tier: str

    lines: tuple[str, ...] = ()

    def render(self) -> str:
        return "<customer>\n" + "\n".join(self.lines) + "\n</customer>"


@dataclass(frozen=True, slots=True)
class Conversation:
    """One customer's session: earlier history, then the turns this run sends."""

    user: int
    index: int
    topic: str
    customer: Customer
    prior_history: tuple[dict[str, str], ...]
    """Alternating user/assistant messages loaded from the chat store."""
    questions: tuple[str, ...]
    """The user's message for each turn."""
    request_ids: tuple[str, ...]
    think_times: tuple[float, ...]
    """Unscaled seconds before each turn (the first one is the start delay)."""


@dataclass(frozen=True, slots=True)
class Workload:
    config: WorkloadConfig
    conversations: tuple[Conversation, ...] = field(default=())

    @property
    def requests(self) -> int:
        return sum(len(c.questions) for c in self.conversations)

    def for_user(self, user: int) -> list[Conversation]:
        return [c for c in self.conversations if c.user == user]


_FIRST_NAMES = (
    "Anna", "Ben", "Chloe", "David", "Elif", "Farah", "Georg", "Hana", "Ivan", "Julia",
    "Karim", "Lena", "Marco", "Nora", "Oskar", "Priya", "Quentin", "Rosa", "Sven", "Tara",
)  # fmt: skip
_COUNTRIES = ("DE", "FR", "NL", "SE", "ES", "IT", "PL", "GB", "IE", "AT", "DK", "BE")
_TIERS = ("standard", "standard", "standard", "plus", "plus", "business")
_CARRIERS = ("DHL", "UPS", "PostNord", "DPD", "GLS", "Royal Mail")
_PRODUCTS = (
    "Ridgeline 2 tent", "Summit down jacket", "Trailrunner GTX shoes", "Fjord 45L backpack",
    "Alpine merino base layer", "Basecamp gas stove", "Drift sleeping bag -5C",
    "Coastline rain shell", "Trekker carbon poles", "Nomad travel duffel 60L",
)  # fmt: skip
_STATUSES = ("delivered", "dispatched", "in transit", "processing", "returned", "delivered")


def _customer(rng: random.Random) -> Customer:
    cid = f"C-{rng.randint(100000, 999999)}"
    first = rng.choice(_FIRST_NAMES)
    country = rng.choice(_COUNTRIES)
    tier = rng.choice(_TIERS)
    lines = [
        f"id: {cid}",
        f"first_name: {first}",
        f"country: {country}; language: {'en' if country in ('GB', 'IE') else country.lower()}",
        f"support_tier: {tier}; customer_since: 20{rng.randint(15, 24)}; "
        f"loyalty_points: {rng.randint(0, 4000)}",
        f"membership: {rng.choice(('none', 'Trail Club monthly', 'Trail Club yearly'))}",
        "recent_orders:",
    ]
    for _ in range(rng.randint(2, 4)):
        product = rng.choice(_PRODUCTS)
        lines.append(
            f"- order NW-{rng.randint(1000000, 9999999)}: {product}, "
            f"EUR {rng.randint(29, 480)}.{rng.choice(('00', '50', '90', '95'))}, "
            f"{rng.choice(_STATUSES)}, carrier {rng.choice(_CARRIERS)} "
            f"tracking {rng.randint(10**11, 10**12 - 1)}, "
            f"placed 2025-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
        )
    lines.append(
        f"payments: card ending {rng.randint(1000, 9999)} (default), "
        f"{rng.choice(('PayPal', 'Apple Pay', 'no other methods'))}"
    )
    lines.append(f"open_tickets: {rng.randint(0, 2)}; last_contact_channel: chat")
    return Customer(
        customer_id=cid, first_name=first, country=country, tier=tier, lines=tuple(lines)
    )


_OPENERS = (
    "Hi, I need help with {thing}. {detail}",
    "Hello. {detail} Can you tell me what happens with {thing}?",
    "Good morning, this is about {thing}. {detail} What are my options?",
)
_FOLLOW_UPS = (
    "Thanks. How long does that usually take, and do I need to do anything in the meantime?",
    "I looked at the page you mentioned but it says something different: {detail} "
    "Which one is right?",
    "OK. And if that does not work, what is the next step? I would rather not wait another week.",
    "Can you put that in writing so I can show it to my partner? Also, {thing}: is the cost "
    "covered?",
    "One more thing about {thing}: I am travelling from Friday for two weeks. Does that "
    "change anything?",
    "That sounds fine. Please go ahead, and send me the confirmation by email.",
    "Sorry, I am confused. Could you explain again, step by step, what I should do now about "
    "{thing}?",
    "I just checked again and nothing has changed. {detail}",
)
_DETAILS = {
    "shipping": (
        "the parcel with my {product} was due on Tuesday and the tracking has said 'in transit' "
        "for six days",
        "the carrier says it was delivered but nothing is at my door or with the neighbours",
    ),
    "returns": (
        "I wore the {product} once on a short walk and it does not fit well",
        "I want to exchange the {product} for one size larger before my trip",
    ),
    "refunds": (
        "you accepted my return of the {product} two weeks ago but I have not seen the money",
        "the refund I got for the {product} is smaller than what I paid",
    ),
    "billing": (
        "my bank statement shows two charges for the order with the {product}",
        "I need an invoice with my company name for the {product}",
    ),
    "subscriptions": (
        "I want to pause my Trail Club membership for the winter",
        "I was charged for a renewal I did not expect and would like to cancel",
    ),
    "accounts": (
        "I changed phones and cannot get the sign-in code any more",
        "my account is locked after I tried my password a few times",
    ),
    "warranty": (
        "the zip on my {product} broke after three months of normal use",
        "the seams of my {product} started leaking in light rain",
    ),
    "payments": (
        "my card was declined three times for the {product} although it works elsewhere",
        "I would like to pay the {product} in instalments but the option is not shown",
    ),
    "privacy": (
        "I want a copy of all the data you keep about me",
        "I keep getting marketing emails after unsubscribing and want my data deleted",
    ),
    "safety": (
        "the {product} flared up badly when I lit it and singed the tent fabric",
        "I smelled gas around the {product} valve even when it was closed",
    ),
}
_THINGS = {
    "shipping": "my delivery", "returns": "my return", "refunds": "my refund",
    "billing": "the charges on my account", "subscriptions": "my membership",
    "accounts": "my account", "warranty": "my warranty claim", "payments": "my payment",
    "privacy": "my personal data", "safety": "a problem with a product",
}  # fmt: skip


def _question(rng: random.Random, topic: Topic, first: bool) -> str:
    detail = rng.choice(_DETAILS[topic.name]).format(product=rng.choice(_PRODUCTS))
    detail = detail[0].upper() + detail[1:] + "."
    template = rng.choice(_OPENERS if first else _FOLLOW_UPS)
    return template.format(thing=_THINGS[topic.name], detail=detail)


def _prior_answer(rng: random.Random, name: str, topic: Topic) -> str:
    """An earlier reply as the chat store keeps it: the model's JSON answer."""
    sentences = [c.format(n=4, m=14, amount="EUR 60") for c in rng.sample(topic.clauses, 3)]
    return (
        '{"reply": "Thanks for your patience, ' + name + ". " + " ".join(sentences) + " I have "
        'noted this on your case so that a colleague sees the full history.", "language": '
        '"en", "intent": "other", "confidence": 0.74, "actions": [], "escalate": false, '
        '"citations": ["POL-' + topic.code + '-001"], "follow_up": "Is there anything in '
        'the order details that looks different from what you expected?", "internal_note": '
        '"Customer asked about ' + topic.name + '; policy explained; no action taken yet."}'
    )


def _conversation(
    config: WorkloadConfig, rng: random.Random, user: int, index: int
) -> Conversation:
    topic = rng.choice(TOPICS)
    customer = _customer(rng)
    prior: list[dict[str, str]] = []
    for p in range(rng.randint(*config.prior_pairs)):
        earlier = topic if p % 2 else rng.choice(TOPICS)
        prior.append({"role": "user", "content": _question(rng, earlier, first=p == 0)})
        prior.append(
            {"role": "assistant", "content": _prior_answer(rng, customer.first_name, earlier)}
        )
    turns = rng.randint(*config.turns)
    questions = tuple(_question(rng, topic, first=t == 0) for t in range(turns))
    request_ids = tuple(str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(turns))
    # A user's first conversation starts within the ramp-up; later ones after a pause.
    start = rng.uniform(0.0, config.ramp_up) if index == 0 else rng.uniform(*config.think_time)
    thinks = (start, *(rng.uniform(*config.think_time) for _ in range(turns - 1)))
    return Conversation(
        user=user,
        index=index,
        topic=topic.name,
        customer=customer,
        prior_history=tuple(prior),
        questions=questions,
        request_ids=request_ids,
        think_times=thinks,
    )


def generate(config: WorkloadConfig) -> Workload:
    """Every conversation of a run, from ``config.seed`` alone."""
    rng = random.Random(config.seed)
    convs = tuple(
        _conversation(config, rng, user, index)
        for user in range(config.users)
        for index in range(config.conversations_per_user)
    )
    return Workload(config=config, conversations=convs)


def workload_from(args: argparse.Namespace, base: WorkloadConfig) -> WorkloadConfig:
    """``base`` with the workload flags given (``--users``, ``--conversations``,
    ``--turns``, ``--seed``) applied; counts below 1 count as 1."""
    changes: dict[str, object] = {}
    if args.users is not None:
        changes["users"] = max(1, args.users)
    if args.conversations is not None:
        changes["conversations_per_user"] = max(1, args.conversations)
    if args.turns is not None:
        changes["turns"] = (max(1, args.turns), max(1, args.turns))
    if args.seed is not None:
        changes["seed"] = args.seed
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]
