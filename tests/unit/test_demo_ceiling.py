"""The demo's hit-rate ceiling counts what was never sent before, and nothing else."""

from __future__ import annotations

from promptcache.demo.app import Outcome
from promptcache.demo.ceiling import STAMP_TOKENS, ceiling
from promptcache.demo.corpus import retrieve
from promptcache.demo.workload import Conversation, Customer, Workload, WorkloadConfig
from promptcache.tokens import estimate_text
from promptcache.usage import Usage

QUESTION = "Hi, I need help with my refund. The refund is smaller than what I paid."
CUSTOMER = Customer("C-1", "Anna", "DE", "plus", lines=("id: C-1",))
PRIOR = ({"role": "user", "content": "Earlier question."}, {"role": "assistant", "content": "Ok."})


def _workload(questions: tuple[str, ...]) -> Workload:
    conv = Conversation(
        user=0,
        index=0,
        topic="refunds",
        customer=CUSTOMER,
        prior_history=PRIOR,
        questions=questions,
        request_ids=tuple("r" for _ in questions),
        think_times=tuple(0.0 for _ in questions),
    )
    return Workload(config=WorkloadConfig(users=1), conversations=(conv,))


def _outcome(turn: int, total_input: int, reply_tokens: int) -> Outcome:
    usage = Usage(uncached=total_input, output=reply_tokens // 2)
    return Outcome(
        user=0,
        conversation=0,
        turn=turn,
        started=0.0,
        latency=1.0,
        ttft=0.1,
        usage=usage,
        reply_tokens=reply_tokens,
    )


def test_documents_retrieved_again_count_as_readable_only_in_the_loose_ceiling() -> None:
    docs = sum(estimate_text(d.render()) for d in retrieve(QUESTION, 3))
    q = estimate_text(QUESTION)
    first_new = (
        STAMP_TOKENS
        + q
        + estimate_text(CUSTOMER.render())
        + sum(estimate_text(m["content"]) for m in PRIOR)
    )
    second_new = STAMP_TOKENS + q + 200  # the first reply, as the second prompt carries it
    outcomes = [_outcome(0, 10_000, 200), _outcome(1, 10_000, 150)]
    got = ceiling(_workload((QUESTION, QUESTION)), outcomes)
    # The same question retrieves the same documents: new on turn 0 only, for any cache.
    assert got.any_cache == 1 - (first_new + second_new + docs) / 20_000
    assert got.documents_behind == 1 - (first_new + second_new + 2 * docs) / 20_000


def test_a_failed_turn_ends_the_conversations_count() -> None:
    failed = Outcome(0, 0, 1, 0.0, 1.0, None, Usage(), error="APIConnectionError")
    alone = ceiling(_workload((QUESTION,)), [_outcome(0, 10_000, 200)])
    with_failure = ceiling(_workload((QUESTION, QUESTION)), [_outcome(0, 10_000, 200), failed])
    assert alone == with_failure
    assert 0 < alone.documents_behind <= alone.any_cache < 1
