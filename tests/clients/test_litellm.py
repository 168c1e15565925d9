"""The litellm SDK as a client through the sidecar (Anthropic and OpenAI routes).

litellm translates OpenAI-style messages into each provider's API; the case study's
pattern (static system message, time message, question) goes through it to the sidecar,
streamed and not, with a tool: answers whole, usage as the provider counted it, cache
reads from the second call.
"""

from __future__ import annotations

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no price-list download

from typing import Any

import litellm
import pytest

from tests.clients.conftest import (
    ANTHROPIC_MODEL,
    KEY,
    OPENAI_MODEL,
    STATIC_SYSTEM,
    Stack,
    dynamic_system,
)

litellm.telemetry = False
# litellm's own pydantic models warn when first built; that is litellm's, not ours.
pytestmark = [
    pytest.mark.filterwarnings("ignore:.*ReadOnly.*:UserWarning"),
    pytest.mark.filterwarnings("ignore:Accessing the 'model_.*' attribute:DeprecationWarning"),
]
TOOL = {
    "type": "function",
    "function": {
        "name": "order_status",
        "description": "The shipping status of an order.",
        "parameters": {
            "type": "object",
            "properties": {"order_id": {"type": "string"}},
            "required": ["order_id"],
        },
    },
}


def case_study(minute: int, question: str) -> list[dict[str, Any]]:
    return [
        {"role": "system", "content": STATIC_SYSTEM},
        {"role": "system", "content": dynamic_system(minute)},
        {"role": "user", "content": question},
    ]


def target(stack: Stack, provider: str) -> dict[str, Any]:
    if provider == "anthropic":
        return {"model": f"anthropic/{ANTHROPIC_MODEL}", "api_base": stack.sidecar_url}
    return {"model": f"openai/{OPENAI_MODEL}", "api_base": stack.openai_url}


async def call(
    stack: Stack, provider: str, messages: list[Any], *, stream: bool, **extra: Any
) -> tuple[str, Any]:
    """(answer text, usage) of one litellm call."""
    kwargs: dict[str, Any] = target(stack, provider) | {
        "messages": messages,
        "api_key": KEY,
        "max_tokens": 40,
        "num_retries": 0,
        "timeout": 30,
        **extra,
    }
    if not stream:
        response = await litellm.acompletion(**kwargs)
        return response.choices[0].message.content or "", response.usage
    chunks = []
    stream_response = await litellm.acompletion(
        **kwargs, stream=True, stream_options={"include_usage": True}
    )
    async for chunk in stream_response:
        chunks.append(chunk)
    whole: Any = litellm.stream_chunk_builder(chunks, messages=messages)
    assert whole is not None
    return whole.choices[0].message.content or "", whole.usage


def kinds(usage: Any) -> dict[str, int]:
    details = getattr(usage, "prompt_tokens_details", None)
    read = int(getattr(details, "cached_tokens", 0) or 0)
    write = int(getattr(usage, "cache_creation_input_tokens", 0) or 0)
    return {
        "uncached": usage.prompt_tokens - read - write,
        "cache_read": read,
        "cache_write": write,
        "output": usage.completion_tokens,
    }


@pytest.mark.parametrize("provider", ["anthropic", "openai"])
@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
async def test_case_study_pattern(stack: Stack, provider: str, stream: bool) -> None:
    reads: list[int] = []
    for minute in range(3):
        text, usage = await call(
            stack, provider, case_study(minute, "Can I return shoes?"), stream=stream
        )
        assert text
        seen = stack.delta()
        got = kinds(usage)
        assert got == {k: seen[k] for k in got}
        reads.append(got["cache_read"])
    assert reads[0] == 0
    assert all(r >= len(STATIC_SYSTEM) // 4 * 0.9 for r in reads[1:]), reads


@pytest.mark.parametrize("provider", ["anthropic", "openai"])
async def test_streamed_answer_equals_whole_answer(stack: Stack, provider: str) -> None:
    messages = case_study(5, "Where is my parcel?")
    whole, _ = await call(stack, provider, messages, stream=False)
    streamed, _ = await call(stack, provider, messages, stream=True)
    assert whole == streamed
    assert whole


@pytest.mark.parametrize("provider", ["anthropic", "openai"])
@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
async def test_tool_loop(stack: Stack, provider: str, stream: bool) -> None:
    history: list[Any] = case_study(7, "Where is order 42?")
    await call(stack, provider, history, stream=stream, tools=[TOOL])
    history += [
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "toolu_01",
                    "type": "function",
                    "function": {"name": "order_status", "arguments": '{"order_id": "42"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "toolu_01", "content": "order 42 shipped yesterday"},
    ]
    text, usage = await call(stack, provider, history, stream=stream, tools=[TOOL])
    assert text
    assert kinds(usage)["cache_read"] > 0
