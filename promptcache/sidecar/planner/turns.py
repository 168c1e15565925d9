"""Finding the user's turns in a conversation: one definition for the whole sidecar.

The planner puts fetched context into the newest user message, context sources search
with its text, and the learner tells conversations apart by the first one. All three
ask the same question of the same shapes (Anthropic Messages, Chat Completions,
Responses input items), so it is answered here once.

A *user message* is an object whose ``role`` is ``user``. The planner wants the newest
one whatever it holds (in an agent's tool loop that is a message of tool results, and
context goes after them); a retrieval query wants the newest one with text the user
wrote, so ``with_text=True`` skips messages that hold only tool results or images.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

TEXT_PARTS = ("text", "input_text")
"""Content part types whose ``text`` is what the user wrote (Anthropic, OpenAI)."""


def role_of(message: Any) -> str | None:
    if isinstance(message, dict):
        role = message.get("role")
        if isinstance(role, str):
            return role
    return None


def content_text(content: object) -> str:
    """The text parts of a message's content, joined by blank lines."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return ""
    texts = [
        part["text"]
        for part in content
        if isinstance(part, Mapping)
        and part.get("type") in TEXT_PARTS
        and isinstance(part.get("text"), str)
    ]
    return "\n\n".join(t for t in texts if t)


def newest_user(
    messages: Sequence[Any], before: int | None = None, *, with_text: bool = False
) -> int | None:
    """Index of the last user message (before ``before`` if given); with ``with_text``,
    the last one whose text parts are not blank."""
    end = len(messages) if before is None else before
    for i in range(end - 1, -1, -1):
        message = messages[i]
        if role_of(message) != "user":
            continue
        if not with_text or content_text(message.get("content")).strip():
            return i
    return None


def conversation_of(body: Mapping[str, Any]) -> tuple[list[Any], str | None]:
    """The message list of a Messages, Chat Completions or Responses body, and the
    Responses string ``input`` when the body has one instead."""
    messages = body.get("messages")
    if messages is None:
        messages = body.get("input")
        if isinstance(messages, str):
            return [], messages
    return (messages if isinstance(messages, list) else []), None


def newest_user_text(body: object, limit: int) -> str | None:
    """The text of the newest user message with text (cut to ``limit`` characters);
    ``None`` when there is none."""
    if not isinstance(body, Mapping):
        return None
    messages, string_input = conversation_of(body)
    if string_input is not None:
        return string_input[:limit] or None
    i = newest_user(messages, with_text=True)
    return None if i is None else content_text(messages[i].get("content"))[:limit]
