"""Per-conversation text pinned into the history, as the planner sends it (both dialects).

The learner's side is in ``test_learner.py``; this checks the bodies: the pinned block
goes at the start of the same user message on every later turn, byte-identical, so the
history the app re-sends carries it cached, and nothing the app sent is lost.
"""

from __future__ import annotations

import json
import random
from typing import Any

import pytest

from promptcache.sidecar.planner import Planner, PlanRequest
from promptcache.sidecar.planner.engine import conversation_turn

STATIC = "\n".join(f"Rule {i}: answer politely and cite policy {i}." for i in range(120))


def system(conv: int, turn: int) -> str:
    rng = random.Random(conv * 1000 + turn)
    customer = "\n".join(f"- order {conv}-{n}: {'boots ' * 6}" for n in range(6))
    return f"Now: {rng.random()}\n{STATIC}\n<customer>\n{customer}\n</customer>"


def request(route: str, text: str, history: list[dict[str, Any]]) -> PlanRequest:
    if route == "messages":
        body = {"model": "claude-sonnet-4-6", "max_tokens": 9, "system": text, "messages": history}
    else:
        messages = [{"role": "system", "content": text}, *history]
        body = {"model": "gpt-4o-mini", "messages": messages}
    return PlanRequest(route=route, body=body, now=0.0)  # type: ignore[arg-type]


def sent_messages(route: str, body: dict[str, Any]) -> list[Any]:
    messages: list[Any] = body["messages"]
    return messages if route == "messages" else messages[1:]


@pytest.mark.parametrize("route", ["messages", "chat"])
def test_the_pinned_block_rides_in_the_same_message_on_every_later_turn(route: str) -> None:
    planner = Planner()
    for conv in range(2):  # two other conversations' first turns: the template is learned
        planner.plan(request(route, system(conv, 0), [{"role": "user", "content": "hi"}]))
    history: list[dict[str, Any]] = [
        {"role": "user", "content": "earlier question"},
        {"role": "assistant", "content": "earlier answer"},
    ]
    pinned_message: list[str] = []
    for turn in range(5):
        history.append({"role": "user", "content": f"question {turn}"})
        text = system(7, turn)
        plan = planner.plan(request(route, text, history))
        sent = sent_messages(route, plan.body)
        dumped = json.dumps(plan.body)
        # Nothing the app sent is lost: every line of its system prompt is still sent.
        for line in text.splitlines():
            assert json.dumps(line)[1:-1] in dumped, line
        # The pin goes into the first turn's newest user message (index 2), always.
        pinned_message.append(json.dumps(sent[2]))
        assert '<context name=\\"conversation\\">' in pinned_message[-1]
        history.append({"role": "assistant", "content": f"answer {turn}"})
    # From the second turn on the pinned message is byte-identical (the first turn's may
    # also hold text that then changed: no cache entry covered it yet).
    assert len(set(pinned_message[1:])) == 1
    assert "- order 7-5" in pinned_message[-1]
    assert "Now: " not in pinned_message[-1]
    # The newest message carries only what changes per request; the system prompt no
    # customer line.
    newest = json.dumps(sent[-1])
    assert "Now: " in newest
    assert "- order 7-" not in newest
    system_sent = json.dumps(plan.body.get("system") if route == "messages" else sent_system(plan))
    assert "- order 7-" not in system_sent


def sent_system(plan: Any) -> Any:
    return plan.body["messages"][0]


def test_turn_keys_chain_a_conversation_and_tell_apart_ones_that_open_alike() -> None:
    def body(*texts: str) -> dict[str, Any]:
        roles = ["user", "assistant"] * len(texts)
        return {"messages": [{"role": r, "content": t} for r, t in zip(roles, texts, strict=False)]}

    first = conversation_turn(body("Hi"))
    second = conversation_turn(body("Hi", "Hello, how can I help?", "Where is my parcel?"))
    other = conversation_turn(body("Hi", "Hello, how can I help?", "Can I return shoes?"))
    assert first[0] is None  # a first turn has no previous one
    assert second[0] == first[1]  # the next turn finds this one by its previous message
    assert other[0] == first[1]
    # Two conversations that open with the same "Hi" are apart from their second turn on.
    assert second[1] != other[1]
    third = conversation_turn(
        body("Hi", "Hello, how can I help?", "Where is my parcel?", "On its way.", "Thanks")
    )
    assert third[0] == second[1]
    assert third[0] != other[1]
