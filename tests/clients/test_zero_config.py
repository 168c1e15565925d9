"""The case study's pattern through the sidecar without any policy (zero configuration).

The sidecar learns from the traffic that the first system block stays and the time
block changes: the first call goes out unmarked, the second writes the static prefix
once, every call after reads it. Checked with LangChain's Anthropic and OpenAI models,
GPT-5.6 included.
"""

from __future__ import annotations

import pytest
from langchain_core.messages import AIMessage
from langchain_openai import ChatOpenAI

from tests.clients import test_langchain_anthropic as lc_anthropic
from tests.clients import test_langchain_openai as lc_openai
from tests.clients.conftest import KEY, STATIC_SYSTEM, Stack
from tests.clients.langchain_case import case_study


@pytest.fixture
def policy_text() -> str | None:
    return None


async def test_anthropic_learns_the_template(stack: Stack) -> None:
    llm = lc_anthropic.model(stack, streaming=False)
    usages = []
    for minute in range(5):
        reply = await llm.ainvoke(case_study(minute, "Can I return shoes?"))
        assert isinstance(reply, AIMessage)
        usages.append(lc_anthropic.usage_kinds(reply))
    writes = [u["cache_write"] for u in usages]
    reads = [u["cache_read"] for u in usages]
    assert sum(1 for w in writes if w) == 1, writes  # the static prefix is written once
    assert all(r >= len(STATIC_SYSTEM) // 4 * 0.9 for r in reads[2:]), reads


async def test_openai_learns_the_template(stack: Stack) -> None:
    llm = lc_openai.model(stack, streaming=False)
    reads = []
    for minute in range(5):
        reply = await llm.ainvoke(case_study(minute, "Can I return shoes?"))
        assert isinstance(reply, AIMessage)
        reads.append(lc_openai.usage_kinds(reply)["cache_read"])
    assert all(r >= len(STATIC_SYSTEM) // 4 * 0.9 for r in reads[2:]), reads


async def test_gpt_5_6_gets_its_breakpoint_from_the_learned_template(stack: Stack) -> None:
    """GPT-5.6 reads nothing of a stable prefix before a changing question on its own
    (its implicit breakpoint sits at the newest message); the learned static part gets
    an explicit breakpoint, and LangChain reports the 1.25x writes as ``cache_creation``."""
    llm = ChatOpenAI(
        model="gpt-5.6-terra",
        api_key=KEY,  # type: ignore[arg-type]
        base_url=stack.openai_url,
        max_completion_tokens=40,
        max_retries=0,
    )
    reads, writes = [], []
    for minute in range(5):
        reply = await llm.ainvoke(case_study(minute, f"Can I return item {minute}?"))
        assert isinstance(reply, AIMessage)
        assert reply.usage_metadata is not None
        details = reply.usage_metadata.get("input_token_details") or {}
        reads.append(int(details.get("cache_read") or 0))
        writes.append(int(details.get("cache_creation") or 0))
        seen = stack.delta()
        assert (reads[-1], writes[-1]) == (seen["cache_read"], seen["cache_write"])
    assert all(r >= len(STATIC_SYSTEM) // 4 * 0.9 for r in reads[2:]), reads
