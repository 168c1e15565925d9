"""The OpenAI rewrite (Chat Completions and Responses) and OpenAI-compatible servers.

OpenAI, vLLM, SGLang and llama.cpp cache the longest exact prefix automatically; there
are no markers, so the only levers are a stable prefix and, for the OpenAI API only,
``prompt_cache_key`` (routing: requests with the same key and prefix land on the same
cache). So: static system text first and identical every time, volatile text moved to
the start of the newest user message, and a key of policy name + short static hash when
the client sent none. OpenAI-compatible servers may reject unknown fields: none is added.
"""

from __future__ import annotations

from typing import Any, Literal

from promptcache.sidecar.planner.common import (
    Env,
    PlanError,
    chain,
    context_items,
    floor_tokens,
    history_fp,
    newest_user,
    render_context,
    role_of,
    tools_info,
)
from promptcache.sidecar.planner.system import Piece, Source, plan_system, sha256_text
from promptcache.sidecar.planner.types import Diagnostics, Plan
from promptcache.tokens import estimate_json, estimate_text

SYSTEM_ROLES = ("system", "developer")
GRANULARITY = {"openai": 128, "openai-compatible": 16}
"""OpenAI caches in 128-token steps past the minimum; vLLM in 16-token blocks."""
KEY_MAX = 64


def _sources(content: Any, where: str) -> tuple[list[Source], bool]:
    """System texts and whether they must be left as sent (non-text parts)."""
    if content is None or content == "":
        return [], False
    if isinstance(content, str):
        return [Source(content)], False
    if not isinstance(content, list):
        raise PlanError(f"{where}: expected a string or a list of parts")
    texts = [p for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)]
    return [Source(p["text"]) for p in texts], len(texts) != len(content)


def _prepend(message: dict[str, Any], ctx: str, part_type: str) -> dict[str, Any] | None:
    """``message`` with ``ctx`` before its content; ``None`` when already there."""
    content = message.get("content")
    if content is None or content == "":
        return {**message, "content": ctx}
    if isinstance(content, str):
        if content == ctx or content.startswith(ctx + "\n\n"):
            return None
        return {**message, "content": f"{ctx}\n\n{content}"}
    if not isinstance(content, list):
        raise PlanError("content: expected a string or a list of parts")
    if content and isinstance(content[0], dict) and content[0].get("text") == ctx:
        return None
    return {**message, "content": [{"type": part_type, "text": ctx}, *content]}


def _tool_name(tool: Any) -> str:
    if not isinstance(tool, dict):
        return ""
    name = tool.get("name")
    if not isinstance(name, str):
        fn = tool.get("function")
        name = fn.get("name") if isinstance(fn, dict) else None
    return name if isinstance(name, str) else ""


def plan_openai(
    body: dict[str, Any], env: Env, now: float, route: Literal["chat", "responses"]
) -> tuple[Plan, list[tuple[str, str]]]:
    """Plan one Chat Completions or Responses body; also return the static snapshot."""
    policy = env.policy
    notes: list[str] = []
    provider: Literal["openai", "openai-compatible"] = (
        "openai-compatible" if env.openai_compatible else "openai"
    )
    string_input: str | None = None
    sys_at: str | None = None
    sys_content: Any = None
    conv_start = 0
    if route == "chat":
        listing = body.get("messages")
        if not isinstance(listing, list) or not all(isinstance(m, dict) for m in listing):
            raise PlanError("messages: expected a list of objects")
        part_type = "text"
        if listing and role_of(listing[0]) in SYSTEM_ROLES:
            sys_at, sys_content, conv_start = "messages[0]", listing[0].get("content"), 1
    else:
        part_type = "input_text"
        raw = body.get("input")
        if isinstance(raw, str):
            string_input, listing = raw, []
        elif raw is None or isinstance(raw, list):
            listing = raw or []
        else:
            raise PlanError("input: expected a string or a list of items")
        instructions = body.get("instructions")
        if isinstance(instructions, str) and instructions:
            sys_at, sys_content = "instructions", instructions
        elif listing and role_of(listing[0]) in SYSTEM_ROLES:
            sys_at, sys_content, conv_start = "input[0]", listing[0].get("content"), 1
    conv = listing[conv_start:]

    tools_in = body.get("tools")
    if tools_in is not None and not isinstance(tools_in, list):
        raise PlanError("tools: expected a list")
    tools: list[Any] = tools_in or []
    tools_changed = False
    if policy is not None and policy.canonical_tool_order and len(tools) > 1:
        ordered = sorted(tools, key=_tool_name)
        if any(a is not b for a, b in zip(ordered, tools, strict=True)):
            tools, tools_changed = ordered, True
            notes.append("tools sorted by name")

    sources, frozen = _sources(sys_content, sys_at or "system")
    label = (
        "system" if sys_at is None else sys_at if sys_at == "instructions" else f"{sys_at}.content"
    )
    sp = plan_system(sources, policy, env.detector, label=label, frozen=frozen)
    ctx = render_context(context_items(sp.relocated, env))
    k = newest_user(conv)
    if ctx and k is None and string_input is None:
        sp.pieces.append(Piece(ctx))
        sp.changed = True
        notes.append("no user message: context appended to the system prompt")

    tinfo = tools_info(tools)
    td, tools_json = tinfo.digest, tinfo.text
    tools_total = sum(tinfo.tokens)
    piece_tok = [estimate_text(p.text) for p in sp.pieces]
    static_tokens = tools_total + sum(piece_tok[: sp.static_count])
    cum = [tools_total + sum(piece_tok)]
    for m in conv:
        cum.append(cum[-1] + estimate_json(m))
    statics = sp.pieces[: sp.static_count]
    digests = [sha256_text(p.text) for p in statics]
    static_hash = chain(td, *digests) if (td or digests) else None
    kept = [p.text for p in sp.pieces[sp.static_count :]]
    snapshot = ([("tools", tools_json)] if tools else []) + [
        (p.static or f"system[{i}]", p.text) for i, p in enumerate(statics)
    ]

    out = dict(body)
    changed = False
    out_list = list(listing)
    list_changed = False
    if sp.changed:
        new_content: Any
        if isinstance(sys_content, list):
            new_content = [
                sys_content[p.source]
                if p.source is not None
                else {"type": part_type, "text": p.text}
                for p in sp.pieces
            ]
        else:
            # App text is stripped so that planning the result again finds it identical.
            new_content = "\n\n".join(p.text if p.static else p.text.strip() for p in sp.pieces)
        if new_content != sys_content:
            changed = True
            if sys_at == "instructions" or (sys_at is None and route == "responses"):
                out["instructions"] = new_content
            elif sys_at is not None:
                out_list[0] = {**listing[0], "content": new_content}
                list_changed = True
            else:
                out_list.insert(0, {"role": "system", "content": new_content})
                conv_start, list_changed = conv_start + 1, True
    if ctx and k is not None:
        new_msg = _prepend(conv[k], ctx, part_type)
        if new_msg is not None:
            out_list[conv_start + k] = new_msg
            list_changed = changed = True
    elif ctx and string_input is not None and not string_input.startswith(ctx + "\n\n"):
        out["input"] = f"{ctx}\n\n{string_input}" if string_input else ctx
        changed = True
    if list_changed:
        out["messages" if route == "chat" else "input"] = out_list
    if tools_changed:
        out["tools"] = tools
        changed = True
    if policy is not None and provider == "openai" and "prompt_cache_key" not in body:
        key = policy.prompt_cache_key or (
            f"{env.key}-{static_hash[:8]}" if static_hash is not None else env.key
        )
        out["prompt_cache_key"] = key[:KEY_MAX]
        changed = True
        notes.append("prompt_cache_key set")

    minimum, step = env.min_tokens, GRANULARITY[provider]
    static_expected = floor_tokens(static_tokens, minimum, step)
    expected = static_expected
    prev = newest_user(conv, before=k) if k is not None else None
    read_fp = write_fp = None
    if k is not None and k >= 1:
        write_fp = history_fp(static_hash, conv, k - 1, kept=kept)
    if prev is not None:
        stable = cum[prev] if ctx else cum[prev + 1]
        expected = max(expected, floor_tokens(stable, minimum, step))
        if prev >= 1:
            read_fp = history_fp(static_hash, conv, prev - 1, kept=kept)
    diag = Diagnostics(
        provider=provider,
        planned_at=now,
        min_cacheable_tokens=minimum,
        static_fp=static_hash,
        static_ttl_seconds=300.0,
        static_expected_tokens=static_expected,
        history_read_fp=read_fp,
        history_write_fp=write_fp,
    )
    model = body.get("model")
    plan = Plan(
        body=out if changed else body,
        changed=changed,
        relocations=sp.relocations,
        volatile_found=sp.volatile_found,
        static_hash=static_hash,
        static_tokens=static_tokens,
        expected_cached_tokens=expected,
        model=model if isinstance(model, str) else None,
        notes=[*sp.notes, *notes],
        context_text=ctx or None,
        diagnostics=diag,
    )
    return plan, snapshot
