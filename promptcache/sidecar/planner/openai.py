"""The OpenAI rewrite (Chat Completions and Responses) and OpenAI-compatible servers.

OpenAI, vLLM, SGLang and llama.cpp cache the longest exact prefix automatically; there
are no markers, so the only levers are a stable prefix and, for the OpenAI API only,
``prompt_cache_key`` (routing: requests with the same key and prefix land on the same
cache). So: static system text first and identical every time, volatile text moved to
the start of the newest user message, and a key of policy name + short static hash when
the client sent none. OpenAI-compatible servers may reject unknown fields: none is added.

GPT-5.6 and later (``explicit_breakpoints`` in the model table) cache only at
breakpoints, matched exactly; their implicit one sits at the newest message, so a stable
prefix followed by a changing question would read nothing. On those models the end of
the static system part gets ``prompt_cache_breakpoint: {"mode": "explicit"}`` (Chat:
the system message's last static part; Responses: the same in a system/developer input
item; ``instructions`` is a string and cannot carry one). ``prompt_cache_options`` is
never sent: the implicit mode stays, and an app's ``prompt_cache_retention`` (refused
beside it) stays valid. Writes there cost 1.25x, so the never-worse guard decides.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any, Literal

from promptcache.sidecar.planner.builder import Prefix, build_prefix, finish_plan, tools_list
from promptcache.sidecar.planner.common import Env, PlanError, floor_tokens, history_fp
from promptcache.sidecar.planner.system import Source
from promptcache.sidecar.planner.turns import newest_user, role_of
from promptcache.sidecar.planner.types import Breakpoint, Diagnostics, Expectation, Plan
from promptcache.tokens import estimate_json
from promptcache.wire import is_openai_compatible

SYSTEM_ROLES = ("system", "developer")
BREAKPOINT = {"mode": "explicit"}
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


@dataclass(frozen=True, slots=True)
class _Shape:
    """Where a Chat or Responses body keeps its system text and its conversation."""

    listing: list[Any]
    """``messages`` (Chat) or the ``input`` items (Responses; empty for a string)."""
    conv_start: int
    """Index in ``listing`` of the first message after the system message."""
    part_type: str
    string_input: str | None
    sys_at: str | None
    sys_content: Any

    @property
    def conversation(self) -> list[Any]:
        return self.listing[self.conv_start :]


def _locate(body: dict[str, Any], route: Literal["chat", "responses"]) -> _Shape:
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
    return _Shape(listing, conv_start, part_type, string_input, sys_at, sys_content)


def _has_breakpoint(items: list[Any]) -> bool:
    """Whether the app placed any ``prompt_cache_breakpoint`` itself (then we add none)."""
    for item in items:
        content = item.get("content") if isinstance(item, dict) else None
        if isinstance(content, list) and any(
            isinstance(p, dict) and "prompt_cache_breakpoint" in p for p in content
        ):
            return True
    return False


def _explicit_mode(body: dict[str, Any]) -> bool:
    """The app chose ``explicit`` mode: it places breakpoints itself (none: no caching)."""
    options = body.get("prompt_cache_options")
    return isinstance(options, dict) and options.get("mode") == "explicit"


def _static_breakpoint(
    message: dict[str, Any], pieces: list[Any], static_count: int, part_type: str
) -> dict[str, Any]:
    """The system message with its content as parts and a breakpoint after the static ones."""
    content = message.get("content")
    if isinstance(content, list) and len(content) == len(pieces):
        parts = [dict(p) for p in content]
    else:  # a string: the same text, cut where the pieces meet (parts are concatenated)
        last = len(pieces) - 1
        parts = [
            {"type": part_type, "text": p.text + ("\n\n" if i < last else "")}
            for i, p in enumerate(pieces)
        ]
    parts[static_count - 1] = {**parts[static_count - 1], "prompt_cache_breakpoint": BREAKPOINT}
    return {**message, "content": parts}


def system_sources(body: dict[str, Any], route: Literal["chat", "responses"]) -> list[Source]:
    """The system texts of a Chat or Responses body, as the planner reads them."""
    shape = _locate(body, route)
    return _sources(shape.sys_content, shape.sys_at or "system")[0]


def plan_openai(
    body: dict[str, Any], env: Env, now: float, route: Literal["chat", "responses"]
) -> tuple[Plan, list[tuple[str, str]]]:
    """Plan one Chat Completions or Responses body; also return the static snapshot."""
    policy = env.policy
    provider: Literal["openai", "openai-compatible"] = (
        "openai-compatible" if is_openai_compatible(env.provider) else "openai"
    )
    shape = _locate(body, route)
    listing, conv, part_type = shape.listing, shape.conversation, shape.part_type
    string_input, sys_at, sys_content = shape.string_input, shape.sys_at, shape.sys_content
    conv_start = shape.conv_start

    tools_in = tools_list(body.get("tools"))
    sources, frozen = _sources(sys_content, sys_at or "system")
    label = (
        "system" if sys_at is None else sys_at if sys_at == "instructions" else f"{sys_at}.content"
    )
    pre = build_prefix(
        env,
        tools_in=tools_in,
        sources=sources,
        label=label,
        frozen=frozen,
        conversation=conv,
        context_elsewhere=string_input is not None,
        pins=route == "chat",
    )
    notes, sp, ctx, k, tools = pre.notes, pre.system, pre.context, pre.newest, pre.tools
    pinned: dict[str, Any] | None = None
    if sp.pin is not None:
        # From here on the pinned message is planned as if the app had sent it so.
        at, pin = sp.pin
        pinned = _prepend(conv[at], pin, part_type)
        if pinned is not None:
            conv = [*conv[:at], pinned, *conv[at + 1 :]]
    static_hash = pre.static_hash
    cum = [pre.prompt_tokens]
    for m in conv:
        cum.append(cum[-1] + estimate_json(m))

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
    if pinned is not None and sp.pin is not None:
        out_list[conv_start + sp.pin[0]] = pinned
        list_changed = changed = True
    if ctx and k is not None:
        new_msg = _prepend(conv[k], ctx, part_type)
        if new_msg is not None:
            out_list[conv_start + k] = new_msg
            list_changed = changed = True
    elif ctx and string_input is not None and not string_input.startswith(ctx + "\n\n"):
        out["input"] = f"{ctx}\n\n{string_input}" if string_input else ctx
        changed = True
    breakpoints: list[Breakpoint] = []
    if (
        provider == "openai"
        and env.info.explicit_breakpoints
        and sp.static_count
        and pre.static_tokens >= env.min_tokens
        and sys_at != "instructions"
        and out_list
        and role_of(out_list[0]) in SYSTEM_ROLES
        and not frozen
        and not _has_breakpoint(listing)
        and not _explicit_mode(body)
    ):
        if env.allow("static", static_hash):
            out_list[0] = _static_breakpoint(out_list[0], sp.pieces, sp.static_count, part_type)
            list_changed = changed = True
            notes.append("static: prompt_cache_breakpoint at the end of the static system part")
            path = f"{'messages' if route == 'chat' else 'input'}[0].content[{sp.static_count - 1}]"
            # Reported like an Anthropic marker so that metrics and the never-worse guard
            # see it; the guard's 5m expiry is stricter than the provider's 30m minimum.
            breakpoints.append(Breakpoint("system", "5m", pre.static_tokens, path, "planner"))
        else:
            notes.append("static: breakpoint withdrawn (its writes were not read back)")
    if list_changed:
        out["messages" if route == "chat" else "input"] = out_list
    if pre.tools_changed:
        out["tools"] = tools
        changed = True
    if policy is not None and provider == "openai" and "prompt_cache_key" not in body:
        key = policy.prompt_cache_key or (
            f"{env.key}-{static_hash[:8]}" if static_hash is not None else env.key
        )
        out["prompt_cache_key"] = key[:KEY_MAX]
        changed = True
        notes.append("prompt_cache_key set")

    return finish_plan(
        body,
        out,
        changed,
        pre,
        partial(
            _expectation, provider, env.min_tokens, now, breakpoints, conv, cum, bool(ctx), k, pre
        ),
    )


def _expectation(
    provider: Literal["openai", "openai-compatible"],
    minimum: int,
    now: float,
    breakpoints: list[Breakpoint],
    conv: list[Any],
    cum: list[int],
    has_context: bool,
    k: int | None,
    pre: Prefix,
) -> Expectation:
    """What the outcome is judged against: the breakpoints sent, the tokens a warm cache
    serves and the miss diagnosis's fingerprints (``Plan.settle``, off the request path)."""
    step = GRANULARITY[provider]
    static_hash = pre.static_hash
    static_expected = floor_tokens(pre.static_tokens, minimum, step)
    expected = static_expected
    prev = newest_user(conv, before=k) if k is not None else None
    read_fp = write_fp = None
    if k is not None and k >= 1:
        write_fp = history_fp(static_hash, conv, k - 1, kept=pre.kept)
    if prev is not None:
        stable = cum[prev] if has_context else cum[prev + 1]
        expected = max(expected, floor_tokens(stable, minimum, step))
        if prev >= 1:
            read_fp = history_fp(static_hash, conv, prev - 1, kept=pre.kept)
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
    return breakpoints, expected, diag
