"""LangChain's ``ChatOpenAI`` through the sidecar, with the case study's message pattern.

Streamed (usage asked for with ``stream_usage``) and not, with a tool: answers arrive
whole, the usage LangChain reports is what the provider counted, and from the second call
on the static system prompt is read from cache though the time message changes.
"""

from __future__ import annotations

from typing import Any

import pytest
from langchain_core.messages import AIMessage, ToolMessage
from langchain_openai import ChatOpenAI

from tests.clients.conftest import KEY, OPENAI_MODEL, STATIC_SYSTEM, Stack
from tests.clients.langchain_case import case_study, order_status


def model(stack: Stack, *, streaming: bool) -> ChatOpenAI:
    return ChatOpenAI(
        model=OPENAI_MODEL,
        api_key=KEY,  # type: ignore[arg-type]
        base_url=stack.openai_url,
        max_completion_tokens=40,
        max_retries=0,
        streaming=streaming,
        stream_usage=True,
        timeout=30,
    )


def usage_kinds(message: AIMessage) -> dict[str, int]:
    meta = message.usage_metadata
    assert meta is not None
    read = int((meta.get("input_token_details") or {}).get("cache_read") or 0)
    return {
        "uncached": meta["input_tokens"] - read,
        "cache_read": read,
        "output": meta["output_tokens"],
    }


@pytest.mark.parametrize("streaming", [False, True], ids=["whole", "streamed"])
async def test_case_study_pattern_reads_cache_from_the_second_call(
    stack: Stack, streaming: bool
) -> None:
    llm = model(stack, streaming=streaming)
    reads: list[int] = []
    for minute in range(3):
        reply = await llm.ainvoke(case_study(minute, "Can I return shoes?"))
        assert isinstance(reply, AIMessage)
        assert isinstance(reply.content, str)
        assert reply.content
        seen = stack.delta()
        kinds = usage_kinds(reply)
        assert kinds == {k: seen[k] for k in kinds}
        reads.append(kinds["cache_read"])
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
    await llm.ainvoke(history)
    call = {"name": "order_status", "args": {"order_id": "42"}, "id": "call_1", "type": "tool_call"}
    history += [
        AIMessage(content="", tool_calls=[call]),
        ToolMessage(order_status.invoke({"order_id": "42"}), tool_call_id="call_1"),
    ]
    second = await llm.ainvoke(history)
    assert isinstance(second, AIMessage)
    assert second.content
    assert usage_kinds(second)["cache_read"] > 0
