"""The support agent's retrieval corpus: policy documents and a keyword retriever.

The case study's app put "RAG retrieval results (policy docs)" into every prompt; they
are a real share of the dynamic part and, being picked by the customer's latest message,
they differ from request to request, so they can never sit in a cached prefix. This
module builds a fixed corpus of realistic-looking policy documents (the same on every
run: the numbers come from a private seeded generator) and ranks them against a query
the way a simple lexical retriever would.
"""

from __future__ import annotations

import functools
import hashlib
import random
import re
from dataclasses import dataclass

_CORPUS_SEED = 20240611
"""Fixed: the corpus is part of the workload's definition, not of a run's randomness."""


@dataclass(frozen=True, slots=True)
class Topic:
    """One support area: what customers ask about and what its policies say."""

    name: str
    code: str
    keywords: tuple[str, ...]
    titles: tuple[str, ...]
    clauses: tuple[str, ...]
    """Policy sentences; ``{n}``/``{m}``/``{amount}`` are filled per document."""


TOPICS: tuple[Topic, ...] = (
    Topic(
        "shipping",
        "SHP",
        ("parcel", "delivery", "carrier", "tracking", "late", "shipping", "arrived", "address"),
        ("Standard and express delivery", "Delayed and lost parcels", "Address corrections"),
        (
            "Standard delivery takes {n} to {m} business days after dispatch; express delivery "
            "takes 1 to 2 business days for orders placed before 14:00 local time.",
            "A parcel counts as delayed when it has not arrived {n} business days after the "
            "estimated delivery date shown in the dispatch email.",
            "For a delayed parcel, the agent opens a carrier investigation; carriers answer "
            "within {m} business days, after which a lost parcel is replaced or refunded.",
            "An address can be corrected free of charge until the order is dispatched; after "
            "dispatch a carrier redirect costs {amount} and is not available for all carriers.",
            "Tracking numbers become active up to 24 hours after the dispatch email is sent; "
            "an inactive tracking number in that window is not a sign of a problem.",
            "Orders split across warehouses ship in up to {n} parcels, each with its own "
            "tracking number; delivery fees are charged once per order.",
        ),
    ),
    Topic(
        "returns",
        "RET",
        ("return", "label", "worn", "exchange", "size", "send", "back", "unused"),
        ("Return window and eligibility", "Used and worn items", "Exchanges"),
        (
            "Items can be returned within {n} calendar days of delivery; the window for "
            "members of the loyalty programme is {m} calendar days.",
            "Returned items must be unused, with tags attached; footwear must be tried on "
            "indoors only. Items used outdoors are inspected before any refund.",
            "Inspection takes up to {n} business days after the return reaches the warehouse; "
            "the outcome is a full refund, a partial refund, or the item is sent back.",
            "Return labels are free for orders over {amount}; below that a label fee is "
            "deducted from the refund unless the item was faulty or wrongly sent.",
            "Exchanges for a different size are handled as a return and a new order, so that "
            "the new size is reserved immediately and ships before the return arrives.",
            "Personalised items, opened hygiene products and gift cards cannot be returned "
            "unless they are faulty.",
        ),
    ),
    Topic(
        "refunds",
        "REF",
        ("refund", "money", "back", "credit", "card", "bank", "reimburse", "paid"),
        ("Refund timing", "Partial refunds", "Refunds to closed or expired cards"),
        (
            "Refunds are issued to the original payment method within {n} business days of "
            "the return being accepted; banks take a further {m} business days to post them.",
            "A partial refund applies when a returned item shows wear; the deduction is "
            "between 10 and {n} percent of the item price and is explained in the email.",
            "If the original card has expired or been closed, the card issuer forwards the "
            "refund to the replacement card; if that fails we issue a bank transfer.",
            "Delivery fees are refunded only when the whole order is returned or when the "
            "return is due to our error.",
            "Refunds above {amount} for orders paid by instalments are split across the "
            "instalment plan by the payment provider.",
            "Store credit can be chosen instead of a refund and is issued immediately with a "
            "bonus of {n} percent.",
        ),
    ),
    Topic(
        "billing",
        "BIL",
        ("charged", "twice", "invoice", "charge", "vat", "tax", "duplicate", "bill"),
        ("Duplicate charges and authorisation holds", "Invoices and VAT", "Currency"),
        (
            "An authorisation hold is placed when an order is submitted and released by the "
            "bank within {n} business days if the order is not captured.",
            "A duplicate charge is two captured payments for one order; it is refunded "
            "within {m} business days of being confirmed by the billing team.",
            "Invoices are available in the account area {n} hours after dispatch; a corrected "
            "invoice with a company name and VAT number can be requested within {m} days.",
            "Prices include the VAT of the delivery country; orders to countries outside the "
            "customs union may incur import duties above {amount}, paid by the recipient.",
            "Orders are charged in the currency of the shop; conversion fees charged by the "
            "customer's bank are not refunded.",
        ),
    ),
    Topic(
        "subscriptions",
        "SUB",
        ("subscription", "plan", "cancel", "pause", "renewal", "membership", "monthly"),
        ("Plan changes and renewals", "Pausing and cancelling", "Membership benefits"),
        (
            "The Trail Club membership renews every {n} months; a reminder is emailed {m} "
            "days before renewal.",
            "A membership can be paused once per year for up to {n} months; benefits are "
            "suspended during the pause and the renewal date moves accordingly.",
            "Cancelling stops the next renewal; the benefits remain until the end of the "
            "paid period. Fees are refunded only within {m} days of a renewal.",
            "Upgrading takes effect immediately and is charged pro rata; downgrading takes "
            "effect at the next renewal.",
            "Members get free standard delivery on orders over {amount} and extended returns.",
        ),
    ),
    Topic(
        "accounts",
        "ACC",
        ("login", "password", "sign", "account", "code", "email", "locked", "phone"),
        ("Sign-in and two-factor authentication", "Email changes", "Account closure"),
        (
            "After {n} failed sign-in attempts an account is locked for {m} minutes; a "
            "password reset link unlocks it immediately.",
            "Two-factor authentication can be reset after identity verification by email "
            "and the last {n} digits of the phone number on file; codes are never asked in chat.",
            "An email address change is confirmed by links sent to both the old and the new "
            "address and takes effect within {m} minutes of both confirmations.",
            "Closing an account cancels open subscriptions and deletes saved addresses and "
            "payment methods; order records are kept for {n} years as required by law.",
            "Accounts inactive for {m} months receive a reminder before loyalty points expire.",
        ),
    ),
    Topic(
        "warranty",
        "WAR",
        ("broken", "defect", "warranty", "zip", "seam", "repair", "faulty", "leak"),
        ("Warranty coverage", "Repairs and replacements", "Proof of purchase"),
        (
            "Own-brand products carry a {n}-year warranty against manufacturing defects; "
            "third-party brands follow the manufacturer's warranty.",
            "Defects covered include failed seams, zips, buckles and waterproof coatings that "
            "fail under normal use; wear and tear and accidental damage are not covered.",
            "Repair is the first remedy where possible and takes up to {m} business days; if "
            "repair is not possible the item is replaced or refunded.",
            "The order number is proof of purchase for online orders; for store purchases a "
            "receipt or card statement dated within the warranty period is accepted.",
            "Photos of the defect speed up a claim; claims above {amount} may require the item "
            "to be sent in before a replacement is dispatched.",
        ),
    ),
    Topic(
        "payments",
        "PAY",
        ("declined", "payment", "paypal", "instalment", "failed", "method", "klarna", "card"),
        ("Accepted payment methods", "Declined payments", "Instalment plans"),
        (
            "We accept major cards, PayPal, Apple Pay, Google Pay and, in {n} countries, "
            "instalment plans through our payment partner.",
            "A declined payment is decided by the card issuer; we cannot see the reason. The "
            "order is held for {m} hours so that the customer can retry with another method.",
            "Instalment plans are available for orders between {amount} and 2,000 in the shop "
            "currency, split into {n} monthly payments without interest.",
            "Payment methods saved in the account are tokenised; card numbers are never shown "
            "to support staff in full.",
            "A payment captured twice by a wallet provider is treated as a duplicate charge "
            "under the billing policy.",
        ),
    ),
    Topic(
        "privacy",
        "PRV",
        ("data", "delete", "privacy", "export", "gdpr", "marketing", "emails", "personal"),
        ("Data export and deletion", "Marketing preferences", "Data retention"),
        (
            "Customers can export their personal data from the account area; the export is "
            "prepared within {n} days and the download link is valid for {m} days.",
            "Deletion requests are completed within {n} days; order and invoice records are "
            "kept for the legal retention period and then deleted.",
            "Marketing emails stop within {m} days of unsubscribing; service emails about "
            "orders, returns and security cannot be switched off.",
            "We never sell personal data; partners process it only to deliver orders, take "
            "payments and prevent fraud.",
            "Complaints about data handling can be sent to the data protection officer, and "
            "customers may also contact their local supervisory authority.",
        ),
    ),
    Topic(
        "safety",
        "SAF",
        ("stove", "gas", "fire", "burn", "injury", "smoke", "recall", "unsafe"),
        ("Product safety incidents", "Recalls", "Stoves and fuel"),
        (
            "In a safety incident the customer must stop using the product, turn off any fuel "
            "supply, move to fresh air and seek medical help if anyone feels unwell.",
            "Safety incidents are escalated to the product safety team, which contacts the "
            "customer within {n} hours, including weekends.",
            "Recalled products are refunded in full, including delivery, without a time limit "
            "and without proof of purchase for items listed in the recall notice.",
            "Stoves must be used outdoors or in well-ventilated vestibules only; canisters "
            "should be stored below {m} degrees Celsius.",
            "Customers are asked to keep the product for inspection; a prepaid collection "
            "worth up to {amount} is arranged by the safety team.",
        ),
    ),
)


@dataclass(frozen=True, slots=True)
class PolicyDocument:
    """One retrievable document."""

    doc_id: str
    topic: str
    title: str
    version: str
    effective: str
    text: str
    terms: frozenset[str]

    def render(self) -> str:
        return (
            f'<document id="{self.doc_id}" version="{self.version}" '
            f'effective="{self.effective}">\n<title>{self.title}</title>\n{self.text}\n</document>'
        )


_WORD = re.compile(r"[a-z]+")


def words(text: str) -> frozenset[str]:
    """Lower-case words of ``text`` (the retriever's terms)."""
    return frozenset(_WORD.findall(text.lower()))


def _document(topic: Topic, index: int, rng: random.Random) -> PolicyDocument:
    clauses = list(topic.clauses)
    rng.shuffle(clauses)
    lines = []
    for number, clause in enumerate(clauses, 1):
        filled = clause.format(
            n=rng.randint(2, 9), m=rng.randint(10, 30), amount=f"EUR {rng.randint(3, 12) * 10}"
        )
        lines.append(f"{index + 1}.{number} {filled}")
    lines.append(
        f"Scope: applies to orders placed in the online shop and the mobile app in all "
        f"markets unless a country annex says otherwise. Owner: {topic.name} policy team. "
        f"Exceptions above these rules need a team lead's approval, recorded on the case with "
        f"the reason; agents do not promise an exception before it is approved."
    )
    title = topic.titles[index % len(topic.titles)]
    text = "\n".join(lines)
    return PolicyDocument(
        doc_id=f"POL-{topic.code}-{index + 1:03d}",
        topic=topic.name,
        title=title,
        version=f"{rng.randint(1, 6)}.{rng.randint(0, 9)}",
        effective=f"2025-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}",
        text=text,
        terms=words(title + " " + text + " " + " ".join(topic.keywords)),
    )


@functools.cache
def corpus() -> tuple[PolicyDocument, ...]:
    """All policy documents: three per topic, identical on every run."""
    rng = random.Random(_CORPUS_SEED)
    return tuple(_document(t, i, rng) for t in TOPICS for i in range(len(t.titles)))


def retrieve(query: str, k: int) -> list[PolicyDocument]:
    """The ``k`` documents sharing most words with ``query``; ties broken per query.

    The tie-break hashes the query with the document id, so two different questions on
    the same topic usually retrieve a different set or order of documents, as a real
    retriever does.
    """
    q = words(query)

    def rank(doc: PolicyDocument) -> tuple[int, str]:
        tie = hashlib.sha256(f"{query}|{doc.doc_id}".encode()).hexdigest()
        return (-len(q & doc.terms), tie)

    return sorted(corpus(), key=rank)[:k]
