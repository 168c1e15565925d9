"""``POST /v1/chat/completions`` and ``POST /v1/responses``: the OpenAI dialect.

Chat Completions streams ``chat.completion.chunk`` objects (role first, then content,
then the finish reason) and, only when ``stream_options.include_usage`` is true, one
last chunk with ``choices: []`` and the usage; then ``data: [DONE]``. Cached tokens are
reported in ``usage.prompt_tokens_details.cached_tokens``. Responses streams its named
events from ``response.created`` to ``response.completed`` (``response.incomplete``
when the output limit cut the answer) and reports ``input_tokens_details.cached_tokens``.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aiohttp import web

from .engine import Prefilled, RequestContext, Route, Served, Simulation
from .metrics import Api as MetricApi
from .openai_cache import Api, OpenAIPrompt, parse_request
from .outcome import CacheOutcome
from .sse import DONE, event, open_stream, send_json
from .textgen import Answer, answer

_FINGERPRINT = "fp_sim00001"
_METRIC_API: dict[Api, MetricApi] = {"chat": "openai_chat", "responses": "openai_responses"}

Respond = Callable[[web.Request, OpenAIPrompt, Prefilled, RequestContext], Awaitable[Served]]


def chat_usage(
    outcome: CacheOutcome, output_tokens: int, *, writes: bool = False
) -> dict[str, Any]:
    """Chat usage; ``writes`` (GPT-5.6+) adds ``prompt_tokens_details.cache_write_tokens``."""
    details: dict[str, int] = {"cached_tokens": outcome.cache_read, "audio_tokens": 0}
    if writes:
        details["cache_write_tokens"] = outcome.cache_write
    return {
        "prompt_tokens": outcome.total_input,
        "completion_tokens": output_tokens,
        "total_tokens": outcome.total_input + output_tokens,
        "prompt_tokens_details": details,
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def responses_usage(outcome: CacheOutcome, output_tokens: int) -> dict[str, Any]:
    """Responses usage: writes by TTL (the outcome's 5m/1h slots hold OpenAI's 30m/12h)."""
    return {
        "input_tokens": outcome.total_input,
        "input_tokens_details": {
            "cached_tokens": outcome.cache_read,
            "cache_write_tokens": outcome.cache_write,
            "cache_write_tokens_details": {
                "ttl_30m_tokens": outcome.cache_write_5m,
                "ttl_12h_tokens": outcome.cache_write_1h,
            },
        },
        "output_tokens": output_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": outcome.total_input + output_tokens,
    }


def _answer(sim: Simulation, prompt: OpenAIPrompt) -> Answer:
    return answer(
        seed=sim.config.seed,
        digest=prompt.digest,
        limit=prompt.max_output_tokens,
        config=sim.config.output,
    )


def _groups(sim: Simulation, ans: Answer) -> list[str]:
    step = sim.config.output.tokens_per_event
    return ["".join(ans.pieces[i : i + step]) for i in range(0, len(ans.pieces), step)]


def _route(sim: Simulation, api: Api, respond: Respond) -> Route[OpenAIPrompt]:
    """An OpenAI endpoint: ``api``'s request rules, the shared OpenAI cache, ``respond``."""

    def parse(body: Any, headers: Mapping[str, str]) -> OpenAIPrompt:
        del headers
        return parse_request(body, api=api, config=sim.config.cache)

    def resolve(prompt: OpenAIPrompt, now: float) -> CacheOutcome:
        return sim.openai.resolve(prompt, now=now)

    return Route(
        api=_METRIC_API[api], dialect="openai", parse=parse, resolve=resolve, respond=respond
    )


def chat_route(sim: Simulation) -> Route[OpenAIPrompt]:
    """The Chat Completions endpoint bound to one simulation."""

    async def respond(
        request: web.Request, prompt: OpenAIPrompt, pre: Prefilled, ctx: RequestContext
    ) -> Served:
        ans = _answer(sim, prompt)
        n = len(ans.pieces)
        headers = {"x-request-id": ctx.request_id}
        finish = "length" if ans.truncated else "stop"
        writes = prompt.breakpoints is not None
        base: dict[str, Any] = {
            "id": ctx.new_id("chatcmpl-", 29),
            "created": int(time.time()),
            "model": prompt.model,
            "service_tier": "default",
            "system_fingerprint": _FINGERPRINT,
        }
        if not prompt.stream:
            await sim.sleep(sim.decode_s(ctx, n))
            message: dict[str, Any] = {
                "role": "assistant",
                "content": ans.text,
                "refusal": None,
                "annotations": [],
            }
            payload = base | {
                "object": "chat.completion",
                "choices": [
                    {"index": 0, "message": message, "logprobs": None, "finish_reason": finish}
                ],
                "usage": chat_usage(pre.outcome, n, writes=writes),
            }
            sent = await send_json(request, payload, headers, abort=ctx.abort_during)
            return Served(sent, n, aborted=ctx.abort_during)

        chunk = base | {"object": "chat.completion.chunk"}
        if prompt.include_usage:
            chunk["usage"] = None

        def frame(delta: dict[str, Any], reason: str | None = None) -> bytes:
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": reason}
            return event(None, chunk | {"choices": [choice]})

        response = await open_stream(request, headers)
        await response.write(frame({"role": "assistant", "content": "", "refusal": None}))
        deltas = [frame({"content": text}) for text in _groups(sim, ans)]
        if not await sim.paced_write(
            request, response, ctx, deltas, interval_s=sim.decode_interval_s(ctx)
        ):
            return Served(response, sim.sent_tokens(n), aborted=True)
        tail = frame({}, finish)
        if prompt.include_usage:
            tail += event(
                None, chunk | {"choices": [], "usage": chat_usage(pre.outcome, n, writes=writes)}
            )
        await response.write(tail + DONE)
        await response.write_eof()
        return Served(response, n)

    return _route(sim, "chat", respond)


def responses_route(sim: Simulation) -> Route[OpenAIPrompt]:
    """The Responses endpoint bound to one simulation."""

    async def respond(
        request: web.Request, prompt: OpenAIPrompt, pre: Prefilled, ctx: RequestContext
    ) -> Served:
        ans = _answer(sim, prompt)
        n = len(ans.pieces)
        headers = {"x-request-id": ctx.request_id}
        item_id = ctx.new_id("msg_", 32)
        part = {"type": "output_text", "annotations": [], "logprobs": [], "text": ans.text}
        item = {
            "id": item_id,
            "type": "message",
            "status": "incomplete" if ans.truncated else "completed",
            "content": [part],
            "role": "assistant",
        }
        created = time.time()
        status = "incomplete" if ans.truncated else "completed"
        final: dict[str, Any] = {
            "id": ctx.new_id("resp_", 32),
            "object": "response",
            "created_at": int(created),
            "status": status,
            "background": False,
            "completed_at": int(created),
            "error": None,
            "incomplete_details": {"reason": "max_output_tokens"} if ans.truncated else None,
            "instructions": prompt.instructions,
            "max_output_tokens": prompt.max_output_tokens,
            "metadata": {},
            "model": prompt.model,
            "output": [item],
            "parallel_tool_calls": True,
            "previous_response_id": None,
            "prompt_cache_key": prompt.cache_key,
            "prompt_cache_options": prompt.cache_options,
            "prompt_cache_retention": prompt.retention,
            "reasoning": {"effort": None, "summary": None},
            "service_tier": "default",
            "store": True,
            "temperature": 1.0,
            "text": {"format": {"type": "text"}, "verbosity": "medium"},
            "tool_choice": "auto",
            "tools": [],
            "top_p": 1.0,
            "truncation": "disabled",
            "usage": responses_usage(pre.outcome, n),
            "user": None,
        }
        if not prompt.stream:
            await sim.sleep(sim.decode_s(ctx, n))
            sent = await send_json(request, final, headers, abort=ctx.abort_during)
            return Served(sent, n, aborted=ctx.abort_during)

        seq = iter(range(1_000_000))

        def ev(name: str, data: dict[str, Any]) -> bytes:
            return event(name, {"type": name, "sequence_number": next(seq)} | data)

        pending = final | {
            "status": "in_progress",
            "output": [],
            "usage": None,
            "completed_at": None,
            "incomplete_details": None,
        }
        where = {"item_id": item_id, "output_index": 0, "content_index": 0}
        head = (
            ev("response.created", {"response": pending})
            + ev("response.in_progress", {"response": pending})
            + ev(
                "response.output_item.added",
                {"output_index": 0, "item": item | {"status": "in_progress", "content": []}},
            )
            + ev("response.content_part.added", where | {"part": part | {"text": ""}})
        )
        response = await open_stream(request, headers)
        await response.write(head)
        deltas = [
            ev("response.output_text.delta", where | {"delta": text, "logprobs": []})
            for text in _groups(sim, ans)
        ]
        if not await sim.paced_write(
            request, response, ctx, deltas, interval_s=sim.decode_interval_s(ctx)
        ):
            return Served(response, sim.sent_tokens(n), aborted=True)
        done = "response.incomplete" if ans.truncated else "response.completed"
        tail = (
            ev("response.output_text.done", where | {"text": ans.text, "logprobs": []})
            + ev("response.content_part.done", where | {"part": part})
            + ev("response.output_item.done", {"output_index": 0, "item": item})
            + ev(done, {"response": final})
        )
        await response.write(tail)
        await response.write_eof()
        return Served(response, n)

    return _route(sim, "responses", respond)
