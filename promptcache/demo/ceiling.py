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
from promptcache.demo.workload import Workload
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
