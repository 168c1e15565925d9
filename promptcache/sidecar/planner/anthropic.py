"""The Anthropic Messages rewrite: static system first, breakpoints, context after them.

Order of the cached prefix is tools -> system -> messages. We make the system start with
the policy's static blocks (byte-identical every time), move what changes per request
into one delimited text block in the newest user message, and put markers at the end of
the static system part, at the end of the stable history (the message before the newest
user message) and, if asked, at the end of the tools. On the next turn the app re-sends
the same history without our context block; Anthropic's 20-block lookback from the new
history marker finds the entry the previous turn wrote, so the history reads from cache.

Nothing in the input body is mutated: changed containers are copied, one level at a time.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any, Literal

from promptcache.policy.schema import PolicySpec
from promptcache.sidecar.planner.builder import (
    LEARNED,
    Prefix,
    build_prefix,
    finish_plan,
    tools_list,
)
from promptcache.sidecar.planner.common import LOOKBACK_BLOCKS, Env, PlanError, history_fp
from promptcache.sidecar.planner.markers import AUTOMATIC_POS, Marker, marker_json, place, ttl_of
from promptcache.sidecar.planner.system import Piece, Source
from promptcache.sidecar.planner.ttl import TTL_SECONDS
from promptcache.sidecar.planner.turns import newest_user, role_of
from promptcache.sidecar.planner.types import Diagnostics, Expectation, Plan, Ttl
from promptcache.tokens import estimate_json, estimate_text

CACHEABLE = frozenset(
    {"text", "image", "document", "tool_use", "tool_result", "search_result",
     "server_tool_use", "web_search_tool_result"}
)  # fmt: skip
"""Block types that may carry ``cache_control`` (thinking blocks and empty text may not)."""


def _cacheable(block: Any) -> bool:
    if not isinstance(block, dict) or block.get("type") not in CACHEABLE:
        return False
    return block.get("type") != "text" or bool(block.get("text"))


def system_sources(system: Any) -> list[Source]:
    if system is None or system == "":
        return []
    if isinstance(system, str):
        return [Source(system)]
    if not isinstance(system, list):
        raise PlanError("system: expected a string or a list of text blocks")
    out: list[Source] = []
    for i, b in enumerate(system):
        if not isinstance(b, dict) or b.get("type") != "text" or not isinstance(b.get("text"), str):
            raise PlanError(f"system[{i}]: expected a text block")
        out.append(Source(b["text"], "cache_control" in b))
    return out


def _check_messages(messages: Any) -> list[Any]:
    if not isinstance(messages, list):
        raise PlanError("messages: expected a list")
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            raise PlanError(f"messages[{i}]: expected an object")
        if not isinstance(m.get("content"), _CONTENT_TYPES):
            raise PlanError(f"messages[{i}].content: expected a string or a list of blocks")
    return messages


_CONTENT_TYPES = (str, list)


def _nblocks(message: dict[str, Any]) -> int:
    content = message["content"]
    return 1 if isinstance(content, str) else len(content)


def _last_cacheable(message: dict[str, Any]) -> int | None:
    content = message["content"]
    if isinstance(content, str):
        return 0 if content else None
    for j in range(len(content) - 1, -1, -1):
        if _cacheable(content[j]):
            return j
    return None


def _with_context(message: dict[str, Any], ctx: str) -> dict[str, Any] | None:
    """``message`` with the context block before the user's own content (after any
    leading tool results, which must come first, and after any client-marked block);
    ``None`` when it is already there."""
    block = {"type": "text", "text": ctx}
    content = message["content"]
    if isinstance(content, str):
        return {
            **message,
            "content": [block, {"type": "text", "text": content}] if content else [block],
        }
    if any(
        isinstance(b, dict) and b.get("type") == "text" and b.get("text") == ctx for b in content
    ):
        return None
    at = 0
    while (
        at < len(content)
        and isinstance(content[at], dict)
        and content[at].get("type") == "tool_result"
    ):
        at += 1
    for j, b in enumerate(content):
        if isinstance(b, dict) and "cache_control" in b:
            at = max(at, j + 1)
    return {**message, "content": [*content[:at], block, *content[at:]]}


def _with_pin(message: dict[str, Any], pin: str) -> dict[str, Any] | None:
    """``message`` with the pinned block first; ``None`` when it is already there."""
    block = {"type": "text", "text": pin}
    content = message["content"]
    if isinstance(content, str):
        return {**message, "content": [block, {"type": "text", "text": content}]}
    if content and isinstance(content[0], dict) and content[0].get("text") == pin:
        return None
    return {**message, "content": [block, *content]}


def _tool_results_only(message: Any) -> bool:
    """A user turn that only returns tool results: the middle of an agent's tool loop."""
    content = message.get("content") if isinstance(message, dict) else None
    return (
        isinstance(content, list)
        and bool(content)
        and all(isinstance(b, dict) and b.get("type") == "tool_result" for b in content)
    )


def _in_tool_result(message: dict[str, Any], ctx: str) -> dict[str, Any] | None:
    """``message`` (tool results only) with ``ctx`` as a text block inside its last tool
    result; ``None`` when it is already there.

    A text block beside the tool results would make Anthropic treat the turn as a new user
    turn (thinking from earlier in the loop is dropped) and change the cached messages
    tier; inside the result the turn stays a tool-loop continuation.
    """
    content = list(message["content"])
    last = content[-1]
    inner = last.get("content")
    block = {"type": "text", "text": ctx}
    if inner is None or inner == "":
        parts: list[Any] = [block]
    elif isinstance(inner, str):
        parts = [{"type": "text", "text": inner}, block]
    elif isinstance(inner, list):
        if inner and isinstance(inner[-1], dict) and inner[-1].get("text") == ctx:
            return None
        parts = [*inner, block]
    else:
        return None
    content[-1] = {**last, "content": parts}
    return {**message, "content": content}


def _place_context(
    messages: list[Any], k: int, ctx: str, env: Env, notes: list[str]
) -> tuple[int, dict[str, Any]] | None:
    """Where the context goes when the newest user turn holds only tool results.

    Models that accept mid-conversation system messages get it as one, right after that
    turn (the placement Anthropic documents for instructions after the cached prefix);
    others get it inside the last tool result. Returns ``(index, message)`` to insert at
    ``index`` when it is a new message, or to replace ``messages[k]``; ``None`` when the
    request already has it.
    """
    following = messages[k + 1] if k + 1 < len(messages) else None
    system_msg = {"role": "system", "content": [{"type": "text", "text": ctx}]}
    if following == system_msg:
        return None
    # A system message must follow a user turn directly: not after the app's own one.
    if env.info.mid_conversation_system and role_of(following) != "system":
        notes.append("context: a system message after the tool results (tool loop kept)")
        return k + 1, system_msg
    replaced = _in_tool_result(messages[k], ctx)
    if replaced is None:
        return None
    notes.append("context: inside the last tool result (tool loop kept)")
    return k, replaced


def _with_marker(message: dict[str, Any], j: int, ttl: Ttl) -> dict[str, Any]:
    content = message["content"]
    blocks = [{"type": "text", "text": content}] if isinstance(content, str) else list(content)
    blocks[j] = {**blocks[j], "cache_control": marker_json(ttl)}
    return {**message, "content": blocks}


@dataclass(slots=True)
class _Layout:
    """Token counts along the prefix: tools -> system pieces -> messages."""

    tools: list[Any]
    tool_tok: list[int]
    pieces: list[Piece]
    piece_tok: list[int]
    cum_msg: list[int]
    """``cum_msg[i]``: tokens before ``messages[i]`` (tools and system included)."""

    @property
    def tools_total(self) -> int:
        return sum(self.tool_tok)

    def through_piece(self, i: int) -> int:
        return self.tools_total + sum(self.piece_tok[: i + 1])


def _client_markers(body: dict[str, Any], lay: _Layout, messages: list[Any]) -> list[Marker]:
    """Markers the client placed (a top-level automatic one included)."""
    found: list[Marker] = []
    for i, t in enumerate(lay.tools):
        if isinstance(t, dict) and "cache_control" in t:
            prefix = sum(lay.tool_tok[: i + 1])
            ttl = ttl_of(t["cache_control"])
            found.append(Marker((0, i, 0), ttl, "tools", f"tools[{i}]", prefix, "client"))
    system = body.get("system")
    if isinstance(system, list):
        for i, p in enumerate(lay.pieces):
            if p.source is not None and "cache_control" in system[p.source]:
                ttl = ttl_of(system[p.source]["cache_control"])
                prefix = lay.through_piece(i)
                found.append(Marker((1, i, 0), ttl, "system", f"system[{i}]", prefix, "client"))
    for i, m in enumerate(messages):
        if not isinstance(m["content"], list):
            continue
        for j, b in enumerate(m["content"]):
            if not isinstance(b, dict):
                continue
            prefix = lay.cum_msg[i] + estimate_json(m["content"][: j + 1])
            if "cache_control" in b:
                path = f"messages[{i}].content[{j}]"
                ttl = ttl_of(b["cache_control"])
                found.append(Marker((2, i, j), ttl, "client", path, prefix, "client"))
            inner = b.get("content") if b.get("type") == "tool_result" else None
            if isinstance(inner, list):
                # Markers inside a tool result take slots too (the provider counts every
                # cache_control in the body): four app markers must not become five.
                for n, part in enumerate(inner):
                    if isinstance(part, dict) and "cache_control" in part:
                        path = f"messages[{i}].content[{j}].content[{n}]"
                        ttl = ttl_of(part["cache_control"])
                        found.append(Marker((2, i, j), ttl, "client", path, prefix, "client"))
    if isinstance(body.get("cache_control"), dict):
        ttl = ttl_of(body["cache_control"])
        found.append(
            Marker(AUTOMATIC_POS, ttl, "automatic", "cache_control", lay.cum_msg[-1], "client")
        )
    return found


def _candidates(
    policy: PolicySpec | None,
    lay: _Layout,
    static_count: int,
    piece_ttl: list[Ttl],
    messages: list[Any],
    k: int | None,
    notes: list[str],
) -> list[Marker]:
    """Where we would like markers, most valuable first: static system end, history,
    tools, and the end of the 1h static blocks when later ones are 5m."""
    bp = policy.breakpoints if policy is not None else None
    out: list[Marker] = []
    if static_count and (bp is None or bp.system):
        i = static_count - 1
        out.append(
            Marker(
                (1, i, 0), piece_ttl[i], "system", f"system[{i}]", lay.through_piece(i), "planner"
            )
        )
    if k is not None and k >= 1 and (bp is None or bp.history):
        j = _last_cacheable(messages[k - 1])
        if j is None:
            notes.append(f"history: messages[{k - 1}] has no block that can carry a marker")
        else:
            content = messages[k - 1]["content"]
            after = 0 if isinstance(content, str) else estimate_json(content[j + 1 :])
            path = f"messages[{k - 1}].content[{j}]"
            prefix = lay.cum_msg[k] - after
            out.append(Marker((2, k - 1, j), "5m", "history", path, prefix, "planner"))
    if lay.tools and bp is not None and bp.tools:
        tools_ttl: Ttl = "1h" if "1h" in piece_ttl else "5m"
        n = len(lay.tools) - 1
        out.append(Marker((0, n, 0), tools_ttl, "tools", f"tools[{n}]", lay.tools_total, "planner"))
    if piece_ttl and piece_ttl[-1] == "5m" and "1h" in piece_ttl:
        i = max(x for x, t in enumerate(piece_ttl) if t == "1h")
        out.append(
            Marker((1, i, 0), "1h", "system", f"system[{i}]", lay.through_piece(i), "planner")
        )
    return out


def _history_read(
    markers: list[Marker], lay: _Layout, out_msgs: list[Any], prev: int, minimum: int
) -> bool:
    """Whether the entry the previous turn wrote at the end of ``messages[prev - 1]`` is
    reachable from a marker of this request (at it, or within the 20-block lookback)."""
    if prev < 1 or lay.cum_msg[prev] < minimum:
        return False
    reach = [m for m in markers if m.pos[0] == 3 or (m.pos[0] == 2 and m.pos[1] >= prev - 1)]
    if not reach:
        return False
    first = reach[0]
    mi, mb = first.pos[1], first.pos[2]
    if first.pos[0] == 3:
        mi = len(out_msgs) - 1
        mb = _nblocks(out_msgs[mi]) - 1
    if mi == prev - 1:
        return mb == _nblocks(out_msgs[mi]) - 1
    steps = mb + 1 + sum(_nblocks(out_msgs[x]) for x in range(prev, mi))
    return steps <= LOOKBACK_BLOCKS


def _guarded(
    placed: list[Marker], env: Env, static_hash: str | None, notes: list[str]
) -> list[Marker]:
    """``placed`` without the markers the never-worse guard has withdrawn (one question
    per track: the static prefix's markers, tools and system, are one track)."""
    allowed: dict[str, bool] = {}
    out: list[Marker] = []
    for m in placed:
        track = "history" if m.pos[0] >= 2 else "static"
        if track not in allowed:
            allowed[track] = env.allow(track, static_hash if track == "static" else None)
            if not allowed[track]:
                notes.append(f"{track}: breakpoint withdrawn (its writes were not read back)")
        if allowed[track]:
            out.append(m)
    return out


def plan_messages(body: dict[str, Any], env: Env, now: float) -> tuple[Plan, list[tuple[str, str]]]:
    """Plan one ``/v1/messages`` body; also return the static snapshot (label, text)."""
    policy = env.policy
    messages = _check_messages(body.get("messages"))
    tools_in = tools_list(body.get("tools"))
    system = body.get("system")
    pre = build_prefix(
        env,
        tools_in=tools_in,
        sources=system_sources(system),
        label="system",
        frozen=False,
        conversation=messages,
        pins=True,
    )
    notes, sp, ctx, k, tools = pre.notes, pre.system, pre.context, pre.newest, pre.tools
    pinned = False
    if sp.pin is not None:
        # From here on the pinned message is planned as if the app had sent it so.
        at, pin = sp.pin
        with_pin = _with_pin(messages[at], pin)
        if with_pin is not None:
            messages = [*messages[:at], with_pin, *messages[at + 1 :]]
            pinned = True
    piece_tok = pre.piece_tokens
    cum_msg = [pre.prompt_tokens]
    total = cum_msg[0]
    for m in messages:
        content = m["content"]
        total += estimate_text(content) if type(content) is str else estimate_json(content)
        cum_msg.append(total)
    lay = _Layout(tools, list(pre.tools_info.tokens), sp.pieces, piece_tok, cum_msg)

    static_hash, digests, td = pre.static_hash, pre.digests, pre.tools_info.digest
    piece_ttl: list[Ttl] = []
    for i, p in enumerate(pre.statics):
        want: Ttl | Literal["auto"] = "5m"
        if policy is not None and p.static is not None and p.static != LEARNED:
            want = policy.block(p.static).ttl
        piece_ttl.append(
            env.auto_ttl(env.memo.chain(td, *digests[: i + 1])) if want == "auto" else want
        )

    existing = _client_markers(body, lay, messages)
    if policy is None and any(m.pos != AUTOMATIC_POS for m in existing):
        notes.append("client placed cache markers: none added")
        candidates: list[Marker] = []
    else:
        candidates = _candidates(policy, lay, sp.static_count, piece_ttl, messages, k, notes)
    placed = _guarded(
        place(existing, candidates, min_tokens=env.min_tokens, notes=notes), env, static_hash, notes
    )

    out = dict(body)
    changed = False
    sys_marks = {m.pos[1]: m.ttl for m in placed if m.pos[0] == 1}
    if (sp.changed or sys_marks) and isinstance(system, str) and not sys_marks:
        # A string needs no conversion when no marker goes on it; app text is stripped
        # so that planning the result again finds it identical.
        joined = "\n\n".join(p.text if p.static else p.text.strip() for p in sp.pieces)
        if joined != system:
            if joined:
                out["system"] = joined
            else:
                out.pop("system", None)
            changed = True
    elif sp.changed or sys_marks:
        blocks: list[dict[str, Any]] = []
        for i, p in enumerate(sp.pieces):
            blk = (
                system[p.source]
                if p.source is not None and isinstance(system, list)
                else {"type": "text", "text": p.text}
            )
            if i in sys_marks:
                blk = {**blk, "cache_control": marker_json(sys_marks[i])}
            blocks.append(blk)
        if blocks:
            out["system"] = blocks
        else:
            out.pop("system", None)
        changed = True
    tool_marks = [m for m in placed if m.pos[0] == 0]
    if pre.tools_changed or tool_marks:
        new_tools = list(tools)
        for m in tool_marks:
            new_tools[m.pos[1]] = {**new_tools[m.pos[1]], "cache_control": marker_json(m.ttl)}
        out["tools"] = new_tools
        changed = True
    out_msgs = messages
    msg_marks = [m for m in placed if m.pos[0] == 2]
    with_ctx: dict[str, Any] | None = None
    inserted: tuple[int, dict[str, Any]] | None = None
    if ctx and k is not None:
        if _tool_results_only(messages[k]):
            placed_at = _place_context(messages, k, ctx, env, notes)
            if placed_at is not None and placed_at[0] == k:
                with_ctx = placed_at[1]
            else:
                inserted = placed_at
        else:
            with_ctx = _with_context(messages[k], ctx)
    if pinned or msg_marks or with_ctx is not None or inserted is not None:
        out_msgs = list(messages)
        for m in msg_marks:
            out_msgs[m.pos[1]] = _with_marker(out_msgs[m.pos[1]], m.pos[2], m.ttl)
        if with_ctx is not None and k is not None:
            out_msgs[k] = with_ctx
        if inserted is not None:
            out_msgs.insert(*inserted)
        out["messages"] = out_msgs
        changed = True

    return finish_plan(
        body,
        out,
        changed,
        pre,
        partial(
            _expectation, env.min_tokens, now, [*existing, *placed], lay, messages, out_msgs, k, pre
        ),
    )


def _expectation(
    minimum: int,
    now: float,
    all_markers: list[Marker],
    lay: _Layout,
    messages: list[Any],
    out_msgs: list[Any],
    k: int | None,
    pre: Prefix,
) -> Expectation:
    """What the outcome is judged against: the breakpoints sent, the tokens a warm cache
    serves and the miss diagnosis's fingerprints (``Plan.settle``, off the request path)."""
    markers = sorted(all_markers, key=lambda m: m.pos)
    static_hash, cum_msg = pre.static_hash, lay.cum_msg
    static_expected = max(
        (m.prefix_tokens for m in markers if m.pos[0] <= 1 and m.prefix_tokens >= minimum),
        default=0,
    )
    expected = static_expected
    write_fp = read_fp = None
    if k is not None and k >= 1 and any(m.pos[0] >= 2 for m in markers):
        write_fp = history_fp(static_hash, messages, k - 1, kept=pre.kept)
    prev = newest_user(messages, before=k) if k is not None else None
    if prev is not None and _history_read(markers, lay, out_msgs, prev, minimum):
        expected = max(expected, cum_msg[prev])
        read_fp = history_fp(static_hash, messages, prev - 1, kept=pre.kept)
    static_ttl: Ttl = "1h" if any(m.ttl == "1h" for m in markers if m.pos[0] <= 1) else "5m"
    diag = Diagnostics(
        provider="anthropic",
        planned_at=now,
        min_cacheable_tokens=minimum,
        static_fp=static_hash,
        static_ttl_seconds=TTL_SECONDS[static_ttl],
        static_expected_tokens=static_expected,
        history_read_fp=read_fp,
        history_write_fp=write_fp,
        has_markers=bool(markers),
    )
    return [m.breakpoint() for m in markers], expected, diag
