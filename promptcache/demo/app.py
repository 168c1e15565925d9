"""The support-agent "app": the legacy prompt builder and its streaming LLM call.

This is the application promptcache must not change. It builds its prompt the way the
case study's legacy system did: one system string, the current time and a request id
on top, then the static instructions, then customer metadata and retrieved policy
documents; the conversation history and the new question as messages. It calls the
model through the official ``anthropic`` SDK (``AsyncAnthropic``, streaming). The two
arms of the demo differ only in ``base_url``: the provider directly, or the sidecar.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import anthropic

from promptcache.demo.corpus import PolicyDocument, retrieve
from promptcache.demo.workload import Conversation, static_text
from promptcache.tokens import estimate_text
from promptcache.usage import Usage, from_anthropic

log = logging.getLogger(__name__)


def legacy_header(*, now: datetime, request_id: str) -> str:
    """The lines the legacy prompt starts with: the current time and the request id."""
    return f"Current date and time: {now.isoformat(timespec='seconds')}\nRequest ID: {request_id}"


def legacy_system(
    *, now: datetime, request_id: str, customer: str, documents: list[PolicyDocument]
) -> str:
    """The legacy concatenated system prompt, timestamp first (the cache buster)."""
    docs = "\n".join(d.render() for d in documents)
    return (
        legacy_header(now=now, request_id=request_id)
        + "\n\n"
        + static_text()
        + f"\n\n{customer}\n<policy_documents>\n{docs}\n</policy_documents>"
    )


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one request did, as the app saw it."""

    user: int
    conversation: int
    turn: int
    started: float
    """Monotonic seconds when the call began."""
    latency: float
    """Seconds from the call to the end of the stream (or the error)."""
    ttft: float | None
    """Seconds to the first text delta; None when no text arrived."""
    usage: Usage
    error: str | None = None
    """Exception class name of a failed call."""
    retrieved_tokens: int = 0
    """Estimated tokens of the retrieved documents in this request."""
    reply_tokens: int = 0
    """Estimated tokens of the reply as the next turn sends it back (input, not output)."""

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(frozen=True, slots=True)
class Call:
    """One streamed Messages call as the app saw it."""

    started: float
    latency: float
    ttft: float | None
    usage: Usage
    reply: str
    error: str | None


async def stream_call(
    client: anthropic.AsyncAnthropic,
    *,
    model: str,
    max_tokens: int,
    system: str,
    messages: list[dict[str, Any]],
    tools: list[dict[str, Any]] | None = None,
) -> Call:
    """Stream one answer with the official SDK; failures are returned, not raised."""
    started = time.monotonic()
    ttft: float | None = None
    parts: list[str] = []
    extra: dict[str, Any] = {"tools": tools} if tools else {}
    try:
        async with client.messages.stream(
            model=model,
            max_tokens=max_tokens,
            system=system,
            messages=messages,  # type: ignore[arg-type]
            **extra,
        ) as stream:
            async for text in stream.text_stream:
                if ttft is None:
                    ttft = time.monotonic() - started
                parts.append(text)
            final = await stream.get_final_message()
    except (anthropic.APIError, OSError) as exc:
        log.warning("request failed: %s", type(exc).__name__)
        return Call(started, time.monotonic() - started, ttft, Usage(), "", type(exc).__name__)
    usage = from_anthropic(final.usage.model_dump())
    return Call(started, time.monotonic() - started, ttft, usage, "".join(parts), None)


def outcome_of(
    call: Call, *, user: int, conversation: int, turn: int, retrieved_tokens: int = 0
) -> Outcome:
    """The ``Outcome`` the demo records for ``call``."""
    return Outcome(
        user=user,
        conversation=conversation,
        turn=turn,
        started=call.started,
        latency=call.latency,
        ttft=call.ttft,
        usage=call.usage,
        error=call.error,
        retrieved_tokens=0 if call.error else retrieved_tokens,
        reply_tokens=estimate_text(call.reply),
    )


Record = Callable[[Outcome], None]
"""Where an app reports each request's outcome (the runner's progress and totals)."""


class SupportAgent:
    """One app instance: a shared SDK client, as a real app server holds."""

    def __init__(
        self, *, base_url: str, model: str, max_tokens: int, docs_per_request: int, timeout: float
    ) -> None:
        self._client = anthropic.AsyncAnthropic(
            base_url=base_url, api_key="demo-not-a-real-key", timeout=timeout
        )
        self._model = model
        self._max_tokens = max_tokens
        self._k = docs_per_request

    async def close(self) -> None:
        await self._client.close()

    async def conversation(self, conv: Conversation, *, time_scale: float, record: Record) -> None:
        """Every turn of ``conv``, thinking between turns; stops at the first failure."""
        history = list(conv.prior_history)
        for turn in range(len(conv.questions)):
            await asyncio.sleep(conv.think_times[turn] * time_scale)
            outcome, reply = await self.turn(conv, turn, history)
            record(outcome)
            if not outcome.ok or not reply:
                break  # the user gives up on this conversation
            history += [
                {"role": "user", "content": conv.questions[turn]},
                {"role": "assistant", "content": reply},
            ]

    async def turn(
        self, conv: Conversation, turn: int, history: list[dict[str, str]]
    ) -> tuple[Outcome, str]:
        """Send turn ``turn`` of ``conv`` after ``history``; return the outcome and reply."""
        question = conv.questions[turn]
        documents = retrieve(question, self._k)
        system = legacy_system(
            now=datetime.now(UTC),
            request_id=conv.request_ids[turn],
            customer=conv.customer.render(),
            documents=documents,
        )
        call = await stream_call(
            self._client,
            model=self._model,
            max_tokens=self._max_tokens,
            system=system,
            messages=[*history, {"role": "user", "content": question}],
        )
        outcome = outcome_of(
            call,
            user=conv.user,
            conversation=conv.index,
            turn=turn,
            retrieved_tokens=sum(estimate_text(d.render()) for d in documents),
        )
        return outcome, call.reply
