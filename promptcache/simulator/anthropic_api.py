"""``POST /v1/messages``: the Anthropic Messages API, streaming and not.

The stream follows the real event sequence — ``message_start`` (usage with all cache
fields), ``content_block_start``, ``ping``, ``content_block_delta`` (``text_delta``) per
few tokens, ``content_block_stop``, ``message_delta`` (cumulative usage), then
``message_stop`` — so the official SDK's stream helpers accumulate it like the real
thing. ``max_tokens: 0`` (cache pre-warming) answers with no content block. A request
with a ``diagnostics`` object gets the ``diagnostics`` result on the message (streamed:
on ``message_start``'s message).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aiohttp import web

from .anthropic_cache import VERSION_2023, AnthropicPrompt, parse_request
from .engine import Prefilled, RequestContext, Route, Served, Simulation
from .outcome import CacheOutcome
from .sse import event, open_stream, send_json
from .textgen import Answer, answer


def usage(outcome: CacheOutcome, output_tokens: int) -> dict[str, Any]:
    """The ``usage`` object with every cache field the API reports."""
    return {
        "input_tokens": outcome.uncached,
        "cache_creation_input_tokens": outcome.cache_write,
        "cache_read_input_tokens": outcome.cache_read,
        "cache_creation": {
            "ephemeral_5m_input_tokens": outcome.cache_write_5m,
            "ephemeral_1h_input_tokens": outcome.cache_write_1h,
        },
        "output_tokens": output_tokens,
        "service_tier": "standard",
    }


def _stop_reason(ans: Answer, max_tokens: int) -> str:
    return "max_tokens" if ans.truncated or max_tokens == 0 else "end_turn"


def messages_route(sim: Simulation) -> Route[AnthropicPrompt]:
    """The Messages endpoint bound to one simulation."""

    def parse(body: Any, headers: Mapping[str, str]) -> AnthropicPrompt:
        # No header: the old default, so raw HTTP tests without one keep working.
        return parse_request(body, version=headers.get("anthropic-version", VERSION_2023))

    def resolve(prompt: AnthropicPrompt, now: float) -> CacheOutcome:
        return sim.anthropic.resolve(prompt, now=now)

    async def respond(
        request: web.Request, prompt: AnthropicPrompt, pre: Prefilled, ctx: RequestContext
    ) -> Served:
        ans = answer(
            seed=sim.config.seed,
            digest=prompt.digest,
            limit=prompt.max_tokens,
            config=sim.config.output,
        )
        n = len(ans.pieces)
        headers = {"request-id": ctx.request_id}
        message: dict[str, Any] = {
            "id": ctx.new_id("msg_"),
            "type": "message",
            "role": "assistant",
            "model": prompt.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": usage(pre.outcome, min(n, 1)),
        }
        diagnostics = sim.anthropic.diagnostics(prompt, message["id"])
        if diagnostics is not None:
            message |= diagnostics
        stop_reason = _stop_reason(ans, prompt.max_tokens)
        if not prompt.stream:
            await sim.sleep(sim.decode_s(ctx, n))
            content = [{"type": "text", "text": ans.text}] if n else []
            final = message | {
                "content": content,
                "stop_reason": stop_reason,
                "usage": usage(pre.outcome, n),
            }
            sent = await send_json(request, final, headers, abort=ctx.abort_during)
            return Served(sent, n, aborted=ctx.abort_during)

        response = await open_stream(request, headers)
        head = event("message_start", {"type": "message_start", "message": message})
        step = sim.config.output.tokens_per_event
        deltas = [
            event(
                "content_block_delta",
                {
                    "type": "content_block_delta",
                    "index": 0,
                    "delta": {"type": "text_delta", "text": "".join(ans.pieces[i : i + step])},
                },
            )
            for i in range(0, n, step)
        ]
        if n:
            head += event(
                "content_block_start",
                {
                    "type": "content_block_start",
                    "index": 0,
                    "content_block": {"type": "text", "text": ""},
                },
            ) + event("ping", {"type": "ping"})
        await response.write(head)
        finished = await sim.paced_write(
            request, response, ctx, deltas, interval_s=sim.decode_interval_s(ctx)
        )
        if not finished:
            return Served(response, sim.sent_tokens(n), aborted=True)
        final_usage = usage(pre.outcome, n)
        del final_usage["cache_creation"], final_usage["service_tier"]
        tail = event("content_block_stop", {"type": "content_block_stop", "index": 0}) if n else b""
        tail += event(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": stop_reason, "stop_sequence": None},
                "usage": final_usage,
            },
        ) + event("message_stop", {"type": "message_stop"})
        await response.write(tail)
        await response.write_eof()
        return Served(response, n)

    return Route(
        api="anthropic", dialect="anthropic", parse=parse, resolve=resolve, respond=respond
    )
