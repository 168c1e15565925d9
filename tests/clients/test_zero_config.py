"""The case study's pattern through the sidecar without any policy (zero configuration).

The sidecar learns from the traffic that the first system block stays and the time
block changes: the first call goes out unmarked, the second writes the static prefix
once, every call after reads it. Checked with LangChain's Anthropic and OpenAI models.
"""

from __future__ import annotations

import pytest
from langchain_core.messages import AIMessage

from tests.clients import test_langchain_anthropic as lc_anthropic
from tests.clients import test_langchain_openai as lc_openai
from tests.clients.conftest import STATIC_SYSTEM, Stack


@pytest.fixture
def policy_text() -> str | None:
    return None


async def test_anthropic_learns_the_template(stack: Stack) -> None:
    llm = lc_anthropic.model(stack, streaming=False)
    usages = []
    for minute in range(5):
        reply = await llm.ainvoke(lc_anthropic.case_study(minute, "Can I return shoes?"))
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
        reply = await llm.ainvoke(lc_openai.case_study(minute, "Can I return shoes?"))
        assert isinstance(reply, AIMessage)
        reads.append(lc_openai.usage_kinds(reply)["cache_read"])
    assert all(r >= len(STATIC_SYSTEM) // 4 * 0.9 for r in reads[2:]), reads
