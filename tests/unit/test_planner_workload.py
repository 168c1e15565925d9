"""The planner on the workload it exists for, against the simulator's Anthropic cache model.

A "legacy" support agent sends a system prompt that starts with the current time and a
request id, then ~14,000 characters of static instructions, then the customer record and
documents retrieved for this request. Without the sidecar nothing is ever read from
cache; with the planner (match the static text, relocate the rest) most input tokens of
multi-turn conversations should be. Every planned body also passes the simulator's
validator (4-marker limit, 1h-before-5m, no marker on an empty or thinking block).
"""

from __future__ import annotations

import itertools
import random
import uuid
from typing import Any

import pytest

from promptcache.policy import PolicySpec, parse_policy
from promptcache.sidecar.planner import MissReason, Plan, Planner, PlanRequest
from promptcache.simulator.anthropic_cache import AnthropicCache, parse_request
from promptcache.simulator.config import CacheConfig
from promptcache.usage import Usage

RNG_SEED = 7
WORDS = [
    "refund",
    "order",
    "shipping",
    "account",
    "warranty",
    "agent",
    "customer",
    "policy",
    "escalate",
    "verify",
    "identity",
    "polite",
    "concise",
    "never",
    "reveal",
    "internal",
    "notes",
    "schema",
    "field",
    "required",
]


def _prose(rng: random.Random, chars: int) -> str:
    out: list[str] = []
    size = 0
    while size < chars:
        w = rng.choice(WORDS)
        out.append(w)
        size += len(w) + 1
    return " ".join(out)[:chars]


STATIC = _prose(random.Random(1), 14_000)


def legacy_policy(ttl: str = "5m") -> PolicySpec:
    return parse_policy(
        {
            "provider": "anthropic",
            "staticBlocks": [
                {
                    "name": "support-core",
                    "mode": "match",
                    "ttl": ttl,
                    "match": {"role": "system", "position": 0, "exact": STATIC},
                }
            ],
            "volatile": {"action": "relocate", "unmatchedSystem": "relocate"},
        }
    )


class Conversation:
    """One customer's chat with the legacy app; the app keeps the history."""

    def __init__(self, rng: random.Random, customer: int) -> None:
        self.rng = rng
        self.customer = customer
        self.history: list[dict[str, Any]] = []

    def request(self, clock: float) -> dict[str, Any]:
        hour, minute = int(clock) // 3600 % 24, self.rng.randrange(60)
        request_id = uuid.UUID(int=self.rng.getrandbits(128))
        documents = _prose(self.rng, self.rng.randrange(800, 1600))
        system = (
            f"Current date and time: 2025-03-01T{hour:02d}:{minute:02d}:00Z\n"
            f"Request ID: {request_id}\n\n{STATIC}\n\n"
            f"<customer>id {self.customer}, tier gold</customer>\n"
            f"<policy_documents>{documents}</policy_documents>"
        )
        question = {"role": "user", "content": _prose(self.rng, self.rng.randrange(80, 240))}
        return {
            "model": "claude-sonnet-4-5",
            "max_tokens": 400,
            "stream": True,
            "system": system,
            "messages": [*self.history, question],
        }

    def answered(self, body: dict[str, Any]) -> None:
        answer = {"role": "assistant", "content": _prose(self.rng, self.rng.randrange(400, 900))}
        self.history = [*body["messages"], answer]


class Result:
    """What a workload run measured."""

    def __init__(self) -> None:
        self.read = 0
        self.total = 0
        self.reasons: list[MissReason] = []
        self.mispredicted = 0
        """Requests whose cache read differed from the plan's expected cached tokens."""

    @property
    def share(self) -> float:
        return self.read / self.total


def run_workload(
    policy: PolicySpec | None,
    *,
    plan: bool,
    conversations: int = 6,
    turns: int = 6,
    learning: bool = True,
) -> Result:
    """Interleave ``conversations`` chats, ``turns`` turns each, 20 s apart, through the
    simulator's cache model."""
    rng = random.Random(RNG_SEED)
    cache = AnthropicCache(CacheConfig())
    planner = Planner(learning=learning)
    chats = [Conversation(rng, c) for c in range(conversations)]
    result = Result()
    clock = 0.0
    for _turn, chat in itertools.product(range(turns), chats):
        clock += 20.0
        body = chat.request(clock)
        sent: dict[str, Any] = body
        p: Plan | None = None
        if plan:
            p = planner.plan(
                PlanRequest(
                    route="messages",
                    body=body,
                    policy_name="support-agent",
                    policy=policy,
                    now=clock,
                )
            )
            sent = p.body
        prompt = parse_request(sent)  # raises on anything the API would reject
        outcome = cache.resolve(prompt, now=clock)
        outcome.commit(clock + 1.0)
        result.read += outcome.cache_read
        result.total += outcome.total_input
        if p is not None:
            result.mispredicted += outcome.cache_read != p.expected_cached_tokens
            usage = Usage(
                uncached=outcome.uncached,
                cache_read=outcome.cache_read,
                cache_write_5m=outcome.cache_write_5m,
                cache_write_1h=outcome.cache_write_1h,
            )
            reason = planner.record_outcome(p, usage, clock + 1.0)
            if reason is not None:
                result.reasons.append(reason)
        chat.answered(body)
    return result


def test_without_the_sidecar_nothing_is_read_from_cache() -> None:
    assert run_workload(None, plan=False).share == 0.0


def test_without_learning_no_policy_cannot_fix_a_timestamp_but_says_why() -> None:
    result = run_workload(None, plan=True, learning=False)
    assert result.share < 0.05
    # The first request is a first write; later ones changed at the timestamp (once
    # the never-worse guard withdraws the system marker, only history entries remain,
    # each first written).
    assert result.reasons[0] == "first_write"
    assert result.reasons[1] == "prefix_changed"
    assert set(result.reasons[1:]) == {"prefix_changed", "first_write"}


def test_no_policy_learns_the_template_and_reads_most_input_from_cache() -> None:
    learned = run_workload(None, plan=True)
    pinned = run_workload(legacy_policy("5m"), plan=True)
    print(f"cache read share: learned {learned.share:.3f}, hand-written {pinned.share:.3f}")
    assert learned.share >= 0.9 * pinned.share


@pytest.mark.parametrize("ttl", ["5m", "1h", "auto"])
def test_relocate_policy_reads_most_input_from_cache(ttl: str) -> None:
    result = run_workload(legacy_policy(ttl), plan=True)
    # Not read, by design: the relocated per-request context, the new question, and the
    # previous question and answer (the answer was never in a prompt before).
    assert result.share >= 0.80, f"cache read share {result.share:.3f}"
    # Only the very first request of all misses (it writes the static prefix) ...
    assert result.reasons == ["first_write"]
    # ... and every other request reads exactly what its plan predicted.
    assert result.mispredicted == 1
