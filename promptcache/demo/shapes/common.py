"""What the extra app shapes share: seeded sessions, and the chat loop that sends them.

A session is one user's conversation, decided up front from the workload's seed (its
questions, ids, think times and, for the agent, its tool calls), so that every arm of
the demo sends the same traffic. Only the model's replies and the clock differ.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import anthropic

from promptcache.demo.app import Record, outcome_of, stream_call
from promptcache.demo.workload import WorkloadConfig

KEY = "demo-not-a-real-key"


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A tool the agent calls in one step of its loop, and what the tool returns."""

    name: str
    input: dict[str, Any]
    result: str
    seconds: float
    """How long the tool takes to run (unscaled)."""


@dataclass(frozen=True, slots=True)
class Session:
    """One conversation of one user."""

    user: int
    index: int
    key: int
    """Which tenant (multi-tenant app); 0 for the others."""
    questions: tuple[str, ...]
    request_ids: tuple[str, ...]
    think_times: tuple[float, ...]
    """Unscaled seconds before each question (the first one is the start delay)."""
    tools: tuple[tuple[ToolCall, ...], ...] = ()
    """Per question, the tool calls the agent makes before it answers (agent app)."""

    @property
    def requests(self) -> int:
        return len(self.questions) + sum(len(t) for t in self.tools)


@dataclass(frozen=True, slots=True)
class Sessions:
    """Every session of a run."""

    config: WorkloadConfig
    conversations: tuple[Session, ...] = field(default=())

    @property
    def requests(self) -> int:
        return sum(c.requests for c in self.conversations)

    def for_user(self, user: int) -> list[Session]:
        return [c for c in self.conversations if c.user == user]


def request_id(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def think_times(
    config: WorkloadConfig, rng: random.Random, index: int, n: int
) -> tuple[float, ...]:
    """Start delay (within the ramp-up for a user's first session), then think times."""
    start = rng.uniform(0.0, config.ramp_up) if index == 0 else rng.uniform(*config.think_time)
    return (start, *(rng.uniform(*config.think_time) for _ in range(n - 1)))


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class ChatApp:
    """A chat app: a system prompt per request, the question (as the app wraps it) in the
    last user message, the history as sent before. Subclasses build the two texts."""

    def __init__(self, *, base_url: str, config: WorkloadConfig, timeout: float) -> None:
        self._client = anthropic.AsyncAnthropic(base_url=base_url, api_key=KEY, timeout=timeout)
        self.config = config

    async def close(self) -> None:
        await self._client.close()

    def system(self, session: Session, turn: int) -> str:
        raise NotImplementedError

    def user_message(self, session: Session, turn: int) -> tuple[str, int]:
        """The last user message's text, and its retrieved tokens."""
        return session.questions[turn], 0

    async def conversation(self, session: Session, *, time_scale: float, record: Record) -> None:
        history: list[dict[str, Any]] = []
        for turn in range(len(session.questions)):
            await asyncio.sleep(session.think_times[turn] * time_scale)
            text, retrieved = self.user_message(session, turn)
            call = await stream_call(
                self._client,
                model=self.config.model,
                max_tokens=self.config.max_tokens,
                system=self.system(session, turn),
                messages=[*history, {"role": "user", "content": text}],
            )
            record(
                outcome_of(
                    call,
                    user=session.user,
                    conversation=session.index,
                    turn=turn,
                    retrieved_tokens=retrieved,
                )
            )
            if call.error or not call.reply:
                return  # the user gives up on this conversation
            history += [
                {"role": "user", "content": text},
                {"role": "assistant", "content": call.reply},
            ]


def generate_sessions(
    config: WorkloadConfig, make: Callable[[random.Random, int, int], Session]
) -> Sessions:
    """Every session of a run, from ``config.seed`` alone (``make(rng, user, index)``)."""
    rng = random.Random(config.seed)
    return Sessions(
        config=config,
        conversations=tuple(
            make(rng, user, index)
            for user in range(config.users)
            for index in range(config.conversations_per_user)
        ),
    )
