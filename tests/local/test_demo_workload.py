"""The demo's workload keeps the case study's proportions and is fixed by its seed.

The targets must be met by the sidecar, not by a workload shaped to flatter it, so the
shape is pinned here: ~3,500 static tokens, ~3,700 dynamic of which the retrieved policy
documents are a real share that changes from request to request, a history that grows,
and the legacy prompt with the timestamp on its first line.
"""

from __future__ import annotations

import statistics
import uuid
from datetime import UTC, datetime

from promptcache.demo.app import legacy_system
from promptcache.demo.corpus import retrieve
from promptcache.demo.workload import STATIC_FILE, WorkloadConfig, generate, static_text
from promptcache.policy import load_policy_file
from promptcache.tokens import estimate_json, estimate_text

NOW = datetime(2026, 3, 2, 9, 15, 1, tzinfo=UTC)


def _requests(config: WorkloadConfig, reply_tokens: int = 225) -> list[dict[str, int]]:
    """Token counts of every request, with replies of ``reply_tokens`` (the simulator's mean)."""
    out = []
    for conv in generate(config).conversations:
        history = list(conv.prior_history)
        for turn, question in enumerate(conv.questions):
            docs = retrieve(question, config.docs_per_request)
            system = legacy_system(
                now=NOW,
                request_id=conv.request_ids[turn],
                customer=conv.customer.render(),
                documents=docs,
            )
            total = estimate_text(system) + estimate_json(history) + estimate_text(question)
            out.append(
                {
                    "total": total,
                    "dynamic": total - estimate_text(static_text()),
                    "docs": sum(estimate_text(d.render()) for d in docs),
                    "history": estimate_json(history),
                }
            )
            history += [
                {"role": "user", "content": question},
                {"role": "assistant", "content": "x" * 4 * reply_tokens},
            ]
    return out


def test_proportions_match_the_case_study() -> None:
    requests = _requests(WorkloadConfig())
    static = estimate_text(static_text())
    assert 3300 <= static <= 3700
    mean = {k: statistics.mean(r[k] for r in requests) for k in requests[0]}
    assert 6800 <= mean["total"] <= 7600, mean
    assert 3300 <= mean["dynamic"] <= 4000, mean
    assert 750 <= mean["docs"] <= 1050, mean
    assert mean["docs"] / mean["dynamic"] >= 0.2, "retrieved documents must be a real share"


def test_history_grows_and_documents_change_per_request() -> None:
    config = WorkloadConfig(users=10)
    workload = generate(config)
    conv = workload.conversations[0]
    histories = [r["history"] for r in _requests(WorkloadConfig(users=1))]
    assert histories == sorted(histories)
    assert histories[-1] > histories[0]
    doc_sets = [
        tuple(d.doc_id for d in retrieve(q, config.docs_per_request))
        for c in workload.conversations
        for q in c.questions
    ]
    assert len(set(doc_sets)) >= 5, "retrieval must depend on the question"
    assert len(conv.questions) >= config.turns[0]


def test_same_seed_same_conversations_other_seed_others() -> None:
    a, b = generate(WorkloadConfig(seed=3)), generate(WorkloadConfig(seed=3))
    c = generate(WorkloadConfig(seed=4))
    assert a == b
    assert a.conversations != c.conversations
    assert a.requests == sum(len(x.questions) for x in a.conversations)


def test_legacy_prompt_is_one_string_timestamp_first() -> None:
    conv = generate(WorkloadConfig(users=1)).conversations[0]
    docs = retrieve(conv.questions[0], 3)
    system = legacy_system(
        now=NOW, request_id=conv.request_ids[0], customer=conv.customer.render(), documents=docs
    )
    first, second = system.splitlines()[:2]
    assert first == "Current date and time: 2026-03-02T09:15:01+00:00"
    assert uuid.UUID(second.removeprefix("Request ID: ")).version == 4
    assert system.count(static_text()) == 1
    assert system.index(static_text()) < system.index("<customer>") < system.index(docs[0].doc_id)


def test_policy_matches_the_static_text_byte_for_byte() -> None:
    loaded = load_policy_file(STATIC_FILE.parent / "support-agent.yaml")
    assert loaded.name == "support-agent"
    spec = loaded.spec
    assert spec.provider == "anthropic"
    (block,) = spec.static_blocks
    assert block.mode == "match"
    assert block.ttl == "5m"
    assert block.match is not None
    assert block.match.exact == static_text()
    assert spec.volatile.action == "relocate"
    assert spec.volatile.unmatched_system == "relocate"
