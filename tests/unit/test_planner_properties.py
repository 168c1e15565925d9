"""Property tests: the planner's invariants over generated requests and policies.

For any Anthropic or OpenAI request and any policy: the output passes the provider's
schema (the official SDK's typed params, validated with pydantic) and the simulator's
API validation; at most 4 cache markers, every 1h marker before every 5m one; every
original message and content block still there, in order; client markers untouched;
every volatile value present exactly as often as before (relocated, never duplicated or
lost) and, when relocated, behind every marker the planner placed; the input is never
mutated; and planning a planned request changes nothing.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from anthropic.types import message_create_params
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from openai.types.chat import completion_create_params
from pydantic import TypeAdapter

from promptcache.policy import PolicySpec, parse_policy
from promptcache.sidecar.planner import ContextBlock, Plan, Planner, PlanRequest
from promptcache.simulator.anthropic_cache import VERSION_2026
from promptcache.simulator.anthropic_cache import parse_request as anthropic_validate
from promptcache.simulator.config import CacheConfig
from promptcache.simulator.errors import ApiError
from promptcache.simulator.openai_cache import parse_request as openai_validate

STATIC = "Static instructions for the support agent, never to change. " * 90  # ~1,350 tok
INJECTED = "Injected guardrails block. " * 20
SETTINGS = settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.filter_too_much]
)
ANTHROPIC_PARAMS: TypeAdapter[Any] = TypeAdapter(
    message_create_params.MessageCreateParamsNonStreaming
)
CHAT_PARAMS: TypeAdapter[Any] = TypeAdapter(
    completion_create_params.CompletionCreateParamsNonStreaming
)


def drain(value: Any) -> Any:
    """Consume pydantic's lazy validators of the SDKs' ``Iterable`` fields (they raise then)."""
    if isinstance(value, dict):
        return {k: drain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [drain(v) for v in value]
    if type(value).__name__ == "ValidatorIterator":
        return [drain(v) for v in value]
    return value


# --- generators ----------------------------------------------------------------------

words = st.sampled_from(["refund", "order", "help", "agent", "policy", "the", "a", "ship"])
short_text = st.lists(words, min_size=1, max_size=12).map(" ".join)
long_text = st.builds(lambda w, n: (w + " ") * n, words, st.integers(50, 900))
any_text = st.one_of(short_text, short_text, long_text)
volatile_value = st.one_of(
    st.uuids().map(str),
    st.datetimes(
        min_value=__import__("datetime").datetime(2000, 1, 1),
        max_value=__import__("datetime").datetime(2099, 1, 1),
    ).map(lambda d: d.replace(microsecond=0).isoformat() + "Z"),
)
ttls = st.sampled_from(["5m", "1h"])


@st.composite
def marker(draw: st.DrawFn, chance: float = 0.1) -> dict[str, Any] | None:
    if draw(st.floats(0, 1)) >= chance:
        return None
    ttl = draw(ttls)
    return {"type": "ephemeral", "ttl": ttl} if ttl == "1h" else {"type": "ephemeral"}


def with_marker(block: dict[str, Any], cc: dict[str, Any] | None) -> dict[str, Any]:
    return {**block, "cache_control": cc} if cc is not None else block


@st.composite
def system_text(draw: st.DrawFn) -> tuple[str, list[str]]:
    """A system prompt made of optional volatile lines, the static text and app text."""
    parts: list[str] = []
    values: list[str] = []
    for _ in range(draw(st.integers(0, 2))):
        v = draw(volatile_value)
        values.append(v)
        parts.append(f"{draw(st.sampled_from(['Now', 'Request ID', 'Trace']))}: {v}")
    if draw(st.booleans()):
        parts.append(STATIC)
    if draw(st.booleans()):
        parts.append(draw(any_text))
    order = draw(st.permutations(parts))
    return "\n\n".join(order), values


@st.composite
def anthropic_body(draw: st.DrawFn) -> tuple[dict[str, Any], list[str]]:
    values: list[str] = []
    body: dict[str, Any] = {"model": "claude-sonnet-4-5", "max_tokens": 64}
    kind = draw(st.sampled_from(["none", "string", "blocks"]))
    if kind != "none":
        text, values = draw(system_text())
        assume(text.strip())
        if kind == "string":
            body["system"] = text
        else:
            pieces = [p for p in text.split("\n\n") if p.strip()]
            body["system"] = [
                with_marker({"type": "text", "text": p}, draw(marker())) for p in pieces
            ]
    names = draw(
        st.lists(st.sampled_from(["zeta", "alpha", "mid", "beta"]), unique=True, max_size=3)
    )
    if names:
        body["tools"] = [
            with_marker(
                {"name": n, "description": draw(any_text), "input_schema": {"type": "object"}},
                draw(marker()),
            )
            for n in names
        ]
    messages: list[dict[str, Any]] = []
    for i in range(draw(st.integers(1, 7))):
        role = "user" if i % 2 == 0 else "assistant"
        if draw(st.booleans()):
            messages.append({"role": role, "content": draw(any_text)})
            continue
        blocks: list[dict[str, Any]] = []
        if role == "assistant" and draw(st.booleans()):
            blocks.append({"type": "thinking", "thinking": "hmm", "signature": "sig"})
        if role == "user" and i > 0 and draw(st.booleans()):
            # A tool result's content may be blocks, each able to carry its own marker.
            inner: Any = draw(short_text)
            if draw(st.booleans()):
                inner = [with_marker({"type": "text", "text": inner}, draw(marker()))]
            blocks.append(
                with_marker(
                    {"type": "tool_result", "tool_use_id": f"t{i}", "content": inner},
                    draw(marker()),
                )
            )
            if draw(st.booleans()):  # a turn of tool results only (an agent's tool loop)
                messages.append({"role": role, "content": blocks})
                continue
        for _ in range(draw(st.integers(1, 2))):
            blocks.append(with_marker({"type": "text", "text": draw(any_text)}, draw(marker())))
        messages.append({"role": role, "content": blocks})
    body["messages"] = messages
    if draw(st.floats(0, 1)) < 0.1:
        body["cache_control"] = {"type": "ephemeral"}
    return body, values


@st.composite
def policies(draw: st.DrawFn, provider: str = "anthropic") -> PolicySpec | None:
    if draw(st.floats(0, 1)) < 0.25:
        return None
    blocks: list[dict[str, Any]] = []
    if draw(st.booleans()):
        match = {"role": "system", "exact": STATIC}
        blocks.append({"name": "core", "mode": "match", "match": match, "ttl": draw(ttls)})
    if draw(st.floats(0, 1)) < 0.3:
        blocks.append({"name": "guard", "content": INJECTED, "ttl": draw(ttls)})
    spec = {
        "provider": provider,
        "mode": draw(st.sampled_from(["enforce", "enforce", "observe"])),
        "staticBlocks": draw(st.permutations(blocks)),
        "breakpoints": {k: draw(st.booleans()) for k in ("tools", "system", "history")},
        "volatile": {
            "action": draw(st.sampled_from(["report", "relocate"])),
            "unmatchedSystem": draw(st.sampled_from(["keep", "relocate"])),
        },
        "canonicalToolOrder": draw(st.booleans()),
    }
    return parse_policy(spec)


contexts = st.lists(
    st.builds(ContextBlock, st.sampled_from(["profile", "history"]), short_text), max_size=2
).map(tuple)


# --- checks ----------------------------------------------------------------------------


def run(route: Any, body: dict[str, Any], spec: PolicySpec | None, ctx: Any = ()) -> Plan:
    before = copy.deepcopy(body)
    plan = Planner().plan(
        PlanRequest(route=route, body=body, policy_name="prop", policy=spec, context=ctx)
    )
    assert body == before, "input mutated"
    if spec is not None and spec.mode == "observe":
        assert plan.body is body
        assert not plan.changed
    return plan


def blocks_of(content: Any) -> list[Any]:
    return [{"type": "text", "text": content}] if isinstance(content, str) else list(content)


def without_cc(block: Any) -> Any:
    return (
        {k: v for k, v in block.items() if k != "cache_control"}
        if isinstance(block, dict)
        else block
    )


def marker_positions(body: dict[str, Any]) -> list[tuple[tuple[int, int, int], str]]:
    found = []
    for i, t in enumerate(body.get("tools") or []):
        if "cache_control" in t:
            found.append(((0, i, 0), t["cache_control"].get("ttl", "5m")))
    if isinstance(body.get("system"), list):
        for i, b in enumerate(body["system"]):
            if "cache_control" in b:
                found.append(((1, i, 0), b["cache_control"].get("ttl", "5m")))
    for i, m in enumerate(body["messages"]):
        for j, b in enumerate(blocks_of(m["content"])):
            if isinstance(b, dict) and "cache_control" in b:
                found.append(((2, i, j), b["cache_control"].get("ttl", "5m")))
            inner = b.get("content") if isinstance(b, dict) else None
            for part in inner if isinstance(inner, list) else []:  # inside a tool result
                if isinstance(part, dict) and "cache_control" in part:
                    found.append(((2, i, j), part["cache_control"].get("ttl", "5m")))
    return found


def results_only(message: dict[str, Any]) -> bool:
    content = message["content"]
    return isinstance(content, list) and all(b.get("type") == "tool_result" for b in content)


def without_nested_ctx(block: Any, original: Any, ctx_text: str | None) -> Any:
    """``block`` without the context the planner put inside it (a tool result's content)."""
    if ctx_text is None or not isinstance(block, dict) or block.get("type") != "tool_result":
        return block
    inner = block.get("content")
    if not (isinstance(inner, list) and inner and inner[-1].get("text") == ctx_text):
        return block
    rest = inner[:-1]
    was = original.get("content") if isinstance(original, dict) else None
    if isinstance(was, str) and rest == [{"type": "text", "text": was}]:
        return {**block, "content": was}
    return {**block, "content": rest or was}


def count(haystack: Any, needle: str) -> int:
    return json.dumps(haystack, ensure_ascii=False).count(json.dumps(needle)[1:-1])


@SETTINGS
@given(anthropic_body(), policies(), contexts)
def test_anthropic_invariants(
    generated: tuple[dict[str, Any], list[str]], spec: PolicySpec | None, ctx: Any
) -> None:
    body, values = generated
    try:
        anthropic_validate(body)
    except ApiError:
        assume(False)  # the client's own markers already break a rule
    plan = run("messages", body, spec, ctx)
    out = plan.body
    anthropic_validate(out, version=VERSION_2026)  # the API version the current SDKs send
    drain(ANTHROPIC_PARAMS.validate_python(out))

    found = marker_positions(out)
    assert len(found) + ("cache_control" in out) <= 4
    ttl_order = [ttl for _, ttl in sorted(found)]
    assert ttl_order == sorted(ttl_order, key=lambda t: t != "1h")
    assert out.get("cache_control") == body.get("cache_control")

    # Client markers untouched, tools in order unless sorted.
    for i, t in enumerate(body.get("tools") or []):
        if "cache_control" in t:
            assert out["tools"][i] == t
    if isinstance(body.get("system"), list) and any("cache_control" in b for b in body["system"]):
        for i, b in enumerate(body["system"]):
            assert without_cc(out["system"][i]) == b or out["system"][i] == b
    # Every message and block, in order; the only new block is our context block.
    assert [m["role"] for m in out["messages"]] == [m["role"] for m in body["messages"]]
    ctx_text = plan.context_text if out is not body else None
    for m_in, m_out in zip(body["messages"], out["messages"], strict=True):
        if results_only(m_in):  # a tool loop's turn stays one: no new user turn
            assert results_only(m_out)
        got = [
            without_nested_ctx(b, a, ctx_text)
            for b, a in zip(
                (
                    b
                    for b in blocks_of(m_out["content"])
                    if ctx_text is None or not (isinstance(b, dict) and b.get("text") == ctx_text)
                ),
                [*blocks_of(m_in["content"]), *([None] * 4)],
                strict=False,
            )
        ]
        want = blocks_of(m_in["content"])
        assert len(got) == len(want)
        for a, b in zip(want, got, strict=True):
            assert a == b if "cache_control" in a else without_cc(b) == a

    # Volatile values neither lost nor duplicated; relocated ones sit behind our markers.
    for v in values:
        assert count(out, v) == count(body, v)
    if ctx_text is not None:
        assert count(out, ctx_text) == 1
        ours = [bp.path for bp in plan.breakpoints if bp.placed_by == "planner"]
        where = [
            (2, i, j)
            for i, m in enumerate(out["messages"])
            for j, b in enumerate(blocks_of(m["content"]))
            if isinstance(b, dict)
            and (
                b.get("text") == ctx_text
                or any(
                    isinstance(part, dict) and part.get("text") == ctx_text
                    for part in (b["content"] if isinstance(b.get("content"), list) else [])
                )
            )
        ] or [(1, len(out["system"]) - 1, 0)]
        for pos, _ in found:
            path = (
                f"tools[{pos[1]}]"
                if pos[0] == 0
                else f"system[{pos[1]}]"
                if pos[0] == 1
                else f"messages[{pos[1]}].content[{pos[2]}]"
            )
            if path in ours:
                assert pos < where[0]
    assert count(out, STATIC.strip()) == count(body, STATIC.strip())

    # Planning the planned request (without new context) changes nothing.
    if spec is None or spec.mode == "enforce":
        again = run("messages", out, spec)
        assert again.body == out
        assert not again.changed


@st.composite
def chat_body(draw: st.DrawFn) -> tuple[dict[str, Any], list[str]]:
    body: dict[str, Any] = {"model": "gpt-4o"}
    messages: list[dict[str, Any]] = []
    values: list[str] = []
    if draw(st.booleans()):
        text, values = draw(system_text())
        assume(text.strip())
        role = draw(st.sampled_from(["system", "developer"]))
        content: Any = text if draw(st.booleans()) else [{"type": "text", "text": text}]
        messages.append({"role": role, "content": content})
    for i in range(draw(st.integers(1, 6))):
        role = "user" if i % 2 == 0 else "assistant"
        text = draw(any_text)
        parts = draw(st.booleans()) and role == "user"
        messages.append(
            {"role": role, "content": [{"type": "text", "text": text}] if parts else text}
        )
    body["messages"] = messages
    if draw(st.booleans()):
        body["tools"] = [
            {"type": "function", "function": {"name": n, "parameters": {"type": "object"}}}
            for n in draw(st.lists(st.sampled_from(["b", "a", "c"]), unique=True, min_size=1))
        ]
    if draw(st.floats(0, 1)) < 0.2:
        body["prompt_cache_key"] = "client-key"
    return body, values


@SETTINGS
@given(chat_body(), st.sampled_from(["openai", "openai-compatible"]).flatmap(policies), contexts)
def test_openai_chat_invariants(
    generated: tuple[dict[str, Any], list[str]], spec: PolicySpec | None, ctx: Any
) -> None:
    body, values = generated
    plan = run("chat", body, spec, ctx)
    out = plan.body
    openai_validate(out, api="chat", config=CacheConfig())
    drain(CHAT_PARAMS.validate_python(out))
    assert plan.breakpoints == []
    if spec is None and not ctx:
        assert out is body
    if body.get("prompt_cache_key") is not None:
        assert out["prompt_cache_key"] == body["prompt_cache_key"]
    elif spec is not None and spec.mode == "enforce":
        assert ("prompt_cache_key" in out) == (spec.provider == "openai")

    # Conversation messages (all but a leading system message) keep role, order and text.
    def conv(msgs: list[Any]) -> list[Any]:
        return msgs[1:] if msgs and msgs[0]["role"] in ("system", "developer") else msgs

    assert [m["role"] for m in conv(out["messages"])] == [m["role"] for m in conv(body["messages"])]
    for a, b in zip(conv(body["messages"]), conv(out["messages"]), strict=True):
        if a == b:
            continue
        assert plan.context_text is not None
        if isinstance(a["content"], str):
            assert b["content"] == f"{plan.context_text}\n\n{a['content']}"
        else:
            assert b["content"] == [{"type": "text", "text": plan.context_text}, *a["content"]]
    for v in values:
        assert count(out, v) == count(body, v)
    assert count(out, STATIC.strip()) == count(body, STATIC.strip())

    if spec is None or spec.mode == "enforce":
        again = run("chat", out, spec)
        assert again.body == out
        assert not again.changed


@pytest.mark.parametrize("route", ["messages", "chat"])
def test_planner_output_is_not_the_input_object_when_changed(route: Any) -> None:
    # A sanity check on the harness itself: the generators produce requests the planner
    # does change, so the invariants above are exercised on real rewrites.
    body: dict[str, Any] = {
        "model": "m",
        "max_tokens": 8,
        "messages": [{"role": "user", "content": "hi"}],
    }
    if route == "messages":
        body["system"] = f"Now: 2025-01-01T00:00:00Z\n\n{STATIC}"
    else:
        body["messages"].insert(
            0, {"role": "system", "content": f"Now: 2025-01-01T00:00:00Z\n\n{STATIC}"}
        )
    spec = parse_policy(
        {
            "provider": "anthropic" if route == "messages" else "openai",
            "volatile": {"action": "relocate"},
        }
    )
    plan = run(route, body, spec)
    assert plan.changed
    assert plan.body is not body
