"""The half of planning both dialects share: the static prefix's identity and the plan.

Anthropic Messages and OpenAI (Chat Completions, Responses) bodies differ in where the
system prompt, the tools and the conversation sit and in how markers are written; they
agree on everything else. ``build_prefix`` does that common part once: tool ordering,
planning the system prompt (static blocks first, volatile text cut), the context block,
the "no user message" fallback, and the identity of the static prefix (digests,
``static_hash``, the app text kept after it, the snapshot used to say where a prefix
changed). ``finish_plan`` turns a provider module's body edits into the ``Plan``. The
provider modules only parse their shape and edit their body.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from promptcache.sidecar.planner.common import Env, PlanError, context_items, render_context
from promptcache.sidecar.planner.memo import ToolsInfo, tool_name
from promptcache.sidecar.planner.system import Piece, Source, SystemPlan, plan_system
from promptcache.sidecar.planner.turns import newest_user
from promptcache.sidecar.planner.types import Expectation, Plan, Relocation
from promptcache.tokens import estimate_text


def tools_list(value: Any) -> list[Any]:
    """The body's ``tools`` (empty when absent); checked before the system prompt."""
    if value is not None and not isinstance(value, list):
        raise PlanError("tools: expected a list")
    return value or []


def order_tools(
    env: Env, tools: list[Any], names: tuple[str, ...], notes: list[str]
) -> tuple[list[Any], bool]:
    """The tools in the order to send: by name when the policy asks for a canonical order,
    or (no policy saying otherwise) once the learner saw the app send the same tools in
    changing order; never when the client marked one (moving it moves its entry).
    ``names``: the tools' names, in the order sent."""
    policy = env.policy
    if len(tools) < 2:
        return tools, False
    if policy is not None and "canonical_tool_order" in policy.model_fields_set:
        wanted, why = policy.canonical_tool_order, "tools sorted by name"
    else:
        wanted = env.learn_tools is not None and env.learn_tools(names)
        why = "tools sorted by name (learned: the app sends them in changing order)"
    if not wanted:
        return tools, False
    if any(isinstance(t, dict) and "cache_control" in t for t in tools):
        notes.append("tools carry client markers: order kept")
        return tools, False
    ordered = sorted(tools, key=tool_name)
    if all(a is b for a, b in zip(ordered, tools, strict=True)):
        return tools, False
    notes.append(why)
    return ordered, True


@dataclass(slots=True)
class Prefix:
    """One request's static prefix (tools, then the static system pieces) and the rest
    of its system prompt, as both dialects plan it."""

    tools: list[Any]
    """The tools to send, in order."""
    tools_changed: bool
    tools_info: ToolsInfo
    system: SystemPlan
    context: str
    """The delimited context block ('' when there is none)."""
    newest: int | None
    """Index of the newest user message in the conversation."""
    piece_tokens: list[int]
    digests: list[str]
    """sha256 of each static piece."""
    static_hash: str | None
    """Identity of tools + static pieces (``None``: there is no static prefix)."""
    kept: list[str]
    """App text that stays after the static pieces (part of the history's identity)."""
    snapshot: list[tuple[str, str]]
    """(label, text) of each part of the static prefix, to find where it changed."""
    notes: list[str] = field(default_factory=list)

    @property
    def statics(self) -> list[Piece]:
        return self.system.pieces[: self.system.static_count]

    @property
    def tools_tokens(self) -> int:
        return sum(self.tools_info.tokens)

    @property
    def static_tokens(self) -> int:
        return self.tools_tokens + sum(self.piece_tokens[: self.system.static_count])

    @property
    def prompt_tokens(self) -> int:
        """Tokens before the first message: tools and every system piece."""
        return self.tools_tokens + sum(self.piece_tokens)


def build_prefix(
    env: Env,
    *,
    tools_in: list[Any],
    sources: list[Source],
    label: str,
    frozen: bool,
    conversation: Sequence[Any],
    context_elsewhere: bool = False,
    pins: bool = False,
) -> Prefix:
    """Plan the tools and the system prompt of one request.

    ``context_elsewhere``: the body has a place for the context block other than a user
    message (a Responses string ``input``), so a missing user message does not move it
    into the system prompt. ``pins``: the dialect can put a learned template's
    per-conversation text at the start of a user message (``SystemPlan.pin``).
    """
    notes: list[str] = []
    memo = env.memo
    tinfo = memo.tools_info(tools_in)
    tools, tools_changed = order_tools(env, tools_in, tinfo.names, notes)
    if tools_changed:
        tinfo = memo.tools_info(tools)
    sp = plan_system(sources, env.policy, env.detector, memo, label=label, frozen=frozen)
    k = newest_user(conversation)
    if env.learn is not None and not sp.static_names and not frozen:
        sp = _learn(env, sp, sources, tinfo.digest, label, conversation if pins else None)
    ctx = render_context(context_items(sp.relocated, env))
    if ctx and k is None and not context_elsewhere:
        sp.pieces.append(Piece(ctx))
        sp.changed = True
        notes.append("no user message: context appended to the system prompt")

    piece_tokens = [estimate_text(p.text) for p in sp.pieces]
    statics = sp.pieces[: sp.static_count]
    digests = [memo.sha256(p.text) for p in statics]
    td = tinfo.digest
    static_hash = memo.chain(td, *digests) if (td or digests) else None
    snapshot = ([("tools", tinfo.text)] if tools else []) + [
        (p.static or f"system[{i}]", p.text) for i, p in enumerate(statics)
    ]
    return Prefix(
        tools=tools,
        tools_changed=tools_changed,
        tools_info=tinfo,
        system=sp,
        context=ctx,
        newest=k,
        piece_tokens=piece_tokens,
        digests=digests,
        static_hash=static_hash,
        kept=[p.text for p in sp.pieces[sp.static_count :]] + ([sp.pin[1]] if sp.pin else []),
        snapshot=snapshot,
        notes=notes,
    )


LEARNED = "learned"
"""Static-piece name of a learned template's stable text (never a policy block name:
those are checked against the policy)."""
RELOCATED = "request"
"""Context name of a learned template's per-request text behind the history."""
PINNED = "conversation"
"""Context name of a learned template's per-conversation text pinned into the history."""


def _learn(
    env: Env,
    sp: SystemPlan,
    sources: list[Source],
    tools: str,
    label: str,
    conversation: Sequence[Any] | None,
) -> SystemPlan:
    """``sp`` as the learned template of its text divides it (no policy block spoke).

    The learner sees the system text as planned so far (a policy's volatile patterns
    already cut), so learning fills what the policy left. Until the template is learned
    and with no policy, the system is no static prefix: a prompt seen once may never
    come back, and marking it would only pay the write premium. ``conversation``: the
    messages text may be pinned into (``None``: the dialect pins nothing).
    """
    if any(s.marked for s in sources) or not sp.pieces:
        return sp
    pieces = sp.pieces
    text = pieces[0].text if len(pieces) == 1 else "\n\n".join(p.text for p in pieces)
    assert env.learn is not None
    newest = newest_user(conversation) if conversation is not None else None
    if conversation is None or newest is None or not pinnable(conversation, newest):
        newest = None
    split = env.learn(text, tools, newest)
    if split is None:
        if env.policy is None:
            sp.static_count = 0
            sp.notes.append(f"{label}: template not learned yet: no static prefix")
        return sp
    if _forbids_relocation(env):
        sp.notes.append(f"learned template {split.template}: the policy forbids relocation")
        return sp
    env.learned = split
    if not split.changing:
        sp.notes.append(
            f"learned template {split.template} ({split.samples} requests): {label} all stable"
        )
        return sp
    # One static piece per stable stretch, as a policy with one exact block per stretch
    # would have it (``policy suggest`` writes that policy; both plan alike).
    pieces = [Piece(t, LEARNED) for t in learned_stretches(text, split.stable)]
    static_count = len(pieces)
    kept = "".join(text[a:b] for a, b in split.conversation).strip()
    if kept:
        pieces.append(Piece(kept))
    out = SystemPlan(
        pieces=pieces,
        changed=True,
        static_count=static_count,
        relocated=list(sp.relocated),
        relocations=list(sp.relocations),
        volatile_found=sp.volatile_found,
        notes=list(sp.notes),
    )
    moved = list(split.request)
    pin = "".join(text[a:b] for a, b in split.pinned).strip()
    at = split.pin_at
    if pin and at is not None and conversation is not None and pinnable(conversation, at):
        out.pin = (at, render_context([(PINNED, pin)]))
    else:
        moved = sorted(moved + list(split.pinned))
    for a, b in moved:
        part = text[a:b].strip()
        if part:
            out.relocated.append((RELOCATED, part))
            out.relocations.append(Relocation(LEARNED, label, a, b - a))
    out.notes.append(
        f"learned template {split.template} ({split.samples} requests): "
        f"{len(split.stable)} stable, {len(split.conversation)} per-conversation, "
        f"{len(split.request)} per-request spans"
        + (f"; per-conversation text pinned into message {out.pin[0]}" if out.pin else "")
    )
    return out


PIN_TYPES = frozenset({"text", "input_text"})
"""Content parts a pin may go before (a tool result must stay first in its message)."""


def pinnable(conversation: Sequence[Any], at: int) -> bool:
    """Message ``at`` is a user message whose content a pin may go at the start of: a
    non-empty string, or parts that start with text."""
    if not 0 <= at < len(conversation):
        return False
    message = conversation[at]
    if not isinstance(message, dict) or message.get("role") != "user":
        return False
    content = message.get("content")
    if isinstance(content, str):
        return bool(content)
    return (
        isinstance(content, list)
        and bool(content)
        and isinstance(content[0], dict)
        and content[0].get("type") in PIN_TYPES
    )


def learned_stretches(text: str, spans: Sequence[tuple[int, int]]) -> list[str]:
    """The stable stretches of ``text`` as static pieces (stripped; blank ones dropped)."""
    return [part for a, b in spans if (part := text[a:b].strip())]


def _forbids_relocation(env: Env) -> bool:
    """The policy says ``volatile.action: report`` in so many words: nothing moves."""
    policy = env.policy
    if policy is None:
        return False
    volatile = policy.volatile
    return "action" in volatile.model_fields_set and volatile.action != "relocate"


def finish_plan(
    body: dict[str, Any],
    out: dict[str, Any],
    changed: bool,
    prefix: Prefix,
    pending: Callable[[], Expectation],
) -> tuple[Plan, list[tuple[str, str]]]:
    """The ``Plan`` for a planned body, and the static snapshot for the engine;
    ``pending`` makes the plan's expectation when it settles (``Plan.settle``)."""
    model = body.get("model")
    plan = Plan(
        body=out if changed else body,
        changed=changed,
        relocations=prefix.system.relocations,
        volatile_found=prefix.system.volatile_found,
        static_hash=prefix.static_hash,
        static_tokens=prefix.static_tokens,
        model=model if isinstance(model, str) else None,
        notes=[*prefix.system.notes, *prefix.notes],
        context_text=prefix.context or None,
        pending=pending,
    )
    return plan, prefix.snapshot
