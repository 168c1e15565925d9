"""Calls LlamaIndex's Anthropic LLM makes, run inside ``.venv-llamaindex``.

LlamaIndex's current ``llama-index-llms-anthropic`` builds ``MessageParam(...)`` objects,
which the anthropic SDK 2.x made a type union (a TypeError), so it runs in its own
environment with the SDK it works with (``tests/clients/llamaindex-requirements.txt``).
``tests/clients/test_llamaindex.py`` runs this script as a subprocess against the sidecar
and reads one JSON line per call from its standard output: the answer text and the
Anthropic usage the LLM returned.

Usage: python llamaindex_calls.py BASE_URL API_KEY MODEL STATIC_FILE
"""

from __future__ import annotations

import json
import sys
from typing import Any

from llama_index.core.llms import ChatMessage, MessageRole
from llama_index.core.tools import FunctionTool
from llama_index.llms.anthropic import Anthropic


def order_status(order_id: str) -> str:
    """The shipping status of an order."""
    return f"order {order_id} shipped yesterday"


def usage_of(raw: Any) -> dict[str, int]:
    usage = raw["usage"] if isinstance(raw, dict) else raw.usage
    if not isinstance(usage, dict):
        usage = usage.model_dump()
    return {k: v for k, v in usage.items() if isinstance(v, int)}


def emit(kind: str, text: str, usage: dict[str, int]) -> None:
    sys.stdout.write(json.dumps({"kind": kind, "text": text, "usage": usage}) + "\n")
    sys.stdout.flush()


def case_study(static: str, minute: int, question: str) -> list[ChatMessage]:
    return [
        ChatMessage(role=MessageRole.SYSTEM, content=static),
        ChatMessage(
            role=MessageRole.SYSTEM, content=f"Current time: 2026-12-04T10:{minute:02d}:00+00:00"
        ),
        ChatMessage(role=MessageRole.USER, content=question),
    ]


def main() -> None:
    base_url, key, model, static_file = sys.argv[1:5]
    with open(static_file, encoding="utf-8") as f:
        static = f.read()
    llm = Anthropic(model=model, api_key=key, base_url=base_url, max_tokens=40, max_retries=0)
    for minute in range(3):
        reply = llm.chat(case_study(static, minute, "Can I return shoes?"))
        emit("whole", reply.message.content or "", usage_of(reply.raw))
    for minute in range(3, 6):
        chunks = list(llm.stream_chat(case_study(static, minute, "Can I return shoes?")))
        assert chunks
        last = chunks[-1]
        # The stream's usage: message_start's input side, the last message_delta's output.
        emit("streamed", last.message.content or "", usage_of(last.raw))
    tool = FunctionTool.from_defaults(fn=order_status)
    history = case_study(static, 7, "Where is order 42?")
    asked = llm.chat_with_tools([tool], chat_history=history)
    emit("tool_call", asked.message.content or "", usage_of(asked.raw))
    calls = llm.get_tool_calls_from_response(asked, error_on_no_tool_call=False)
    call_id = calls[0].tool_id if calls else "toolu_01"
    if not calls:  # the simulator answers in text; make the model's tool call by hand
        asked.message.additional_kwargs["tool_calls"] = [
            {"id": call_id, "name": "order_status", "input": {"order_id": "42"}, "type": "tool_use"}
        ]
    history += [
        asked.message,
        ChatMessage(
            role=MessageRole.TOOL,
            content=order_status("42"),
            additional_kwargs={"tool_call_id": call_id, "name": "order_status"},
        ),
    ]
    done = llm.chat_with_tools([tool], chat_history=history)
    emit("tool_result", done.message.content or "", usage_of(done.raw))


if __name__ == "__main__":
    main()
