"""The extra app shapes send what their descriptions say, fixed by the seed.

The agent's requests carry the tools and the static instructions behind a changing
first line, and its tool loop adds one request per tool call; the RAG app's system
prompt ends with the time and its documents sit in the user message; the twenty tenants
have twenty different prompts of real size. Each hand-written policy quotes its app's
static text byte for byte. A workload shaped to flatter zero-config would show here.
"""

from __future__ import annotations

import uuid

from promptcache.demo.ceiling import one_slot_reachable
from promptcache.demo.shapes import SHAPES, agent, rag, tenants
from promptcache.demo.workload import WorkloadConfig, generate
from promptcache.policy import load_policy_file
from promptcache.tokens import estimate_json, estimate_text

NOW = "2026-03-02T09:15:01+00:00"


def test_same_seed_same_sessions_for_every_shape() -> None:
    for shape in SHAPES.values():
        a = shape.generate(WorkloadConfig(users=4, seed=3))
        assert a == shape.generate(WorkloadConfig(users=4, seed=3)), shape.name
        assert a != shape.generate(WorkloadConfig(users=4, seed=4)), shape.name
        assert a.requests == sum(
            c.requests if hasattr(c, "requests") else len(c.questions) for c in a.conversations
        )


def test_agent_loop_one_request_per_tool_call_plus_the_answer() -> None:
    sessions = agent.generate(WorkloadConfig(users=10))
    for s in sessions.conversations:
        assert len(s.tools) == len(s.questions) >= 1
        assert all(1 <= len(calls) <= 3 for calls in s.tools)
        assert s.requests == len(s.questions) + sum(len(c) for c in s.tools)
        assert len(s.request_ids) == s.requests
    names = {t["name"] for t in agent.TOOLS}
    used = {c.name for s in sessions.conversations for calls in s.tools for c in calls}
    assert used <= names
    assert 400 <= estimate_json(agent.TOOLS) <= 1000


def test_agent_system_prompt_is_trace_first_then_the_static_text() -> None:
    trace = str(uuid.UUID(int=1))
    system = agent.system_prompt(now=NOW, trace_id=trace)
    assert system.splitlines()[0] == f"Current time: {NOW}"
    assert system.endswith(agent.static_text())
    spec = load_policy_file(agent.POLICY).spec
    assert spec.static_blocks[0].match is not None
    assert spec.static_blocks[0].match.exact == agent.static_text()


def test_rag_documents_in_the_user_message_time_at_the_end_of_system() -> None:
    question = "A customer asks: my refund is smaller than what I paid. What does our policy say?"
    text, retrieved = rag.user_text(question, 3)
    assert text.startswith("<documents>\n<document id=")
    assert text.endswith(question)
    assert 500 <= retrieved <= 1200
    spec = load_policy_file(rag.POLICY).spec
    assert spec.static_blocks[0].match is not None
    assert spec.static_blocks[0].match.exact == rag.static_text()
    assert 2000 <= estimate_text(rag.static_text()) <= 3000


def test_twenty_tenants_twenty_prompts_of_real_size() -> None:
    prompts = [tenants.tenant_prompt(t) for t in range(tenants.TENANTS)]
    assert len(set(prompts)) == tenants.TENANTS == 20
    assert all(1400 <= estimate_text(p) <= 2700 for p in prompts)
    system = tenants.system_prompt(4, now=NOW, request_id=str(uuid.UUID(int=2)))
    first, second = system.splitlines()[:2]
    assert first == f"Current date and time: {NOW}"
    assert second.startswith("Request ID: ")
    users = tenants.generate(WorkloadConfig(users=40)).conversations
    assert {s.key for s in users} == set(range(20))


def test_one_slot_reachable_is_the_static_share_when_conversations_alternate() -> None:
    from promptcache.demo.app import Outcome
    from promptcache.usage import Usage

    workload = generate(WorkloadConfig(users=2, turns=(1, 1), prior_pairs=(0, 0)))
    outcomes = [
        Outcome(user=u, conversation=0, turn=0, started=float(u), latency=1.0, ttft=0.5,
                usage=Usage(uncached=1000), reply_tokens=10)
        for u in range(2)
    ]  # fmt: skip
    share = one_slot_reachable(workload, outcomes)
    # The second request reuses the static text only: a bit under half of all text.
    assert 0.3 < share < 0.5
    assert one_slot_reachable(workload, outcomes[:1]) == 0.0
