"""The most any prompt cache could read on this run's workload.

A cache can only return tokens it has been sent before. For every request of an arm this
counts the input tokens that had never been sent earlier in the same conversation: the
timestamp and request id, the new question, the previous answer (it came from the model,
never from a prompt; counted as the next prompt carries it), on a conversation's first
turn its stored history and customer block, and retrieved documents not retrieved
earlier in that conversation. What is left is the most any cache could read, whatever it
does with order or position: no real prefix cache gets there.

A second, tighter figure also counts every retrieved document as unreadable. That bound
holds for every layout that keeps the documents behind the conversation history (the
only place where documents that change from turn to turn do not break the cached
history), which is what the sidecar does. Both are printed beside the measured hit rate
so that a reader can see how much of the gap to a target is the workload's and how much
the cache's. Token counts use the same ~4 characters per token rule as the simulator,
and the totals are the input tokens the provider actually counted.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from promptcache.demo.app import Outcome, legacy_header
from promptcache.demo.corpus import retrieve
from promptcache.demo.workload import Workload, static_text
from promptcache.tokens import estimate_text

STAMP_TOKENS = estimate_text(
    legacy_header(now=datetime(2026, 1, 1, tzinfo=UTC), request_id=str(uuid.UUID(int=0)))
)
"""The app's ``Current date and time`` and ``Request ID`` lines (their length does not
depend on the time or the id)."""


@dataclass(frozen=True, slots=True)
class Ceiling:
    """Upper bounds on the token cache hit rate of one arm."""

    any_cache: float
    """Every token sent earlier in the conversation counted as readable."""
    documents_behind: float
    """The same, with retrieved documents never readable."""


def ceiling(workload: Workload, outcomes: Sequence[Outcome]) -> Ceiling:
    """Both ceilings over the successful requests in ``outcomes``."""
    done = {(o.user, o.conversation, o.turn): o for o in outcomes if o.ok}
    total = new = docs_all = docs_new = 0
    for conv in workload.conversations:
        seen: set[str] = set()
        previous: Outcome | None = None
        for turn, question in enumerate(conv.questions):
            outcome = done.get((conv.user, conv.index, turn))
            if outcome is None:
                # A failed turn: the app stops that conversation's accounting here.
                break
            docs = retrieve(question, workload.config.docs_per_request)
            total += outcome.usage.total_input
            fresh = STAMP_TOKENS + estimate_text(question)
            if previous is not None:
                fresh += previous.reply_tokens
            if turn == 0:
                fresh += estimate_text(conv.customer.render())
                fresh += sum(estimate_text(m["content"]) for m in conv.prior_history)
            new += fresh
            for d in docs:
                tokens = estimate_text(d.render())
                docs_all += tokens
                if d.doc_id not in seen:
                    docs_new += tokens
            seen.update(d.doc_id for d in docs)
            previous = outcome
    if total <= 0:
        return Ceiling(0.0, 0.0)
    return Ceiling(
        any_cache=max(0.0, 1 - (new + docs_new) / total),
        documents_behind=max(0.0, 1 - (new + docs_all) / total),
    )


def one_slot_reachable(workload: Workload, outcomes: Sequence[Outcome]) -> float:
    """The share of prompt text a server with one cache slot could have reused.

    ``llama-server -np 1`` keeps only the prompt it evaluated last and reuses its longest
    common prefix with the next one. Laid out at best (static text first, then what is
    the same for the conversation), a request shares with the one before it: the static
    instructions, and when the one before was the previous turn of the same conversation,
    also the customer block, the stored history and the previous question. Estimated
    from characters (the server's tokenizer is not ours), over requests in the order they
    were sent; the first request reuses nothing.
    """
    by_key = {(c.user, c.index): c for c in workload.conversations}
    done = sorted((o for o in outcomes if o.ok), key=lambda o: o.started)
    static = len(static_text())
    stamp = len(
        legacy_header(now=datetime(2026, 1, 1, tzinfo=UTC), request_id=str(uuid.UUID(int=0)))
    )
    total = reused = 0
    replies: dict[tuple[int, int, int], int] = {
        (o.user, o.conversation, o.turn): o.reply_tokens for o in done
    }
    previous: Outcome | None = None
    for o in done:
        conv = by_key[(o.user, o.conversation)]
        question = conv.questions[o.turn]
        docs = sum(len(d.render()) for d in retrieve(question, workload.config.docs_per_request))
        prior = sum(len(m["content"]) for m in conv.prior_history)
        earlier = sum(
            len(conv.questions[t]) + 4 * replies.get((o.user, o.conversation, t), 0)
            for t in range(o.turn)
        )
        customer = len(conv.customer.render())
        total += stamp + static + customer + docs + prior + earlier + len(question)
        if previous is not None:
            reused += static
            same = (previous.user, previous.conversation) == (o.user, o.conversation)
            if same and previous.turn == o.turn - 1:
                reused += (
                    customer
                    + prior
                    + earlier
                    - 4 * replies.get((o.user, o.conversation, o.turn - 1), 0)
                )
        previous = o
    return reused / total if total else 0.0
