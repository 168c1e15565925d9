"""Splitting the system prompt into a static, cacheable part and the rest.

Provider-neutral: Anthropic's ``system`` (a string or text blocks), an OpenAI system or
developer message (a string or text parts) and Responses ``instructions`` all become a
list of ``Source`` texts. ``plan_system`` finds the policy's static blocks in them (or
injects them), cuts volatile spans, moves unmatched text out when the policy says so,
and returns the pieces to send: static blocks first, in policy order, byte-identical
from request to request, then any app text that stays.

Idempotence is a design rule: planning an already planned system finds the static
blocks whole, nothing volatile and nothing to move, and returns the sources unchanged.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from promptcache.policy.schema import PolicySpec, StaticBlock
from promptcache.sidecar.planner.memo import Memos
from promptcache.sidecar.planner.types import Relocation
from promptcache.sidecar.planner.volatile import Detector, Span, cut, relocation_units

UNMATCHED = "system"
"""Context name of relocated system text that belongs to no static block."""


@dataclass(frozen=True, slots=True)
class Source:
    """One text of the system prompt as the app sent it."""

    text: str
    marked: bool = False
    """Carries a client ``cache_control`` marker."""


@dataclass(frozen=True, slots=True)
class Piece:
    """One text of the system prompt to send."""

    text: str
    static: str | None = None
    """Name of the static block this piece is (``None``: app text kept in place)."""
    source: int | None = None
    """Index of the ``Source`` this piece is, unchanged (its original block is reused)."""


@dataclass(slots=True)
class SystemPlan:
    """The planned system prompt and what moved out of it."""

    pieces: list[Piece]
    changed: bool = False
    static_names: list[str] = field(default_factory=list)
    """Policy static blocks present in the system, in order."""
    static_count: int = 0
    """``pieces[:static_count]`` is the static part (all pieces when the policy names
    no static block: then the whole system is treated as the part to cache)."""
    relocated: list[tuple[str, str]] = field(default_factory=list)
    """(context name, text) moved behind the cached prefix, in source order."""
    relocations: list[Relocation] = field(default_factory=list)
    volatile_found: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    pin: tuple[int, str] | None = None
    """(user message index, text): per-conversation text of a learned template pinned at
    the start of that message, where the conversation's history carries it cached."""


@dataclass(slots=True)
class _Claim:
    block: int
    source: int
    start: int
    end: int
    fixed: bool
    """The text is fixed by the policy (exact, prefix, sha256, inject)."""


def system_blocks(policy: PolicySpec) -> list[StaticBlock]:
    """Static blocks that live in the system prompt (inject, or match role system/developer
    position 0)."""
    return [
        b
        for b in policy.static_blocks
        if b.mode == "inject"
        or (
            b.match is not None
            and b.match.role in ("system", "developer")
            and b.match.position == 0
        )
    ]


def _free(claims: list[_Claim], i: int, length: int) -> list[tuple[int, int]]:
    """Unclaimed ranges of source ``i``."""
    ranges: list[tuple[int, int]] = []
    pos = 0
    for c in sorted((c for c in claims if c.source == i), key=lambda c: c.start):
        if c.start > pos:
            ranges.append((pos, c.start))
        pos = max(pos, c.end)
    if pos < length:
        ranges.append((pos, length))
    return ranges


def _overlaps(claims: list[_Claim], source: int, start: int, end: int) -> bool:
    return any(c.source == source and c.start < end and start < c.end for c in claims)


def _find(
    sources: list[Source], claims: list[_Claim], text: str, memo: Memos
) -> tuple[int, int] | None:
    hint = memo.found_at(text)
    if hint is not None:
        i, pos = hint
        if (
            i < len(sources)
            and sources[i].text.startswith(text, pos)
            and not _overlaps(claims, i, pos, pos + len(text))
        ):
            return hint
    at = _search(sources, claims, text)
    if at is not None:
        memo.remember_found(text, at)
    return at


def _search(sources: list[Source], claims: list[_Claim], text: str) -> tuple[int, int] | None:
    for i, src in enumerate(sources):
        pos = src.text.find(text)
        while pos >= 0:
            if not _overlaps(claims, i, pos, pos + len(text)):
                return i, pos
            pos = src.text.find(text, pos + 1)
    return None


def _claim(
    b: int, block: StaticBlock, sources: list[Source], claims: list[_Claim], memo: Memos
) -> list[_Claim]:
    """Where ``block`` is in ``sources`` (empty when absent)."""
    m = block.match
    text = block.content if block.mode == "inject" else (m.exact if m is not None else None)
    if text is not None:
        if not text:
            return []
        at = _find(sources, claims, text, memo)
        return [] if at is None else [_Claim(b, at[0], at[1], at[1] + len(text), True)]
    assert m is not None
    if m.prefix is not None:
        n = len(m.prefix)
        if sources and sources[0].text.startswith(m.prefix) and not _overlaps(claims, 0, 0, n):
            return [_Claim(b, 0, 0, n, True)]
        return []
    if m.sha256 is not None:
        for i, src in enumerate(sources):
            if memo.sha256(src.text) == m.sha256 and not _overlaps(claims, i, 0, len(src.text)):
                return [_Claim(b, i, 0, len(src.text), True)]
        return []
    # Role and position only: the whole message is the block, its text not fixed.
    if any(_overlaps(claims, i, 0, len(s.text)) for i, s in enumerate(sources)):
        return []
    return [_Claim(b, i, 0, len(s.text), False) for i, s in enumerate(sources) if s.text]


def _split_kept(text: str, keep: re.Pattern[str] | None) -> list[tuple[bool, int, int]]:
    """``text`` cut into ranges that stay (``True``) and ranges that move, in order."""
    if keep is None:
        return [(False, 0, len(text))]
    out: list[tuple[bool, int, int]] = []
    pos = 0
    for m in keep.finditer(text):
        if m.end() == m.start():
            continue
        if m.start() > pos:
            out.append((False, pos, m.start()))
        out.append((True, m.start(), m.end()))
        pos = m.end()
    if pos < len(text):
        out.append((False, pos, len(text)))
    return out


class _Scan:
    """Volatile detection and cutting over the parts that stay in the prefix."""

    def __init__(self, detector: Detector | None, relocate: bool, plan: SystemPlan) -> None:
        self.detector = detector if detector is not None and detector.active else None
        self.relocate = relocate
        self.plan = plan

    def text(self, text: str, label: str, base: int) -> tuple[str, bool]:
        """``text`` with volatile units cut (when relocating); ``True`` if anything was cut."""
        if self.detector is None or not text:
            return text, False
        spans = self.detector.find(text)
        if not spans:
            return text, False
        for s in spans:
            self.plan.volatile_found[s.detector] = self.plan.volatile_found.get(s.detector, 0) + 1
        if not self.relocate:
            return text, False
        units: list[Span] = relocation_units(text, spans)
        for u in units:
            self.plan.relocated.append((u.detector, text[u.start : u.end].strip()))
            self.plan.relocations.append(
                Relocation(u.detector, label, base + u.start, u.end - u.start)
            )
        return cut(text, units), True


def plan_system(
    sources: list[Source],
    policy: PolicySpec | None,
    detector: Detector | None,
    memo: Memos,
    *,
    label: str,
    frozen: bool = False,
) -> SystemPlan:
    """Plan the system prompt ``sources`` under ``policy``.

    ``label`` names the sources in relocations and notes (``system``, ``messages[0]``,
    ``instructions``). ``frozen``: the sources carry client markers or parts we must not
    restructure; only report what the detectors find.
    """
    keep_all = SystemPlan(
        pieces=[Piece(s.text, None, i) for i, s in enumerate(sources)], static_count=len(sources)
    )
    if policy is None:
        return keep_all
    blocks = system_blocks(policy)
    plan = SystemPlan(pieces=[])
    claims: list[_Claim] = []
    present: list[int] = []
    injected: set[int] = set()
    for b, block in enumerate(blocks):
        found = _claim(b, block, sources, claims, memo)
        if found:
            claims.extend(found)
            present.append(b)
        elif block.mode == "inject":
            present.append(b)
            injected.add(b)
        else:
            plan.notes.append(f"static block {block.name} not found in {label}")
    if frozen or any(s.marked for s in sources):
        keep_all.notes.append(f"{label} has client cache markers: left as sent")
        _Scan(detector, False, keep_all).text("".join(s.text for s in sources), label, 0)
        if blocks and present:
            # The static part is the run of leading sources that are whole static blocks.
            whole = {
                c.source
                for c in claims
                if c.fixed and c.start == 0 and c.end == len(sources[c.source].text)
            }
            keep_all.static_count = next(
                (i for i in range(len(sources)) if i not in whole), len(sources)
            )
        return keep_all

    vol = policy.volatile
    scan = _Scan(detector, vol.action == "relocate", plan)
    # Only a matched block proves the app sends its static part here; around injected
    # blocks the app's own system text is all it has, and it stays.
    matched = [b for b in present if blocks[b].mode == "match"]
    move_unmatched = bool(matched) and vol.unmatched_system == "relocate"
    if (
        vol.unmatched_system == "relocate"
        and not matched
        and any(b.mode == "match" for b in blocks)
    ):
        plan.notes.append(f"no static block found: {label} text left in place")

    whole = {c.source for c in claims if c.start == 0 and c.end == len(sources[c.source].text)}
    for b in present:
        block = blocks[b]
        if b in injected:
            if block.content and block.content.strip():
                plan.pieces.append(Piece(block.content, block.name))
            continue
        for c in (c for c in claims if c.block == b):
            src = sources[c.source]
            if c.fixed:
                exact = block.match.exact if block.match is not None else None
                text = (
                    exact
                    if exact is not None
                    else src.text[c.start : c.end]
                    if block.mode == "match"
                    else block.content
                )
                assert text is not None
                keep = c.source in whole
                plan.pieces.append(Piece(text, block.name, c.source if keep else None))
                continue
            new, was_cut = scan.text(src.text, f"{label}[{c.source}]", 0)
            if new:
                plan.pieces.append(Piece(new, block.name, None if was_cut else c.source))
        plan.static_names.append(block.name)
    plan.static_count = len(plan.pieces)

    moved: list[str] = []
    keep_re = memo.keep_regex(tuple(p.regex for p in vol.keep_in_place)) if move_unmatched else None
    for i, src in enumerate(sources):
        for start, end in _free(claims, i, len(src.text)):
            text = src.text[start:end]
            is_whole = start == 0 and end == len(src.text)
            if move_unmatched:
                for kept, a, b in _split_kept(text, keep_re):
                    part = text[a:b].strip()
                    if not part:
                        continue
                    if kept:
                        whole_source = is_whole and part == src.text
                        plan.pieces.append(Piece(part, None, i if whole_source else None))
                        continue
                    moved.append(part)
                    plan.relocations.append(
                        Relocation("unmatched_system", f"{label}[{i}]", start + a, b - a)
                    )
                continue
            new, was_cut = scan.text(text, f"{label}[{i}]", start)
            if was_cut or not is_whole:
                new = new.strip()
                if new:
                    plan.pieces.append(Piece(new))
            elif new.strip():
                plan.pieces.append(Piece(new, None, i))
    if moved:
        plan.relocated.insert(0, (UNMATCHED, "\n\n".join(moved)))
    if not blocks or not present:
        # No static block here: the whole system is the part to cache, as with no policy.
        plan.static_count = len(plan.pieces)
    plan.changed = [p.source for p in plan.pieces] != list(range(len(sources)))
    return plan
