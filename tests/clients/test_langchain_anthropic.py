"""LangChain's ``ChatAnthropic`` through the sidecar, with the case study's message pattern.

Streamed and not, with a tool: answers arrive whole, the usage LangChain reports is what
the provider counted, and from the second call on the static system prompt is read from
the cache although the time line in the second system message changes every call.
"""

from __future__ import annotations

from typing import Any

import pytest
from langchain_anthropic import ChatAnthropic
from langchain_core.messages import AIMessage, ToolMessage

from tests.clients.conftest import ANTHROPIC_MODEL, KEY, STATIC_SYSTEM, Stack
from tests.clients.langchain_case import case_study, order_status


def model(stack: Stack, *, streaming: bool) -> ChatAnthropic:
    return ChatAnthropic(
        model_name=ANTHROPIC_MODEL,
        api_key=KEY,  # type: ignore[arg-type]
        base_url=stack.sidecar_url,
        max_tokens_to_sample=40,
        stop=None,
        max_retries=0,
        streaming=streaming,
        stream_usage=True,
        timeout=30,
    )


def usage_kinds(message: AIMessage) -> dict[str, int]:
    meta = message.usage_metadata
    assert meta is not None
    details = meta.get("input_token_details") or {}
    read = int(details.get("cache_read") or 0)
    # LangChain splits writes by TTL when the API does (and then zeroes ``cache_creation``).
    counts: dict[str, Any] = dict(details)
    write = sum(
        int(counts.get(k) or 0)
        for k in ("cache_creation", "ephemeral_5m_input_tokens", "ephemeral_1h_input_tokens")
    )
    return {
        "uncached": meta["input_tokens"] - read - write,
        "cache_read": read,
        "cache_write": write,
        "output": meta["output_tokens"],
    }


@pytest.mark.parametrize("streaming", [False, True], ids=["whole", "streamed"])
async def test_case_study_pattern_reads_cache_from_the_second_call(
    stack: Stack, streaming: bool
) -> None:
    llm = model(stack, streaming=streaming)
    answers: list[AIMessage] = []
    for minute in range(3):
        reply = await llm.ainvoke(case_study(minute, "Can I return shoes?"))
        assert isinstance(reply, AIMessage)
        seen = stack.delta()
        assert usage_kinds(reply) == {k: seen[k] for k in usage_kinds(reply)}
        answers.append(reply)
    assert all(isinstance(a.content, str) and a.content for a in answers)
    reads = [usage_kinds(a)["cache_read"] for a in answers]
    assert reads[0] == 0
    assert all(r >= len(STATIC_SYSTEM) // 4 * 0.9 for r in reads[1:]), reads


async def test_streamed_answer_equals_whole_answer(stack: Stack) -> None:
    whole = await model(stack, streaming=False).ainvoke(case_study(5, "Where is my parcel?"))
    streamed = await model(stack, streaming=True).ainvoke(case_study(5, "Where is my parcel?"))
    assert whole.content == streamed.content
    assert whole.content


@pytest.mark.parametrize("streaming", [False, True], ids=["whole", "streamed"])
async def test_tool_loop(stack: Stack, streaming: bool) -> None:
    llm = model(stack, streaming=streaming).bind_tools([order_status])
    history: list[Any] = case_study(7, "Where is order 42?")
    first = await llm.ainvoke(history)
    assert isinstance(first, AIMessage)
    stack.delta()
    call = {
        "name": "order_status",
        "args": {"order_id": "42"},
        "id": "toolu_01",
        "type": "tool_call",
    }
    asked = AIMessage(content=[{"type": "text", "text": str(first.content)}], tool_calls=[call])
    history += [
        asked,
        ToolMessage(order_status.invoke({"order_id": "42"}), tool_call_id="toolu_01"),
    ]
    second = await llm.ainvoke(history)
    assert isinstance(second, AIMessage)
    assert second.content
    assert usage_kinds(second)["cache_read"] > 0
